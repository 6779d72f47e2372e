/* analysis.c: the recurrence analysis (SPEC §2). For every state S it decides
 * whether the update S(t) = F(S(t-1), ...) is affine in S(t-1), how the linear
 * part A_t acts on S's axes, and which reductions read S out. docs/analysis.md
 * has the rules with worked examples; in short:
 *
 * Degree. Every instruction gets a degree in S (constant, linear = homogeneous
 * of degree 1, affine, nonlinear), memoised per instruction: a read of S is
 * linear, a read of a per-step let has the degree of the let's value (so
 * chains of lets are seen through), + and - combine, a product of two
 * S-dependent factors, a division by an S-dependent value and any function,
 * pow, min, max, comparison or max-reduction of an S-dependent value is
 * nonlinear. select(c, a, b) is nonlinear when c depends on S, else it
 * combines a and b as + does. Reads of other states (and of S(t) where S(t-1)
 * is analysed) are coefficients.
 *
 * Terms. An affine update is expanded into its linear terms, each
 *   sign * sum(bound vars: f_1 * ... * f_k * S[a_1, ..., a_r])
 * where the f are maximal S-free subexpressions (divisors marked reciprocal;
 * select(c, a, b) scales a's terms by the indicator [c != 0] and b's by
 * [c == 0], and a pair of terms the same but for the two indicators of one c
 * is one term without them: both branches the same transition)
 * and each index a is an atom: a variable of the update, a reduction variable
 * (a fresh atom per reduction instance), v / k, or a constant. Reads of lets are
 * substituted: the let's variables stand for the read's indices. Each factor
 * knows the atoms it depends on (the indices of its reads). The expansion is
 * bounded (WORK_LIMIT); beyond it the state is reported dense and truncated.
 *
 * Classes. A term is pointwise when every axis of its read is the update's own
 * variable for that axis; otherwise it mixes the axes where it is not.
 *   axis roles: mixed if some term mixes it; else independent if some factor
 *   depends on the axis variable; else passive.
 *   The pointwise coefficient (sum of the pointwise terms) is classed alone:
 *   identity if it folds to the number 1; scalar if it depends on no axis, or
 *   if it is constant along every contracted axis (an axis some readout sums
 *   over) and along at least one axis (it is shared by a vector of the state);
 *   diagonal otherwise (it varies along a contracted axis, or along every axis:
 *   elementwise).
 *   The update is that class when no term mixes; diagonal+rank-r when every
 *   mixing term mixes one and the same axis through a reduction variable b with
 *   a coefficient that separates into a part free of b and a part free of the
 *   axis variable (f(i) g(b): one outer product each; r is the smaller of the
 *   numbers of distinct f and of distinct g, compared as expressions: exact
 *   unless two different expressions are dependent vectors, never below the
 *   rank); dense otherwise. Never updated: constant.
 *
 * Readouts. A sum in an output's statement, or in a per-step let that an
 * output reads (directly or through lets), whose body is affine in S(t) or in
 * S(t-1) and reads S with the sum's variable on an axis, is a readout over that
 * axis. The contracted axes of the scalar/diagonal rule are the readouts' axes
 * (all axes, if the readouts' expansion ran past the limit).
 *
 * Assumes a verified IR, after passes/lag.c (before it, a let of S read at an
 * earlier step counts as not affine: sound, if not exact). Guarantees one
 * pass_state per IR_STATE tensor in tensor order; fails only when memory runs
 * out. */
#include <stdlib.h>
#include <string.h>

#include "passes.h"

#define WORK_LIMIT 100000 /* terms built for one state's readouts, and again for its update */

typedef enum deg { DEG_CONST, DEG_LINEAR, DEG_AFFINE, DEG_NONLINEAR } deg;

/* What an index stands for once lets are substituted. */
typedef enum atom_kind {
    ATOM_VAR,   /* id: a variable of the root statement, or a fresh reduction atom (>= nvars) */
    ATOM_DIV,   /* id / k */
    ATOM_CONST, /* k */
    ATOM_MASK   /* bound inside the factor being scanned: no dependence outside it */
} atom_kind;

typedef struct atom {
    atom_kind kind;
    int id;
    int64_t k;
} atom;

typedef enum fmode { F_PLAIN, F_RECIP, F_IF, F_UNLESS } fmode;

typedef struct factor {
    ir_ref inst;
    uint8_t mode;  /* fmode: the value, its reciprocal (a divisor), or the indicator
                      [inst != 0] or [inst == 0] (the branches of a select) */
    uint32_t stmt; /* the statement the instruction belongs to */
    const int *deps;
    size_t ndeps;
    const atom *sig; /* what its indices stand for, in order of reading; NULL when it
                        holds a reduction (then it equals no other factor) */
    size_t nsig;
} factor;

typedef struct flist {
    const factor *f;
    const struct flist *next;
} flist;

typedef struct blist {
    int atom;
    const struct blist *next;
} blist;

typedef struct term {
    int sign;
    ir_ref load; /* the read of S */
    atom ix[IR_MAX_RANK];
    const flist *f;
    const blist *b; /* reduction atoms enclosing the read */
} term;

typedef struct terms {
    term *t;
    size_t n;
} terms;

typedef struct ctx {
    const ir_model *m;
    arena *tmp;
    int state;        /* the tensor analysed */
    bool after;       /* its S(t) (true) or S(t-1) (false) is the variable */
    int8_t *deg[2];   /* [after][inst] memo, -1 unknown */
    ir_ref *why[2];   /* [after][inst] where a nonlinear value became so */
    atom *map;        /* [nvars] what each variable stands for now */
    int *atom_var;    /* fresh atom id - nvars -> its reduction variable */
    size_t natoms, cap_atoms;
    size_t work;
    bool overflow, oom;
} ctx;

/* ---- degree ---- */

static int degree(ctx *c, ir_ref r);

static int degree_why(ctx *c, ir_ref r, ir_ref *why)
{
    int d = degree(c, r);
    *why = c->why[c->after][r];
    return d;
}

