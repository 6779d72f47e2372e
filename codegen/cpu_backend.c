/* cpu_backend.c: the CPU backend (codegen/backend.h): a model JIT-compiled by codegen/llvm.c,
 * run over a thread pool (runtime/pool.h) of options.threads workers (0: one
 * per core), each with a contiguous share of the kernel's work items (and
 * stealing from the others when done) and its own scratch, in pages of its own
 * (llvm.h: scratch_stride).
 *
 * The kernel computes in f32 on f32 tensors. f32 tensors are handed to it as
 * they are (states are updated in the caller's buffer); tensors of another
 * dtype go through an f32 copy: inputs, params and initial states converted
 * before the run, outputs and final states converted back after. So do f32
 * states and outputs that are not 64-byte aligned when several threads run:
 * items on different threads write neighbouring slices of them at every step,
 * and a cache line shared at a slice edge would bounce between the cores
 * (measured: gated DeltaNet at batch 1 on 2 threads, 8.1 ms with malloc'd
 * buffers, 6.3 ms with aligned ones). A state is copied only for runs of 16
 * steps or more: a decode step does too little work for the copy to pay. A
 * state not given starts from zeros and its final value is dropped; an output
 * not given is not computed. Everything a run allocates is freed before it
 * returns, so one compiled model may be run from several threads at once (runs
 * of one pool are serialised by the pool). */
#include "codegen/backend.h"

#ifdef SSMC_HAVE_LLVM

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codegen/chunked_run.h"
#include "codegen/cpu_chunk.h"
#include "codegen/llvm.h"
#include "runtime/pool.h"
#include "support/dtype.h"

typedef struct cpu_model {
    const ir_model *m; /* owned by the caller; outlives this state */
    llvm_jit *jit;
    llvm_kernel_fn *fn;
    llvm_kernel_shape shape;
    rt_pool *pool;
    chunked_state *chunked; /* a chunked plan: its parts (then jit is NULL) */
    void *ws;               /* the chunked runs' workspace */
    size_t ws_cap;
} cpu_model;

static void cpu_free(void *state)
{
    cpu_model *cm = state;
    if (!cm) return;
    chunked_free(cm->chunked);
    free(cm->ws);
    rt_pool_free(cm->pool);
    llvm_jit_free(cm->jit);
    free(cm);
}

/* ---- the chunked algorithm's hooks (codegen/chunked_run.h): host memory,
 * the cores of codegen/cpu_chunk.c over the model's pool ---- */

static void *host_workspace(void *ctx, size_t bytes, diag *d)
{
    cpu_model *cm = ctx;
    if (bytes > cm->ws_cap) {
        free(cm->ws);
        cm->ws_cap = 0;
        cm->ws = aligned_alloc(256, (bytes + 255) / 256 * 256);
        if (!cm->ws) {
            diag_error(d, "out of memory");
            return NULL;
        }
        cm->ws_cap = bytes;
    }
    return cm->ws;
}

static ssmc_status core_compile(void *ctx, const plan_chunk_core *c, const ssmc_options *o, diag *d, void **core)
{
    *core = (void *)c;
    return SSMC_OK;
}

typedef struct core_job {
    const plan_chunk_core *c;
    const chunk_core_io *io;
    int64_t B, T;
    char *scratch;
    size_t stride;
} core_job;

static void core_work(void *arg, int64_t begin, int64_t end, int worker)
{
    core_job *j = arg;
    cpu_chunk_run_items(j->c, j->io, j->B, j->T, begin, end, j->scratch + (size_t)worker * j->stride);
}

static ssmc_status core_run(void *ctx, void *core, int64_t batch, int64_t T, const chunk_core_io *io, void *stream,
                            diag *d)
{
    cpu_model *cm = ctx;
    const plan_chunk_core *c = core;
    size_t stride = (cpu_chunk_scratch_bytes(c) + 4095) / 4096 * 4096; /* pages of its own per worker */
    int workers = rt_pool_size(cm->pool);
    char *scratch = aligned_alloc(4096, stride * (size_t)workers);
    if (!scratch) {
        diag_error(d, "out of memory");
        return SSMC_ERR_NOMEM;
    }
    core_job j = {c, io, batch, T, scratch, stride};
    rt_pool_run(cm->pool, batch * c->nheads, core_work, &j);
    free(scratch);
    return SSMC_OK;
}

