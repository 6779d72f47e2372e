/* grad.c (driver): the gradient API of include/ssmc.h (training forward,
 * backward, tape), backend-neutral: it runs ordinary models, the training
 * forward and the adjoint of passes/grad.c, through the device backend's
 * `run`, a chunk of C steps at a time (docs/gradients.md).
 *
 * Training forward: chunk k (steps [kC, kC + C)) starts from the states the
 * chunk before left, which are copied into checkpoint k first. Backward: for
 * k from the last chunk down, the training forward reruns chunk k from
 * checkpoint k with its trace outputs S__prev = S(t-1) on, then the adjoint
 * runs the chunk in reverse from the adjoint states the chunk after left.
 * Params' adjoints are states of the adjoint, one per sequence, summed over
 * the batch at the end. Every value that crosses a chunk boundary is a state
 * (pass_unlag made reads at t - k into history states), so each chunk's run
 * reads its per-step tensors at its own steps only: a run on a batch of one
 * sequence takes them in place; with more, the chunk's slices are copied to
 * and from [B, C, ...] buffers. The driver's own buffers (checkpoints,
 * trace, adjoint states) are f64 for the interpreter and f32 elsewhere.
 *
 * The device entry points (ssmc_forward_train_device, ssmc_backward_device)
 * run the same code with the driver's buffers on the backend's device
 * (backend.mem, through driver/gmem.h): the tape's checkpoints, the trace,
 * the adjoint states and the chunks' slices are device memory, every copy and
 * conversion is enqueued on the caller's stream, the runs are the backend's
 * run_device; nothing per step goes through the host. Each call waits for its
 * stream before it frees its working buffers. A model compiled with the
 * chunked algorithm goes to driver/grad_chunked.c, on the host or the device
 * alike. A tape serves the backward of the memory it was made on only
 * (tape_check). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bundle.h"
#include "gmem.h"
#include "grad.h"
#include "pipeline.h"
#include "passes/passes.h"
#include "support/dtype.h"

struct grad_state {
    pass_grad pg;
    const backend *be;
    void *fwd, *adj; /* the backend's compiled training forward and adjoint */
    void *ifwd, *iadj; /* ... and those of the init statements (pg.init) */
    ssmc_dtype wd;   /* the driver's own buffers */
};

struct ssmc_tape {
    const ssmc_model *model;
    int64_t batch, T, C, nck;
    ssmc_dtype wd;
    int ntensors;  /* of the training forward */
    void **ckpt;   /* per training-forward state: [nck][batch][elems] */
    bool *from_init; /* per state: its initial value came from its init statement */
    size_t bytes;
    gmem mem;      /* where the checkpoints are (the host, or the device) */
    grad_ctape *chunked; /* a chunked model's tape (driver/grad_chunked.c); then the fields above are unused */
    varlen_tape *varlen; /* packed sequences' tapes (driver/varlen.c); then the fields above are unused */
};

void grad_state_free(grad_state *g)
{
    if (!g) return;
    if (g->be && g->fwd) g->be->free(g->fwd);
    if (g->be && g->adj) g->be->free(g->adj);
    if (g->be && g->ifwd) g->be->free(g->ifwd);
    if (g->be && g->iadj) g->be->free(g->iadj);
    free(g);
}

size_t ssmc_tape_bytes(const ssmc_tape *t) { return t ? t->bytes : 0; }

/* The checkpoint interval for T steps: C = ceil(sqrt(T)) minimises the
 * ceil(T/C) checkpoints plus the C steps of trace the backward holds. */
static int64_t chunk_for(const ssmc_options *o, int64_t T)
{
    if (o->grad_chunk > 0) return o->grad_chunk < T ? o->grad_chunk : T;
    int64_t c = (int64_t)ceil(sqrt((double)T));
    while (c > 1 && (c - 1) * (c - 1) >= T) c--;
    while (c * c < T) c++;
    return c < 1 ? 1 : c;
}

/* Compiles a model the gradients pass made for the device: through the rest
 * of the pipeline to its plan where the backend renders one. The training
 * forward and the adjoint are ordinary models run by the recurrent algorithm,
 * whatever the model's own (a chunked model's backward is grad_chunked.c's). */
ssmc_status grad_compile(const backend *be, ir_model *model, const ssmc_options *o, arena *a, diag *d, void **state)
{
    if (!be->target) return be->compile(model, NULL, o, d, state); /* nothing to plan */
    plan_target tg = be->target(o);
    ssmc_options ro = *o;
    ro.algo = SSMC_ALGO_RECURRENT;
    pipeline pl = {.a = a, .d = d, .o = &ro, .target = &tg};
    ssmc_status s = pipeline_run_ir(&pl, model, PIPE_PLAN);
    return s == SSMC_OK ? be->compile(model, pl.plan, &ro, d, state) : s;
}

static ssmc_status compile(grad_state *g, ir_model *model, const ssmc_options *o, arena *a, diag *d, void **state)
{
    return grad_compile(g->be, model, o, a, d, state);
}

