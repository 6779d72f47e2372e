/* bench/cpu/loops.c: hand-written single-threaded C baselines for the CPU benchmark.
 *
 * What it does: one plain C loop nest per model of the zoo (examples/mamba2.ssm, mamba.ssm,
 * gla.ssm, rwkv6.ssm, gated_deltanet.ssm), the same recurrence, parameterisation and gates
 * (softplus, exp, sigmoid, rsqrt) as the .ssm source, in f32, on the layouts `ssmc run` uses:
 * inputs [B,T,...], params as declared, states [B,...], outputs [B,T,...]. It times the median
 * of N runs (clock_gettime, after one warm-up, the state reset to zero before every run, the
 * reset not timed) and prints one machine-readable line.
 *
 * Assumes: a C11 compiler; the loops are written so that gcc -O3 -march=native vectorises the
 * inner (contiguous) axis; `#pragma omp simd reduction` (-fopenmp-simd) marks the few dot
 * products whose order may be changed. No -ffast-math: transcendental calls stay scalar libm.
 *
 * Usage:
 *   loops MODEL B T D1 D2 D3 ITERS          time; prints "C model M batch B seqlen T run X ms (median)"
 *   loops --dump DIR MODEL B T D1 D2 D3     write every input/param as DIR/<name>.npy (<f4) and the
 *                                           output as DIR/y.npy, for a check against `ssmc run`
 *   loops --compare A.npy B.npy             max |a-b| / max |b| of two .npy files (<f4 or <f8)
 * D1..D3 are (H,P,N) for mamba2, (E,N,-) for mamba, (H,K,V) for gla, rwkv6, gated_deltanet.
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { IN, PARAM, STATE, OUT };

typedef struct {
    const char *name;
    int role, rank;  /* rank of the declared shape (after B,T) */
    int64_t dim[3];
    float *data;
    size_t count;
} tensor;

typedef struct {
    const char *name;
    int nt;
    tensor t[10];
    void (*run)(tensor *t, int64_t B, int64_t T, const int64_t *d);
} model;

static inline float softplus(float x) { return x > 20.0f ? x : log1pf(expf(x)); }
static inline float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

/* ---------------------------------------------------------------- Mamba-2 (SSD) */
/* x[B,T,H,P] dt[B,T,H] Bm[B,T,N] C[B,T,N]; A_log[H] D[H] dt_bias[H]; S[B,H,P,N]; y[B,T,H,P] */
static void run_mamba2(tensor *t, int64_t B, int64_t T, const int64_t *d)
{
    const int64_t H = d[0], P = d[1], N = d[2];
    const float *x = t[0].data, *dt = t[1].data, *Bm = t[2].data, *Cm = t[3].data;
    const float *A_log = t[4].data, *D = t[5].data, *dt_bias = t[6].data;
    float *S = t[7].data, *y = t[8].data;
    float A[H];
    for (int64_t h = 0; h < H; h++) A[h] = -expf(A_log[h]);
    for (int64_t b = 0; b < B; b++)
        for (int64_t s = 0; s < T; s++) {
            const float *bt = Bm + (b * T + s) * N, *ct = Cm + (b * T + s) * N;
            for (int64_t h = 0; h < H; h++) {
                const float delta = softplus(dt[(b * T + s) * H + h] + dt_bias[h]);
                const float dA = expf(delta * A[h]);
                const float *xt = x + ((b * T + s) * H + h) * P;
                float *yt = y + ((b * T + s) * H + h) * P;
                for (int64_t p = 0; p < P; p++) {
                    float *restrict st = S + ((b * H + h) * P + p) * N;
                    const float xd = delta * xt[p];
                    float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
                    for (int64_t n = 0; n < N; n++) {
                        st[n] = dA * st[n] + xd * bt[n];
                        acc += st[n] * ct[n];
                    }
                    yt[p] = acc + D[h] * xt[p];
                }
            }
        }
}