typedef struct core_bwd_job {
    const plan_chunk_core *c;
    const chunk_core_grad_io *io;
    int64_t B, T;
    char *scratch;
    size_t stride;
} core_bwd_job;

static void core_bwd_work(void *arg, int64_t begin, int64_t end, int worker)
{
    core_bwd_job *j = arg;
    cpu_chunk_backward_items(j->c, j->io, j->B, j->T, begin, end, j->scratch + (size_t)worker * j->stride);
}

static ssmc_status core_backward(void *ctx, void *core, int64_t batch, int64_t T, const chunk_core_grad_io *io,
                                 void *stream, diag *d)
{
    cpu_model *cm = ctx;
    const plan_chunk_core *c = core;
    size_t stride = (cpu_chunk_backward_scratch_bytes(c, T) + 4095) / 4096 * 4096;
    int workers = rt_pool_size(cm->pool);
    char *scratch = aligned_alloc(4096, stride * (size_t)workers);
    if (!scratch) {
        diag_error(d, "out of memory");
        return SSMC_ERR_NOMEM;
    }
    core_bwd_job j = {c, io, batch, T, scratch, stride};
    rt_pool_run(cm->pool, batch * c->nheads, core_bwd_work, &j);
    free(scratch);
    return SSMC_OK;
}

static void core_free(void *ctx, void *core) {}

extern const backend cpu_backend;
static ssmc_status host_zero(void *ctx, void *ptr, size_t bytes, void *stream, diag *d)
{
    memset(ptr, 0, bytes);
    return SSMC_OK;
}

static const chunk_hooks cpu_chunk_hooks = {
    .be = &cpu_backend,
    .workspace = host_workspace,
    .zero = host_zero,
    .core_compile = core_compile,
    .core_run = core_run,
    .core_free = core_free,
    .core_backward = core_backward,
};

static struct chunked_state *cpu_chunked(void *state) { return ((cpu_model *)state)->chunked; }

static plan_target cpu_target(const ssmc_options *o) { return plan_target_cpu(o->threads); }

static ssmc_status cpu_compile(const ir_model *m, const pass_plan *plan, const ssmc_options *o, diag *d, void **state)
{
    *state = NULL;
    cpu_model *cm = calloc(1, sizeof *cm);
    if (!cm) {
        diag_error(d, "out of memory");
        return SSMC_ERR_NOMEM;
    }
    cm->m = m;
    bool chunked = plan->algo == PLAN_ALGO_CHUNKED;
    ssmc_status s = chunked ? SSMC_OK : llvm_jit_compile(plan, d, &cm->jit, &cm->shape);
    if (s == SSMC_OK) {
        if (!chunked) cm->fn = llvm_jit_kernel(cm->jit);
        strbuf err = {0};
        cm->pool = rt_pool_new(o->threads, &err);
        if (!cm->pool) {
            diag_error(d, "%s", sb_cstr(&err));
            s = SSMC_ERR_BACKEND;
        }
        sb_free(&err);
    }
    if (s == SSMC_OK && chunked) s = chunked_compile(&cpu_chunk_hooks, cm, m, plan, o, d, &cm->chunked);
    if (s != SSMC_OK) {
        cpu_free(cm);
        return s;
    }
    *state = cm;
    return SSMC_OK;
}

static void to_f32(float *dst, const void *src, ssmc_dtype dt, size_t n)
{
    switch (dt) {
    case SSMC_F32: memcpy(dst, src, n * sizeof(float)); break;
    case SSMC_F16:
        for (size_t i = 0; i < n; i++) dst[i] = f16_to_f32(((const uint16_t *)src)[i]);
        break;
    case SSMC_BF16:
        for (size_t i = 0; i < n; i++) dst[i] = bf16_to_f32(((const uint16_t *)src)[i]);
        break;
    case SSMC_F64:
        for (size_t i = 0; i < n; i++) dst[i] = (float)((const double *)src)[i];
        break;
    }
}

static void from_f32(void *dst, const float *src, ssmc_dtype dt, size_t n)
{
    switch (dt) {
    case SSMC_F32: memcpy(dst, src, n * sizeof(float)); break;
    case SSMC_F16:
        for (size_t i = 0; i < n; i++) ((uint16_t *)dst)[i] = f32_to_f16(src[i]);
        break;
    case SSMC_BF16:
        for (size_t i = 0; i < n; i++) ((uint16_t *)dst)[i] = f32_to_bf16(src[i]);
        break;
    case SSMC_F64:
        for (size_t i = 0; i < n; i++) ((double *)dst)[i] = src[i];
        break;
    }
}

