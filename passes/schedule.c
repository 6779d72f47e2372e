/* schedule.c: index classes, which of them split across parallel workers, and
 * which state updates may run in place (see passes.h). Union-find over slots:
 * one slot per variable, one per axis of every state, let and output.
 *
 * Run twice: once as SPEC §3 has it (every reduction poisons its classes), and
 * once for split reductions (pass_sched.partial), where the terms of a linear
 * root (linear_terms) of an output that nothing reads, or of the increment of
 * an accumulator state that nothing else reads, leave their classes free: an
 * item can sum its own tile of them and the tiles' sums be added after the
 * kernel. */
#include <stdlib.h>
#include <string.h>

#include "passes.h"

typedef struct uf {
    int *parent;
    bool *poison;
} uf;

static int find(uf *u, int x)
{
    while (u->parent[x] != x) x = u->parent[x] = u->parent[u->parent[x]];
    return x;
}

static void unite(uf *u, int a, int b)
{
    a = find(u, a);
    b = find(u, b);
    if (a == b) return;
    u->parent[a] = b;
    u->poison[b] |= u->poison[a];
}

static bool tracked(const ir_tensor *t) { return t->kind == IR_STATE || t->kind == IR_LET || t->kind == IR_OUTPUT; }

/* ---- linear roots (split reductions) ----
 * A linear root is a SUM or a read of a partial let (a term), an ADD or SUB of
 * two linear roots, a NEG of one, or a MUL (either side) or DIV (the
 * numerator) of one by any factor. An item that computes it with every term's
 * sum over its own tile of a class gets a partial value, and the items'
 * values add up to the whole: a factor holds no variable of a class split
 * that way (only the statement's own, which a partial output, accumulator or
 * let may not carry, and those its own sums bind, which those sums keep off
 * the grid), and a class is partial only when every term sums over it
 * (split_terms). A partial let is a per-step let with a linear root whose
 * every read is a term of a later partial statement: its value in an item is
 * that item's share, which only its readers' sums make whole. */
#define MAX_TERMS 8

/* A read of let tensor ti that is a term in statement `at`: the let is
 * (still) partial, defined by an earlier statement, read at step t. */
static bool let_term(const ir_model *m, const bool *plet, ir_ref r, uint32_t at)
{
    const ir_inst *in = &m->insts[r];
    if (!plet || in->op != IR_LOAD || in->load.lag_var >= 0) return false;
    const ir_tensor *t = &m->tensors[in->load.tensor];
    return t->kind == IR_LET && t->def >= 0 && (uint32_t)t->def < at && plet[t->def];
}

static bool is_linear(const ir_model *m, const bool *plet, ir_ref r, uint32_t at)
{
    const ir_inst *in = &m->insts[r];
    switch (in->op) {
    case IR_SUM: return true;
    case IR_LOAD: return let_term(m, plet, r, at);
    case IR_ADD:
    case IR_SUB: return is_linear(m, plet, in->a, at) && is_linear(m, plet, in->b, at);
    case IR_NEG:
    case IR_DIV: return is_linear(m, plet, in->a, at);
    case IR_MUL: return is_linear(m, plet, in->a, at) || is_linear(m, plet, in->b, at);
    default: return false;
    }
}

static bool linear_terms(const ir_model *m, const bool *plet, ir_ref r, uint32_t at, bool nested, ir_ref *terms, int *n);

/* A SUM whose body is linear in partial lets' reads (dkinv = sum(i: dkn * k)
 * with dkn partial): the sum of shares is a share, so the SUM is partial over
 * its own classes and the body's too, and those reads are terms. */
static bool sum_of_shares(const ir_model *m, const bool *plet, ir_ref r, uint32_t at)
{
    const ir_inst *in = &m->insts[r];
    ir_ref t[MAX_TERMS];
    int n = 0;
    if (in->op != IR_SUM || !is_linear(m, plet, in->a, at) || !linear_terms(m, plet, in->a, at, false, t, &n)) return false;
    for (int k = 0; k < n; k++)
        if (m->insts[t[k]].op == IR_LOAD) return true;
    return false;
}

