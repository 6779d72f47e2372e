/* loops.c: the planner's steps for targets with loops (a CPU): step 5, the
 * loop transforms (interchanged reductions: o[j] = sum(i: q[i] * S[i,j])
 * accumulated into a buffer along j, i outside, when the big operand is
 * contiguous along the statement's last axis; fusion: a state update and the
 * adjacent readout that reduces over the rest of its loops run in one nest,
 * one pass over the state per step; hoisting: a costly subexpression that
 * varies along one outer loop only is computed for all its values before the
 * nest, where it vectorises), and step 8: the cache-line prefetch of the
 * per-step slices an item reads and writes, one step ahead. */
#include "passes/plan_steps.h"

#define PREFETCH_MAX_LINES 32

/* Largest element count of a tensor read in the tree of r whose last index is
 * variable v (or, with `red`, one of the reduction's own variables). */
static int64_t weight_last(const pass_plan *p, ir_ref r, int v, const ir_inst *red)
{
    const ir_model *m = p->m;
    if (r == IR_NONE) return 0;
    const ir_inst *in = &m->insts[r];
    if (in->op == IR_LOAD) {
        const ir_tensor *t = &m->tensors[in->load.tensor];
        if (t->rank < 2) return 0;
        const ir_index *ix = &m->ix[in->load.ix + (uint32_t)t->rank - 1];
        if (ix->kind != IR_IX_VAR) return 0;
        bool hit = false;
        if (red) {
            for (uint32_t i = 0; i < red->red.nvars; i++) hit |= (int)m->red_vars[red->red.vars + i] == ix->var;
        } else {
            hit = ix->var == v;
        }
        return hit ? p->elems[in->load.tensor] : 0;
    }
    int64_t w = 0;
    for (int i = 0; i < 3; i++) {
        int64_t x = weight_last(p, ir_operand(in, i), v, red);
        if (x > w) w = x;
    }
    return w;
}

/* Marks the SUMs of statement s that are not inside another reduction and
 * whose big operand is contiguous along s's last variable v. */
static void mark_xchg(pass_plan *p, uint32_t si, ir_ref r, int v)
{
    const ir_model *m = p->m;
    if (r == IR_NONE) return;
    const ir_inst *in = &m->insts[r];
    if (in->op == IR_RMAX) return;
    if (in->op == IR_SUM) {
        if (weight_last(p, in->a, v, NULL) > weight_last(p, in->a, v, in)) {
            p->xchg_var[r] = v;
            p->stmt_xchg[si] = true;
        }
        return;
    }
    mark_xchg(p, si, in->a, v);
    mark_xchg(p, si, in->b, v);
    mark_xchg(p, si, in->c, v);
}

/* ---- fusion of a state update U with an adjacent readout R (before or after it)
 * that reduces over the rest of U's loop nest: mamba2's y[p] = sum(n: S[p,n] C[n])
 * after S[p,n] = ..., or o[j] = sum(i: q[i] S[i,j]) accumulated along j. R's
 * loops (its free loops, then the reduction's, or with an interchanged sum the
 * reduction's before its last free loop) must pair up, class by class, with U's
 * loops, and R may read U's state only inside that reduction and only at the
 * element U is at; U must be in place, without reductions, and not read R. */

static int nreductions(const ir_model *m, ir_ref r, ir_ref *last)
{
    if (r == IR_NONE) return 0;
    const ir_inst *in = &m->insts[r];
    if (in->op == IR_SUM || in->op == IR_RMAX) {
        *last = r;
        return 1 + nreductions(m, in->a, last);
    }
    if (in->op == IR_LOAD || in->op == IR_CONST) return 0;
    return nreductions(m, in->a, last) + nreductions(m, in->b, last) + nreductions(m, in->c, last);
}

/* Every read of U's state in the tree of r is at U's current element, given
 * map (R's variable -> U's variable); none at all outside `sum`. */
