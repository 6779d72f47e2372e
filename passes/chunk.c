/* chunk.c: the chunk form of every state (SPEC §3, the chunked algorithm).
 *
 * The chunked algorithm needs more than the class the analysis proved: it
 * needs the update written as
 *     S[.., i, j](t) = a_t * (S[.., i, j](t-1) - c_t * w_t[i] * sum(m: w_t[m] * S[.., m, j](t-1)))
 *                    + k_t[i] * v_t[j]
 * over a key axis i (the axis every readout contracts), a value axis j (a
 * passive axis: nothing mixes it, no coefficient depends on it; absent for a
 * vector state such as linear attention's normaliser) and head axes (every
 * other axis, independent), with
 *   a_t       the decay: 1 (identity), one value per head (scalar) or one per
 *             key (diagonal along i), provably positive, so that it can be
 *             kept in log space (log a_t, cumulative sums, exp of differences);
 *   w_t, c_t  the delta-rule correction (diag+rank-1 only): the same key vector
 *             w on both sides, a scalar c per head;
 *   k_t, v_t  one outer product: a factor free of j times a factor free of i;
 * and every output that reads S doing so through readouts
 *     R[.., j] = sum(i: q_t[i] * S[.., i, j](t or t-1)) + (terms free of S).
 * This pass finds those parts (products of IR subexpressions, with constants
 * folded into a coefficient) or says, with a location, why a state has no chunk
 * form; the algorithm choice refuses --algo=chunked then, and auto keeps the
 * recurrent algorithm. It reads the analysis and never assumes more than it
 * proved: a decay is taken in log space only when a positivity proof (or, for
 * a time-invariant decay of dims, literals and index values, interval
 * arithmetic) shows it is > 0.
 *
 * The expansion: the update's right side is multiplied out into monomials,
 * sign * coef * f_1 * ... * f_n [* S-read], through + - * / and unary minus,
 * with reads of per-step lets that depend on S (the delta rule's prediction
 * sum(m: w[m] S[m, j])) replaced by their expressions (variables renamed);
 * every subexpression free of S is one factor. Bounded by MAX_MONOS. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "passes/passes.h"

#define MAX_MONOS 64
#define MAX_FACTORS 16
#define NO_ATOM -1

typedef struct mono {
    int sign;
    double coef;
    int nf;
    pass_factor f[MAX_FACTORS];
    ir_ref sread;          /* a read of S(t-1), or IR_NONE */
    const int *smap;       /* its variable map */
    int bound;             /* the atom a sum bound around the S read (the correction's m), or NO_ATOM */
} mono;

typedef struct mlist {
    mono *m;
    int n;
    bool bad;
} mlist;

typedef struct cx {
    const ir_model *m;
    arena *a;
    int state;
    const uint32_t *stmt_of; /* [ninsts] the statement an instruction belongs to */
    int8_t *reads_s;         /* [ninsts] memo: the subtree reads S(t-1) (through lets too), -1 unknown */
    bool after;              /* S(t) (readouts that read the new value) rather than S(t-1) is the variable */
    int natoms;              /* atoms: variable ids, then fresh ones */
    const char *why;         /* the first reason there is no chunk form */
    ir_ref where;
} cx;

static bool refuse(cx *c, ir_ref where, const char *why)
{
    if (!c->why) {
        c->why = why;
        c->where = where;
    }
    return false;
}

/* ---- what a subtree depends on ---- */

static bool let_reads_s(cx *c, int ti);

static bool reads_s(cx *c, ir_ref r)
{
    if (r == IR_NONE) return false;
    if (c->reads_s[r] >= 0) return c->reads_s[r];
    const ir_inst *in = &c->m->insts[r];
    bool y = false;
    if (in->op == IR_LOAD) {
        const ir_tensor *t = &c->m->tensors[in->load.tensor];
        if (in->load.tensor == c->state)
            y = in->load.after_update == c->after;
        else if (t->kind == IR_LET && t->per_step)
            y = let_reads_s(c, in->load.tensor);
    } else if (in->op != IR_CONST) {
        for (int i = 0; i < 3; i++) y |= reads_s(c, ir_operand(in, i));
    }
    c->reads_s[r] = y;
    return y;
}

static bool let_reads_s(cx *c, int ti)
{
    const ir_tensor *t = &c->m->tensors[ti];
    return t->def >= 0 && reads_s(c, c->m->stmts[t->def].root);
}

/* Whether the subtree r (variables mapped by map) depends on atom `atom`
 * (time offsets count as the time axis, not as atoms). */
