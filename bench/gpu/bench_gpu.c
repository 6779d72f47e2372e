/* bench_gpu.c: ssmc's side of the GPU benchmark (issue 4 item 5).
 *
 * For each case (gla, simple_gla, gated_deltanet, mamba2 at B=4 T=4096 with
 * fla's and mamba_ssm's shapes; the mamba2 decode step at batch 64, T=1), it
 * compiles the model for SSMC_DEVICE_CUDA through the public API with an empty
 * kernel cache (cold compile), runs it once (cold first run), compiles it again
 * from the now-filled cache (cache hit), then times `--reps` runs after
 * `--warmup` runs and prints the median. .bench/gpu/bench_ref.py (git-ignored)
 * times the reference kernels at the same shapes; bench/gpu/run_all.sh puts
 * both in one table. `--device interp|cpu` and `--T` exist to check this
 * program without a GPU (small T); their numbers compare with nothing.
 *
 * Two modes, chosen when building (bench/gpu/build.sh):
 *  - device (BENCH_HAVE_RUN_DEVICE defined, when include/ssmc.h declares
 *    ssmc_run_device): tensors live on the GPU (allocated through
 *    runtime/cuda_driver.h in the primary context ssmc uses too); each timed run is
 *    preceded by an L2 flush and bracketed by a host clock and a whole-context
 *    synchronisation, so it counts launch and sync latency (a few us) but no
 *    copies. A second figure, `pipelined_ms`, is the mean of the same number of
 *    back-to-back runs with one synchronisation at the end.
 *  - host (fallback): ssmc_run on host tensors; the time includes the
 *    backend's host<->device copies (reported as mode=host in every line).
 *
 * Bytes: every input and param read once, every output written once, a given
 * state read and written: the same count bench_ref.py uses. Inputs, outputs and
 * states are bf16; params f32 (as fla and mamba_ssm keep them).
 *
 * Output: one `BENCH side=ours ...` line per case (parsed by run_all.sh), or a
 * `BENCHERR side=ours case=... err=...` line; a failing case never stops the
 * others. Exit status 0 unless no case ran. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ssmc.h"
#include "runtime/cuda_driver.h"
#include "support/support.h"

#define BENCH_MAX_TENSORS 32
#define BENCH_PEAK_BPS 4.3e12
#define BENCH_FLUSH_BYTES ((size_t)256 << 20) /* > 4x the H200's 60 MB L2 */

typedef struct bench_case {
    const char *name;
    const char *file; /* relative to --repo */
    ssmc_dim dims[6];
    int ndims;
    int64_t batch, T;
    int give_state; /* decode: the state is read and written */
} bench_case;

static const bench_case bench_cases[] = {
    {"simple_gla", "bench/gpu/simple_gla.ssm", {{"H", 16}, {"K", 128}, {"V", 128}}, 3, 4, 4096, 0},
    {"gla", "examples/gla.ssm", {{"H", 16}, {"K", 128}, {"V", 128}}, 3, 4, 4096, 0},
    {"gated_deltanet", "examples/gated_deltanet.ssm", {{"H", 16}, {"K", 128}, {"V", 128}}, 3, 4, 4096, 0},
    {"mamba2", "examples/mamba2.ssm", {{"H", 64}, {"P", 64}, {"N", 128}}, 3, 4, 4096, 0},
    {"mamba2_decode", "examples/mamba2.ssm", {{"H", 64}, {"P", 64}, {"N", 128}}, 3, 64, 1, 1},
    /* flash-linear-attention's and mamba_ssm's semantics (examples/fla_*.ssm, mamba2_ssd.ssm), their shapes */
    {"fla_linear_attn", "examples/fla_linear_attn.ssm", {{"H", 16}, {"K", 128}, {"V", 128}}, 3, 4, 4096, 0},
    {"fla_retention", "examples/fla_retention.ssm", {{"H", 16}, {"K", 128}, {"V", 128}}, 3, 4, 4096, 0},
    {"fla_simple_gla", "examples/fla_simple_gla.ssm", {{"H", 16}, {"K", 128}, {"V", 128}}, 3, 4, 4096, 0},
    {"fla_gla", "examples/fla_gla.ssm", {{"H", 16}, {"K", 128}, {"V", 128}}, 3, 4, 4096, 0},
    {"fla_delta_rule", "examples/fla_delta_rule.ssm", {{"H", 16}, {"K", 128}, {"V", 128}}, 3, 4, 4096, 0},
    {"fla_gated_delta_rule", "examples/fla_gated_delta_rule.ssm", {{"H", 16}, {"HV", 16}, {"R", 1}, {"K", 128}, {"V", 128}},
     5, 4, 4096, 0},
    {"fla_gated_delta_rule_8k", "examples/fla_gated_delta_rule.ssm",
     {{"H", 32}, {"HV", 32}, {"R", 1}, {"K", 128}, {"V", 128}}, 5, 4, 8192, 0},
    {"mamba2_ssd", "examples/mamba2_ssd.ssm", {{"H", 64}, {"P", 64}, {"G", 1}, {"R", 64}, {"N", 128}}, 5, 4, 4096, 0},
};
#define BENCH_NCASES ((int)(sizeof bench_cases / sizeof bench_cases[0]))

