/* verify.c: structural invariants of the IR. Run after lowering and after
 * every pass that rewrites the IR; a failure is a compiler bug and is reported
 * as "internal error: ir verify: ..." naming the broken invariant. */
#include "ir.h"

#include <stdlib.h>

typedef struct verifier {
    const ir_model *m;
    diag *d;
    const ir_stmt *s;
    uint32_t si;
    bool init; /* checking an init statement: it reads params only */
    bool *bound; /* per variable: in scope */
    bool ok;
} verifier;

static void bad(verifier *v, const char *what, uint32_t inst)
{
    if (!v->ok) return;
    v->ok = false;
    diag_error(v->d, "internal error: ir verify: model %s, statement %u, instruction %u: %s", v->m->name, v->si, inst,
               what);
}

static void check_index(verifier *v, const ir_tensor *t, int axis, const ir_index *ix, uint32_t r)
{
    const ir_model *m = v->m;
    int64_t size = m->dims[t->dims[axis]].value;
    if (ix->kind == IR_IX_CONST) {
        if (ix->k < 0 || ix->k >= size) bad(v, "constant index out of range", r);
        return;
    }
    if (ix->var < 0 || (uint32_t)ix->var >= m->nvars) { bad(v, "index variable out of range", r); return; }
    if (!v->bound[ix->var]) { bad(v, "index variable not bound here", r); return; }
    int64_t range = m->dims[m->vars[ix->var].dim].value;
    if (ix->kind == IR_IX_VAR && m->vars[ix->var].dim != t->dims[axis])
        bad(v, "variable indexes an axis of another dim", r);
    if (ix->kind == IR_IX_DIV && (ix->k < 1 || range % ix->k || range / ix->k != size))
        bad(v, "group divisor does not map the variable's range onto the axis", r);
    if (ix->kind == IR_IX_AFFINE) {
        if (ix->var2 < 0 || (uint32_t)ix->var2 >= m->nvars || !v->bound[ix->var2]) {
            bad(v, "second variable of an affine index not bound here", r);
            return;
        }
        if (ix->k < 1 || m->dims[m->vars[ix->var2].dim].value != ix->k || range * ix->k != size)
            bad(v, "affine index does not map its variables' ranges onto the axis", r);
    }
}

static void check_inst(verifier *v, ir_ref r)
{
    const ir_model *m = v->m;
    if (!v->ok) return;
    if (r >= m->ninsts) { bad(v, "operand out of range", r); return; }
    const ir_inst *in = &m->insts[r];
    if (in->op >= IR_OP_COUNT) { bad(v, "unknown op", r); return; }
    int arity = op_table[in->op].arity;
    for (int i = 0; i < 3; i++) {
        ir_ref o = ir_operand(in, i);
        if ((arity > i) != (o != IR_NONE)) { bad(v, "wrong operand count", r); return; }
        if (o != IR_NONE && o >= r) { bad(v, "operand after its user", r); return; }
    }
    if (in->op == IR_IDX) {
        if (in->var < 0 || (uint32_t)in->var >= m->nvars || !v->bound[in->var]) bad(v, "index variable not bound here", r);
        return;
    }
    if (in->op == IR_LOAD) {
        if (in->load.tensor < 0 || (uint32_t)in->load.tensor >= m->ntensors) { bad(v, "load of no tensor", r); return; }
        const ir_tensor *t = &m->tensors[in->load.tensor];
        if ((uint64_t)in->load.ix + (uint64_t)t->rank > m->nix) { bad(v, "load indices out of range", r); return; }
        if (t->kind == IR_OUTPUT) { bad(v, "load of an output", r); return; }
        if (!t->per_step && (in->load.lag || in->load.lag_var >= 0)) { bad(v, "time lag on a tensor without T", r); return; }
        if (t->kind != IR_INPUT && t->kind != IR_LET && (in->load.lag || in->load.lag_var >= 0))
            { bad(v, "time lag on a tensor that is neither an input nor a let", r); return; }
        if (v->init && t->kind != IR_PARAM) { bad(v, "init statement reads something other than a param", r); return; }
        if (in->load.lag < 0) { bad(v, "negative time lag", r); return; }
        if (in->load.lag_var >= 0 && ((uint32_t)in->load.lag_var >= m->nvars || !v->bound[in->load.lag_var]))
            { bad(v, "time-lag variable not bound here", r); return; }
        if (in->load.after_update && t->kind != IR_STATE) { bad(v, "after_update on a non-state", r); return; }
        if (t->kind == IR_LET && (t->def < 0 || (uint32_t)t->def >= v->si)) { bad(v, "let read before its definition", r); return; }
        if (t->kind == IR_STATE && in->load.after_update != (t->def >= 0 && (uint32_t)t->def < v->si))
            { bad(v, "state read sees the wrong step", r); return; }
        if (!v->s->per_step && (t->per_step || t->kind == IR_STATE))
            { bad(v, "time-invariant statement reads a per-step value", r); return; }
        for (int i = 0; i < t->rank; i++) check_index(v, t, i, &m->ix[in->load.ix + (uint32_t)i], r);
        return;
    }
    if (in->op == IR_SUM || in->op == IR_RMAX) {
        if ((uint64_t)in->red.vars + in->red.nvars > m->nred_vars || in->red.nvars == 0)
            { bad(v, "reduction variables out of range", r); return; }
        for (uint32_t i = 0; i < in->red.nvars; i++) {
            uint32_t var = m->red_vars[in->red.vars + i];
            if (var >= m->nvars || v->bound[var]) { bad(v, "reduction rebinds a bound variable", r); return; }
            v->bound[var] = true;
        }
        check_inst(v, in->a);
        for (uint32_t i = 0; i < in->red.nvars; i++) v->bound[m->red_vars[in->red.vars + i]] = false;
        return;
    }
    for (int i = 0; i < 3; i++)
        if (ir_operand(in, i) != IR_NONE) check_inst(v, ir_operand(in, i));
}