static bool depends(const cx *c, ir_ref r, const int *map, int atom)
{
    if (r == IR_NONE) return false;
    const ir_inst *in = &c->m->insts[r];
    if (in->op == IR_LOAD) {
        const ir_tensor *t = &c->m->tensors[in->load.tensor];
        for (int i = 0; i < t->rank; i++) {
            const ir_index *ix = &c->m->ix[in->load.ix + (uint32_t)i];
            if (ix->kind != IR_IX_CONST && map[ix->var] == atom) return true;
        }
        if (in->load.lag_var >= 0 && map[in->load.lag_var] == atom) return true;
        return false;
    }
    if (in->op == IR_IDX) return map[in->var] == atom;
    for (int i = 0; i < 3; i++)
        if (depends(c, ir_operand(in, i), map, atom)) return true;
    return false;
}

/* Whether r is per-step: it reads an input, a per-step let, or a state. */
static bool per_step(const cx *c, ir_ref r)
{
    if (r == IR_NONE) return false;
    const ir_inst *in = &c->m->insts[r];
    if (in->op == IR_LOAD) return c->m->tensors[in->load.tensor].per_step || c->m->tensors[in->load.tensor].kind == IR_STATE;
    for (int i = 0; i < 3; i++)
        if (per_step(c, ir_operand(in, i))) return true;
    return false;
}

/* ---- positivity ---- */

typedef struct range {
    double lo, hi;
} range;

/* Interval of a time-invariant subtree of dims, literals and index values (map
 * unused: an index value ranges over its dim); (-inf, inf) when unknown. */
static range interval(const cx *c, ir_ref r)
{
    const range any = {-INFINITY, INFINITY};
    if (r == IR_NONE) return any;
    const ir_inst *in = &c->m->insts[r];
    range x = in->a != IR_NONE ? interval(c, in->a) : any, y = in->b != IR_NONE ? interval(c, in->b) : any;
    switch ((ir_op)in->op) {
    case IR_CONST: return (range){in->num, in->num};
    case IR_IDX: return (range){0, (double)(c->m->dims[c->m->vars[in->var].dim].value - 1)};
    case IR_NEG: return (range){-x.hi, -x.lo};
    case IR_ADD: return (range){x.lo + y.lo, x.hi + y.hi};
    case IR_SUB: return (range){x.lo - y.hi, x.hi - y.lo};
    case IR_MUL:
        if (x.lo >= 0 && y.lo >= 0) return (range){x.lo * y.lo, x.hi * y.hi};
        return any;
    case IR_EXP: return (range){exp(x.lo), exp(x.hi)};
    case IR_SIGMOID: return (range){x.lo > -INFINITY ? 1 / (1 + exp(-x.lo)) : 0, x.hi < INFINITY ? 1 / (1 + exp(-x.hi)) : 1};
    case IR_LOAD: {
        const ir_tensor *t = &c->m->tensors[in->load.tensor];
        if (t->kind == IR_LET && t->def >= 0 && !t->per_step) return interval(c, c->m->stmts[t->def].root);
        return any;
    }
    case IR_POW:
        if (x.lo > 0 && x.hi == x.lo) { /* a fixed base b > 0: b^y is monotone in y */
            double p = pow(x.lo, y.lo), q = pow(x.lo, y.hi);
            return (range){p < q ? p : q, p < q ? q : p};
        }
        return any;
    default: return any;
    }
}

/* A proof that r > 0 wherever it is evaluated. */
static bool positive(const cx *c, ir_ref r)
{
    if (r == IR_NONE) return false;
    const ir_inst *in = &c->m->insts[r];
    switch ((ir_op)in->op) {
    case IR_CONST: return in->num > 0;
    case IR_EXP:
    case IR_SIGMOID:
    case IR_SOFTPLUS: return true;
    case IR_SQRT:
    case IR_RSQRT: return positive(c, in->a);
    case IR_MUL:
    case IR_DIV:
    case IR_ADD:
    case IR_MIN: return positive(c, in->a) && positive(c, in->b);
    case IR_MAX: return positive(c, in->a) || positive(c, in->b);
    case IR_SELECT: return positive(c, in->b) && positive(c, in->c);
    case IR_LOAD: {
        const ir_tensor *t = &c->m->tensors[in->load.tensor];
        if (t->kind == IR_LET && t->def >= 0) return positive(c, c->m->stmts[t->def].root);
        return false;
    }
    default: break;
    }
    return !per_step(c, r) && interval(c, r).lo > 0;
}

/* ---- the expansion into monomials ---- */

static mlist one(cx *c, mono m)
{
    mlist l = {arena_alloc(c->a, sizeof(mono)), 1, false};
    if (!l.m) l.bad = true;
    else l.m[0] = m;
    return l;
}