typedef struct bench_opts {
    const char *repo;
    const char *only; /* one case name, or NULL */
    int reps, warmup;
    double max_case_s; /* stop timing a case's reps after this many seconds */
    ssmc_algo algo;
    ssmc_device device;
    int64_t T; /* overrides the sequence cases' T when > 0 */
} bench_opts;

/* One allocated tensor of a case. */
typedef struct bench_tensor {
    const char *name;
    ssmc_role role;
    ssmc_dtype dtype;
    size_t elems, bytes;
    void *host;
    CUdeviceptr dev;
} bench_tensor;

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* xorshift64* and Box-Muller: reproducible inputs without libc's rand state */
static double uniform01(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return ((*s * 0x2545F4914F6CDD1Dull) >> 11) * (1.0 / 9007199254740992.0);
}

static double normal(uint64_t *s)
{
    double u = uniform01(s), v = uniform01(s);
    if (u < 1e-300) u = 1e-300;
    return sqrt(-2 * log(u)) * cos(6.283185307179586 * v);
}

/* The value of element i of tensor `name`, in the ranges the references use:
 * A_log = log U(1,16), dt_bias = softplus^-1 U(1e-3, 1e-1), simple GLA's g a
 * log-space gate logsigmoid(z+4), mamba's dt N(0, 0.5^2) where the model
 * takes it raw (it has a dt_bias and a softplus), else (mamba2_ssd, dt already
 * through softplus, as mamba_chunk_scan_combined takes it) log-uniform in
 * [1e-3, 1e-1] as bench_ref.py draws it; else N(0,1). */
static double init_value(const char *name, bool raw_dt, uint64_t *s)
{
    if (!strcmp(name, "A_log")) return log(1 + 15 * uniform01(s));
    if (!strcmp(name, "dt_bias")) {
        double y = 1e-3 + (1e-1 - 1e-3) * uniform01(s);
        return y + log(-expm1(-y));
    }
    if (!strcmp(name, "g")) return -log1p(exp(-(normal(s) + 4)));
    if (!strcmp(name, "dt")) return raw_dt ? 0.5 * normal(s) : exp(log(1e-3) + uniform01(s) * (log(1e-1) - log(1e-3)));
    /* the delta rules: a contracting correction (beta in (0, 1), keys of norm about 1 at K = 128) */
    if (!strcmp(name, "beta")) return uniform01(s);
    if (!strcmp(name, "k")) return normal(s) / sqrt(128.0);
    if (!strcmp(name, "g_gamma")) return log(1 - pow(2, -5 - 4 * uniform01(s)));
    if (!strcmp(name, "scale")) return 1 / sqrt(128.0);
    if (!strcmp(name, "A")) return -exp(uniform01(s));
    return normal(s);
}

