/* cuda_backend.c: the CUDA backend (codegen/backend.h) for SSMC_DEVICE_CUDA.
 *
 * compile takes the kernel plan (passes/plan.c, made for plan_target_cuda) and opens the GPU; kernels
 * are generated and compiled lazily, one per dtype signature of a run (the
 * dtypes of the tensors given, which states and outputs are present, whether
 * vector loads are allowed), and kept for the model's life. A kernel comes
 * from the on-disk cache (runtime/cache.h) when an entry exists under the key
 * (generated source, NVRTC options, NVRTC version, GPU arch); otherwise NVRTC
 * compiles it to a cubin, which is stored there. A cache that cannot be used
 * costs a compile, never a failure.
 *
 * run takes host tensors: it copies them into one device buffer kept by the
 * model (grown when a run needs more), launches, and copies the outputs and
 * final states back; run_device takes device pointers and a stream and only
 * enqueues the launch. Every CUDA and NVRTC call is checked (runtime/cuda_driver.h);
 * failures are reported through the diag with the program's name and NVRTC's
 * log. A model's runs are serialised by a lock. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codegen/backend.h"
#include "codegen/chunked_run.h"
#include "codegen/cuda.h"
#include "codegen/cuda_chunk.h"
#include "runtime/cache.h"
#include "runtime/cuda_driver.h"
#include "support/dtype.h"
#include "support/env.h"

#define ALIGN 256 /* device sub-buffers: every vector load is aligned */

typedef struct cuda_kernel {
    unsigned char *sig; /* the signature's bytes (see sig_bytes) */
    CUmodule mod;
    CUfunction fn;
} cuda_kernel;

typedef struct cuda_state {
    arena arena;
    const ir_model *m;
    const pass_plan *plan;
    rt_cuda *gpu;
    rt_nvrtc *nvrtc;      /* loaded when a kernel is first needed */
    char arch[32];
    cuda_kernel *kernels;
    size_t nkernels, ckernels;
    CUdeviceptr buf;      /* host runs: every tensor, then the workspace */
    size_t buf_cap;
    CUdeviceptr ws;       /* device runs: the workspace */
    size_t ws_cap;
    chunked_state *chunked; /* a chunked plan: its parts (then the fields above serve the host copies) */
    CUdeviceptr cws;      /* the chunked runs' workspace */
    size_t cws_cap;
    CUdeviceptr kws;      /* the chunked cores' forward workspace (cuda_chunk_ws_bytes) */
    size_t kws_cap;
    CUdeviceptr gbuf;     /* the chunked cores' runs on host memory (the chunked gradients): their copies */
    size_t gbuf_cap;
    CUmodule helpers;     /* codegen/cuda.h's helper kernels, loaded at their first use */
    CUfunction convert[SSMC_NDTYPES][SSMC_NDTYPES], sum_rows[SSMC_NDTYPES], add_rows[SSMC_NDTYPES];
    pthread_mutex_t lock;
} cuda_state;

/* NVRTC options beyond those rt_nvrtc_compile always passes (codegen/cuda.h);
 * part of the key. */
#define nvrtc_opts cuda_nvrtc_options
#define NVRTC_NOPTS CUDA_NVRTC_NOPTIONS

/* The layout knobs from SSMC_CUDA_LANE_SLOTS, SSMC_CUDA_STATE_SLOTS,
 * SSMC_CUDA_WARPS, SSMC_CUDA_SHARE_LETS (docs/cuda.md; for benchmarking). */
static plan_tune cuda_tune_from_env(void)
{
    return (plan_tune){.lane_slots = (int)env_long(ENV_SSMC_CUDA_LANE_SLOTS, 1, 64, 0),
                       .state_slots = (int)env_long(ENV_SSMC_CUDA_STATE_SLOTS, 1, 64, 0),
                       .warps = (int)env_long(ENV_SSMC_CUDA_WARPS, 1, 8, 0),
                       .share_lets = (int)env_long(ENV_SSMC_CUDA_SHARE_LETS, 1, 2, 0)};
}

/* One byte per tensor (0: absent, else 1 + dtype, plus 16 for a state that only
 * receives its final value), then the vector, rows and one-step flags. */
static size_t sig_len(const ir_model *m) { return m->ntensors + 3; }

static void sig_bytes(const ir_model *m, const cuda_sig *sig, unsigned char *out)
{
    for (uint32_t i = 0; i < m->ntensors; i++)
        out[i] = sig->present[i] ? (unsigned char)(1 + sig->dtype[i] + (sig->fresh && sig->fresh[i] ? 16 : 0)) : 0;
    out[m->ntensors] = sig->vec;
    out[m->ntensors + 1] = sig->rows;
    out[m->ntensors + 2] = sig->one_step;
}

static ssmc_status fail(diag *d, ssmc_status st, strbuf *err, const char *what)
{
    diag_error(d, "cuda: %s: %s", what, sb_cstr(err));
    sb_free(err);
    return st;
}

static ssmc_status load_nvrtc(rt_nvrtc **n, diag *d)
{
    if (*n) return SSMC_OK;
    strbuf err = {0};
    ssmc_status st = rt_nvrtc_load(n, &err);
    return st ? fail(d, st, &err, "cannot compile kernels") : SSMC_OK;
}

static const char *prog_name(strbuf *b, const ir_model *m)
{
    cuda_program_name(b, m);
    return sb_cstr(b);
}

/* Generated source to an image (cubin or PTX) through the cache (cubins only). */
static ssmc_status build_image(rt_nvrtc *n, const char *prog_name, const char *src, const char *arch, bool cubin,
                               char **image, size_t *len, diag *d)
{
    strbuf prog = {0}, log = {0}, opts = {0};
    sb_puts(&prog, prog_name);
    for (int i = 0; i < NVRTC_NOPTS; i++) sb_printf(&opts, "%s ", nvrtc_opts[i]);
    sb_puts(&opts, cubin ? "cubin" : "ptx");
    const char *parts[] = {src, sb_cstr(&opts), rt_nvrtc_version_string(n), arch};
    rt_cache_key key = rt_cache_key_make(parts, 4);
    bool hit = false;
    ssmc_status st = SSMC_OK;
    if (cubin) {
        void *data = NULL;
        strbuf err = {0};
        if (rt_cache_get(NULL, key, &data, len, &hit, &err) == SSMC_OK && hit) *image = data;
        sb_free(&err);
    }
    if (!hit) {
        st = rt_nvrtc_compile(n, src, sb_cstr(&prog), arch, cubin, nvrtc_opts, NVRTC_NOPTS, image, len, &log);
        if (st != SSMC_OK) {
            diag_error(d, "cuda: %s", sb_cstr(&log));
        } else if (cubin) {
            strbuf err = {0};
            rt_cache_put(NULL, key, *image, *len, &err); /* a cache that cannot be written costs a recompile */
            sb_free(&err);
        }
    }
    sb_free(&prog);
    sb_free(&log);
    sb_free(&opts);
    return st;
}

/* Generated source `src` through NVRTC (a cubin for this GPU, by the cache) into a
 * module, and its function `name`, into kn; `what` names the kernel in errors. */
