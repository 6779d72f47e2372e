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
 * forward and none is recomputed. The driver's buffers are f32. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "codegen/chunked_run.h"
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
    float **core;          /* per core: [nseg][B][state_elems] */
    float **hist[NPARTS];  /* per tensor of the part's training forward, states: [nseg][B][elems] */
    int nt[NPARTS];
    int ncores;
    size_t bytes;
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
    for (int c = 0; t->core && c < t->ncores; c++) free(t->core[c]);
    free(t->core);
    for (int p = 0; p < NPARTS; p++) {
        for (int i = 0; t->hist[p] && i < t->nt[p]; i++) free(t->hist[p][i]);
        free(t->hist[p]);
    }
    free(t);
}

size_t grad_ctape_bytes(const grad_ctape *t) { return t ? t->bytes : 0; }

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

/* ---- per-step buffers ---- */

/* [B, n, e] f32 from steps [t0, t0 + n) of a [B, T, e] tensor of any dtype */
static void gather(float *dst, const backend_tensor *src, size_t e, int64_t B, int64_t T, int64_t t0, int64_t n)
{
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < n; t++)
            for (size_t j = 0; j < e; j++)
                dst[((size_t)(b * n + t)) * e + j] = (float)dtype_get(src->data, src->dtype, ((size_t)(b * T + t0 + t)) * e + j);
}

/* the reverse of gather, the sum of one or two buffers (b may be NULL) */
static void scatter(const backend_tensor *dst, const float *a, const float *b2, size_t e, int64_t B, int64_t T,
                    int64_t t0, int64_t n)
{
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < n; t++)
            for (size_t j = 0; j < e; j++) {
                size_t k = ((size_t)(b * n + t)) * e + j;
                dtype_set(dst->data, dst->dtype, ((size_t)(b * T + t0 + t)) * e + j, (double)a[k] + (b2 ? b2[k] : 0));
            }
}

/* What one segment works on, all f32 [B, seg, ...] (by tensor id of the model
 * M, of a part, or of a part's training forward), and the adjoint states. */
typedef struct work {
    float **x;             /* M: inputs' values; outputs' values (the forward) */
    float **dx[NPARTS];    /* M inputs: part p's share of the gradient */
    float **dy;            /* M outputs: the cotangent */
    float **val[NPARTS];   /* part: prologue outputs (O), epilogue readout inputs (R) */
    float **grd[NPARTS];   /* ... their cotangents */
    float **trace[NPARTS]; /* part forward: states' trace */
    float **cur[NPARTS];   /* part forward: states (history) */
    float **adj[NPARTS];   /* part forward: states' and params' adjoint states [B, elems] */
    float **core;          /* per core: the state [B, state_elems] */
    float **dcore;         /* per core: its cotangent */
    float *zeros;
} work;

static void work_free(const grad_chunked *g, work *w)
{
    const ir_model *M = g->M;
    for (uint32_t i = 0; i < M->ntensors; i++) {
        if (w->x) free(w->x[i]);
        if (w->dy) free(w->dy[i]);
        for (int p = 0; p < NPARTS; p++)
            if (w->dx[p]) free(w->dx[p][i]);
    }
    free(w->x);
    free(w->dy);
    for (int p = 0; p < NPARTS; p++) {
        free(w->dx[p]);
        const ir_model *pm = part_model(g, p), *f = g->pg[p].forward;
        for (uint32_t i = 0; i < pm->ntensors; i++) {
            if (w->val[p]) free(w->val[p][i]);
            if (w->grd[p]) free(w->grd[p][i]);
        }
        for (uint32_t i = 0; i < f->ntensors; i++) {
            if (w->trace[p]) free(w->trace[p][i]);
            if (w->cur[p]) free(w->cur[p][i]);
            if (w->adj[p]) free(w->adj[p][i]);
        }
        free(w->val[p]);
        free(w->grd[p]);
        free(w->trace[p]);
        free(w->cur[p]);
        free(w->adj[p]);
    }
    for (int c = 0; c < g->ch->ncores; c++) {
        if (w->core) free(w->core[c]);
        if (w->dcore) free(w->dcore[c]);
    }
    free(w->core);
    free(w->dcore);
    free(w->zeros);
}

static float *zalloc(size_t n) { return calloc(n + 1, sizeof(float)); }

