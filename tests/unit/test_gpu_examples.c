/* test_gpu_examples.c: the CUDA backend on a GPU against the f64 interpreter.
 *
 * Every example and every model of tests/gpu/edge.ssm, in f32 and bf16, at
 * T = 1, T = 33 and T = 7, batch 2 and 3, at the declared dims and at odd dims
 * (every dim made odd), with an initial state (the final state of a random
 * 5-step prefix, as a decode would continue from) and without one. Inputs are
 * fresh uniform [-1, 1) draws, outputs are NaN-poisoned before each run, and
 * every output and final state must be within max|got - ref| / max|ref| of
 * 1e-5 (f32) or 2e-2 (bf16). Then: decoding step by step and in pieces gives
 * what one run gives; ssmc_run_device on device buffers and a stream gives
 * what ssmc_run gives; a second model of the same source hits the kernel cache;
 * the chunked algorithm with a decay per key (test_chunked_per_key). Passed
 * on the H200 on 2026-12-02 (bench/RESULTS.md).
 * Exits 77 (skipped) when no GPU can be opened. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "frontend/ast.h"
#include "runtime/cuda_driver.h"
#include "ssmc.h"
#include "tests/unit/helpers/files.h"
#include "support/dtype.h"
#include "support/support.h"

#define MAX_T 64

static rt_cuda *gpu;
static uint64_t rng = 0x9e3779b97f4a7c15ull;

static double uniform(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (double)(rng >> 11) * 0x1.0p-53 * 2.0 - 1.0;
}


static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}


/* ---- one model, compiled for the GPU and for the interpreter ---- */

typedef struct tensor {
    ssmc_tensor_info info;
    size_t count;  /* elements in a run of (B, T) */
    void *data;    /* in the run's dtype */
    double *ref;   /* f64, for the interpreter */
} tensor;

typedef struct pair {
    ssmc_ctx *ctx;
    ssmc_model *gpu, *ref;
    int n;
    tensor *t;
} pair;

/* o: the options of both (its device is set here) */
static void pair_open_with(pair *p, const char *rel, const char *text, size_t len, ssmc_options o)
{
    memset(p, 0, sizeof *p);
    p->ctx = ssmc_ctx_new();
    o.device = SSMC_DEVICE_CUDA;
    if (ssmc_compile(p->ctx, rel, text, len, &o, &p->gpu) != SSMC_OK) fail_msg("%s: %s", rel, ssmc_ctx_error(p->ctx));
    o.device = SSMC_DEVICE_INTERP;
    if (ssmc_compile(p->ctx, rel, text, len, &o, &p->ref) != SSMC_OK) fail_msg("%s: %s", rel, ssmc_ctx_error(p->ctx));
    p->n = ssmc_model_num_tensors(p->gpu);
    p->t = calloc((size_t)p->n, sizeof *p->t);
    assert_non_null(p->t);
    for (int i = 0; i < p->n; i++) assert_int_equal(ssmc_model_tensor(p->gpu, i, &p->t[i].info), SSMC_OK);
}

static void pair_open(pair *p, const char *rel, const char *text, size_t len, const char *model, const ssmc_dim *dims,
                      int nd)
{
    pair_open_with(p, rel, text, len, (ssmc_options){.model = model, .dims = dims, .ndims = nd});
}

static void pair_free_data(pair *p)
{
    for (int i = 0; i < p->n; i++) {
        free(p->t[i].data);
        free(p->t[i].ref);
        p->t[i].data = NULL;
        p->t[i].ref = NULL;
    }
}

static void pair_close(pair *p)
{
    pair_free_data(p);
    free(p->t);
    ssmc_model_free(p->gpu);
    ssmc_model_free(p->ref);
    ssmc_ctx_free(p->ctx);
}

static size_t count_of(const ssmc_tensor_info *in, int64_t B, int64_t T)
{
    size_t n = 1;
    for (int j = 0; j < in->rank; j++) n *= (size_t)in->shape[j];
    if (in->role != SSMC_PARAM) n *= (size_t)B;
    if (in->per_step) n *= (size_t)T;
    return n;
}

/* Allocates every tensor for (B, T) in dtype dt: inputs and params drawn
 * fresh (the reference gets the same rounded values), outputs poisoned. */