static size_t dtype_size(ssmc_dtype t) { return t == SSMC_F64 ? 8 : t == SSMC_F32 ? 4 : 2; }

static double host_value(const bench_tensor *t, size_t i)
{
    if (t->dtype == SSMC_F32) return ((const float *)t->host)[i];
    return bf16_to_f32(((const uint16_t *)t->host)[i]);
}

typedef struct bench_run {
    const bench_case *c;
    const bench_opts *o;
    ssmc_ctx *ctx;
    char *src;
    size_t src_len;
    bench_tensor t[BENCH_MAX_TENSORS];
    int nt;
    ssmc_arg args[BENCH_MAX_TENSORS];
    rt_cuda *gpu; /* device mode only */
    CUdeviceptr flush;
    size_t bytes_moved;
} bench_run;

static void report_error(const bench_case *c, const char *what, const char *msg)
{
    printf("BENCHERR side=ours case=%s err=%s: ", c->name, what);
    for (const char *p = msg; *p; p++) putchar(*p == '\n' ? ' ' : *p);
    putchar('\n');
    fflush(stdout);
}

static ssmc_status compile_model(bench_run *r, ssmc_model **m)
{
    ssmc_options opts = {0};
    opts.dims = r->c->dims;
    opts.ndims = r->c->ndims;
    opts.device = r->o->device;
    opts.algo = r->o->algo;
    return ssmc_compile(r->ctx, r->c->file, r->src, r->src_len, &opts, m);
}

/* Allocates and fills every tensor of the model the case passes. */
static int alloc_tensors(bench_run *r, ssmc_model *m)
{
    uint64_t seed = hash64(r->c->name, strlen(r->c->name), HASH64_SEED) | 1;
    int n = ssmc_model_num_tensors(m);
    bool raw_dt = ssmc_model_find(m, "dt_bias") >= 0;
    for (int i = 0; i < n; i++) {
        ssmc_tensor_info info;
        if (ssmc_model_tensor(m, i, &info) != SSMC_OK) continue;
        if (info.role == SSMC_STATE && !r->c->give_state) continue;
        if (r->nt == BENCH_MAX_TENSORS) return 0;
        bench_tensor *t = &r->t[r->nt];
        size_t elems = 1;
        for (int k = 0; k < info.rank; k++) elems *= (size_t)info.shape[k];
        if (info.role != SSMC_PARAM) elems *= (size_t)r->c->batch;
        if (info.per_step) elems *= (size_t)r->c->T;
        /* the name outlives this model: the cache-hit run uses a second one */
        *t = (bench_tensor){.name = strdup(info.name), .role = info.role, .elems = elems};
        if (!t->name) return 0;
        t->dtype = info.role == SSMC_PARAM ? SSMC_F32 : SSMC_BF16;
        t->bytes = elems * dtype_size(t->dtype);
        t->host = malloc(t->bytes);
        if (!t->host) return 0;
        r->nt++;
        for (size_t e = 0; e < elems; e++) {
            float v = info.role == SSMC_OUTPUT ? NAN : (float)init_value(info.name, raw_dt, &seed);
            if (t->dtype == SSMC_F32)
                ((float *)t->host)[e] = v;
            else
                ((uint16_t *)t->host)[e] = f32_to_bf16(v);
        }
        r->bytes_moved += t->bytes * (info.role == SSMC_STATE ? 2 : 1);
    }
    return 1;
}

static int to_device(bench_run *r, strbuf *err)
{
    for (int i = 0; i < r->nt; i++) {
        bench_tensor *t = &r->t[i];
        if (rt_cuda_alloc(r->gpu, t->bytes, &t->dev, err) != SSMC_OK) return 0;
        if (rt_cuda_htod(r->gpu, t->dev, t->host, t->bytes, err) != SSMC_OK) return 0;
    }
    return 1;
}