/* Appends the terms of linear root r to terms[*n], with (nested) the partial
 * lets' reads inside a sum of shares after it; false past MAX_TERMS. */
static bool linear_terms(const ir_model *m, const bool *plet, ir_ref r, uint32_t at, bool nested, ir_ref *terms, int *n)
{
    const ir_inst *in = &m->insts[r];
    switch (in->op) {
    case IR_SUM:
    case IR_LOAD:
        if (*n >= MAX_TERMS) return false;
        terms[(*n)++] = r;
        if (in->op == IR_LOAD || !nested || !sum_of_shares(m, plet, r, at)) return true;
        {
            ir_ref t[MAX_TERMS];
            int k = 0;
            if (!linear_terms(m, plet, in->a, at, false, t, &k)) return false;
            for (int i = 0; i < k; i++) {
                if (m->insts[t[i]].op != IR_LOAD) continue;
                if (*n >= MAX_TERMS) return false;
                terms[(*n)++] = t[i];
            }
        }
        return true;
    case IR_ADD:
    case IR_SUB:
        return linear_terms(m, plet, in->a, at, nested, terms, n) && linear_terms(m, plet, in->b, at, nested, terms, n);
    case IR_NEG:
    case IR_DIV: return linear_terms(m, plet, in->a, at, nested, terms, n);
    case IR_MUL: return linear_terms(m, plet, is_linear(m, plet, in->a, at) ? in->a : in->b, at, nested, terms, n);
    default: return false;
    }
}

typedef struct ctx {
    const ir_model *m;
    uf u;
    int nvars; /* slots [0, nvars) are variables, then tensor axes */
    const ir_stmt *s;
    bool *self_ok; /* per statement: in-place so far */
    uint32_t si;
    bool partial;   /* the split-reductions schedule */
    bool *eligible; /* [nstmts] partial: its linear root's terms may be partial */
    ir_ref *terms;  /* [nstmts * MAX_TERMS] partial: the terms (SUMs, partial lets' reads) of each eligible statement */
    int *nterms;    /* [nstmts] */
    ir_ref *lin;    /* [nstmts] partial: each eligible statement's linear root (an accumulator's increment) */
    int *pset;      /* [nstmts * MAX_PSET] partial: slots whose classes the statement is partial over */
    int *npset;     /* [nstmts] */
} ctx;

#define MAX_PSET 16

static int axis_slot(ctx *c, int tensor, int axis) { return c->nvars + tensor * IR_MAX_RANK + axis; }

static void walk(ctx *c, ir_ref r)
{
    const ir_model *m = c->m;
    if (r == IR_NONE) return;
    const ir_inst *in = &m->insts[r];
    if (in->op == IR_LOAD) {
        const ir_tensor *t = &m->tensors[in->load.tensor];
        const ir_tensor *lhs = &m->tensors[c->s->tensor];
        bool self = in->load.tensor == c->s->tensor && t->kind == IR_STATE && !in->load.after_update;
        if (in->load.lag_var >= 0) c->u.poison[find(&c->u, in->load.lag_var)] = true;
        for (int i = 0; i < t->rank; i++) {
            const ir_index *ix = &m->ix[in->load.ix + (uint32_t)i];
            if (self && !(ix->kind == IR_IX_VAR && ix->var == c->s->vars[i])) c->self_ok[c->si] = false;
            if (!tracked(t)) continue;
            int slot = axis_slot(c, in->load.tensor, i);
            /* a group of one (h / 1, h * 1 + h2 with h2 < 1: the gradients' gather over
             * grouped reads at R = 1) names the variable's own value: on a GPU plan,
             * whose codegen reads it at the variable's local value, it ties like one */
            bool unit = (ix->kind == IR_IX_DIV || ix->kind == IR_IX_AFFINE) && ix->k == 1;
            if (ix->kind == IR_IX_VAR || (c->partial && unit))
                unite(&c->u, ix->var, slot);
            else
                c->u.poison[find(&c->u, slot)] = true;
        }
        (void)lhs;
        return;
    }
    if (in->op == IR_SUM || in->op == IR_RMAX) {
        walk(c, in->a);
        /* a reduction over a class ties its values together, unless it is a
         * term of a linear root that may be partial (only sums' partials add up) */
        bool partial = false;
        for (int k = 0; c->partial && c->eligible[c->si] && k < c->nterms[c->si]; k++)
            partial |= c->terms[(size_t)c->si * MAX_TERMS + (size_t)k] == r;
        for (uint32_t i = 0; !partial && i < in->red.nvars; i++) c->u.poison[find(&c->u, (int)m->red_vars[in->red.vars + i])] = true;
        return;
    }
    walk(c, in->a);
    walk(c, in->b);
    walk(c, in->c);
}