static void pair_fill(pair *p, int64_t B, int64_t T, ssmc_dtype dt)
{
    pair_free_data(p);
    for (int i = 0; i < p->n; i++) {
        tensor *t = &p->t[i];
        t->count = count_of(&t->info, B, T);
        t->data = malloc((t->count ? t->count : 1) * dtype_size(dt));
        t->ref = malloc((t->count ? t->count : 1) * sizeof(double));
        assert_true(t->data && t->ref);
        for (size_t k = 0; k < t->count; k++) {
            bool poison = t->info.role == SSMC_OUTPUT;
            dtype_set(t->data, dt, k, poison ? NAN : t->info.role == SSMC_STATE ? 0.0 : uniform());
            t->ref[k] = poison ? NAN : dtype_get(t->data, dt, k);
        }
    }
}

/* The final state of a random 5-step prefix (zero start), on the interpreter,
 * rounded to dt: a state a decode would continue from. */
static void pair_prefix_state(pair *p, int64_t B, ssmc_dtype dt)
{
    ssmc_arg *args = calloc((size_t)p->n, sizeof *args);
    double **bufs = calloc((size_t)p->n, sizeof *bufs);
    assert_true(args && bufs);
    for (int i = 0; i < p->n; i++) {
        const tensor *t = &p->t[i];
        size_t n = count_of(&t->info, B, 5);
        bufs[i] = calloc(n ? n : 1, sizeof(double));
        assert_non_null(bufs[i]);
        if (t->info.role == SSMC_PARAM) memcpy(bufs[i], t->ref, n * sizeof(double));
        if (t->info.role == SSMC_INPUT)
            for (size_t k = 0; k < n; k++) bufs[i][k] = uniform();
        args[i] = (ssmc_arg){t->info.name, SSMC_F64, bufs[i], 0};
    }
    if (ssmc_run(p->ref, B, 5, args, p->n) != SSMC_OK) fail_msg("prefix: %s", ssmc_ctx_error(p->ctx));
    for (int i = 0; i < p->n; i++) {
        tensor *t = &p->t[i];
        if (t->info.role == SSMC_STATE)
            for (size_t k = 0; k < t->count; k++) {
                dtype_set(t->data, dt, k, bufs[i][k]);
                t->ref[k] = dtype_get(t->data, dt, k);
            }
        free(bufs[i]);
    }
    free(bufs);
    free(args);
}

/* Runs both; states take part when `states`. Returns the worst relative error. */
static double pair_run_compare(pair *p, int64_t B, int64_t T, ssmc_dtype dt, bool states, double tol, const char *what)
{
    ssmc_arg *ga = calloc((size_t)p->n, sizeof *ga), *ra = calloc((size_t)p->n, sizeof *ra);
    assert_true(ga && ra);
    int k = 0;
    for (int i = 0; i < p->n; i++) {
        if (p->t[i].info.role == SSMC_STATE && !states) continue;
        ga[k] = (ssmc_arg){p->t[i].info.name, dt, p->t[i].data, 0};
        ra[k++] = (ssmc_arg){p->t[i].info.name, SSMC_F64, p->t[i].ref, 0};
    }
    if (ssmc_run(p->gpu, B, T, ga, k) != SSMC_OK) fail_msg("%s: cuda: %s", what, ssmc_ctx_error(p->ctx));
    if (ssmc_run(p->ref, B, T, ra, k) != SSMC_OK) fail_msg("%s: interp: %s", what, ssmc_ctx_error(p->ctx));
    double worst = 0;
    for (int i = 0; i < p->n; i++) {
        const tensor *t = &p->t[i];
        if (t->info.role != SSMC_OUTPUT && !(t->info.role == SSMC_STATE && states)) continue;
        double mref = 0, mdiff = 0;
        for (size_t e = 0; e < t->count; e++) {
            double g = dtype_get(t->data, dt, e), r = t->ref[e];
            if (!isfinite(g) || !isfinite(r))
                fail_msg("%s: %s[%zu] = %g (reference %g)", what, t->info.name, e, g, r);
            if (fabs(r) > mref) mref = fabs(r);
            if (fabs(g - r) > mdiff) mdiff = fabs(g - r);
        }
        double rel = mref > 0 ? mdiff / mref : mdiff;
        if (mref == 0) fail_msg("%s: %s is all zeros in the reference: the check would prove nothing", what, t->info.name);
        if (rel > tol) fail_msg("%s: %s: relative error %.3e > %.0e (max |ref| %.3e)", what, t->info.name, rel, tol, mref);
        if (rel > worst) worst = rel;
    }
    free(ga);
    free(ra);
    return worst;
}