static int degree(ctx *c, ir_ref r)
{
    int8_t *memo = c->deg[c->after];
    if (memo[r] >= 0) return memo[r];
    const ir_model *m = c->m;
    const ir_inst *in = &m->insts[r];
    int d = DEG_CONST;
    ir_ref why = IR_NONE, wa = IR_NONE, wb = IR_NONE, wc = IR_NONE;
    int da = in->a != IR_NONE ? degree_why(c, in->a, &wa) : DEG_CONST;
    int db = in->b != IR_NONE ? degree_why(c, in->b, &wb) : DEG_CONST;
    int dc = in->c != IR_NONE ? degree_why(c, in->c, &wc) : DEG_CONST;
    switch ((ir_op)in->op) {
    case IR_CONST:
    case IR_IDX: break;
    case IR_LOAD: {
        const ir_tensor *t = &m->tensors[in->load.tensor];
        if (in->load.tensor == c->state && in->load.after_update == c->after)
            d = DEG_LINEAR;
        else if (t->kind == IR_LET && t->def >= 0 && (in->load.lag || in->load.lag_var >= 0)) {
            /* a let at an earlier step (IR before passes/lag.c): what it read of S is an older
             * value, not S(t-1): an S-free let is a coefficient, any other one is not proven affine */
            d = degree(c, m->stmts[t->def].root) == DEG_CONST ? DEG_CONST : DEG_NONLINEAR;
            why = d == DEG_NONLINEAR ? r : IR_NONE;
        } else if (t->kind == IR_LET && t->def >= 0)
            d = degree_why(c, m->stmts[t->def].root, &why);
        break;
    }
    case IR_NEG:
    case IR_SUM:
        d = da;
        why = wa;
        break;
    case IR_SELECT:
        /* an S-free choice between two affine values is affine: [a] b + [!a] c */
        if (da != DEG_CONST) {
            d = DEG_NONLINEAR;
            why = da == DEG_NONLINEAR ? wa : r;
            break;
        }
        da = db;
        wa = wb;
        db = dc;
        wb = wc;
        /* fall through */
    case IR_ADD:
    case IR_SUB:
        if (da == DEG_NONLINEAR || db == DEG_NONLINEAR) {
            d = DEG_NONLINEAR;
            why = da == DEG_NONLINEAR ? wa : wb;
        } else if (da == DEG_CONST || db == DEG_CONST) {
            d = da > db ? da : db;
            if (d == DEG_LINEAR && da != db) d = DEG_AFFINE;
        } else {
            d = da == DEG_LINEAR && db == DEG_LINEAR ? DEG_LINEAR : DEG_AFFINE;
        }
        break;
    case IR_MUL:
        if (da == DEG_NONLINEAR || db == DEG_NONLINEAR) {
            d = DEG_NONLINEAR;
            why = da == DEG_NONLINEAR ? wa : wb;
        } else if (da != DEG_CONST && db != DEG_CONST) {
            d = DEG_NONLINEAR;
            why = r;
        } else {
            d = da > db ? da : db;
        }
        break;
    case IR_DIV:
        if (da == DEG_NONLINEAR || db == DEG_NONLINEAR) {
            d = DEG_NONLINEAR;
            why = da == DEG_NONLINEAR ? wa : wb;
        } else if (db != DEG_CONST) {
            d = DEG_NONLINEAR;
            why = r;
        } else {
            d = da;
        }
        break;
    default: /* functions, pow, min, max, comparisons, max-reduction: nonlinear in any S-dependent operand */
        if (da == DEG_NONLINEAR || db == DEG_NONLINEAR) {
            d = DEG_NONLINEAR;
            why = da == DEG_NONLINEAR ? wa : wb;
        } else if (da != DEG_CONST || db != DEG_CONST) {
            d = DEG_NONLINEAR;
            why = r;
        }
        break;
    }
    memo[r] = (int8_t)d;
    c->why[c->after][r] = why;
    return d;
}

/* ---- atoms and factors ---- */

static atom atom_div(atom a, int64_t k)
{
    switch (a.kind) {
    case ATOM_VAR: return (atom){ATOM_DIV, a.id, k};
    case ATOM_DIV: return (atom){ATOM_DIV, a.id, a.k * k};
    case ATOM_CONST: return (atom){ATOM_CONST, -1, a.k / k};
    case ATOM_MASK: break;
    }
    return a;
}

static atom atom_of(const ctx *c, const ir_index *ix)
{
    switch (ix->kind) {
    case IR_IX_VAR: return c->map[ix->var];
    case IR_IX_DIV: return atom_div(c->map[ix->var], ix->k);
    case IR_IX_CONST: break;
    case IR_IX_AFFINE: return (atom){ATOM_MASK, -1, 0}; /* only passes make them, after the analysis */
    }
    return (atom){ATOM_CONST, -1, ix->k};
}

static atom fresh_atom(ctx *c, int var)
{
    if (!VEC_PUSH(c->atom_var, c->natoms, c->cap_atoms, var)) c->oom = true;
    return (atom){ATOM_VAR, (int)c->m->nvars + (int)c->natoms - 1, 0};
}

typedef struct ivec {
    int *v;
    size_t n, cap;
} ivec;

static void add_dep(ctx *c, ivec *d, atom a)
{
    if (a.kind != ATOM_VAR && a.kind != ATOM_DIV) return;
    for (size_t i = 0; i < d->n; i++)
        if (d->v[i] == a.id) return;
    if (!VEC_PUSH(d->v, d->n, d->cap, a.id)) c->oom = true;
}

/* The atoms an S-free subexpression depends on: the indices of its reads.
 * (A let's value depends on its own variables only, which its read's indices
 * stand for, so lets need not be entered.) */
static void collect_deps(ctx *c, ir_ref r, ivec *d)
{
    const ir_model *m = c->m;
    const ir_inst *in = &m->insts[r];
    if (in->op == IR_IDX) { /* the variable's value is a number that varies along it */
        add_dep(c, d, c->map[in->var]);
        return;
    }
    if (in->op == IR_LOAD) {
        const ir_tensor *t = &m->tensors[in->load.tensor];
        for (int i = 0; i < t->rank; i++) add_dep(c, d, atom_of(c, &m->ix[in->load.ix + (uint32_t)i]));
        if (in->load.lag_var >= 0) add_dep(c, d, c->map[in->load.lag_var]);
        return;
    }
    if (in->op == IR_SUM || in->op == IR_RMAX) {
        uint32_t n = in->red.nvars;
        const uint32_t *vars = &m->red_vars[in->red.vars];
        atom *saved = arena_array(c->tmp, n ? n : 1, sizeof *saved);
        if (!saved) {
            c->oom = true;
            return;
        }
        for (uint32_t i = 0; i < n; i++) {
            saved[i] = c->map[vars[i]];
            c->map[vars[i]] = (atom){ATOM_MASK, -1, 0};
        }
        collect_deps(c, in->a, d);
        for (uint32_t i = 0; i < n; i++) c->map[vars[i]] = saved[i];
        return;
    }
    for (int i = 0; i < 3; i++)
        if (ir_operand(in, i) != IR_NONE) collect_deps(c, ir_operand(in, i), d);
}

typedef struct avec {
    atom *v;
    size_t n, cap;
} avec;

/* The atoms r's indices stand for, in order of reading; false when r holds a
 * reduction. */