static mono unit(void) { return (mono){.sign = 1, .coef = 1, .sread = IR_NONE, .bound = NO_ATOM}; }

static mlist concat(cx *c, mlist x, mlist y, int ysign)
{
    if (x.bad || y.bad || x.n + y.n > MAX_MONOS) {
        if (!x.bad && !y.bad) refuse(c, IR_NONE, "the update has too many terms to expand");
        return (mlist){NULL, 0, true};
    }
    mlist l = {arena_array(c->a, (size_t)(x.n + y.n) + 1, sizeof(mono)), x.n + y.n, false};
    if (!l.m) return (mlist){NULL, 0, true};
    if (x.n) memcpy(l.m, x.m, (size_t)x.n * sizeof(mono)); /* x.m may be NULL when empty */
    for (int i = 0; i < y.n; i++) {
        l.m[x.n + i] = y.m[i];
        l.m[x.n + i].sign *= ysign;
    }
    return l;
}

static bool merge(cx *c, mono *out, const mono *x, const mono *y)
{
    *out = *x;
    out->sign *= y->sign;
    out->coef *= y->coef;
    if (x->sread != IR_NONE && y->sread != IR_NONE) {
        refuse(c, y->sread, "the update multiplies the state by itself");
        return false;
    }
    if (y->sread != IR_NONE) {
        out->sread = y->sread;
        out->smap = y->smap;
        out->bound = y->bound;
    }
    if (x->nf + y->nf > MAX_FACTORS) {
        refuse(c, IR_NONE, "a term of the update has too many factors");
        return false;
    }
    memcpy(out->f + x->nf, y->f, (size_t)y->nf * sizeof(pass_factor));
    out->nf = x->nf + y->nf;
    return true;
}

static mlist product(cx *c, mlist x, mlist y)
{
    if (x.bad || y.bad) return (mlist){NULL, 0, true};
    if (x.n * y.n > MAX_MONOS) {
        refuse(c, IR_NONE, "the update has too many terms to expand");
        return (mlist){NULL, 0, true};
    }
    mlist l = {arena_array(c->a, (size_t)(x.n * y.n) + 1, sizeof(mono)), 0, false};
    if (!l.m) return (mlist){NULL, 0, true};
    for (int i = 0; i < x.n; i++)
        for (int j = 0; j < y.n; j++)
            if (!merge(c, &l.m[l.n++], &x.m[i], &y.m[j])) return (mlist){NULL, 0, true};
    return l;
}

static int *copy_map(cx *c, const int *map)
{
    int *m = arena_array(c->a, c->m->nvars + 1, sizeof *m);
    if (m) memcpy(m, map, c->m->nvars * sizeof *m);
    return m;
}

static mlist expand(cx *c, ir_ref r, const int *map, uint32_t stmt);

/* r is free of S: one factor (a constant folds into the coefficient). */
static mlist leaf(cx *c, ir_ref r, const int *map, uint32_t stmt, bool recip)
{
    const ir_inst *in = &c->m->insts[r];
    mono m = unit();
    if (in->op == IR_CONST) {
        if (recip && in->num == 0) {
            refuse(c, r, "the update divides by zero");
            return (mlist){NULL, 0, true};
        }
        m.coef = recip ? 1 / in->num : in->num;
        return one(c, m);
    }
    m.f[0] = (pass_factor){.r = r, .map = map, .stmt = stmt, .recip = recip};
    m.nf = 1;
    return one(c, m);
}

/* A subtree free of S as a product of factors: through *, / and unary minus
 * (a sum stays one factor). */
static mlist factors(cx *c, ir_ref r, const int *map, uint32_t stmt, bool recip)
{
    const ir_inst *in = &c->m->insts[r];
    switch ((ir_op)in->op) {
    case IR_MUL: return product(c, factors(c, in->a, map, stmt, recip), factors(c, in->b, map, stmt, recip));
    case IR_DIV: return product(c, factors(c, in->a, map, stmt, recip), factors(c, in->b, map, stmt, !recip));
    case IR_NEG: return concat(c, (mlist){NULL, 0, false}, factors(c, in->a, map, stmt, recip), -1);
    default: return leaf(c, r, map, stmt, recip);
    }
}