/* Statement si (partial schedule) is partial over a class whose root is marked. */
static bool partial_in(ctx *c, int si, const bool *marked)
{
    if (si < 0 || !c->partial || !c->eligible[si]) return false;
    for (int k = 0; k < c->npset[si]; k++)
        if (marked[find(&c->u, c->pset[(size_t)si * MAX_PSET + (size_t)k])]) return true;
    return false;
}

/* The class roots term r of a linear root runs over: a SUM's variables', a
 * partial let's own (pset); -1 past MAX_PSET. */
static int term_roots(ctx *c, ir_ref r, uint32_t si, int *roots);

/* The classes every term of linear root r runs over (appended to roots[n..]);
 * -1 past MAX_PSET. */
static int common_roots(ctx *c, ir_ref r, uint32_t si, int *roots, int n)
{
    ir_ref t[MAX_TERMS];
    int nt = 0, rr[MAX_TERMS][MAX_PSET], nr[MAX_TERMS];
    if (!linear_terms(c->m, c->eligible, r, si, false, t, &nt)) return -1;
    for (int k = 0; k < nt; k++)
        if ((nr[k] = term_roots(c, t[k], si, rr[k])) < 0) return -1;
    /* a class some term runs over and another does not would be counted once per
     * tile in that other term: it stays whole */
    for (int k = 0; k < nt; k++)
        for (int i = 0; i < nr[k]; i++) {
            bool everywhere = true;
            for (int o = 0; everywhere && o < nt; o++) {
                bool here = false;
                for (int j = 0; !here && j < nr[o]; j++) here = rr[o][j] == rr[k][i];
                everywhere = here;
            }
            if (!everywhere) c->u.poison[rr[k][i]] = true;
            else if (k == 0) {
                if (n == MAX_PSET) return -1;
                roots[n++] = rr[0][i];
            }
        }
    return n;
}

/* The class roots term r of statement si's linear root runs over: a SUM's
 * variables' (and, for a sum of shares, its body's), a partial let's own
 * (pset); -1 past MAX_PSET. */
static int term_roots(ctx *c, ir_ref r, uint32_t si, int *roots)
{
    const ir_model *m = c->m;
    const ir_inst *in = &m->insts[r];
    int n = 0;
    if (in->op == IR_SUM) {
        for (uint32_t i = 0; i < in->red.nvars; i++) {
            if (n == MAX_PSET) return -1;
            roots[n++] = find(&c->u, (int)m->red_vars[in->red.vars + i]);
        }
        return sum_of_shares(m, c->eligible, r, si) ? common_roots(c, in->a, si, roots, n) : n;
    }
    int L = m->tensors[in->load.tensor].def;
    for (int k = 0; k < c->npset[L]; k++) roots[n++] = find(&c->u, c->pset[(size_t)L * MAX_PSET + (size_t)k]);
    return n;
}

/* What an over-long linear root (past MAX_PSET) would have been partial over
 * stays whole. */
static void poison_terms(ctx *c, uint32_t si)
{
    const ir_model *m = c->m;
    for (int k = 0; k < c->nterms[si]; k++) {
        const ir_inst *in = &m->insts[c->terms[(size_t)si * MAX_TERMS + (size_t)k]];
        if (in->op == IR_SUM) {
            for (uint32_t i = 0; i < in->red.nvars; i++) c->u.poison[find(&c->u, (int)m->red_vars[in->red.vars + i])] = true;
            continue;
        }
        int L = m->tensors[in->load.tensor].def;
        for (int j = 0; j < c->npset[L]; j++) c->u.poison[find(&c->u, c->pset[(size_t)L * MAX_PSET + (size_t)j])] = true;
    }
}

