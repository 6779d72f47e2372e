/* bench_gpu.c: ssmc's side of the GPU benchmark (issue 4 item 5).
 *
 * For each case (gla, simple_gla, gated_deltanet, mamba2 at B=4 T=4096 with
 * fla's and mamba_ssm's shapes; the mamba2 decode step at batch 64, T=1), it
 * compiles the model for SSMC_DEVICE_CUDA through the public API with an empty
 * kernel cache (cold compile), runs it once (cold first run), compiles it again
 * from the now-filled cache (cache hit), then times `--reps` runs after
 * `--warmup` runs and prints the median. .bench/gpu/bench_ref.py (git-ignored)
 * times the reference kernels at the same shapes; bench/gpu/run_all.sh puts
 * both in one table. `--case a,b` picks cases. `--device interp|cpu`, `--T`
 * (or `--seqlen`), `--batch` and `-D NAME=V` exist to check this program
 * without a GPU, or on the emulated driver of tests/gpu/emu (SSMC_CUDA_DRIVER,
 * SSMC_NVRTC: tests/unit/helpers/emu_driver.c shows the setup), at small
 * shapes; their numbers compare with nothing.
 *
 * `--grad` times the training step instead (device mode, --device cuda only),
 * to compare with bench_ref.py --bwd's `.fwdbwd` rows: same cases, shapes,
 * dtypes and inputs; every tensor on the device; a random cotangent (N(0,1))
 * for every output and given state, a gradient buffer (poisoned with NaN) for
 * every input, param and given state, all in the tensors' dtypes. Each rep:
 * an L2 flush, then ssmc_forward_train_device (the tape's checkpoints on the
 * device) and ssmc_backward_device, each followed by a whole-context
 * synchronisation, on the host clock. Three rows per case: `ssmc.fwdbwd` (the
 * whole step, what bench_ref.py's `.fwdbwd` times), `ssmc.fwdtrain` and
 * `ssmc.bwd` (its halves; each a median of its own, so they need not add up to
 * the step's). Both calls wait for their stream before returning (they free
 * working buffers), so the sync between them costs only a few us. The tape is
 * freed after the clock stops: ssmc_tape_free is a sync and one cuMemFree per
 * state's checkpoints, bookkeeping that PyTorch's caching allocator makes
 * near free on the reference side; its median is printed as tape_free_ms so
 * it can be added back. The cuMemAllocs of the tape and of the backward's
 * working buffers happen inside the calls and are timed. A call the library
 * refuses (today: the chunked algorithm's gradients on the device) prints a
 * BENCHERR line with the library's message and the next case runs. Warm-up
 * steps stop early, too, when the case's --max-case-s is spent.
 *
 * Two modes, chosen when building (bench/gpu/build.sh):
 *  - device (BENCH_HAVE_RUN_DEVICE defined, when include/ssmc.h declares
 *    ssmc_run_device): tensors live on the GPU (allocated through
 *    runtime/cuda_driver.h in the primary context ssmc uses too); each timed run is
 *    preceded by an L2 flush and bracketed by a host clock and a whole-context
 *    synchronisation, so it counts launch and sync latency (a few us) but no
 *    copies. A second figure, `pipelined_ms`, is the mean of the same number of
 *    back-to-back runs with one synchronisation at the end. `--grad` needs
 *    BENCH_HAVE_GRAD_DEVICE too (include/ssmc.h declares ssmc_backward_device).
 *  - host (fallback): ssmc_run on host tensors; the time includes the
 *    backend's host<->device copies (reported as mode=host in every line).
 *
 * Bytes: every input and param read once, every output written once, a given
 * state read and written: the same count bench_ref.py uses; for the training
 * step, also every cotangent read once and every gradient written once (the
 * backward alone: inputs, params and cotangents read, gradients written).
 * Inputs, outputs and states are bf16; params f32 (as fla and mamba_ssm keep
 * them); cotangents and gradients the dtype of their tensor.
 *
 * Output: `BENCH side=ours ...` lines (one per case, three with --grad; parsed
 * by run_all.sh), or a `BENCHERR side=ours case=... err=...` line; a failing
 * case never stops the others. Exit status 0 unless no case ran. */
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
#define BENCH_MAX_DIMS 8
#define BENCH_PEAK_BPS 4.3e12
#define BENCH_FLUSH_BYTES ((size_t)256 << 20) /* > 4x the H200's 60 MB L2 */

