/* grad.c: the adjoint of a model, by reverse-mode differentiation over index
 * notation (see passes.h and docs/gradients.md).
 *
 * Assumes a verified forward model. Guarantees two verified models: the
 * training forward (the model without time lags, pass_unlag, plus the trace
 * outputs S.prev = S(t-1)) and the adjoint, a reverse model (ir.h) that reads
 * every per-step tensor at t only, so that both can run a chunk of steps at a
 * time from states a previous chunk left.
 *
 * One step of the adjoint, at time t (t = T-1 first):
 *  1. recompute: the forward's lets and new state values S.new at step t from
 *     the trace S.prev (S(t-1)) and the inputs; every reduction that is not a
 *     statement's whole right side becomes a let of its own (X.r0, ...), so
 *     that a derivative that needs its value reads it instead of summing
 *     again;
 *  2. the adjoints of the forward's statements in reverse program order: for
 *     a let L, dL = the sum of what every read of L contributes; for a state
 *     S, dS.new (the adjoint of S(t)) = dS (carried from step t+1) plus what
 *     the reads of S(t) contribute;
 *  3. the carried adjoints, at the end of the step: dS = what the reads of
 *     S(t-1) contribute (the adjoint of S(t-1)); dP = dP + what the reads of
 *     param P contribute; and the output dx[t] for every input x.
 *
 * The contribution of one read Y[idx] inside X[free] = E: the adjoint of X at
 * its free variables times the partial of E along the path from E's root down
 * to the read, each step of the path one derivative rule (grad_<op>, expanded
 * from the op table of support/ops.h, so an op without a rule does not build),
 * summed over every variable in scope at the read (free, or bound by a
 * reduction on the path) that idx does not determine. It is written in
 * gather form, over dY's own index variables: a plain variable in idx becomes
 * dY's variable; a grouped index i / k makes i = v * k + r with r summed over
 * [0, k) (an IR_IX_AFFINE index); the other variables are summed. All the
 * contributions to one tensor make one statement. Every variable of an
 * adjoint statement is its own (renamed, named after the forward's). */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "passes.h"

typedef enum gv_kind { GV_UNSET, GV_VAR, GV_AFFINE, GV_CONST } gv_kind;

/* What a forward variable stands for inside the adjoint statement being built. */
typedef struct gvar {
    gv_kind kind;
    int v;     /* GV_VAR, GV_AFFINE: the adjoint variable */
    int64_t k; /* GV_AFFINE: v * k + r; GV_CONST: the value */
    int r;     /* GV_AFFINE */
} gvar;

/* One read in a forward statement: the path from the root down to it, nodes
 * pn[start .. start + len), each with the operand the path takes. */
typedef struct pnode {
    ir_ref ref;
    int which; /* 0: operand a (or a reduction's body), 1: operand b; -1 at the read */
} pnode;

typedef struct gpath {
    uint32_t stmt, start, len;
} gpath;

typedef struct grad {
    arena *a;
    diag *d;
    const ir_model *f; /* the forward without lags */
    ir_builder b;      /* the adjoint */
    bool ok;
    int *val;     /* per forward tensor: its value in the adjoint (input, param, let; a state's trace S.prev) */
    int *newval;  /* per updated state: S.new, its value after the update */
    int *adj;     /* per forward tensor: its adjoint (see the top of the file) */
    int *adjnew;  /* per updated state: dS.new */
    int *red_let; /* per forward instruction: the let that holds a reduction's value, or -1 */
    uint32_t *red_free; /* per materialized reduction: start of its free variables in free_vars */
    uint32_t *red_nfree;
    uint32_t *free_vars;
    size_t nfree_vars, cfree_vars;
    int *root_of; /* per forward instruction: the statement it is the root of, or -1 */
    gvar *map;    /* per forward variable */
    pnode *pn;
    size_t npn, cpn;
    gpath *paths;
    size_t npaths, cpaths;
    const char **names; /* variable names used in the statement being built */
    size_t nnames, cnames;
    /* copies of forward values made under the current variable map: a value
     * needed twice in one expression is built once and read twice. The epoch
     * moves whenever the map changes or a statement begins. */
    ir_ref *memo;
    uint32_t *memo_epoch;
    uint32_t epoch;
} grad;

const char *pass_lower_name(arena *a, const char *name)
{
    char *s = arena_strdup(a, name);
    for (char *p = s; p && *p; p++) *p = (char)tolower((unsigned char)*p);
    return s ? s : name;
}

static void unsupported(grad *g, ir_ref r, const char *msg)
{
    if (!g->ok) return;
    g->ok = false;
    const ir_inst *in = r != IR_NONE ? &g->f->insts[r] : NULL;
    if (in && g->f->file && in->loc.line)
        diag_at(g->d, g->f->file, in->loc, "cannot differentiate this yet: %s", msg);
    else
        diag_error(g->d, "model '%s': cannot differentiate this yet: %s", g->f->name, msg);
}

/* ---- building the adjoint ---- */

static ir_ref inst(grad *g, ir_inst in)
{
    if (!g->ok) return IR_NONE;
    ir_ref r = ir_build_inst(&g->b, in);
    if (r == IR_NONE) g->ok = false;
    return r;
}

static bool is_num(grad *g, ir_ref r, double v)
{
    return r != IR_NONE && g->b.insts[r].op == IR_CONST && g->b.insts[r].num == v;
}

static ir_ref num(grad *g, double v)
{
    ir_inst in = {.op = IR_CONST, .a = IR_NONE, .b = IR_NONE, .c = IR_NONE, .num = v};
    return inst(g, in);
}

/* An arithmetic node, with the identities that keep the adjoint readable
 * (x * 1, 1 * x, --x, x + 0) folded. */
static ir_ref mk(grad *g, ir_op op, ir_ref a, ir_ref b)
{
    if (!g->ok) return IR_NONE;
    if (op == IR_MUL && is_num(g, a, 1)) return b;
    if ((op == IR_MUL || op == IR_DIV) && is_num(g, b, 1)) return a;
    if (op == IR_MUL && is_num(g, a, -1)) return mk(g, IR_NEG, b, IR_NONE);
    if (op == IR_MUL && is_num(g, b, -1)) return mk(g, IR_NEG, a, IR_NONE);
    if (op == IR_ADD && is_num(g, a, 0)) return b;
    if ((op == IR_ADD || op == IR_SUB) && is_num(g, b, 0)) return a;
    if (op == IR_NEG && g->b.insts[a].op == IR_NEG) return g->b.insts[a].a;
    ir_inst in = {.op = (uint8_t)op, .a = a, .b = b, .c = IR_NONE};
    return inst(g, in);
}

/* select(c, a, b): a where c != 0, else b */
static ir_ref sel(grad *g, ir_ref c, ir_ref a, ir_ref b)
{
    ir_inst in = {.op = IR_SELECT, .a = c, .b = a, .c = b};
    return inst(g, in);
}

/* An index variable of the adjoint as a number. */
static ir_ref idx(grad *g, int var)
{
    ir_inst in = {.op = IR_IDX, .a = IR_NONE, .b = IR_NONE, .c = IR_NONE, .var = var};
    return inst(g, in);
}

static const char *unique_name(grad *g, const char *name)
{
    const char *n = name;
    for (int k = 2;; k++) {
        bool taken = false;
        for (size_t i = 0; i < g->nnames && !taken; i++) taken = strcmp(g->names[i], n) == 0;
        if (!taken) break;
        n = arena_printf(g->a, "%s%d", name, k);
        if (!n) {
            g->ok = false;
            return name;
        }
    }
    if (!VEC_PUSH(g->names, g->nnames, g->cnames, n)) g->ok = false;
    return n;
}

