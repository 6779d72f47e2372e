/* grad_chunked.c (driver): the gradients of a model compiled with a chunked
 * plan (docs/chunked.md, "Gradients"), backend-neutral: the parts of the split
 * (passes/chunk_lower.c) each get their own backward, chained in reverse:
 *
 *   forward:   prologue (inputs, params -> canonical operands O) -> cores (O,
 *              h0 -> readouts R, h(T)) -> epilogue (inputs, params, R -> y)
 *   backward:  adjoint of the epilogue (dy -> dR, dx, dparams) -> core
 *              backward (dR, dh(T) -> dO, dh0) -> adjoint of the prologue
 *              (dO -> dx, dparams), the two parts' dx and dparams added.
 *
 * The prologue and the epilogue are stateless models: their adjoints are
 * passes/grad.c's, compiled and run like the recurrent backward's
 * (grad_compile), with the history states of reads at t - k (pass_unlag) as
 * their only states. The cores' backward is the backend's hook
 * (chunked_run.h, core_backward): one algorithm over the core's description.
 *
 * Memory: the run of n chunks of C steps is cut into segments of G =
 * ceil(sqrt(n)) chunks (or grad_chunk steps, rounded up to whole chunks;
 * segment_for). The training forward runs segment after segment and keeps,
 * before each, every core's state and the parts' history states (the tape:
 * ceil(n / G) copies). The backward goes over the segments from the last: the
 * prologue recomputed from its checkpoint (O and its trace), the cores'
 * forward from theirs (R), the epilogue's adjoint, the cores' backward (which
 * recomputes the G chunk states from the segment's checkpoint, then runs them in
 * reverse, carrying dh), the prologue's adjoint. ssmc_options.grad_chunk <= C
 * makes every segment one chunk: every chunk's state is then kept by the
 * forward and none is recomputed.
 *
 * The driver's buffers are f32, in the memory of driver/gmem.h: the host for
 * ssmc_forward_train / ssmc_backward (the parts run through the backend's
 * run, the cores through its host hooks), the backend's device for
 * ssmc_forward_train_device / ssmc_backward_device (the tape, the work, the
 * segments' slices of the caller's tensors on the device; the parts through
 * run_device, the cores through core_run and core_backward; every copy,
 * conversion and sum enqueued on the caller's stream, nothing per step
 * through the host). A segment's slice of a per-step tensor is the caller's
 * tensor in place where its layout allows (one sequence, one segment), else a
 * copy in the caller's dtype; each input's gradient is the sum of the two
 * parts' shares, and each param's the sum over both parts and the batch,
 * both by gmem_sum_rows. Each call waits for its stream before it frees its
 * working buffers. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "codegen/chunked_run.h"
#include "gmem.h"
#include "grad.h"
#include "bundle.h"
#include "passes/passes.h"
#include "support/dtype.h"

enum { PRO, EPI, NPARTS };

struct grad_chunked {
    const backend *be;
    chunked_state *cs;
    const plan_chunked *ch;
    const ir_model *M;     /* the model */
    pass_grad pg[NPARTS];  /* of the prologue, of the epilogue */
    void *fwd[NPARTS], *adj[NPARTS];
    bool stateful[NPARTS]; /* the part's training forward has states (history) */
    int C;
};

struct grad_ctape {
    int64_t B, T, seg, nseg;
    void **core;           /* per core: [nseg][B][state_elems] f32 */
    void **hist[NPARTS];   /* per tensor of the part's training forward, states: [nseg][B][elems] f32 */
    int nt[NPARTS];
    int ncores;
    size_t bytes;
    gmem mem;              /* where they are: the host, or the device (stream NULL) */
};

bool grad_chunked_applies(const ssmc_model *m)
{
    const pass_plan *p = api_model_plan(m);
    return p && p->algo == PLAN_ALGO_CHUNKED;
}

void grad_chunked_free(grad_chunked *g)
{
    if (!g) return;
    for (int p = 0; p < NPARTS; p++) {
        if (g->fwd[p]) g->be->free(g->fwd[p]);
        if (g->adj[p]) g->be->free(g->adj[p]);
    }
    free(g);
}

void grad_ctape_free(grad_ctape *t)
{
    if (!t) return;
    if (t->mem.dev) t->mem.dev->sync(t->mem.ctx, NULL, t->mem.d); /* the whole device: work may still read them */
    for (int c = 0; t->core && c < t->ncores; c++) gmem_free(&t->mem, t->core[c]);
    free(t->core);
    for (int p = 0; p < NPARTS; p++) {
        for (int i = 0; t->hist[p] && i < t->nt[p]; i++) gmem_free(&t->mem, t->hist[p][i]);
        free(t->hist[p]);
    }
    free(t);
}

size_t grad_ctape_bytes(const grad_ctape *t) { return t ? t->bytes : 0; }

bool grad_ctape_on_device(const grad_ctape *t) { return t && t->mem.dev; }

/* Where the driver's buffers live: the host, or the backend's device with
 * every move on `stream`. */
static gmem gmem_of(const grad_chunked *g, bool device, void *stream, diag *d)
{
    return (gmem){g->be, device ? g->be->mem : NULL, g->fwd[PRO], stream, d};
}

static size_t elems_of(const ir_model *m, int t) { return (size_t)ir_tensor_elems(m, &m->tensors[t]); }