/* In statement order, what each eligible statement is partial over: the
 * classes every one of its terms runs over (common_roots, which keeps the
 * others whole), but a class a partial let carries, which would split the
 * let itself (poisoned too). */
static void split_terms(ctx *c)
{
    const ir_model *m = c->m;
    int roots[MAX_PSET];
    for (uint32_t si = 0; si < m->nstmts; si++) {
        c->npset[si] = 0;
        if (!c->eligible[si]) continue;
        int n = common_roots(c, c->lin[si], si, roots, 0);
        if (n < 0) {
            poison_terms(c, si);
            continue;
        }
        const ir_stmt *s = &m->stmts[si];
        const ir_tensor *t = &m->tensors[s->tensor];
        for (int i = 0; i < n; i++) {
            bool carried = false;
            for (int ax = 0; t->kind == IR_LET && ax < t->rank; ax++) carried |= find(&c->u, axis_slot(c, s->tensor, ax)) == roots[i];
            if (carried) c->u.poison[roots[i]] = true;
            bool dup = false;
            for (int j = 0; j < c->npset[si]; j++) dup |= find(&c->u, c->pset[(size_t)si * MAX_PSET + (size_t)j]) == roots[i];
            if (!dup && !c->u.poison[roots[i]]) c->pset[(size_t)si * MAX_PSET + (size_t)c->npset[si]++] = roots[i];
        }
    }
}

/* Counts the axes of tensor ti whose class root is in `roots` (marked). */
static int axes_in(ctx *c, uint32_t ti, const bool *marked)
{
    int n = 0;
    for (int ax = 0; ax < c->m->tensors[ti].rank; ax++) n += marked[find(&c->u, axis_slot(c, (int)ti, ax))];
    return n;
}

/* Two unpoisoned classes over the same dim that no variable ties together
 * (a state and an output that are both elementwise in c but never read each
 * other) can still be split together: value v of one goes with value v of
 * the other. Such a group is merged into one class when every state and
 * output has exactly one axis in it; otherwise they stay apart. */
static void merge_aligned(ctx *c)
{
    const ir_model *m = c->m;
    int nslots = c->nvars + (int)m->ntensors * IR_MAX_RANK;
    bool *marked = calloc((size_t)nslots, sizeof *marked);
    if (!marked) return; /* the merge only widens parallelism: skipping it is safe */
    for (uint32_t dim = 0; dim < m->ndims; dim++) {
        int nroots = 0, first = -1;
        for (int i = 0; i < nslots; i++) marked[i] = false;
        for (uint32_t ti = 0; ti < m->ntensors; ti++) {
            const ir_tensor *t = &m->tensors[ti];
            if (!tracked(t)) continue;
            for (int ax = 0; ax < t->rank; ax++) {
                int r = find(&c->u, axis_slot(c, (int)ti, ax));
                if ((uint32_t)t->dims[ax] != dim || c->u.poison[r] || marked[r]) continue;
                marked[r] = true;
                nroots++;
                if (first < 0) first = r;
            }
        }
        if (nroots < 2) continue;
        bool ok = true;
        for (uint32_t ti = 0; ok && ti < m->ntensors; ti++) {
            const ir_tensor *t = &m->tensors[ti];
            if (t->kind != IR_STATE && t->kind != IR_OUTPUT) continue;
            int n = axes_in(c, ti, marked);
            ok = n == 1 || (n == 0 && partial_in(c, t->def, marked));
        }
        if (!ok) continue;
        for (int i = 0; i < nslots; i++)
            if (marked[i]) unite(&c->u, i, first);
    }
    free(marked);
}

/* The statements whose linear root's terms may be partial, and their terms:
 * a per-step output no statement reads, and the update `S = S + L` (or `L + S`)
 * of an accumulator state S, read by no other statement, with no init (an
 * item of a tile past the first starts from zero; the tiles' final values are
 * added after the kernel). */