/* A variable of the statement being built, named after `name`. */
static int fresh(grad *g, const char *name, int dim)
{
    int v = ir_build_var(&g->b, unique_name(g, name), dim);
    if (v < 0) g->ok = false;
    return v;
}

static int dim_of_value(grad *g, int64_t k)
{
    for (size_t i = 0; i < g->b.ndims; i++)
        if (g->b.dims[i].value == k) return (int)i;
    int d = ir_build_dim(&g->b, arena_printf(g->a, "%lld", (long long)k), k);
    if (d < 0) g->ok = false;
    return d;
}

static int new_tensor(grad *g, const char *name, ir_kind kind, bool per_step, const ir_tensor *like)
{
    ir_tensor t = {.name = name, .kind = kind, .per_step = per_step, .rank = like->rank, .def = -1, .loc = like->loc};
    memcpy(t.dims, like->dims, sizeof t.dims);
    int id = ir_build_tensor(&g->b, t);
    if (id < 0 || !name) g->ok = false;
    return id;
}

/* The name of the adjoint of forward tensor t: dt, or d.t where dt is taken. */
static const char *adj_name(grad *g, const ir_tensor *t, const char *suffix)
{
    const char *n = arena_printf(g->a, "d%s%s", t->name, suffix);
    bool taken = false;
    for (uint32_t i = 0; n && i < g->f->ntensors && !taken; i++) taken = strcmp(g->f->tensors[i].name, n) == 0;
    for (size_t i = 0; n && i < g->b.ntensors && !taken; i++) taken = strcmp(g->b.tensors[i].name, n) == 0;
    return taken ? arena_printf(g->a, "d.%s%s", t->name, suffix) : n;
}

static void begin_stmt(grad *g)
{
    g->nnames = 0;
    g->epoch++;
}

static void emit_stmt(grad *g, int tensor, const int *vars, ir_ref root, bool per_step, src_loc loc)
{
    if (!g->ok) return;
    ir_stmt s = {.tensor = tensor, .root = root, .per_step = per_step, .loc = loc};
    for (int i = 0; i < g->b.tensors[tensor].rank; i++) s.vars[i] = vars[i];
    int si = ir_build_stmt(&g->b, s);
    if (si < 0) g->ok = false;
    else g->b.tensors[tensor].def = si;
}

/* A read of adjoint tensor `tensor` at the adjoint variables vars. */
static ir_ref load_vars(grad *g, int tensor, const int *vars)
{
    ir_inst in = {.op = IR_LOAD, .a = IR_NONE, .b = IR_NONE, .c = IR_NONE};
    in.load.tensor = tensor;
    in.load.lag_var = -1;
    in.load.ix = (uint32_t)g->b.nix;
    for (int i = 0; i < g->b.tensors[tensor].rank; i++)
        ir_build_index(&g->b, (ir_index){.kind = IR_IX_VAR, .var = vars[i]});
    return inst(g, in);
}

/* ---- forward indices and values under the variable map ---- */

static ir_index map_index(grad *g, ir_ref at, ir_index ix)
{
    if (ix.kind == IR_IX_CONST) return ix;
    gvar m = ix.var >= 0 && (uint32_t)ix.var < g->f->nvars ? g->map[ix.var] : (gvar){GV_UNSET, 0, 0, 0};
    if (ix.kind == IR_IX_VAR) {
        switch (m.kind) {
        case GV_VAR: return (ir_index){.kind = IR_IX_VAR, .var = m.v};
        case GV_AFFINE: return (ir_index){.kind = IR_IX_AFFINE, .var = m.v, .k = m.k, .var2 = m.r};
        case GV_CONST: return (ir_index){.kind = IR_IX_CONST, .k = m.k};
        case GV_UNSET: break;
        }
    } else if (ix.kind == IR_IX_DIV) {
        switch (m.kind) {
        case GV_VAR: return (ir_index){.kind = IR_IX_DIV, .var = m.v, .k = ix.k};
        case GV_CONST: return (ir_index){.kind = IR_IX_CONST, .k = m.k / ix.k};
        case GV_AFFINE:
            /* (v * k2 + r) / k with r < k2: v when k == k2, v / (k / k2) when k2 divides k */
            if (m.k == ix.k) return (ir_index){.kind = IR_IX_VAR, .var = m.v};
            if (ix.k % m.k == 0) return (ir_index){.kind = IR_IX_DIV, .var = m.v, .k = ix.k / m.k};
            unsupported(g, at, "two grouped reads of one variable by divisors that do not divide each other");
            return (ir_index){.kind = IR_IX_CONST};
        case GV_UNSET: break;
        }
    }
    unsupported(g, at, "an index the gradients pass does not know");
    return (ir_index){.kind = IR_IX_CONST};
}

/* A read of adjoint tensor `tensor` at the forward indices fix[0..n) (under the map). */
static ir_ref load_mapped(grad *g, ir_ref at, int tensor, const ir_index *fix, int n, bool after_update)
{
    ir_inst in = {.op = IR_LOAD, .a = IR_NONE, .b = IR_NONE, .c = IR_NONE};
    in.loc = g->f->insts[at].loc;
    in.load.tensor = tensor;
    in.load.lag_var = -1;
    in.load.after_update = after_update;
    ir_index tmp[IR_MAX_RANK];
    for (int i = 0; i < n; i++) tmp[i] = map_index(g, at, fix[i]);
    in.load.ix = (uint32_t)g->b.nix;
    for (int i = 0; i < n; i++) ir_build_index(&g->b, tmp[i]);
    return inst(g, in);
}

static ir_ref load_at_vars(grad *g, ir_ref at, int tensor, const int *fvars, int n)
{
    ir_index fix[IR_MAX_RANK];
    for (int i = 0; i < n; i++) fix[i] = (ir_index){.kind = IR_IX_VAR, .var = fvars[i]};
    return load_mapped(g, at, tensor, fix, n, false);
}

/* The value of forward variable fvar (IR_IDX) under the map. */
static ir_ref idx_value(grad *g, int fvar, ir_ref at)
{
    gvar m = g->map[fvar];
    if (m.kind == GV_VAR) return idx(g, m.v);
    if (m.kind == GV_CONST) return num(g, (double)m.k);
    if (m.kind == GV_AFFINE) return mk(g, IR_ADD, mk(g, IR_MUL, idx(g, m.v), num(g, (double)m.k)), idx(g, m.r));
    unsupported(g, at, "an index variable the gradients pass does not know");
    return IR_NONE;
}

/* The value of forward instruction r in the adjoint. `top`: build r itself
 * even where a let already holds its value (when building that let). */
static ir_ref cp_new(grad *g, ir_ref r, bool top);

static ir_ref cp(grad *g, ir_ref r, bool top)
{
    if (!g->ok || r == IR_NONE) return IR_NONE;
    if (!top && g->memo_epoch[r] == g->epoch) return g->memo[r];
    uint32_t epoch = g->epoch;
    ir_ref out = cp_new(g, r, top);
    if (!top && g->epoch == epoch) {
        g->memo[r] = out;
        g->memo_epoch[r] = epoch;
    }
    return out;
}