static void make_args(bench_run *r)
{
    for (int i = 0; i < r->nt; i++) {
        bench_tensor *t = &r->t[i];
        r->args[i] = (ssmc_arg){t->name, t->dtype, r->gpu ? (void *)(uintptr_t)t->dev : t->host, 0};
    }
}

static ssmc_status run_model(bench_run *r, ssmc_model *m)
{
#ifdef BENCH_HAVE_RUN_DEVICE
    if (r->gpu) return ssmc_run_device(m, r->c->batch, r->c->T, r->args, r->nt, NULL);
#endif
    return ssmc_run(m, r->c->batch, r->c->T, r->args, r->nt);
}

/* One synchronous run: the host clock around the run and a whole-context sync. */
static ssmc_status timed_run(bench_run *r, ssmc_model *m, double *ms, strbuf *err)
{
    if (r->gpu) {
        if (r->flush && rt_cuda_memset(r->gpu, r->flush, 0, BENCH_FLUSH_BYTES, err) != SSMC_OK) return SSMC_ERR_BACKEND;
        if (rt_cuda_sync(r->gpu, err) != SSMC_OK) return SSMC_ERR_BACKEND;
    }
    double t0 = now_ms();
    ssmc_status s = run_model(r, m);
    if (s != SSMC_OK) return s;
    if (r->gpu && rt_cuda_sync(r->gpu, err) != SSMC_OK) return SSMC_ERR_BACKEND;
    *ms = now_ms() - t0;
    return SSMC_OK;
}

/* Copies the outputs back (device mode) and reports non-finite values. */
static void check_outputs(bench_run *r, strbuf *note)
{
    for (int i = 0; i < r->nt; i++) {
        bench_tensor *t = &r->t[i];
        if (t->role != SSMC_OUTPUT && t->role != SSMC_STATE) continue;
        strbuf err = {0};
        if (r->gpu && rt_cuda_dtoh(r->gpu, t->host, t->dev, t->bytes, &err) != SSMC_OK) {
            sb_printf(note, " %s=unreadable", t->name);
            sb_free(&err);
            continue;
        }
        size_t bad = 0;
        double amax = 0;
        for (size_t e = 0; e < t->elems; e++) {
            double v = host_value(t, e);
            if (!isfinite(v))
                bad++;
            else if (fabs(v) > amax)
                amax = fabs(v);
        }
        sb_printf(note, " %s_nonfinite=%zu %s_absmax=%.4g", t->name, bad, t->name, amax);
    }
}

static void free_run(bench_run *r)
{
    for (int i = 0; i < r->nt; i++) {
        strbuf err = {0};
        if (r->gpu) rt_cuda_free(r->gpu, r->t[i].dev, &err);
        sb_free(&err);
        free(r->t[i].host);
        free((char *)r->t[i].name);
    }
    free(r->src);
}