static ssmc_status prepare(ssmc_model *m, grad_state **out)
{
    grad_state **slot = api_model_grad(m);
    diag *d = api_model_diag(m);
    *out = *slot;
    if (*slot) return SSMC_OK;
    const backend *be = api_model_backend(m);
    if (!be->reverse) {
        diag_error(d, "gradients need a backend that runs reverse models; the %s backend does not yet "
                      "(use the interp or cpu device)", be->name);
        return SSMC_ERR_UNSUPPORTED;
    }
    grad_state *g = calloc(1, sizeof *g);
    if (!g) {
        diag_error(d, "out of memory");
        return SSMC_ERR_NOMEM;
    }
    g->be = be;
    g->wd = api_model_options(m)->device == SSMC_DEVICE_INTERP ? SSMC_F64 : SSMC_F32;
    arena *a = api_model_arena(m);
    if (!pass_grad_build(a, api_model_ir(m), &g->pg, d)) {
        free(g);
        return a->failed ? SSMC_ERR_NOMEM : SSMC_ERR_UNSUPPORTED;
    }
    ssmc_status s = compile(g, g->pg.forward, api_model_options(m), a, d, &g->fwd);
    if (s == SSMC_OK) s = compile(g, g->pg.adjoint, api_model_options(m), a, d, &g->adj);
    if (s == SSMC_OK && g->pg.init) s = compile(g, g->pg.init->forward, api_model_options(m), a, d, &g->ifwd);
    if (s == SSMC_OK && g->pg.init) s = compile(g, g->pg.init->adjoint, api_model_options(m), a, d, &g->iadj);
    if (s != SSMC_OK) {
        grad_state_free(g);
        return s;
    }
    *slot = *out = g;
    return SSMC_OK;
}

static size_t elems_of(const ir_model *m, int t) { return (size_t)ir_tensor_elems(m, &m->tensors[t]); }

/* ---- arguments ---- */

enum { K_INPUT = 1 << IR_INPUT, K_PARAM = 1 << IR_PARAM, K_STATE = 1 << IR_STATE, K_OUTPUT = 1 << IR_OUTPUT };

/* Fills bt[ir tensor id] from args: tensors of the kinds in `kinds` only;
 * `run`: the arguments of a run, where a state may be SSMC_ARG_FINAL_ONLY. */
static ssmc_status resolve(const ir_model *ir, const ssmc_arg *args, int nargs, unsigned kinds, bool run,
                           const char *what, backend_tensor *bt, diag *d)
{
    if (nargs < 0 || (nargs > 0 && !args)) {
        diag_error(d, "%s: %d tensors announced but %s", what, nargs, nargs < 0 ? "a count is never negative" : "no array given");
        return SSMC_ERR_ARG;
    }
    for (int i = 0; i < nargs; i++) {
        int k = args[i].name ? ir_find_tensor(ir, args[i].name) : -1;
        if (k < 0 || ir->tensors[k].hidden || !(kinds & (1u << ir->tensors[k].kind))) {
            diag_error(d, "%s: model '%s' has no %s named '%s'", what, ir->name,
                       kinds == (K_INPUT | K_PARAM)             ? "input or param"
                       : kinds == (K_OUTPUT | K_STATE)          ? "output or state"
                       : kinds == (K_INPUT | K_PARAM | K_STATE) ? "input, param or state"
                                                                 : "input, param, state or output",
                       args[i].name ? args[i].name : "(null)");
            return SSMC_ERR_ARG;
        }
        if (bt[k].data) {
            diag_error(d, "%s: tensor '%s' is given twice", what, args[i].name);
            return SSMC_ERR_ARG;
        }
        if (!args[i].data) {
            diag_error(d, "%s: tensor '%s' has no data", what, args[i].name);
            return SSMC_ERR_ARG;
        }
        if ((unsigned)args[i].dtype > SSMC_F64) {
            diag_error(d, "%s: tensor '%s' has an unknown dtype", what, args[i].name);
            return SSMC_ERR_ARG;
        }
        if (args[i].flags && !(run && args[i].flags == SSMC_ARG_FINAL_ONLY && ir->tensors[k].kind == IR_STATE)) {
            diag_error(d, "%s: tensor '%s': flags 0x%x are not taken here (SSMC_ARG_FINAL_ONLY is for the states of a run)",
                       what, args[i].name, args[i].flags);
            return SSMC_ERR_ARG;
        }
        bt[k] = (backend_tensor){args[i].data, args[i].dtype, args[i].flags == SSMC_ARG_FINAL_ONLY};
    }
    return SSMC_OK;
}