static ir_ref cp_new(grad *g, ir_ref r, bool top)
{
    const ir_model *f = g->f;
    const ir_inst *in = &f->insts[r];
    if (!top && g->red_let[r] >= 0) {
        int n = (int)g->red_nfree[r];
        int fv[IR_MAX_RANK * 4];
        for (int i = 0; i < n; i++) fv[i] = (int)g->free_vars[g->red_free[r] + (uint32_t)i];
        return load_at_vars(g, r, g->red_let[r], fv, n);
    }
    if (!top && g->root_of[r] >= 0) {
        const ir_stmt *s = &f->stmts[g->root_of[r]];
        const ir_tensor *t = &f->tensors[s->tensor];
        int held = t->kind == IR_LET ? g->val[s->tensor] : t->kind == IR_STATE ? g->newval[s->tensor] : -1;
        if (held >= 0) return load_at_vars(g, r, held, s->vars, t->rank);
    }
    ir_inst out = *in;
    out.a = out.b = out.c = IR_NONE;
    switch ((ir_op)in->op) {
    case IR_CONST: return inst(g, out);
    case IR_IDX: return idx_value(g, in->var, r);
    case IR_LOAD: {
        const ir_tensor *t = &f->tensors[in->load.tensor];
        int tensor = g->val[in->load.tensor];
        if (t->kind == IR_STATE && in->load.after_update && g->newval[in->load.tensor] >= 0)
            tensor = g->newval[in->load.tensor];
        if (in->load.lag || in->load.lag_var >= 0 || tensor < 0) {
            unsupported(g, r, "a read the adjoint has no value for");
            return IR_NONE;
        }
        return load_mapped(g, r, tensor, &f->ix[in->load.ix], t->rank, false);
    }
    case IR_SUM:
    case IR_RMAX: {
        gvar saved[IR_MAX_RANK * 4];
        uint32_t n = in->red.nvars;
        if (n > sizeof saved / sizeof *saved) {
            unsupported(g, r, "a reduction over too many variables");
            return IR_NONE;
        }
        int fresh_vars[IR_MAX_RANK * 4];
        for (uint32_t i = 0; i < n; i++) {
            uint32_t v = f->red_vars[in->red.vars + i];
            saved[i] = g->map[v];
            fresh_vars[i] = fresh(g, f->vars[v].name, f->vars[v].dim);
            g->map[v] = (gvar){.kind = GV_VAR, .v = fresh_vars[i]};
        }
        g->epoch++;
        out.a = cp(g, in->a, false);
        g->epoch++;
        uint32_t first = (uint32_t)g->b.nred_vars;
        for (uint32_t i = 0; i < n; i++) ir_build_red_var(&g->b, (uint32_t)fresh_vars[i]);
        for (uint32_t i = 0; i < n; i++) g->map[f->red_vars[in->red.vars + i]] = saved[i];
        out.red.vars = first;
        out.red.nvars = n;
        return inst(g, out);
    }
    default:
        out.a = cp(g, in->a, false);
        if (in->b != IR_NONE) out.b = cp(g, in->b, false);
        if (in->c != IR_NONE) out.c = cp(g, in->c, false);
        return inst(g, out);
    }
}

/* ---- derivative rules: bar times the partial of `in` in its operand k ---- */

typedef ir_ref grad_rule(grad *g, ir_ref in, int k, ir_ref bar);

static ir_ref opa(grad *g, ir_ref in) { return cp(g, g->f->insts[in].a, false); }
static ir_ref opb(grad *g, ir_ref in) { return cp(g, g->f->insts[in].b, false); }
static ir_ref res(grad *g, ir_ref in) { return cp(g, in, false); }

static ir_ref grad_none(grad *g, ir_ref in, int k, ir_ref bar)
{
    unsupported(g, in, "a leaf has no operands");
    return IR_NONE;
}

static ir_ref grad_neg(grad *g, ir_ref in, int k, ir_ref bar) { return mk(g, IR_NEG, bar, IR_NONE); }
static ir_ref grad_add(grad *g, ir_ref in, int k, ir_ref bar) { return bar; }
static ir_ref grad_sub(grad *g, ir_ref in, int k, ir_ref bar) { return k == 0 ? bar : mk(g, IR_NEG, bar, IR_NONE); }

static ir_ref grad_mul(grad *g, ir_ref in, int k, ir_ref bar)
{
    return mk(g, IR_MUL, bar, k == 0 ? opb(g, in) : opa(g, in));
}

/* d(a/b)/da = 1/b; d(a/b)/db = -(a/b)/b */
static ir_ref grad_div(grad *g, ir_ref in, int k, ir_ref bar)
{
    if (k == 0) return mk(g, IR_DIV, bar, opb(g, in));
    return mk(g, IR_NEG, mk(g, IR_DIV, mk(g, IR_MUL, bar, res(g, in)), opb(g, in)), IR_NONE);
}

static ir_ref grad_exp(grad *g, ir_ref in, int k, ir_ref bar) { return mk(g, IR_MUL, bar, res(g, in)); }
static ir_ref grad_log(grad *g, ir_ref in, int k, ir_ref bar) { return mk(g, IR_DIV, bar, opa(g, in)); }

static ir_ref grad_log1p(grad *g, ir_ref in, int k, ir_ref bar)
{
    return mk(g, IR_DIV, bar, mk(g, IR_ADD, num(g, 1), opa(g, in)));
}

/* d sqrt(a) = 0.5 / sqrt(a) */
static ir_ref grad_sqrt(grad *g, ir_ref in, int k, ir_ref bar)
{
    return mk(g, IR_DIV, mk(g, IR_MUL, bar, num(g, 0.5)), res(g, in));
}

/* d a^-1/2 = -1/2 a^-3/2 = -1/2 r^3 */
static ir_ref grad_rsqrt(grad *g, ir_ref in, int k, ir_ref bar)
{
    ir_ref r = res(g, in);
    ir_ref r3 = mk(g, IR_MUL, mk(g, IR_MUL, r, r), r);
    return mk(g, IR_MUL, bar, mk(g, IR_MUL, num(g, -0.5), r3));
}

/* d |a| = sign(a) = (a > 0) - (a < 0) */
static ir_ref grad_abs(grad *g, ir_ref in, int k, ir_ref bar)
{
    ir_ref a = opa(g, in), z = num(g, 0);
    return mk(g, IR_MUL, bar, mk(g, IR_SUB, mk(g, IR_GT, a, z), mk(g, IR_LT, a, z)));
}

/* comparisons are piecewise constant: no gradient flows through them */
static ir_ref grad_cmp(grad *g, ir_ref in, int k, ir_ref bar) { return num(g, 0); }
static ir_ref grad_lt(grad *g, ir_ref in, int k, ir_ref bar) { return grad_cmp(g, in, k, bar); }
static ir_ref grad_le(grad *g, ir_ref in, int k, ir_ref bar) { return grad_cmp(g, in, k, bar); }
static ir_ref grad_gt(grad *g, ir_ref in, int k, ir_ref bar) { return grad_cmp(g, in, k, bar); }
static ir_ref grad_ge(grad *g, ir_ref in, int k, ir_ref bar) { return grad_cmp(g, in, k, bar); }
static ir_ref grad_eq(grad *g, ir_ref in, int k, ir_ref bar) { return grad_cmp(g, in, k, bar); }
static ir_ref grad_ne(grad *g, ir_ref in, int k, ir_ref bar) { return grad_cmp(g, in, k, bar); }

static ir_ref grad_sin(grad *g, ir_ref in, int k, ir_ref bar)
{
    return mk(g, IR_MUL, bar, mk(g, IR_COS, opa(g, in), IR_NONE));
}

static ir_ref grad_cos(grad *g, ir_ref in, int k, ir_ref bar)
{
    return mk(g, IR_NEG, mk(g, IR_MUL, bar, mk(g, IR_SIN, opa(g, in), IR_NONE)), IR_NONE);
}