static const ir_model *part_model(const grad_chunked *g, int p)
{
    return p == PRO ? g->ch->parts.prologue : g->ch->parts.epilogue;
}

static ssmc_status prepare(ssmc_model *m, grad_chunked **out)
{
    grad_chunked **slot = api_model_grad_chunked(m);
    diag *d = api_model_diag(m);
    *out = *slot;
    if (*slot) return SSMC_OK;
    const backend *be = api_model_backend(m);
    chunked_state *cs = be->chunked ? be->chunked(api_model_state(m)) : NULL;
    if (!cs || !chunked_has_backward(cs, d) || !be->reverse) {
        diag_error(d, "gradients of the chunked algorithm need the backward of its core, which the %s backend does not "
                      "have yet (use --algo=recurrent, or the cpu device)", be->name);
        return SSMC_ERR_UNSUPPORTED;
    }
    grad_chunked *g = calloc(1, sizeof *g);
    if (!g) {
        diag_error(d, "out of memory");
        return SSMC_ERR_NOMEM;
    }
    g->be = be;
    g->cs = cs;
    g->ch = chunked_plan(cs);
    g->M = api_model_ir(m);
    g->C = g->ch->cores[0].C;
    arena *a = api_model_arena(m);
    ssmc_status s = SSMC_OK;
    for (int p = 0; p < NPARTS && s == SSMC_OK; p++) {
        if (!pass_grad_build(a, part_model(g, p), &g->pg[p], d)) {
            s = a->failed ? SSMC_ERR_NOMEM : SSMC_ERR_UNSUPPORTED;
            break;
        }
        const ir_model *f = g->pg[p].forward;
        for (uint32_t i = 0; i < f->ntensors; i++) g->stateful[p] |= f->tensors[i].kind == IR_STATE;
        s = grad_compile(be, g->pg[p].forward, api_model_options(m), a, d, &g->fwd[p]);
        if (s == SSMC_OK) s = grad_compile(be, g->pg[p].adjoint, api_model_options(m), a, d, &g->adj[p]);
    }
    if (s != SSMC_OK) {
        grad_chunked_free(g);
        return s;
    }
    *slot = *out = g;
    return SSMC_OK;
}

/* The checkpoint interval, in steps: ceil(sqrt(n)) chunks of the run's n,
 * which minimises the ceil(n / G) checkpoints the tape keeps plus the G chunk
 * states the cores' backward recomputes; ssmc_options.grad_chunk (grad.c's
 * interval) rounded up to whole chunks when set; at most the whole run. */
static int64_t segment_for(const grad_chunked *g, const ssmc_options *o, int64_t T)
{
    int64_t C = g->C, nch = (T + C - 1) / C, whole = nch * C;
    if (o->grad_chunk <= 0) {
        ssmc_options chunks = {.grad_chunk = 0};
        return grad_interval(&chunks, nch) * C;
    }
    int64_t seg = (grad_interval(o, T) + C - 1) / C * C;
    return seg < whole ? seg : whole;
}

/* Bytes of one checkpoint per sequence: every core's state and the parts'
 * history states, f32. */
static size_t ckpt_bytes(const grad_chunked *g)
{
    size_t n = 0;
    for (int c = 0; c < g->ch->ncores; c++) n += (size_t)g->ch->cores[c].state_elems;
    for (int p = 0; p < NPARTS; p++) {
        const ir_model *f = g->pg[p].forward;
        for (uint32_t i = 0; i < f->ntensors; i++)
            if (f->tensors[i].kind == IR_STATE) n += elems_of(f, (int)i);
    }
    return n * sizeof(float);
}

ssmc_status grad_chunked_info(ssmc_model *m, int64_t T, ssmc_grad_info *info)
{
    grad_chunked *g;
    ssmc_status s = prepare(m, &g);
    if (s != SSMC_OK) return s;
    memset(info, 0, sizeof *info);
    info->chunk = segment_for(g, api_model_options(m), T);
    info->checkpoints = (T + info->chunk - 1) / info->chunk;
    info->state_bytes = ckpt_bytes(g);
    info->tape_bytes = (size_t)info->checkpoints * info->state_bytes;
    /* a segment's per-step buffers (the model's inputs and their two
     * gradients, its outputs and their cotangents, the canonical operands and
     * readouts and their gradients, the parts' traces), the cores' recomputed
     * chunk states and cotangents, the adjoint states */
    const ir_model *M = g->M;
    size_t steps = 0, params = 0, hist = 0;
    for (uint32_t i = 0; i < M->ntensors; i++) {
        const ir_tensor *t = &M->tensors[i];
        if (t->kind == IR_INPUT) steps += 3 * elems_of(M, (int)i);
        if (t->kind == IR_OUTPUT) steps += 2 * elems_of(M, (int)i);
        if (t->kind == IR_PARAM) params += 2 * elems_of(M, (int)i);
    }
    for (int p = 0; p < NPARTS; p++) {
        const pass_grad *pg = &g->pg[p];
        const ir_model *pm = part_model(g, p), *f = pg->forward;
        for (uint32_t i = 0; i < pm->ntensors; i++) {
            const ir_tensor *t = &pm->tensors[i];
            bool canon = (p == PRO && t->kind == IR_OUTPUT) ||
                         (p == EPI && t->kind == IR_INPUT && ir_find_tensor(M, t->name) < 0);
            if (canon) steps += 2 * elems_of(pm, (int)i);
        }
        for (uint32_t i = 0; i < f->ntensors; i++)
            if (f->tensors[i].kind == IR_STATE) {
                hist += 2 * elems_of(f, (int)i);
                if (pg->trace[i] >= 0) steps += elems_of(f, (int)i);
            }
    }
    size_t chunk_states = 0;
    for (int c = 0; c < g->ch->ncores; c++)
        chunk_states += (size_t)(info->chunk / g->C + 2) * (size_t)g->ch->cores[c].state_elems;
    info->backward_bytes = ((size_t)info->chunk * steps + params + hist) * sizeof(float) + chunk_states * sizeof(double) +
                           2 * info->state_bytes;
    return SSMC_OK;
}