static ssmc_status check_sizes(const ir_model *ir, int64_t batch, int64_t T, diag *d)
{
    if (batch < 1 || T < 1) {
        diag_error(d, "batch and T must be at least 1 (got batch %lld, T %lld)", (long long)batch, (long long)T);
        return SSMC_ERR_ARG;
    }
    for (uint32_t i = 0; i < ir->ntensors; i++) {
        size_t n = elems_of(ir, (int)i);
        if (mul_overflows(n, (size_t)batch, &n) || mul_overflows(n, (size_t)T, &n) || n > ((size_t)1 << 46)) {
            diag_error(d, "%s '%s' would have too many elements for batch %lld, T %lld",
                       ir_kind_names[ir->tensors[i].kind], ir->tensors[i].name, (long long)batch, (long long)T);
            return SSMC_ERR_ARG;
        }
    }
    return SSMC_OK;
}

static ssmc_status require(const ir_model *ir, const backend_tensor *bt, diag *d)
{
    for (uint32_t i = 0; i < ir->ntensors; i++) {
        const ir_tensor *t = &ir->tensors[i];
        if ((t->kind == IR_INPUT || t->kind == IR_PARAM) && !bt[i].data) {
            diag_error(d, "missing %s '%s'", ir_kind_names[t->kind], t->name);
            return SSMC_ERR_ARG;
        }
    }
    return SSMC_OK;
}

/* ---- buffers ---- */

/* Where the driver's buffers live (driver/gmem.h): the host, or for the
 * device entry points the backend's device, every move on `stream`. */
static gmem gmem_of(const grad_state *g, bool device, void *stream, diag *d)
{
    return (gmem){g->be, device ? g->be->mem : NULL, g->fwd, stream, d};
}

void ssmc_tape_free(ssmc_tape *t)
{
    if (!t) return;
    grad_ctape_free(t->chunked);
    varlen_tape_free(t->varlen);
    if (t->mem.dev) t->mem.dev->sync(t->mem.ctx, NULL, t->mem.d); /* the whole device: work may still read them */
    for (int i = 0; t->ckpt && i < t->ntensors; i++) gmem_free(&t->mem, t->ckpt[i]);
    free(t->ckpt);
    free(t->from_init);
    free(t);
}

/* Bytes of one copy of every state of the training forward, per sequence,
 * in the driver's dtype. */
static size_t state_bytes(const grad_state *g)
{
    const ir_model *f = g->pg.forward;
    size_t n = 0;
    for (uint32_t i = 0; i < f->ntensors; i++)
        if (f->tensors[i].kind == IR_STATE) n += elems_of(f, (int)i) * dtype_size(g->wd);
    return n;
}

ssmc_status ssmc_grad_info_of(ssmc_model *m, int64_t T, ssmc_grad_info *info)
{
    if (!m) return SSMC_ERR_ARG;
    diag *d = api_model_diag(m);
    diag_reset(d);
    if (!info || T < 1) {
        diag_error(d, "ssmc_grad_info_of needs T >= 1 and somewhere to write");
        return SSMC_ERR_ARG;
    }
    if (grad_chunked_applies(m)) return grad_chunked_info(m, T, info);
    grad_state *g;
    ssmc_status s = prepare(m, &g);
    if (s != SSMC_OK) return s;
    memset(info, 0, sizeof *info);
    info->chunk = chunk_for(api_model_options(m), T);
    info->checkpoints = (T + info->chunk - 1) / info->chunk;
    info->state_bytes = state_bytes(g);
    info->tape_bytes = (size_t)info->checkpoints * info->state_bytes;
    /* the trace of the states the adjoint reads, a state copy to recompute from,
     * the adjoint states (states and params), and the per-step chunk copies */
    const ir_model *f = g->pg.forward;
    size_t ws = dtype_size(g->wd), trace = 0, params = 0, steps = 0;
    for (uint32_t i = 0; i < f->ntensors; i++) {
        const ir_tensor *t = &f->tensors[i];
        if (t->kind == IR_STATE && g->pg.trace[i] >= 0) trace += elems_of(f, (int)i) * ws;
        if (t->kind == IR_PARAM) params += elems_of(f, (int)i) * ws;
        if (t->kind == IR_INPUT || (t->kind == IR_OUTPUT && (int)i < g->pg.nfwd))
            steps += elems_of(f, (int)i) * ws * (t->kind == IR_INPUT ? 2 : 1); /* an input and its gradient */
    }
    info->backward_bytes = (size_t)info->chunk * (trace + steps) + 2 * info->state_bytes + params;
    return SSMC_OK;
}

/* ---- init statements ---- */

/* The initial value of every state marked in from_init, into cur[state] (one
 * step of the init model, whose outputs [B, 1, ...] are laid out as states). */
static ssmc_status init_states(grad_state *g, const gmem *gm, int64_t B, const backend_tensor *bt, void **cur,
                               const bool *from_init)
{
    const pass_grad *pg = &g->pg;
    if (!pg->init) return SSMC_OK;
    const ir_model *f = pg->forward, *im = pg->init->forward;
    backend_tensor *ib = calloc(im->ntensors ? im->ntensors : 1, sizeof *ib);
    if (!ib) return SSMC_ERR_NOMEM;
    bool any = false;
    for (uint32_t i = 0; i < f->ntensors; i++) {
        int k = pg->init_id[i];
        if (k < 0) continue;
        if (f->tensors[i].kind == IR_PARAM) ib[k] = bt[i];
        if (f->tensors[i].kind == IR_STATE && from_init[i]) {
            ib[k] = (backend_tensor){cur[i], g->wd, false};
            any = true;
        }
    }
    ssmc_status s = any ? gmem_run(gm, g->ifwd, B, 1, ib) : SSMC_OK;
    free(ib);
    return s;
}

