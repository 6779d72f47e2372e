/* chunked_run.c: see chunked_run.h. */
#include <stdlib.h>
#include <string.h>

#include "codegen/chunked_run.h"
#include "support/dtype.h"

struct chunked_state {
    const chunk_hooks *h;
    void *ctx;
    const ir_model *m;
    const pass_plan *p;
    void *pro, *epi; /* the backend's states of the prologue and the epilogue */
    void **cores;
};

ssmc_status chunked_compile(const chunk_hooks *h, void *ctx, const ir_model *m, const pass_plan *p, const ssmc_options *o,
                            diag *d, chunked_state **out)
{
    *out = NULL;
    const plan_chunked *ch = p->chunked;
    chunked_state *s = calloc(1, sizeof *s);
    if (s) s->cores = calloc((size_t)ch->ncores + 1, sizeof *s->cores);
    if (!s || !s->cores) {
        free(s);
        diag_error(d, "out of memory");
        return SSMC_ERR_NOMEM;
    }
    *s = (chunked_state){.h = h, .ctx = ctx, .m = m, .p = p, .cores = s->cores};
    ssmc_status st = h->be->compile(ch->parts.prologue, ch->prologue, o, d, &s->pro);
    if (st == SSMC_OK) st = h->be->compile(ch->parts.epilogue, ch->epilogue, o, d, &s->epi);
    for (int i = 0; st == SSMC_OK && i < ch->ncores; i++) st = h->core_compile(ctx, &ch->cores[i], o, d, &s->cores[i]);
    if (st != SSMC_OK) {
        chunked_free(s);
        return st;
    }
    *out = s;
    return SSMC_OK;
}

void chunked_free(chunked_state *s)
{
    if (!s) return;
    const plan_chunked *ch = s->p->chunked;
    if (s->pro) s->h->be->free(s->pro);
    if (s->epi) s->h->be->free(s->epi);
    for (int i = 0; i < ch->ncores; i++)
        if (s->cores[i]) s->h->core_free(s->ctx, s->cores[i]);
    free(s->cores);
    free(s);
}

/* Elements of tensor t of m over a run. */
static size_t run_elems(const ir_model *m, const ir_tensor *t, int64_t B, int64_t T)
{
    size_t n = (size_t)ir_tensor_elems(m, t);
    if (t->kind == IR_PARAM) return n;
    return n * (size_t)B * (t->per_step ? (size_t)T : 1);
}

/* The part's tensors: the source's by name, the canonical ones from work[] (a
 * tensor of the part that the source lacks: its buffer there). */
static ssmc_status bind(const ir_model *src, const backend_tensor *bt, const ir_model *part, void **work,
                        backend_tensor *out, diag *d)
{
    for (uint32_t i = 0; i < part->ntensors; i++) {
        const ir_tensor *t = &part->tensors[i];
        out[i] = (backend_tensor){NULL, SSMC_F32, false};
        if (t->kind == IR_LET) continue;
        int k = ir_find_tensor(src, t->name);
        if (k >= 0 && src->tensors[k].kind == t->kind) {
            out[i] = bt[k];
        } else if (work[i]) {
            out[i] = (backend_tensor){work[i], SSMC_F32, false};
        } else if (t->kind == IR_INPUT || t->kind == IR_PARAM) {
            diag_error(d, "internal error: the chunked part %s has no data for %s", part->name, t->name);
            return SSMC_ERR_BACKEND;
        }
    }
    return SSMC_OK;
}

static ssmc_status run_part(chunked_state *s, void *state, bool fold, const ir_model *part, const backend_tensor *pt,
                            int64_t B, int64_t T, bool device, void *stream, diag *d)
{
    int64_t b = fold ? B * T : B, t = fold ? 1 : T;
    const backend *be = s->h->be;
    (void)part;
    return device ? be->run_device(state, b, t, pt, stream, d) : be->run(state, b, t, pt, d);
}