/* ---- the sweep ---- */

typedef struct config {
    int64_t B, T;
    bool init, odd;
} config;

static const config configs[] = {
    {2, 1, true, false},  /* one decode step from a state */
    {3, 33, false, false},
    {2, 33, true, false},
    {3, 7, true, true},
    {2, 1, false, true},
};

/* The model's declared dims (its first model or `model`), each made odd. */
static int odd_dims(const char *rel, const char *text, size_t len, const char *model, ssmc_dim *out, int max)
{
    arena a;
    arena_init(&a);
    diag d = {0};
    src_file f = {rel, text, len};
    ast_file *af = parse_file(&a, &d, &f);
    if (!af) fail_msg("%s", sb_cstr(&d.text));
    ast_model *am = &af->models[0];
    for (int i = 0; model && i < af->nmodels; i++)
        if (strcmp(af->models[i].name, model) == 0) am = &af->models[i];
    int n = 0;
    for (int i = 0; i < am->ndecls && n < max; i++)
        if (am->decls[i].kind == AST_DIM) out[n++] = (ssmc_dim){strdup(am->decls[i].name), am->decls[i].value | 1};
    diag_free(&d);
    arena_free(&a);
    return n;
}

static void sweep(const char *rel, const char *model, const ssmc_dim *odd_given, int nodd_given)
{
    size_t len;
    char *text = test_slurp(rel, &len);
    ssmc_dim odd[16];
    int nodd = 0;
    if (odd_given)
        for (; nodd < nodd_given; nodd++) odd[nodd] = (ssmc_dim){strdup(odd_given[nodd].name), odd_given[nodd].value};
    else
        nodd = odd_dims(rel, text, len, model, odd, 16);
    for (int dims = 0; dims < 2; dims++) {
        pair p;
        pair_open(&p, rel, text, len, model, dims ? odd : NULL, dims ? nodd : 0);
        for (int di = 0; di < 2; di++) {
            ssmc_dtype dt = di ? SSMC_BF16 : SSMC_F32;
            double tol = di ? 2e-2 : 1e-5;
            for (size_t c = 0; c < sizeof configs / sizeof configs[0]; c++) {
                const config *cf = &configs[c];
                if (cf->odd != (dims == 1)) continue;
                char what[256];
                snprintf(what, sizeof what, "%s%s%s %s B=%lld T=%lld%s%s", rel, model ? ":" : "", model ? model : "",
                         di ? "bf16" : "f32", (long long)cf->B, (long long)cf->T, cf->init ? " from a state" : "",
                         dims ? " odd dims" : "");
                pair_fill(&p, cf->B, cf->T, dt);
                if (cf->init) pair_prefix_state(&p, cf->B, dt);
                double rel_err = pair_run_compare(&p, cf->B, cf->T, dt, cf->init, tol, what);
                printf("# %-62s rel %.2e\n", what, rel_err);
            }
        }
        pair_close(&p);
    }
    for (int i = 0; i < nodd; i++) free((char *)odd[i].name);
    free(text);
}

static void test_examples(void **state)
{
    char names[64][128];
    int n = test_list_examples(names, 64);
    assert_true(n >= 9);
    for (int i = 0; i < n; i++) sweep(names[i], NULL, NULL, 0);
}

static void test_edge_models(void **state)
{
    static const ssmc_dim dense[] = {{"N", 13}, {"D", 3}};
    static const ssmc_dim mix[] = {{"H", 9}, {"G", 3}, {"HG", 3}, {"K", 5}, {"V", 7}, {"W", 3}, {"E", 9}};
    static const ssmc_dim big[] = {{"N", 161}};
    sweep("tests/gpu/edge.ssm", "dense", dense, 2);
    sweep("tests/gpu/edge.ssm", "mix", mix, 7);
    sweep("tests/gpu/edge.ssm", "big", big, 1);
}

/* One run of T steps equals T single-step decodes and a run split in two,
 * each continuing from the state the previous one left in place. */