typedef struct cpu_job {
    llvm_kernel_fn *fn;
    llvm_kargs args;
    float *scratch;
    int64_t stride; /* floats of scratch per worker */
} cpu_job;

/* The kernel is JIT code: UBSan's check of an indirect call's target (clang's
 * -fsanitize=function) reads the 8 bytes before the function for a type
 * signature that JIT code does not have, and faults when the kernel starts a
 * mapping. */
#if defined(__clang__)
__attribute__((no_sanitize("function")))
#endif
static void cpu_work(void *arg, int64_t begin, int64_t end, int worker)
{
    cpu_job *j = arg;
    j->fn(&j->args, begin, end, j->scratch + (int64_t)worker * j->stride);
}

static ssmc_status cpu_run(void *state, int64_t batch, int64_t T, const backend_tensor *bt, diag *d)
{
    cpu_model *cm = state;
    if (cm->chunked) return chunked_run(cm->chunked, batch, T, bt, false, NULL, d);
    const ir_model *m = cm->m;
    uint32_t nt = m->ntensors;
    float **ptrs = calloc(nt ? nt : 1, sizeof *ptrs);
    unsigned char *fresh = calloc(nt ? nt : 1, 1); /* a state given no initial value */
    bool *owned = calloc(nt ? nt : 1, sizeof *owned);
    size_t *count = calloc(nt ? nt : 1, sizeof *count);
    ssmc_status s = ptrs && fresh && owned && count ? SSMC_OK : SSMC_ERR_NOMEM;
    int workers = cm->pool ? rt_pool_size(cm->pool) : 1;
    bool shared = workers > 1; /* item edges on different threads: see the top */
    for (uint32_t i = 0; s == SSMC_OK && i < nt; i++) {
        const ir_tensor *t = &m->tensors[i];
        if (t->kind == IR_LET) continue;
        /* ssmc_run has checked that these products do not overflow */
        size_t n = (size_t)ir_tensor_elems(m, t);
        if (t->kind != IR_PARAM) n *= (size_t)batch;
        if (t->per_step) n *= (size_t)T;
        count[i] = n;
        fresh[i] = t->kind == IR_STATE && (!bt[i].data || bt[i].fresh);
        bool misaligned = ((uintptr_t)bt[i].data & 63) != 0;
        bool copy = misaligned && shared && ((t->kind == IR_STATE && T >= 16) || t->kind == IR_OUTPUT);
        if (bt[i].data && bt[i].dtype == SSMC_F32 && !copy) {
            ptrs[i] = bt[i].data;
            /* final only: the kernel starts from the init, or from zeros put here */
            if (bt[i].fresh && !ir_find_init(m, (int)i)) memset(ptrs[i], 0, n * sizeof(float));
            continue;
        }
        if (!bt[i].data && t->kind == IR_OUTPUT) continue;
        size_t bytes = ((n ? n : 1) * sizeof(float) + 63) / 64 * 64;
        ptrs[i] = aligned_alloc(64, bytes);
        if (!ptrs[i]) {
            s = SSMC_ERR_NOMEM;
            break;
        }
        owned[i] = true;
        if (bt[i].data && t->kind != IR_OUTPUT && !bt[i].fresh)
            to_f32(ptrs[i], bt[i].data, bt[i].dtype, n);
        else if (t->kind == IR_STATE)
            memset(ptrs[i], 0, n * sizeof(float));
    }
    int64_t stride = cm->shape.scratch_stride; /* whole pages per worker (llvm.h) */
    float *scratch = NULL;
    if (s == SSMC_OK) {
        scratch = aligned_alloc(SCRATCH_PAGE_FLOATS * sizeof(float), (size_t)stride * sizeof(float) * (size_t)workers);
        if (!scratch) s = SSMC_ERR_NOMEM;
    }
    if (s == SSMC_OK) {
        cpu_job job = {cm->fn, {T, ptrs, fresh}, scratch, stride};
        rt_pool_run(cm->pool, batch * cm->shape.items_per_seq, cpu_work, &job);
        for (uint32_t i = 0; i < nt; i++) {
            const ir_tensor *t = &m->tensors[i];
            if (owned[i] && bt[i].data && (t->kind == IR_OUTPUT || t->kind == IR_STATE))
                from_f32(bt[i].data, ptrs[i], bt[i].dtype, count[i]);
        }
    }
    if (s == SSMC_ERR_NOMEM) diag_error(d, "out of memory");
    for (uint32_t i = 0; owned && i < nt; i++)
        if (owned[i]) free(ptrs[i]);
    free(scratch);
    free(ptrs);
    free(fresh);
    free(owned);
    free(count);
    return s;
}