static bool reads_at_element(const pass_plan *p, ir_ref r, const ir_stmt *u, const int *map, ir_ref sum, bool inside)
{
    const ir_model *m = p->m;
    if (r == IR_NONE) return true;
    const ir_inst *in = &m->insts[r];
    if (in->op == IR_CONST) return true;
    if (in->op != IR_LOAD)
        return reads_at_element(p, in->a, u, map, sum, inside || r == sum) &&
               reads_at_element(p, in->b, u, map, sum, inside || r == sum) &&
               reads_at_element(p, in->c, u, map, sum, inside || r == sum);
    if (in->load.tensor != u->tensor) return true;
    if (!inside) return false;
    const ir_tensor *t = &m->tensors[u->tensor];
    for (int i = 0; i < t->rank; i++) {
        const ir_index *ix = &m->ix[in->load.ix + (uint32_t)i];
        if (ix->kind != IR_IX_VAR) return false;
        int uv = u->vars[i];
        if (plan_var_fixed(p, ix->var) ? !plan_var_fixed(p, uv) || p->sched.var_class[ix->var] != p->sched.var_class[uv]
                                  : map[ix->var] != uv)
            return false;
    }
    return true;
}

/* The loop variables of R in emission order; returns their number. */
int plan_readout_loops(const pass_plan *p, const ir_stmt *r, ir_ref sum, bool xchg, int *out)
{
    const ir_model *m = p->m;
    const ir_tensor *t = &m->tensors[r->tensor];
    int n = 0, last = -1;
    for (int i = 0; i < t->rank; i++) {
        if (plan_var_fixed(p, r->vars[i])) continue;
        if (xchg && i == t->rank - 1)
            last = r->vars[i];
        else
            out[n++] = r->vars[i];
    }
    const ir_inst *in = &m->insts[sum];
    for (uint32_t i = 0; i < in->red.nvars && n < 2 * IR_MAX_RANK; i++) out[n++] = (int)m->red_vars[in->red.vars + i];
    if (last >= 0 && n < 2 * IR_MAX_RANK) out[n++] = last;
    return n;
}

static bool try_fuse(pass_plan *p, arena *a, uint32_t ui, uint32_t ri)
{
    const ir_model *m = p->m;
    const ir_stmt *u = &m->stmts[ui], *r = &m->stmts[ri];
    const ir_tensor *rt = &m->tensors[r->tensor];
    if (!r->per_step || (rt->kind != IR_OUTPUT && rt->kind != IR_LET) || p->fuse[ri] != -1) return false;
    if (ir_reads(m, u->root, r->tensor)) return false;
    ir_ref sum = IR_NONE;
    if (nreductions(m, r->root, &sum) != 1 || m->insts[sum].op != IR_SUM) return false;
    int rl[2 * IR_MAX_RANK], ul[IR_MAX_RANK];
    int nr = plan_readout_loops(p, r, sum, p->xchg_var[sum] >= 0, rl), nu = 0;
    for (int i = 0; i < m->tensors[u->tensor].rank; i++)
        if (!plan_var_fixed(p, u->vars[i])) ul[nu++] = u->vars[i];
    if (nr != nu || nu == 0) return false;
    int *map = arena_array(a, m->nvars + 1, sizeof *map);
    if (!map) return false;
    for (uint32_t v = 0; v < m->nvars; v++) map[v] = -1;
    for (int i = 0; i < nu; i++) {
        int k = p->sched.var_class[rl[i]];
        if (k < 0 || k != p->sched.var_class[ul[i]]) return false;
        map[rl[i]] = ul[i];
    }
    if (!reads_at_element(p, r->root, u, map, sum, false)) return false;
    p->fuse[ui] = (int)ri;
    p->fuse[ri] = -2;
    p->fuse_sum[ui] = sum;
    return true;
}