/* Binds statement s's free variables (one per axis of its tensor), checks its
 * expression, unbinds them. */
static void check_stmt_body(verifier *v, const ir_stmt *s)
{
    const ir_model *m = v->m;
    const ir_tensor *t = &m->tensors[s->tensor];
    for (int i = 0; v->ok && i < t->rank; i++) {
        int var = s->vars[i];
        if (var < 0 || (uint32_t)var >= m->nvars || v->bound[var]) {
            bad(v, "free variable out of range or repeated", s->root);
            break;
        }
        if (m->vars[var].dim != t->dims[i]) bad(v, "free variable of another dim than its axis", s->root);
        v->bound[var] = true;
    }
    check_inst(v, s->root);
    for (int i = 0; i < t->rank; i++)
        if (s->vars[i] >= 0 && (uint32_t)s->vars[i] < m->nvars) v->bound[s->vars[i]] = false;
}

bool ir_verify(const ir_model *m, diag *d)
{
    verifier v = {.m = m, .d = d, .ok = true};
    v.bound = calloc(m->nvars ? m->nvars : 1, sizeof *v.bound);
    int *defs = calloc(m->ntensors ? m->ntensors : 1, sizeof *defs);
    if (!v.bound || !defs) {
        free(v.bound);
        free(defs);
        diag_error(d, "out of memory");
        return false;
    }
    for (uint32_t i = 0; i < m->ntensors; i++) {
        const ir_tensor *t = &m->tensors[i];
        if (t->rank < 0 || t->rank > IR_MAX_RANK) bad(&v, "tensor rank out of range", 0);
        for (int j = 0; v.ok && j < t->rank; j++)
            if (t->dims[j] < 0 || (uint32_t)t->dims[j] >= m->ndims) bad(&v, "tensor axis of no dim", 0);
        if ((t->kind == IR_INPUT || t->kind == IR_OUTPUT) && !t->per_step) bad(&v, "input or output without T", 0);
        if ((t->kind == IR_PARAM || t->kind == IR_STATE) && t->per_step) bad(&v, "param or state with T", 0);
        if (t->hidden && t->kind != IR_STATE) bad(&v, "hidden tensor that is not a state", 0);
    }
    for (uint32_t i = 0; v.ok && i < m->norigins; i++) {
        const ir_origin *o = &m->origins[i];
        if (o->tensor < 0 || (uint32_t)o->tensor >= m->ntensors || o->let < 0 || (uint32_t)o->let >= m->ntensors ||
            m->tensors[o->let].kind != IR_LET || o->lag < 0)
            bad(&v, "origin of a tensor that is not a let at a lag", 0);
    }
    for (uint32_t ii = 0; v.ok && ii < m->ninits; ii++) {
        const ir_stmt *s = &m->inits[ii];
        v.s = s;
        v.si = 0;
        v.init = true;
        if (s->tensor < 0 || (uint32_t)s->tensor >= m->ntensors || m->tensors[s->tensor].kind != IR_STATE ||
            ir_find_init(m, s->tensor) != s) {
            bad(&v, "init statement of no state, or a second one of its state", s->root);
            break;
        }
        if (s->per_step) bad(&v, "init statement marked per step", s->root);
        check_stmt_body(&v, s);
    }
    v.init = false;
    for (uint32_t si = 0; v.ok && si < m->nstmts; si++) {
        const ir_stmt *s = &m->stmts[si];
        v.s = s;
        v.si = si;
        if (s->tensor < 0 || (uint32_t)s->tensor >= m->ntensors) {
            bad(&v, "statement defines no tensor", s->root);
            break;
        }
        const ir_tensor *t = &m->tensors[s->tensor];
        if (t->kind == IR_INPUT || t->kind == IR_PARAM) bad(&v, "statement writes an input or a param", s->root);
        if (defs[s->tensor]++) bad(&v, "tensor defined twice", s->root);
        if (t->def != (int)si) bad(&v, "tensor's def is not this statement", s->root);
        if (s->per_step != (t->kind != IR_LET || t->per_step)) bad(&v, "statement's per_step flag is wrong", s->root);
        check_stmt_body(&v, s);
    }
    for (uint32_t i = 0; v.ok && i < m->ntensors; i++)
        if (m->tensors[i].kind == IR_OUTPUT && defs[i] != 1) bad(&v, "output not written exactly once", 0);
    free(v.bound);
    free(defs);
    return v.ok;
}
