/* unlag.c: reads at t - k become reads of history states (see passes.h).
 *
 * Assumes a verified forward model. Guarantees a verified model that computes
 * the same outputs and final states with no read at a time lag: every value
 * that crosses steps is then in a state, so the model can be run a chunk of
 * steps at a time, each chunk starting from the states the previous one left
 * (checkpoints, passes/grad.c). The model's tensors keep their ids; for each
 * input x read at lags 1..K the history states x.lag1 .. x.lagK follow them,
 * x.lagk holding x[t-k+1] after step t (so x.lagk@old is x[t-k]; zero at the
 * start, which is what a read before the sequence start gives). Their
 * updates close every step, x.lagK first, so that each reads its neighbour's
 * old value. A read at t - j with j bound by a reduction unrolls that
 * reduction over j's values (sum(j: e) becomes e[j=0] + e[j=1] + ...); one
 * with j a free variable of the statement selects among the reads at each
 * lag (select(j == 0, x[t], select(j == 1, x.lag1, ...))). */
#include <stdlib.h>
#include <string.h>

#include "passes.h"

typedef struct unlag {
    const ir_model *m;
    ir_builder b;
    arena *a;
    diag *d;
    int *maxlag;    /* per tensor of m: the largest lag it is read at */
    int *hist;      /* per tensor of m: the id of x.lag1 (x.lagk is hist + k - 1), or -1 */
    int64_t *value; /* per variable: the value it is unrolled at, or -1 */
    bool ok;
} unlag;

static ir_index map_index(unlag *u, ir_index ix)
{
    if (ix.kind == IR_IX_VAR && u->value[ix.var] >= 0) return (ir_index){.kind = IR_IX_CONST, .k = u->value[ix.var]};
    if (ix.kind == IR_IX_DIV && u->value[ix.var] >= 0)
        return (ir_index){.kind = IR_IX_CONST, .k = u->value[ix.var] / ix.k};
    return ix;
}

/* Does the tree at r read at a lag given by variable var? */
static bool lags_on(const ir_model *m, ir_ref r, uint32_t var)
{
    if (r == IR_NONE) return false;
    const ir_inst *in = &m->insts[r];
    if (in->op == IR_LOAD) return in->load.lag_var == (int)var;
    if (in->op == IR_CONST || in->op == IR_IDX) return false;
    if (in->op == IR_SUM || in->op == IR_RMAX) return lags_on(m, in->a, var);
    return lags_on(m, in->a, var) || lags_on(m, in->b, var) || lags_on(m, in->c, var);
}

static ir_ref copy(unlag *u, ir_ref r);

/* A reduction whose bound variable carries a lag: unrolled over that variable. */
static ir_ref unroll(unlag *u, const ir_inst *in)
{
    const ir_model *m = u->m;
    uint32_t lagvar = UINT32_MAX;
    for (uint32_t i = 0; i < in->red.nvars && lagvar == UINT32_MAX; i++)
        if (lags_on(m, in->a, m->red_vars[in->red.vars + i])) lagvar = m->red_vars[in->red.vars + i];
    if (lagvar == UINT32_MAX) {
        ir_inst out = *in;
        out.a = copy(u, in->a);
        out.red.vars = (uint32_t)u->b.nred_vars;
        for (uint32_t i = 0; i < in->red.nvars; i++) ir_build_red_var(&u->b, m->red_vars[in->red.vars + i]);
        return ir_build_inst(&u->b, out);
    }
    /* the rest of the reduction's variables (there may be none) stay bound around the unrolled body */
    uint32_t rest[IR_MAX_RANK * 4], nrest = 0;
    for (uint32_t i = 0; i < in->red.nvars; i++)
        if (m->red_vars[in->red.vars + i] != lagvar && nrest < sizeof rest / sizeof *rest)
            rest[nrest++] = m->red_vars[in->red.vars + i];
    int64_t n = m->dims[m->vars[lagvar].dim].value;
    ir_ref acc = IR_NONE;
    for (int64_t w = 0; w < n && u->ok; w++) {
        u->value[lagvar] = w;
        ir_ref body = copy(u, in->a);
        if (acc == IR_NONE) {
            acc = body;
        } else {
            ir_inst comb = {.op = in->op == IR_SUM ? IR_ADD : IR_MAX, .loc = in->loc, .a = acc, .b = body, .c = IR_NONE};
            acc = ir_build_inst(&u->b, comb);
        }
    }
    u->value[lagvar] = -1;
    if (nrest == 0) return acc;
    ir_inst out = *in;
    out.a = acc;
    out.red.vars = (uint32_t)u->b.nred_vars;
    out.red.nvars = nrest;
    for (uint32_t i = 0; i < nrest; i++) ir_build_red_var(&u->b, rest[i]);
    return ir_build_inst(&u->b, out);
}