static void plan_fusion(pass_plan *p, arena *a)
{
    const ir_model *m = p->m;
    for (uint32_t si = 0; si < m->nstmts; si++) p->fuse[si] = -1;
    for (uint32_t si = 0; si < m->nstmts; si++) {
        const ir_stmt *u = &m->stmts[si];
        ir_ref none;
        if (!u->per_step || m->tensors[u->tensor].kind != IR_STATE || !p->sched.inplace[si] || p->fuse[si] != -1 ||
            nreductions(m, u->root, &none) != 0)
            continue;
        if (si + 1 < m->nstmts && try_fuse(p, a, si, si + 1)) continue;
        if (si > 0) try_fuse(p, a, si, si - 1);
    }
}

/* ---- hoisting: exp(lg[t,h,i]) in S[h,i,j] = exp(lg[t,h,i]) * S[h,i,j] + ...
 * would be computed, scalar, once per i inside the i loop; computed before the
 * nest for every i into a small buffer, it vectorises along i. A subtree is
 * hoisted when it holds an expensive operation, no reduction, and reads the
 * statement's loop variables through exactly one of them, not the innermost. */

#define HOIST_OTHER (1u << IR_MAX_RANK)      /* a variable that is not the statement's */
#define HOIST_COSTLY (1u << (IR_MAX_RANK + 1)) /* an expensive operation */
#define HOIST_NEVER (1u << (IR_MAX_RANK + 2))  /* a reduction */

/* Variables the item fixes are constants here. */
static unsigned var_bit(const pass_plan *p, const ir_stmt *s, int rank, int v)
{
    if (plan_var_fixed(p, v)) return 0;
    for (int i = 0; i < rank; i++)
        if (s->vars[i] == v) return 1u << i;
    return HOIST_OTHER;
}

/* Bit i: the tree reads statement variable vars[i]; then the flags above. */
static unsigned hoist_scan(const pass_plan *p, const ir_stmt *s, ir_ref r)
{
    const ir_model *m = p->m;
    if (r == IR_NONE) return 0;
    const ir_inst *in = &m->insts[r];
    int rank = m->tensors[s->tensor].rank;
    switch ((ir_op)in->op) {
    case IR_CONST: return 0;
    case IR_IDX: return var_bit(p, s, rank, in->var); /* the variable's value, as a number */
    case IR_LOAD: {
        unsigned f = in->load.lag_var >= 0 ? var_bit(p, s, rank, in->load.lag_var) : 0;
        const ir_tensor *t = &m->tensors[in->load.tensor];
        for (int i = 0; i < t->rank; i++) {
            const ir_index *ix = &m->ix[in->load.ix + (uint32_t)i];
            if (ix->kind != IR_IX_CONST) f |= var_bit(p, s, rank, ix->var);
            if (ix->kind == IR_IX_AFFINE) f |= var_bit(p, s, rank, ix->var2);
        }
        return f;
    }
    case IR_SUM:
    case IR_RMAX: return HOIST_NEVER;
    default:
        return (op_table[in->op].cost >= p->target.hoist_cost ? HOIST_COSTLY : 0) | hoist_scan(p, s, in->a) |
               hoist_scan(p, s, in->b) | hoist_scan(p, s, in->c);
    }
}

static void mark_hoists(pass_plan *p, const ir_stmt *s, ir_ref r, int innermost, bool parent)
{
    const ir_model *m = p->m;
    if (r == IR_NONE) return;
    const ir_inst *in = &m->insts[r];
    if (in->op == IR_SUM || in->op == IR_RMAX || in->op == IR_LOAD || in->op == IR_CONST || in->op == IR_IDX) return;
    unsigned f = hoist_scan(p, s, r), vars = f & ((1u << IR_MAX_RANK) - 1);
    bool one = vars && !(vars & (vars - 1));
    int pos = one ? __builtin_ctz(vars) : -1;
    bool ok = (f & HOIST_COSTLY) && !(f & (HOIST_OTHER | HOIST_NEVER)) && one && pos != innermost;
    if (ok && !parent) p->hoist_var[r] = s->vars[pos];
    mark_hoists(p, s, in->a, innermost, ok || parent);
    mark_hoists(p, s, in->b, innermost, ok || parent);
    mark_hoists(p, s, in->c, innermost, ok || parent);
}