/* ---- decoding against state pools (backend.h: decode) ----
 * One pool run over the items of every sequence that is not a padding slot,
 * each sequence with tensor pointers of its own: its slices of the inputs and
 * outputs, its row of every state's pool. The kernel then runs a batch of one
 * per sequence, and needs nothing it does not already have. f32 pools are used
 * in place; a pool of another dtype has its rows gathered into an f32 copy and
 * scattered back. A sequence without a state starts from zeros (its row in
 * the f32 view cleared) or, with init statements, from them (the fresh flag). */

typedef struct dec_job {
    llvm_kernel_fn *fn;
    const llvm_kargs *seq;   /* [batch] */
    const int32_t *index;
    int64_t ips;             /* items per sequence */
    float *scratch;
    int64_t stride;
} dec_job;

static void dec_work(void *arg, int64_t begin, int64_t end, int worker)
{
    dec_job *j = arg;
    while (begin < end) {
        int64_t b = begin / j->ips, lo = begin % j->ips, hi = j->ips;
        if (hi - lo > end - begin) hi = lo + (end - begin);
        if (j->index[b] >= 0) j->fn(&j->seq[b], lo, hi, j->scratch + (int64_t)worker * j->stride);
        begin += hi - lo;
    }
}

static ssmc_status cpu_decode(void *state, int64_t batch, int64_t T, const backend_tensor *bt, const ssmc_rows *rows,
                              bool device, void *stream, diag *d)
{
    cpu_model *cm = state;
    const ir_model *m = cm->m;
    if (cm->chunked) {
        diag_error(d, "cpu: a decode runs the recurrent algorithm (leave --algo out)");
        return SSMC_ERR_UNSUPPORTED;
    }
    uint32_t nt = m->ntensors ? m->ntensors : 1;
    float **view = calloc(nt, sizeof *view);         /* f32: each tensor, or its copy */
    bool *owned = calloc(nt, sizeof *owned);
    float **seqp = calloc((size_t)batch * nt, sizeof *seqp);
    unsigned char *fresh = calloc((size_t)batch * nt, 1);
    llvm_kargs *seq = calloc((size_t)batch, sizeof *seq);
    ssmc_status s = view && owned && seqp && fresh && seq ? SSMC_OK : SSMC_ERR_NOMEM;
    int64_t *elems = s == SSMC_OK ? calloc(nt, sizeof *elems) : NULL;
    if (!elems) s = SSMC_ERR_NOMEM;
    for (uint32_t i = 0; s == SSMC_OK && i < m->ntensors; i++) {
        const ir_tensor *t = &m->tensors[i];
        if (t->kind == IR_LET) continue;
        elems[i] = ir_tensor_elems(m, t) * (t->per_step ? T : 1);
        if (t->kind == IR_STATE && t->hidden) { /* passes/lag.c's: zeros of its own */
            view[i] = calloc((size_t)(batch * elems[i]) + 1, sizeof(float));
            owned[i] = true;
            if (!view[i]) s = SSMC_ERR_NOMEM;
            continue;
        }
        if (!bt[i].data) continue;
        bool pool = t->kind == IR_STATE;
        size_t n = (size_t)elems[i] * (t->kind == IR_PARAM ? 1 : (size_t)batch);
        if (bt[i].dtype == SSMC_F32) {
            view[i] = bt[i].data;
            continue;
        }
        view[i] = aligned_alloc(64, ((n ? n : 1) * sizeof(float) + 63) / 64 * 64);
        owned[i] = true;
        if (!view[i]) {
            s = SSMC_ERR_NOMEM;
            break;
        }
        if (t->kind == IR_INPUT || t->kind == IR_PARAM) to_f32(view[i], bt[i].data, bt[i].dtype, n);
        for (int64_t b = 0; pool && b < batch; b++) /* row b of the copy: sequence b's */
            if (rows->index[b] >= 0)
                to_f32(view[i] + b * elems[i],
                       (const char *)bt[i].data + (size_t)rows->index[b] * (size_t)elems[i] * dtype_size(bt[i].dtype),
                       bt[i].dtype, (size_t)elems[i]);
    }
    for (int64_t b = 0; s == SSMC_OK && b < batch; b++) {
        bool start = rows->has_state && !rows->has_state[b];
        for (uint32_t i = 0; i < m->ntensors; i++) {
            const ir_tensor *t = &m->tensors[i];
            if (!view[i]) continue;
            int64_t at = t->kind == IR_PARAM ? 0 : b;
            if (t->kind == IR_STATE && !owned[i]) at = rows->index[b] < 0 ? 0 : rows->index[b];
            float *p = view[i] + at * elems[i];
            seqp[b * nt + i] = p;
            if (t->kind == IR_STATE && (t->hidden || start)) {
                fresh[b * nt + i] = 1;
                if (rows->index[b] >= 0) memset(p, 0, (size_t)elems[i] * sizeof(float));
            }
        }
        seq[b] = (llvm_kargs){T, seqp + b * nt, fresh + b * nt};
    }
    int workers = cm->pool ? rt_pool_size(cm->pool) : 1;
    int64_t stride = cm->shape.scratch_stride;
    float *scratch = NULL;
    if (s == SSMC_OK) {
        scratch = aligned_alloc(SCRATCH_PAGE_FLOATS * sizeof(float), (size_t)stride * sizeof(float) * (size_t)workers);
        if (!scratch) s = SSMC_ERR_NOMEM;
    }
    if (s == SSMC_OK) {
        dec_job job = {cm->fn, seq, rows->index, cm->shape.items_per_seq, scratch, stride};
        rt_pool_run(cm->pool, batch * cm->shape.items_per_seq, dec_work, &job);
        for (uint32_t i = 0; i < m->ntensors; i++) {
            const ir_tensor *t = &m->tensors[i];
            if (!owned[i] || !bt[i].data || (t->kind != IR_OUTPUT && t->kind != IR_STATE)) continue;
            size_t es = dtype_size(bt[i].dtype);
            for (int64_t b = 0; b < batch; b++) {
                if (rows->index[b] < 0) continue;
                int64_t at = t->kind == IR_STATE ? rows->index[b] : b;
                from_f32((char *)bt[i].data + (size_t)at * (size_t)elems[i] * es, view[i] + b * elems[i],
                         bt[i].dtype, (size_t)elems[i]);
            }
        }
    }
    if (s == SSMC_ERR_NOMEM) diag_error(d, "out of memory");
    for (uint32_t i = 0; owned && view && i < m->ntensors; i++)
        if (owned[i]) free(view[i]);
    free(scratch);
    free(view);
    free(owned);
    free(seqp);
    free(fresh);
    free(seq);
    free(elems);
    return s;
}