/* ---- a segment's buffers ---- */

/* Part p's own tensor (among its training forward's first nfwd) that the
 * model's tensor i is (the same name and kind), or -1. */
static int part_index(const grad_chunked *g, int p, int i)
{
    const ir_model *f = g->pg[p].forward;
    int j = ir_find_tensor(f, g->M->tensors[i].name);
    return j >= 0 && j < g->pg[p].nfwd && f->tensors[j].kind == g->M->tensors[i].kind ? j : -1;
}

/* The model's tensor that a part's tensor i stands for (the same name and kind), or -1. */
static int in_model(const grad_chunked *g, const ir_model *pm, int i)
{
    int k = ir_find_tensor(g->M, pm->tensors[i].name);
    return k >= 0 && g->M->tensors[k].kind == pm->tensors[i].kind ? k : -1;
}

/* Part p's adjoint writes a gradient of the model's input i. */
static bool part_grads(const grad_chunked *g, int p, int i)
{
    int j = part_index(g, p, i);
    return j >= 0 && g->pg[p].adj_grad[j] >= 0;
}

/* What one segment works on (by tensor id of the model M, of a part, or of a
 * part's training forward), in the memory of gm: the segment's slices of the
 * caller's tensors (their dtypes), the rest f32 [B, seg, ...], and the
 * adjoint states [B, elems]. */
typedef struct work {
    gmem_slice *x;         /* M inputs' values, M outputs' (the forward) */
    gmem_slice *gx;        /* M inputs' gradients */
    gmem_slice *dy;        /* M outputs' cotangents */
    backend_tensor *xt;    /* the segment's: M inputs' values, M outputs (the forward) */
    backend_tensor *dyt;   /* ... M outputs' cotangents (data NULL: none given) */
    void **dx;             /* M inputs: [NPARTS][B, n, e], part p's share of the gradient at p B n e */
    void **padj;           /* M params: [prow[0] + prow[1]][elems], each part's adjoint states, one a sequence */
    int64_t prow[NPARTS];  /* rows of part p's block of padj: B, or B seg where its adjoint runs folded */
    void **val[NPARTS];    /* part: prologue outputs (O), epilogue readout inputs (R) */
    void **grd[NPARTS];    /* ... their cotangents */
    void **trace[NPARTS];  /* part forward: states' trace */
    void **cur[NPARTS];    /* part forward: states (history) */
    void **adj[NPARTS];    /* part forward: states' and params' adjoint states (a param's in padj) */
    void **core;           /* per core: the state [B, state_elems] */
    void **dcore;          /* per core: its cotangent */
    void *zeros;
    void *cws;             /* the cores' backward workspace (chunked_core_backward_ws) */
} work;

static void work_free(const grad_chunked *g, const gmem *gm, work *w)
{
    const ir_model *M = g->M;
    for (uint32_t i = 0; i < M->ntensors; i++) {
        if (w->x) gmem_free(gm, w->x[i].scratch);
        if (w->gx) gmem_free(gm, w->gx[i].scratch);
        if (w->dy) gmem_free(gm, w->dy[i].scratch);
        if (w->dx) gmem_free(gm, w->dx[i]);
        if (w->padj) gmem_free(gm, w->padj[i]);
    }
    free(w->x);
    free(w->gx);
    free(w->dy);
    free(w->xt);
    free(w->dyt);
    free(w->dx);
    free(w->padj);
    for (int p = 0; p < NPARTS; p++) {
        const ir_model *pm = part_model(g, p), *f = g->pg[p].forward;
        for (uint32_t i = 0; i < pm->ntensors; i++) {
            if (w->val[p]) gmem_free(gm, w->val[p][i]);
            if (w->grd[p]) gmem_free(gm, w->grd[p][i]);
        }
        for (uint32_t i = 0; i < f->ntensors; i++) {
            if (w->trace[p]) gmem_free(gm, w->trace[p][i]);
            if (w->cur[p]) gmem_free(gm, w->cur[p][i]);
            if (w->adj[p] && f->tensors[i].kind == IR_STATE) gmem_free(gm, w->adj[p][i]);
        }
        free(w->val[p]);
        free(w->grd[p]);
        free(w->trace[p]);
        free(w->cur[p]);
        free(w->adj[p]);
    }
    for (int c = 0; c < g->ch->ncores; c++) {
        if (w->core) gmem_free(gm, w->core[c]);
        if (w->dcore) gmem_free(gm, w->dcore[c]);
    }
    free(w->core);
    free(w->dcore);
    gmem_free(gm, w->zeros);
    gmem_free(gm, w->cws);
}

/* A part's tensor i is a canonical one: an operand the prologue gives the
 * cores, or a readout the epilogue takes from them. */