/* d erf(a) = 2 / sqrt(pi) exp(-a^2) */
static ir_ref grad_erf(grad *g, ir_ref in, int k, ir_ref bar)
{
    ir_ref a = opa(g, in);
    ir_ref e = mk(g, IR_EXP, mk(g, IR_NEG, mk(g, IR_MUL, a, a), IR_NONE), IR_NONE);
    return mk(g, IR_MUL, bar, mk(g, IR_MUL, num(g, 1.1283791670955126), e));
}

/* only the chosen operand's gradient counts; none flows into the condition */
static ir_ref grad_select(grad *g, ir_ref in, int k, ir_ref bar)
{
    if (k == 0) return num(g, 0);
    ir_ref c = opa(g, in), z = num(g, 0);
    return k == 1 ? sel(g, c, bar, z) : sel(g, c, z, bar);
}

/* d tanh = 1 - r^2 */
static ir_ref grad_tanh(grad *g, ir_ref in, int k, ir_ref bar)
{
    ir_ref r = res(g, in);
    return mk(g, IR_MUL, bar, mk(g, IR_SUB, num(g, 1), mk(g, IR_MUL, r, r)));
}

/* d sigmoid = r (1 - r) */
static ir_ref grad_sigmoid(grad *g, ir_ref in, int k, ir_ref bar)
{
    ir_ref r = res(g, in);
    return mk(g, IR_MUL, bar, mk(g, IR_MUL, r, mk(g, IR_SUB, num(g, 1), r)));
}

/* d softplus(a) = sigmoid(a) */
static ir_ref grad_softplus(grad *g, ir_ref in, int k, ir_ref bar)
{
    return mk(g, IR_MUL, bar, mk(g, IR_SIGMOID, opa(g, in), IR_NONE));
}

/* d (a sigmoid(a)) = s (1 + a (1 - s)), s = sigmoid(a) */
static ir_ref grad_silu(grad *g, ir_ref in, int k, ir_ref bar)
{
    ir_ref a = opa(g, in);
    ir_ref sg = mk(g, IR_SIGMOID, a, IR_NONE);
    ir_ref inner = mk(g, IR_ADD, num(g, 1), mk(g, IR_MUL, a, mk(g, IR_SUB, num(g, 1), sg)));
    return mk(g, IR_MUL, bar, mk(g, IR_MUL, sg, inner));
}

static ir_ref grad_relu(grad *g, ir_ref in, int k, ir_ref bar)
{
    ir_ref z = num(g, 0);
    return sel(g, mk(g, IR_GT, opa(g, in), z), bar, z);
}

/* d a^b / da = b a^(b-1); d a^b / db = a^b log(a) */
static ir_ref grad_pow(grad *g, ir_ref in, int k, ir_ref bar)
{
    if (k == 0) {
        ir_ref e = mk(g, IR_SUB, opb(g, in), num(g, 1));
        return mk(g, IR_MUL, bar, mk(g, IR_MUL, opb(g, in), mk(g, IR_POW, opa(g, in), e)));
    }
    return mk(g, IR_MUL, bar, mk(g, IR_MUL, res(g, in), mk(g, IR_LOG, opa(g, in), IR_NONE)));
}

/* min and max: the gradient goes to the operand chosen, the first on a tie */
static ir_ref grad_min(grad *g, ir_ref in, int k, ir_ref bar)
{
    ir_ref c = mk(g, IR_LE, opa(g, in), opb(g, in)), z = num(g, 0);
    return k == 0 ? sel(g, c, bar, z) : sel(g, c, z, bar);
}

static ir_ref grad_max(grad *g, ir_ref in, int k, ir_ref bar)
{
    ir_ref c = mk(g, IR_GE, opa(g, in), opb(g, in)), z = num(g, 0);
    return k == 0 ? sel(g, c, bar, z) : sel(g, c, z, bar);
}

static ir_ref grad_sum(grad *g, ir_ref in, int k, ir_ref bar) { return bar; }

/* max(i: e): the gradient goes to the values of i where e is the maximum,
 * shared evenly between ties */
static ir_ref grad_rmax(grad *g, ir_ref in, int k, ir_ref bar)
{
    const ir_model *f = g->f;
    const ir_inst *n = &f->insts[in];
    ir_ref r = res(g, in), body = opa(g, in);
    /* the tie count: the body again over the reduction's variables of its own */
    gvar saved[IR_MAX_RANK * 4];
    int fv[IR_MAX_RANK * 4];
    uint32_t nv = n->red.nvars < IR_MAX_RANK * 4 ? n->red.nvars : IR_MAX_RANK * 4;
    for (uint32_t i = 0; i < nv; i++) {
        uint32_t v = f->red_vars[n->red.vars + i];
        saved[i] = g->map[v];
        fv[i] = fresh(g, f->vars[v].name, f->vars[v].dim);
        g->map[v] = (gvar){.kind = GV_VAR, .v = fv[i]};
    }
    g->epoch++;
    ir_ref tie = mk(g, IR_EQ, cp(g, n->a, false), r);
    for (uint32_t i = 0; i < nv; i++) g->map[f->red_vars[n->red.vars + i]] = saved[i];
    g->epoch++;
    ir_inst cnt = {.op = IR_SUM, .loc = n->loc, .a = tie, .b = IR_NONE, .c = IR_NONE};
    cnt.red.vars = (uint32_t)g->b.nred_vars;
    cnt.red.nvars = nv;
    for (uint32_t i = 0; i < nv; i++) ir_build_red_var(&g->b, (uint32_t)fv[i]);
    ir_ref count = inst(g, cnt);
    return sel(g, mk(g, IR_EQ, body, r), mk(g, IR_DIV, bar, count), num(g, 0));
}

static grad_rule *const rules[IR_OP_COUNT] = {
#define X(id, arity, name, kind, cost, grad) [IR_##id] = grad,
    SSMC_OPS(X)
#undef X
};

/* ---- the reads of every forward statement, as paths from its root ---- */

static void collect(grad *g, uint32_t si, ir_ref r, pnode *stack, uint32_t depth)
{
    const ir_inst *in = &g->f->insts[r];
    stack[depth] = (pnode){r, -1};
    if (in->op == IR_CONST || in->op == IR_IDX) return;
    if (in->op == IR_LOAD) {
        gpath p = {.stmt = si, .start = (uint32_t)g->npn, .len = depth + 1};
        for (uint32_t i = 0; i <= depth; i++)
            if (!VEC_PUSH(g->pn, g->npn, g->cpn, stack[i])) g->ok = false;
        if (!VEC_PUSH(g->paths, g->npaths, g->cpaths, p)) g->ok = false;
        return;
    }
    stack[depth].which = 0;
    collect(g, si, in->a, stack, depth + 1);
    if (in->b != IR_NONE) {
        stack[depth].which = 1;
        collect(g, si, in->b, stack, depth + 1);
    }
    if (in->c != IR_NONE) {
        stack[depth].which = 2;
        collect(g, si, in->c, stack, depth + 1);
    }
    stack[depth].which = -1;
}

static const ir_inst *leaf(grad *g, const gpath *p) { return &g->f->insts[g->pn[p->start + p->len - 1].ref]; }

/* ---- contributions ---- */

/* The adjoint of statement s's tensor at its free variables (under the map). */
static ir_ref bar_root(grad *g, const ir_stmt *s)
{
    const ir_tensor *t = &g->f->tensors[s->tensor];
    int tensor = t->kind == IR_STATE ? g->adjnew[s->tensor] : g->adj[s->tensor];
    if (tensor < 0) {
        unsupported(g, s->root, "a statement without an adjoint");
        return IR_NONE;
    }
    return load_at_vars(g, s->root, tensor, s->vars, t->rank);
}

/* What the read at the end of path p contributes to its tensor's adjoint at
 * the adjoint variables V (one per axis of the tensor read). */