static ssmc_status load_kernel(cuda_state *s, const char *src, const char *name, const char *what, cuda_kernel *kn,
                               diag *d)
{
    strbuf pn = {0}, err = {0};
    char *image = NULL, msg[96];
    size_t len = 0;
    ssmc_status st = load_nvrtc(&s->nvrtc, d);
    if (st == SSMC_OK) st = build_image(s->nvrtc, prog_name(&pn, s->m), src, s->arch, true, &image, &len, d);
    if (st == SSMC_OK && (st = rt_cuda_module_load(s->gpu, image, &kn->mod, &err)) != SSMC_OK) {
        snprintf(msg, sizeof msg, "loading %s", what);
        fail(d, st, &err, msg);
    }
    if (st == SSMC_OK && (st = rt_cuda_module_function(s->gpu, kn->mod, name, &kn->fn, &err)) != SSMC_OK) {
        snprintf(msg, sizeof msg, "finding %s", what);
        fail(d, st, &err, msg);
    }
    free(image);
    sb_free(&pn);
    sb_free(&err);
    return st;
}


/* The kernel for a signature: from this model's table, the disk cache, or NVRTC. */
static ssmc_status kernel_for(cuda_state *s, const cuda_sig *sig, CUfunction *fn, diag *d)
{
    size_t n = sig_len(s->m);
    unsigned char *key = malloc(n);
    if (!key) {
        diag_error(d, "out of memory");
        return SSMC_ERR_NOMEM;
    }
    sig_bytes(s->m, sig, key);
    for (size_t i = 0; i < s->nkernels; i++)
        if (memcmp(s->kernels[i].sig, key, n) == 0) {
            free(key);
            *fn = s->kernels[i].fn;
            return SSMC_OK;
        }
    strbuf src = {0}, name = {0}, err = {0};
    cuda_kernel k = {.sig = key};
    ssmc_status st = cuda_emit(&src, s->plan, sig, d);
    cuda_kernel_name(&name, s->m);
    if (st == SSMC_OK) st = load_kernel(s, sb_cstr(&src), sb_cstr(&name), "the kernel", &k, d);
    if (st == SSMC_OK && !VEC_PUSH(s->kernels, s->nkernels, s->ckernels, k)) {
        diag_error(d, "out of memory");
        st = SSMC_ERR_NOMEM;
    }
    if (st != SSMC_OK) {
        if (k.mod) rt_cuda_module_unload(s->gpu, k.mod, &err);
        free(key);
    } else {
        *fn = k.fn;
    }
    sb_free(&src);
    sb_free(&name);
    sb_free(&err);
    return st;
}

static void state_free(void *state)
{
    cuda_state *s = state;
    if (!s) return;
    strbuf err = {0};
    for (size_t i = 0; i < s->nkernels; i++) {
        rt_cuda_module_unload(s->gpu, s->kernels[i].mod, &err);
        free(s->kernels[i].sig);
    }
    free(s->kernels);
    if (s->helpers) rt_cuda_module_unload(s->gpu, s->helpers, &err);
    chunked_free(s->chunked);
    if (s->gpu) {
        rt_cuda_free(s->gpu, s->buf, &err);
        rt_cuda_free(s->gpu, s->ws, &err);
        rt_cuda_free(s->gpu, s->cws, &err);
        rt_cuda_free(s->gpu, s->kws, &err);
        rt_cuda_free(s->gpu, s->gbuf, &err);
    }
    sb_free(&err);
    rt_cuda_close(s->gpu);
    rt_nvrtc_free(s->nvrtc);
    pthread_mutex_destroy(&s->lock);
    arena_free(&s->arena);
    free(s);
}

/* ---- the chunked algorithm (codegen/chunked_run.h): device memory, the
 * cores of codegen/cuda_chunk.c compiled per (state given, its dtype) ---- */

extern const backend cuda_backend;

typedef struct cuda_core {
    cuda_state *s;
    const plan_chunk_core *c;
    cuda_kernel k[2][SSMC_NDTYPES]; /* [state given][its dtype]: the module and its state pass */
    CUfunction readouts[2][SSMC_NDTYPES]; /* the module's second pass */
    cuda_kernel bk;                 /* the backward (codegen/cuda_chunk_bwd.c): the module and its first pass */
    CUfunction bpass[CUDA_CHUNK_BWD_MAX_PASSES]; /* its passes (bpass[0] = bk.fn) */
} cuda_core;

/* A device buffer of at least `bytes` in *buf (capacity *cap), reallocated
 * when too small; the old one may still be read by work in flight, so the
 * device is synchronised before it is freed. */
static ssmc_status grow_buffer(cuda_state *s, CUdeviceptr *buf, size_t *cap, size_t bytes, const char *what, diag *d)
{
    if (bytes <= *cap) return SSMC_OK;
    strbuf err = {0};
    ssmc_status st = rt_cuda_sync(s->gpu, &err);
    if (st == SSMC_OK && *buf) st = rt_cuda_free(s->gpu, *buf, &err);
    *buf = 0;
    *cap = 0;
    if (st == SSMC_OK && (st = rt_cuda_alloc(s->gpu, bytes, buf, &err)) == SSMC_OK) *cap = bytes;
    if (st != SSMC_OK) return fail(d, st, &err, what);
    sb_free(&err);
    return SSMC_OK;
}

static void *chunk_workspace(void *ctx, size_t bytes, diag *d)
{
    cuda_state *s = ctx;
    ssmc_status st = grow_buffer(s, &s->cws, &s->cws_cap, bytes, "allocating the chunked algorithm's workspace", d);
    return st == SSMC_OK ? (void *)(uintptr_t)s->cws : NULL;
}

static ssmc_status chunk_zero(void *ctx, void *ptr, size_t bytes, void *stream, diag *d)
{
    cuda_state *s = ctx;
    strbuf err = {0};
    ssmc_status st = rt_cuda_memset_async(s->gpu, (CUdeviceptr)(uintptr_t)ptr, 0, bytes, (CUstream)stream, &err);
    return st ? fail(d, st, &err, "zeroing a state") : SSMC_OK;
}

static ssmc_status core_compile(void *ctx, const plan_chunk_core *c, const ssmc_options *o, diag *d, void **out)
{
    *out = NULL;
    if (!cuda_chunk_supported(c, d)) return SSMC_ERR_UNSUPPORTED;
    cuda_core *k = calloc(1, sizeof *k);
    if (!k) {
        diag_error(d, "out of memory");
        return SSMC_ERR_NOMEM;
    }
    k->s = ctx;
    k->c = c;
    *out = k;
    return SSMC_OK;
}

static void core_free(void *ctx, void *core)
{
    cuda_core *k = core;
    strbuf err = {0};
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < SSMC_NDTYPES; j++)
            if (k->k[i][j].mod) rt_cuda_module_unload(k->s->gpu, k->k[i][j].mod, &err);
    if (k->bk.mod) rt_cuda_module_unload(k->s->gpu, k->bk.mod, &err);
    sb_free(&err);
    free(k);
}

/* One pass of a chunked core's kernels (forward or backward): (B, T, the workspace, then the n pointers
 * ptr) over the pass's launch l, on `stream`; `what` names it in a failure. */