/* A read at its lag (a constant, or a variable the unrolling fixed): the
 * tensor itself at t, else its history state. */
static ir_ref copy_load(unlag *u, const ir_inst *in)
{
    const ir_model *m = u->m;
    const ir_tensor *t = &m->tensors[in->load.tensor];
    ir_inst out = *in;
    int64_t lag = in->load.lag + (in->load.lag_var >= 0 ? u->value[in->load.lag_var] : 0);
    out.load.lag = 0;
    out.load.lag_var = -1;
    out.load.ix = (uint32_t)u->b.nix;
    for (int i = 0; i < t->rank; i++) ir_build_index(&u->b, map_index(u, m->ix[in->load.ix + (uint32_t)i]));
    if (lag > 0) {
        out.load.tensor = u->hist[in->load.tensor] + (int)lag - 1;
        out.load.after_update = false;
    }
    return ir_build_inst(&u->b, out);
}

/* A read at t - k - j with j a free variable of the statement (a window over
 * the lags, as passes/lag.c makes): select(j == 0, read at t - k,
 * select(j == 1, read at t - k - 1, ...)); only the chosen read is evaluated,
 * and only its gradient counts. */
static ir_ref select_lag(unlag *u, const ir_inst *in)
{
    const ir_model *m = u->m;
    int var = in->load.lag_var;
    int64_t n = m->dims[m->vars[var].dim].value;
    ir_ref acc = IR_NONE;
    for (int64_t w = n - 1; w >= 0 && u->ok; w--) {
        /* the read's other indices keep the variable: only its lag is fixed */
        ir_inst one = *in;
        one.load.lag_var = -1;
        one.load.lag = in->load.lag + w;
        ir_ref r = copy_load(u, &one);
        if (acc == IR_NONE) {
            acc = r;
            continue;
        }
        ir_inst iv = {.op = IR_IDX, .loc = in->loc, .a = IR_NONE, .b = IR_NONE, .c = IR_NONE, .var = var};
        ir_inst cw = {.op = IR_CONST, .loc = in->loc, .a = IR_NONE, .b = IR_NONE, .c = IR_NONE, .num = (double)w};
        ir_inst eq = {.op = IR_EQ, .loc = in->loc, .a = ir_build_inst(&u->b, iv), .b = ir_build_inst(&u->b, cw),
                      .c = IR_NONE};
        ir_inst sel = {.op = IR_SELECT, .loc = in->loc, .a = ir_build_inst(&u->b, eq), .b = r, .c = acc};
        acc = ir_build_inst(&u->b, sel);
    }
    return acc;
}

static ir_ref copy(unlag *u, ir_ref r)
{
    const ir_model *m = u->m;
    if (r == IR_NONE || !u->ok) return IR_NONE;
    const ir_inst *in = &m->insts[r];
    ir_inst out = *in;
    switch (in->op) {
    case IR_CONST: return ir_build_inst(&u->b, out);
    case IR_IDX:
        if (u->value[in->var] < 0) return ir_build_inst(&u->b, out);
        out.op = IR_CONST;
        out.num = (double)u->value[in->var];
        return ir_build_inst(&u->b, out);
    case IR_LOAD:
        if (in->load.lag_var >= 0 && u->value[in->load.lag_var] < 0) return select_lag(u, in);
        return copy_load(u, in);
    case IR_SUM:
    case IR_RMAX: return unroll(u, in);
    default:
        out.a = copy(u, in->a);
        out.b = copy(u, in->b);
        out.c = copy(u, in->c);
        return ir_build_inst(&u->b, out);
    }
}

static void find_lags(unlag *u, ir_ref r)
{
    const ir_model *m = u->m;
    if (r == IR_NONE) return;
    const ir_inst *in = &m->insts[r];
    if (in->op == IR_LOAD) {
        int64_t lag = in->load.lag;
        if (in->load.lag_var >= 0) lag += m->dims[m->vars[in->load.lag_var].dim].value - 1;
        if (lag > u->maxlag[in->load.tensor]) u->maxlag[in->load.tensor] = (int)lag;
        return;
    }
    if (in->op == IR_CONST || in->op == IR_IDX) return;
    find_lags(u, in->a);
    if (in->op != IR_SUM && in->op != IR_RMAX) {
        find_lags(u, in->b);
        find_lags(u, in->c);
    }
}

