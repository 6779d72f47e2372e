/* algo.c: the choice of algorithm (SPEC §3), one decision for every device.
 *
 * `auto` picks the fastest algorithm the analysis allows by the cost model of
 * docs/architecture.md ("Algorithms"); until the cost model is measured it is
 * the recurrent algorithm. `chunked` is taken when every state has a chunk form
 * (passes/chunk.c) and refused with the located reason otherwise; `scan` is not
 * generated in this version and refused on every device (the interpreter
 * included, so that a command means the same everywhere). */
#include <string.h>

#include "passes/plan.h"

static const char *const algo_names[] = {"auto", "recurrent", "chunked", "scan"};

const char *pass_algo_name(ssmc_algo a) { return (unsigned)a < 4 ? algo_names[a] : "?"; }

bool pass_algo_from_name(const char *name, ssmc_algo *out)
{
    for (int i = 0; name && i < 4; i++)
        if (strcmp(algo_names[i], name) == 0) {
            *out = (ssmc_algo)i;
            return true;
        }
    return false;
}

/* The first state without a chunk form, said with its location. */
static void why_not_chunked(const ir_model *m, const pass_chunks *cs, diag *d)
{
    for (int i = 0; i < cs->nforms; i++) {
        const pass_chunk *f = &cs->forms[i];
        if (f->ok) continue;
        const ir_tensor *t = &m->tensors[f->state];
        src_loc loc = f->where != IR_NONE ? m->insts[f->where].loc : t->def >= 0 ? m->stmts[t->def].loc : t->loc;
        diag_at(d, m->file, loc, "--algo=chunked: state '%s' has no chunk form: %s", t->name, f->why);
        return;
    }
    diag_error(d, "--algo=chunked: the model has no state to chunk");
}

bool pass_algo_choose(const ir_model *m, const pass_analysis *an, const pass_chunks *cs, ssmc_algo requested,
                      plan_algo *out, diag *d)
{
    switch (requested) {
    case SSMC_ALGO_AUTO:
    case SSMC_ALGO_RECURRENT: *out = PLAN_ALGO_RECURRENT; return true;
    case SSMC_ALGO_CHUNKED:
        if (!cs->all) {
            why_not_chunked(m, cs, d);
            return false;
        }
        *out = PLAN_ALGO_CHUNKED;
        return true;
    case SSMC_ALGO_SCAN:
        diag_error(d, "--algo=%s is not implemented yet: this version generates the recurrent algorithm, and the "
                   "chunked one where every state has a chunk form (use --algo=recurrent, --algo=chunked or leave "
                   "--algo out)",
                   pass_algo_name(requested));
        return false;
    }
    diag_error(d, "unknown algorithm %d", (int)requested);
    return false;
}