static bool signature(ctx *c, ir_ref r, avec *sig)
{
    const ir_model *m = c->m;
    const ir_inst *in = &m->insts[r];
    if (in->op == IR_SUM || in->op == IR_RMAX) return false;
    if (in->op == IR_IDX) {
        if (!VEC_PUSH(sig->v, sig->n, sig->cap, c->map[in->var])) c->oom = true;
        return true;
    }
    if (in->op == IR_LOAD) {
        const ir_tensor *t = &m->tensors[in->load.tensor];
        for (int i = 0; i < t->rank; i++)
            if (!VEC_PUSH(sig->v, sig->n, sig->cap, atom_of(c, &m->ix[in->load.ix + (uint32_t)i]))) c->oom = true;
        if (in->load.lag_var >= 0 && !VEC_PUSH(sig->v, sig->n, sig->cap, c->map[in->load.lag_var])) c->oom = true;
        return true;
    }
    for (int i = 0; i < 3; i++)
        if (ir_operand(in, i) != IR_NONE && !signature(c, ir_operand(in, i), sig)) return false;
    return true;
}

static const factor *make_factor(ctx *c, uint32_t stmt, ir_ref r, fmode mode)
{
    ivec d = {0};
    avec sig = {0};
    collect_deps(c, r, &d);
    bool comparable = signature(c, r, &sig);
    factor *f = arena_alloc(c->tmp, sizeof *f);
    int *deps = arena_array(c->tmp, d.n ? d.n : 1, sizeof *deps);
    atom *sv = arena_array(c->tmp, sig.n ? sig.n : 1, sizeof *sv);
    if (!f || !deps || !sv) {
        c->oom = true;
        free(d.v);
        free(sig.v);
        return NULL;
    }
    if (d.n) memcpy(deps, d.v, d.n * sizeof *deps);
    if (sig.n) memcpy(sv, sig.v, sig.n * sizeof *sv);
    *f = (factor){.inst = r, .mode = (uint8_t)mode, .stmt = stmt, .deps = deps, .ndeps = d.n,
                  .sig = comparable ? sv : NULL, .nsig = sig.n};
    free(d.v);
    free(sig.v);
    return f;
}

/* ---- equal terms (the two branches of a select with one transition) ---- */

static bool atom_eq(atom a, atom b) { return a.kind == b.kind && a.id == b.id && (a.kind == ATOM_VAR || a.k == b.k); }

/* Same operations on the same tensors (indices aside: the signature has them). */
static bool same_shape(const ir_model *m, ir_ref x, ir_ref y)
{
    const ir_inst *a = &m->insts[x], *b = &m->insts[y];
    if (a->op != b->op) return false;
    switch ((ir_op)a->op) {
    case IR_CONST: return a->num == b->num;
    case IR_IDX: return true;
    case IR_LOAD: {
        if (a->load.tensor != b->load.tensor || a->load.lag != b->load.lag ||
            (a->load.lag_var >= 0) != (b->load.lag_var >= 0) || a->load.after_update != b->load.after_update)
            return false;
        for (int i = 0; i < m->tensors[a->load.tensor].rank; i++) {
            const ir_index *p = &m->ix[a->load.ix + (uint32_t)i], *q = &m->ix[b->load.ix + (uint32_t)i];
            if (p->kind != q->kind || (p->kind != IR_IX_VAR && p->k != q->k)) return false;
        }
        return true;
    }
    case IR_SUM:
    case IR_RMAX: return false;
    default:
        for (int i = 0; i < 3; i++) {
            ir_ref p = ir_operand(a, i), q = ir_operand(b, i);
            if ((p == IR_NONE) != (q == IR_NONE) || (p != IR_NONE && !same_shape(m, p, q))) return false;
        }
        return true;
    }
}

static bool factor_eq(const ir_model *m, const factor *f, const factor *g)
{
    if (f->mode != g->mode || !f->sig || !g->sig || f->nsig != g->nsig) return false;
    for (size_t i = 0; i < f->nsig; i++)
        if (!atom_eq(f->sig[i], g->sig[i])) return false;
    return f->inst == g->inst || same_shape(m, f->inst, g->inst);
}

/* Terms equal but for the first factor of each (the indicators): same sign,
 * same read, no reduction, the same factors in any order. */
static bool terms_eq_but_first(ctx *c, const term *x, const term *y, int rank)
{
    if (x->sign != y->sign || x->b || y->b || !x->f || !y->f) return false;
    for (int k = 0; k < rank; k++)
        if (!atom_eq(x->ix[k], y->ix[k])) return false;
    size_t n = 0, ny = 0;
    for (const flist *l = x->f->next; l; l = l->next) n++;
    for (const flist *l = y->f->next; l; l = l->next) ny++;
    if (n != ny) return false;
    bool *taken = arena_array(c->tmp, n ? n : 1, sizeof *taken);
    if (!taken) {
        c->oom = true;
        return false;
    }
    for (const flist *l = x->f->next; l; l = l->next) {
        size_t j = 0;
        const flist *g = y->f->next;
        for (; g; g = g->next, j++)
            if (!taken[j] && factor_eq(c->m, l->f, g->f)) break;
        if (!g) return false;
        taken[j] = true;
    }
    return true;
}

static bool factor_dep(const factor *f, int id)
{
    for (size_t i = 0; i < f->ndeps; i++)
        if (f->deps[i] == id) return true;
    return false;
}

static bool term_dep(const term *t, int id)
{
    for (const flist *l = t->f; l; l = l->next)
        if (factor_dep(l->f, id)) return true;
    return false;
}

static bool term_bound(const term *t, int id)
{
    for (const blist *l = t->b; l; l = l->next)
        if (l->atom == id) return true;
    return false;
}

/* ---- expansion into linear terms ---- */

static terms alloc_terms(ctx *c, size_t n)
{
    terms out = {0};
    c->work += n;
    if (c->work > WORK_LIMIT) {
        c->overflow = true;
        return out;
    }
    out.t = arena_array(c->tmp, n ? n : 1, sizeof *out.t);
    if (!out.t) {
        c->oom = true;
        return out;
    }
    out.n = n;
    return out;
}

static terms concat(ctx *c, terms a, terms b, int sign_b)
{
    if (!b.n) return a;
    if (!a.n && sign_b > 0) return b;
    terms out = alloc_terms(c, a.n + b.n);
    if (!out.t) return out;
    if (a.n) memcpy(out.t, a.t, a.n * sizeof *a.t);
    for (size_t i = 0; i < b.n; i++) {
        out.t[a.n + i] = b.t[i];
        out.t[a.n + i].sign *= sign_b;
    }
    return out;
}

static terms scale(ctx *c, terms a, const factor *f)
{
    if (!f || !a.n) return a;
    terms out = alloc_terms(c, a.n);
    flist *nodes = out.t ? arena_array(c->tmp, a.n, sizeof *nodes) : NULL;
    if (!nodes) {
        c->oom |= out.t != NULL;
        return (terms){0};
    }
    for (size_t i = 0; i < a.n; i++) {
        out.t[i] = a.t[i];
        nodes[i] = (flist){f, a.t[i].f};
        out.t[i].f = &nodes[i];
    }
    return out;
}