bool pass_unlag(arena *a, const ir_model *m, ir_model **out, diag *d)
{
    unlag u = {.m = m, .a = a, .d = d, .ok = true};
    size_t nt = m->ntensors ? m->ntensors : 1, nv = m->nvars ? m->nvars : 1;
    u.maxlag = calloc(nt, sizeof *u.maxlag);
    u.hist = calloc(nt, sizeof *u.hist);
    u.value = calloc(nv, sizeof *u.value);
    *out = NULL;
    if (!u.maxlag || !u.hist || !u.value) goto oom;
    for (uint32_t i = 0; i < m->nvars; i++) u.value[i] = -1;
    for (uint32_t si = 0; si < m->nstmts; si++) find_lags(&u, m->stmts[si].root);

    /* the model's tensors, dims and variables as they are; its statements are rebuilt */
    ir_build_init(&u.b, NULL);
    for (uint32_t i = 0; i < m->ndims; i++) ir_build_dim(&u.b, m->dims[i].name, m->dims[i].value);
    for (uint32_t i = 0; i < m->nvars; i++) ir_build_var(&u.b, m->vars[i].name, m->vars[i].dim);
    for (uint32_t i = 0; i < m->ntensors; i++) ir_build_tensor(&u.b, m->tensors[i]);
    for (uint32_t i = 0; i < m->ntensors; i++) {
        u.hist[i] = -1;
        const ir_tensor *t = &m->tensors[i];
        for (int k = 1; k <= u.maxlag[i]; k++) {
            ir_tensor h = {.name = arena_printf(a, "%s.lag%d", t->name, k), .kind = IR_STATE, .rank = t->rank,
                           .def = -1, .hidden = true, .loc = t->loc};
            memcpy(h.dims, t->dims, sizeof h.dims);
            int id = ir_build_tensor(&u.b, h);
            if (k == 1) u.hist[i] = id;
        }
    }
    for (uint32_t si = 0; si < m->nstmts && u.ok; si++) {
        ir_stmt s = m->stmts[si];
        s.root = copy(&u, s.root);
        ir_build_stmt(&u.b, s);
    }
    for (uint32_t i = 0; i < m->ninits && u.ok; i++) { /* they read params and literals only */
        ir_stmt s = m->inits[i];
        s.root = copy(&u, s.root);
        if (!VEC_PUSH(u.b.inits, u.b.ninits, u.b.cinits, s)) u.b.oom = true;
    }
    for (uint32_t i = 0; i < m->norigins; i++)
        if (!VEC_PUSH(u.b.origins, u.b.norigins, u.b.corigins, m->origins[i])) u.b.oom = true;
    /* the shift registers, each reading its neighbour's old value */
    for (uint32_t i = 0; i < m->ntensors && u.ok; i++) {
        const ir_tensor *t = &m->tensors[i];
        for (int k = u.maxlag[i]; k >= 1; k--) {
            int h = u.hist[i] + k - 1;
            ir_stmt s = {.tensor = h, .per_step = true, .loc = t->loc};
            ir_inst ld = {.op = IR_LOAD, .loc = t->loc, .a = IR_NONE, .b = IR_NONE, .c = IR_NONE};
            ld.load.tensor = k == 1 ? (int)i : h - 1;
            ld.load.lag_var = -1;
            ld.load.ix = (uint32_t)u.b.nix;
            for (int j = 0; j < t->rank; j++) {
                int v = ir_build_var(&u.b, pass_lower_name(a, m->dims[t->dims[j]].name), t->dims[j]);
                s.vars[j] = v;
                ir_build_index(&u.b, (ir_index){.kind = IR_IX_VAR, .var = v});
            }
            s.root = ir_build_inst(&u.b, ld);
            int si = ir_build_stmt(&u.b, s);
            if (si >= 0) u.b.tensors[h].def = si;
        }
    }
    if (!u.ok) {
        ir_build_free(&u.b);
        goto done;
    }
    *out = ir_finish(&u.b, a, m->name, m, m->reverse);
    if (!*out) goto oom;
    goto done;
oom:
    diag_error(d, "out of memory in the gradients pass");
    u.ok = false;
done:
    free(u.maxlag);
    free(u.hist);
    free(u.value);
    return u.ok && *out;
}
