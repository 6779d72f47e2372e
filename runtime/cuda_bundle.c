/* cuda_bundle.c: loading and running an AOT bundle's CUDA kernels (see
 * cuda_bundle.h), through runtime/cuda_driver.h.
 *
 * A handle opens the device, picks for each kernel the image its arch runs
 * (checked at open: a bundle with no code for the GPU fails there, not at the
 * first call), and loads a kernel's module the first time a call needs it.
 * The workspace (models with a state or let in the global workspace) and the
 * host path's device buffer are the handle's, grown on demand. */
#include "runtime/cuda_bundle.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/cuda_driver.h"
#include "support/support.h"

#define ALIGN 256 /* sub-buffers of the host path's buffer */

struct rt_cb {
    const rt_cb_bundle *b;
    rt_cuda *gpu;
    int arch;
    int *image;           /* [nkernels]: the image picked, -1: none for this GPU */
    CUmodule *mod;        /* [nkernels], loaded on first use */
    CUfunction *fn;
    CUdeviceptr ws, buf;  /* the workspace; the host path's tensors */
    size_t ws_cap, buf_cap;
    pthread_mutex_t lock;
    char err[4096];
};

static size_t dtype_bytes(ssmc_dtype dt) { return dt == SSMC_F64 ? 8 : dt == SSMC_F32 ? 4 : 2; }

int rt_cb_pick(const rt_cb_image *images, int n, int arch)
{
    int cubin = -1, ptx = -1;
    for (int i = 0; i < n; i++) {
        const rt_cb_image *im = &images[i];
        if (im->arch > arch) continue;
        if (im->ptx) { /* JIT-compiled by the driver: anything as new or newer */
            if (ptx < 0 || im->arch > images[ptx].arch) ptx = i;
        } else if (im->arch / 10 == arch / 10 && (cubin < 0 || im->arch > images[cubin].arch)) {
            cubin = i; /* a cubin runs on the later minors of its major */
        }
    }
    return cubin >= 0 ? cubin : ptx;
}