static bool canonical(const grad_chunked *g, int p, const ir_model *pm, int i)
{
    const ir_tensor *t = &pm->tensors[i];
    return (p == PRO && t->kind == IR_OUTPUT) || (p == EPI && t->kind == IR_INPUT && ir_find_tensor(g->M, t->name) < 0);
}

/* The params' adjoint states of one sequence each that a folded adjoint may
 * keep (bytes, all params together): 64 MiB. */
#define FOLD_PARAM_BYTES ((size_t)64 << 20)

/* Part p's adjoint runs with the batch and the steps folded: the part is
 * stateless (no step reads another), so each step's adjoint is a sequence of
 * its own, as the part's forward runs (part_forward); its params' adjoint
 * states are then one a step (pbytes of them), summed at the end. */
static bool adjoint_folds(const grad_chunked *g, int p, size_t pbytes)
{
    return !g->stateful[p] && pbytes <= FOLD_PARAM_BYTES;
}

/* The buffers of segments of `seg` steps over the caller's tensors bt (and,
 * for the backward, `grads`: cot and gr), zeroed. */
static bool work_init(const grad_chunked *g, const gmem *gm, work *w, int64_t B, int64_t T, int64_t seg,
                      const backend_tensor *bt, bool grads, const backend_tensor *cot, const backend_tensor *gr)
{
    memset(w, 0, sizeof *w);
    const ir_model *M = g->M;
    size_t per = (size_t)B * (size_t)seg, f4 = sizeof(float), zmax = 1;
    int64_t C = seg < T ? seg : T;
    size_t nm = M->ntensors + 1;
    if (!(w->x = calloc(nm, sizeof *w->x)) || !(w->gx = calloc(nm, sizeof *w->gx)) ||
        !(w->dy = calloc(nm, sizeof *w->dy)) || !(w->xt = calloc(nm, sizeof *w->xt)) ||
        !(w->dyt = calloc(nm, sizeof *w->dyt)) || !(w->dx = calloc(nm, sizeof *w->dx)) ||
        !(w->padj = calloc(nm, sizeof *w->padj)))
        return false;
    for (uint32_t i = 0; i < M->ntensors; i++) {
        const ir_tensor *t = &M->tensors[i];
        size_t e = elems_of(M, (int)i);
        if (t->kind == IR_INPUT || (t->kind == IR_OUTPUT && !grads))
            if (!gmem_slice_init(gm, &w->x[i], &bt[i], e, B, T, C)) return false;
        if (!grads) continue;
        if (t->kind == IR_OUTPUT) {
            if (!gmem_slice_init(gm, &w->dy[i], &cot[i], e, B, T, C)) return false;
            if (per * e > zmax) zmax = per * e;
        }
        if (t->kind == IR_INPUT && gr[i].data) {
            if (!gmem_slice_init(gm, &w->gx[i], &gr[i], e, B, T, C) ||
                !(w->dx[i] = gmem_alloc(gm, NPARTS * per * e * f4)))
                return false;
        }
    }
    /* a stateless part's adjoint runs with the batch and the steps folded (B seg one-step sequences), each with
     * its own param adjoint states, summed at the end: where those rows fit FOLD_PARAM_BYTES */
    size_t pbytes = 0;
    for (uint32_t i = 0; i < M->ntensors; i++)
        if (M->tensors[i].kind == IR_PARAM) pbytes += (size_t)(B * C) * elems_of(M, (int)i) * f4;
    for (int p = 0; p < NPARTS; p++) w->prow[p] = adjoint_folds(g, p, pbytes) ? B * C : B;
    for (uint32_t i = 0; i < M->ntensors; i++)
        if (grads && M->tensors[i].kind == IR_PARAM &&
            !(w->padj[i] = gmem_calloc(gm, (size_t)(w->prow[0] + w->prow[1]) * elems_of(M, (int)i) * f4)))
            return false;
    for (int p = 0; p < NPARTS; p++) {
        const ir_model *pm = part_model(g, p), *f = g->pg[p].forward;
        if (!(w->val[p] = calloc(pm->ntensors + 1, sizeof(void *))) ||
            !(w->grd[p] = calloc(pm->ntensors + 1, sizeof(void *))) ||
            !(w->trace[p] = calloc(f->ntensors + 1, sizeof(void *))) ||
            !(w->cur[p] = calloc(f->ntensors + 1, sizeof(void *))) ||
            !(w->adj[p] = calloc(f->ntensors + 1, sizeof(void *))))
            return false;
        for (uint32_t i = 0; i < pm->ntensors; i++) {
            if (!canonical(g, p, pm, (int)i)) continue;
            size_t n = per * elems_of(pm, (int)i) * f4;
            /* zeroed: a readout the epilogue does not differentiate keeps a zero cotangent */
            if (!(w->val[p][i] = gmem_alloc(gm, n)) || (grads && !(w->grd[p][i] = gmem_calloc(gm, n)))) return false;
        }
        for (uint32_t i = 0; i < f->ntensors; i++) {
            const ir_tensor *t = &f->tensors[i];
            size_t n = (size_t)B * elems_of(f, (int)i) * f4;
            if (t->kind == IR_STATE) {
                /* the history starts at zero, as does its adjoint after the last step */
                if (!(w->cur[p][i] = gmem_calloc(gm, n))) return false;
                if (grads && g->pg[p].trace[i] >= 0 && !(w->trace[p][i] = gmem_alloc(gm, n * (size_t)seg)))
                    return false;
                if (grads && !(w->adj[p][i] = gmem_calloc(gm, n))) return false;
            } else if (grads && t->kind == IR_PARAM) {
                int k = in_model(g, f, (int)i);
                w->adj[p][i] = (char *)w->padj[k] + (size_t)(p ? w->prow[0] : 0) * elems_of(f, (int)i) * f4;
            }
        }
    }
    int nc = g->ch->ncores;
    if (!(w->core = calloc((size_t)nc + 1, sizeof *w->core)) || !(w->dcore = calloc((size_t)nc + 1, sizeof *w->dcore)))
        return false;
    size_t ws = 0;
    for (int c = 0; c < nc; c++) {
        size_t n = (size_t)B * (size_t)g->ch->cores[c].state_elems * f4;
        if (!(w->core[c] = gmem_calloc(gm, n)) || (grads && !(w->dcore[c] = gmem_calloc(gm, n)))) return false;
        size_t cw = grads ? chunked_core_backward_ws(g->cs, c, B, seg, gm->dev != NULL) : 0;
        if (cw > ws) ws = cw;
    }
    if (ws && !(w->cws = gmem_alloc(gm, ws))) return false;
    return (w->zeros = gmem_calloc(gm, zmax * f4)) != NULL;
}

