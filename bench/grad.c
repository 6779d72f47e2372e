#define _POSIX_C_SOURCE 200809L
/* bench/grad.c: the backward's time over the forward's, for every example (SPEC §6; issue 12).
 *   bench_grad [--device cpu|cuda|interp] [--batch B] [--seqlen T] [--threads N] [--reps R]
 *              [--algo recurrent|chunked] [--dtype f32|bf16] [FILE.ssm ...]   (default: every example)
 * For each model, at its declared dims: one warm-up of each call, then R rounds, each timing in
 * turn ssmc_run (the inference forward), ssmc_forward_train (the forward that keeps the
 * checkpoints) and ssmc_backward (every input, param and initial state's gradient, cotangents of
 * every output drawn at random), on host tensors; medians of the R rounds, side by side in one
 * process. Prints a table: forward, training forward, backward (ms), backward / forward,
 * (training forward + backward) / forward, and the tape's bytes per sequence. On the GPU the host
 * API includes the copies in and out (the backward's copies too); the device API's numbers are
 * for a GPU run of bench/gpu (not here). Built by `cmake --build build --target bench_grad`. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ssmc.h"
#include "support/dtype.h"

#define MAXT 24
#define MAXR 101

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static double uniform(void)
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (double)(rng >> 11) * 0x1.0p-53 * 2.0 - 1.0;
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    if (s && fread(s, 1, (size_t)n, f) != (size_t)n) {
        free(s);
        s = NULL;
    }
    fclose(f);
    if (s) s[n] = 0, *len = (size_t)n;
    return s;
}

typedef struct opts {
    ssmc_device device;
    ssmc_algo algo;
    ssmc_dtype dtype;
    int64_t B, T;
    int threads, reps;
} opts;

/* One model: prints its row, or why it has none. */
static void bench_one(const char *path, const opts *o)
{
    const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    size_t len;
    char *src = slurp(path, &len);
    if (!src) {
        printf("%-22s cannot read %s\n", base, path);
        return;
    }
    ssmc_ctx *ctx = ssmc_ctx_new();
    ssmc_options so = {.device = o->device, .algo = o->algo, .threads = o->threads};
    ssmc_model *m = NULL;
    if (ssmc_compile(ctx, path, src, len, &so, &m) != SSMC_OK) {
        printf("%-22s compile: %s", base, ssmc_ctx_error(ctx));
        ssmc_ctx_free(ctx);
        free(src);
        return;
    }
    int n = ssmc_model_num_tensors(m);
    ssmc_tensor_info in[MAXT];
    void *data[MAXT] = {0}, *init[MAXT] = {0}, *cot[MAXT] = {0}, *grad[MAXT] = {0};
    size_t cnt[MAXT];
    ssmc_arg args[MAXT], vals[MAXT], douts[MAXT], grads[MAXT];
    int nv = 0, nd = 0, ng = 0;
    size_t es = dtype_size(o->dtype);
    for (int i = 0; i < n && i < MAXT; i++) {
        ssmc_model_tensor(m, i, &in[i]);
        size_t c = 1;
        for (int j = 0; j < in[i].rank; j++) c *= (size_t)in[i].shape[j];
        if (in[i].role != SSMC_PARAM) c *= (size_t)o->B;
        if (in[i].per_step) c *= (size_t)o->T;
        cnt[i] = c;
        data[i] = malloc(c * es);
        grad[i] = malloc(c * es);
        for (size_t k = 0; k < c; k++) dtype_set(data[i], o->dtype, k, in[i].role == SSMC_STATE ? 0.0 : 0.5 * uniform());
        if (in[i].role == SSMC_STATE) init[i] = malloc(c * es), memcpy(init[i], data[i], c * es);
        args[i] = (ssmc_arg){in[i].name, o->dtype, data[i], 0};
        if (in[i].role == SSMC_INPUT || in[i].role == SSMC_PARAM) vals[nv++] = args[i];
        if (in[i].role == SSMC_OUTPUT) {
            cot[i] = malloc(c * es);
            for (size_t k = 0; k < c; k++) dtype_set(cot[i], o->dtype, k, uniform());
            douts[nd++] = (ssmc_arg){in[i].name, o->dtype, cot[i], 0};
        } else {
            grads[ng++] = (ssmc_arg){in[i].name, o->dtype, grad[i], 0};
        }
    }
    double tf[MAXR], tt[MAXR], tb[MAXR];
    ssmc_tape *tape = NULL;
    bool ok = true;
    const char *why = "";
    for (int r = -1; ok && r < o->reps; r++) { /* round -1: the warm-up (compiles the gradient models) */
        for (int i = 0; i < n; i++)
            if (init[i]) memcpy(data[i], init[i], cnt[i] * es);
        double t0 = now_s();
        ok = ssmc_run(m, o->B, o->T, args, n) == SSMC_OK;
        double t1 = now_s();
        for (int i = 0; ok && i < n; i++)
            if (init[i]) memcpy(data[i], init[i], cnt[i] * es);
        ssmc_tape_free(tape);
        tape = NULL;
        double t2 = now_s();
        if (ok && ssmc_forward_train(m, o->B, o->T, args, n, &tape) != SSMC_OK) ok = false, why = "training forward";
        double t3 = now_s();
        for (int i = 0; ok && i < n; i++)
            if (init[i]) memcpy(data[i], init[i], cnt[i] * es); /* the backward takes the initial states again */
        double t4 = now_s();
        if (ok && ssmc_backward(m, tape, vals, nv, douts, nd, grads, ng) != SSMC_OK) ok = false, why = "backward";
        double t5 = now_s();
        if (ok && r >= 0) tf[r] = t1 - t0, tt[r] = t3 - t2, tb[r] = t5 - t4;
    }
    if (ok) {
        size_t tape_bytes = ssmc_tape_bytes(tape);
        double f = median(tf, o->reps), t = median(tt, o->reps), b = median(tb, o->reps);
        printf("%-22s %10.3f %10.3f %10.3f %8.2f %8.2f %12zu\n", base, f * 1e3, t * 1e3, b * 1e3, b / f, (t + b) / f,
               tape_bytes / (size_t)o->B);
    } else {
        printf("%-22s %s: ", base, why);
        for (const char *p = ssmc_ctx_error(ctx); *p && *p != '\n'; p++) putchar(*p);
        putchar('\n');
    }
    ssmc_tape_free(tape);
    for (int i = 0; i < n && i < MAXT; i++) free(data[i]), free(init[i]), free(cot[i]), free(grad[i]);
    ssmc_model_free(m);
    ssmc_ctx_free(ctx);
    free(src);
}