/* The buffers of segments of `seg` steps; `grads`: the backward's too. */
static bool work_init(const grad_chunked *g, work *w, int64_t B, int64_t seg, bool grads, const backend_tensor *cot)
{
    memset(w, 0, sizeof *w);
    const ir_model *M = g->M;
    size_t per = (size_t)B * (size_t)seg, zmax = 1;
    if (!(w->x = calloc(M->ntensors, sizeof *w->x)) || !(w->dy = calloc(M->ntensors, sizeof *w->dy))) return false;
    for (uint32_t i = 0; i < M->ntensors; i++) {
        const ir_tensor *t = &M->tensors[i];
        size_t n = per * elems_of(M, (int)i);
        if (t->kind == IR_INPUT || t->kind == IR_OUTPUT)
            if (!(w->x[i] = zalloc(n))) return false;
        if (grads && t->kind == IR_OUTPUT) {
            if (cot[i].data && !(w->dy[i] = zalloc(n))) return false;
            if (n > zmax) zmax = n;
        }
    }
    for (int p = 0; p < NPARTS; p++) {
        const ir_model *pm = part_model(g, p), *f = g->pg[p].forward;
        if (!(w->dx[p] = calloc(M->ntensors, sizeof(float *))) || !(w->val[p] = calloc(pm->ntensors, sizeof(float *))) ||
            !(w->grd[p] = calloc(pm->ntensors, sizeof(float *))) || !(w->trace[p] = calloc(f->ntensors, sizeof(float *))) ||
            !(w->cur[p] = calloc(f->ntensors, sizeof(float *))) || !(w->adj[p] = calloc(f->ntensors, sizeof(float *))))
            return false;
        for (uint32_t i = 0; grads && i < M->ntensors; i++)
            if (M->tensors[i].kind == IR_INPUT && !(w->dx[p][i] = zalloc(per * elems_of(M, (int)i)))) return false;
        for (uint32_t i = 0; i < pm->ntensors; i++) {
            const ir_tensor *t = &pm->tensors[i];
            bool canon = (p == PRO && t->kind == IR_OUTPUT) ||
                         (p == EPI && t->kind == IR_INPUT && ir_find_tensor(M, t->name) < 0);
            if (!canon) continue;
            size_t n = per * elems_of(pm, (int)i);
            if (!(w->val[p][i] = zalloc(n)) || (grads && !(w->grd[p][i] = zalloc(n)))) return false;
        }
        for (uint32_t i = 0; i < f->ntensors; i++) {
            const ir_tensor *t = &f->tensors[i];
            size_t n = (size_t)B * elems_of(f, (int)i);
            if (t->kind == IR_STATE) {
                if (!(w->cur[p][i] = zalloc(n))) return false;
                if (grads && g->pg[p].trace[i] >= 0 && !(w->trace[p][i] = zalloc(n * (size_t)seg))) return false;
            }
            if (grads && (t->kind == IR_STATE || t->kind == IR_PARAM) && !(w->adj[p][i] = zalloc(n))) return false;
        }
    }
    int nc = g->ch->ncores;
    if (!(w->core = calloc((size_t)nc, sizeof *w->core)) || !(w->dcore = calloc((size_t)nc, sizeof *w->dcore))) return false;
    for (int c = 0; c < nc; c++) {
        size_t n = (size_t)B * (size_t)g->ch->cores[c].state_elems;
        if (!(w->core[c] = zalloc(n)) || (grads && !(w->dcore[c] = zalloc(n)))) return false;
    }
    return (w->zeros = zalloc(zmax)) != NULL;
}

static backend_tensor f32(void *p) { return (backend_tensor){p, SSMC_F32, false}; }

/* The model's tensor that a part's tensor i stands for (the same name and kind), or -1. */
static int in_model(const grad_chunked *g, const ir_model *pm, int i)
{
    int k = ir_find_tensor(g->M, pm->tensors[i].name);
    return k >= 0 && g->M->tensors[k].kind == pm->tensors[i].kind ? k : -1;
}

/* Part p's training forward over n steps of the segment: inputs and params
 * from the model's (bt), O or R from the work, states from w->cur; the
 * epilogue's outputs into w->x when `outputs`, the trace when `trace`. A part
 * without states runs with the batch and the steps folded. */
