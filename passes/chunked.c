/* chunked.c: the plan of the chunked algorithm (plan.h, PLAN_ALGO_CHUNKED):
 * the model split into prologue, cores and epilogue (passes/chunk_lower.c),
 * the prologue and epilogue planned as recurrent models for the same target,
 * and each core's shape read off its chunk form: heads, key and value dims,
 * the decay kind, the delta rule, which readouts see S(t-1), and where each
 * head's state lives in the state tensor. */
#include <string.h>

#include "passes/plan_steps.h"

#define DEFAULT_CHUNK 64

/* Reads an input at a time lag: folding batch and time would read across sequences. */
static bool lagged(const ir_model *m)
{
    for (uint32_t r = 0; r < m->ninsts; r++) {
        const ir_inst *in = &m->insts[r];
        if (in->op == IR_LOAD && (in->load.lag || in->load.lag_var >= 0)) return true;
    }
    return false;
}

static bool core_of(arena *a, const ir_model *m, const pass_chunk *f, const pass_chunk_ops *ops, int C,
                    plan_chunk_core *c)
{
    const ir_tensor *st = &m->tensors[f->state];
    memset(c, 0, sizeof *c);
    c->state = f->state;
    c->K = (int)m->dims[st->dims[f->key_axis]].value;
    c->V = f->value_axis >= 0 ? (int)m->dims[st->dims[f->value_axis]].value : 1;
    c->state_elems = ir_tensor_elems(m, st);
    c->nheads = (int)(c->state_elems / c->K / c->V);
    c->C = C;
    c->decay = f->decay_kind;
    c->delta = f->delta;
    c->nreadouts = f->nreadouts;
    for (int r = 0; r < f->nreadouts; r++) c->prev[r] = !f->readouts[r].after_update;
    c->ops = *ops;
    int64_t stride[IR_MAX_RANK], s = 1;
    for (int ax = st->rank - 1; ax >= 0; ax--) {
        stride[ax] = s;
        s *= m->dims[st->dims[ax]].value;
    }
    c->key_stride = stride[f->key_axis];
    c->value_stride = f->value_axis >= 0 ? stride[f->value_axis] : 0;
    c->head_off = arena_array(a, (size_t)c->nheads, sizeof *c->head_off);
    if (!c->head_off) return false;
    /* head hh: its index on every head axis, the last axis fastest (the
     * canonical tensors' order, passes/chunk_lower.c) */
    for (int hh = 0; hh < c->nheads; hh++) {
        int64_t off = 0, rem = hh;
        for (int ax = st->rank - 1; ax >= 0; ax--) {
            if (ax == f->key_axis || ax == f->value_axis) continue;
            int64_t dim = m->dims[st->dims[ax]].value;
            off += (rem % dim) * stride[ax];
            rem /= dim;
        }
        c->head_off[hh] = off;
    }
    return true;
}

ssmc_status plan_make_chunked(arena *a, const ir_model *m, const pass_analysis *an, const pass_chunks *chunks, int C,
                              const plan_target *target, pass_plan **out, diag *d)
{
    *out = NULL;
    if (C <= 0) C = DEFAULT_CHUNK;
    pass_plan *p = arena_alloc(a, sizeof *p);
    plan_chunked *ch = arena_alloc(a, sizeof *ch);
    if (!p || !ch) goto oom;
    memset(p, 0, sizeof *p);
    p->m = m;
    p->target = *target;
    p->an = an;
    p->algo = PLAN_ALGO_CHUNKED;
    p->chunked = ch;
    if (!pass_chunk_lower(a, m, chunks, &ch->parts, d)) return a->failed ? SSMC_ERR_NOMEM : SSMC_ERR_UNSUPPORTED;
    ssmc_status s = plan_make(a, ch->parts.prologue, NULL, NULL, PLAN_ALGO_RECURRENT, target, &ch->prologue, d);
    if (s == SSMC_OK) s = plan_make(a, ch->parts.epilogue, NULL, NULL, PLAN_ALGO_RECURRENT, target, &ch->epilogue, d);
    if (s != SSMC_OK) return s;
    ch->fold_prologue = !lagged(ch->parts.prologue);
    ch->fold_epilogue = !lagged(ch->parts.epilogue);
    ch->ncores = chunks->nforms;
    ch->cores = arena_array(a, (size_t)ch->ncores + 1, sizeof *ch->cores);
    if (!ch->cores) goto oom;
    for (int i = 0; i < chunks->nforms; i++) {
        if (!core_of(a, m, &chunks->forms[i], &ch->parts.ops[i], C, &ch->cores[i])) goto oom;
        ch->cores[i].form = i;
    }
    *out = p;
    return SSMC_OK;
oom:
    diag_error(d, "out of memory while planning the chunked kernels");
    return SSMC_ERR_NOMEM;
}