/* What the gradients of the initial states in from_init pass on to the
 * params through the init statements, added into the params' adjoint states
 * adj[param] (one step of the init model's adjoint). */
static ssmc_status init_backward(grad_state *g, const gmem *gm, int64_t B, const backend_tensor *bt, void **adj,
                                 const bool *from_init)
{
    const pass_grad *pg = &g->pg, *ip = pg->init;
    if (!ip) return SSMC_OK;
    const ir_model *f = pg->forward, *ia = ip->adjoint;
    backend_tensor *ib = calloc(ia->ntensors ? ia->ntensors : 1, sizeof *ib);
    void *zeros = NULL;
    size_t zmax = 0;
    for (uint32_t i = 0; i < f->ntensors; i++)
        if (pg->init_id[i] >= 0 && f->tensors[i].kind == IR_STATE && (size_t)ir_tensor_elems(f, &f->tensors[i]) > zmax)
            zmax = (size_t)ir_tensor_elems(f, &f->tensors[i]);
    if (!ib || !(zeros = gmem_calloc(gm, (size_t)B * zmax * dtype_size(g->wd)))) {
        free(ib);
        return SSMC_ERR_NOMEM;
    }
    bool any = false;
    for (uint32_t i = 0; i < f->ntensors; i++) {
        int k = pg->init_id[i];
        if (k < 0) continue;
        int v = ip->adj_value[k], a = ip->adj_grad[k];
        if (f->tensors[i].kind == IR_PARAM) {
            if (v >= 0) ib[v] = bt[i];
            if (a >= 0) ib[a] = (backend_tensor){adj[i], g->wd, false};
        } else if (a >= 0) {
            ib[a] = (backend_tensor){from_init[i] ? adj[i] : zeros, g->wd, false};
            any |= from_init[i];
        }
    }
    ssmc_status s = any ? gmem_run(gm, g->iadj, B, 1, ib) : SSMC_OK;
    if (s == SSMC_OK) s = gmem_sync(gm); /* before zeros goes */
    free(ib);
    gmem_free(gm, zeros);
    return s;
}

/* ---- the training forward ---- */

/* Gradients on device pointers need a backend with device memory. */
static ssmc_status device_check(ssmc_model *m, const char *fn)
{
    const backend *be = api_model_backend(m);
    if (be->run_device && be->mem) return SSMC_OK;
    diag_error(api_model_diag(m), "%s takes device pointers: it needs a model compiled for the cuda device (the %s "
                                  "device runs on host tensors: use %s)",
               fn, be->name, strstr(fn, "forward") ? "ssmc_forward_train" : "ssmc_backward");
    return SSMC_ERR_UNSUPPORTED;
}