/* The linear terms of r, an expression of statement `stmt`, under c->map. */
static terms expand(ctx *c, uint32_t stmt, ir_ref r)
{
    const ir_model *m = c->m;
    terms out = {0};
    if (c->overflow || c->oom || degree(c, r) == DEG_CONST) return out;
    const ir_inst *in = &m->insts[r];
    switch ((ir_op)in->op) {
    case IR_LOAD: {
        const ir_tensor *t = &m->tensors[in->load.tensor];
        if (t->kind == IR_LET) {
            const ir_stmt *ls = &m->stmts[t->def];
            atom ix[IR_MAX_RANK], saved[IR_MAX_RANK];
            for (int i = 0; i < t->rank; i++) ix[i] = atom_of(c, &m->ix[in->load.ix + (uint32_t)i]);
            for (int i = 0; i < t->rank; i++) {
                saved[i] = c->map[ls->vars[i]];
                c->map[ls->vars[i]] = ix[i];
            }
            out = expand(c, (uint32_t)t->def, ls->root);
            for (int i = t->rank; i-- > 0;) c->map[ls->vars[i]] = saved[i];
            return out;
        }
        out = alloc_terms(c, 1);
        if (!out.t) return out;
        term *tm = &out.t[0];
        *tm = (term){.sign = 1, .load = r};
        for (int i = 0; i < t->rank; i++) tm->ix[i] = atom_of(c, &m->ix[in->load.ix + (uint32_t)i]);
        return out;
    }
    case IR_NEG: return concat(c, (terms){0}, expand(c, stmt, in->a), -1);
    case IR_ADD:
    case IR_SUB: {
        terms a = expand(c, stmt, in->a);
        return concat(c, a, expand(c, stmt, in->b), in->op == IR_ADD ? 1 : -1);
    }
    case IR_MUL:
        if (degree(c, in->a) == DEG_CONST) return scale(c, expand(c, stmt, in->b), make_factor(c, stmt, in->a, F_PLAIN));
        return scale(c, expand(c, stmt, in->a), make_factor(c, stmt, in->b, F_PLAIN));
    case IR_DIV: return scale(c, expand(c, stmt, in->a), make_factor(c, stmt, in->b, F_RECIP));
    case IR_SELECT: {
        terms x = scale(c, expand(c, stmt, in->b), make_factor(c, stmt, in->a, F_IF));
        terms y = scale(c, expand(c, stmt, in->c), make_factor(c, stmt, in->a, F_UNLESS));
        out = concat(c, x, y, 1);
        if (!out.t || c->overflow || c->oom) return out;
        /* a term in both branches: [a] f S + [!a] f S = f S */
        int rank = m->tensors[c->state].rank;
        bool *gone = arena_array(c->tmp, out.n ? out.n : 1, sizeof *gone);
        if (!gone) {
            c->oom = true;
            return out;
        }
        size_t n = 0;
        for (size_t i = 0; i < x.n; i++) {
            for (size_t j = x.n; j < out.n; j++)
                if (!gone[j] && terms_eq_but_first(c, &out.t[i], &out.t[j], rank)) {
                    gone[j] = true;
                    out.t[i].f = out.t[i].f->next;
                    break;
                }
        }
        for (size_t i = 0; i < out.n; i++)
            if (!gone[i]) out.t[n++] = out.t[i];
        out.n = n;
        return out;
    }
    case IR_SUM: {
        const uint32_t *vars = &m->red_vars[in->red.vars];
        uint32_t nv = in->red.nvars;
        atom *saved = arena_array(c->tmp, nv ? nv : 1, sizeof *saved);
        int *fresh = arena_array(c->tmp, nv ? nv : 1, sizeof *fresh);
        if (!saved || !fresh) {
            c->oom = true;
            return out;
        }
        for (uint32_t i = 0; i < nv; i++) {
            saved[i] = c->map[vars[i]];
            c->map[vars[i]] = fresh_atom(c, (int)vars[i]);
            fresh[i] = c->map[vars[i]].id;
        }
        terms body = expand(c, stmt, in->a);
        for (uint32_t i = nv; i-- > 0;) c->map[vars[i]] = saved[i];
        if (!body.n || !nv) return body;
        out = alloc_terms(c, body.n);
        blist *nodes = out.t ? arena_array(c->tmp, body.n * nv, sizeof *nodes) : NULL;
        if (!nodes) {
            c->oom |= out.t != NULL;
            return (terms){0};
        }
        /* this reduction's atoms go in front of each term's bound list */
        for (size_t i = 0; i < body.n; i++) {
            blist *mine = &nodes[i * nv];
            for (uint32_t k = 0; k < nv; k++) mine[k] = (blist){fresh[k], k + 1 < nv ? &mine[k + 1] : body.t[i].b};
            out.t[i] = body.t[i];
            out.t[i].b = mine;
        }
        return out;
    }
    default: return out; /* any other op of an S-dependent value is nonlinear */
    }
}

/* ---- classification ---- */

/* Folds an S-free expression of literals only. */
static bool fold(const ir_model *m, ir_ref r, double *v)
{
    const ir_inst *in = &m->insts[r];
    double a, b;
    switch ((ir_op)in->op) {
    case IR_CONST: *v = in->num; return true;
    case IR_NEG:
        if (!fold(m, in->a, &a)) return false;
        *v = -a;
        return true;
    case IR_ADD:
    case IR_SUB:
    case IR_MUL:
    case IR_DIV:
        if (!fold(m, in->a, &a) || !fold(m, in->b, &b)) return false;
        *v = in->op == IR_ADD ? a + b : in->op == IR_SUB ? a - b : in->op == IR_MUL ? a * b : a / b;
        return true;
    case IR_LT:
    case IR_LE:
    case IR_GT:
    case IR_GE:
    case IR_EQ:
    case IR_NE:
        if (!fold(m, in->a, &a) || !fold(m, in->b, &b)) return false;
        *v = in->op == IR_LT   ? a < b
             : in->op == IR_LE ? a <= b
             : in->op == IR_GT ? a > b
             : in->op == IR_GE ? a >= b
             : in->op == IR_EQ ? a == b
                               : a != b;
        return true;
    case IR_SELECT:
        if (!fold(m, in->a, &a)) return false;
        return fold(m, a != 0 ? in->b : in->c, v);
    default: return false;
    }
}

/* The number a term's coefficient folds to, if it does. */
static bool term_value(const ctx *c, const term *t, double *v)
{
    const ir_model *m = c->m;
    double acc = t->sign;
    for (const flist *l = t->f; l; l = l->next) {
        double x;
        if (!fold(m, l->f->inst, &x)) return false;
        if (l->f->mode == F_IF || l->f->mode == F_UNLESS) x = (x != 0) == (l->f->mode == F_IF);
        acc = l->f->mode == F_RECIP ? acc / x : acc * x;
    }
    for (const blist *l = t->b; l; l = l->next)
        acc *= (double)m->dims[m->vars[c->atom_var[l->atom - (int)m->nvars]].dim].value;
    *v = acc;
    return true;
}

static bool pointwise_axis(const term *t, const ir_stmt *u, int a)
{
    return t->ix[a].kind == ATOM_VAR && t->ix[a].id == u->vars[a];
}