/* ---------------------------------------------------------------- Mamba (S6) */
/* x,z,dt[B,T,E] Bm,C[B,T,N]; A_log[E,N] D[E] dt_bias[E]; S[B,E,N]; y[B,T,E] */
static void run_mamba(tensor *t, int64_t B, int64_t T, const int64_t *d)
{
    const int64_t E = d[0], N = d[1];
    const float *x = t[0].data, *z = t[1].data, *dt = t[2].data, *Bm = t[3].data, *Cm = t[4].data;
    const float *A_log = t[5].data, *D = t[6].data, *dt_bias = t[7].data;
    float *S = t[8].data, *y = t[9].data;
    float *A = malloc((size_t)(E * N) * sizeof *A);
    if (!A) abort();
    for (int64_t i = 0; i < E * N; i++) A[i] = -expf(A_log[i]);
    for (int64_t b = 0; b < B; b++)
        for (int64_t s = 0; s < T; s++) {
            const int64_t bt = b * T + s;
            const float *Bt = Bm + bt * N, *Ct = Cm + bt * N;
            for (int64_t e = 0; e < E; e++) {
                const float delta = softplus(dt[bt * E + e] + dt_bias[e]);
                const float xv = x[bt * E + e], xd = delta * xv;
                float *restrict st = S + (b * E + e) * N;
                const float *Ae = A + e * N;
                float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
                for (int64_t n = 0; n < N; n++) {
                    st[n] = expf(delta * Ae[n]) * st[n] + xd * Bt[n];
                    acc += st[n] * Ct[n];
                }
                const float zv = z[bt * E + e];
                y[bt * E + e] = (acc + D[e] * xv) * (zv * sigmoidf(zv));
            }
        }
    free(A);
}

/* ---------------------------------------------------------------- GLA */
/* q,k,gk[B,T,H,K] v[B,T,H,V]; S[B,H,K,V]; y[B,T,H,V] */
static void run_gla(tensor *t, int64_t B, int64_t T, const int64_t *d)
{
    const int64_t H = d[0], K = d[1], V = d[2];
    const float *q = t[0].data, *k = t[1].data, *v = t[2].data, *gk = t[3].data;
    float *S = t[4].data, *y = t[5].data;
    const float scale = 1.0f / sqrtf((float)K);
    for (int64_t b = 0; b < B; b++)
        for (int64_t s = 0; s < T; s++)
            for (int64_t h = 0; h < H; h++) {
                const int64_t o = ((b * T + s) * H + h);
                const float *qt = q + o * K, *kt = k + o * K, *gt = gk + o * K, *vt = v + o * V;
                float *restrict yt = y + o * V;
                float g[K];
                for (int64_t i = 0; i < K; i++) g[i] = expf(-softplus(-gt[i]) / 16.0f);
                for (int64_t j = 0; j < V; j++) yt[j] = 0.0f;
                for (int64_t i = 0; i < K; i++) {
                    const float ki = kt[i], qi = qt[i] * scale;
                    float *restrict st = S + ((b * H + h) * K + i) * V;
                    for (int64_t j = 0; j < V; j++) {
                        st[j] = g[i] * st[j] + ki * vt[j];
                        yt[j] += qi * st[j];
                    }
                }
            }
}

/* ---------------------------------------------------------------- RWKV-6 */
/* r,k,wlog[B,T,H,K] v[B,T,H,V]; u[H,K]; S[B,H,K,V]; y[B,T,H,V] */
static void run_rwkv6(tensor *t, int64_t B, int64_t T, const int64_t *d)
{
    const int64_t H = d[0], K = d[1], V = d[2];
    const float *r = t[0].data, *k = t[1].data, *v = t[2].data, *wl = t[3].data, *u = t[4].data;
    float *S = t[5].data, *y = t[6].data;
    for (int64_t b = 0; b < B; b++)
        for (int64_t s = 0; s < T; s++)
            for (int64_t h = 0; h < H; h++) {
                const int64_t o = ((b * T + s) * H + h);
                const float *rt = r + o * K, *kt = k + o * K, *wt = wl + o * K, *vt = v + o * V;
                float *restrict yt = y + o * V;
                float w[K];
                for (int64_t i = 0; i < K; i++) w[i] = expf(-expf(wt[i]));
                for (int64_t j = 0; j < V; j++) yt[j] = 0.0f;
                for (int64_t i = 0; i < K; i++) {
                    const float ki = kt[i], ri = rt[i], uk = u[h * K + i] * ki;
                    float *restrict st = S + ((b * H + h) * K + i) * V;
                    for (int64_t j = 0; j < V; j++) {
                        yt[j] += ri * (st[j] + uk * vt[j]); /* reads S(t-1) */
                        st[j] = w[i] * st[j] + ki * vt[j];
                    }
                }
            }
}