static backend_tensor f32(void *p) { return (backend_tensor){p, SSMC_F32, false}; }

/* The segment's slices of the caller's per-step tensors (steps [t0, t0 + n)):
 * the inputs' values copied in, the outputs (values or cotangents) */
static ssmc_status bind_segment(const grad_chunked *g, const gmem *gm, work *w, int64_t B, int64_t T, int64_t t0,
                                int64_t n, bool grads)
{
    ssmc_status s = SSMC_OK;
    for (uint32_t i = 0; s == SSMC_OK && i < g->M->ntensors; i++) {
        ir_kind k = g->M->tensors[i].kind;
        if (k == IR_INPUT || (k == IR_OUTPUT && !grads && w->x[i].base)) {
            w->xt[i].dtype = w->x[i].dtype;
            s = gmem_slice_at(gm, &w->x[i], B, T, t0, n, k == IR_INPUT, &w->xt[i].data);
        }
        if (k == IR_OUTPUT && grads && w->dy[i].base) {
            w->dyt[i].dtype = w->dy[i].dtype;
            s = gmem_slice_at(gm, &w->dy[i], B, T, t0, n, true, &w->dyt[i].data);
        }
    }
    return s;
}

/* Part p's training forward over n steps of the segment: inputs and params
 * from the model's (bt), O or R from the work, states from w->cur; the
 * epilogue's outputs into the segment's slices when `outputs`, the trace when
 * `trace`. A part without states runs with the batch and the steps folded. */
static ssmc_status part_forward(const grad_chunked *g, const gmem *gm, int p, work *w, const backend_tensor *bt,
                                int64_t B, int64_t n, bool outputs, bool trace)
{
    const pass_grad *pg = &g->pg[p];
    const ir_model *f = pg->forward;
    backend_tensor *rb = calloc(f->ntensors + 1, sizeof *rb);
    if (!rb) return SSMC_ERR_NOMEM;
    for (uint32_t i = 0; i < f->ntensors; i++) rb[i] = f32(NULL);
    for (uint32_t i = 0; i < f->ntensors; i++) {
        const ir_tensor *t = &f->tensors[i];
        int k = (int)i < pg->nfwd ? in_model(g, f, (int)i) : -1;
        if (t->kind == IR_STATE) {
            rb[i] = f32(w->cur[p][i]);
            if (trace && pg->trace[i] >= 0) rb[pg->trace[i]] = f32(w->trace[p][i]);
        } else if (t->kind == IR_PARAM) {
            rb[i] = bt[k];
        } else if (t->kind == IR_INPUT) {
            rb[i] = k >= 0 ? w->xt[k] : f32(w->val[p][i]);
        } else if (t->kind == IR_OUTPUT && (int)i < pg->nfwd) {
            if (p == PRO) rb[i] = f32(w->val[p][i]);
            else if (outputs && w->x[k].base) rb[i] = w->xt[k];
        }
    }
    bool fold = !g->stateful[p];
    ssmc_status s = gmem_run(gm, g->fwd[p], fold ? B * n : B, fold ? 1 : n, rb);
    free(rb);
    return s;
}