static ir_ref contrib(grad *g, const gpath *p, const int *V)
{
    const ir_model *f = g->f;
    const ir_stmt *s = &f->stmts[p->stmt];
    const ir_inst *ld = leaf(g, p);
    ir_ref at = g->pn[p->start + p->len - 1].ref;
    const ir_tensor *y = &f->tensors[ld->load.tensor];
    uint32_t W[IR_MAX_RANK * 8];
    uint32_t nW = 0;
    for (int i = 0; i < f->tensors[s->tensor].rank; i++) W[nW++] = (uint32_t)s->vars[i];
    for (uint32_t i = 0; i + 1 < p->len; i++) {
        const ir_inst *n = &f->insts[g->pn[p->start + i].ref];
        if (n->op != IR_SUM && n->op != IR_RMAX) continue;
        for (uint32_t j = 0; j < n->red.nvars; j++) {
            if (nW == sizeof W / sizeof *W) {
                unsupported(g, at, "too many variables in scope");
                return IR_NONE;
            }
            W[nW++] = f->red_vars[n->red.vars + j];
        }
    }
    int summed[IR_MAX_RANK * 8];
    uint32_t nsummed = 0;
    /* axes whose index does not name a variable of its own: a constant, or a
     * variable already placed on another axis; the contribution is masked by
     * V_a == that index (after the other variables are placed) */
    int masked[IR_MAX_RANK];
    int nmasked = 0;
    for (int a = 0; a < y->rank; a++) {
        ir_index ix = f->ix[ld->load.ix + (uint32_t)a];
        if (ix.kind == IR_IX_CONST) {
            masked[nmasked++] = a;
            continue;
        }
        if (ix.kind != IR_IX_VAR && ix.kind != IR_IX_DIV) {
            unsupported(g, at, "an index the gradients pass does not know");
            return IR_NONE;
        }
        if (g->map[ix.var].kind != GV_UNSET) {
            if (ix.kind == IR_IX_DIV) {
                unsupported(g, at, "a grouped read of a variable that another axis of the read also takes");
                return IR_NONE;
            }
            masked[nmasked++] = a;
            continue;
        }
        if (ix.kind == IR_IX_VAR) {
            g->map[ix.var] = (gvar){.kind = GV_VAR, .v = V[a]};
        } else {
            int r = fresh(g, f->vars[ix.var].name, dim_of_value(g, ix.k));
            g->map[ix.var] = (gvar){.kind = GV_AFFINE, .v = V[a], .k = ix.k, .r = r};
            summed[nsummed++] = r;
        }
    }
    for (uint32_t i = 0; i < nW; i++) {
        if (g->map[W[i]].kind != GV_UNSET) continue;
        int v = fresh(g, f->vars[W[i]].name, f->vars[W[i]].dim);
        g->map[W[i]] = (gvar){.kind = GV_VAR, .v = v};
        summed[nsummed++] = v;
    }
    g->epoch++;
    ir_ref bar = bar_root(g, s);
    for (uint32_t i = 0; i + 1 < p->len && g->ok && !is_num(g, bar, 0); i++) {
        pnode n = g->pn[p->start + i];
        bar = rules[f->insts[n.ref].op](g, n.ref, n.which, bar);
    }
    /* masks: V_a == the index's value; those on the free variables alone go
     * outside the sum, so that the sum is not evaluated where they fail */
    ir_ref outer = IR_NONE;
    for (int i = 0; i < nmasked && g->ok && !is_num(g, bar, 0); i++) {
        ir_index ix = f->ix[ld->load.ix + (uint32_t)masked[i]];
        bool inner = ix.kind == IR_IX_VAR && g->map[ix.var].kind == GV_AFFINE;
        for (uint32_t k = 0; !inner && ix.kind == IR_IX_VAR && k < nsummed; k++)
            inner = g->map[ix.var].kind == GV_VAR && g->map[ix.var].v == summed[k];
        ir_ref want = ix.kind == IR_IX_CONST ? num(g, (double)ix.k) : idx_value(g, ix.var, at);
        ir_ref cond = mk(g, IR_EQ, idx(g, V[masked[i]]), want);
        if (inner)
            bar = sel(g, cond, bar, num(g, 0));
        else
            outer = outer == IR_NONE ? cond : mk(g, IR_MUL, outer, cond);
    }
    if (is_num(g, bar, 0)) nsummed = 0;
    if (nsummed && g->ok) {
        ir_inst red = {.op = IR_SUM, .loc = ld->loc, .a = bar, .b = IR_NONE, .c = IR_NONE};
        red.red.vars = (uint32_t)g->b.nred_vars;
        red.red.nvars = nsummed;
        for (uint32_t i = 0; i < nsummed; i++) ir_build_red_var(&g->b, (uint32_t)summed[i]);
        bar = inst(g, red);
    }
    if (outer != IR_NONE && !is_num(g, bar, 0)) bar = sel(g, outer, bar, num(g, 0));
    g->epoch++;
    for (uint32_t i = 0; i < nW; i++) g->map[W[i]] = (gvar){0};
    for (int a = 0; a < y->rank; a++) {
        ir_index ix = f->ix[ld->load.ix + (uint32_t)a];
        if (ix.kind == IR_IX_VAR || ix.kind == IR_IX_DIV) g->map[ix.var] = (gvar){0};
    }
    return bar;
}

/* A name for axis a of forward tensor t in its adjoint's statement. */
static const char *axis_name(grad *g, int tensor, int a)
{
    const ir_model *f = g->f;
    const ir_tensor *t = &f->tensors[tensor];
    if (t->def >= 0) return f->vars[f->stmts[t->def].vars[a]].name;
    for (size_t i = 0; i < g->npaths; i++) {
        const ir_inst *ld = leaf(g, &g->paths[i]);
        if (ld->load.tensor != tensor) continue;
        ir_index ix = f->ix[ld->load.ix + (uint32_t)a];
        if (ix.kind == IR_IX_VAR) return f->vars[ix.var].name;
    }
    return pass_lower_name(g->a, f->dims[t->dims[a]].name);
}

enum { READS_ALL, READS_OLD, READS_NEW };

/* The statement of adjoint tensor `atensor` for forward tensor `ftensor`: the
 * sum of the contributions of its reads (those `which` selects), plus the
 * adjoint's own previous value when `carry`. */
static void emit_adjoint(grad *g, int ftensor, int atensor, int which, int carry_from, bool per_step)
{
    const ir_tensor *y = &g->f->tensors[ftensor];
    begin_stmt(g);
    int V[IR_MAX_RANK];
    for (int a = 0; a < y->rank; a++) V[a] = fresh(g, axis_name(g, ftensor, a), y->dims[a]);
    ir_ref acc = carry_from >= 0 ? load_vars(g, carry_from, V) : IR_NONE;
    for (size_t i = 0; i < g->npaths && g->ok; i++) {
        const ir_inst *ld = leaf(g, &g->paths[i]);
        if (ld->load.tensor != ftensor) continue;
        if (which == READS_OLD && ld->load.after_update) continue;
        if (which == READS_NEW && !ld->load.after_update) continue;
        ir_ref c = contrib(g, &g->paths[i], V);
        if (is_num(g, c, 0)) continue; /* through a comparison or a select's condition */
        acc = acc == IR_NONE ? c : mk(g, IR_ADD, acc, c);
    }
    if (acc == IR_NONE) acc = num(g, 0);
    emit_stmt(g, atensor, V, acc, per_step, y->loc);
}

/* ---- the recompute section ---- */