static mlist expand(cx *c, ir_ref r, const int *map, uint32_t stmt)
{
    const ir_model *m = c->m;
    const ir_inst *in = &m->insts[r];
    if (!reads_s(c, r)) return factors(c, r, map, stmt, false);
    switch ((ir_op)in->op) {
    case IR_LOAD: {
        if (in->load.tensor == c->state) {
            if (in->load.after_update != c->after) {
                refuse(c, r, c->after ? "a readout reads the state's old and new values" : "the update reads the state's new value");
                return (mlist){NULL, 0, true};
            }
            mono mo = unit();
            mo.sread = r;
            mo.smap = map;
            return one(c, mo);
        }
        /* a per-step let that reads S: its expression, its variables renamed */
        const ir_tensor *t = &m->tensors[in->load.tensor];
        const ir_stmt *s = &m->stmts[t->def];
        int *lm = copy_map(c, map);
        if (!lm) return (mlist){NULL, 0, true};
        for (int i = 0; i < t->rank; i++) {
            const ir_index *ix = &m->ix[in->load.ix + (uint32_t)i];
            if (ix->kind != IR_IX_VAR || in->load.lag || in->load.lag_var >= 0) {
                refuse(c, r, "a let that reads the state is read at another index or step");
                return (mlist){NULL, 0, true};
            }
            lm[s->vars[i]] = map[ix->var];
        }
        return expand(c, s->root, lm, (uint32_t)t->def);
    }
    case IR_NEG: return concat(c, (mlist){NULL, 0, false}, expand(c, in->a, map, stmt), -1);
    case IR_ADD: return concat(c, expand(c, in->a, map, stmt), expand(c, in->b, map, stmt), 1);
    case IR_SUB: return concat(c, expand(c, in->a, map, stmt), expand(c, in->b, map, stmt), -1);
    case IR_MUL: return product(c, expand(c, in->a, map, stmt), expand(c, in->b, map, stmt));
    case IR_DIV:
        if (reads_s(c, in->b)) break;
        return product(c, expand(c, in->a, map, stmt), factors(c, in->b, map, stmt, true));
    case IR_SUM: {
        /* sum(m: w[m] * S[.., m, j]): the delta rule's prediction */
        if (in->red.nvars != 1) break;
        int *sm = copy_map(c, map);
        if (!sm) return (mlist){NULL, 0, true};
        int atom = c->natoms++;
        sm[m->red_vars[in->red.vars]] = atom;
        mlist body = expand(c, in->a, sm, stmt);
        for (int i = 0; !body.bad && i < body.n; i++) {
            if (body.m[i].sread == IR_NONE || body.m[i].bound != NO_ATOM) {
                refuse(c, r, "a sum in the update holds a term free of the state");
                return (mlist){NULL, 0, true};
            }
            body.m[i].bound = atom;
        }
        return body;
    }
    default: break;
    }
    refuse(c, r, "the update is not a sum of products in the state");
    return (mlist){NULL, 0, true};
}

/* ---- reading the monomials ---- */

/* The atom the S read has on axis ax. */
static int s_atom(const cx *c, const mono *mo, int ax)
{
    const ir_inst *in = &c->m->insts[mo->sread];
    const ir_index *ix = &c->m->ix[in->load.ix + (uint32_t)ax];
    return ix->kind == IR_IX_VAR ? mo->smap[ix->var] : NO_ATOM;
}

static bool depends_f(const cx *c, const pass_factor *f, int atom) { return depends(c, f->r, f->map, atom); }

/* Splits m's factors into the product of those that depend on atom `a` (and
 * not on atom `b`), those on `b` (not `a`), and the rest (neither). False when
 * some factor depends on both. */
static bool split(cx *c, const mono *mo, int a, int b, pass_product *pa, pass_product *pb, pass_product *rest)
{
    pass_product *dst[3] = {pa, pb, rest};
    for (int k = 0; k < 3; k++) *dst[k] = (pass_product){.coef = 1};
    rest->coef = mo->sign * mo->coef;
    for (int i = 0; i < mo->nf; i++) {
        const pass_factor *f = &mo->f[i];
        bool da = a != NO_ATOM && depends_f(c, f, a), db = b != NO_ATOM && depends_f(c, f, b);
        if (da && db) return false;
        pass_product *p = da ? pa : db ? pb : rest;
        if (p->nf == PASS_MAX_FACTORS) return false;
        p->f[p->nf++] = *f;
    }
    return true;
}

/* Two factors compute the same thing: the same subtree shape, the same tensors
 * read at indices whose atoms agree under the maps (a_at standing for b_at). */