static ssmc_status part_forward(const grad_chunked *g, int p, work *w, const backend_tensor *bt, int64_t B, int64_t n,
                                bool outputs, bool trace, diag *d)
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
            rb[i] = f32(k >= 0 ? w->x[k] : w->val[p][i]);
        } else if (t->kind == IR_OUTPUT && (int)i < pg->nfwd) {
            if (p == PRO) rb[i] = f32(w->val[p][i]);
            else if (outputs && bt[k].data) rb[i] = f32(w->x[k]);
        }
    }
    bool fold = !g->stateful[p];
    ssmc_status s = g->be->run(g->fwd[p], fold ? B * n : B, fold ? 1 : n, rb, d);
    free(rb);
    return s;
}

/* Part p's adjoint over n steps, in reverse, from the adjoint states in w->adj. */
static ssmc_status part_adjoint(const grad_chunked *g, int p, work *w, const backend_tensor *bt, int64_t B, int64_t n,
                                diag *d)
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
            if (v >= 0) ab[v] = f32(k >= 0 ? w->x[k] : w->val[p][i]);
            if (a >= 0) ab[a] = f32(k >= 0 ? w->dx[p][k] : w->grd[p][i]);
        } else if (t->kind == IR_OUTPUT && (int)i < pg->nfwd && a >= 0) {
            ab[a] = f32(p == PRO ? w->grd[p][i] : w->dy[k] ? w->dy[k] : w->zeros);
        }
    }
    ssmc_status s = g->be->run(g->adj[p], B, n, ab, d);
    free(ab);
    return s;
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

static void gather_inputs(const grad_chunked *g, work *w, const backend_tensor *bt, int64_t B, int64_t T, int64_t t0,
                          int64_t n)
{
    for (uint32_t i = 0; i < g->M->ntensors; i++)
        if (g->M->tensors[i].kind == IR_INPUT) gather(w->x[i], &bt[i], elems_of(g->M, (int)i), B, T, t0, n);
}

/* ---- the training forward ---- */