static void test_decode_continues(void **state)
{
    static const char *const files[] = {"examples/gated_deltanet.ssm", "examples/mamba2.ssm", "examples/lstm.ssm"};
    for (int fi = 0; fi < 3; fi++) {
        size_t len;
        char *text = test_slurp(files[fi], &len);
        pair p;
        pair_open(&p, files[fi], text, len, NULL, NULL, 0);
        const int64_t B = 3, T = 12, T1 = 5;
        pair_fill(&p, B, T, SSMC_F32);
        pair_prefix_state(&p, B, SSMC_F32);
        /* the whole run; keep its outputs and final states */
        float **whole = calloc((size_t)p.n, sizeof *whole);
        float **init = calloc((size_t)p.n, sizeof *init);
        ssmc_arg *args = calloc((size_t)p.n, sizeof *args);
        assert_true(whole && init && args);
        for (int i = 0; i < p.n; i++) {
            size_t bytes = p.t[i].count * 4;
            init[i] = malloc(bytes ? bytes : 1);
            memcpy(init[i], p.t[i].data, bytes);
            args[i] = (ssmc_arg){p.t[i].info.name, SSMC_F32, p.t[i].data, 0};
        }
        if (ssmc_run(p.gpu, B, T, args, p.n) != SSMC_OK) fail_msg("%s", ssmc_ctx_error(p.ctx));
        for (int i = 0; i < p.n; i++) {
            size_t bytes = p.t[i].count * 4;
            whole[i] = malloc(bytes ? bytes : 1);
            memcpy(whole[i], p.t[i].data, bytes);
        }
        /* in pieces: T1 steps, then T - T1; then T single steps */
        for (int mode = 0; mode < 2; mode++) {
            float **st = calloc((size_t)p.n, sizeof *st);
            float **piece = calloc((size_t)p.n, sizeof *piece);
            assert_true(st && piece);
            for (int i = 0; i < p.n; i++)
                if (p.t[i].info.role == SSMC_STATE) {
                    st[i] = malloc(p.t[i].count * 4 + 4);
                    memcpy(st[i], init[i], p.t[i].count * 4);
                }
            int64_t t0 = 0;
            while (t0 < T) {
                int64_t n = mode == 0 ? (t0 == 0 ? T1 : T - T1) : 1;
                for (int i = 0; i < p.n; i++) {
                    const ssmc_tensor_info *in = &p.t[i].info;
                    if (in->role == SSMC_STATE) {
                        args[i] = (ssmc_arg){in->name, SSMC_F32, st[i], 0};
                        continue;
                    }
                    if (in->role == SSMC_PARAM) {
                        args[i] = (ssmc_arg){in->name, SSMC_F32, init[i], 0};
                        continue;
                    }
                    /* per-step tensors: the slice [:, t0 : t0 + n] */
                    size_t row = p.t[i].count / (size_t)B / (size_t)T;
                    free(piece[i]);
                    piece[i] = malloc((size_t)B * (size_t)n * row * 4);
                    for (int64_t b = 0; b < B; b++)
                        for (int64_t s = 0; s < n; s++) {
                            float *dst = piece[i] + ((size_t)b * (size_t)n + (size_t)s) * row;
                            if (in->role == SSMC_INPUT)
                                memcpy(dst, init[i] + ((size_t)b * (size_t)T + (size_t)(t0 + s)) * row, row * 4);
                            else
                                for (size_t e = 0; e < row; e++) dst[e] = NAN;
                        }
                    args[i] = (ssmc_arg){in->name, SSMC_F32, piece[i], 0};
                }
                if (ssmc_run(p.gpu, B, n, args, p.n) != SSMC_OK) fail_msg("%s", ssmc_ctx_error(p.ctx));
                for (int i = 0; i < p.n; i++) {
                    if (p.t[i].info.role != SSMC_OUTPUT) continue;
                    size_t row = p.t[i].count / (size_t)B / (size_t)T;
                    for (int64_t b = 0; b < B; b++)
                        for (int64_t s = 0; s < n; s++)
                            for (size_t e = 0; e < row; e++) {
                                float got = piece[i][((size_t)b * (size_t)n + (size_t)s) * row + e];
                                float want = whole[i][((size_t)b * (size_t)T + (size_t)(t0 + s)) * row + e];
                                if (fabsf(got - want) > 1e-6f * (1.0f + fabsf(want)))
                                    fail_msg("%s: %s: %s at b=%lld t=%lld: %g, one run gives %g", files[fi],
                                             mode ? "single steps" : "two pieces", p.t[i].info.name, (long long)b,
                                             (long long)(t0 + s), got, want);
                            }
                }
                t0 += n;
            }
            for (int i = 0; i < p.n; i++) {
                if (p.t[i].info.role != SSMC_STATE) continue;
                for (size_t e = 0; e < p.t[i].count; e++)
                    if (fabsf(st[i][e] - whole[i][e]) > 1e-6f * (1.0f + fabsf(whole[i][e])))
                        fail_msg("%s: final %s[%zu] = %g, one run gives %g", files[fi], p.t[i].info.name, e, st[i][e],
                                 whole[i][e]);
            }
            for (int i = 0; i < p.n; i++) {
                free(st[i]);
                free(piece[i]);
            }
            free(st);
            free(piece);
        }
        for (int i = 0; i < p.n; i++) {
            free(whole[i]);
            free(init[i]);
        }
        free(whole);
        free(init);
        free(args);
        pair_close(&p);
        free(text);
    }
}