/* Runs one case; returns 1 when it produced a BENCH line. */
static int bench_one(const bench_case *c0, const bench_opts *o, rt_cuda *gpu, CUdeviceptr flush)
{
    bench_case cc = *c0;
    if (o->T > 0 && cc.T > 1) cc.T = o->T;
    const bench_case *c = &cc;
    bench_run r = {.c = c, .o = o, .gpu = gpu, .flush = flush};
    strbuf err = {0}, note = {0};
    ssmc_model *m = NULL;
    int ok = 0;
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", o->repo, c->file);
    const char *why;
    r.src = read_file(path, &r.src_len, &why);
    if (!r.src) {
        report_error(c, path, why);
        return 0;
    }
    r.ctx = ssmc_ctx_new();
    char cache[] = "/tmp/ssmc-bench-cache-XXXXXX";
    if (!r.ctx || !mkdtemp(cache)) {
        report_error(c, "setup", "out of memory or no temporary directory");
        goto done;
    }
    setenv("SSMC_CACHE_DIR", cache, 1);

    /* cold: empty cache; the first run may finish a lazy compile */
    double t0 = now_ms();
    ssmc_status s = compile_model(&r, &m);
    double cold_compile = now_ms() - t0;
    if (s != SSMC_OK) {
        report_error(c, ssmc_status_name(s), ssmc_ctx_error(r.ctx));
        goto done;
    }
    if (!alloc_tensors(&r, m)) {
        report_error(c, "setup", "out of host memory or too many tensors");
        goto done;
    }
    if (gpu && !to_device(&r, &err)) {
        report_error(c, "device memory", sb_cstr(&err));
        goto done;
    }
    make_args(&r);
    double cold_run;
    if ((s = timed_run(&r, m, &cold_run, &err)) != SSMC_OK) {
        report_error(c, "first run", s == SSMC_ERR_BACKEND && err.len ? sb_cstr(&err) : ssmc_ctx_error(r.ctx));
        goto done;
    }

    /* cache hit: a new model from the same source and options */
    ssmc_model_free(m);
    m = NULL;
    t0 = now_ms();
    s = compile_model(&r, &m);
    double hit_compile = now_ms() - t0;
    double hit_run = 0;
    if (s == SSMC_OK) s = timed_run(&r, m, &hit_run, &err);
    if (s != SSMC_OK) {
        report_error(c, "cache-hit compile/run", ssmc_ctx_error(r.ctx));
        goto done;
    }

    for (int i = 0; i < o->warmup; i++) {
        double ms;
        if ((s = timed_run(&r, m, &ms, &err)) != SSMC_OK) break;
    }
    double *times = malloc(sizeof(double) * (size_t)(o->reps > 0 ? o->reps : 1));
    int n = 0;
    double start = now_ms();
    while (s == SSMC_OK && times && n < o->reps && (n < 3 || now_ms() - start < o->max_case_s * 1e3))
        s = timed_run(&r, m, &times[n++], &err);
    if (s != SSMC_OK || !times || n == 0) {
        report_error(c, "timed run", err.len ? sb_cstr(&err) : ssmc_ctx_error(r.ctx));
        free(times);
        goto done;
    }
    double med = median(times, n);
    free(times);

    /* back-to-back runs, one sync: the launch-pipelined figure (device mode) */
    double piped = NAN;
    if (gpu && rt_cuda_sync(gpu, &err) == SSMC_OK) {
        t0 = now_ms();
        int k = 0;
        for (; k < n && s == SSMC_OK; k++) s = run_model(&r, m);
        if (s == SSMC_OK && rt_cuda_sync(gpu, &err) == SSMC_OK) piped = (now_ms() - t0) / k;
    }
    check_outputs(&r, &note);

    double gbps = (double)r.bytes_moved / (med * 1e-3) / 1e9;
    printf("BENCH side=ours case=%s impl=ssmc.%s ms=%.5f cold_ms=%.1f bytes=%zu gbps=%.1f pct=%.1f "
           "mode=%s reps=%d pipelined_ms=%.5f compile_cold_ms=%.1f first_run_ms=%.2f compile_hit_ms=%.1f "
           "hit_first_run_ms=%.2f%s\n",
           c->name, o->device != SSMC_DEVICE_CUDA ? (o->device == SSMC_DEVICE_CPU ? "cpu" : "interp")
           : o->algo == SSMC_ALGO_CHUNKED ? "chunked" : o->algo == SSMC_ALGO_RECURRENT ? "recurrent" : "auto",
           med, cold_compile + cold_run, r.bytes_moved, gbps, 100 * gbps * 1e9 / BENCH_PEAK_BPS,
           gpu ? "device" : o->device == SSMC_DEVICE_CUDA ? "host(includes-copies)" : "host", n, piped, cold_compile, cold_run, hit_compile, hit_run,
           sb_cstr(&note));
    fflush(stdout);
    ok = 1;
done:
    ssmc_model_free(m);
    ssmc_ctx_free(r.ctx);
    free_run(&r);
    sb_free(&err);
    sb_free(&note);
    return ok;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: bench_gpu [--repo DIR] [--case NAME] [--reps N] [--warmup N] [--max-case-s S]\n"
            "                 [--algo auto|recurrent|chunked|scan] [--device cuda|cpu|interp] [--T N]\n"
            "cases:");
    for (int i = 0; i < BENCH_NCASES; i++) fprintf(stderr, " %s", bench_cases[i].name);
    fprintf(stderr, "\n");
}