static bool accumulator(const ir_model *m, uint32_t si, ir_ref *inc)
{
    const ir_stmt *s = &m->stmts[si];
    const ir_tensor *t = &m->tensors[s->tensor];
    const ir_inst *in = &m->insts[s->root];
    if (t->kind != IR_STATE || t->def != (int)si || in->op != IR_ADD || ir_find_init(m, s->tensor)) return false;
    for (int side = 0; side < 2; side++) {
        const ir_inst *ld = &m->insts[side ? in->b : in->a];
        if (ld->op != IR_LOAD || ld->load.tensor != s->tensor || ld->load.after_update || ld->load.lag_var >= 0) continue;
        bool own = true;
        for (int i = 0; i < t->rank; i++) {
            const ir_index *ix = &m->ix[ld->load.ix + (uint32_t)i];
            own &= ix->kind == IR_IX_VAR && ix->var == s->vars[i];
        }
        if (!own) continue;
        *inc = side ? in->a : in->b;
        return !ir_reads(m, *inc, s->tensor);
    }
    return false;
}

static bool reaches(const ir_model *m, ir_ref from, ir_ref r)
{
    if (from == IR_NONE) return false;
    if (from == r) return true;
    const ir_inst *in = &m->insts[from];
    if (in->op == IR_CONST || in->op == IR_LOAD || in->op == IR_IDX) return false;
    return reaches(m, in->a, r) || reaches(m, in->b, r) || reaches(m, in->c, r);
}

static bool in_stmt(const ir_model *m, uint32_t si, ir_ref r) { return reaches(m, m->stmts[si].root, r); }

/* The statements whose linear root's terms may be partial, and their terms:
 * per-step outputs, accumulators and partial lets (above), until nothing
 * changes: a statement whose root is no longer linear (a let it read stopped
 * being partial) and a let read other than as a term are dropped. */
static void find_eligible(const ir_model *m, bool *eligible, ir_ref *terms, int *nterms, ir_ref *lin)
{
    for (uint32_t si = 0; si < m->nstmts; si++) {
        const ir_stmt *s = &m->stmts[si];
        const ir_tensor *t = &m->tensors[s->tensor];
        ir_ref inc;
        lin[si] = s->root;
        eligible[si] = (t->kind == IR_OUTPUT || t->kind == IR_LET) && t->per_step && s->per_step && t->def == (int)si;
        if (accumulator(m, si, &inc)) eligible[si] = true, lin[si] = inc;
    }
    for (bool changed = true; changed;) {
        changed = false;
        for (uint32_t si = 0; si < m->nstmts; si++) {
            nterms[si] = 0;
            if (!eligible[si]) continue;
            if (!is_linear(m, eligible, lin[si], si) ||
                !linear_terms(m, eligible, lin[si], si, true, &terms[(size_t)si * MAX_TERMS], &nterms[si]))
                eligible[si] = false, nterms[si] = 0, changed = true;
        }
        /* nothing else may read the tensor: a state only its own update, a let only as a term */
        for (uint32_t r = 0; r < m->ninsts; r++) {
            const ir_inst *in = &m->insts[r];
            if (in->op != IR_LOAD) continue;
            const ir_tensor *t = &m->tensors[in->load.tensor];
            if (t->def < 0 || !eligible[t->def]) continue;
            bool ok = false;
            if (t->kind == IR_STATE) ok = in_stmt(m, (uint32_t)t->def, r);
            for (uint32_t si = 0; t->kind == IR_LET && !ok && si < m->nstmts; si++)
                for (int k = 0; eligible[si] && k < nterms[si]; k++) ok |= terms[(size_t)si * MAX_TERMS + (size_t)k] == r;
            if (!ok) eligible[t->def] = false, changed = true;
        }
    }
    for (uint32_t si = 0; si < m->nstmts; si++)
        if (!eligible[si]) nterms[si] = 0;
}