/* ---------------------------------------------------------------- gated DeltaNet */
/* q,k[B,T,H,K] v[B,T,H,V] a,b[B,T,H]; A_log[H] dt_bias[H]; S[B,H,K,V]; y[B,T,H,V] */
static void run_gated_deltanet(tensor *t, int64_t B, int64_t T, const int64_t *d)
{
    const int64_t H = d[0], K = d[1], V = d[2];
    const float *q = t[0].data, *k = t[1].data, *v = t[2].data, *a = t[3].data, *bb = t[4].data;
    const float *A_log = t[5].data, *dt_bias = t[6].data;
    float *S = t[7].data, *y = t[8].data;
    const float scale = 1.0f / sqrtf((float)K);
    float kn[K], pred[V], upd[V];
    for (int64_t b = 0; b < B; b++)
        for (int64_t s = 0; s < T; s++)
            for (int64_t h = 0; h < H; h++) {
                const int64_t o = ((b * T + s) * H + h);
                const float *qt = q + o * K, *kt = k + o * K, *vt = v + o * V;
                float *restrict yt = y + o * V;
                float *Sh = S + (b * H + h) * K * V;
                float kk = 0.0f, qq = 0.0f;
#pragma omp simd reduction(+ : kk, qq)
                for (int64_t c = 0; c < K; c++) {
                    kk += kt[c] * kt[c];
                    qq += qt[c] * qt[c];
                }
                const float kinv = 1.0f / sqrtf(kk + 1e-6f), qs = scale / sqrtf(qq + 1e-6f);
                const float beta = sigmoidf(bb[o]);
                const float alpha = expf(-expf(A_log[h]) * softplus(a[o] + dt_bias[h]));
                for (int64_t c = 0; c < K; c++) kn[c] = kt[c] * kinv;
                for (int64_t j = 0; j < V; j++) pred[j] = 0.0f;
                for (int64_t i = 0; i < K; i++) /* pred = kn^T S(t-1) */
                    for (int64_t j = 0; j < V; j++) pred[j] += kn[i] * Sh[i * V + j];
                for (int64_t j = 0; j < V; j++) {
                    upd[j] = vt[j] - alpha * pred[j];
                    yt[j] = 0.0f;
                }
                for (int64_t i = 0; i < K; i++) {
                    const float bk = beta * kn[i], qi = qt[i] * qs;
                    float *restrict st = Sh + i * V;
                    for (int64_t j = 0; j < V; j++) {
                        st[j] = alpha * st[j] + bk * upd[j];
                        yt[j] += qi * st[j];
                    }
                }
            }
}