/* Part p's adjoint over n steps, in reverse, from the adjoint states in w->adj. */
static ssmc_status part_adjoint(const grad_chunked *g, const gmem *gm, int p, work *w, const backend_tensor *bt,
                                int64_t B, int64_t n)
{
    const pass_grad *pg = &g->pg[p];
    const ir_model *f = pg->forward, *A = pg->adjoint;
    backend_tensor *ab = calloc(A->ntensors + 1, sizeof *ab);
    if (!ab) return SSMC_ERR_NOMEM;
    for (uint32_t j = 0; j < A->ntensors; j++) ab[j] = f32(NULL);
    for (uint32_t i = 0; i < f->ntensors; i++) {
        const ir_tensor *t = &f->tensors[i];
        int v = pg->adj_value[i], a = pg->adj_grad[i];
        int k = (int)i < pg->nfwd ? in_model(g, f, (int)i) : -1;
        if (t->kind == IR_STATE) {
            if (pg->adj_trace[i] >= 0) ab[pg->adj_trace[i]] = f32(w->trace[p][i]);
            if (a >= 0) ab[a] = f32(w->adj[p][i]);
        } else if (t->kind == IR_PARAM) {
            if (v >= 0) ab[v] = bt[k];
            if (a >= 0) ab[a] = f32(w->adj[p][i]);
        } else if (t->kind == IR_INPUT) {
            if (v >= 0) ab[v] = k >= 0 ? w->xt[k] : f32(w->val[p][i]);
            /* the part's share of a model input's gradient (where one is asked), or a readout's cotangent */
            if (a >= 0 && k < 0) ab[a] = f32(w->grd[p][i]);
            else if (a >= 0 && w->dx[k])
                ab[a] = f32((char *)w->dx[k] + (size_t)p * (size_t)(B * n) * elems_of(g->M, k) * sizeof(float));
        } else if (t->kind == IR_OUTPUT && (int)i < pg->nfwd && a >= 0) {
            ab[a] = p == PRO ? f32(w->grd[p][i]) : w->dyt[k].data ? w->dyt[k] : f32(w->zeros);
        }
    }
    bool fold = w->prow[p] > B; /* adjoint_folds */
    ssmc_status s = gmem_run(gm, g->adj[p], fold ? B * n : B, fold ? 1 : n, ab);
    free(ab);
    return s;
}

/* The model's input i's gradient over the segment: the sum of the two parts'
 * shares (or the one share, where one part only reads it), into its slice. */
static ssmc_status input_grad(const grad_chunked *g, const gmem *gm, work *w, int i, int64_t B, int64_t T, int64_t t0,
                              int64_t n)
{
    size_t e = (size_t)(B * n) * elems_of(g->M, i);
    bool pro = part_grads(g, PRO, i), epi = part_grads(g, EPI, i);
    if (!pro && !epi) return SSMC_OK; /* zeroed once, after the last segment */
    void *dst;
    const gmem_slice *sl = &w->gx[i];
    ssmc_status s = gmem_slice_at(gm, sl, B, T, t0, n, false, &dst);
    if (s == SSMC_OK && pro && epi) s = gmem_sum_rows(gm, dst, sl->dtype, w->dx[i], SSMC_F32, NPARTS, e);
    else if (s == SSMC_OK)
        s = gmem_convert(gm, dst, sl->dtype, (char *)w->dx[i] + (pro ? 0 : e * sizeof(float)), SSMC_F32, e);
    return s == SSMC_OK ? gmem_slice_back(gm, sl, B, T, t0, n) : s;
}

/* Core c's operands in the work (f32 [B, n, nheads, D]). */
static chunk_core_io core_io(const grad_chunked *g, int c, work *w)
{
    const pass_chunk_ops *op = &g->ch->cores[c].ops;
    chunk_core_io io = {.state = w->core[c], .state_dtype = SSMC_F32};
    for (int r = 0; r < g->ch->cores[c].nreadouts; r++) {
        io.q[r] = w->val[PRO][op->q[r]];
        io.r[r] = w->val[EPI][op->r[r]];
    }
    io.k = w->val[PRO][op->k];
    io.v = w->val[PRO][op->v];
    io.g = op->g >= 0 ? w->val[PRO][op->g] : NULL;
    io.beta = op->beta >= 0 ? w->val[PRO][op->beta] : NULL;
    io.w = op->w >= 0 ? w->val[PRO][op->w] : NULL;
    return io;
}

/* ---- the training forward ---- */

