/* mamba2_threads.c: the Mamba-2 recurrence of examples/mamba2.ssm written by hand
 * as plain C loops, the baseline `ssmc bench --device cpu` is compared with
 * (bench/RESULTS.md). One work item per (sequence, head), the state row of one
 * (head, p) updated and read out in one fused pass over n. Threads split the
 * items as ssmc's pool does (contiguous ranges).
 *
 *   cc -O3 -march=native [-ffast-math] bench/cpu/mamba2_threads.c -o /tmp/mamba2_threads -lm -lpthread
 *   /tmp/mamba2_threads H P N T THREADS [ITERS]
 * prints the minimum and median wall-clock and CPU time of ITERS runs (after
 * one warm-up run). */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static int H, P, N, T;
static float *x, *dt, *B, *C, *A_log, *D, *dt_bias, *S, *y;

static float softplus(float v) { return v > 0 ? v + log1pf(expf(-v)) : log1pf(expf(v)); }

static void run_items(int begin, int end)
{
    for (int h = begin; h < end; h++) {
        float A = -expf(A_log[h]);
        float *Sh = S + (size_t)h * P * N;
        for (int t = 0; t < T; t++) {
            float delta = softplus(dt[(size_t)t * H + h] + dt_bias[h]);
            float a = expf(delta * A);
            const float *Bt = B + (size_t)t * N, *Ct = C + (size_t)t * N;
            const float *xt = x + ((size_t)t * H + h) * P;
            float *yt = y + ((size_t)t * H + h) * P;
            for (int p = 0; p < P; p++) {
                float *row = Sh + (size_t)p * N;
                float dx = delta * xt[p], acc = 0;
                for (int n = 0; n < N; n++) {
                    float s = a * row[n] + dx * Bt[n];
                    row[n] = s;
                    acc += s * Ct[n];
                }
                yt[p] = acc + D[h] * xt[p];
            }
        }
    }
}

typedef struct range { int begin, end; } range;
static void *worker(void *arg)
{
    range *r = arg;
    run_items(r->begin, r->end);
    return NULL;
}

static double clock_s(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static float *rnd(size_t n, float lo, float hi)
{
    float *p = malloc(n * sizeof *p);
    for (size_t i = 0; i < n; i++) p[i] = lo + (hi - lo) * (float)rand() / (float)RAND_MAX;
    return p;
}

static int cmp(const void *a, const void *b)
{
    double u = *(const double *)a, v = *(const double *)b;
    return (u > v) - (u < v);
}

int main(int argc, char **argv)
{
    if (argc < 6) {
        fprintf(stderr, "usage: %s H P N T THREADS [ITERS]\n", argv[0]);
        return 2;
    }
    H = atoi(argv[1]), P = atoi(argv[2]), N = atoi(argv[3]), T = atoi(argv[4]);
    int threads = atoi(argv[5]), iters = argc > 6 ? atoi(argv[6]) : 20;
    x = rnd((size_t)T * H * P, -1, 1), dt = rnd((size_t)T * H, -1, 1);
    B = rnd((size_t)T * N, -1, 1), C = rnd((size_t)T * N, -1, 1);
    A_log = rnd(H, -1, 1), D = rnd(H, -1, 1), dt_bias = rnd(H, -1, 1);
    S = calloc((size_t)H * P * N, sizeof *S), y = malloc((size_t)T * H * P * sizeof *y);
    double *times = malloc((size_t)iters * sizeof *times), *cpu = malloc((size_t)iters * sizeof *cpu);
    for (int it = -1; it < iters; it++) {
        for (size_t i = 0; i < (size_t)H * P * N; i++) S[i] = 0;
        double t0 = clock_s(CLOCK_MONOTONIC), c0 = clock_s(CLOCK_PROCESS_CPUTIME_ID);
        pthread_t th[64];
        range r[64];
        for (int i = 0; i < threads; i++) {
            r[i].begin = H * i / threads;
            r[i].end = H * (i + 1) / threads;
            if (i) pthread_create(&th[i], NULL, worker, &r[i]);
        }
        run_items(r[0].begin, r[0].end);
        for (int i = 1; i < threads; i++) pthread_join(th[i], NULL);
        if (it >= 0) {
            times[it] = clock_s(CLOCK_MONOTONIC) - t0;
            cpu[it] = clock_s(CLOCK_PROCESS_CPUTIME_ID) - c0;
        }
    }
    qsort(times, (size_t)iters, sizeof *times, cmp);
    qsort(cpu, (size_t)iters, sizeof *cpu, cmp);
    double sum = 0;
    for (size_t i = 0; i < (size_t)T * H * P; i++) sum += y[i];
    printf("mamba2_threads H=%d P=%d N=%d T=%d threads=%d: wall min %.3f med %.3f ms  cpu min %.3f med %.3f ms"
           " (checksum %g)\n", H, P, N, T, threads, times[0] * 1e3, times[iters / 2] * 1e3, cpu[0] * 1e3,
           cpu[iters / 2] * 1e3, sum);
    return 0;
}