ssmc_status chunked_run(chunked_state *s, int64_t batch, int64_t T, const backend_tensor *bt, bool device, void *stream,
                        diag *d)
{
    const plan_chunked *ch = s->p->chunked;
    const ir_model *pro = ch->parts.prologue, *epi = ch->parts.epilogue;
    void **pwork = calloc(pro->ntensors + 1, sizeof *pwork), **ework = calloc(epi->ntensors + 1, sizeof *ework);
    backend_tensor *pt = calloc(pro->ntensors + 1, sizeof *pt), *et = calloc(epi->ntensors + 1, sizeof *et);
    ssmc_status st = pwork && ework && pt && et ? SSMC_OK : SSMC_ERR_NOMEM;
    if (st != SSMC_OK) diag_error(d, "out of memory");
    /* the canonical operands (the prologue's outputs) and the readout results
     * (the epilogue's inputs the source lacks), f32, carved from one workspace */
    size_t total = 0;
#define CARVE(part, i) (total += (run_elems(part, &(part)->tensors[i], batch, T) * sizeof(float) + 255) / 256 * 256)
    for (uint32_t i = 0; st == SSMC_OK && i < pro->ntensors; i++)
        if (pro->tensors[i].kind == IR_OUTPUT) CARVE(pro, i);
    for (uint32_t i = 0; st == SSMC_OK && i < epi->ntensors; i++)
        if (epi->tensors[i].kind == IR_INPUT && ir_find_tensor(s->m, epi->tensors[i].name) < 0) CARVE(epi, i);
    char *ws = st == SSMC_OK ? s->h->workspace(s->ctx, total ? total : 256, d) : NULL;
    if (st == SSMC_OK && !ws) st = SSMC_ERR_NOMEM;
    total = 0;
    for (uint32_t i = 0; st == SSMC_OK && i < pro->ntensors; i++)
        if (pro->tensors[i].kind == IR_OUTPUT) {
            pwork[i] = ws + total;
            CARVE(pro, i);
        }
    for (uint32_t i = 0; st == SSMC_OK && i < epi->ntensors; i++)
        if (epi->tensors[i].kind == IR_INPUT && ir_find_tensor(s->m, epi->tensors[i].name) < 0) {
            ework[i] = ws + total;
            CARVE(epi, i);
        }
#undef CARVE
    if (st == SSMC_OK) st = bind(s->m, bt, pro, pwork, pt, d);
    if (st == SSMC_OK) st = run_part(s, s->pro, ch->fold_prologue, pro, pt, batch, T, device, stream, d);
    for (int c = 0; st == SSMC_OK && c < ch->ncores; c++) {
        const plan_chunk_core *core = &ch->cores[c];
        const pass_chunk_ops *op = &core->ops;
        chunk_core_io io = {.state = bt[core->state].data, .state_dtype = bt[core->state].dtype};
        /* final only: the core starts from zero (a chunked state has no init) and writes the final value */
        if (io.state && bt[core->state].fresh)
            st = s->h->zero(s->ctx, io.state,
                            run_elems(s->m, &s->m->tensors[core->state], batch, T) * dtype_size(io.state_dtype), stream, d);
        if (st != SSMC_OK) break;
        for (int r = 0; r < core->nreadouts; r++) {
            io.q[r] = pwork[op->q[r]];
            io.r[r] = ework[op->r[r]];
        }
        io.k = pwork[op->k];
        io.v = pwork[op->v];
        io.g = op->g >= 0 ? pwork[op->g] : NULL;
        io.beta = op->beta >= 0 ? pwork[op->beta] : NULL;
        io.w = op->w >= 0 ? pwork[op->w] : NULL;
        st = s->h->core_run(s->ctx, s->cores[c], batch, T, &io, stream, d);
    }
    if (st == SSMC_OK) st = bind(s->m, bt, epi, ework, et, d);
    if (st == SSMC_OK) st = run_part(s, s->epi, ch->fold_epilogue, epi, et, batch, T, device, stream, d);
    free(pwork);
    free(ework);
    free(pt);
    free(et);
    return st;
}

const plan_chunked *chunked_plan(const chunked_state *s) { return s->p->chunked; }

bool chunked_has_backward(const chunked_state *s, diag *d)
{
    if (!s->h->core_backward) return false;
    for (int c = 0; s->h->core_has_backward && c < s->p->chunked->ncores; c++)
        if (!s->h->core_has_backward(s->ctx, s->cores[c], d)) return false;
    return true;
}

ssmc_status chunked_core_forward(chunked_state *s, int c, int64_t batch, int64_t T, const chunk_core_io *io, bool device,
                                 void *stream, diag *d)
{
    if (!device && s->h->core_run_host) return s->h->core_run_host(s->ctx, s->cores[c], batch, T, io, d);
    return s->h->core_run(s->ctx, s->cores[c], batch, T, io, device ? stream : NULL, d);
}

size_t chunked_core_backward_ws(const chunked_state *s, int c, int64_t batch, int64_t T, bool device)
{
    if ((!device && s->h->core_backward_host) || !s->h->core_backward_ws) return 0;
    return s->h->core_backward_ws(s->ctx, s->cores[c], batch, T);
}

ssmc_status chunked_core_backward(chunked_state *s, int c, int64_t batch, int64_t T, const chunk_core_grad_io *io,
                                  bool device, void *stream, diag *d)
{
    if (!s->h->core_backward) {
        diag_error(d, "the %s backend has no backward of the chunked core yet", s->h->be->name);
        return SSMC_ERR_UNSUPPORTED;
    }
    if (!device && s->h->core_backward_host) return s->h->core_backward_host(s->ctx, s->cores[c], batch, T, io, d);
    return s->h->core_backward(s->ctx, s->cores[c], batch, T, io, device ? stream : NULL, d);
}