/* ---------------------------------------------------------------- the table of models */
#define T1(n, r, a) {n, r, 1, {a, 0, 0}, NULL, 0}
#define T2(n, r, a, b) {n, r, 2, {a, b, 0}, NULL, 0}
#define T3(n, r, a, b, c) {n, r, 3, {a, b, c}, NULL, 0}
/* dims are indices into the D1..D3 triple (0,1,2); -1 means "no axis" */
static model models[] = {
    {"mamba2", 9,
     {T2("x", IN, 0, 1), T1("dt", IN, 0), T1("B", IN, 2), T1("C", IN, 2), T1("A_log", PARAM, 0),
      T1("D", PARAM, 0), T1("dt_bias", PARAM, 0), T3("S", STATE, 0, 1, 2), T2("y", OUT, 0, 1)},
     run_mamba2},
    {"mamba", 10,
     {T1("x", IN, 0), T1("z", IN, 0), T1("dt", IN, 0), T1("B", IN, 1), T1("C", IN, 1), T2("A_log", PARAM, 0, 1),
      T1("D", PARAM, 0), T1("dt_bias", PARAM, 0), T2("S", STATE, 0, 1), T1("y", OUT, 0)},
     run_mamba},
    {"gla", 6,
     {T2("q", IN, 0, 1), T2("k", IN, 0, 1), T2("v", IN, 0, 2), T2("gk", IN, 0, 1), T3("S", STATE, 0, 1, 2),
      T2("y", OUT, 0, 2)},
     run_gla},
    {"rwkv6", 7,
     {T2("r", IN, 0, 1), T2("k", IN, 0, 1), T2("v", IN, 0, 2), T2("wlog", IN, 0, 1), T2("u", PARAM, 0, 1),
      T3("S", STATE, 0, 1, 2), T2("y", OUT, 0, 2)},
     run_rwkv6},
    {"gated_deltanet", 9,
     {T2("q", IN, 0, 1), T2("k", IN, 0, 1), T2("v", IN, 0, 2), T1("a", IN, 0), T1("b", IN, 0),
      T1("A_log", PARAM, 0), T1("dt_bias", PARAM, 0), T3("S", STATE, 0, 1, 2), T2("y", OUT, 0, 2)},
     run_gated_deltanet},
};

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* full shape of tensor i: [B,T,...] for inputs/outputs, [B,...] for states, as declared for params */
static int shape_of(const tensor *t, int64_t B, int64_t T, const int64_t *d, int64_t *shape)
{
    int r = 0;
    if (t->role != PARAM) shape[r++] = B;
    if (t->role == IN || t->role == OUT) shape[r++] = T;
    for (int j = 0; j < t->rank; j++) shape[r++] = d[t->dim[j]];
    return r;
}

static int setup(model *m, int64_t B, int64_t T, const int64_t *d)
{
    uint64_t rng = 12345;
    for (int i = 0; i < m->nt; i++) {
        tensor *t = &m->t[i];
        int64_t shape[5];
        int r = shape_of(t, B, T, d, shape);
        t->count = 1;
        for (int j = 0; j < r; j++) t->count *= (size_t)shape[j];
        t->data = aligned_alloc(64, (t->count * sizeof(float) + 63) / 64 * 64);
        if (!t->data) return 0;
        for (size_t k = 0; k < t->count; k++)
            t->data[k] = t->role == STATE ? 0.0f
                       : t->role == OUT   ? NAN
                                          : (float)((double)(splitmix(&rng) >> 11) * 0x1.0p-53 * 2.0 - 1.0);
    }
    return 1;
}

static int write_npy(const char *path, const float *data, const int64_t *shape, int rank)
{
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    char hdr[256];
    int n = snprintf(hdr, sizeof hdr, "{'descr': '<f4', 'fortran_order': False, 'shape': (");
    size_t count = 1;
    for (int j = 0; j < rank; j++) {
        n += snprintf(hdr + n, sizeof hdr - (size_t)n, "%lld,%s", (long long)shape[j], j + 1 < rank ? " " : "");
        count *= (size_t)shape[j];
    }
    n += snprintf(hdr + n, sizeof hdr - (size_t)n, "), }");
    int total = (10 + n + 1 + 63) / 64 * 64;
    while (10 + n + 1 < total) hdr[n++] = ' ';
    hdr[n++] = '\n';
    unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)(n & 0xff), (unsigned char)(n >> 8)};
    int ok = fwrite(pre, 1, 10, f) == 10 && fwrite(hdr, 1, (size_t)n, f) == (size_t)n &&
             fwrite(data, sizeof(float), count, f) == count;
    return fclose(f) == 0 && ok;
}

/* reads a little-endian <f4 or <f8 .npy into doubles; returns the count or 0 */
static size_t read_npy(const char *path, double **out)
{
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    unsigned char pre[10];
    size_t count = 0;
    if (fread(pre, 1, 10, f) == 10 && pre[0] == 0x93) {
        size_t hl = (size_t)pre[8] | (size_t)pre[9] << 8;
        char *hdr = calloc(hl + 1, 1);
        if (hdr && fread(hdr, 1, hl, f) == hl) {
            int f8 = strstr(hdr, "<f8") != NULL;
            long pos = ftell(f);
            fseek(f, 0, SEEK_END);
            size_t bytes = (size_t)(ftell(f) - pos);
            fseek(f, pos, SEEK_SET);
            count = bytes / (f8 ? 8 : 4);
            *out = malloc(count * sizeof(double));
            for (size_t i = 0; *out && i < count; i++) {
                if (f8) {
                    double v;
                    if (fread(&v, 8, 1, f) != 1) count = 0;
                    (*out)[i] = v;
                } else {
                    float v;
                    if (fread(&v, 4, 1, f) != 1) count = 0;
                    (*out)[i] = v;
                }
            }
        }
        free(hdr);
    }
    fclose(f);
    return count;
}