static ssmc_status launch_core_pass(cuda_state *s, CUfunction fn, cuda_launch l, int64_t batch, int64_t T, CUdeviceptr ws,
                                    const CUdeviceptr *ptr, int n, void *stream, const char *what, diag *d)
{
    if (l.blocks > 0x7fffffff) {
        diag_error(d, "cuda: %s of a batch of %lld and %lld steps needs too many blocks", what, (long long)batch,
                   (long long)T);
        return SSMC_ERR_ARG;
    }
    long long B = batch, TT = T;
    void *params[3 * PASS_MAX_READOUTS + 16];
    int np = 0;
    params[np++] = &B;
    params[np++] = &TT;
    params[np++] = &ws;
    for (int i = 0; i < n; i++) params[np++] = (void *)&ptr[i];
    unsigned grid[3] = {(unsigned)l.blocks, 1, 1}, block[3] = {l.threads, 1, 1};
    strbuf err = {0};
    ssmc_status st = rt_cuda_launch(s->gpu, fn, grid, block, l.shared_bytes, (CUstream)stream, params, &err);
    if (st != SSMC_OK) {
        strbuf msg = {0};
        sb_printf(&msg, "launching %s", what);
        fail(d, st, &err, sb_cstr(&msg));
        sb_free(&msg);
    }
    sb_free(&err);
    return st;
}

static ssmc_status core_run(void *ctx, void *core, int64_t batch, int64_t T, const chunk_core_io *io, void *stream, diag *d)
{
    cuda_core *k = core;
    cuda_state *s = k->s;
    const plan_chunk_core *c = k->c;
    bool given = io->state != NULL;
    int sdt = given ? io->state_dtype : SSMC_F32;
    pthread_mutex_lock(&s->lock); /* the kernels are compiled at their first use */
    cuda_kernel *kn = &k->k[given][sdt];
    strbuf src = {0}, name = {0}, name2 = {0}, err = {0};
    ssmc_status st = SSMC_OK;
    if (!kn->fn) {
        cuda_chunk_kernel_name(&name, s->m, c, 0);
        cuda_chunk_kernel_name(&name2, s->m, c, 1);
        st = cuda_chunk_emit(&src, s->m, c, given, io->state_dtype, d);
        if (st == SSMC_OK) st = load_kernel(s, sb_cstr(&src), sb_cstr(&name), "the chunked kernel", kn, d);
        if (st == SSMC_OK &&
            (st = rt_cuda_module_function(s->gpu, kn->mod, sb_cstr(&name2), &k->readouts[given][sdt], &err)) != SSMC_OK) {
            fail(d, st, &err, "finding the chunked kernel's readout pass");
            rt_cuda_module_unload(s->gpu, kn->mod, &err);
            kn->mod = NULL;
            kn->fn = NULL;
        }
    }
    if (st == SSMC_OK)
        st = grow_buffer(s, &s->kws, &s->kws_cap, cuda_chunk_ws_bytes(c, batch, T),
                         "allocating the chunked kernel's workspace", d);
    /* the kernels' parameters after B, T and the workspace (codegen/cuda_chunk.h) */
    CUdeviceptr ptr[2 * PASS_MAX_READOUTS + 8];
    int n = 0;
    for (int r = 0; r < c->nreadouts; r++) ptr[n++] = (CUdeviceptr)(uintptr_t)io->q[r];
    ptr[n++] = (CUdeviceptr)(uintptr_t)io->k;
    ptr[n++] = (CUdeviceptr)(uintptr_t)io->v;
    ptr[n++] = (CUdeviceptr)(uintptr_t)io->g;
    ptr[n++] = (CUdeviceptr)(uintptr_t)io->beta;
    for (int r = 0; r < c->nreadouts; r++) ptr[n++] = (CUdeviceptr)(uintptr_t)io->r[r];
    ptr[n++] = (CUdeviceptr)(uintptr_t)io->state;
    for (int pass = 0; st == SSMC_OK && pass < CUDA_CHUNK_PASSES; pass++)
        st = launch_core_pass(s, pass == 0 ? kn->fn : k->readouts[given][sdt], cuda_chunk_launch(c, batch, T, pass), batch,
                              T, s->kws, ptr, n, stream,
                              pass == 0 ? "the chunked kernel's state pass" : "the chunked kernel's readout pass", d);
    pthread_mutex_unlock(&s->lock);
    sb_free(&src);
    sb_free(&name);
    sb_free(&name2);
    sb_free(&err);
    return st;
}

/* ---- the cores on host memory (the host API's chunked gradients,
 * driver/grad_chunked.c): every tensor copied into one device buffer
 * (cuda_state.gbuf, kept and grown), the run, the results copied back ---- */

typedef struct staged {
    const void *host; /* NULL: absent */
    size_t bytes;
    bool in, out;     /* copied in before the run, back after it */
    CUdeviceptr dev;
} staged;

/* Places the n tensors and `extra` bytes (dev[n]: their address) in gbuf and copies the inputs in. */
static ssmc_status stage_in(cuda_state *s, staged *t, int n, size_t extra, CUdeviceptr *extra_dev, diag *d)
{
    size_t total = 0;
    for (int i = 0; i < n; i++) total += t[i].host ? (t[i].bytes + 255) / 256 * 256 : 0;
    total += (extra + 255) / 256 * 256 + 256;
    strbuf err = {0};
    ssmc_status st = grow_buffer(s, &s->gbuf, &s->gbuf_cap, total, "allocating the chunked core's device copies", d);
    if (st != SSMC_OK) return st;
    CUdeviceptr at = s->gbuf;
    for (int i = 0; i < n; i++) {
        t[i].dev = 0;
        if (!t[i].host) continue;
        t[i].dev = at;
        at += (t[i].bytes + 255) / 256 * 256;
        if (t[i].in && t[i].bytes && (st = rt_cuda_htod(s->gpu, t[i].dev, t[i].host, t[i].bytes, &err)) != SSMC_OK)
            return fail(d, st, &err, "copying the chunked core's operands to the device");
    }
    *extra_dev = at;
    return SSMC_OK;
}

static ssmc_status stage_out(cuda_state *s, const staged *t, int n, diag *d)
{
    strbuf err = {0};
    ssmc_status st = rt_cuda_sync(s->gpu, &err);
    for (int i = 0; st == SSMC_OK && i < n; i++)
        if (t[i].host && t[i].out && t[i].bytes)
            st = rt_cuda_dtoh(s->gpu, (void *)t[i].host, t[i].dev, t[i].bytes, &err);
    return st ? fail(d, st, &err, "copying the chunked core's results from the device") : SSMC_OK;
}

#define DEV(i) ((void *)(uintptr_t)t[i].dev)

/* The core's operands read from the host (the readouts' q, k, v, the decay g
 * of gw values a row, beta) into t from its start; returns their count. */
static int stage_operands(staged *t, const float *const *q, int nr, const float *k, const float *v, const float *g,
                          const float *beta, size_t rows,
                          size_t K, size_t V, size_t gw)
{
    int n = 0;
    size_t f = sizeof(float);
    for (int r = 0; r < nr; r++) t[n++] = (staged){q[r], rows * K * f, true, false, 0};
    t[n++] = (staged){k, rows * K * f, true, false, 0};
    t[n++] = (staged){v, rows * V * f, true, false, 0};
    t[n++] = (staged){g, rows * gw * f, true, false, 0};
    t[n++] = (staged){beta, rows * f, true, false, 0};
    return n;
}