/* Variables used free in the tree at r (not bound inside it), in first-use order. */
static void free_vars_of(grad *g, ir_ref r, bool *bound, uint32_t *out, uint32_t *n, uint32_t cap)
{
    const ir_model *f = g->f;
    const ir_inst *in = &f->insts[r];
    if (in->op == IR_LOAD) {
        const ir_tensor *t = &f->tensors[in->load.tensor];
        for (int i = 0; i < t->rank; i++) {
            ir_index ix = f->ix[in->load.ix + (uint32_t)i];
            if (ix.kind == IR_IX_CONST || bound[ix.var]) continue;
            bool seen = false;
            for (uint32_t k = 0; k < *n && !seen; k++) seen = out[k] == (uint32_t)ix.var;
            if (!seen && *n < cap) out[(*n)++] = (uint32_t)ix.var;
        }
        return;
    }
    if (in->op == IR_CONST) return;
    if (in->op == IR_IDX) {
        bool seen = bound[in->var];
        for (uint32_t k = 0; k < *n && !seen; k++) seen = out[k] == (uint32_t)in->var;
        if (!seen && *n < cap) out[(*n)++] = (uint32_t)in->var;
        return;
    }
    if (in->op == IR_SUM || in->op == IR_RMAX) {
        for (uint32_t i = 0; i < in->red.nvars; i++) bound[f->red_vars[in->red.vars + i]] = true;
        free_vars_of(g, in->a, bound, out, n, cap);
        for (uint32_t i = 0; i < in->red.nvars; i++) bound[f->red_vars[in->red.vars + i]] = false;
        return;
    }
    free_vars_of(g, in->a, bound, out, n, cap);
    if (in->b != IR_NONE) free_vars_of(g, in->b, bound, out, n, cap);
    if (in->c != IR_NONE) free_vars_of(g, in->c, bound, out, n, cap);
}

/* Every reduction below the root of statement si gets a let of its own, inner ones first. */
static void materialize(grad *g, uint32_t si, ir_ref r, bool is_root, int *count, bool *bound)
{
    const ir_model *f = g->f;
    const ir_inst *in = &f->insts[r];
    if (in->op == IR_LOAD || in->op == IR_CONST || in->op == IR_IDX || !g->ok) return;
    materialize(g, si, in->a, false, count, bound);
    if (in->b != IR_NONE) materialize(g, si, in->b, false, count, bound);
    if (in->c != IR_NONE) materialize(g, si, in->c, false, count, bound);
    if (is_root || (in->op != IR_SUM && in->op != IR_RMAX)) return;
    const ir_stmt *s = &f->stmts[si];
    uint32_t fv[IR_MAX_RANK + 1];
    uint32_t nfv = 0;
    free_vars_of(g, r, bound, fv, &nfv, IR_MAX_RANK + 1);
    if (nfv > IR_MAX_RANK) {
        unsupported(g, r, "a reduction inside more than 8 index variables");
        return;
    }
    ir_tensor like = {.rank = (int)nfv, .loc = f->tensors[s->tensor].loc};
    for (uint32_t i = 0; i < nfv; i++) like.dims[i] = f->vars[fv[i]].dim;
    const char *name = arena_printf(g->a, "%s.r%d", f->tensors[s->tensor].name, (*count)++);
    int t = new_tensor(g, name, IR_LET, s->per_step, &like);
    begin_stmt(g);
    int V[IR_MAX_RANK];
    for (uint32_t i = 0; i < nfv; i++) {
        V[i] = fresh(g, f->vars[fv[i]].name, f->vars[fv[i]].dim);
        g->map[fv[i]] = (gvar){.kind = GV_VAR, .v = V[i]};
    }
    g->epoch++;
    ir_ref root = cp(g, r, true);
    for (uint32_t i = 0; i < nfv; i++) g->map[fv[i]] = (gvar){0};
    g->epoch++;
    emit_stmt(g, t, V, root, s->per_step, in->loc);
    g->red_let[r] = t;
    g->red_free[r] = (uint32_t)g->nfree_vars;
    g->red_nfree[r] = nfv;
    for (uint32_t i = 0; i < nfv; i++)
        if (!VEC_PUSH(g->free_vars, g->nfree_vars, g->cfree_vars, fv[i])) g->ok = false;
}

static void recompute(grad *g)
{
    const ir_model *f = g->f;
    bool *bound = calloc(f->nvars ? f->nvars : 1, sizeof *bound);
    if (!bound) {
        g->ok = false;
        return;
    }
    for (uint32_t si = 0; si < f->nstmts && g->ok; si++) {
        const ir_stmt *s = &f->stmts[si];
        const ir_tensor *t = &f->tensors[s->tensor];
        int count = 0;
        materialize(g, si, s->root, true, &count, bound);
        int held = -1;
        if (t->kind == IR_LET) held = g->val[s->tensor] = new_tensor(g, t->name, IR_LET, s->per_step, t);
        if (t->kind == IR_STATE)
            held = g->newval[s->tensor] = new_tensor(g, arena_printf(g->a, "%s.new", t->name), IR_LET, true, t);
        if (held < 0) continue;
        begin_stmt(g);
        int V[IR_MAX_RANK];
        for (int i = 0; i < t->rank; i++) {
            V[i] = fresh(g, f->vars[s->vars[i]].name, t->dims[i]);
            g->map[s->vars[i]] = (gvar){.kind = GV_VAR, .v = V[i]};
        }
        g->epoch++;
        ir_ref root = cp(g, s->root, true);
        for (int i = 0; i < t->rank; i++) g->map[s->vars[i]] = (gvar){0};
        g->epoch++;
        emit_stmt(g, held, V, root, s->per_step, s->loc);
    }
    free(bound);
}

/* ---- dead lets out, ids compacted ---- */

static void mark_tree(const ir_builder *b, ir_ref r, bool *live_t, int *stack, size_t *ns)
{
    if (r == IR_NONE) return;
    const ir_inst *in = &b->insts[r];
    if (in->op == IR_LOAD) {
        if (!live_t[in->load.tensor]) {
            live_t[in->load.tensor] = true;
            stack[(*ns)++] = in->load.tensor;
        }
        return;
    }
    if (in->op == IR_CONST || in->op == IR_IDX) return;
    mark_tree(b, in->a, live_t, stack, ns);
    mark_tree(b, in->b, live_t, stack, ns);
    mark_tree(b, in->c, live_t, stack, ns);
}

/* Keeps the statements of states and outputs and what they read; returns the
 * new id of every old tensor (-1: dropped), or NULL when memory ran out. */
static int *prune(ir_builder *b)
{
    size_t nt = b->ntensors ? b->ntensors : 1;
    bool *live = calloc(nt, sizeof *live);
    int *stack = calloc(nt, sizeof *stack);
    int *newid = calloc(nt, sizeof *newid);
    if (!live || !stack || !newid) {
        free(live);
        free(stack);
        free(newid);
        return NULL;
    }
    size_t ns = 0;
    for (size_t i = 0; i < b->ntensors; i++) {
        ir_kind k = b->tensors[i].kind;
        if (k == IR_STATE || k == IR_OUTPUT) {
            live[i] = true;
            stack[ns++] = (int)i;
        }
    }
    while (ns) {
        int t = stack[--ns];
        if (b->tensors[t].def >= 0) mark_tree(b, b->stmts[b->tensors[t].def].root, live, stack, &ns);
    }
    int n = 0;
    for (size_t i = 0; i < b->ntensors; i++) newid[i] = live[i] ? n++ : -1;
    size_t ks = 0;
    for (size_t si = 0; si < b->nstmts; si++) {
        ir_stmt s = b->stmts[si];
        if (!live[s.tensor]) continue;
        s.tensor = newid[s.tensor];
        b->stmts[ks++] = s;
    }
    b->nstmts = ks;
    for (size_t i = 0; i < b->ninsts; i++)
        if (b->insts[i].op == IR_LOAD) {
            int nid = newid[b->insts[i].load.tensor];
            b->insts[i].load.tensor = nid >= 0 ? nid : 0; /* unreachable from any statement */
        }
    size_t kt = 0;
    for (size_t i = 0; i < b->ntensors; i++)
        if (live[i]) b->tensors[kt++] = b->tensors[i];
    b->ntensors = kt;
    for (size_t i = 0; i < b->ntensors; i++) b->tensors[i].def = -1;
    for (size_t si = 0; si < b->nstmts; si++) b->tensors[b->stmts[si].tensor].def = (int)si;
    free(live);
    free(stack);
    return newid;
}