static ssmc_status forward_train(ssmc_model *m, int64_t B, int64_t T, const ssmc_arg *args, int nargs,
                                 ssmc_tape **tape, bool device, void *stream)
{
    const char *fn = device ? "ssmc_forward_train_device" : "ssmc_forward_train";
    diag *d = api_model_diag(m);
    diag_reset(d);
    if (!tape) {
        diag_error(d, "%s needs somewhere to put the tape", fn);
        return SSMC_ERR_ARG;
    }
    *tape = NULL;
    const ir_model *ir = api_model_ir(m);
    ssmc_status s = device ? device_check(m, fn) : SSMC_OK;
    if (s == SSMC_OK) s = check_sizes(ir, B, T, d);
    grad_state *g = NULL;
    if (s == SSMC_OK) s = prepare(m, &g);
    if (s != SSMC_OK) return s;
    gmem gm = gmem_of(g, device, stream, d);
    const ir_model *f = g->pg.forward;
    size_t nf = f->ntensors, ws = dtype_size(g->wd);
    backend_tensor *bt = calloc(nf, sizeof *bt), *rb = calloc(nf, sizeof *rb);
    gmem_slice *sl = calloc(nf, sizeof *sl);
    void **cur = calloc(nf, sizeof *cur);
    ssmc_tape *tp = calloc(1, sizeof *tp);
    if (!bt || !rb || !sl || !cur || !tp || !(tp->ckpt = calloc(nf, sizeof *tp->ckpt)) ||
        !(tp->from_init = calloc(nf, sizeof *tp->from_init))) {
        s = SSMC_ERR_NOMEM;
        goto done;
    }
    tp->mem = gm;
    tp->mem.stream = NULL;
    s = resolve(ir, args, nargs, K_INPUT | K_PARAM | K_STATE | K_OUTPUT, true, fn, bt, d);
    if (s == SSMC_OK) s = require(ir, bt, d);
    if (s != SSMC_OK) goto done;
    tp->model = m;
    tp->batch = B;
    tp->T = T;
    tp->C = chunk_for(api_model_options(m), T);
    tp->nck = (T + tp->C - 1) / tp->C;
    tp->wd = g->wd;
    tp->ntensors = (int)nf;
    for (size_t i = 0; i < nf && s == SSMC_OK; i++) {
        const ir_tensor *t = &f->tensors[i];
        size_t n = elems_of(f, (int)i);
        if (t->kind == IR_STATE) {
            size_t bytes = (size_t)B * n * ws;
            if (!(cur[i] = gmem_calloc(&gm, bytes)) || !(tp->ckpt[i] = gmem_alloc(&gm, (size_t)tp->nck * bytes))) {
                s = SSMC_ERR_NOMEM;
                goto done;
            }
            tp->bytes += (size_t)tp->nck * bytes;
            /* a final-only state starts as one not given: from its init, or zero */
            if ((int)i < g->pg.nfwd && bt[i].data && !bt[i].fresh)
                s = gmem_convert(&gm, cur[i], g->wd, bt[i].data, bt[i].dtype, (size_t)B * n);
            else tp->from_init[i] = g->pg.init_id[i] >= 0;
        } else if (t->per_step && (int)i < g->pg.nfwd && !gmem_slice_init(&gm, &sl[i], &bt[i], n, B, T, tp->C)) {
            s = SSMC_ERR_NOMEM;
            goto done;
        }
    }
    if (s == SSMC_OK) s = init_states(g, &gm, B, bt, cur, tp->from_init);
    for (int64_t k = 0; k < tp->nck && s == SSMC_OK; k++) {
        int64_t t0 = k * tp->C, n = T - t0 < tp->C ? T - t0 : tp->C;
        for (size_t i = 0; i < nf && s == SSMC_OK; i++) {
            const ir_tensor *t = &f->tensors[i];
            rb[i] = (backend_tensor){NULL, g->wd, false};
            if (t->kind == IR_STATE) {
                size_t bytes = (size_t)B * elems_of(f, (int)i) * ws;
                s = gmem_copy(&gm, (char *)tp->ckpt[i] + (size_t)k * bytes, cur[i], bytes);
                rb[i].data = cur[i];
            } else if (t->kind == IR_PARAM) {
                rb[i] = bt[i];
            } else if ((int)i < g->pg.nfwd && bt[i].data) {
                rb[i].dtype = bt[i].dtype;
                s = gmem_slice_at(&gm, &sl[i], B, T, t0, n, t->kind == IR_INPUT, &rb[i].data);
            }
        }
        if (s == SSMC_OK) s = gmem_run(&gm, g->fwd, B, n, rb);
        for (size_t i = 0; s == SSMC_OK && i < nf; i++)
            if (f->tensors[i].kind == IR_OUTPUT && sl[i].base) s = gmem_slice_back(&gm, &sl[i], B, T, t0, n);
    }
    for (size_t i = 0; s == SSMC_OK && (int)i < g->pg.nfwd; i++)
        if (f->tensors[i].kind == IR_STATE && bt[i].data)
            s = gmem_convert(&gm, bt[i].data, bt[i].dtype, cur[i], g->wd, (size_t)B * elems_of(f, (int)i));
done:
    if (s == SSMC_ERR_NOMEM && d->nerrors == 0) diag_error(d, "out of memory");
    if (g) {
        ssmc_status ss = gmem_sync(&gm); /* the temporaries below are in use until then */
        if (s == SSMC_OK) s = ss;
    }
    for (size_t i = 0; g && i < nf; i++) {
        if (cur) gmem_free(&gm, cur[i]);
        if (sl) gmem_free(&gm, sl[i].scratch);
    }
    free(cur);
    free(sl);
    free(bt);
    free(rb);
    if (s == SSMC_OK)
        *tape = tp;
    else
        ssmc_tape_free(tp);
    return s;
}

/* ---- the backward ---- */