static ssmc_status core_run_host(void *ctx, void *core, int64_t batch, int64_t T, const chunk_core_io *io, diag *d)
{
    cuda_core *k = core;
    cuda_state *s = ctx;
    const plan_chunk_core *c = k->c;
    size_t rows = (size_t)(batch * T * c->nheads), f = sizeof(float), K = (size_t)c->K, V = (size_t)c->V;
    size_t gw = c->decay == PASS_DECAY_KEY ? K : 1;
    staged t[2 * PASS_MAX_READOUTS + 8] = {{0}};
    int n = 0, nr = c->nreadouts;
    n = stage_operands(t, io->q, nr, io->k, io->v, io->g, io->beta, rows, K, V, gw);
    t[n++] = (staged){io->w, rows * K * f, true, false, 0};
    for (int r = 0; r < nr; r++) t[n++] = (staged){io->r[r], rows * V * f, false, true, 0};
    t[n++] = (staged){io->state, (size_t)batch * (size_t)c->state_elems * dtype_size(io->state_dtype), true, true, 0};
    CUdeviceptr none;
    pthread_mutex_lock(&s->lock);
    ssmc_status st = stage_in(s, t, n, 0, &none, d);
    if (st == SSMC_OK) {
        chunk_core_io dio = {.k = DEV(nr), .v = DEV(nr + 1), .g = DEV(nr + 2), .beta = DEV(nr + 3), .w = DEV(nr + 4),
                             .state = DEV(n - 1), .state_dtype = io->state_dtype};
        for (int r = 0; r < nr; r++) {
            dio.q[r] = DEV(r);
            dio.r[r] = DEV(nr + 5 + r);
        }
        st = core_run(ctx, core, batch, T, &dio, NULL, d);
    }
    if (st == SSMC_OK) st = stage_out(s, t, n, d);
    pthread_mutex_unlock(&s->lock);
    return st;
}

static bool core_has_backward(void *ctx, void *core, diag *d)
{
    (void)ctx;
    return cuda_chunk_bwd_supported(((cuda_core *)core)->c, d);
}

static size_t core_backward_ws(void *ctx, void *core, int64_t batch, int64_t T)
{
    (void)ctx;
    return cuda_chunk_bwd_ws_bytes(((cuda_core *)core)->c, batch, T);
}

/* On device memory, enqueued on `stream`; io->work holds core_backward_ws bytes. */
static ssmc_status core_backward(void *ctx, void *core, int64_t batch, int64_t T, const chunk_core_grad_io *io,
                                 void *stream, diag *d)
{
    cuda_core *k = core;
    cuda_state *s = ctx;
    const plan_chunk_core *c = k->c;
    if (!cuda_chunk_bwd_supported(c, d)) return SSMC_ERR_UNSUPPORTED;
    strbuf src = {0}, name = {0}, err = {0};
    ssmc_status st = SSMC_OK;
    const int npass = cuda_chunk_bwd_passes(c);
    pthread_mutex_lock(&s->lock);
    if (!k->bk.fn) {
        cuda_chunk_bwd_kernel_name(&name, s->m, c, 0);
        st = cuda_chunk_bwd_emit(&src, s->m, c, d);
        if (st == SSMC_OK) st = load_kernel(s, sb_cstr(&src), sb_cstr(&name), "the chunked core's backward kernel", &k->bk, d);
        k->bpass[0] = k->bk.fn;
        for (int p = 1; st == SSMC_OK && p < npass; p++) {
            sb_free(&name);
            cuda_chunk_bwd_kernel_name(&name, s->m, c, p);
            if ((st = rt_cuda_module_function(s->gpu, k->bk.mod, sb_cstr(&name), &k->bpass[p], &err)) != SSMC_OK) {
                fail(d, st, &err, "finding a pass of the chunked core's backward");
                rt_cuda_module_unload(s->gpu, k->bk.mod, &err);
                k->bk.mod = NULL;
                k->bk.fn = NULL;
            }
        }
    }
    /* the kernels' parameters after B, T and the workspace (codegen/cuda_chunk_bwd.c): the operands, the
     * readouts' cotangents, the state and its cotangent, the operands' gradients */
    int nr = c->nreadouts, n = 0;
    CUdeviceptr ptr[3 * PASS_MAX_READOUTS + 12];
#define P(x) (ptr[n++] = (CUdeviceptr)(uintptr_t)(x))
    for (int r = 0; r < nr; r++) P(io->q[r]);
    P(io->k), P(io->v), P(io->g), P(io->beta);
    for (int r = 0; r < nr; r++) P(io->dr[r]);
    P(io->state), P(io->dstate);
    for (int r = 0; r < nr; r++) P(io->dq[r]);
    P(io->dk), P(io->dv), P(io->dg), P(io->dbeta), P(io->dw);
#undef P
    for (int pass = 0; st == SSMC_OK && pass < npass; pass++)
        st = launch_core_pass(s, k->bpass[pass], cuda_chunk_bwd_launch(c, batch, T, pass), batch, T,
                              (CUdeviceptr)(uintptr_t)io->work, ptr, n, stream, "the chunked core's backward kernel", d);
    pthread_mutex_unlock(&s->lock);
    sb_free(&src);
    sb_free(&name);
    sb_free(&err);
    return st;
}

/* On host memory: staged through gbuf, the workspace after the tensors. */
static ssmc_status core_backward_host(void *ctx, void *core, int64_t batch, int64_t T, const chunk_core_grad_io *io,
                                      diag *d)
{
    cuda_core *k = core;
    cuda_state *s = ctx;
    const plan_chunk_core *c = k->c;
    if (!cuda_chunk_bwd_supported(c, d)) return SSMC_ERR_UNSUPPORTED;
    size_t rows = (size_t)(batch * T * c->nheads), f = sizeof(float), K = (size_t)c->K, V = (size_t)c->V;
    size_t se = (size_t)batch * (size_t)c->state_elems * f, gw = c->decay == PASS_DECAY_KEY ? K : 1;
    staged t[3 * PASS_MAX_READOUTS + 12] = {{0}};
    int n = 0, nr = c->nreadouts;
    n = stage_operands(t, io->q, nr, io->k, io->v, io->g, io->beta, rows, K, V, gw);
    for (int r = 0; r < nr; r++) t[n++] = (staged){io->dr[r], rows * V * f, true, false, 0};
    t[n++] = (staged){io->state, se, true, false, 0};
    t[n++] = (staged){io->dstate, se, true, true, 0};
    for (int r = 0; r < nr; r++) t[n++] = (staged){io->dq[r], rows * K * f, false, true, 0};
    t[n++] = (staged){io->dk, rows * K * f, false, true, 0};
    t[n++] = (staged){io->dv, rows * V * f, false, true, 0};
    t[n++] = (staged){io->dg, rows * gw * f, false, true, 0};
    t[n++] = (staged){io->dbeta, rows * f, false, true, 0};
    t[n++] = (staged){io->dw, rows * K * f, false, true, 0};
    CUdeviceptr ws = 0;
    pthread_mutex_lock(&s->lock);
    ssmc_status st = stage_in(s, t, n, cuda_chunk_bwd_ws_bytes(c, batch, T), &ws, d);
    if (st == SSMC_OK) {
        chunk_core_grad_io dio = {.k = DEV(nr), .v = DEV(nr + 1), .g = DEV(nr + 2), .beta = DEV(nr + 3),
                                  .state = DEV(2 * nr + 4), .dstate = DEV(2 * nr + 5), .dk = DEV(3 * nr + 6),
                                  .dv = DEV(3 * nr + 7), .dg = DEV(3 * nr + 8), .dbeta = DEV(3 * nr + 9),
                                  .dw = DEV(3 * nr + 10), .work = (void *)(uintptr_t)ws};
        for (int r = 0; r < nr; r++) {
            dio.q[r] = DEV(r);
            dio.dr[r] = DEV(nr + 4 + r);
            dio.dq[r] = DEV(2 * nr + 6 + r);
        }
        st = core_backward(ctx, core, batch, T, &dio, NULL, d);
    }
    if (st == SSMC_OK) st = stage_out(s, t, n, d);
    pthread_mutex_unlock(&s->lock);
    return st;
}