typedef struct bench_case {
    const char *name;
    const char *file; /* relative to --repo */
    ssmc_dim dims[BENCH_MAX_DIMS];
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
    const char *only; /* case names, comma-separated, or NULL: all */
    int reps, warmup;
    double max_case_s; /* stop timing a case's reps after this many seconds */
    ssmc_algo algo;
    ssmc_device device;
    int64_t T;     /* overrides the sequence cases' T when > 0 */
    int64_t batch; /* overrides every case's batch when > 0 */
    ssmc_dim dims[BENCH_MAX_DIMS]; /* -D NAME=V: replaces dim NAME in the cases that set it */
    int ndims;
    int grad; /* time the training step (forward_train + backward) instead of the forward */
    int64_t grad_chunk; /* --grad-chunk: ssmc_options.grad_chunk (0: the default) */
} bench_opts;

/* One allocated tensor of a case. */
typedef struct bench_tensor {
    const char *name;
    ssmc_role role;
    ssmc_dtype dtype;
    size_t elems, bytes;
    void *host;
    CUdeviceptr dev;
    CUdeviceptr cot, grad; /* --grad: its cotangent (outputs, states), its gradient (inputs, params, states); 0: none */
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

static double host_value(ssmc_dtype dtype, const void *host, size_t i)
{
    if (dtype == SSMC_F32) return ((const float *)host)[i];
    return bf16_to_f32(((const uint16_t *)host)[i]);
}

static void host_set(ssmc_dtype dtype, void *host, size_t i, float v)
{
    if (dtype == SSMC_F32)
        ((float *)host)[i] = v;
    else
        ((uint16_t *)host)[i] = f32_to_bf16(v);
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

/* One BENCHERR line (run_all.sh reads lines: the message's newlines become spaces). */
static void print_error(const char *case_name, const char *what, const char *msg)
{
    printf("BENCHERR side=ours case=%s err=%s: ", case_name, what);
    for (const char *p = msg; *p; p++) putchar(*p == '\n' ? ' ' : *p);
    putchar('\n');
    fflush(stdout);
}

static void report_error(const bench_case *c, const char *what, const char *msg) { print_error(c->name, what, msg); }

/* The case as run: the command line's overrides of T, batch and dims applied. */
static bench_case case_as_run(const bench_case *c0, const bench_opts *o)
{
    bench_case c = *c0;
    if (o->T > 0 && c.T > 1) c.T = o->T;
    if (o->batch > 0) c.batch = o->batch;
    for (int i = 0; i < o->ndims; i++)
        for (int k = 0; k < c.ndims; k++)
            if (!strcmp(c.dims[k].name, o->dims[i].name)) c.dims[k].value = o->dims[i].value;
    return c;
}

/* The case's source and a context with an empty kernel cache of its own
 * (so that the first compile is cold); 0, reported, when that fails. */
static int open_case(bench_run *r)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", r->o->repo, r->c->file);
    const char *why;
    r->src = read_file(path, &r->src_len, &why);
    if (!r->src) {
        report_error(r->c, path, why);
        return 0;
    }
    r->ctx = ssmc_ctx_new();
    char cache[] = "/tmp/ssmc-bench-cache-XXXXXX";
    if (!r->ctx || !mkdtemp(cache)) {
        report_error(r->c, "setup", "out of memory or no temporary directory");
        return 0;
    }
    setenv("SSMC_CACHE_DIR", cache, 1);
    return 1;
}

static ssmc_status compile_model(bench_run *r, ssmc_model **m)
{
    ssmc_options opts = {0};
    opts.dims = r->c->dims;
    opts.ndims = r->c->ndims;
    opts.device = r->o->device;
    opts.algo = r->o->algo;
    opts.grad_chunk = r->o->grad_chunk;
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
        for (size_t e = 0; e < elems; e++)
            host_set(t->dtype, t->host, e, info.role == SSMC_OUTPUT ? NAN : (float)init_value(info.name, raw_dt, &seed));
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

/* Before a timed run (device mode): L2 flushed, the device idle. */
static ssmc_status flush_and_sync(bench_run *r, strbuf *err)
{
    if (!r->gpu) return SSMC_OK;
    if (r->flush && rt_cuda_memset(r->gpu, r->flush, 0, BENCH_FLUSH_BYTES, err) != SSMC_OK) return SSMC_ERR_BACKEND;
    return rt_cuda_sync(r->gpu, err) != SSMC_OK ? SSMC_ERR_BACKEND : SSMC_OK;
}

/* One synchronous run: the host clock around the run and a whole-context sync. */
static ssmc_status timed_run(bench_run *r, ssmc_model *m, double *ms, strbuf *err)
{
    if (flush_and_sync(r, err) != SSMC_OK) return SSMC_ERR_BACKEND;
    double t0 = now_ms();
    ssmc_status s = run_model(r, m);
    if (s != SSMC_OK) return s;
    if (r->gpu && rt_cuda_sync(r->gpu, err) != SSMC_OK) return SSMC_ERR_BACKEND;
    *ms = now_ms() - t0;
    return SSMC_OK;
}

/* Notes the non-finite count and the largest magnitude of one buffer of
 * t's dtype and size, read back from dev (device mode) or from host. */
static void note_values(bench_run *r, const char *label, const bench_tensor *t, CUdeviceptr dev, void *host,
                        strbuf *note)
{
    strbuf err = {0};
    if (r->gpu && rt_cuda_dtoh(r->gpu, host, dev, t->bytes, &err) != SSMC_OK) {
        sb_printf(note, " %s=unreadable", label);
        sb_free(&err);
        return;
    }
    size_t bad = 0;
    double amax = 0;
    for (size_t e = 0; e < t->elems; e++) {
        double v = host_value(t->dtype, host, e);
        if (!isfinite(v))
            bad++;
        else if (fabs(v) > amax)
            amax = fabs(v);
    }
    sb_printf(note, " %s_nonfinite=%zu %s_absmax=%.4g", label, bad, label, amax);
}

/* Copies the outputs back (device mode) and reports non-finite values. */
static void check_outputs(bench_run *r, strbuf *note)
{
    for (int i = 0; i < r->nt; i++) {
        bench_tensor *t = &r->t[i];
        if (t->role == SSMC_OUTPUT || t->role == SSMC_STATE) note_values(r, t->name, t, t->dev, t->host, note);
    }
}

static void free_run(bench_run *r)
{
    for (int i = 0; i < r->nt; i++) {
        strbuf err = {0};
        if (r->gpu) {
            rt_cuda_free(r->gpu, r->t[i].dev, &err);
            if (r->t[i].cot) rt_cuda_free(r->gpu, r->t[i].cot, &err);
            if (r->t[i].grad) rt_cuda_free(r->gpu, r->t[i].grad, &err);
        }
        sb_free(&err);
        free(r->t[i].host);
        free((char *)r->t[i].name);
    }
    free(r->src);
}

static const char *algo_name(const bench_opts *o)
{
    return o->algo == SSMC_ALGO_CHUNKED ? "chunked" : o->algo == SSMC_ALGO_RECURRENT ? "recurrent"
           : o->algo == SSMC_ALGO_SCAN  ? "scan"
                                        : "auto";
}

/* Runs one case; returns 1 when it produced a BENCH line. */
static int bench_one(const bench_case *c0, const bench_opts *o, rt_cuda *gpu, CUdeviceptr flush)
{
    bench_case cc = case_as_run(c0, o);
    const bench_case *c = &cc;
    bench_run r = {.c = c, .o = o, .gpu = gpu, .flush = flush};
    strbuf err = {0}, note = {0};
    ssmc_model *m = NULL;
    int ok = 0;
    if (!open_case(&r)) goto done;

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
           "hit_first_run_ms=%.2f batch=%lld T=%lld%s\n",
           c->name, o->device != SSMC_DEVICE_CUDA ? (o->device == SSMC_DEVICE_CPU ? "cpu" : "interp") : algo_name(o),
           med, cold_compile + cold_run, r.bytes_moved, gbps, 100 * gbps * 1e9 / BENCH_PEAK_BPS,
           gpu ? "device" : o->device == SSMC_DEVICE_CUDA ? "host(includes-copies)" : "host", n, piped, cold_compile, cold_run, hit_compile, hit_run,
           (long long)c->batch, (long long)c->T, sb_cstr(&note));
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

#ifdef BENCH_HAVE_GRAD_DEVICE
#ifndef BENCH_HAVE_RUN_DEVICE
#error "BENCH_HAVE_GRAD_DEVICE needs BENCH_HAVE_RUN_DEVICE (device tensors)"
#endif
/* ---- --grad: the training step ---- */

/* The backward's arguments: the inputs and params (the values the forward
 * had), a cotangent per output and given state, a gradient per input, param
 * and given state. */
typedef struct grad_args {
    ssmc_arg vals[BENCH_MAX_TENSORS], douts[BENCH_MAX_TENSORS], grads[BENCH_MAX_TENSORS];
    int nv, nd, ng;
    size_t val_bytes, cot_bytes, grad_bytes;
} grad_args;

/* Allocates the cotangents (random N(0,1), as bench_ref.py's randn_like,
 * drawn on the host and copied once) and the gradients (NaN: a gradient the
 * backward does not write shows), and lists the backward's arguments. */
static int grad_buffers(bench_run *r, grad_args *ga, strbuf *err)
{
    uint64_t seed = hash64(r->c->name, strlen(r->c->name), HASH64_SEED ^ 0x9e3779b97f4a7c15ull) | 1;
    memset(ga, 0, sizeof *ga);
    for (int i = 0; i < r->nt; i++) {
        bench_tensor *t = &r->t[i];
        if (t->role == SSMC_INPUT || t->role == SSMC_PARAM) {
            ga->vals[ga->nv++] = r->args[i];
            ga->val_bytes += t->bytes;
        }
        if (t->role != SSMC_OUTPUT) {
            if (rt_cuda_alloc(r->gpu, t->bytes, &t->grad, err) != SSMC_OK) return 0;
            if (rt_cuda_memset(r->gpu, t->grad, 0xff, t->bytes, err) != SSMC_OK) return 0;
            ga->grads[ga->ng++] = (ssmc_arg){t->name, t->dtype, (void *)(uintptr_t)t->grad, 0};
            ga->grad_bytes += t->bytes;
        }
        if (t->role == SSMC_OUTPUT || t->role == SSMC_STATE) {
            void *host = malloc(t->bytes);
            if (!host) {
                sb_puts(err, "out of host memory");
                return 0;
            }
            for (size_t e = 0; e < t->elems; e++) host_set(t->dtype, host, e, (float)normal(&seed));
            ssmc_status s = rt_cuda_alloc(r->gpu, t->bytes, &t->cot, err);
            if (s == SSMC_OK) s = rt_cuda_htod(r->gpu, t->cot, host, t->bytes, err);
            free(host);
            if (s != SSMC_OK) return 0;
            ga->douts[ga->nd++] = (ssmc_arg){t->name, t->dtype, (void *)(uintptr_t)t->cot, 0};
            ga->cot_bytes += t->bytes;
        }
    }
    return 1;
}

/* One training step's times (ms): the training forward, the backward, the tape's free. */
typedef struct step_times {
    double fwd, bwd, free;
} step_times;

/* One training step on the default stream, timed as described at the top;
 * *what names the call that failed. */
static ssmc_status train_step(bench_run *r, ssmc_model *m, const grad_args *ga, step_times *st, size_t *tape_bytes,
                              const char **what, strbuf *err)
{
    *what = "L2 flush/sync";
    if (flush_and_sync(r, err) != SSMC_OK) return SSMC_ERR_BACKEND;
    ssmc_tape *tape = NULL;
    double t0 = now_ms();
    *what = "ssmc_forward_train_device";
    ssmc_status s = ssmc_forward_train_device(m, r->c->batch, r->c->T, r->args, r->nt, &tape, NULL);
    if (s == SSMC_OK && rt_cuda_sync(r->gpu, err) != SSMC_OK) s = SSMC_ERR_BACKEND;
    double t1 = now_ms();
    if (s == SSMC_OK) {
        *what = "ssmc_backward_device";
        s = ssmc_backward_device(m, tape, ga->vals, ga->nv, ga->douts, ga->nd, ga->grads, ga->ng, NULL);
        if (s == SSMC_OK && rt_cuda_sync(r->gpu, err) != SSMC_OK) s = SSMC_ERR_BACKEND;
    }
    double t2 = now_ms();
    if (tape_bytes) *tape_bytes = ssmc_tape_bytes(tape);
    ssmc_tape_free(tape);
    *st = (step_times){t1 - t0, t2 - t1, now_ms() - t2};
    return s;
}

/* A failed step: the driver's message when a sync failed, else the library's. */
static void step_error(const bench_run *r, const char *what, ssmc_status s, strbuf *err)
{
    report_error(r->c, what, s == SSMC_ERR_BACKEND && err->len ? sb_cstr(err) : ssmc_ctx_error(r->ctx));
}

/* Times the training step of one case; returns 1 when it produced BENCH lines. */
static int bench_grad_one(const bench_case *c0, const bench_opts *o, rt_cuda *gpu, CUdeviceptr flush)
{
    bench_case cc = case_as_run(c0, o);
    const bench_case *c = &cc;
    bench_run r = {.c = c, .o = o, .gpu = gpu, .flush = flush};
    strbuf err = {0}, note = {0};
    ssmc_model *m = NULL;
    grad_args *ga = calloc(1, sizeof *ga);
    double *times = malloc(sizeof(double) * 4 * (size_t)o->reps);
    int ok = 0;
    const char *what = "";
    if (!ga || !times) {
        report_error(c, "setup", "out of host memory");
        goto done;
    }
    if (!open_case(&r)) goto done;

    double t0 = now_ms();
    ssmc_status s = compile_model(&r, &m);
    double cold_compile = now_ms() - t0;
    if (s != SSMC_OK) {
        report_error(c, ssmc_status_name(s), ssmc_ctx_error(r.ctx));
        goto done;
    }
    ssmc_grad_info gi;
    if ((s = ssmc_grad_info_of(m, c->T, &gi)) != SSMC_OK) {
        report_error(c, "ssmc_grad_info_of", ssmc_ctx_error(r.ctx));
        goto done;
    }
    if (!alloc_tensors(&r, m)) {
        report_error(c, "setup", "out of host memory or too many tensors");
        goto done;
    }
    if (!to_device(&r, &err)) {
        report_error(c, "device memory", sb_cstr(&err));
        goto done;
    }
    make_args(&r);
    if (!grad_buffers(&r, ga, &err)) {
        report_error(c, "device memory", sb_cstr(&err));
        goto done;
    }
    /* cold: the first step compiles the gradient models (training forward, adjoint) */
    step_times cold, hit, st;
    size_t tape_bytes = 0;
    if ((s = train_step(&r, m, ga, &cold, &tape_bytes, &what, &err)) != SSMC_OK) {
        step_error(&r, what, s, &err);
        goto done;
    }

    /* cache hit: a new model from the same source and options, its first step */
    ssmc_model_free(m);
    m = NULL;
    t0 = now_ms();
    s = compile_model(&r, &m);
    double hit_compile = now_ms() - t0;
    what = "cache-hit compile";
    if (s == SSMC_OK) s = train_step(&r, m, ga, &hit, NULL, &what, &err);
    if (s != SSMC_OK) {
        step_error(&r, what, s, &err);
        goto done;
    }

    double start = now_ms();
    for (int i = 0; i < o->warmup && s == SSMC_OK && now_ms() - start < o->max_case_s * 1e3; i++)
        s = train_step(&r, m, ga, &st, NULL, &what, &err);
    double *tf = times, *tb = times + o->reps, *tx = times + 2 * o->reps, *tt = times + 3 * o->reps;
    int n = 0;
    start = now_ms();
    while (s == SSMC_OK && n < o->reps && (n < 3 || now_ms() - start < o->max_case_s * 1e3)) {
        if ((s = train_step(&r, m, ga, &st, NULL, &what, &err)) != SSMC_OK) break;
        tf[n] = st.fwd, tb[n] = st.bwd, tx[n] = st.free, tt[n] = st.fwd + st.bwd;
        n++;
    }
    if (s != SSMC_OK || n == 0) {
        step_error(&r, what, s, &err);
        goto done;
    }
    double med = median(tt, n), med_f = median(tf, n), med_b = median(tb, n), med_x = median(tx, n);

    check_outputs(&r, &note);
    for (int i = 0; i < r.nt; i++) {
        bench_tensor *t = &r.t[i];
        char label[128];
        snprintf(label, sizeof label, "grad_%s", t->name);
        if (t->grad) note_values(&r, label, t, t->grad, t->host, &note); /* the host copy is not needed any more */
    }

    const char *algo = algo_name(o);
    size_t bytes_all = r.bytes_moved + ga->cot_bytes + ga->grad_bytes;
    size_t bytes_bwd = ga->val_bytes + ga->cot_bytes + ga->grad_bytes;
    double gbps = (double)bytes_all / (med * 1e-3) / 1e9;
    printf("BENCH side=ours case=%s impl=ssmc.fwdbwd ms=%.5f cold_ms=%.1f bytes=%zu gbps=%.1f pct=%.1f mode=device "
           "algo=%s reps=%d fwdtrain_ms=%.5f bwd_ms=%.5f tape_free_ms=%.5f tape_bytes=%zu tape_bytes_per_seq=%zu "
           "grad_chunk=%lld checkpoints=%lld backward_bytes_per_seq=%zu compile_cold_ms=%.1f first_run_ms=%.2f "
           "compile_hit_ms=%.1f hit_first_run_ms=%.2f batch=%lld T=%lld%s\n",
           c->name, med, cold_compile + cold.fwd + cold.bwd, bytes_all, gbps, 100 * gbps * 1e9 / BENCH_PEAK_BPS, algo,
           n, med_f, med_b, med_x, tape_bytes, gi.tape_bytes, (long long)gi.chunk, (long long)gi.checkpoints,
           gi.backward_bytes, cold_compile, cold.fwd + cold.bwd, hit_compile, hit.fwd + hit.bwd, (long long)c->batch,
           (long long)c->T, sb_cstr(&note));
    gbps = (double)r.bytes_moved / (med_f * 1e-3) / 1e9;
    printf("BENCH side=ours case=%s impl=ssmc.fwdtrain ms=%.5f cold_ms=%.1f bytes=%zu gbps=%.1f pct=%.1f mode=device "
           "algo=%s reps=%d tape_bytes=%zu batch=%lld T=%lld\n",
           c->name, med_f, cold_compile + cold.fwd, r.bytes_moved, gbps, 100 * gbps * 1e9 / BENCH_PEAK_BPS, algo, n,
           tape_bytes, (long long)c->batch, (long long)c->T);
    gbps = (double)bytes_bwd / (med_b * 1e-3) / 1e9;
    printf("BENCH side=ours case=%s impl=ssmc.bwd ms=%.5f cold_ms=%.1f bytes=%zu gbps=%.1f pct=%.1f mode=device "
           "algo=%s reps=%d batch=%lld T=%lld\n",
           c->name, med_b, cold.bwd, bytes_bwd, gbps, 100 * gbps * 1e9 / BENCH_PEAK_BPS, algo, n, (long long)c->batch,
           (long long)c->T);
    fflush(stdout);
    ok = 1;
done:
    ssmc_model_free(m);
    ssmc_ctx_free(r.ctx);
    free_run(&r);
    free(ga);
    free(times);
    sb_free(&err);
    sb_free(&note);
    return ok;
}
#endif

static void usage(void)
{
    fprintf(stderr,
            "usage: bench_gpu [--repo DIR] [--case NAME[,NAME...]] [--reps N] [--warmup N] [--max-case-s S]\n"
            "                 [--algo auto|recurrent|chunked|scan] [--device cuda|cpu|interp] [--grad]\n"
            "                 [--T N | --seqlen N] [--batch N] [-D NAME=V]... [--grad-chunk N]\n"
            "  --grad: time the training step (ssmc_forward_train_device + ssmc_backward_device; cuda only)\n"
            "  --grad-chunk N: the steps between the training forward's checkpoints (ssmc_options.grad_chunk)\n"
            "  --T/--seqlen, --batch, -D: override the sequence cases' T, every case's batch, a dim of the\n"
            "    cases that set it (small shapes for checks without a GPU; the numbers compare with nothing)\n"
            "cases:");
    for (int i = 0; i < BENCH_NCASES; i++) fprintf(stderr, " %s", bench_cases[i].name);
    fprintf(stderr, "\n");
}

/* Whether `name` is one of the comma-separated names of list (NULL: all). */
static int in_list(const char *list, const char *name)
{
    if (!list) return 1;
    size_t n = strlen(name);
    for (const char *p = list; *p;) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == n && !strncmp(p, name, n)) return 1;
        p += len + (e != NULL);
    }
    return 0;
}