static bool same_tree(const cx *c, ir_ref x, const int *mx, ir_ref y, const int *my, int ax, int ay)
{
    const ir_model *m = c->m;
    const ir_inst *p = &m->insts[x], *q = &m->insts[y];
    if (p->op != q->op) return false;
    if (p->op == IR_CONST) return p->num == q->num;
    if (p->op == IR_LOAD) {
        if (p->load.tensor != q->load.tensor || p->load.lag != q->load.lag || p->load.after_update != q->load.after_update ||
            (p->load.lag_var >= 0) != (q->load.lag_var >= 0))
            return false;
        for (int i = 0; i < m->tensors[p->load.tensor].rank; i++) {
            const ir_index *u = &m->ix[p->load.ix + (uint32_t)i], *v = &m->ix[q->load.ix + (uint32_t)i];
            if (u->kind != v->kind || (u->kind != IR_IX_VAR && u->k != v->k)) return false;
            if (u->kind == IR_IX_CONST) continue;
            int au = mx[u->var], av = my[v->var];
            if (!(au == av || (au == ax && av == ay))) return false;
        }
        return true;
    }
    if (p->op == IR_SUM || p->op == IR_RMAX || p->op == IR_IDX) return x == y && mx == my;
    for (int i = 0; i < 3; i++) {
        ir_ref u = ir_operand(p, i), v = ir_operand(q, i);
        if ((u == IR_NONE) != (v == IR_NONE)) return false;
        if (u != IR_NONE && !same_tree(c, u, mx, v, my, ax, ay)) return false;
    }
    return true;
}

static bool same_product(const cx *c, const pass_product *x, const pass_product *y, int ax, int ay)
{
    if (x->nf != y->nf || x->coef != y->coef) return false;
    bool used[PASS_MAX_FACTORS] = {0};
    for (int i = 0; i < x->nf; i++) {
        int hit = -1;
        for (int j = 0; j < y->nf && hit < 0; j++)
            if (!used[j] && x->f[i].recip == y->f[j].recip &&
                same_tree(c, x->f[i].r, x->f[i].map, y->f[j].r, y->f[j].map, ax, ay))
                hit = j;
        if (hit < 0) return false;
        used[hit] = true;
    }
    return true;
}

/* Removes from x every factor that y has too (x = x / y where y divides it);
 * false when y is not a sub-product of x. */
static bool divide(const cx *c, pass_product *x, const pass_product *y)
{
    pass_product r = *x;
    for (int j = 0; j < y->nf; j++) {
        int hit = -1;
        for (int i = 0; i < r.nf && hit < 0; i++)
            if (r.f[i].recip == y->f[j].recip && same_tree(c, r.f[i].r, r.f[i].map, y->f[j].r, y->f[j].map, 0, 0))
                hit = i;
        if (hit < 0) return false;
        r.f[hit] = r.f[--r.nf];
    }
    if (y->coef == 0) return false;
    r.coef /= y->coef;
    *x = r;
    return true;
}

static void absorb(pass_product *into, const pass_product *x)
{
    into->coef *= x->coef;
    for (int i = 0; i < x->nf && into->nf < PASS_MAX_FACTORS; i++) into->f[into->nf++] = x->f[i];
}

/* A proof that the product is > 0; else *why is the factor with none (or IR_NONE). */
static bool product_positive(const cx *c, const pass_product *p, ir_ref *why)
{
    *why = IR_NONE;
    if (p->coef <= 0) return false;
    for (int i = 0; i < p->nf; i++)
        if (!positive(c, p->f[i].r)) {
            *why = p->f[i].r;
            return false;
        }
    return true;
}

/* ---- one state ---- */