static bool pointwise(const term *t, const ir_stmt *u, int rank)
{
    for (int a = 0; a < rank; a++)
        if (!pointwise_axis(t, u, a)) return false;
    return true;
}

static int uf_find(int *p, int x)
{
    while (p[x] != x) x = p[x] = p[p[x]];
    return x;
}

/* A term that mixes only `axis`, through a reduction atom b: does its
 * coefficient separate into f(axis variable) * g(b)? Factors tied by another
 * reduction atom of the term form one block; no block may depend on both.
 * part (when not NULL, one per factor in list order) says where each factor
 * went: PART_F (a block that depends on the axis variable), PART_G (on b), or
 * PART_SCALAR (neither). */
enum { PART_SCALAR, PART_F, PART_G };

static bool separate(ctx *c, const term *t, int axis, int uvar, uint8_t *part)
{
    atom x = t->ix[axis];
    if (x.kind != ATOM_VAR || !term_bound(t, x.id)) return false;
    size_t nf = 0;
    for (const flist *l = t->f; l; l = l->next) nf++;
    const factor **fs = arena_array(c->tmp, nf ? nf : 1, sizeof *fs);
    int *parent = arena_array(c->tmp, nf ? nf : 1, sizeof *parent);
    bool *has_b = arena_array(c->tmp, nf ? nf : 1, sizeof *has_b);
    bool *has_u = arena_array(c->tmp, nf ? nf : 1, sizeof *has_u);
    if (!fs || !parent || !has_b || !has_u) {
        c->oom = true;
        return false;
    }
    size_t i = 0;
    for (const flist *l = t->f; l; l = l->next, i++) {
        fs[i] = l->f;
        parent[i] = (int)i;
    }
    for (const blist *b = t->b; b; b = b->next) {
        if (b->atom == x.id) continue;
        int first = -1;
        for (i = 0; i < nf; i++) {
            if (!factor_dep(fs[i], b->atom)) continue;
            if (first < 0)
                first = (int)i;
            else
                parent[uf_find(parent, (int)i)] = uf_find(parent, first);
        }
    }
    for (i = 0; i < nf; i++) {
        int r = uf_find(parent, (int)i);
        has_b[r] |= factor_dep(fs[i], x.id);
        has_u[r] |= factor_dep(fs[i], uvar);
    }
    for (i = 0; i < nf; i++)
        if (has_b[i] && has_u[i]) return false;
    for (i = 0; part && i < nf; i++) {
        int r = uf_find(parent, (int)i);
        part[i] = has_u[r] ? PART_F : has_b[r] ? PART_G : PART_SCALAR;
    }
    return true;
}

static bool rank_one(ctx *c, const term *t, int axis, int uvar) { return separate(c, t, axis, uvar, NULL); }

/* factor_eq with x's mixing atom xa standing for y's xb. */
static bool factor_eq_renamed(const ir_model *m, const factor *f, const factor *g, int xa, int xb)
{
    if (f->mode != g->mode || !f->sig || !g->sig || f->nsig != g->nsig) return false;
    for (size_t i = 0; i < f->nsig; i++) {
        atom a = f->sig[i], b = g->sig[i];
        bool ra = a.kind != ATOM_CONST && a.kind != ATOM_MASK && a.id == xa;
        bool rb = b.kind != ATOM_CONST && b.kind != ATOM_MASK && b.id == xb;
        if (ra != rb) return false;
        if (ra) {
            if (a.kind != b.kind || (a.kind == ATOM_DIV && a.k != b.k)) return false;
        } else if (!atom_eq(a, b)) {
            return false;
        }
    }
    return f->inst == g->inst || same_shape(m, f->inst, g->inst);
}

/* One mixing term split by separate(): its factors and where each went. */
typedef struct split_term {
    const factor **fs;
    uint8_t *part;
    size_t nf;
    int x; /* its mixing atom */
} split_term;

/* Do x and y have the same vector in `which` (the same factors, in any
 * order, x's mixing atom standing for y's)? */
static bool same_part(ctx *c, const split_term *x, const split_term *y, int which)
{
    size_t nx = 0, ny = 0;
    for (size_t i = 0; i < x->nf; i++) nx += x->part[i] == which;
    for (size_t i = 0; i < y->nf; i++) ny += y->part[i] == which;
    if (nx != ny) return false;
    bool *taken = arena_array(c->tmp, y->nf ? y->nf : 1, sizeof *taken);
    if (!taken) {
        c->oom = true;
        return false;
    }
    for (size_t i = 0; i < x->nf; i++) {
        if (x->part[i] != which) continue;
        size_t j = 0;
        for (; j < y->nf; j++)
            if (!taken[j] && y->part[j] == which && factor_eq_renamed(c->m, x->fs[i], y->fs[j], x->x, y->x)) break;
        if (j == y->nf) return false;
        taken[j] = true;
    }
    return true;
}

/* The rank of a diagonal+rank correction sum_m c_m f_m(i) g_m(b) (SPEC §2:
 * counted exactly): at most the number of distinct vectors f, and at most the
 * number of distinct g; two terms whose f (or g) are the same expression count
 * it once (two delta-rule steps in one token: f in {k1, k2}, g in {k1, k2},
 * rank 2, from three terms). Vectors that differ as expressions are counted
 * apart, so the count stays an upper bound where they happen to be dependent.
 * nmix when a term cannot be split (memory). */
static int correction_rank(ctx *c, terms L, const ir_stmt *u, int rank, int axis, int nmix)
{
    split_term *st = arena_array(c->tmp, (size_t)nmix, sizeof *st);
    if (!st) {
        c->oom = true;
        return nmix;
    }
    int n = 0;
    for (size_t i = 0; i < L.n && n < nmix; i++) {
        const term *t = &L.t[i];
        if (pointwise(t, u, rank)) continue;
        split_term *s = &st[n++];
        s->nf = 0;
        for (const flist *l = t->f; l; l = l->next) s->nf++;
        s->fs = arena_array(c->tmp, s->nf ? s->nf : 1, sizeof *s->fs);
        s->part = arena_array(c->tmp, s->nf ? s->nf : 1, sizeof *s->part);
        if (!s->fs || !s->part) {
            c->oom = true;
            return nmix;
        }
        size_t k = 0;
        for (const flist *l = t->f; l; l = l->next) s->fs[k++] = l->f;
        s->x = t->ix[axis].id;
        if (!separate(c, t, axis, u->vars[axis], s->part)) return nmix;
    }
    int distinct[2] = {0, 0};
    for (int which = PART_F; which <= PART_G; which++)
        for (int i = 0; i < n; i++) {
            bool seen = false;
            for (int j = 0; j < i && !seen; j++) seen = same_part(c, &st[i], &st[j], which);
            distinct[which - PART_F] += !seen;
        }
    int r = distinct[0] < distinct[1] ? distinct[0] : distinct[1];
    return r > 0 ? r : 1;
}