static ssmc_status cpu_emit(const pass_plan *plan, const ssmc_options *o, ssmc_emit_kind kind, strbuf *out, diag *d)
{
    if (kind != SSMC_EMIT_LLVM) {
        diag_error(d, "the cpu backend emits llvm only");
        return SSMC_ERR_UNSUPPORTED;
    }
    if (plan->algo != PLAN_ALGO_CHUNKED) return llvm_emit_text(plan, out, d);
    /* the chunked algorithm: the prologue's and the epilogue's modules (the
     * cores are codegen/cpu_chunk.c, compiled with the library) */
    sb_puts(out, "; ssmc: chunked algorithm: the prologue's module, then the epilogue's\n");
    ssmc_status s = llvm_emit_text(plan->chunked->prologue, out, d);
    if (s == SSMC_OK) s = llvm_emit_text(plan->chunked->epilogue, out, d);
    return s;
}

const backend cpu_backend = {
    .name = "cpu", .target = cpu_target, .compile = cpu_compile, .run = cpu_run, .emit = cpu_emit, .free = cpu_free,
    .reverse = true, /* codegen/llvm.c runs a reverse model's steps from T-1 down */
    .decode = cpu_decode,
    .chunked = cpu_chunked,
};

#else

/* Without LLVM this file defines nothing: backend_for(SSMC_DEVICE_CPU) is NULL. */
typedef int cpu_backend_needs_llvm;

#endif