#undef DEV

static const chunk_hooks cuda_chunk_hooks = {
    .be = &cuda_backend,
    .workspace = chunk_workspace,
    .zero = chunk_zero,
    .core_compile = core_compile,
    .core_run = core_run,
    .core_free = core_free,
    .core_backward = core_backward,
    .core_backward_ws = core_backward_ws,
    .core_has_backward = core_has_backward,
    .core_run_host = core_run_host,
    .core_backward_host = core_backward_host,
};

static struct chunked_state *cuda_chunked(void *state) { return ((cuda_state *)state)->chunked; }

static plan_target cuda_target(const ssmc_options *o)
{
    plan_tune tune = cuda_tune_from_env();
    return plan_target_cuda(&tune);
}

static ssmc_status cuda_compile(const ir_model *m, const pass_plan *plan, const ssmc_options *o, diag *d, void **state)
{
    *state = NULL;
    cuda_state *s = calloc(1, sizeof *s);
    if (!s) {
        diag_error(d, "out of memory");
        return SSMC_ERR_NOMEM;
    }
    arena_init(&s->arena);
    s->m = m;
    /* recursive: a core's hooks lock it, and chunked_run calls them with it held */
    pthread_mutexattr_t attr;
    bool locked = pthread_mutexattr_init(&attr) == 0;
    locked = locked && pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_RECURSIVE) == 0 &&
             pthread_mutex_init(&s->lock, &attr) == 0;
    pthread_mutexattr_destroy(&attr);
    if (!locked) {
        free(s);
        diag_error(d, "cuda: cannot create a lock");
        return SSMC_ERR_NOMEM;
    }
    s->plan = plan;
    ssmc_status st = SSMC_OK;

    strbuf err = {0};
    if (st == SSMC_OK && (st = rt_cuda_open(&s->gpu, &err)) != SSMC_OK) fail(d, st, &err, "no GPU to run on");
    if (st == SSMC_OK) {
        const char *arch = o->cuda_arch ? o->cuda_arch : rt_cuda_arch_name(s->gpu);
        if (strlen(arch) >= sizeof s->arch) {
            diag_error(d, "cuda: bad GPU architecture '%s'", arch);
            st = SSMC_ERR_ARG;
        } else {
            strcpy(s->arch, arch);
        }
    }
    sb_free(&err);
    if (st == SSMC_OK && plan->algo == PLAN_ALGO_CHUNKED)
        st = chunked_compile(&cuda_chunk_hooks, s, m, plan, o, d, &s->chunked);
    if (st != SSMC_OK) {
        state_free(s);
        return st;
    }
    *state = s;
    return SSMC_OK;
}

/* Elements of a tensor in a run (as driver/api.c counts them). */
static size_t run_elems(const ir_model *m, uint32_t i, int64_t batch, int64_t T)
{
    const ir_tensor *t = &m->tensors[i];
    size_t n = (size_t)ir_tensor_elems(m, t);
    if (t->kind == IR_PARAM) return n;
    n *= (size_t)batch;
    return t->per_step ? n * (size_t)T : n;
}

/* The signature of a run; device pointers allow vector loads only when every
 * one is 16-byte aligned (the host path's buffers always are). */
static void make_sig(const ir_model *m, const backend_tensor *bt, bool device, cuda_sig *sig, ssmc_dtype *dt,
                     bool *present)
{
    *sig = (cuda_sig){.vec = true}; /* not by rows, not one step: a decode sets those */
    bool *fresh = present + m->ntensors + 1; /* the caller's array holds both */
    for (uint32_t i = 0; i < m->ntensors; i++) {
        present[i] = m->tensors[i].kind != IR_LET && bt[i].data != NULL;
        fresh[i] = present[i] && bt[i].fresh;
        dt[i] = present[i] ? bt[i].dtype : SSMC_F32;
        if (device && present[i] && ((uintptr_t)bt[i].data & 15u)) sig->vec = false;
    }
    sig->dtype = dt;
    sig->present = present;
    sig->fresh = fresh;
}

/* rows: NULL, or the pointers a kernel by pool row takes (cuda_sig.rows). */
static ssmc_status launch(cuda_state *s, CUfunction fn, int64_t batch, int64_t T, CUdeviceptr ws,
                          const CUdeviceptr *ptrs, const CUdeviceptr rows[2], CUstream stream, diag *d)
{
    const ir_model *m = s->m;
    cuda_launch l = cuda_launch_of(s->plan, batch);
    if (l.blocks > 0x7fffffff) {
        diag_error(d, "cuda: a batch of %lld needs %lld blocks, more than a grid holds", (long long)batch,
                   (long long)l.blocks);
        return SSMC_ERR_ARG;
    }
    void **params = calloc(m->ntensors + 5, sizeof *params);
    if (!params) {
        diag_error(d, "out of memory");
        return SSMC_ERR_NOMEM;
    }
    long long B = batch, TT = T;
    int k = 0;
    params[k++] = &B;
    params[k++] = &TT;
    params[k++] = &ws;
    if (rows) {
        params[k++] = (void *)&rows[0];
        params[k++] = (void *)&rows[1];
    }
    for (uint32_t i = 0; i < m->ntensors; i++)
        if (m->tensors[i].kind != IR_LET) params[k++] = (void *)&ptrs[i];
    unsigned grid[3] = {(unsigned)l.blocks, 1, 1}, block[3] = {l.threads, 1, 1};
    strbuf err = {0};
    ssmc_status st = rt_cuda_launch(s->gpu, fn, grid, block, l.shared_bytes, stream, params, &err);
    free(params);
    return st ? fail(d, st, &err, "launching the kernel") : SSMC_OK;
}

static ssmc_status helpers_load(cuda_state *s, diag *d);
static ssmc_status helper_launch(cuda_state *s, CUfunction fn, size_t n, void **params, void *stream, diag *d);
static ssmc_status sum_rows_launch(cuda_state *s, CUfunction fn, long long rows, size_t n, void **params, void *stream,
                                   diag *d);

/* The finishing step of split reductions (plan.h): after the kernel, on its
 * stream, each partial output present gets the sum of its slices in the
 * scratch past the blocks' workspace, in slice order (deterministic), in its
 * dtype; each partial accumulator state gets its tiles past the first added
 * to the value tile 0 left in place, in the same order. */