static void print_factor(strbuf *sb, const ir_model *m, const factor *f, int min_prec)
{
    if (f->mode == F_IF || f->mode == F_UNLESS) {
        sb_puts(sb, "select(");
        ir_print_expr(sb, m, f->inst);
        sb_puts(sb, f->mode == F_IF ? ", 1, 0)" : ", 0, 1)");
        return;
    }
    static const int prec[IR_OP_COUNT] = {[IR_LT] = 1, [IR_LE] = 1, [IR_GT] = 1, [IR_GE] = 1, [IR_EQ] = 1,
                                          [IR_NE] = 1, [IR_ADD] = 1, [IR_SUB] = 1, [IR_MUL] = 2, [IR_DIV] = 2,
                                          [IR_NEG] = 3};
    int p = prec[m->insts[f->inst].op];
    bool paren = p && p < min_prec;
    if (paren) sb_putc(sb, '(');
    ir_print_expr(sb, m, f->inst);
    if (paren) sb_putc(sb, ')');
}

/* sum(vars: f1 * f2 / f3), in the language's syntax, without the sign. */
static void term_text(strbuf *sb, const ctx *c, const term *t)
{
    const ir_model *m = c->m;
    if (t->b) {
        sb_puts(sb, "sum(");
        for (const blist *l = t->b; l; l = l->next)
            sb_printf(sb, "%s%s", l == t->b ? "" : ", ", m->vars[c->atom_var[l->atom - (int)m->nvars]].name);
        sb_puts(sb, ": ");
    }
    int n = 0;
    for (const flist *l = t->f; l; l = l->next) {
        if (l->f->mode == F_RECIP) continue;
        if (n++) sb_puts(sb, " * ");
        print_factor(sb, m, l->f, 2);
    }
    if (!n) sb_putc(sb, '1');
    for (const flist *l = t->f; l; l = l->next) {
        if (l->f->mode != F_RECIP) continue;
        sb_puts(sb, " / ");
        print_factor(sb, m, l->f, 4);
    }
    if (t->b) sb_putc(sb, ')');
}

/* The sum of the pointwise terms as text ("0" when there is none). */
static const char *coef_text(const ctx *c, arena *a, terms L, const ir_stmt *u, int rank)
{
    strbuf sb = {0}, one = {0};
    int n = 0;
    for (size_t i = 0; i < L.n; i++) {
        const term *t = &L.t[i];
        if (!pointwise(t, u, rank)) continue;
        one.len = 0;
        term_text(&one, c, t);
        const char *s = sb_cstr(&one);
        if (n++)
            sb_puts(&sb, t->sign < 0 ? " - " : " + ");
        else if (t->sign < 0)
            sb_putc(&sb, '-');
        bool paren = n == 1 && t->sign < 0 && s[0] == '-';
        if (paren) sb_putc(&sb, '(');
        sb_puts(&sb, s);
        if (paren) sb_putc(&sb, ')');
    }
    if (!n) sb_putc(&sb, '0');
    char *text = sb.failed || one.failed ? NULL : arena_strdup(a, sb_cstr(&sb));
    sb_free(&sb);
    sb_free(&one);
    return text;
}

/* The class of the pointwise coefficient alone (see the file comment). */
static pass_class pointwise_class(const ctx *c, terms L, const ir_stmt *u, int rank, const bool *dep,
                                  const bool *contracted)
{
    bool numeric = true;
    double sum = 0;
    for (size_t i = 0; i < L.n && numeric; i++) {
        double v;
        if (!pointwise(&L.t[i], u, rank)) continue;
        if (term_value(c, &L.t[i], &v))
            sum += v;
        else
            numeric = false;
    }
    if (numeric && sum == 1.0) return PASS_CLASS_IDENTITY;
    bool any = false, all = rank > 0;
    for (int a = 0; a < rank; a++) {
        if (dep[a] && contracted[a]) return PASS_CLASS_DIAGONAL;
        any |= dep[a];
        all &= dep[a];
    }
    return any && all ? PASS_CLASS_DIAGONAL : PASS_CLASS_SCALAR;
}

static void classify(ctx *c, arena *a, pass_state *ps, uint32_t usi, terms L, const bool *contracted)
{
    const ir_model *m = c->m;
    const ir_stmt *u = &m->stmts[usi];
    int rank = m->tensors[ps->tensor].rank;
    bool mixed[IR_MAX_RANK] = {0}, dep[IR_MAX_RANK] = {0}, pdep[IR_MAX_RANK] = {0};
    int nmix = 0, mix_axis = -1;
    bool dense = false;
    for (size_t i = 0; i < L.n; i++) {
        const term *t = &L.t[i];
        int nonpw = 0, ax = -1;
        for (int k = 0; k < rank; k++)
            if (!pointwise_axis(t, u, k)) {
                mixed[k] = true;
                nonpw++;
                ax = k;
            }
        for (int k = 0; k < rank; k++)
            if (term_dep(t, u->vars[k])) {
                dep[k] = true;
                if (!nonpw) pdep[k] = true;
            }
        if (!nonpw) continue;
        nmix++;
        if (nonpw != 1 || (mix_axis >= 0 && mix_axis != ax) || !rank_one(c, t, ax, u->vars[ax])) dense = true;
        mix_axis = ax;
    }
    for (int k = 0; k < rank; k++)
        ps->roles[k] = mixed[k] ? PASS_ROLE_MIXED : dep[k] ? PASS_ROLE_INDEPENDENT : PASS_ROLE_PASSIVE;
    ps->diag = pointwise_class(c, L, u, rank, pdep, contracted);
    ps->cls = !nmix ? ps->diag : dense ? PASS_CLASS_DENSE : PASS_CLASS_DIAG_RANK;
    ps->rank = ps->cls == PASS_CLASS_DIAG_RANK ? correction_rank(c, L, u, rank, mix_axis, nmix) : 0;
    ps->coef_text = coef_text(c, a, L, u, rank);
    if (!ps->coef_text) c->oom = true;
    /* the coefficient as one instruction, for the passes that evaluate it */
    const term *only = NULL;
    int npw = 0;
    for (size_t i = 0; i < L.n; i++)
        if (pointwise(&L.t[i], u, rank)) {
            only = &L.t[i];
            npw++;
        }
    if (npw == 1 && only->sign > 0 && !only->b && only->f && !only->f->next && only->f->f->mode == F_PLAIN &&
        only->f->f->stmt == usi)
        ps->coef = only->f->f->inst;
}

/* ---- readouts and couplings ---- */

typedef struct rvec {
    pass_readout *v;
    size_t n, cap;
} rvec;

static bool is_red_var(const ir_model *m, const ir_inst *sum, int id)
{
    for (uint32_t i = 0; i < sum->red.nvars; i++)
        if ((int)m->red_vars[sum->red.vars + i] == id) return true;
    return false;
}