static bool schedule(arena *a, const ir_model *m, bool partial, pass_sched *out, diag *d)
{
    ctx c = {.m = m, .nvars = (int)m->nvars, .partial = partial};
    int nslots = (int)m->nvars + (int)m->ntensors * IR_MAX_RANK;
    c.u.parent = malloc((size_t)(nslots ? nslots : 1) * sizeof *c.u.parent);
    c.u.poison = calloc((size_t)(nslots ? nslots : 1), sizeof *c.u.poison);
    c.self_ok = arena_array(a, m->nstmts ? m->nstmts : 1, sizeof *c.self_ok);
    int *root_class = malloc((size_t)(nslots ? nslots : 1) * sizeof *root_class);
    c.eligible = arena_array(a, m->nstmts ? m->nstmts : 1, sizeof *c.eligible);
    c.terms = arena_array(a, (m->nstmts ? m->nstmts : 1) * MAX_TERMS, sizeof *c.terms);
    c.nterms = arena_array(a, m->nstmts ? m->nstmts : 1, sizeof *c.nterms);
    c.lin = arena_array(a, m->nstmts ? m->nstmts : 1, sizeof *c.lin);
    c.pset = arena_array(a, (m->nstmts ? m->nstmts : 1) * MAX_PSET, sizeof *c.pset);
    c.npset = arena_array(a, m->nstmts ? m->nstmts : 1, sizeof *c.npset);
    memset(out, 0, sizeof *out);
    out->var_class = arena_array(a, m->nvars ? m->nvars : 1, sizeof(int));
    out->axis_class = arena_array(a, (size_t)m->ntensors * IR_MAX_RANK + 1, sizeof(int));
    out->class_dim = arena_array(a, (size_t)nslots + 1, sizeof(int));
    out->splittable = arena_array(a, (size_t)nslots + 1, sizeof(bool));
    bool ok = c.u.parent && c.u.poison && c.self_ok && root_class && out->var_class && out->axis_class &&
              out->class_dim && out->splittable && c.eligible && c.terms && c.nterms && c.lin && c.pset && c.npset;
    if (!ok) {
        free(c.u.parent);
        free(c.u.poison);
        free(root_class);
        diag_error(d, "out of memory");
        return false;
    }
    for (int i = 0; i < nslots; i++) c.u.parent[i] = i;
    if (partial) find_eligible(m, c.eligible, c.terms, c.nterms, c.lin);
    for (uint32_t si = 0; si < m->nstmts; si++) {
        c.s = &m->stmts[si];
        c.si = si;
        c.self_ok[si] = true;
        const ir_tensor *t = &m->tensors[c.s->tensor];
        for (int i = 0; i < t->rank; i++) unite(&c.u, c.s->vars[i], axis_slot(&c, c.s->tensor, i));
        walk(&c, c.s->root);
    }
    /* an init runs over its state's domain: its variables take the state's classes
     * (it reads params only, which tie nothing) */
    for (uint32_t ii = 0; ii < m->ninits; ii++) {
        const ir_stmt *s = &m->inits[ii];
        const ir_tensor *t = &m->tensors[s->tensor];
        for (int i = 0; i < t->rank; i++) unite(&c.u, s->vars[i], axis_slot(&c, s->tensor, i));
    }
    if (partial) split_terms(&c);
    merge_aligned(&c);
    /* number the classes that hold at least one tracked axis */
    for (int i = 0; i < nslots; i++) root_class[i] = -1;
    for (uint32_t ti = 0; ti < m->ntensors; ti++) {
        const ir_tensor *t = &m->tensors[ti];
        for (int ax = 0; ax < IR_MAX_RANK; ax++) out->axis_class[ti * IR_MAX_RANK + (uint32_t)ax] = -1;
        if (!tracked(t)) continue;
        for (int ax = 0; ax < t->rank; ax++) {
            int r = find(&c.u, axis_slot(&c, (int)ti, ax));
            if (root_class[r] < 0) {
                root_class[r] = out->nclasses;
                out->class_dim[out->nclasses] = t->dims[ax];
                out->splittable[out->nclasses] = !c.u.poison[r];
                out->nclasses++;
            }
            out->axis_class[ti * IR_MAX_RANK + (uint32_t)ax] = root_class[r];
        }
    }
    for (uint32_t v = 0; v < m->nvars; v++) out->var_class[v] = root_class[find(&c.u, (int)v)];
    if (partial) {
        size_t nc = out->nclasses ? (size_t)out->nclasses : 1;
        out->partial_over = arena_array(a, (m->nstmts ? m->nstmts : 1) * nc, sizeof(bool));
        out->class_partial = arena_array(a, nc, sizeof(bool));
        if (a->failed) {
            free(c.u.parent);
            free(c.u.poison);
            free(root_class);
            diag_error(d, "out of memory");
            return false;
        }
        for (uint32_t si = 0; si < m->nstmts; si++)
            for (int j = 0; c.eligible[si] && j < c.npset[si]; j++) {
                int k = root_class[find(&c.u, c.pset[(size_t)si * MAX_PSET + (size_t)j])];
                if (k < 0 || !out->splittable[k]) continue;
                out->partial_over[si * nc + (size_t)k] = true;
                out->class_partial[k] = true;
            }
    }
    /* every state and output must carry a splittable class, and only once (an
     * output or accumulator whose terms are partial over it: not at all) */
    for (int k = 0; k < out->nclasses; k++) {
        for (uint32_t ti = 0; out->splittable[k] && ti < m->ntensors; ti++) {
            const ir_tensor *t = &m->tensors[ti];
            if (t->kind != IR_STATE && t->kind != IR_OUTPUT) continue;
            int count = 0;
            for (int ax = 0; ax < t->rank; ax++) count += out->axis_class[ti * IR_MAX_RANK + (uint32_t)ax] == k;
            bool part = partial && t->def >= 0 &&
                        out->partial_over[(size_t)t->def * (size_t)out->nclasses + (size_t)k];
            if (part ? count != 0 : count != 1) out->splittable[k] = false;
        }
    }
    out->inplace = c.self_ok;
    for (uint32_t si = 0; si < m->nstmts; si++)
        if (m->tensors[m->stmts[si].tensor].kind != IR_STATE) out->inplace[si] = false;
    free(c.u.parent);
    free(c.u.poison);
    free(root_class);
    return true;
}