static ssmc_status finish_partials(cuda_state *s, int64_t batch, int64_t T, CUdeviceptr ws, const CUdeviceptr *ptrs,
                                   const ssmc_dtype *dt, const bool *present, CUdeviceptr pool_rows, void *stream,
                                   diag *d)
{
    const pass_plan *p = s->plan;
    const ir_model *m = s->m;
    cuda_launch l = cuda_launch_of(p, batch);
    ssmc_status st = SSMC_OK;
    for (uint32_t i = 0; st == SSMC_OK && i < m->ntensors; i++) {
        if (!p->part_tiles[i] || !present[i] || m->tensors[i].kind != IR_STATE || p->part_tiles[i] < 2 || batch == 0)
            continue;
        /* an accumulator: tiles 1.. added to tile 0's value, in place (by pool row in a decode) */
        if ((st = helpers_load(s, d)) != SSMC_OK) break;
        long long rows = p->part_tiles[i] - 1, n = batch * p->elems[i], per = p->elems[i];
        CUdeviceptr dst = ptrs[i],
                    src = ws + (CUdeviceptr)((l.blocks * l.ws_floats + batch * T * p->part_floats + batch * p->part_off[i]) * 4);
        void *params[] = {&rows, &n, &dst, &src, &pool_rows, &per};
        st = helper_launch(s, s->add_rows[dt[i]], (size_t)n, params, stream, d);
    }
    for (uint32_t i = 0; st == SSMC_OK && i < m->ntensors; i++) {
        if (!p->part_tiles[i] || !present[i] || m->tensors[i].kind == IR_STATE || batch * T == 0) continue;
        if ((st = helpers_load(s, d)) != SSMC_OK) break;
        /* a padding slot of a decode by pool rows (a negative row) keeps its outputs */
        long long rows = p->part_tiles[i], n = batch * T * p->elems[i], per = T * p->elems[i];
        CUdeviceptr dst = ptrs[i], src = ws + (CUdeviceptr)((l.blocks * l.ws_floats + batch * T * p->part_off[i]) * 4);
        void *params[] = {&rows, &n, &dst, &src, &pool_rows, &per};
        st = sum_rows_launch(s, s->sum_rows[dt[i]], rows, (size_t)n, params, stream, d);
    }
    return st;
}

static ssmc_status cuda_run(void *state, int64_t batch, int64_t T, const backend_tensor *bt, diag *d)
{
    cuda_state *s = state;
    const ir_model *m = s->m;
    ssmc_dtype *dt = calloc(m->ntensors + 1, sizeof *dt);
    bool *present = calloc(2 * (m->ntensors + 1), sizeof *present); /* and the fresh flags */
    size_t *off = calloc(m->ntensors + 1, sizeof *off);
    CUdeviceptr *ptrs = calloc(m->ntensors + 1, sizeof *ptrs);
    if (!dt || !present || !off || !ptrs) {
        free(dt);
        free(present);
        free(off);
        free(ptrs);
        diag_error(d, "out of memory");
        return SSMC_ERR_NOMEM;
    }
    pthread_mutex_lock(&s->lock);
    cuda_sig sig;
    make_sig(m, bt, false, &sig, dt, present);
    CUfunction fn = NULL;
    strbuf err = {0};
    /* the chunked algorithm runs its parts on device tensors: only the copies here */
    ssmc_status st = s->chunked ? SSMC_OK : kernel_for(s, &sig, &fn, d);
    /* one buffer: every tensor at an aligned offset, then the workspace */
    size_t total = 0;
    for (uint32_t i = 0; i < m->ntensors; i++) {
        off[i] = total;
        if (present[i]) total += (run_elems(m, i, batch, T) * dtype_size(dt[i]) + ALIGN - 1) / ALIGN * ALIGN;
    }
    cuda_launch l = cuda_launch_of(s->plan, batch);
    size_t ws_off = total, ws_bytes = (size_t)cuda_ws_floats(&l, batch, T) * 4;
    total += ws_bytes;
    if (st == SSMC_OK && total > s->buf_cap) {
        rt_cuda_free(s->gpu, s->buf, &err);
        s->buf = 0;
        s->buf_cap = 0;
        if ((st = rt_cuda_alloc(s->gpu, total, &s->buf, &err)) != SSMC_OK)
            fail(d, st, &err, "allocating device memory for the run");
        else
            s->buf_cap = total;
    }
    for (uint32_t i = 0; st == SSMC_OK && i < m->ntensors; i++) {
        ir_kind k = m->tensors[i].kind;
        ptrs[i] = present[i] ? s->buf + off[i] : 0;
        if (present[i] && (k == IR_INPUT || k == IR_PARAM || (k == IR_STATE && !bt[i].fresh)) &&
            (st = rt_cuda_htod(s->gpu, ptrs[i], bt[i].data, run_elems(m, i, batch, T) * dtype_size(dt[i]), &err)))
            fail(d, st, &err, "copying tensors to the GPU");
    }
    if (st == SSMC_OK && s->chunked) {
        backend_tensor *dbt = calloc(m->ntensors + 1, sizeof *dbt);
        if (!dbt) {
            diag_error(d, "out of memory");
            st = SSMC_ERR_NOMEM;
        }
        for (uint32_t i = 0; dbt && i < m->ntensors; i++)
            dbt[i] = (backend_tensor){present[i] ? (void *)(uintptr_t)ptrs[i] : NULL, dt[i], bt[i].fresh};
        if (st == SSMC_OK) st = chunked_run(s->chunked, batch, T, dbt, true, NULL, d);
        free(dbt);
    } else if (st == SSMC_OK) {
        st = launch(s, fn, batch, T, ws_bytes ? s->buf + ws_off : 0, ptrs, NULL, NULL, d);
        if (st == SSMC_OK) st = finish_partials(s, batch, T, s->buf + ws_off, ptrs, dt, present, 0, NULL, d);
    }
    if (st == SSMC_OK && (st = rt_cuda_sync(s->gpu, &err)) != SSMC_OK) fail(d, st, &err, "running the kernel");
    for (uint32_t i = 0; st == SSMC_OK && i < m->ntensors; i++) {
        ir_kind k = m->tensors[i].kind;
        if (present[i] && (k == IR_OUTPUT || k == IR_STATE) &&
            (st = rt_cuda_dtoh(s->gpu, bt[i].data, ptrs[i], run_elems(m, i, batch, T) * dtype_size(dt[i]), &err)))
            fail(d, st, &err, "copying results from the GPU");
    }
    pthread_mutex_unlock(&s->lock);
    sb_free(&err);
    free(dt);
    free(present);
    free(off);
    free(ptrs);
    return st;
}

/* rows: NULL, or a decode against state pools (device pointers). */
static ssmc_status run_on_device(cuda_state *s, int64_t batch, int64_t T, const backend_tensor *bt,
                                 const ssmc_rows *rows, void *stream, diag *d);

static ssmc_status cuda_run_device(void *state, int64_t batch, int64_t T, const backend_tensor *bt, void *stream,
                                   diag *d)
{
    return run_on_device(state, batch, T, bt, NULL, stream, d);
}

static ssmc_status cuda_decode(void *state, int64_t batch, int64_t T, const backend_tensor *bt, const ssmc_rows *rows,
                               bool device, void *stream, diag *d)
{
    if (!device) {
        diag_error(d, "cuda: a decode on this device takes device pointers (ssmc_decode_device)");
        return SSMC_ERR_UNSUPPORTED;
    }
    return run_on_device(state, batch, T, bt, rows, stream, d);
}