static bool analyze(cx *c, const pass_analysis *an, const pass_state *ps, pass_chunk *out)
{
    const ir_model *m = c->m;
    const ir_tensor *st = &m->tensors[ps->tensor];
    memset(out, 0, sizeof *out);
    out->state = ps->tensor;
    out->key_axis = out->value_axis = -1;
    if (st->def < 0) return refuse(c, IR_NONE, "the state is never updated");
    /* the cores start from a given state or from zero; an init needs the recurrent algorithm for now */
    const ir_stmt *init = ir_find_init(m, ps->tensor);
    if (init) return refuse(c, init->root, "the state has an init statement (not chunked yet)");
    const ir_stmt *u = &m->stmts[st->def];
    out->update = (uint32_t)st->def;
    switch (ps->cls) {
    case PASS_CLASS_IDENTITY:
    case PASS_CLASS_SCALAR:
    case PASS_CLASS_DIAGONAL: break;
    case PASS_CLASS_DIAG_RANK:
        if (ps->rank == 1 && ps->diag != PASS_CLASS_DIAGONAL) break;
        return refuse(c, IR_NONE, ps->rank != 1 ? "the correction has rank above 1"
                                                : "a delta-rule correction with a decay per key is not chunked yet");
    case PASS_CLASS_NONLINEAR: return refuse(c, ps->why, "the update is not affine in the state");
    default: return refuse(c, IR_NONE, "the transition is not diagonal or diagonal plus rank 1");
    }
    if (ps->nreads) return refuse(c, IR_NONE, "the update reads another state (coupled states are not chunked)");
    /* the key axis: the one every readout contracts */
    for (int i = 0; i < an->nreadouts; i++) {
        const pass_readout *r = &an->readouts[i];
        if (r->state != ps->tensor) continue;
        if (out->key_axis >= 0 && out->key_axis != r->axis)
            return refuse(c, r->sum, "the state's readouts contract different axes");
        out->key_axis = r->axis;
    }
    if (out->key_axis < 0) return refuse(c, IR_NONE, "nothing reads the state out through a sum");
    for (int ax = 0; ax < st->rank; ax++)
        if (ax != out->key_axis && ps->roles[ax] == PASS_ROLE_MIXED)
            return refuse(c, IR_NONE, "the update mixes an axis readouts do not contract");
    int kv = u->vars[out->key_axis];

    /* the update multiplied out */
    int *id = arena_array(c->a, m->nvars + 1, sizeof *id);
    if (!id) return refuse(c, IR_NONE, "out of memory");
    for (uint32_t v = 0; v < m->nvars; v++) id[v] = (int)v;
    c->natoms = (int)m->nvars;
    mlist l = expand(c, u->root, id, out->update);
    if (l.bad) return refuse(c, u->root, "the update could not be expanded");

    /* the value axis: the last passive axis along which the input's key factor
     * does not vary (a passive axis the key depends on is a head, as linear
     * attention's H is for its normaliser z[h, i]); none for a vector state.
     * Every other axis is a head. */
    for (int ax = st->rank - 1; ax >= 0 && out->value_axis < 0; ax--) {
        if (ax == out->key_axis || ps->roles[ax] != PASS_ROLE_PASSIVE) continue;
        bool fits = true;
        for (int i = 0; i < l.n && fits; i++) {
            pass_product x, y, z;
            if (l.m[i].sread == IR_NONE) fits = split(c, &l.m[i], kv, u->vars[ax], &x, &y, &z);
        }
        if (fits) out->value_axis = ax;
    }
    int vv = out->value_axis >= 0 ? u->vars[out->value_axis] : NO_ATOM;

    pass_product decay = {.coef = 0}, corr_w = {0}, corr_c = {0};
    bool have_decay = false, have_corr = false, have_input = false;
    for (int i = 0; i < l.n && !c->why; i++) {
        mono *mo = &l.m[i];
        if (mo->sread == IR_NONE) { /* the input: k[i] * v[j] */
            if (have_input) return refuse(c, u->root, "the update adds more than one outer product");
            pass_product rest;
            if (!split(c, mo, kv, vv, &out->key, &out->value, &rest))
                return refuse(c, u->root, "the update's input is not an outer product of a key and a value");
            absorb(&out->value, &rest);
            have_input = true;
            continue;
        }
        /* every axis of the S read is the update's own variable, but the key
         * axis of a correction, which is the sum's atom */
        for (int ax = 0; ax < st->rank; ax++) {
            int at = s_atom(c, mo, ax);
            bool own = at == u->vars[ax], sum = ax == out->key_axis && mo->bound != NO_ATOM && at == mo->bound;
            if (!own && !sum) return refuse(c, mo->sread, "the update reads the state at another element");
        }
        if (mo->bound == NO_ATOM) { /* the decay */
            if (have_decay) return refuse(c, mo->sread, "the decay is a sum of terms");
            pass_product none, rest;
            if (!split(c, mo, vv, NO_ATOM, &none, &decay, &rest) || none.nf)
                return refuse(c, mo->sread, "the decay depends on the value axis");
            decay = rest;
            have_decay = true;
        } else { /* the correction: -c * w[i] * w[m] S[m, j] */
            if (have_corr) return refuse(c, mo->sread, "the correction is a sum of terms");
            pass_product wi, wm, rest;
            if (!split(c, mo, kv, mo->bound, &wi, &wm, &rest))
                return refuse(c, mo->sread, "the correction is not a product of a key on each side");
            for (int k = 0; k < rest.nf; k++)
                if (vv != NO_ATOM && depends_f(c, &rest.f[k], vv))
                    return refuse(c, mo->sread, "the correction depends on the value axis");
            if (!same_product(c, &wi, &wm, kv, mo->bound))
                return refuse(c, mo->sread, "the correction's two keys differ (only I - c w w^T is chunked)");
            corr_w = wi;
            corr_c = rest;
            corr_c.coef = -corr_c.coef;
            have_corr = true;
        }
    }
    if (c->why) return false;
    if (!have_decay) return refuse(c, u->root, "the update does not keep the old state");
    if (!have_input) return refuse(c, u->root, "the update adds nothing to the state");
    /* decay kind */
    bool per_key = false;
    for (int k = 0; k < decay.nf; k++) per_key |= depends_f(c, &decay.f[k], kv);
    out->decay_kind = decay.nf == 0 && decay.coef == 1 ? PASS_DECAY_NONE : per_key ? PASS_DECAY_KEY : PASS_DECAY_SCALAR;
    ir_ref npos;
    if (!product_positive(c, &decay, &npos))
        return refuse(c, npos != IR_NONE ? npos : u->root, "the decay is not provably positive (it is kept in log space)");
    out->decay = decay;
    if (have_corr) {
        if (out->decay_kind == PASS_DECAY_KEY)
            return refuse(c, u->root, "a delta-rule correction with a decay per key is not chunked yet");
        /* -a * c' * w w^T: c = a * c' once the decay is divided out */
        if (!divide(c, &corr_c, &decay)) {
            /* c is not a multiple of the decay: kept as c / a, computed per step */
            pass_product inv = decay;
            for (int k = 0; k < inv.nf; k++) inv.f[k].recip = !inv.f[k].recip;
            inv.coef = 1 / inv.coef;
            absorb(&corr_c, &inv);
        }
        out->delta = true;
        out->beta = corr_c;
        out->dkey = corr_w;
        /* the UT transform needs the written key to be the corrected one (I - beta k k^T) */
        if (!same_product(c, &out->key, &out->dkey, kv, kv))
            return refuse(c, u->root, "the delta rule corrects along a key other than the one it writes");
    }
    /* the readouts */
    for (int i = 0; i < an->nreadouts; i++) {
        const pass_readout *r = &an->readouts[i];
        if (r->state != ps->tensor) continue;
        if (out->nreadouts == PASS_MAX_READOUTS) return refuse(c, r->sum, "the state has too many readouts");
        const ir_inst *sum = &m->insts[r->sum];
        uint32_t rs = c->stmt_of[r->sum];
        int *rm = arena_array(c->a, m->nvars + 1, sizeof *rm);
        if (!rm) return refuse(c, IR_NONE, "out of memory");
        for (uint32_t v = 0; v < m->nvars; v++) rm[v] = (int)v;
        int sv = (int)m->red_vars[sum->red.vars];
        if (sum->red.nvars != 1) return refuse(c, r->sum, "a readout sums over more than the key axis");
        /* the body, multiplied out, S(t) or S(t-1) being the variable */
        cx rc = *c;
        int8_t *memo = arena_array(c->a, m->ninsts + 1, sizeof *memo);
        if (!memo) return refuse(c, IR_NONE, "out of memory");
        memset(memo, -1, m->ninsts + 1);
        rc.reads_s = memo;
        rc.after = r->after_update;
        mlist b = expand(&rc, sum->a, rm, rs);
        if (rc.why) return refuse(c, rc.where, rc.why);
        pass_chunk_readout *ro = &out->readouts[out->nreadouts++];
        *ro = (pass_chunk_readout){.output = r->output, .stmt = rs, .sum = r->sum, .after_update = r->after_update,
                                   .var = sv};
        bool have_s = false;
        for (int k = 0; k < b.n; k++) {
            mono *mo = &b.m[k];
            if (mo->sread == IR_NONE) { /* a term free of S stays a reduction of the epilogue */
                if (ro->nrest == PASS_MAX_READOUTS) return refuse(c, r->sum, "a readout has too many terms");
                pass_product *t = &ro->rest_terms[ro->nrest++];
                *t = (pass_product){.coef = mo->sign * mo->coef, .nf = mo->nf};
                memcpy(t->f, mo->f, (size_t)mo->nf * sizeof *mo->f);
                ro->rest = true;
                continue;
            }
            if (have_s) return refuse(c, r->sum, "a readout reads the state in more than one term");
            for (int ax = 0; ax < st->rank; ax++) {
                int at = s_atom(c, mo, ax);
                if (ax == out->key_axis ? at != sv : at == sv || at == NO_ATOM)
                    return refuse(c, mo->sread, "a readout reads the state at an index other than the sum's");
                if (ax == out->value_axis) ro->value_var = at;
                ro->axis_var[ax] = at;
            }
            pass_product none, rest;
            int vat = out->value_axis >= 0 ? ro->value_var : NO_ATOM;
            if (!split(c, mo, vat, NO_ATOM, &none, &ro->query, &rest) || none.nf)
                return refuse(c, mo->sread, "a readout's query depends on the value axis");
            ro->query = rest;
            have_s = true;
        }
        if (!have_s) return refuse(c, r->sum, "a readout does not read the state");
    }
    return true;
}