ssmc_status grad_chunked_forward(ssmc_model *m, int64_t B, int64_t T, const ssmc_arg *args, int nargs, bool device,
                                 void *stream, grad_ctape **out)
{
    diag *d = api_model_diag(m);
    *out = NULL;
    grad_chunked *g;
    const ir_model *M = api_model_ir(m);
    backend_tensor *bt = calloc(M->ntensors + 1, sizeof *bt);
    if (!bt) {
        diag_error(d, "out of memory");
        return SSMC_ERR_NOMEM;
    }
    ssmc_status s = grad_run_args(M, B, T, args, nargs, device ? "ssmc_forward_train_device" : "ssmc_forward_train",
                                  bt, d);
    if (s == SSMC_OK) s = prepare(m, &g);
    if (s != SSMC_OK) {
        free(bt);
        return s;
    }
    gmem gm = gmem_of(g, device, stream, d);
    const plan_chunked *ch = g->ch;
    grad_ctape *tp = calloc(1, sizeof *tp);
    work w;
    int64_t seg = segment_for(g, api_model_options(m), T);
    bool have_work = tp != NULL, ok = have_work && work_init(g, &gm, &w, B, T, seg, bt, false, NULL, NULL);
    if (tp) {
        *tp = (grad_ctape){.B = B, .T = T, .seg = seg, .nseg = (T + seg - 1) / seg, .ncores = ch->ncores, .mem = gm};
        tp->mem.stream = NULL;
        ok = ok && (tp->core = calloc((size_t)ch->ncores + 1, sizeof *tp->core));
        for (int c = 0; ok && c < ch->ncores; c++) {
            size_t n = (size_t)B * (size_t)ch->cores[c].state_elems;
            ok = (tp->core[c] = gmem_alloc(&gm, (size_t)tp->nseg * n * sizeof(float))) != NULL;
            tp->bytes += (size_t)tp->nseg * n * sizeof(float);
        }
        for (int p = 0; ok && p < NPARTS; p++) {
            const ir_model *f = g->pg[p].forward;
            tp->nt[p] = (int)f->ntensors;
            ok = (tp->hist[p] = calloc(f->ntensors + 1, sizeof *tp->hist[p])) != NULL;
            for (uint32_t i = 0; ok && i < f->ntensors; i++)
                if (f->tensors[i].kind == IR_STATE) {
                    size_t n = (size_t)B * elems_of(f, (int)i);
                    ok = (tp->hist[p][i] = gmem_alloc(&gm, (size_t)tp->nseg * n * sizeof(float))) != NULL;
                    tp->bytes += (size_t)tp->nseg * n * sizeof(float);
                }
        }
    }
    if (!ok) s = SSMC_ERR_NOMEM;
    /* the states given (not only to receive the final ones), else zero */
    for (int c = 0; s == SSMC_OK && c < ch->ncores; c++) {
        const backend_tensor *st = &bt[ch->cores[c].state];
        size_t n = (size_t)B * (size_t)ch->cores[c].state_elems;
        if (st->data && !st->fresh) s = gmem_convert(&gm, w.core[c], SSMC_F32, st->data, st->dtype, n);
    }
    for (int64_t k = 0; s == SSMC_OK && k < tp->nseg; k++) {
        int64_t t0 = k * seg, n = T - t0 < seg ? T - t0 : seg;
        /* the checkpoint: every state before the segment */
        for (int c = 0; s == SSMC_OK && c < ch->ncores; c++) {
            size_t e = (size_t)B * (size_t)ch->cores[c].state_elems * sizeof(float);
            s = gmem_copy(&gm, (char *)tp->core[c] + (size_t)k * e, w.core[c], e);
        }
        for (int p = 0; s == SSMC_OK && p < NPARTS; p++)
            for (int i = 0; s == SSMC_OK && i < tp->nt[p]; i++)
                if (tp->hist[p][i]) {
                    size_t e = (size_t)B * elems_of(g->pg[p].forward, i) * sizeof(float);
                    s = gmem_copy(&gm, (char *)tp->hist[p][i] + (size_t)k * e, w.cur[p][i], e);
                }
        if (s == SSMC_OK) s = bind_segment(g, &gm, &w, B, T, t0, n, false);
        if (s == SSMC_OK) s = part_forward(g, &gm, PRO, &w, bt, B, n, false, false);
        for (int c = 0; s == SSMC_OK && c < ch->ncores; c++) {
            chunk_core_io io = core_io(g, c, &w);
            s = chunked_core_forward(g->cs, c, B, n, &io, device, stream, d);
        }
        if (s == SSMC_OK) s = part_forward(g, &gm, EPI, &w, bt, B, n, true, false);
        for (uint32_t i = 0; s == SSMC_OK && i < M->ntensors; i++)
            if (M->tensors[i].kind == IR_OUTPUT && w.x[i].base) s = gmem_slice_back(&gm, &w.x[i], B, T, t0, n);
    }
    for (int c = 0; s == SSMC_OK && c < ch->ncores; c++) {
        const backend_tensor *st = &bt[ch->cores[c].state];
        size_t n = (size_t)B * (size_t)ch->cores[c].state_elems;
        if (st->data) s = gmem_convert(&gm, st->data, st->dtype, w.core[c], SSMC_F32, n);
    }
    if (s == SSMC_ERR_NOMEM && d->nerrors == 0) diag_error(d, "out of memory");
    ssmc_status ss = gmem_sync(&gm); /* the work below is in use until then */
    if (s == SSMC_OK) s = ss;
    if (have_work) work_free(g, &gm, &w);
    free(bt);
    if (s == SSMC_OK)
        *out = tp;
    else
        grad_ctape_free(tp);
    return s;
}

/* ---- the backward ---- */