/* ssmc_run_device on device buffers and a stream, in bf16, computes what
 * ssmc_run computes on host buffers; the state is updated in place. */
static void test_run_device(void **state)
{
    size_t len;
    char *text = test_slurp("examples/gla.ssm", &len);
    pair p;
    pair_open(&p, "gla.ssm", text, len, NULL, NULL, 0);
    const int64_t B = 2, T = 9;
    pair_fill(&p, B, T, SSMC_BF16);
    pair_prefix_state(&p, B, SSMC_BF16);
    strbuf err = {0};
    CUstream stream;
    if (rt_cuda_stream_new(gpu, &stream, &err) != SSMC_OK) fail_msg("%s", sb_cstr(&err));
    CUdeviceptr *dev = calloc((size_t)p.n, sizeof *dev);
    void **host = calloc((size_t)p.n, sizeof *host);
    ssmc_arg *da = calloc((size_t)p.n, sizeof *da), *ha = calloc((size_t)p.n, sizeof *ha);
    assert_true(dev && host && da && ha);
    for (int i = 0; i < p.n; i++) {
        size_t bytes = p.t[i].count * 2;
        host[i] = malloc(bytes);
        memcpy(host[i], p.t[i].data, bytes);
        if (rt_cuda_alloc(gpu, bytes, &dev[i], &err) != SSMC_OK || rt_cuda_htod(gpu, dev[i], host[i], bytes, &err) != SSMC_OK)
            fail_msg("%s", sb_cstr(&err));
        da[i] = (ssmc_arg){p.t[i].info.name, SSMC_BF16, (void *)(uintptr_t)dev[i], 0};
        ha[i] = (ssmc_arg){p.t[i].info.name, SSMC_BF16, host[i], 0};
    }
    if (ssmc_run_device(p.gpu, B, T, da, p.n, stream) != SSMC_OK) fail_msg("%s", ssmc_ctx_error(p.ctx));
    if (rt_cuda_stream_sync(gpu, stream, &err) != SSMC_OK) fail_msg("%s", sb_cstr(&err));
    if (ssmc_run(p.gpu, B, T, ha, p.n) != SSMC_OK) fail_msg("%s", ssmc_ctx_error(p.ctx));
    for (int i = 0; i < p.n; i++) {
        if (p.t[i].info.role != SSMC_OUTPUT && p.t[i].info.role != SSMC_STATE) continue;
        size_t bytes = p.t[i].count * 2;
        void *back = malloc(bytes);
        if (rt_cuda_dtoh(gpu, back, dev[i], bytes, &err) != SSMC_OK) fail_msg("%s", sb_cstr(&err));
        if (memcmp(back, host[i], bytes) != 0) fail_msg("ssmc_run_device: %s differs from ssmc_run", p.t[i].info.name);
        free(back);
    }
    /* a model for the interpreter has no device path */
    assert_int_equal(ssmc_run_device(p.ref, B, T, da, p.n, NULL), SSMC_ERR_UNSUPPORTED);
    for (int i = 0; i < p.n; i++) {
        rt_cuda_free(gpu, dev[i], &err);
        free(host[i]);
    }
    rt_cuda_stream_free(gpu, stream, &err);
    free(dev);
    free(host);
    free(da);
    free(ha);
    sb_free(&err);
    pair_close(&p);
    free(text);
}