static ssmc_status run_on_device(cuda_state *s, int64_t batch, int64_t T, const backend_tensor *bt,
                                 const ssmc_rows *rows, void *stream, diag *d)
{
    if (s->chunked && rows) {
        diag_error(d, "cuda: a decode runs the recurrent algorithm (leave --algo out)");
        return SSMC_ERR_UNSUPPORTED;
    }
    if (s->chunked) {
        pthread_mutex_lock(&s->lock);
        ssmc_status st = chunked_run(s->chunked, batch, T, bt, true, stream, d);
        pthread_mutex_unlock(&s->lock);
        return st;
    }
    const ir_model *m = s->m;
    ssmc_dtype *dt = calloc(m->ntensors + 1, sizeof *dt);
    bool *present = calloc(2 * (m->ntensors + 1), sizeof *present); /* and the fresh flags */
    CUdeviceptr *ptrs = calloc(m->ntensors + 1, sizeof *ptrs);
    if (!dt || !present || !ptrs) {
        free(dt);
        free(present);
        free(ptrs);
        diag_error(d, "out of memory");
        return SSMC_ERR_NOMEM;
    }
    pthread_mutex_lock(&s->lock);
    cuda_sig sig;
    make_sig(m, bt, true, &sig, dt, present);
    /* a decode step (T = 1) gets a kernel of its own, with the time loop gone */
    sig.rows = rows != NULL;
    sig.one_step = rows && T == 1;
    CUdeviceptr rp[2] = {rows ? (CUdeviceptr)(uintptr_t)rows->index : 0,
                         rows ? (CUdeviceptr)(uintptr_t)rows->has_state : 0};
    for (uint32_t i = 0; i < m->ntensors; i++) ptrs[i] = present[i] ? (CUdeviceptr)(uintptr_t)bt[i].data : 0;
    CUfunction fn;
    strbuf err = {0};
    ssmc_status st = kernel_for(s, &sig, &fn, d);
    cuda_launch l = cuda_launch_of(s->plan, batch);
    size_t ws = (size_t)cuda_ws_floats(&l, batch, T) * 4;
    if (st == SSMC_OK && ws > s->ws_cap) {
        /* the old workspace may still be in use by a launch in flight */
        if ((st = rt_cuda_sync(s->gpu, &err)) == SSMC_OK) st = rt_cuda_free(s->gpu, s->ws, &err);
        s->ws = 0;
        s->ws_cap = 0;
        if (st == SSMC_OK && (st = rt_cuda_alloc(s->gpu, ws, &s->ws, &err)) == SSMC_OK) s->ws_cap = ws;
        if (st != SSMC_OK) fail(d, st, &err, "allocating the kernel's workspace");
    }
    if (st == SSMC_OK) st = launch(s, fn, batch, T, ws ? s->ws : 0, ptrs, rows ? rp : NULL, (CUstream)stream, d);
    if (st == SSMC_OK) st = finish_partials(s, batch, T, s->ws, ptrs, dt, present, rows ? rp[0] : 0, stream, d);
    pthread_mutex_unlock(&s->lock);
    sb_free(&err);
    free(dt);
    free(present);
    free(ptrs);
    return st;
}

/* ---- device memory for the gradient driver (backend_mem) ---- */

static void *mem_alloc(void *ctx, size_t bytes, diag *d)
{
    cuda_state *s = ctx;
    CUdeviceptr p = 0;
    strbuf err = {0};
    ssmc_status st = rt_cuda_alloc(s->gpu, bytes, &p, &err);
    if (st != SSMC_OK) fail(d, st, &err, "allocating the gradients' device buffers");
    sb_free(&err);
    return st == SSMC_OK ? (void *)(uintptr_t)p : NULL;
}

static void mem_free(void *ctx, void *p)
{
    cuda_state *s = ctx;
    strbuf err = {0};
    rt_cuda_free(s->gpu, (CUdeviceptr)(uintptr_t)p, &err); /* nothing to do about a failure to free */
    sb_free(&err);
}

static ssmc_status mem_copy2d(void *ctx, void *dst, size_t dpitch, const void *src, size_t spitch, size_t width,
                              size_t height, void *stream, diag *d)
{
    cuda_state *s = ctx;
    strbuf err = {0};
    CUdeviceptr dp = (CUdeviceptr)(uintptr_t)dst, sp = (CUdeviceptr)(uintptr_t)src;
    ssmc_status st = SSMC_OK;
    if (height == 1 || dpitch > 0x7fffffff || spitch > 0x7fffffff) /* past the 2D copy's pitch limit: row by row */
        for (size_t r = 0; st == SSMC_OK && r < height; r++)
            st = rt_cuda_dtod_async(s->gpu, dp + r * dpitch, sp + r * spitch, width, (CUstream)stream, &err);
    else
        st = rt_cuda_dtod_2d_async(s->gpu, dp, dpitch, sp, spitch, width, height, (CUstream)stream, &err);
    return st ? fail(d, st, &err, "copying the gradients' device buffers") : SSMC_OK;
}

static ssmc_status mem_zero(void *ctx, void *p, size_t bytes, void *stream, diag *d)
{
    return chunk_zero(ctx, p, bytes, stream, d);
}

/* The helper kernels, compiled (or taken from the cache) at their first use. */
static ssmc_status helpers_load(cuda_state *s, diag *d)
{
    if (s->helpers) return SSMC_OK;
    strbuf src = {0}, name = {0}, err = {0};
    char *image = NULL;
    size_t len = 0;
    CUmodule mod = NULL;
    cuda_emit_helpers(&src);
    ssmc_status st = src.failed ? SSMC_ERR_NOMEM : load_nvrtc(&s->nvrtc, d);
    if (st == SSMC_OK) st = build_image(s->nvrtc, CUDA_HELPERS_PROGRAM, sb_cstr(&src), s->arch, true, &image, &len, d);
    if (st == SSMC_OK && (st = rt_cuda_module_load(s->gpu, image, &mod, &err)) != SSMC_OK)
        fail(d, st, &err, "loading the helper kernels");
    for (int dd = 0; st == SSMC_OK && dd < SSMC_NDTYPES; dd++)
        for (int sd = 0; st == SSMC_OK && sd <= SSMC_NDTYPES; sd++) {
            bool sum = sd == SSMC_NDTYPES;
            CUfunction *fn = sum ? &s->sum_rows[dd] : &s->convert[dd][sd];
            name.len = 0;
            cuda_helper_name(&name, sum, (ssmc_dtype)dd, sum ? SSMC_F32 : (ssmc_dtype)sd);
            if ((st = rt_cuda_module_function(s->gpu, mod, sb_cstr(&name), fn, &err)) != SSMC_OK)
                fail(d, st, &err, "finding a helper kernel");
        }
    for (int dd = 0; st == SSMC_OK && dd < SSMC_NDTYPES; dd++) {
        name.len = 0;
        cuda_helper_add_name(&name, (ssmc_dtype)dd);
        if ((st = rt_cuda_module_function(s->gpu, mod, sb_cstr(&name), &s->add_rows[dd], &err)) != SSMC_OK)
            fail(d, st, &err, "finding a helper kernel");
    }
    if (st == SSMC_OK) s->helpers = mod;
    else if (mod) rt_cuda_module_unload(s->gpu, mod, &err);
    free(image);
    sb_free(&src);
    sb_free(&name);
    sb_free(&err);
    return st;
}