ssmc_status grad_chunked_forward(ssmc_model *m, int64_t B, int64_t T, const ssmc_arg *args, int nargs, grad_ctape **out)
{
    diag *d = api_model_diag(m);
    *out = NULL;
    grad_chunked *g;
    const ir_model *M = api_model_ir(m);
    backend_tensor *bt = calloc(M->ntensors + 1, sizeof *bt);
    if (!bt) return SSMC_ERR_NOMEM;
    ssmc_status s = grad_run_args(M, B, T, args, nargs, bt, d);
    if (s == SSMC_OK) s = prepare(m, &g);
    if (s != SSMC_OK) {
        free(bt);
        return s;
    }
    const plan_chunked *ch = g->ch;
    grad_ctape *tp = calloc(1, sizeof *tp);
    work w;
    int64_t seg = segment_for(g, api_model_options(m), T);
    bool ok = tp && work_init(g, &w, B, seg, false, NULL);
    if (tp) {
        *tp = (grad_ctape){.B = B, .T = T, .seg = seg, .nseg = (T + seg - 1) / seg, .ncores = ch->ncores};
        ok = ok && (tp->core = calloc((size_t)ch->ncores, sizeof *tp->core));
        for (int c = 0; ok && c < ch->ncores; c++) {
            size_t n = (size_t)B * (size_t)ch->cores[c].state_elems;
            ok = (tp->core[c] = malloc((size_t)tp->nseg * n * sizeof(float) + 1)) != NULL;
            tp->bytes += (size_t)tp->nseg * n * sizeof(float);
            /* the state given (not only to receive the final one), else zero */
            const backend_tensor *st = &bt[ch->cores[c].state];
            for (size_t e = 0; ok && st->data && !st->fresh && e < n; e++) w.core[c][e] = (float)dtype_get(st->data, st->dtype, e);
        }
        for (int p = 0; ok && p < NPARTS; p++) {
            const ir_model *f = g->pg[p].forward;
            tp->nt[p] = (int)f->ntensors;
            ok = (tp->hist[p] = calloc(f->ntensors + 1, sizeof *tp->hist[p])) != NULL;
            for (uint32_t i = 0; ok && i < f->ntensors; i++)
                if (f->tensors[i].kind == IR_STATE) {
                    size_t n = (size_t)B * elems_of(f, (int)i);
                    ok = (tp->hist[p][i] = malloc((size_t)tp->nseg * n * sizeof(float) + 1)) != NULL;
                    tp->bytes += (size_t)tp->nseg * n * sizeof(float);
                }
        }
    }
    if (!ok) s = SSMC_ERR_NOMEM;
    for (int64_t k = 0; s == SSMC_OK && k < tp->nseg; k++) {
        int64_t t0 = k * seg, n = T - t0 < seg ? T - t0 : seg;
        /* the checkpoint: every state before the segment */
        for (int c = 0; c < ch->ncores; c++) {
            size_t e = (size_t)B * (size_t)ch->cores[c].state_elems;
            memcpy(tp->core[c] + (size_t)k * e, w.core[c], e * sizeof(float));
        }
        for (int p = 0; p < NPARTS; p++)
            for (int i = 0; i < tp->nt[p]; i++)
                if (tp->hist[p][i]) {
                    size_t e = (size_t)B * elems_of(g->pg[p].forward, i);
                    memcpy(tp->hist[p][i] + (size_t)k * e, w.cur[p][i], e * sizeof(float));
                }
        gather_inputs(g, &w, bt, B, T, t0, n);
        s = part_forward(g, PRO, &w, bt, B, n, false, false, d);
        for (int c = 0; s == SSMC_OK && c < ch->ncores; c++) {
            chunk_core_io io = core_io(g, c, &w);
            s = chunked_core_forward(g->cs, c, B, n, &io, d);
        }
        if (s == SSMC_OK) s = part_forward(g, EPI, &w, bt, B, n, true, false, d);
        for (uint32_t i = 0; s == SSMC_OK && i < M->ntensors; i++)
            if (M->tensors[i].kind == IR_OUTPUT && bt[i].data) scatter(&bt[i], w.x[i], NULL, elems_of(M, (int)i), B, T, t0, n);
    }
    for (int c = 0; s == SSMC_OK && c < ch->ncores; c++) {
        const backend_tensor *st = &bt[ch->cores[c].state];
        size_t n = (size_t)B * (size_t)ch->cores[c].state_elems;
        for (size_t e = 0; st->data && e < n; e++) dtype_set(st->data, st->dtype, e, w.core[c][e]);
    }
    if (tp) work_free(g, &w);
    if (s == SSMC_ERR_NOMEM && d->nerrors == 0) diag_error(d, "out of memory");
    free(bt);
    if (s == SSMC_OK)
        *out = tp;
    else
        grad_ctape_free(tp);
    return s;
}

/* ---- the backward ---- */