int main(int argc, char **argv)
{
    opts o = {SSMC_DEVICE_CPU, SSMC_ALGO_AUTO, SSMC_F32, 4, 1024, 1, 7};
    const char *files[256];
    int nf = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : "";
        if (!strcmp(a, "--device")) {
            o.device = !strcmp(v, "cuda") ? SSMC_DEVICE_CUDA : !strcmp(v, "interp") ? SSMC_DEVICE_INTERP : SSMC_DEVICE_CPU;
            i++;
        } else if (!strcmp(a, "--algo")) {
            o.algo = !strcmp(v, "chunked") ? SSMC_ALGO_CHUNKED : SSMC_ALGO_RECURRENT;
            i++;
        } else if (!strcmp(a, "--dtype")) {
            o.dtype = !strcmp(v, "bf16") ? SSMC_BF16 : SSMC_F32;
            i++;
        } else if (!strcmp(a, "--batch")) {
            o.B = atoll(v), i++;
        } else if (!strcmp(a, "--seqlen")) {
            o.T = atoll(v), i++;
        } else if (!strcmp(a, "--threads")) {
            o.threads = atoi(v), i++;
        } else if (!strcmp(a, "--reps")) {
            o.reps = atoi(v), i++;
        } else if (a[0] == '-') {
            fprintf(stderr, "usage: bench_grad [--device D] [--algo A] [--dtype T] [--batch B] [--seqlen T] "
                            "[--threads N] [--reps R] [FILE.ssm ...]\n");
            return 2;
        } else if (nf < 256) {
            files[nf++] = a;
        }
    }
    if (o.reps < 1 || o.reps > MAXR || o.B < 1 || o.T < 1) {
        fprintf(stderr, "bench_grad: --reps 1..%d, --batch and --seqlen at least 1\n", MAXR);
        return 2;
    }
    static const char *const dflt[] = {"deltanet", "fla_delta_rule", "fla_gated_delta_rule", "fla_gla", "fla_gla_kv",
                                       "fla_linear_attn", "fla_retention", "fla_simple_gla", "gated_deltanet", "gla",
                                       "linear_attn", "lstm", "mamba", "mamba2", "mamba2_conv", "mamba2_ssd",
                                       "mamba2_ssd_z", "mamba3", "mamba_ssu", "mamba_ssu_z", "mom", "retnet", "rwkv6",
                                       "ttt_linear"};
    static char paths[64][128];
    if (!nf)
        for (size_t i = 0; i < sizeof dflt / sizeof *dflt; i++) {
            snprintf(paths[i], sizeof paths[i], "examples/%s.ssm", dflt[i]);
            files[nf++] = paths[i];
        }
    static const char *devs[] = {"interp", "cpu", "cuda"};
    printf("bench_grad: device %s, batch %lld, seqlen %lld, threads %d, %s, medians of %d rounds (each: forward, "
           "training forward, backward in turn, host tensors)\n",
           devs[o.device], (long long)o.B, (long long)o.T, o.threads, o.dtype == SSMC_BF16 ? "bf16" : "f32", o.reps);
    printf("%-22s %10s %10s %10s %8s %8s %12s\n", "model", "fwd_ms", "train_ms", "bwd_ms", "bwd/fwd", "(t+b)/f",
           "tape_B/seq");
    for (int i = 0; i < nf; i++) bench_one(files[i], &o);
    return 0;
}