bool pass_schedule(arena *a, const ir_model *m, pass_sched *out, diag *d)
{
    if (!schedule(a, m, false, out, d)) return false;
    bool *eligible = arena_array(a, m->nstmts ? m->nstmts : 1, sizeof *eligible);
    if (!eligible) {
        diag_error(d, "out of memory");
        return false;
    }
    ir_ref *terms = arena_array(a, (m->nstmts ? m->nstmts : 1) * MAX_TERMS, sizeof *terms);
    int *nterms = arena_array(a, m->nstmts ? m->nstmts : 1, sizeof *nterms);
    ir_ref *lin = arena_array(a, m->nstmts ? m->nstmts : 1, sizeof *lin);
    if (!terms || !nterms || !lin) {
        diag_error(d, "out of memory");
        return false;
    }
    find_eligible(m, eligible, terms, nterms, lin);
    bool any = false;
    for (uint32_t si = 0; si < m->nstmts; si++) any |= eligible[si];
    if (!any) return true;
    pass_sched *ps = arena_alloc(a, sizeof *ps);
    if (!ps) {
        diag_error(d, "out of memory");
        return false;
    }
    if (!schedule(a, m, true, ps, d)) return false;
    out->partial = ps;
    return true;
}

void pass_schedule_print(strbuf *out, const ir_model *m, const pass_sched *s)
{
    for (int k = 0; k < s->nclasses; k++) {
        sb_printf(out, "  class %d: %s = %lld, %s:", k, m->dims[s->class_dim[k]].name,
                  (long long)m->dims[s->class_dim[k]].value, s->splittable[k] ? "split" : "local");
        for (uint32_t ti = 0; ti < m->ntensors; ti++)
            for (int ax = 0; ax < m->tensors[ti].rank; ax++)
                if (s->axis_class[ti * IR_MAX_RANK + (uint32_t)ax] == k)
                    sb_printf(out, " %s.%d", m->tensors[ti].name, ax);
        sb_putc(out, '\n');
    }
    for (uint32_t si = 0; si < m->nstmts; si++)
        if (m->tensors[m->stmts[si].tensor].kind == IR_STATE)
            sb_printf(out, "  update %s: %s\n", m->tensors[m->stmts[si].tensor].name,
                      s->inplace[si] ? "in place" : "through a scratch copy");
}