static void set_error(rt_cb *h, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_error(rt_cb *h, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(h->err, sizeof h->err, fmt, ap);
    va_end(ap);
}

/* A failure of runtime/cuda_driver.h: its message, after what was being done. */
static ssmc_status cuda_failed(rt_cb *h, ssmc_status st, strbuf *err, const char *what)
{
    set_error(h, "%s: %s: %s", h->b->model, what, sb_cstr(err));
    sb_free(err);
    return st;
}

/* "sm_80, sm_90 and PTX for compute_90": what the bundle holds, for messages. */
static void holdings(const rt_cb_bundle *b, char *out, size_t cap)
{
    const rt_cb_kernel *k = &b->kernels[0];
    size_t n = 0;
    out[0] = 0;
    for (int i = 0; i < k->nimages && n < cap; i++) {
        const rt_cb_image *im = &b->images[k->first + i];
        n += (size_t)snprintf(out + n, cap - n, "%s%s%d", i ? ", " : "", im->ptx ? "PTX for compute_" : "sm_", im->arch);
    }
}

ssmc_status rt_cb_open(const rt_cb_bundle *b, int device, rt_cb **out)
{
    rt_cb *h = calloc(1, sizeof *h);
    *out = h;
    if (!h) return SSMC_ERR_NOMEM;
    h->b = b;
    if (pthread_mutex_init(&h->lock, NULL) != 0) {
        set_error(h, "%s: cannot create a lock", b->model);
        return SSMC_ERR_NOMEM;
    }
    h->image = calloc((size_t)b->nkernels, sizeof *h->image);
    h->mod = calloc((size_t)b->nkernels, sizeof *h->mod);
    h->fn = calloc((size_t)b->nkernels, sizeof *h->fn);
    if (!h->image || !h->mod || !h->fn) {
        set_error(h, "%s: out of memory", b->model);
        return SSMC_ERR_NOMEM;
    }
    strbuf err = {0};
    ssmc_status st = rt_cuda_open_device(device, &h->gpu, &err);
    if (st != SSMC_OK) return cuda_failed(h, st, &err, "cannot open the GPU");
    sb_free(&err);
    h->arch = rt_cuda_arch(h->gpu);
    for (int k = 0; k < b->nkernels; k++) {
        h->image[k] = rt_cb_pick(b->images + b->kernels[k].first, b->kernels[k].nimages, h->arch);
        if (h->image[k] < 0) {
            char held[256];
            holdings(b, held, sizeof held);
            set_error(h, "%s: the bundle has no code for %s (sm_%d): it holds %s", b->model,
                      rt_cuda_device_name(h->gpu), h->arch, held);
            return SSMC_ERR_UNSUPPORTED;
        }
    }
    return SSMC_OK;
}

void rt_cb_close(rt_cb *h)
{
    if (!h) return;
    strbuf err = {0};
    if (h->gpu) {
        for (int k = 0; h->mod && k < h->b->nkernels; k++) rt_cuda_module_unload(h->gpu, h->mod[k], &err);
        rt_cuda_free(h->gpu, h->ws, &err);
        rt_cuda_free(h->gpu, h->buf, &err);
    }
    sb_free(&err);
    rt_cuda_close(h->gpu);
    pthread_mutex_destroy(&h->lock);
    free(h->image);
    free(h->mod);
    free(h->fn);
    free(h);
}

const char *rt_cb_error(const rt_cb *h) { return h ? h->err : "out of memory"; }
int rt_cb_arch(const rt_cb *h) { return h->arch; }

/* The kernel for a call: the signature's, one step when T is 1, vector loads
 * when every pointer allows them; loaded on first use. Under the lock. */
static ssmc_status kernel_for(rt_cb *h, int sig, bool one_step, bool vec, CUfunction *fn)
{
    const rt_cb_bundle *b = h->b;
    int k = -1;
    for (int i = 0; i < b->nkernels && k < 0; i++)
        if (b->kernels[i].sig == sig && b->kernels[i].one_step == one_step && b->kernels[i].vec == vec) k = i;
    for (int i = 0; i < b->nkernels && k < 0; i++) /* without the variant: the general one */
        if (b->kernels[i].sig == sig && !b->kernels[i].one_step && !b->kernels[i].vec) k = i;
    if (k < 0) {
        set_error(h, "%s: no kernel for dtype signature %d", b->model, sig);
        return SSMC_ERR_ARG;
    }
    if (!h->fn[k]) {
        const rt_cb_image *im = &b->images[b->kernels[k].first + h->image[k]];
        strbuf err = {0};
        ssmc_status st = rt_cuda_module_load(h->gpu, im->data, &h->mod[k], &err);
        if (st != SSMC_OK) {
            char what[96];
            snprintf(what, sizeof what, "loading the %s for %s_%d", im->ptx ? "PTX" : "cubin", im->ptx ? "compute" : "sm",
                     im->arch);
            return cuda_failed(h, st, &err, what);
        }
        if ((st = rt_cuda_module_function(h->gpu, h->mod[k], b->kernel, &h->fn[k], &err)) != SSMC_OK) {
            rt_cuda_module_unload(h->gpu, h->mod[k], &err);
            h->mod[k] = NULL;
            return cuda_failed(h, st, &err, "finding the kernel");
        }
        sb_free(&err);
    }
    *fn = h->fn[k];
    return SSMC_OK;
}

static ssmc_status check_call(rt_cb *h, int sig, int64_t batch, int64_t T)
{
    const rt_cb_bundle *b = h->b;
    if (sig < 0 || sig >= b->nsigs) {
        set_error(h, "%s: unknown dtype signature %d (the bundle has %d)", b->model, sig, b->nsigs);
        return SSMC_ERR_ARG;
    }
    if (batch < 1 || T < 1) {
        set_error(h, "%s: batch and T must be at least 1 (got batch %lld, T %lld)", b->model, (long long)batch,
                  (long long)T);
        return SSMC_ERR_ARG;
    }
    if (batch > INT32_MAX / b->items_per_seq) {
        set_error(h, "%s: a batch of %lld needs more blocks than a grid holds", b->model, (long long)batch);
        return SSMC_ERR_ARG;
    }
    return SSMC_OK;
}

/* The workspace for a batch: grown, once the launches in flight are done. */
static ssmc_status workspace(rt_cb *h, int64_t batch, CUdeviceptr *ws)
{
    size_t need = (size_t)batch * (size_t)h->b->items_per_seq * (size_t)h->b->ws_floats * 4;
    strbuf err = {0};
    ssmc_status st = SSMC_OK;
    if (need > h->ws_cap) {
        if ((st = rt_cuda_sync(h->gpu, &err)) == SSMC_OK) st = rt_cuda_free(h->gpu, h->ws, &err);
        h->ws = 0;
        h->ws_cap = 0;
        if (st == SSMC_OK && (st = rt_cuda_alloc(h->gpu, need, &h->ws, &err)) == SSMC_OK) h->ws_cap = need;
        if (st != SSMC_OK) return cuda_failed(h, st, &err, "allocating the workspace");
    }
    sb_free(&err);
    *ws = h->ws;
    return SSMC_OK;
}

static ssmc_status launch(rt_cb *h, CUfunction fn, int64_t batch, int64_t T, CUdeviceptr ws, CUdeviceptr rows,
                          CUdeviceptr has, const CUdeviceptr *ptrs, CUstream stream)
{
    const rt_cb_bundle *b = h->b;
    void **params = calloc((size_t)b->ntensors + 5, sizeof *params);
    if (!params) {
        set_error(h, "%s: out of memory", b->model);
        return SSMC_ERR_NOMEM;
    }
    long long B = batch, TT = T;
    int k = 0;
    params[k++] = &B;
    params[k++] = &TT;
    params[k++] = &ws;
    params[k++] = &rows;
    params[k++] = &has;
    for (int i = 0; i < b->ntensors; i++) params[k++] = (void *)&ptrs[i];
    unsigned grid[3] = {(unsigned)(batch * b->items_per_seq), 1, 1}, block[3] = {b->threads, 1, 1};
    strbuf err = {0};
    ssmc_status st = rt_cuda_launch(h->gpu, fn, grid, block, b->shared_bytes, stream, params, &err);
    free(params);
    if (st != SSMC_OK) return cuda_failed(h, st, &err, "launching the kernel");
    sb_free(&err);
    return SSMC_OK;
}

ssmc_status rt_cb_run(rt_cb *h, int sig, int64_t batch, int64_t T, void *const *ptrs, const int32_t *rows,
                      const uint8_t *has, void *stream)
{
    if (!h || !h->gpu) return SSMC_ERR_ARG;
    const rt_cb_bundle *b = h->b;
    pthread_mutex_lock(&h->lock);
    h->err[0] = 0;
    ssmc_status st = check_call(h, sig, batch, T);
    CUdeviceptr *dp = st == SSMC_OK ? calloc((size_t)b->ntensors + 1, sizeof *dp) : NULL;
    if (st == SSMC_OK && !dp) {
        set_error(h, "%s: out of memory", b->model);
        st = SSMC_ERR_NOMEM;
    }
    bool vec = true;
    for (int i = 0; st == SSMC_OK && i < b->ntensors; i++) {
        if (b->tensors[i].hidden) continue;
        if (!ptrs[i]) {
            set_error(h, "%s: %s '%s' is NULL (a run on device pointers takes every tensor)", b->model,
                      b->tensors[i].role == SSMC_INPUT   ? "input"
                      : b->tensors[i].role == SSMC_PARAM ? "param"
                      : b->tensors[i].role == SSMC_STATE ? "state"
                                                         : "output",
                      b->tensors[i].name);
            st = SSMC_ERR_ARG;
        }
        dp[i] = (CUdeviceptr)(uintptr_t)ptrs[i];
        if (dp[i] & 15u) vec = false;
    }
    CUfunction fn = NULL;
    CUdeviceptr ws = 0;
    if (st == SSMC_OK) st = kernel_for(h, sig, T == 1, vec, &fn);
    if (st == SSMC_OK && b->ws_floats) st = workspace(h, batch, &ws);
    if (st == SSMC_OK)
        st = launch(h, fn, batch, T, ws, (CUdeviceptr)(uintptr_t)rows, (CUdeviceptr)(uintptr_t)has, dp,
                    (CUstream)stream);
    pthread_mutex_unlock(&h->lock);
    free(dp);
    return st;
}

/* Bytes of tensor i in a host run. */
static size_t host_bytes(const rt_cb_bundle *b, int i, int sig, int64_t batch, int64_t T)
{
    const rt_cb_tensor *t = &b->tensors[i];
    int cls = t->role == SSMC_PARAM ? RT_CB_PARAMS : t->role == SSMC_STATE ? RT_CB_STATES : RT_CB_IO;
    size_t n = (size_t)t->elems;
    if (t->role != SSMC_PARAM) n *= (size_t)batch;
    if (t->per_step) n *= (size_t)T;
    return n * dtype_bytes(b->sigs[sig][cls]);
}

ssmc_status rt_cb_run_host(rt_cb *h, int sig, int64_t batch, int64_t T, void *const *ptrs)
{
    if (!h || !h->gpu) return SSMC_ERR_ARG;
    const rt_cb_bundle *b = h->b;
    pthread_mutex_lock(&h->lock);
    h->err[0] = 0;
    ssmc_status st = check_call(h, sig, batch, T);
    size_t *off = st == SSMC_OK ? calloc((size_t)b->ntensors + 1, sizeof *off) : NULL;
    CUdeviceptr *dp = st == SSMC_OK ? calloc((size_t)b->ntensors + 1, sizeof *dp) : NULL;
    if (st == SSMC_OK && (!off || !dp)) {
        set_error(h, "%s: out of memory", b->model);
        st = SSMC_ERR_NOMEM;
    }
    int states = 0, given = 0;
    size_t total = 0;
    for (int i = 0; st == SSMC_OK && i < b->ntensors; i++) {
        const rt_cb_tensor *t = &b->tensors[i];
        if (t->hidden) continue;
        if (t->role == SSMC_STATE) {
            states++;
            given += ptrs[i] != NULL;
        }
        if (!ptrs[i] && (t->role == SSMC_INPUT || t->role == SSMC_PARAM)) {
            set_error(h, "%s: %s '%s' is NULL", b->model, t->role == SSMC_INPUT ? "input" : "param", t->name);
            st = SSMC_ERR_ARG;
        }
        off[i] = total;
        size_t n = host_bytes(b, i, sig, batch, T);
        if (n > ((size_t)1 << 46)) {
            set_error(h, "%s: tensor '%s' would have too many elements", b->model, t->name);
            st = SSMC_ERR_ARG;
        }
        total += (n + ALIGN - 1) / ALIGN * ALIGN;
    }
    if (st == SSMC_OK && given && given != states) {
        set_error(h, "%s: give every state or none (%d of %d given)", b->model, given, states);
        st = SSMC_ERR_ARG;
    }
    size_t has_off = total; /* no state given: every sequence starts from the model's */
    total += ((size_t)batch + ALIGN - 1) / ALIGN * ALIGN;
    strbuf err = {0};
    if (st == SSMC_OK && total > h->buf_cap) {
        rt_cuda_free(h->gpu, h->buf, &err);
        h->buf = 0;
        h->buf_cap = 0;
        if ((st = rt_cuda_alloc(h->gpu, total, &h->buf, &err)) != SSMC_OK)
            cuda_failed(h, st, &err, "allocating device memory for the run");
        else
            h->buf_cap = total;
    }
    bool vec = true; /* every sub-buffer is aligned */
    for (int i = 0; st == SSMC_OK && i < b->ntensors; i++) {
        const rt_cb_tensor *t = &b->tensors[i];
        if (t->hidden) continue;
        dp[i] = h->buf + off[i];
        if (ptrs[i] && t->role != SSMC_OUTPUT &&
            (st = rt_cuda_htod(h->gpu, dp[i], ptrs[i], host_bytes(b, i, sig, batch, T), &err)) != SSMC_OK)
            cuda_failed(h, st, &err, "copying tensors to the GPU");
    }
    if (st == SSMC_OK && states && !given && (st = rt_cuda_memset(h->gpu, h->buf + has_off, 0, (size_t)batch, &err)))
        cuda_failed(h, st, &err, "clearing the has-state flags");
    CUfunction fn = NULL;
    CUdeviceptr ws = 0;
    if (st == SSMC_OK) st = kernel_for(h, sig, T == 1, vec, &fn);
    if (st == SSMC_OK && b->ws_floats) st = workspace(h, batch, &ws);
    if (st == SSMC_OK) st = launch(h, fn, batch, T, ws, 0, states && !given ? h->buf + has_off : 0, dp, NULL);
    if (st == SSMC_OK && (st = rt_cuda_sync(h->gpu, &err)) != SSMC_OK) cuda_failed(h, st, &err, "running the kernel");
    for (int i = 0; st == SSMC_OK && i < b->ntensors; i++) {
        const rt_cb_tensor *t = &b->tensors[i];
        if (!t->hidden && ptrs[i] && (t->role == SSMC_OUTPUT || t->role == SSMC_STATE) &&
            (st = rt_cuda_dtoh(h->gpu, ptrs[i], dp[i], host_bytes(b, i, sig, batch, T), &err)) != SSMC_OK)
            cuda_failed(h, st, &err, "copying results from the GPU");
    }
    sb_free(&err);
    pthread_mutex_unlock(&h->lock);
    free(off);
    free(dp);
    return st;
}