ssmc_status grad_chunked_backward(ssmc_model *m, const grad_ctape *tp, const ssmc_arg *args, int nargs,
                                  const ssmc_arg *douts, int ndouts, const ssmc_arg *grads, int ngrads)
{
    diag *d = api_model_diag(m);
    diag_reset(d);
    grad_chunked *g;
    ssmc_status s = prepare(m, &g);
    if (s != SSMC_OK) return s;
    const ir_model *M = g->M;
    const plan_chunked *ch = g->ch;
    int64_t B = tp->B, T = tp->T, seg = tp->seg;
    backend_tensor *bt = calloc(M->ntensors + 1, sizeof *bt), *cot = calloc(M->ntensors + 1, sizeof *cot),
                   *gr = calloc(M->ntensors + 1, sizeof *gr);
    work w;
    bool have_work = false;
    if (!bt || !cot || !gr) s = SSMC_ERR_NOMEM;
    if (s == SSMC_OK) s = grad_backward_args(M, args, nargs, douts, ndouts, grads, ngrads, bt, cot, gr, d);
    if (s == SSMC_OK) {
        have_work = true;
        if (!work_init(g, &w, B, seg, true, cot)) s = SSMC_ERR_NOMEM;
    }
    /* the cores' adjoint states start at the final states' cotangents */
    for (int c = 0; s == SSMC_OK && c < ch->ncores; c++) {
        const backend_tensor *ct = &cot[ch->cores[c].state];
        size_t n = (size_t)B * (size_t)ch->cores[c].state_elems;
        for (size_t e = 0; ct->data && e < n; e++) w.dcore[c][e] = (float)dtype_get(ct->data, ct->dtype, e);
    }
    for (int64_t k = tp->nseg - 1; s == SSMC_OK && k >= 0; k--) {
        int64_t t0 = k * seg, n = T - t0 < seg ? T - t0 : seg;
        gather_inputs(g, &w, bt, B, T, t0, n);
        for (uint32_t i = 0; i < M->ntensors; i++)
            if (w.dy[i]) gather(w.dy[i], &cot[i], elems_of(M, (int)i), B, T, t0, n);
        for (int p = 0; p < NPARTS; p++)
            for (int i = 0; i < tp->nt[p]; i++)
                if (tp->hist[p][i]) {
                    size_t e = (size_t)B * elems_of(g->pg[p].forward, i);
                    memcpy(w.cur[p][i], tp->hist[p][i] + (size_t)k * e, e * sizeof(float));
                }
        /* the prologue recomputed (O, its trace), the cores' readouts from their checkpoints */
        s = part_forward(g, PRO, &w, bt, B, n, false, true, d);
        for (int c = 0; s == SSMC_OK && c < ch->ncores; c++) {
            size_t e = (size_t)B * (size_t)ch->cores[c].state_elems;
            memcpy(w.core[c], tp->core[c] + (size_t)k * e, e * sizeof(float));
            chunk_core_io io = core_io(g, c, &w);
            s = chunked_core_forward(g->cs, c, B, n, &io, d);
        }
        /* the epilogue's adjoint (its trace first, where it has states) */
        if (s == SSMC_OK && g->stateful[EPI]) s = part_forward(g, EPI, &w, bt, B, n, false, true, d);
        if (s == SSMC_OK) s = part_adjoint(g, EPI, &w, bt, B, n, d);
        /* the cores' backward, from their checkpoints */
        for (int c = 0; s == SSMC_OK && c < ch->ncores; c++) {
            const plan_chunk_core *core = &ch->cores[c];
            const pass_chunk_ops *op = &core->ops;
            size_t e = (size_t)B * (size_t)core->state_elems;
            chunk_core_io io = core_io(g, c, &w);
            chunk_core_grad_io gio = {.k = io.k, .v = io.v, .g = io.g, .beta = io.beta, .w = io.w,
                                      .state = tp->core[c] + (size_t)k * e, .dstate = w.dcore[c]};
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
            s = chunked_core_backward(g->cs, c, B, n, &gio, d);
        }
        /* the prologue's adjoint; each input's gradient is what both parts pass to it */
        if (s == SSMC_OK) s = part_adjoint(g, PRO, &w, bt, B, n, d);
        for (uint32_t i = 0; s == SSMC_OK && i < M->ntensors; i++)
            if (M->tensors[i].kind == IR_INPUT && gr[i].data)
                scatter(&gr[i], w.dx[PRO][i], w.dx[EPI][i], elems_of(M, (int)i), B, T, t0, n);
    }
    /* the initial states' gradients; the params' summed over the batch and both parts */
    for (int c = 0; s == SSMC_OK && c < ch->ncores; c++) {
        const backend_tensor *gt = &gr[ch->cores[c].state];
        size_t n = (size_t)B * (size_t)ch->cores[c].state_elems;
        for (size_t e = 0; gt->data && e < n; e++) dtype_set(gt->data, gt->dtype, e, w.dcore[c][e]);
    }
    for (uint32_t i = 0; s == SSMC_OK && i < M->ntensors; i++) {
        if (M->tensors[i].kind != IR_PARAM || !gr[i].data) continue;
        size_t n = elems_of(M, (int)i);
        for (size_t e = 0; e < n; e++) {
            double sum = 0;
            for (int p = 0; p < NPARTS; p++) {
                const ir_model *f = g->pg[p].forward;
                int j = ir_find_tensor(f, M->tensors[i].name);
                if (j < 0 || g->pg[p].adj_grad[j] < 0) continue;
                for (int64_t b = 0; b < B; b++) sum += w.adj[p][j][(size_t)b * n + e];
            }
            dtype_set(gr[i].data, gr[i].dtype, e, sum);
        }
    }
    if (have_work) work_free(g, &w);
    if (s == SSMC_ERR_NOMEM && d->nerrors == 0) diag_error(d, "out of memory");
    free(bt);
    free(cot);
    free(gr);
    return s;
}