static void add_readout(ctx *c, rvec *rv, pass_readout r)
{
    for (size_t i = 0; i < rv->n; i++) {
        const pass_readout *o = &rv->v[i];
        if (o->sum == r.sum && o->state == r.state && o->axis == r.axis && o->after_update == r.after_update) return;
    }
    if (!VEC_PUSH(rv->v, rv->n, rv->cap, r)) c->oom = true;
}

/* Every sum of statement si whose body is affine in the analysed state and
 * reads it with the sum's variable on an axis. */
static void find_readouts(ctx *c, uint32_t si, ir_ref r, int output, rvec *rv)
{
    const ir_model *m = c->m;
    const ir_inst *in = &m->insts[r];
    if (in->op == IR_LOAD) return;
    if (in->op == IR_SUM) {
        int d = degree(c, r);
        if (d == DEG_LINEAR || d == DEG_AFFINE) {
            terms L = expand(c, si, in->a);
            const ir_tensor *st = &m->tensors[c->state];
            int holder = m->stmts[si].tensor;
            for (size_t i = 0; i < L.n; i++)
                for (int k = 0; k < st->rank; k++) {
                    atom x = L.t[i].ix[k];
                    if ((x.kind == ATOM_VAR || x.kind == ATOM_DIV) && is_red_var(m, in, x.id))
                        add_readout(c, rv,
                                    (pass_readout){.output = output,
                                                   .state = c->state,
                                                   .axis = k,
                                                   .sum = r,
                                                   .via = m->tensors[holder].kind == IR_LET ? holder : -1,
                                                   .after_update = c->after});
                }
        }
    }
    for (int i = 0; i < 3; i++)
        if (ir_operand(in, i) != IR_NONE) find_readouts(c, si, ir_operand(in, i), output, rv);
}

/* feeds[si]: the first output (in statement order) that statement si's value
 * reaches: its own tensor for an output, through reads for a let; -1 if none. */
static void mark_feeds(const ir_model *m, ir_ref r, int output, int *feeds)
{
    const ir_inst *in = &m->insts[r];
    if (in->op == IR_LOAD) {
        const ir_tensor *t = &m->tensors[in->load.tensor];
        if (t->kind == IR_LET && t->def >= 0 && feeds[t->def] < 0) {
            feeds[t->def] = output;
            mark_feeds(m, m->stmts[t->def].root, output, feeds);
        }
        return;
    }
    for (int i = 0; i < 3; i++)
        if (ir_operand(in, i) != IR_NONE) mark_feeds(m, ir_operand(in, i), output, feeds);
}

typedef struct readvec {
    pass_read *v;
    size_t n, cap;
} readvec;

static void collect_reads(ctx *c, ir_ref r, bool *seen_let, readvec *rv)
{
    const ir_model *m = c->m;
    const ir_inst *in = &m->insts[r];
    if (in->op == IR_LOAD) {
        int ti = in->load.tensor;
        const ir_tensor *t = &m->tensors[ti];
        if (t->kind == IR_LET && t->def >= 0 && !seen_let[ti]) {
            seen_let[ti] = true;
            collect_reads(c, m->stmts[t->def].root, seen_let, rv);
        } else if (t->kind == IR_STATE && ti != c->state) {
            for (size_t i = 0; i < rv->n; i++)
                if (rv->v[i].tensor == ti && rv->v[i].after_update == in->load.after_update) return;
            if (!VEC_PUSH(rv->v, rv->n, rv->cap, ((pass_read){ti, in->load.after_update}))) c->oom = true;
        }
        return;
    }
    for (int i = 0; i < 3; i++)
        if (ir_operand(in, i) != IR_NONE) collect_reads(c, ir_operand(in, i), seen_let, rv);
}

/* ---- the pass ---- */

static void analyze_state_in(ctx *c, arena *a, pass_state *ps, const int *feeds, rvec *readouts, bool *seen_let);

/* One state, with a scratch arena of its own for the terms. */
static void analyze_state(ctx *c, arena *a, pass_state *ps, const int *feeds, rvec *readouts, bool *seen_let)
{
    arena tmp;
    arena_init(&tmp);
    c->tmp = &tmp;
    analyze_state_in(c, a, ps, feeds, readouts, seen_let);
    c->oom |= tmp.failed;
    c->tmp = NULL;
    arena_free(&tmp);
}

static void analyze_state_in(ctx *c, arena *a, pass_state *ps, const int *feeds, rvec *readouts, bool *seen_let)
{
    const ir_model *m = c->m;
    const ir_tensor *st = &m->tensors[ps->tensor];
    c->state = ps->tensor;
    c->work = 0;
    c->overflow = false;
    for (int f = 0; f < 2; f++)
        for (uint32_t i = 0; i < m->ninsts; i++) c->deg[f][i] = -1;
    ps->coef = ps->why = IR_NONE;

    bool contracted[IR_MAX_RANK] = {0};
    size_t first = readouts->n;
    for (uint32_t si = 0; si < m->nstmts; si++) {
        if (feeds[si] < 0) continue;
        for (int f = 0; f < 2; f++) {
            c->after = f;
            find_readouts(c, si, m->stmts[si].root, feeds[si], readouts);
        }
    }
    for (size_t i = first; i < readouts->n; i++) contracted[readouts->v[i].axis] = true;
    /* readouts lost to the limit: count every axis as contracted, which can
     * only turn scalar into diagonal, the class whose algorithms cover both */
    for (int k = 0; c->overflow && k < st->rank; k++) contracted[k] = true;
    c->work = 0;
    c->overflow = false;

    c->after = false;
    if (st->def < 0) {
        ps->cls = ps->diag = PASS_CLASS_CONSTANT;
        for (int k = 0; k < st->rank; k++) ps->roles[k] = PASS_ROLE_PASSIVE;
        return;
    }
    const ir_stmt *u = &m->stmts[st->def];
    readvec reads = {0};
    memset(seen_let, 0, m->ntensors * sizeof *seen_let);
    collect_reads(c, u->root, seen_let, &reads);
    if (reads.n) {
        pass_read *copy = arena_array(a, reads.n, sizeof *copy);
        if (copy) memcpy(copy, reads.v, reads.n * sizeof *copy);
        ps->reads = copy;
        ps->nreads = (int)reads.n;
        c->oom |= !copy;
    }
    free(reads.v);

    ir_ref why;
    if (degree_why(c, u->root, &why) == DEG_NONLINEAR) {
        ps->cls = ps->diag = PASS_CLASS_NONLINEAR;
        ps->why = why;
        for (int k = 0; k < st->rank; k++) ps->roles[k] = PASS_ROLE_MIXED;
        return;
    }
    terms L = expand(c, (uint32_t)st->def, u->root);
    if (c->overflow) {
        ps->cls = ps->diag = PASS_CLASS_DENSE;
        ps->truncated = true;
        for (int k = 0; k < st->rank; k++) ps->roles[k] = PASS_ROLE_MIXED;
        return;
    }
    if (c->oom) return;
    classify(c, a, ps, (uint32_t)st->def, L, contracted);
}