/* ---- the training forward: the trace outputs first in every step ---- */

static ir_model *training_forward(grad *g, const ir_model *f, pass_grad *out)
{
    ir_builder b;
    ir_build_init(&b, NULL);
    for (uint32_t i = 0; i < f->ndims; i++) ir_build_dim(&b, f->dims[i].name, f->dims[i].value);
    for (uint32_t i = 0; i < f->nvars; i++) ir_build_var(&b, f->vars[i].name, f->vars[i].dim);
    for (uint32_t i = 0; i < f->ntensors; i++) ir_build_tensor(&b, f->tensors[i]);
    for (uint32_t i = 0; i < f->ninsts; i++) ir_build_inst(&b, f->insts[i]);
    for (uint32_t i = 0; i < f->nix; i++) ir_build_index(&b, f->ix[i]);
    for (uint32_t i = 0; i < f->nred_vars; i++) ir_build_red_var(&b, f->red_vars[i]);
    int ntrace = 0;
    for (uint32_t i = 0; i < f->ntensors; i++) {
        const ir_tensor *t = &f->tensors[i];
        if (t->kind != IR_STATE || out->adj_trace[i] < 0) continue;
        ir_tensor tr = *t;
        tr.name = arena_printf(g->a, "%s.prev", t->name);
        tr.kind = IR_OUTPUT;
        tr.per_step = true;
        tr.hidden = false; /* the driver's, like every output of this model beyond the model's own */
        int id = ir_build_tensor(&b, tr);
        out->trace[i] = id;
        ir_stmt s = {.tensor = id, .per_step = true, .loc = t->loc};
        ir_inst ld = {.op = IR_LOAD, .loc = t->loc, .a = IR_NONE, .b = IR_NONE, .c = IR_NONE};
        ld.load.tensor = (int)i;
        ld.load.lag_var = -1;
        ld.load.ix = (uint32_t)b.nix;
        for (int j = 0; j < t->rank; j++) {
            s.vars[j] = ir_build_var(&b, axis_name(g, (int)i, j), t->dims[j]);
            ir_build_index(&b, (ir_index){.kind = IR_IX_VAR, .var = s.vars[j]});
        }
        s.root = ir_build_inst(&b, ld);
        if (ir_build_stmt(&b, s) >= 0) b.tensors[id].def = ntrace;
        ntrace++;
    }
    for (uint32_t si = 0; si < f->nstmts; si++) {
        int k = ir_build_stmt(&b, f->stmts[si]);
        if (k >= 0) b.tensors[f->stmts[si].tensor].def = k;
    }
    for (uint32_t i = 0; i < f->ninits; i++)
        if (!VEC_PUSH(b.inits, b.ninits, b.cinits, f->inits[i])) b.oom = true;
    for (uint32_t i = 0; i < f->norigins; i++)
        if (!VEC_PUSH(b.origins, b.norigins, b.corigins, f->origins[i])) b.oom = true;
    return ir_finish(&b, g->a, f->name, f, false);
}

/* ---- the init statements as a model of their own ---- */

static ir_ref copy_init(ir_builder *b, const ir_model *f, ir_ref r, const int *id, bool *ok)
{
    if (r == IR_NONE) return IR_NONE;
    ir_inst in = f->insts[r];
    if (in.op == IR_LOAD) {
        const ir_tensor *t = &f->tensors[in.load.tensor];
        if (t->kind != IR_PARAM) *ok = false; /* the checker lets inits read params only */
        in.load.tensor = id[in.load.tensor];
        uint32_t first = (uint32_t)b->nix;
        for (int i = 0; i < t->rank; i++) ir_build_index(b, f->ix[in.load.ix + (uint32_t)i]);
        in.load.ix = first;
        return ir_build_inst(b, in);
    }
    if (in.op == IR_CONST || in.op == IR_IDX) return ir_build_inst(b, in);
    if (in.op == IR_SUM || in.op == IR_RMAX) {
        in.a = copy_init(b, f, in.a, id, ok);
        uint32_t first = (uint32_t)b->nred_vars;
        for (uint32_t i = 0; i < in.red.nvars; i++) ir_build_red_var(b, f->red_vars[in.red.vars + i]);
        in.red.vars = first;
        return ir_build_inst(b, in);
    }
    in.a = copy_init(b, f, in.a, id, ok);
    in.b = copy_init(b, f, in.b, id, ok);
    in.c = copy_init(b, f, in.c, id, ok);
    return ir_build_inst(b, in);
}

/* f's params (in order), then one per-step output S.init per init statement. */
static bool init_model(arena *a, const ir_model *f, pass_grad *out, diag *d)
{
    int *id = out->init_id;
    ir_builder b;
    ir_build_init(&b, NULL);
    for (uint32_t i = 0; i < f->ndims; i++) ir_build_dim(&b, f->dims[i].name, f->dims[i].value);
    for (uint32_t i = 0; i < f->nvars; i++) ir_build_var(&b, f->vars[i].name, f->vars[i].dim);
    for (uint32_t i = 0; i < f->ntensors; i++) {
        id[i] = -1;
        if (f->tensors[i].kind == IR_PARAM) id[i] = ir_build_tensor(&b, f->tensors[i]);
    }
    bool ok = true;
    for (uint32_t k = 0; k < f->ninits; k++) {
        const ir_stmt *s = &f->inits[k];
        ir_tensor t = f->tensors[s->tensor];
        t.name = arena_printf(a, "%s.init", t.name);
        t.kind = IR_OUTPUT;
        t.per_step = true;
        t.hidden = false;
        int tid = ir_build_tensor(&b, t);
        ir_stmt st = *s;
        st.tensor = tid;
        st.per_step = true;
        st.root = copy_init(&b, f, s->root, id, &ok);
        int si = ir_build_stmt(&b, st);
        if (tid >= 0 && si >= 0) b.tensors[tid].def = si;
        id[s->tensor] = tid;
    }
    if (!ok) {
        ir_build_free(&b);
        diag_error(d, "internal error: an init statement reads something other than params");
        return false;
    }
    ir_model *im = ir_finish(&b, a, arena_printf(a, "%s.init", f->name), f, false);
    out->init = arena_alloc(a, sizeof *out->init);
    if (!im || !out->init) {
        diag_error(d, "out of memory in the gradients pass");
        return false;
    }
    return ir_verify(im, d) && pass_grad_build(a, im, out->init, d);
}

/* ---- the pass ---- */