static model *find(const char *name)
{
    for (size_t i = 0; i < sizeof models / sizeof *models; i++)
        if (strcmp(models[i].name, name) == 0) return &models[i];
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc == 4 && strcmp(argv[1], "--compare") == 0) {
        double *a = NULL, *b = NULL;
        size_t na = read_npy(argv[2], &a), nb = read_npy(argv[3], &b);
        if (!na || na != nb) {
            fprintf(stderr, "error: cannot compare '%s' (%zu) and '%s' (%zu)\n", argv[2], na, argv[3], nb);
            return 2;
        }
        double err = 0, mag = 0;
        for (size_t i = 0; i < na; i++) {
            double e = fabs(a[i] - b[i]);
            if (e > err || isnan(e)) err = e;
            if (fabs(b[i]) > mag) mag = fabs(b[i]);
        }
        printf("%.3e\n", err / (mag > 0 ? mag : 1));
        free(a);
        free(b);
        return 0;
    }
    int dump = argc >= 3 && strcmp(argv[1], "--dump") == 0;
    const char *dir = dump ? argv[2] : NULL;
    char **a = argv + (dump ? 3 : 1);
    int na = argc - (dump ? 3 : 1);
    if (na != (dump ? 6 : 7)) {
        fprintf(stderr, "usage: loops MODEL B T D1 D2 D3 ITERS | loops --dump DIR MODEL B T D1 D2 D3 | "
                        "loops --compare A.npy B.npy\n");
        return 2;
    }
    model *m = find(a[0]);
    if (!m) {
        fprintf(stderr, "error: unknown model '%s'\n", a[0]);
        return 2;
    }
    int64_t B = atoll(a[1]), T = atoll(a[2]), d[3] = {atoll(a[3]), atoll(a[4]), atoll(a[5])};
    if (!setup(m, B, T, d)) {
        fprintf(stderr, "error: out of memory\n");
        return 1;
    }
    if (dump) {
        m->run(m->t, B, T, d);
        char path[4096];
        for (int i = 0; i < m->nt; i++) {
            tensor *t = &m->t[i];
            if (t->role == STATE) continue;
            int64_t shape[5];
            int r = shape_of(t, B, T, d, shape);
            snprintf(path, sizeof path, "%s/%s.npy", dir, t->name);
            if (!write_npy(path, t->data, shape, r)) {
                fprintf(stderr, "error: cannot write '%s'\n", path);
                return 1;
            }
        }
        return 0;
    }
    int iters = atoi(a[6]);
    if (iters < 1) iters = 1;
    double *times = malloc((size_t)iters * sizeof *times);
    tensor *st = NULL;
    for (int i = 0; i < m->nt; i++)
        if (m->t[i].role == STATE) st = &m->t[i];
    if (!times || !st) return 1;
    for (int it = -1; it < iters; it++) { /* it == -1: warm-up */
        memset(st->data, 0, st->count * sizeof(float));
        double t0 = now_s();
        m->run(m->t, B, T, d);
        double dt = now_s() - t0;
        if (it >= 0) times[it] = dt;
    }
    qsort(times, (size_t)iters, sizeof *times, cmp_double);
    double sum = 0;
    for (size_t k = 0; k < m->t[m->nt - 1].count; k++) sum += m->t[m->nt - 1].data[k];
    printf("C model %s batch %lld seqlen %lld run %.3f ms (median of %d)  checksum %.6g\n", m->name, (long long)B,
           (long long)T, times[iters / 2] * 1e3, iters, sum);
    free(times);
    return 0;
}