static void plan_hoists(pass_plan *p)
{
    const ir_model *m = p->m;
    for (uint32_t r = 0; r < m->ninsts; r++) p->hoist_var[r] = -1;
    for (uint32_t si = 0; si < m->nstmts; si++) {
        const ir_stmt *s = &m->stmts[si];
        const ir_tensor *t = &m->tensors[s->tensor];
        if (!s->per_step || p->fuse[si] == -2 || p->stmt_xchg[si]) continue;
        int innermost = -1;
        for (int i = 0; i < t->rank; i++)
            if (!plan_var_fixed(p, s->vars[i])) innermost = i;
        if (innermost > 0) mark_hoists(p, s, s->root, innermost, false);
    }
}

/* ---- step 8: prefetch */

/* The index class that axis ax of input ti follows in every read of it (so an
 * item reads only its tile of that axis), or -1 (the whole axis). */
static int input_axis_class(const pass_plan *p, int ti, int ax)
{
    const ir_model *m = p->m;
    int k = -2;
    for (uint32_t r = 0; r < m->ninsts; r++) {
        const ir_inst *in = &m->insts[r];
        if (in->op != IR_LOAD || in->load.tensor != ti) continue;
        const ir_index *ix = &m->ix[in->load.ix + (uint32_t)ax];
        int kr = ix->kind == IR_IX_VAR ? p->sched.var_class[ix->var] : -1;
        if (k != -2 && kr != k) return -1;
        k = kr;
    }
    return k < 0 ? -1 : k;
}

/* Whether per-step input or output ti gets hints: its slice in an item (cls[i]:
 * the tiled class axis i follows, or -1 for the whole axis) spans *span + 1
 * floats, at most PREFETCH_MAX_LINES lines. A full tile's extent is assumed:
 * the last tile of a class that does not divide evenly is shorter, and hints
 * past it would touch the next item's lines, which for an output (a write
 * hint) another thread may own; so such an output gets none. */
static bool prefetched(const pass_plan *p, int ti, int cls[IR_MAX_RANK], int64_t *span)
{
    const ir_model *m = p->m;
    const ir_tensor *t = &m->tensors[ti];
    if (!t->per_step || (t->kind != IR_INPUT && t->kind != IR_OUTPUT)) return false;
    bool uneven = false;
    *span = 0;
    for (int i = 0; i < t->rank; i++) {
        int k = t->kind == IR_INPUT ? input_axis_class(p, ti, i) : plan_axis_class(p, ti, i);
        cls[i] = k >= 0 && p->cls[k].ntiles > 1 ? k : -1;
        int64_t dim = m->dims[t->dims[i]].value;
        *span += ((cls[i] >= 0 ? p->cls[k].tile : dim) - 1) * p->fstride[ti * IR_MAX_RANK + i];
        uneven |= cls[i] >= 0 && dim % p->cls[k].tile != 0;
    }
    return *span / PLAN_LINE_FLOATS + 2 <= PREFETCH_MAX_LINES && !(t->kind == IR_OUTPUT && uneven);
}


void plan_prefetch_list(pass_plan *p)
{
    const ir_model *m = p->m;
    for (uint32_t ti = 0; ti < m->ntensors; ti++) {
        plan_prefetch *f = &p->prefetch[p->nprefetch];
        if (!prefetched(p, (int)ti, f->cls, &f->span)) continue;
        f->tensor = (int)ti;
        p->nprefetch++;
    }
}


void plan_loop_transforms(arena *a, pass_plan *p)
{
    const ir_model *m = p->m;
    for (uint32_t si = 0; si < m->nstmts; si++) {
        const ir_stmt *s = &m->stmts[si];
        const ir_tensor *t = &m->tensors[s->tensor];
        if (t->rank == 0) continue;
        int v = s->vars[t->rank - 1];
        if (plan_var_fixed(p, v) || plan_var_extent(p, v) < 2) continue;
        mark_xchg(p, si, s->root, v);
    }
    plan_fusion(p, a);
    plan_hoists(p);
}