static ssmc_status backward(ssmc_model *m, const ssmc_tape *tp, const ssmc_arg *args, int nargs,
                            const ssmc_arg *douts, int ndouts, const ssmc_arg *grads, int ngrads, bool device,
                            void *stream)
{
    const char *fn = device ? "ssmc_backward_device" : "ssmc_backward";
    diag *d = api_model_diag(m);
    grad_state *g;
    ssmc_status s = prepare(m, &g);
    if (s != SSMC_OK) return s;
    gmem gm = gmem_of(g, device, stream, d);
    const ir_model *ir = api_model_ir(m), *f = g->pg.forward, *A = g->pg.adjoint;
    const pass_grad *pg = &g->pg;
    int64_t B = tp->batch, T = tp->T, C = tp->C;
    size_t nf = f->ntensors, na = A->ntensors, ws = dtype_size(g->wd);
    backend_tensor *bt = calloc(nf, sizeof *bt), *cot = calloc(nf, sizeof *cot), *gr = calloc(nf, sizeof *gr);
    backend_tensor *rb = calloc(nf, sizeof *rb), *ab = calloc(na, sizeof *ab);
    gmem_slice *in = calloc(nf, sizeof *in), *dy = calloc(nf, sizeof *dy), *dx = calloc(nf, sizeof *dx);
    void **rec = calloc(nf, sizeof *rec), **trace = calloc(nf, sizeof *trace), **adj = calloc(nf, sizeof *adj);
    void *zeros = NULL;
    if (!bt || !cot || !gr || !rb || !ab || !in || !dy || !dx || !rec || !trace || !adj) {
        s = SSMC_ERR_NOMEM;
        goto done;
    }
    s = grad_backward_args(ir, args, nargs, douts, ndouts, grads, ngrads, fn, bt, cot, gr, d);
    if (s != SSMC_OK) goto done;

    size_t zmax = 0;
    for (size_t i = 0; i < nf && s == SSMC_OK; i++) {
        const ir_tensor *t = &f->tensors[i];
        size_t n = elems_of(f, (int)i);
        bool mine = (int)i < pg->nfwd;
        bool ok = true;
        if (t->kind == IR_STATE) {
            /* the adjoint state starts at the cotangent of the final state */
            ok = (rec[i] = gmem_alloc(&gm, (size_t)B * n * ws)) && (adj[i] = gmem_calloc(&gm, (size_t)B * n * ws));
            if (ok && mine && cot[i].data) s = gmem_convert(&gm, adj[i], g->wd, cot[i].data, cot[i].dtype, (size_t)B * n);
            if (ok && pg->trace[i] >= 0) ok = (trace[i] = gmem_alloc(&gm, (size_t)B * (size_t)C * n * ws)) != NULL;
        } else if (t->kind == IR_PARAM) {
            ok = (adj[i] = gmem_calloc(&gm, (size_t)B * n * ws)) != NULL;
        } else if (t->kind == IR_INPUT && mine) {
            ok = gmem_slice_init(&gm, &in[i], &bt[i], n, B, T, C) && gmem_slice_init(&gm, &dx[i], &gr[i], n, B, T, C);
        } else if (t->kind == IR_OUTPUT && mine) {
            ok = gmem_slice_init(&gm, &dy[i], &cot[i], n, B, T, C);
            if (!cot[i].data && B * C * (int64_t)n > (int64_t)zmax) zmax = (size_t)(B * C) * n;
        }
        if (!ok) {
            s = SSMC_ERR_NOMEM;
            goto done;
        }
    }
    if (s == SSMC_OK && !(zeros = gmem_calloc(&gm, zmax * ws))) s = SSMC_ERR_NOMEM;
    if (s != SSMC_OK) goto done;

    for (int64_t k = tp->nck - 1; k >= 0 && s == SSMC_OK; k--) {
        int64_t t0 = k * C, n = T - t0 < C ? T - t0 : C;
        /* recompute the chunk from its checkpoint, with the trace on */
        for (size_t i = 0; i < nf; i++) rb[i] = (backend_tensor){NULL, g->wd, false};
        for (size_t i = 0; i < nf && s == SSMC_OK; i++) {
            const ir_tensor *t = &f->tensors[i];
            if (t->kind == IR_STATE) {
                size_t bytes = (size_t)B * elems_of(f, (int)i) * ws;
                s = gmem_copy(&gm, rec[i], (const char *)tp->ckpt[i] + (size_t)k * bytes, bytes);
                rb[i].data = rec[i];
                if (pg->trace[i] >= 0) rb[pg->trace[i]] = (backend_tensor){trace[i], g->wd, false};
            } else if (t->kind == IR_PARAM) {
                rb[i] = bt[i];
            } else if (t->kind == IR_INPUT) {
                rb[i].dtype = bt[i].dtype;
                s = gmem_slice_at(&gm, &in[i], B, T, t0, n, true, &rb[i].data);
            }
        }
        if (s == SSMC_OK) s = gmem_run(&gm, g->fwd, B, n, rb);
        if (s != SSMC_OK) break;
        /* the adjoint over the chunk, in reverse */
        for (size_t j = 0; j < na; j++) ab[j] = (backend_tensor){NULL, g->wd, false};
        for (size_t i = 0; i < nf && s == SSMC_OK; i++) {
            const ir_tensor *t = &f->tensors[i];
            int v = pg->adj_value[i], a = pg->adj_grad[i];
            if (t->kind == IR_STATE) {
                if (pg->adj_trace[i] >= 0) ab[pg->adj_trace[i]] = (backend_tensor){trace[i], g->wd, false};
                if (a >= 0) ab[a] = (backend_tensor){adj[i], g->wd, false};
            } else if (t->kind == IR_PARAM) {
                if (v >= 0) ab[v] = bt[i];
                if (a >= 0) ab[a] = (backend_tensor){adj[i], g->wd, false};
            } else if (t->kind == IR_INPUT) {
                if (v >= 0) ab[v] = rb[i];
                if (a >= 0 && gr[i].data) {
                    ab[a].dtype = gr[i].dtype;
                    s = gmem_slice_at(&gm, &dx[i], B, T, t0, n, false, &ab[a].data);
                }
            } else if (t->kind == IR_OUTPUT && (int)i < pg->nfwd && a >= 0) {
                if (cot[i].data) {
                    ab[a].dtype = cot[i].dtype;
                    s = gmem_slice_at(&gm, &dy[i], B, T, t0, n, true, &ab[a].data);
                } else {
                    ab[a].data = zeros;
                }
            }
        }
        if (s == SSMC_OK) s = gmem_run(&gm, g->adj, B, n, ab);
        for (size_t i = 0; s == SSMC_OK && i < nf; i++)
            if (f->tensors[i].kind == IR_INPUT && dx[i].base) s = gmem_slice_back(&gm, &dx[i], B, T, t0, n);
    }
    if (s == SSMC_OK) s = init_backward(g, &gm, B, bt, adj, tp->from_init);
    for (size_t i = 0; s == SSMC_OK && (int)i < pg->nfwd; i++) {
        const ir_tensor *t = &f->tensors[i];
        size_t n = elems_of(f, (int)i);
        if (!gr[i].data) continue;
        if (t->kind == IR_STATE)
            s = gmem_convert(&gm, gr[i].data, gr[i].dtype, adj[i], g->wd, (size_t)B * n);
        else if (t->kind == IR_PARAM)
            s = gmem_sum_rows(&gm, gr[i].data, gr[i].dtype, adj[i], g->wd, B, n);
        else if (t->kind == IR_INPUT && pg->adj_grad[i] < 0) /* never read: its gradient is zero (all bits clear) */
            s = gmem_zero(&gm, gr[i].data, (size_t)(B * T) * n * dtype_size(gr[i].dtype));
    }
done:
    if (s == SSMC_ERR_NOMEM && d->nerrors == 0) diag_error(d, "out of memory");
    if (g) {
        ssmc_status ss = gmem_sync(&gm); /* the temporaries below are in use until then */
        if (s == SSMC_OK) s = ss;
    }
    for (size_t i = 0; g && i < nf; i++) {
        if (rec) gmem_free(&gm, rec[i]);
        if (trace) gmem_free(&gm, trace[i]);
        if (adj) gmem_free(&gm, adj[i]);
        if (in) gmem_free(&gm, in[i].scratch);
        if (dy) gmem_free(&gm, dy[i].scratch);
        if (dx) gmem_free(&gm, dx[i].scratch);
    }
    if (g) gmem_free(&gm, zeros);
    free(rec);
    free(trace);
    free(adj);
    free(in);
    free(dy);
    free(dx);
    free(bt);
    free(cot);
    free(gr);
    free(rb);
    free(ab);
    return s;
}