/* The chunked algorithm with a decay per key (codegen/cuda_chunk.c's per-key
 * core on tensor cores, between the prologue's and epilogue's kernels): every
 * example whose chunked plan has one, at its declared dims, f32 and bf16,
 * B = 2, T = 1, 70 and 200 at C = 64, from a state and from zero; then
 * fla_gla at H = 2, K = V = 128 with strong decays (log-decays in (-5, 0] at
 * odd keys, (-0.05, 0] at even ones: exp(b_t) and exp(-b_s) formed apart
 * would overflow) at T = 300, C = 64 and 16. Within 2e-2 of the interpreter
 * whatever the dtype: the cores' operands are bf16. Also checked in emulation
 * (test_cuda_emu). */
static void test_chunked_per_key(void **state)
{
    (void)state;
    static const char *const files[] = {"examples/gla.ssm",    "examples/fla_gla.ssm",     "examples/fla_gla_kv.ssm",
                                        "examples/rwkv6.ssm",  "examples/mamba.ssm",       "examples/mamba_ssu.ssm",
                                        "examples/mamba_ssu_z.ssm"};
    static const config cfgs[] = {{2, 1, true, false}, {2, 70, false, false}, {2, 200, true, false}};
    for (size_t f = 0; f < sizeof files / sizeof *files; f++) {
        size_t len;
        char *text = test_slurp(files[f], &len);
        pair p;
        pair_open_with(&p, files[f], text, len, (ssmc_options){.algo = SSMC_ALGO_CHUNKED, .chunk = 64});
        for (int di = 0; di < 2; di++)
            for (size_t c = 0; c < sizeof cfgs / sizeof *cfgs; c++) {
                ssmc_dtype dt = di ? SSMC_BF16 : SSMC_F32;
                char what[256];
                snprintf(what, sizeof what, "%s chunked %s B=%lld T=%lld%s", files[f], di ? "bf16" : "f32",
                         (long long)cfgs[c].B, (long long)cfgs[c].T, cfgs[c].init ? " from a state" : "");
                pair_fill(&p, cfgs[c].B, cfgs[c].T, dt);
                if (cfgs[c].init) pair_prefix_state(&p, cfgs[c].B, dt);
                printf("# %-62s rel %.2e\n", what, pair_run_compare(&p, cfgs[c].B, cfgs[c].T, dt, cfgs[c].init, 2e-2, what));
            }
        pair_close(&p);
        free(text);
    }
    size_t len;
    char *text = test_slurp("examples/fla_gla.ssm", &len);
    static const ssmc_dim dims[] = {{"H", 2}, {"K", 128}, {"V", 128}};
    for (int C = 64; C >= 16; C -= 48) {
        pair p;
        pair_open_with(&p, "examples/fla_gla.ssm", text, len,
                       (ssmc_options){.dims = dims, .ndims = 3, .algo = SSMC_ALGO_CHUNKED, .chunk = C});
        const int64_t B = 1, T = 300;
        pair_fill(&p, B, T, SSMC_BF16);
        pair_prefix_state(&p, B, SSMC_BF16);
        for (int i = 0; i < p.n; i++) {
            tensor *t = &p.t[i];
            if (strcmp(t->info.name, "g") != 0) continue;
            for (size_t k = 0; k < t->count; k++) {
                double lo = (k % 128) % 2 ? -5 : -0.05;
                dtype_set(t->data, SSMC_BF16, k, lo * 0.5 * (1 + uniform()));
                t->ref[k] = dtype_get(t->data, SSMC_BF16, k);
            }
        }
        char what[128];
        snprintf(what, sizeof what, "examples/fla_gla.ssm K=V=128 strong decays chunked C=%d bf16 B=1 T=300", C);
        printf("# %-62s rel %.2e\n", what, pair_run_compare(&p, B, T, SSMC_BF16, true, 2e-2, what));
        pair_close(&p);
    }
    free(text);
}

/* A second model of the same source loads its kernel from the cache: its
 * first run skips NVRTC and is much faster than the cold one. */
/* `ssmc bench --device cuda` times the kernels on device tensors with the
 * copies apart (SPEC §5), and what comes back still matches the interpreter. */