bool pass_chunk_forms(arena *a, const ir_model *m, const pass_analysis *an, pass_chunks *out, diag *d)
{
    memset(out, 0, sizeof *out);
    out->forms = arena_array(a, (size_t)an->nstates + 1, sizeof *out->forms);
    uint32_t *stmt_of = arena_array(a, m->ninsts + 1, sizeof *stmt_of);
    int8_t *memo = arena_array(a, m->ninsts + 1, sizeof *memo);
    if (!out->forms || !stmt_of || !memo) {
        diag_error(d, "out of memory");
        return false;
    }
    /* instructions are numbered statement by statement: each belongs to the
     * statement whose root is the first at or after it */
    for (uint32_t si = 0, r = 0; si < m->nstmts; si++)
        for (; r <= m->stmts[si].root && r < m->ninsts; r++) stmt_of[r] = si;
    out->nforms = an->nstates;
    out->all = an->nstates > 0;
    for (int i = 0; i < an->nstates; i++) {
        memset(memo, -1, m->ninsts + 1);
        cx c = {.m = m, .a = a, .state = an->states[i].tensor, .stmt_of = stmt_of, .reads_s = memo};
        pass_chunk *f = &out->forms[i];
        analyze(&c, an, &an->states[i], f);
        f->ok = c.why == NULL;
        f->why = c.why;
        f->where = c.where;
        out->all &= f->ok;
    }
    /* every read of a chunked state must be its update, a readout, or the
     * correction inside the update: anything else sees a value the chunked
     * algorithm never forms (S at every step) */
    for (int i = 0; out->all && i < out->nforms; i++) {
        pass_chunk *f = &out->forms[i];
        for (uint32_t r = 0; r < m->ninsts; r++) {
            const ir_inst *in = &m->insts[r];
            if (in->op != IR_LOAD || in->load.tensor != f->state) continue;
            uint32_t si = stmt_of[r];
            bool ok = si == f->update;
            const ir_tensor *lt = &m->tensors[m->stmts[si].tensor];
            ok |= lt->kind == IR_LET && lt->per_step && !in->load.after_update; /* a correction let, read by the update */
            for (int k = 0; k < f->nreadouts && !ok; k++) ok = f->readouts[k].stmt == si;
            if (!ok) {
                f->ok = false;
                f->why = "the state is read outside its update and its readouts";
                f->where = r;
                out->all = false;
            }
        }
    }
    return !a->failed;
}