/* ---- the chunked algorithm's backward: driver/grad_chunked.c, with the
 * argument checks of this file ---- */

static ssmc_status chunked_forward_train(ssmc_model *m, int64_t B, int64_t T, const ssmc_arg *args, int nargs,
                                         ssmc_tape **tape, bool device, void *stream)
{
    const char *fn = device ? "ssmc_forward_train_device" : "ssmc_forward_train";
    diag *d = api_model_diag(m);
    diag_reset(d);
    if (!tape) {
        diag_error(d, "%s needs somewhere to put the tape", fn);
        return SSMC_ERR_ARG;
    }
    *tape = NULL;
    ssmc_status s = device ? device_check(m, fn) : SSMC_OK;
    if (s != SSMC_OK) return s;
    ssmc_tape *tp = calloc(1, sizeof *tp);
    if (!tp) {
        diag_error(d, "out of memory");
        return SSMC_ERR_NOMEM;
    }
    tp->model = m;
    tp->batch = B;
    tp->T = T;
    s = grad_chunked_forward(m, B, T, args, nargs, device, stream, &tp->chunked);
    if (s != SSMC_OK) {
        free(tp);
        return s;
    }
    tp->bytes = grad_ctape_bytes(tp->chunked);
    *tape = tp;
    return SSMC_OK;
}

ssmc_status grad_run_args(const ir_model *ir, int64_t batch, int64_t T, const ssmc_arg *args, int nargs,
                          const char *fn, backend_tensor *bt, diag *d)
{
    ssmc_status s = check_sizes(ir, batch, T, d);
    if (s == SSMC_OK) s = resolve(ir, args, nargs, K_INPUT | K_PARAM | K_STATE | K_OUTPUT, true, fn, bt, d);
    return s == SSMC_OK ? require(ir, bt, d) : s;
}