/* -D NAME=V into o->dims, the name cut in place in argv (which outlives
 * every case); 0 when malformed or too many. */
static int parse_dim(bench_opts *o, char *v)
{
    char *eq = strchr(v, '='), *end;
    if (!eq || eq == v || o->ndims == BENCH_MAX_DIMS) return 0;
    long long n = strtoll(eq + 1, &end, 10);
    if (*end || n < 1) return 0;
    *eq = 0;
    o->dims[o->ndims++] = (ssmc_dim){v, n};
    return 1;
}

int main(int argc, char **argv)
{
    bench_opts o = {.repo = ".", .reps = 50, .warmup = 5, .max_case_s = 30, .algo = SSMC_ALGO_AUTO,
                    .device = SSMC_DEVICE_CUDA};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--grad")) {
            o.grad = 1;
            continue;
        }
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
        else if (!strcmp(a, "--T") || !strcmp(a, "--seqlen"))
            o.T = atoll(v);
        else if (!strcmp(a, "--batch"))
            o.batch = atoll(v);
        else if (!strcmp(a, "--grad-chunk"))
            o.grad_chunk = atoll(v);
        else if (!strcmp(a, "-D")) {
            if (!parse_dim(&o, v)) {
                fprintf(stderr, "bench_gpu: -D %s: expected NAME=V with V >= 1 (at most %d)\n", v, BENCH_MAX_DIMS);
                return 2;
            }
        } else if (!strcmp(a, "--device")) {
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
    if (o.warmup < 0) o.warmup = 0;
    if (o.grad && o.device != SSMC_DEVICE_CUDA) {
        fprintf(stderr, "bench_gpu: --grad times the training step on device pointers (ssmc_forward_train_device, "
                        "ssmc_backward_device) and needs --device cuda; bench/grad.c (bench_grad) times the host "
                        "API on the cpu and interp devices\n");
        return 2;
    }
#ifndef BENCH_HAVE_GRAD_DEVICE
    if (o.grad) {
        printf("BENCHERR side=ours case=all err=--grad: this bench_gpu was built without BENCH_HAVE_GRAD_DEVICE "
               "(include/ssmc.h has no ssmc_backward_device, or it did not compile against it: see "
               "bench/gpu/build.sh's output)\n");
        return 1;
    }
#endif

    rt_cuda *gpu = NULL;
    CUdeviceptr flush = 0;
#ifdef BENCH_HAVE_RUN_DEVICE
    strbuf err = {0};
    if (o.device != SSMC_DEVICE_CUDA) {
        printf("bench_gpu: host mode (device %s)\n", o.device == SSMC_DEVICE_CPU ? "cpu" : "interp");
    } else if (rt_cuda_open(&gpu, &err) != SSMC_OK) {
        print_error("all", "no GPU", sb_cstr(&err));
        sb_free(&err);
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
    printf("bench_gpu: ssmc %s, %s, reps %d, warmup %d, algo %s\n", SSMC_VERSION,
           o.grad ? "training step (forward_train + backward)" : "forward", o.reps, o.warmup, algo_name(&o));
    fflush(stdout);

    for (const char *p = o.only; p && *p;) {
        const char *e = strchr(p, ',');
        int len = e ? (int)(e - p) : (int)strlen(p), found = 0;
        for (int i = 0; i < BENCH_NCASES; i++)
            found |= (int)strlen(bench_cases[i].name) == len && !strncmp(p, bench_cases[i].name, (size_t)len);
        if (!found) printf("BENCHERR side=ours case=%.*s err=unknown case (bench_gpu --help lists them)\n", len, p);
        p += len + (e != NULL);
    }
    int ran = 0;
    for (int i = 0; i < BENCH_NCASES; i++) {
        if (!in_list(o.only, bench_cases[i].name)) continue;
        printf("--- %s%s\n", bench_cases[i].name, o.grad ? " (grad)" : "");
        fflush(stdout);
#ifdef BENCH_HAVE_GRAD_DEVICE
        if (o.grad) {
            ran += bench_grad_one(&bench_cases[i], &o, gpu, flush);
            continue;
        }
#endif
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