bool pass_analyze(arena *a, const ir_model *m, pass_analysis *out, diag *d)
{
    memset(out, 0, sizeof *out);
    int nstates = 0;
    for (uint32_t i = 0; i < m->ntensors; i++) nstates += m->tensors[i].kind == IR_STATE;
    out->states = arena_array(a, nstates ? (size_t)nstates : 1, sizeof *out->states);

    ctx c = {.m = m};
    size_t ni = m->ninsts ? m->ninsts : 1;
    c.deg[0] = malloc(ni);
    c.deg[1] = malloc(ni);
    c.why[0] = malloc(ni * sizeof(ir_ref));
    c.why[1] = malloc(ni * sizeof(ir_ref));
    c.map = malloc((m->nvars ? m->nvars : 1) * sizeof *c.map);
    int *feeds = malloc((m->nstmts ? m->nstmts : 1) * sizeof *feeds);
    bool *seen_let = malloc(m->ntensors ? m->ntensors : 1);
    rvec readouts = {0};
    bool ok = out->states && c.deg[0] && c.deg[1] && c.why[0] && c.why[1] && c.map && feeds && seen_let;
    if (ok) {
        for (uint32_t v = 0; v < m->nvars; v++) c.map[v] = (atom){ATOM_VAR, (int)v, 0};
        for (uint32_t si = 0; si < m->nstmts; si++) feeds[si] = -1;
        for (uint32_t si = 0; si < m->nstmts; si++) {
            const ir_stmt *s = &m->stmts[si];
            if (m->tensors[s->tensor].kind != IR_OUTPUT) continue;
            feeds[si] = s->tensor;
            mark_feeds(m, s->root, s->tensor, feeds);
        }
        for (uint32_t i = 0; i < m->ntensors && !c.oom; i++) {
            if (m->tensors[i].kind != IR_STATE) continue;
            pass_state *ps = &out->states[out->nstates++];
            *ps = (pass_state){.tensor = (int)i, .coef = IR_NONE, .why = IR_NONE};
            analyze_state(&c, a, ps, feeds, &readouts, seen_let);
        }
        if (readouts.n) {
            out->readouts = arena_array(a, readouts.n, sizeof *out->readouts);
            if (out->readouts) {
                memcpy(out->readouts, readouts.v, readouts.n * sizeof *out->readouts);
                out->nreadouts = (int)readouts.n;
            }
        }
        ok = !c.oom && !a->failed && (!readouts.n || out->readouts);
    }
    free(c.deg[0]);
    free(c.deg[1]);
    free(c.why[0]);
    free(c.why[1]);
    free(c.map);
    free(c.atom_var);
    free(feeds);
    free(seen_let);
    free(readouts.v);
    if (!ok) diag_error(d, "out of memory in the recurrence analysis of model '%s'", m->name);
    return ok;
}

/* ---- printing: the text of `ssmc emit --emit=analysis` ---- */

static const char *const role_names[] = {"independent", "passive", "mixed"};

static void print_class(strbuf *out, pass_class cls, int rank)
{
    static const char *const names[] = {"constant", "identity", "scalar", "diagonal", "diagonal+rank-", "dense",
                                        "nonlinear"};
    sb_puts(out, names[cls]);
    if (cls == PASS_CLASS_DIAG_RANK) sb_printf(out, "%d", rank);
}

static void print_state(strbuf *out, const ir_model *m, const pass_state *ps)
{
    const ir_tensor *t = &m->tensors[ps->tensor];
    sb_printf(out, "  state %s", t->name);
    if (t->rank) {
        sb_putc(out, '[');
        for (int k = 0; k < t->rank; k++) sb_printf(out, "%s%s", k ? "," : "", m->dims[t->dims[k]].name);
        sb_putc(out, ']');
    }
    sb_puts(out, ": ");
    print_class(out, ps->cls, ps->rank);
    const ir_origin *o = t->hidden ? ir_find_origin(m, ps->tensor) : NULL;
    if (o) sb_printf(out, " (hidden: %s at t - %lld)", m->tensors[o->let].name, (long long)o->lag);
    sb_putc(out, '\n');
    if (ps->cls == PASS_CLASS_NONLINEAR) {
        if (ps->why != IR_NONE) {
            sb_printf(out, "    not affine at line %u: ", m->insts[ps->why].loc.line);
            ir_print_expr(out, m, ps->why);
            sb_putc(out, '\n');
        }
    } else if (ps->truncated) {
        sb_puts(out, "    affine; too large to analyse further\n");
    } else if (ps->cls != PASS_CLASS_CONSTANT) {
        if (t->rank) {
            sb_puts(out, "    axes:");
            for (int k = 0; k < t->rank; k++)
                sb_printf(out, "%s %s %s", k ? "," : "", m->dims[t->dims[k]].name, role_names[ps->roles[k]]);
            sb_putc(out, '\n');
        }
        if (ps->cls == PASS_CLASS_DIAG_RANK) {
            sb_puts(out, "    diagonal part: ");
            print_class(out, ps->diag, 0);
            sb_printf(out, ", D_t = %s\n", ps->coef_text ? ps->coef_text : "?");
            for (int k = 0; k < t->rank; k++)
                if (ps->roles[k] == PASS_ROLE_MIXED)
                    sb_printf(out, "    correction: rank %d along %s\n", ps->rank, m->dims[t->dims[k]].name);
        } else if (ps->cls != PASS_CLASS_DENSE) {
            sb_printf(out, "    A_t = %s\n", ps->coef_text ? ps->coef_text : "?");
        }
    }
    if (ps->nreads) {
        sb_puts(out, "    reads");
        for (int i = 0; i < ps->nreads; i++)
            sb_printf(out, "%s %s(%s)", i ? "," : "", m->tensors[ps->reads[i].tensor].name,
                      ps->reads[i].after_update ? "t" : "t-1");
        sb_putc(out, '\n');
    }
}

void pass_analysis_print(strbuf *out, const ir_model *m, const pass_analysis *an)
{
    sb_printf(out, "model %s\n", m->name);
    for (int i = 0; i < an->nstates; i++) print_state(out, m, &an->states[i]);
    for (int i = 0; i < an->nreadouts; i++) {
        const pass_readout *r = &an->readouts[i];
        const ir_tensor *st = &m->tensors[r->state];
        sb_printf(out, "  readout %s <- %s(%s) over %s", m->tensors[r->output].name, st->name,
                  r->after_update ? "t" : "t-1", m->dims[st->dims[r->axis]].name);
        if (r->via >= 0) sb_printf(out, " via %s", m->tensors[r->via].name);
        sb_printf(out, " (sum at %%%u)\n", r->sum);
    }
    pass_sched s;
    arena a;
    arena_init(&a);
    diag d = {0};
    if (pass_schedule(&a, m, &s, &d)) pass_schedule_print(out, m, &s);
    diag_free(&d);
    arena_free(&a);
}
