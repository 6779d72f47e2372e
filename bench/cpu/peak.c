/* bench/cpu/peak.c: measures the machine's f32 FMA peak, the denominator of the GFLOP/s column.
 *
 * What it does: each thread runs 16 independent chains of 512-bit (or 256-bit without AVX-512)
 * fused multiply-adds on registers, no memory traffic, for a fixed number of iterations; the flop
 * count is 2 * lanes * chains * iterations per thread. Prints, for 1 and for NTHREADS threads
 * (default 2), the best of 5 repetitions in GFLOP/s.
 * Assumes: x86-64 with FMA (gcc -march=native); threads run on distinct cores.
 */
#define _POSIX_C_SOURCE 200809L
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#if defined(__AVX512F__)
typedef __m512 vec;
#define LANES 16
#define SET1 _mm512_set1_ps
#define FMA _mm512_fmadd_ps
#define ADD _mm512_add_ps
#define SUM(v) _mm512_reduce_add_ps(v)
#else
typedef __m256 vec;
#define LANES 8
#define SET1 _mm256_set1_ps
#define FMA _mm256_fmadd_ps
#define ADD _mm256_add_ps
static float SUM(__m256 v)
{
    float t[8];
    _mm256_storeu_ps(t, v);
    return t[0] + t[1] + t[2] + t[3] + t[4] + t[5] + t[6] + t[7];
}
#endif

enum { CHAINS = 16 };
static const long ITERS = 20000000;

static void *work(void *arg)
{
    /* named accumulators, not an array: an array loop at -O2 keeps them in memory */
    vec a = SET1(0.999999f), b = SET1(1e-7f);
#define DECL(c) vec x##c = SET1((float)c);
#define STEP(c) x##c = FMA(x##c, a, b);
#define ALL(M) M(0) M(1) M(2) M(3) M(4) M(5) M(6) M(7) M(8) M(9) M(10) M(11) M(12) M(13) M(14) M(15)
    ALL(DECL)
    for (long i = 0; i < ITERS; i++) {
        ALL(STEP)
        __asm__ volatile("" ::: "memory");
    }
    vec s = ADD(ADD(ADD(ADD(x0, x1), ADD(x2, x3)), ADD(ADD(x4, x5), ADD(x6, x7))),
                ADD(ADD(ADD(x8, x9), ADD(x10, x11)), ADD(ADD(x12, x13), ADD(x14, x15))));
    *(float *)arg = SUM(s);
    return NULL;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
    int nmax = argc > 1 ? atoi(argv[1]) : 2;
    for (int n = 1; n <= nmax; n = n == nmax ? nmax + 1 : nmax) {
        double best = 0;
        for (int rep = 0; rep < 5; rep++) {
            pthread_t th[64];
            float sink[64];
            double t0 = now_s();
            for (int i = 0; i < n; i++) pthread_create(&th[i], NULL, work, &sink[i]);
            for (int i = 0; i < n; i++) pthread_join(th[i], NULL);
            double dt = now_s() - t0;
            double gf = 2.0 * LANES * CHAINS * (double)ITERS * n / dt * 1e-9;
            if (gf > best) best = gf;
        }
        printf("peak threads %d  %.1f GFLOP/s  (%d-lane f32 FMA)\n", n, best, LANES);
    }
    return 0;
}