static ssmc_status launch_blocks(cuda_state *s, CUfunction fn, size_t n, size_t per_block, unsigned shared, void **params,
                                 void *stream, diag *d)
{
    size_t blocks = (n + per_block - 1) / per_block;
    if (blocks > 0x7fffffff) {
        diag_error(d, "cuda: %zu elements are too many for one conversion", n);
        return SSMC_ERR_ARG;
    }
    unsigned grid[3] = {(unsigned)blocks, 1, 1}, block[3] = {CUDA_HELPERS_THREADS, 1, 1};
    strbuf err = {0};
    ssmc_status st = rt_cuda_launch(s->gpu, fn, grid, block, shared, (CUstream)stream, params, &err);
    return st ? fail(d, st, &err, "launching a helper kernel") : SSMC_OK;
}

/* One thread per element. */
static ssmc_status helper_launch(cuda_state *s, CUfunction fn, size_t n, void **params, void *stream, diag *d)
{
    return launch_blocks(s, fn, n, CUDA_HELPERS_THREADS, 0, params, stream, d);
}

/* ssmc_sum_rows_*: cuda_sum_rows_per_block elements a block, its threads over their rows (codegen/cuda.h). */
static ssmc_status sum_rows_launch(cuda_state *s, CUfunction fn, long long rows, size_t n, void **params, void *stream,
                                   diag *d)
{
    return launch_blocks(s, fn, n, (size_t)cuda_sum_rows_per_block(rows, (int64_t)n), CUDA_HELPERS_THREADS * sizeof(float),
                         params, stream, d);
}

static ssmc_status mem_convert(void *ctx, void *dst, ssmc_dtype dd, const void *src, ssmc_dtype sd, size_t n,
                               void *stream, diag *d)
{
    cuda_state *s = ctx;
    pthread_mutex_lock(&s->lock);
    ssmc_status st = helpers_load(s, d);
    long long nn = (long long)n;
    CUdeviceptr dp = (CUdeviceptr)(uintptr_t)dst, sp = (CUdeviceptr)(uintptr_t)src;
    void *params[] = {&nn, &dp, &sp};
    if (st == SSMC_OK) st = helper_launch(s, s->convert[dd][sd], n, params, stream, d);
    pthread_mutex_unlock(&s->lock);
    return st;
}

static ssmc_status mem_sum_rows(void *ctx, void *dst, ssmc_dtype dd, const float *src, int64_t rows, size_t n,
                                void *stream, diag *d)
{
    cuda_state *s = ctx;
    pthread_mutex_lock(&s->lock);
    ssmc_status st = helpers_load(s, d);
    long long nr = rows, nn = (long long)n, per = 1;
    CUdeviceptr dp = (CUdeviceptr)(uintptr_t)dst, sp = (CUdeviceptr)(uintptr_t)src, none = 0;
    void *params[] = {&nr, &nn, &dp, &sp, &none, &per};
    if (st == SSMC_OK) st = sum_rows_launch(s, s->sum_rows[dd], nr, n, params, stream, d);
    pthread_mutex_unlock(&s->lock);
    return st;
}

static ssmc_status mem_sync(void *ctx, void *stream, diag *d)
{
    cuda_state *s = ctx;
    strbuf err = {0};
    ssmc_status st = stream ? rt_cuda_stream_sync(s->gpu, (CUstream)stream, &err) : rt_cuda_sync(s->gpu, &err);
    return st ? fail(d, st, &err, "waiting for the GPU") : SSMC_OK;
}

static const backend_mem cuda_mem = {
    .alloc = mem_alloc,
    .free = mem_free,
    .copy2d = mem_copy2d,
    .zero = mem_zero,
    .convert = mem_convert,
    .sum_rows = mem_sum_rows,
    .sync = mem_sync,
};

/* The arch for emitted PTX: the option, else the GPU's, else sm_90. */
static void emit_arch(const ssmc_options *o, char *arch, size_t n)
{
    if (o->cuda_arch) {
        snprintf(arch, n, "%s", o->cuda_arch);
        return;
    }
    rt_cuda *gpu = NULL;
    strbuf err = {0};
    if (rt_cuda_open(&gpu, &err) == SSMC_OK)
        snprintf(arch, n, "%s", rt_cuda_arch_name(gpu));
    else
        snprintf(arch, n, "sm_90");
    rt_cuda_close(gpu);
    sb_free(&err);
}

static ssmc_status cuda_emit_text(const pass_plan *plan, const ssmc_options *o, ssmc_emit_kind kind, strbuf *out,
                                  diag *d)
{
    arena a;
    arena_init(&a);
    const ir_model *m = plan->m;
    if (plan->algo == PLAN_ALGO_CHUNKED) {
        arena_free(&a);
        if (kind != SSMC_EMIT_CUDA) {
            diag_error(d, "cuda: --emit=ptx of a chunked plan is not supported (--emit=cuda shows its kernels)");
            return SSMC_ERR_UNSUPPORTED;
        }
        /* the prologue's kernel, each core, the epilogue's kernel */
        const plan_chunked *ch = plan->chunked;
        ssmc_status st = cuda_emit_text(ch->prologue, o, kind, out, d);
        for (int i = 0; st == SSMC_OK && i < ch->ncores; i++) {
            bool given = true;
            st = cuda_chunk_emit(out, m, &ch->cores[i], given, SSMC_F32, d);
        }
        if (st == SSMC_OK) st = cuda_emit_text(ch->epilogue, o, kind, out, d);
        return st;
    }
    ssmc_dtype *dt = arena_array(&a, m->ntensors + 1, sizeof *dt);
    bool *present = arena_array(&a, m->ntensors + 1, sizeof *present);
    ssmc_status st = dt && present ? SSMC_OK : SSMC_ERR_NOMEM;
    if (st == SSMC_OK) {
        /* the general form: f32 everywhere, every state read and written (the hidden
         * states of passes/lag.c never are) */
        for (uint32_t i = 0; i < m->ntensors; i++) present[i] = m->tensors[i].kind != IR_LET && !m->tensors[i].hidden;
        cuda_sig sig = {.dtype = dt, .present = present, .vec = true};
        if (kind == SSMC_EMIT_CUDA) {
            st = cuda_emit(out, plan, &sig, d);
        } else if (kind != SSMC_EMIT_PTX) {
            diag_error(d, "the cuda backend emits CUDA C and PTX only");
            st = SSMC_ERR_ARG;
        } else {
            strbuf src = {0}, pn = {0};
            rt_nvrtc *n = NULL;
            char arch[32], *image = NULL;
            size_t len = 0;
            emit_arch(o, arch, sizeof arch);
            st = cuda_emit(&src, plan, &sig, d);
            if (st == SSMC_OK) st = load_nvrtc(&n, d);
            if (st == SSMC_OK) st = build_image(n, prog_name(&pn, m), sb_cstr(&src), arch, false, &image, &len, d);
            if (st == SSMC_OK) sb_puts(out, image);
            free(image);
            rt_nvrtc_free(n);
            sb_free(&src);
            sb_free(&pn);
        }
    } else if (!dt || !present) {
        diag_error(d, "out of memory");
    }
    arena_free(&a);
    return st;
}

const backend cuda_backend = {
    .name = "cuda",
    .target = cuda_target,
    .compile = cuda_compile,
    .run = cuda_run,
    .emit = cuda_emit_text,
    .free = state_free,
    .run_device = cuda_run_device,
    .decode = cuda_decode,
    .reverse = true, /* codegen/cuda.c runs a reverse model's steps from T-1 down */
    .chunked = cuda_chunked,
    .mem = &cuda_mem,
    .chunk_operands = SSMC_BF16, /* mma.sync m16n8k16 bf16 (codegen/cuda_chunk.c) */
};