ssmc_status grad_chunked_backward(ssmc_model *m, const grad_ctape *tp, const ssmc_arg *args, int nargs,
                                  const ssmc_arg *douts, int ndouts, const ssmc_arg *grads, int ngrads, bool device,
                                  void *stream)
{
    diag *d = api_model_diag(m);
    diag_reset(d);
    grad_chunked *g;
    ssmc_status s = prepare(m, &g);
    if (s != SSMC_OK) return s;
    gmem gm = gmem_of(g, device, stream, d);
    const ir_model *M = g->M;
    const plan_chunked *ch = g->ch;
    int64_t B = tp->B, T = tp->T, seg = tp->seg;
    backend_tensor *bt = calloc(M->ntensors + 1, sizeof *bt), *cot = calloc(M->ntensors + 1, sizeof *cot),
                   *gr = calloc(M->ntensors + 1, sizeof *gr);
    work w;
    bool have_work = false;
    if (!bt || !cot || !gr) s = SSMC_ERR_NOMEM;
    if (s == SSMC_OK)
        s = grad_backward_args(M, args, nargs, douts, ndouts, grads, ngrads,
                               device ? "ssmc_backward_device" : "ssmc_backward", bt, cot, gr, d);
    if (s == SSMC_OK) {
        have_work = true;
        if (!work_init(g, &gm, &w, B, T, seg, bt, true, cot, gr)) s = SSMC_ERR_NOMEM;
    }
    /* the cores' adjoint states start at the final states' cotangents */
    for (int c = 0; s == SSMC_OK && c < ch->ncores; c++) {
        const backend_tensor *ct = &cot[ch->cores[c].state];
        size_t n = (size_t)B * (size_t)ch->cores[c].state_elems;
        if (ct->data) s = gmem_convert(&gm, w.dcore[c], SSMC_F32, ct->data, ct->dtype, n);
    }
    for (int64_t k = tp->nseg - 1; s == SSMC_OK && k >= 0; k--) {
        int64_t t0 = k * seg, n = T - t0 < seg ? T - t0 : seg;
        s = bind_segment(g, &gm, &w, B, T, t0, n, true);
        for (int p = 0; s == SSMC_OK && p < NPARTS; p++)
            for (int i = 0; s == SSMC_OK && i < tp->nt[p]; i++)
                if (tp->hist[p][i]) {
                    size_t e = (size_t)B * elems_of(g->pg[p].forward, i) * sizeof(float);
                    s = gmem_copy(&gm, w.cur[p][i], (const char *)tp->hist[p][i] + (size_t)k * e, e);
                }
        /* the prologue recomputed (O, its trace), the cores' readouts from their checkpoints */
        if (s == SSMC_OK) s = part_forward(g, &gm, PRO, &w, bt, B, n, false, true);
        for (int c = 0; s == SSMC_OK && c < ch->ncores; c++) {
            size_t e = (size_t)B * (size_t)ch->cores[c].state_elems * sizeof(float);
            s = gmem_copy(&gm, w.core[c], (const char *)tp->core[c] + (size_t)k * e, e);
            chunk_core_io io = core_io(g, c, &w);
            if (s == SSMC_OK) s = chunked_core_forward(g->cs, c, B, n, &io, device, stream, d);
        }
        /* the epilogue's adjoint (its trace first, where it has states) */
        if (s == SSMC_OK && g->stateful[EPI]) s = part_forward(g, &gm, EPI, &w, bt, B, n, false, true);
        if (s == SSMC_OK) s = part_adjoint(g, &gm, EPI, &w, bt, B, n);
        /* the cores' backward, from their checkpoints */
        for (int c = 0; s == SSMC_OK && c < ch->ncores; c++) {
            const plan_chunk_core *core = &ch->cores[c];
            const pass_chunk_ops *op = &core->ops;
            size_t e = (size_t)B * (size_t)core->state_elems * sizeof(float);
            chunk_core_io io = core_io(g, c, &w);
            chunk_core_grad_io gio = {.k = io.k, .v = io.v, .g = io.g, .beta = io.beta, .w = io.w,
                                      .state = (const float *)((const char *)tp->core[c] + (size_t)k * e),
                                      .dstate = w.dcore[c], .work = w.cws};
            for (int r = 0; r < core->nreadouts; r++) {
                gio.q[r] = io.q[r];
                gio.dr[r] = w.grd[EPI][op->r[r]];
                gio.dq[r] = w.grd[PRO][op->q[r]];
            }
            gio.dk = w.grd[PRO][op->k];
            gio.dv = w.grd[PRO][op->v];
            gio.dg = op->g >= 0 ? w.grd[PRO][op->g] : NULL;
            gio.dbeta = op->beta >= 0 ? w.grd[PRO][op->beta] : NULL;
            gio.dw = op->w >= 0 ? w.grd[PRO][op->w] : NULL;
            s = chunked_core_backward(g->cs, c, B, n, &gio, device, stream, d);
        }
        /* the prologue's adjoint; each input's gradient is what both parts pass to it */
        if (s == SSMC_OK) s = part_adjoint(g, &gm, PRO, &w, bt, B, n);
        for (uint32_t i = 0; s == SSMC_OK && i < M->ntensors; i++)
            if (M->tensors[i].kind == IR_INPUT && gr[i].data) s = input_grad(g, &gm, &w, (int)i, B, T, t0, n);
    }
    /* the initial states' gradients; the params' summed over both parts and the batch; zero for an input no
     * part reads */
    for (int c = 0; s == SSMC_OK && c < ch->ncores; c++) {
        const backend_tensor *gt = &gr[ch->cores[c].state];
        size_t n = (size_t)B * (size_t)ch->cores[c].state_elems;
        if (gt->data) s = gmem_convert(&gm, gt->data, gt->dtype, w.dcore[c], SSMC_F32, n);
    }
    for (uint32_t i = 0; s == SSMC_OK && i < M->ntensors; i++) {
        const ir_tensor *t = &M->tensors[i];
        size_t n = elems_of(M, (int)i);
        if (!gr[i].data) continue;
        if (t->kind == IR_PARAM)
            s = gmem_sum_rows(&gm, gr[i].data, gr[i].dtype, w.padj[i], SSMC_F32, w.prow[0] + w.prow[1], n);
        else if (t->kind == IR_INPUT && !part_grads(g, PRO, (int)i) && !part_grads(g, EPI, (int)i))
            s = gmem_zero(&gm, gr[i].data, (size_t)(B * T) * n * dtype_size(gr[i].dtype));
    }
    if (s == SSMC_ERR_NOMEM && d->nerrors == 0) diag_error(d, "out of memory");
    if (have_work) {
        ssmc_status ss = gmem_sync(&gm); /* the work below is in use until then */
        if (s == SSMC_OK) s = ss;
        work_free(g, &gm, &w);
    }
    free(bt);
    free(cot);
    free(gr);
    return s;
}