bool pass_grad_build(arena *a, const ir_model *m, pass_grad *out, diag *d)
{
    memset(out, 0, sizeof *out);
    ir_model *f;
    if (!pass_unlag(a, m, &f, d)) return false;
    if (!ir_verify(f, d)) return false;
    grad g = {.a = a, .d = d, .f = f, .ok = true};
    size_t nt = f->ntensors ? f->ntensors : 1, ni = f->ninsts ? f->ninsts : 1;
    g.val = malloc(nt * sizeof *g.val);
    g.newval = malloc(nt * sizeof *g.newval);
    g.adj = malloc(nt * sizeof *g.adj);
    g.adjnew = malloc(nt * sizeof *g.adjnew);
    g.red_let = malloc(ni * sizeof *g.red_let);
    g.red_free = calloc(ni, sizeof *g.red_free);
    g.red_nfree = calloc(ni, sizeof *g.red_nfree);
    g.root_of = malloc(ni * sizeof *g.root_of);
    g.map = calloc(f->nvars ? f->nvars : 1, sizeof *g.map);
    g.memo = calloc(ni, sizeof *g.memo);
    g.memo_epoch = calloc(ni, sizeof *g.memo_epoch);
    g.epoch = 1;
    pnode *stack = calloc(ni + 1, sizeof *stack);
    int *newid = NULL;
    out->nfwd = (int)m->ntensors;
    /* the maps cover the training forward's tensors: f's and at most one trace output per tensor */
    size_t nmap = 2 * nt;
    out->trace = arena_array(a, nmap, sizeof(int));
    out->adj_trace = arena_array(a, nmap, sizeof(int));
    out->adj_value = arena_array(a, nmap, sizeof(int));
    out->adj_grad = arena_array(a, nmap, sizeof(int));
    out->init_id = arena_array(a, nmap, sizeof(int));
    if (!g.val || !g.newval || !g.adj || !g.adjnew || !g.red_let || !g.red_free || !g.red_nfree || !g.root_of ||
        !g.map || !g.memo || !g.memo_epoch || !stack || !out->trace || !out->adj_trace || !out->adj_value || !out->adj_grad || !out->init_id) {
        g.ok = false;
        goto done;
    }
    for (size_t i = 0; i < nt; i++) g.val[i] = g.newval[i] = g.adj[i] = g.adjnew[i] = -1;
    for (size_t i = 0; i < ni; i++) g.red_let[i] = g.root_of[i] = -1;
    for (uint32_t si = 0; si < f->nstmts; si++) g.root_of[f->stmts[si].root] = (int)si;
    for (uint32_t si = 0; si < f->nstmts && g.ok; si++) collect(&g, si, f->stmts[si].root, stack, 0);

    ir_build_init(&g.b, NULL);
    for (uint32_t i = 0; i < f->ndims; i++) ir_build_dim(&g.b, f->dims[i].name, f->dims[i].value);
    /* tensors in the order they print: per-step inputs, params, states, outputs; lets as they come */
    for (uint32_t i = 0; i < f->ntensors; i++) {
        const ir_tensor *t = &f->tensors[i];
        if (t->kind == IR_INPUT) g.val[i] = new_tensor(&g, t->name, IR_INPUT, true, t);
    }
    for (uint32_t i = 0; i < f->ntensors; i++) {
        const ir_tensor *t = &f->tensors[i];
        if (t->kind == IR_STATE) g.val[i] = new_tensor(&g, arena_printf(a, "%s.prev", t->name), IR_INPUT, true, t);
    }
    for (uint32_t i = 0; i < f->ntensors; i++) {
        const ir_tensor *t = &f->tensors[i];
        if (t->kind == IR_OUTPUT) g.adj[i] = new_tensor(&g, adj_name(&g, t, ""), IR_INPUT, true, t);
    }
    for (uint32_t i = 0; i < f->ntensors; i++) {
        const ir_tensor *t = &f->tensors[i];
        if (t->kind == IR_PARAM) g.val[i] = new_tensor(&g, t->name, IR_PARAM, false, t);
    }
    for (uint32_t i = 0; i < f->ntensors; i++) {
        const ir_tensor *t = &f->tensors[i];
        if (t->kind == IR_STATE || t->kind == IR_PARAM) g.adj[i] = new_tensor(&g, adj_name(&g, t, ""), IR_STATE, false, t);
    }
    for (uint32_t i = 0; i < f->ntensors; i++) {
        const ir_tensor *t = &f->tensors[i];
        if (t->kind == IR_INPUT) g.adj[i] = new_tensor(&g, adj_name(&g, t, ""), IR_OUTPUT, true, t);
    }

    recompute(&g);

    /* the adjoints of lets and of new state values, in reverse program order */
    for (uint32_t k = f->nstmts; k-- > 0 && g.ok;) {
        const ir_stmt *s = &f->stmts[k];
        const ir_tensor *t = &f->tensors[s->tensor];
        if (t->kind == IR_LET) {
            g.adj[s->tensor] = new_tensor(&g, adj_name(&g, t, ""), IR_LET, true, t);
            emit_adjoint(&g, s->tensor, g.adj[s->tensor], READS_ALL, -1, true);
        } else if (t->kind == IR_STATE) {
            g.adjnew[s->tensor] = new_tensor(&g, adj_name(&g, t, ".new"), IR_LET, true, t);
            emit_adjoint(&g, s->tensor, g.adjnew[s->tensor], READS_NEW, g.adj[s->tensor], true);
        }
    }
    /* the carried adjoints and the inputs' gradients close the step */
    for (uint32_t i = 0; i < f->ntensors && g.ok; i++) {
        const ir_tensor *t = &f->tensors[i];
        if (t->kind == IR_STATE)
            emit_adjoint(&g, (int)i, g.adj[i], t->def >= 0 ? READS_OLD : READS_ALL, t->def >= 0 ? -1 : g.adj[i], true);
        else if (t->kind == IR_PARAM)
            emit_adjoint(&g, (int)i, g.adj[i], READS_ALL, g.adj[i], true);
    }
    for (uint32_t i = 0; i < f->ntensors && g.ok; i++)
        if (f->tensors[i].kind == IR_INPUT) emit_adjoint(&g, (int)i, g.adj[i], READS_ALL, -1, true);
    if (!g.ok || g.b.oom) goto done;

    newid = prune(&g.b);
    if (!newid) {
        g.ok = false;
        goto done;
    }
    for (size_t i = 0; i < nmap; i++) {
        out->trace[i] = -1;
        out->adj_trace[i] = -1;
        out->adj_value[i] = -1;
        out->adj_grad[i] = -1;
        if (i >= f->ntensors) continue;
        ir_kind k = f->tensors[i].kind;
        int v = g.val[i] >= 0 ? newid[g.val[i]] : -1;
        if (k == IR_STATE) out->adj_trace[i] = v;
        if (k == IR_INPUT || k == IR_PARAM) out->adj_value[i] = v;
        if (g.adj[i] >= 0 && k != IR_LET) out->adj_grad[i] = newid[g.adj[i]];
    }
    out->adjoint = ir_finish(&g.b, a, arena_printf(a, "%s.adjoint", m->name), m, true);
    if (!out->adjoint) {
        g.ok = false;
        goto done;
    }
    out->forward = training_forward(&g, f, out);
    if (!out->forward) g.ok = false;
    for (size_t i = 0; i < nmap; i++) out->init_id[i] = -1;
    if (g.ok && f->ninits && !init_model(a, f, out, d)) g.ok = false;
done:
    if (!g.ok && d->nerrors == 0) diag_error(d, "out of memory in the gradients pass");
    ir_build_free(&g.b);
    free(g.val);
    free(g.newval);
    free(g.adj);
    free(g.adjnew);
    free(g.red_let);
    free(g.red_free);
    free(g.red_nfree);
    free(g.free_vars);
    free(g.root_of);
    free(g.map);
    free(g.memo);
    free(g.memo_epoch);
    free(g.pn);
    free(g.paths);
    free(g.names);
    free(stack);
    free(newid);
    if (g.ok && !(ir_verify(out->forward, d) && ir_verify(out->adjoint, d))) g.ok = false;
    return g.ok;
}