ssmc_status grad_backward_args(const ir_model *ir, const ssmc_arg *args, int nargs, const ssmc_arg *douts, int ndouts,
                               const ssmc_arg *grads, int ngrads, const char *fn, backend_tensor *bt,
                               backend_tensor *cot, backend_tensor *gr, diag *d)
{
    char what[64];
    snprintf(what, sizeof what, "%s: args", fn);
    ssmc_status s = resolve(ir, args, nargs, K_INPUT | K_PARAM, false, what, bt, d);
    if (s == SSMC_OK) s = require(ir, bt, d);
    snprintf(what, sizeof what, "%s: douts", fn);
    if (s == SSMC_OK) s = resolve(ir, douts, ndouts, K_OUTPUT | K_STATE, false, what, cot, d);
    snprintf(what, sizeof what, "%s: grads", fn);
    if (s == SSMC_OK) s = resolve(ir, grads, ngrads, K_INPUT | K_PARAM | K_STATE, false, what, gr, d);
    return s;
}

int64_t grad_interval(const ssmc_options *o, int64_t T) { return chunk_for(o, T); }

/* A backward takes a tape made on its model by the training forward of the
 * same memory: ssmc_forward_train's (host) for ssmc_backward,
 * ssmc_forward_train_device's (device) for ssmc_backward_device. */
static ssmc_status tape_check(ssmc_model *m, const ssmc_tape *tp, bool device)
{
    const char *fn = device ? "ssmc_backward_device" : "ssmc_backward";
    diag *d = api_model_diag(m);
    if (!tp || tp->model != m) {
        diag_error(d, "%s needs a tape made by %s on this model", fn,
                   device ? "ssmc_forward_train_device" : "ssmc_forward_train");
        return SSMC_ERR_ARG;
    }
    bool on_device = tp->chunked ? grad_ctape_on_device(tp->chunked) : tp->mem.dev != NULL;
    if (on_device != device) {
        diag_error(d, "%s: the tape was made by %s, whose checkpoints are on the %s: use %s", fn,
                   device ? "ssmc_forward_train" : "ssmc_forward_train_device", device ? "host" : "device",
                   device ? "ssmc_backward" : "ssmc_backward_device");
        return SSMC_ERR_ARG;
    }
    return SSMC_OK;
}

ssmc_status ssmc_forward_train(ssmc_model *m, int64_t batch, int64_t T, const ssmc_arg *args, int nargs,
                               ssmc_tape **tape)
{
    if (!m) return SSMC_ERR_ARG;
    if (grad_chunked_applies(m)) return chunked_forward_train(m, batch, T, args, nargs, tape, false, NULL);
    return forward_train(m, batch, T, args, nargs, tape, false, NULL);
}

ssmc_status ssmc_backward(ssmc_model *m, const ssmc_tape *tape, const ssmc_arg *args, int nargs,
                          const ssmc_arg *douts, int ndouts, const ssmc_arg *grads, int ngrads)
{
    if (!m) return SSMC_ERR_ARG;
    diag_reset(api_model_diag(m));
    ssmc_status s = tape_check(m, tape, false);
    if (s != SSMC_OK) return s;
    if (tape->varlen) return varlen_backward(m, tape->varlen, args, nargs, douts, ndouts, grads, ngrads);
    if (tape->chunked)
        return grad_chunked_backward(m, tape->chunked, args, nargs, douts, ndouts, grads, ngrads, false, NULL);
    return backward(m, tape, args, nargs, douts, ndouts, grads, ngrads, false, NULL);
}

ssmc_status ssmc_forward_train_device(ssmc_model *m, int64_t batch, int64_t T, const ssmc_arg *args, int nargs,
                                      ssmc_tape **tape, void *stream)
{
    if (!m) return SSMC_ERR_ARG;
    if (grad_chunked_applies(m)) return chunked_forward_train(m, batch, T, args, nargs, tape, true, stream);
    return forward_train(m, batch, T, args, nargs, tape, true, stream);
}

ssmc_status ssmc_backward_device(ssmc_model *m, const ssmc_tape *tape, const ssmc_arg *args, int nargs,
                                 const ssmc_arg *douts, int ndouts, const ssmc_arg *grads, int ngrads,
                                 void *stream)
{
    if (!m) return SSMC_ERR_ARG;
    diag_reset(api_model_diag(m));
    ssmc_status s = device_check(m, "ssmc_backward_device");
    if (s == SSMC_OK) s = tape_check(m, tape, true);
    if (s != SSMC_OK) return s;
    if (tape->chunked)
        return grad_chunked_backward(m, tape->chunked, args, nargs, douts, ndouts, grads, ngrads, true, stream);
    return backward(m, tape, args, nargs, douts, ndouts, grads, ngrads, true, stream);
}

ssmc_tape *grad_tape_of_varlen(const ssmc_model *m, varlen_tape *v, size_t bytes)
{
    ssmc_tape *tp = calloc(1, sizeof *tp);
    if (!tp) return NULL;
    tp->model = m;
    tp->varlen = v;
    tp->bytes = bytes;
    return tp;
}