static void test_cli_bench(void **state)
{
    (void)state;
    const char *cli = getenv("SSMC_CLI");
    if (!cli || !*cli) skip();
    char cmd[4096], line[1024];
    snprintf(cmd, sizeof cmd, "%s bench %s/examples/gla.ssm --device cuda --seqlen 40 --batch 2 --iters 5 --verify 2>&1",
             cli, test_src_dir());
    FILE *f = popen(cmd, "r");
    assert_non_null(f);
    bool header = false, timed = false, verified = false, failed = false;
    double median = -1, in_ms = -1, out_ms = -1;
    while (fgets(line, sizeof line, f)) {
        printf("# %s", line);
        if (strstr(line, "copy_in_ms") && strstr(line, "copy_out_ms")) header = true;
        else if (header && median < 0) sscanf(line, "%*s %*s %*s %*f %lf %*f %lf %lf", &median, &in_ms, &out_ms);
        if (strstr(line, "timed: the kernels on tensors already on the GPU")) timed = true;
        if (strstr(line, "verify") && strstr(line, " ok")) verified = true;
        if (strstr(line, "FAIL") || strstr(line, "error")) failed = true;
    }
    assert_int_equal(pclose(f), 0);
    assert_true(header && timed && verified && !failed);
    assert_true(median > 0 && in_ms > 0 && out_ms > 0);
}

static void test_kernel_cache(void **state)
{
    char dir[] = "/tmp/ssmc-gpu-cache-XXXXXX";
    assert_non_null(mkdtemp(dir));
    const char *old = getenv("SSMC_CACHE_DIR");
    char *saved = old ? strdup(old) : NULL;
    setenv("SSMC_CACHE_DIR", dir, 1);
    size_t len;
    char *text = test_slurp("examples/gated_deltanet.ssm", &len);
    double ms[2];
    for (int k = 0; k < 2; k++) {
        double t0 = now_ms();
        pair p;
        pair_open(&p, "gated_deltanet.ssm", text, len, NULL, NULL, 0);
        pair_fill(&p, 1, 4, SSMC_BF16);
        ssmc_arg *args = calloc((size_t)p.n, sizeof *args);
        for (int i = 0; i < p.n; i++) args[i] = (ssmc_arg){p.t[i].info.name, SSMC_BF16, p.t[i].data, 0};
        if (ssmc_run(p.gpu, 1, 4, args, p.n) != SSMC_OK) fail_msg("%s", ssmc_ctx_error(p.ctx));
        ms[k] = now_ms() - t0;
        free(args);
        pair_close(&p);
    }
    printf("# gated_deltanet compile + first run: cold %.1f ms, cache hit %.1f ms\n", ms[0], ms[1]);
    int entries = 0;
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d)))
        if (strlen(e->d_name) == 32) entries++;
    closedir(d);
    assert_int_equal(entries, 1);
    assert_true(ms[1] < ms[0] / 2);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
    if (saved) setenv("SSMC_CACHE_DIR", saved, 1);
    else unsetenv("SSMC_CACHE_DIR");
    free(saved);
    free(text);
}

/* The chunked backward has a CUDA core (codegen/cuda_chunk_bwd.c): the
 * gradients of a chunked model on the GPU are available (docs/chunked.md,
 * "Gradients"; test_gpu_grad's test_chunked checks them, through the host API
 * and the device entry points). */
static void test_chunked_grad_info(void **state)
{
    size_t len;
    char *text = test_slurp("examples/gated_deltanet.ssm", &len);
    ssmc_ctx *ctx = ssmc_ctx_new();
    ssmc_options o = {.device = SSMC_DEVICE_CUDA, .algo = SSMC_ALGO_CHUNKED};
    ssmc_model *m = NULL;
    if (ssmc_compile(ctx, "gated_deltanet.ssm", text, len, &o, &m) != SSMC_OK) fail_msg("%s", ssmc_ctx_error(ctx));
    ssmc_grad_info info;
    if (ssmc_grad_info_of(m, 16, &info) != SSMC_OK) fail_msg("%s", ssmc_ctx_error(ctx));
    ssmc_model_free(m);
    ssmc_ctx_free(ctx);
    free(text);
}

int main(void)
{
    strbuf err = {0};
    if (rt_cuda_open(&gpu, &err) != SSMC_OK) {
        printf("# no GPU: %s\n", sb_cstr(&err));
        sb_free(&err);
        return 77;
    }
    sb_free(&err);
    printf("# %s (%s)\n", rt_cuda_device_name(gpu), rt_cuda_arch_name(gpu));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_examples),
        cmocka_unit_test(test_edge_models),
        cmocka_unit_test(test_decode_continues),
        cmocka_unit_test(test_run_device),
        cmocka_unit_test(test_kernel_cache),
        cmocka_unit_test(test_cli_bench),
        cmocka_unit_test(test_chunked_grad_info),
        cmocka_unit_test(test_chunked_per_key),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    rt_cuda_close(gpu);
    return rc;
}