static const char *const decay_names[] = {"none (identity)", "one per head", "one per key"};

static void print_product(strbuf *out, const ir_model *m, const pass_product *p)
{
    bool any = false;
    if (p->coef != 1 || p->nf == 0) {
        sb_printf(out, "%g", p->coef);
        any = true;
    }
    for (int i = 0; i < p->nf; i++) {
        sb_puts(out, any ? (p->f[i].recip ? " / " : " * ") : (p->f[i].recip ? "1 / " : ""));
        ir_print_expr(out, m, p->f[i].r);
        any = true;
    }
}

void pass_chunk_print(strbuf *out, const ir_model *m, const pass_chunks *cs)
{
    for (int i = 0; i < cs->nforms; i++) {
        const pass_chunk *f = &cs->forms[i];
        const ir_tensor *t = &m->tensors[f->state];
        if (!f->ok) {
            sb_printf(out, "  chunked %s: no: %s", t->name, f->why);
            if (f->where != IR_NONE) {
                sb_puts(out, " (at ");
                ir_print_expr(out, m, f->where);
                sb_puts(out, ")");
            }
            sb_putc(out, '\n');
            continue;
        }
        sb_printf(out, "  chunked %s: key axis %s, value axis %s; decay %s", t->name,
                  m->dims[t->dims[f->key_axis]].name, f->value_axis >= 0 ? m->dims[t->dims[f->value_axis]].name : "none",
                  decay_names[f->decay_kind]);
        if (f->decay_kind != PASS_DECAY_NONE) {
            sb_puts(out, " = ");
            print_product(out, m, &f->decay);
        }
        sb_puts(out, "\n    input: key ");
        print_product(out, m, &f->key);
        sb_puts(out, ", value ");
        print_product(out, m, &f->value);
        if (f->delta) {
            sb_puts(out, "\n    delta rule: A = decay * (I - beta w w^T), beta ");
            print_product(out, m, &f->beta);
            sb_puts(out, ", w ");
            print_product(out, m, &f->dkey);
        }
        for (int k = 0; k < f->nreadouts; k++) {
            const pass_chunk_readout *r = &f->readouts[k];
            sb_printf(out, "\n    readout %s <- %s: query ", m->tensors[r->output].name, r->after_update ? "S(t)" : "S(t-1)");
            print_product(out, m, &r->query);
            if (r->rest) sb_puts(out, " (plus terms free of the state)");
        }
        sb_putc(out, '\n');
    }
}