int main(int argc, char **argv)
{
    bench_opts o = {.repo = ".", .reps = 50, .warmup = 5, .max_case_s = 30, .algo = SSMC_ALGO_AUTO,
                    .device = SSMC_DEVICE_CUDA};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            usage();
            return 2;
        }
        i++;
        if (!strcmp(a, "--repo"))
            o.repo = v;
        else if (!strcmp(a, "--case"))
            o.only = v;
        else if (!strcmp(a, "--reps"))
            o.reps = atoi(v);
        else if (!strcmp(a, "--warmup"))
            o.warmup = atoi(v);
        else if (!strcmp(a, "--max-case-s"))
            o.max_case_s = atof(v);
        else if (!strcmp(a, "--T"))
            o.T = atoll(v);
        else if (!strcmp(a, "--device")) {
            if (!strcmp(v, "cuda"))
                o.device = SSMC_DEVICE_CUDA;
            else if (!strcmp(v, "cpu"))
                o.device = SSMC_DEVICE_CPU;
            else if (!strcmp(v, "interp"))
                o.device = SSMC_DEVICE_INTERP;
            else {
                usage();
                return 2;
            }
        }
        else if (!strcmp(a, "--algo")) {
            if (!strcmp(v, "auto"))
                o.algo = SSMC_ALGO_AUTO;
            else if (!strcmp(v, "recurrent"))
                o.algo = SSMC_ALGO_RECURRENT;
            else if (!strcmp(v, "chunked"))
                o.algo = SSMC_ALGO_CHUNKED;
            else if (!strcmp(v, "scan"))
                o.algo = SSMC_ALGO_SCAN;
            else {
                usage();
                return 2;
            }
        } else {
            usage();
            return 2;
        }
    }
    if (o.reps < 1) o.reps = 1;

    rt_cuda *gpu = NULL;
    CUdeviceptr flush = 0;
#ifdef BENCH_HAVE_RUN_DEVICE
    strbuf err = {0};
    if (o.device != SSMC_DEVICE_CUDA) {
        printf("bench_gpu: host mode (device %s)\n", o.device == SSMC_DEVICE_CPU ? "cpu" : "interp");
    } else if (rt_cuda_open(&gpu, &err) != SSMC_OK) {
        printf("BENCHERR side=ours case=all err=no GPU: %s\n", sb_cstr(&err));
        return 1;
    } else {
        printf("bench_gpu: device mode, %s (%s, %d SMs)\n", rt_cuda_device_name(gpu), rt_cuda_arch_name(gpu),
               rt_cuda_sm_count(gpu));
        if (rt_cuda_alloc(gpu, BENCH_FLUSH_BYTES, &flush, &err) != SSMC_OK) flush = 0;
    }
    sb_free(&err);
#else
    printf("bench_gpu: host mode (ssmc_run on host tensors): times include host<->device copies\n");
#endif
    printf("bench_gpu: ssmc %s, reps %d, warmup %d\n", SSMC_VERSION, o.reps, o.warmup);
    fflush(stdout);

    int ran = 0;
    for (int i = 0; i < BENCH_NCASES; i++) {
        if (o.only && strcmp(o.only, bench_cases[i].name)) continue;
        printf("--- %s\n", bench_cases[i].name);
        fflush(stdout);
        ran += bench_one(&bench_cases[i], &o, gpu, flush);
    }
    if (gpu) {
        strbuf err2 = {0};
        rt_cuda_free(gpu, flush, &err2);
        sb_free(&err2);
        rt_cuda_close(gpu);
    }
    return ran ? 0 : 1;
}
