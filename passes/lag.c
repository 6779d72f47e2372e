/* lag.c: per-step lets read at an earlier step (L[t - k, ...], L[t - j, ...]),
 * rewritten so that the backends see time lags on inputs only and need no
 * machinery of their own for them. Two ways, chosen per read:
 *
 * - Recomputed: a let that reads no state, directly or through lets, is a
 *   function of inputs, params and literals, so its value at t - k is its own
 *   expression with every time lag in it shifted by k. The pass adds a let
 *   L_lagK[t, ...] holding that expression, right after L's statement, and the
 *   read becomes L_lagK[t, ...]. A read at t - j (j a variable of dim W) gets
 *   one let over every lag at once, L_lagj[t, w, ...] = L at t - w for w < W,
 *   read at [t, j, ...]: computed once per step over its domain, as L is. Lets
 *   read inside L are shifted the same way (their own recomputed lets).
 *
 * - Kept: a let that reads a state cannot be recomputed (the state's earlier
 *   values are gone), and neither can a read whose shift would need two lag
 *   variables on one input (a convolution of a convolution, t - j - w). Such
 *   a let gets K hidden states L_prev1 .. L_prevK of its shape, K the largest
 *   lag it is read at (at most MAX_WINDOW), updated at the end of every step
 *   as a shift register (L_prevK = L_prev(K-1), ..., L_prev1 = L[t]) and read
 *   before their update: L_prevk holds L at t - k, zero before the sequence
 *   start, as the states' zero start gives. A read at t - j selects among them
 *   (select(j == 0, L[t], select(j == 1, L_prev1, ...))). Hidden states are
 *   ordinary states to every pass and backend; the public API does not list
 *   them, and runs give them no initial and no final value.
 *
 * Input: a verified model (lagged let reads allowed). Output: the same model
 * when it has no lagged let read, else a new one in the arena: the old
 * tensors first (same ids), the new ones after; every statement's expression
 * copied (so instruction numbers change), the new statements inserted as
 * described; the new tensors listed in model.origins. Fails only when memory
 * runs out or a kept let would need more than MAX_WINDOW copies (located). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "passes.h"

#define MAX_WINDOW 64

/* Reads at t - k - w, w ranging over dim vd (vd < 0: no w). */
typedef struct shift {
    int64_t k;
    int vd;
} shift;

/* A let recomputed at a shift. */
typedef struct redo {
    int let;
    shift s;
    const char *wname; /* the name of its lag variable (vd >= 0) */
    int feasible;      /* 0: being decided, 1: yes, -1: no */
    bool used;
    int tensor;        /* its new tensor */
} redo;

typedef struct lag {
    const ir_model *m;
    arena *a;
    diag *d;
    bool *reads_state; /* [ntensors] */
    int64_t *window;   /* [ntensors] hidden states a kept let needs (0: none) */
    int *hidden;       /* [ntensors] the tensor of its L_prev1 (the others follow) */
    redo *rd;
    size_t nrd, crd;
    /* the new model */
    ir_tensor *tensors;
    size_t nt, ct;
    ir_inst *insts;
    size_t ni, ci;
    ir_index *ix;
    size_t nix, cix;
    uint32_t *red;
    size_t nred, cred;
    ir_var *vars;
    size_t nv, cv;
    ir_stmt *stmts;
    size_t ns, cs;
    ir_origin *origins;
    size_t no, co;
    int *vmap;  /* [old nvars] old variable -> new variable in the expression being copied */
    bool fresh; /* copying a recomputed let: reductions get variables of their own */
    bool oom, failed;
} lag;

static bool lagged(const ir_inst *in) { return in->op == IR_LOAD && (in->load.lag || in->load.lag_var >= 0); }

static int64_t dim_value(const lag *c, int dim) { return c->m->dims[dim].value; }

/* ---- planning ---- */

static bool reads_state(const lag *c, ir_ref r)
{
    const ir_inst *in = &c->m->insts[r];
    if (in->op == IR_LOAD) {
        const ir_tensor *t = &c->m->tensors[in->load.tensor];
        return t->kind == IR_STATE || (t->kind == IR_LET && c->reads_state[in->load.tensor]);
    }
    for (int i = 0; i < 3; i++)
        if (ir_operand(in, i) != IR_NONE && reads_state(c, ir_operand(in, i))) return true;
    return false;
}

/* The shift of a read at (k0, v0) inside an expression shifted by s; false
 * when it would need two lag variables. */
static bool combine(const lag *c, int64_t k0, int v0, shift s, shift *out)
{
    if (v0 >= 0 && s.vd >= 0) return false;
    out->k = k0 + s.k;
    out->vd = v0 >= 0 ? c->m->vars[v0].dim : s.vd;
    return true;
}

static bool feasible(lag *c, int let, shift s, const char *wname);

/* Every per-step read in r, shifted by s (its variable named wname), can be recomputed. */
static bool body_feasible(lag *c, ir_ref r, shift s, const char *swname)
{
    const ir_model *m = c->m;
    const ir_inst *in = &m->insts[r];
    if (in->op == IR_LOAD) {
        const ir_tensor *t = &m->tensors[in->load.tensor];
        if (!t->per_step) return true;
        shift s2;
        if (!combine(c, in->load.lag, in->load.lag_var, s, &s2)) return false;
        if (t->kind != IR_LET || (s2.k == 0 && s2.vd < 0)) return true;
        const char *wname = in->load.lag_var >= 0 ? m->vars[in->load.lag_var].name : swname;
        return feasible(c, in->load.tensor, s2, wname);
    }
    for (int i = 0; i < 3; i++)
        if (ir_operand(in, i) != IR_NONE && !body_feasible(c, ir_operand(in, i), s, swname)) return false;
    return true;
}

static redo *find_redo(lag *c, int let, shift s)
{
    for (size_t i = 0; i < c->nrd; i++)
        if (c->rd[i].let == let && c->rd[i].s.k == s.k && c->rd[i].s.vd == s.vd) return &c->rd[i];
    return NULL;
}

/* Can let `let` be recomputed at shift s? Records the answer. */
static bool feasible(lag *c, int let, shift s, const char *wname)
{
    redo *r = find_redo(c, let, s);
    if (r) return r->feasible >= 0; /* 0: a cycle, impossible in a verified model */
    /* a let that reads a state cannot be recomputed; a window needs an axis more */
    if (c->reads_state[let] || (s.vd >= 0 && c->m->tensors[let].rank == IR_MAX_RANK)) return false;
    redo n = {.let = let, .s = s, .wname = wname, .tensor = -1};
    if (!VEC_PUSH(c->rd, c->nrd, c->crd, n)) {
        c->oom = true;
        return false;
    }
    size_t i = c->nrd - 1;
    bool ok = body_feasible(c, c->m->stmts[c->m->tensors[let].def].root, s, wname);
    c->rd[i].feasible = ok ? 1 : -1;
    return ok;
}

/* Marks the recomputed lets that r, shifted by s, reads. */
static void mark_used(lag *c, ir_ref r, shift s)
{
    const ir_model *m = c->m;
    const ir_inst *in = &m->insts[r];
    if (in->op == IR_LOAD) {
        const ir_tensor *t = &m->tensors[in->load.tensor];
        shift s2;
        if (t->kind != IR_LET || !t->per_step || !combine(c, in->load.lag, in->load.lag_var, s, &s2) ||
            (s2.k == 0 && s2.vd < 0))
            return;
        redo *rd = find_redo(c, in->load.tensor, s2);
        if (!rd || rd->feasible < 0 || rd->used) return;
        rd->used = true;
        mark_used(c, m->stmts[t->def].root, s2);
        return;
    }
    for (int i = 0; i < 3; i++)
        if (ir_operand(in, i) != IR_NONE) mark_used(c, ir_operand(in, i), s);
}

/* A read that cannot be recomputed: its let keeps its earlier values. */
static void keep(lag *c, const ir_inst *in)
{
    int64_t need = in->load.lag_var >= 0 ? dim_value(c, c->m->vars[in->load.lag_var].dim) - 1 : in->load.lag;
    if (need > MAX_WINDOW) {
        if (!c->failed)
            diag_at(c->d, c->m->file, in->loc,
                    "let '%s' is read at up to %lld steps back, where it cannot be recomputed (it reads a state, or "
                    "the lags of its own reads would add up); its earlier values would need %lld copies, at most %d",
                    c->m->tensors[in->load.tensor].name, (long long)need, (long long)need, MAX_WINDOW);
        c->failed = true;
        return;
    }
    if (need > c->window[in->load.tensor]) c->window[in->load.tensor] = need;
}

static void plan_reads(lag *c, ir_ref r)
{
    const ir_model *m = c->m;
    const ir_inst *in = &m->insts[r];
    if (lagged(in) && m->tensors[in->load.tensor].kind == IR_LET) {
        shift s = {in->load.lag, in->load.lag_var >= 0 ? m->vars[in->load.lag_var].dim : -1};
        const char *wname = in->load.lag_var >= 0 ? m->vars[in->load.lag_var].name : NULL;
        if (!feasible(c, in->load.tensor, s, wname)) keep(c, in);
        return;
    }
    for (int i = 0; i < 3; i++)
        if (ir_operand(in, i) != IR_NONE) plan_reads(c, ir_operand(in, i));
}

/* ---- building the new model ---- */

static ir_ref emit(lag *c, ir_inst in)
{
    if (c->ni >= UINT32_MAX - 1 || !VEC_PUSH(c->insts, c->ni, c->ci, in)) {
        c->oom = true;
        return IR_NONE;
    }
    return (ir_ref)(c->ni - 1);
}

static int new_var(lag *c, const char *name, int dim)
{
    ir_var v = {name, dim};
    if (!VEC_PUSH(c->vars, c->nv, c->cv, v)) {
        c->oom = true;
        return 0;
    }
    return (int)c->nv - 1;
}

/* A tensor name not taken yet: base, else base_, base__, ... */
static const char *unique_name(lag *c, const char *base)
{
    const char *name = base;
    for (;;) {
        bool taken = false;
        for (size_t i = 0; i < c->nt && !taken; i++) taken = strcmp(c->tensors[i].name, name) == 0;
        if (!taken) return name;
        name = arena_printf(c->a, "%s_", name);
        if (!name) {
            c->oom = true;
            return base;
        }
    }
}

static int add_tensor(lag *c, ir_tensor t, int let, int64_t k, bool window)
{
    t.name = unique_name(c, t.name);
    ir_origin o = {(int)c->nt, let, k, window};
    if (!VEC_PUSH(c->tensors, c->nt, c->ct, t) || !VEC_PUSH(c->origins, c->no, c->co, o)) c->oom = true;
    return (int)c->nt - 1;
}

/* A load of tensor ti at the current step with indices ix (rank of ti), the
 * first one optionally the variable w. */
static ir_ref load_at(lag *c, src_loc loc, int ti, int w, const ir_index *ix, int n)
{
    ir_inst in = {.op = IR_LOAD, .loc = loc, .a = IR_NONE, .b = IR_NONE, .c = IR_NONE};
    in.load.tensor = ti;
    in.load.lag_var = -1;
    in.load.ix = (uint32_t)c->nix;
    if (w >= 0) {
        ir_index wi = {.kind = IR_IX_VAR, .var = w};
        if (!VEC_PUSH(c->ix, c->nix, c->cix, wi)) c->oom = true;
    }
    for (int i = 0; i < n; i++)
        if (!VEC_PUSH(c->ix, c->nix, c->cix, ix[i])) c->oom = true;
    return emit(c, in);
}

static ir_ref leaf(lag *c, src_loc loc, ir_op op, double num, int var)
{
    ir_inst in = {.op = (uint8_t)op, .loc = loc, .a = IR_NONE, .b = IR_NONE, .c = IR_NONE};
    if (op == IR_IDX)
        in.var = var;
    else
        in.num = num;
    return emit(c, in);
}

static ir_ref node(lag *c, src_loc loc, ir_op op, ir_ref a, ir_ref b, ir_ref cc)
{
    ir_inst in = {.op = (uint8_t)op, .loc = loc, .a = a, .b = b, .c = cc};
    return emit(c, in);
}

/* A kept let L read at t - k, or at t - v (v >= 0: a new variable), with
 * indices ix: L_prevk, or select(v == 0, L[t], select(v == 1, L_prev1, ...)). */
static ir_ref kept_read(lag *c, src_loc loc, int let, int64_t k, int v, const ir_index *ix, int n)
{
    int h = c->hidden[let];
    if (v < 0) return load_at(c, loc, h + (int)k - 1, -1, ix, n);
    int64_t d = dim_value(c, c->vars[v].dim);
    ir_ref acc = d == 1 ? load_at(c, loc, let, -1, ix, n) : load_at(c, loc, h + (int)(d - 1) - 1, -1, ix, n);
    for (int64_t j = d - 2; j >= 0; j--) {
        ir_ref here = j == 0 ? load_at(c, loc, let, -1, ix, n) : load_at(c, loc, h + (int)j - 1, -1, ix, n);
        ir_ref cond = node(c, loc, IR_EQ, leaf(c, loc, IR_IDX, 0, v), leaf(c, loc, IR_CONST, (double)j, -1), IR_NONE);
        acc = node(c, loc, IR_SELECT, cond, here, acc);
    }
    return acc;
}

/* Copies expression r of the old model, shifted by s (s.k = 0, vd < 0 for
 * none; w the new variable of a window), with every lagged let read replaced. */
static ir_ref copy(lag *c, ir_ref r, shift s, int w)
{
    const ir_model *m = c->m;
    if (c->oom) return IR_NONE;
    const ir_inst *in = &m->insts[r];
    ir_inst out = *in;
    switch ((ir_op)in->op) {
    case IR_CONST: return emit(c, out);
    case IR_IDX:
        out.var = c->vmap[in->var];
        return emit(c, out);
    case IR_LOAD: {
        const ir_tensor *t = &m->tensors[in->load.tensor];
        ir_index ix[IR_MAX_RANK];
        for (int i = 0; i < t->rank; i++) {
            ix[i] = m->ix[in->load.ix + (uint32_t)i];
            if (ix[i].kind != IR_IX_CONST) ix[i].var = c->vmap[ix[i].var];
        }
        int v0 = in->load.lag_var >= 0 ? c->vmap[in->load.lag_var] : -1;
        int64_t k = in->load.lag + (t->per_step ? s.k : 0);
        int v = v0 >= 0 ? v0 : t->per_step && s.vd >= 0 ? w : -1;
        if (t->kind == IR_LET && t->per_step && (k || v >= 0)) {
            shift s2 = {k, v >= 0 ? c->vars[v].dim : -1};
            redo *rd = find_redo(c, in->load.tensor, s2);
            if (rd && rd->feasible > 0) return load_at(c, in->loc, rd->tensor, v, ix, t->rank);
            return kept_read(c, in->loc, in->load.tensor, k, v, ix, t->rank);
        }
        out.load.lag = k;
        out.load.lag_var = v;
        out.load.ix = (uint32_t)c->nix;
        for (int i = 0; i < t->rank; i++)
            if (!VEC_PUSH(c->ix, c->nix, c->cix, ix[i])) c->oom = true;
        return emit(c, out);
    }
    case IR_SUM:
    case IR_RMAX: {
        const uint32_t *vars = &m->red_vars[in->red.vars];
        out.red.vars = (uint32_t)c->nred;
        for (uint32_t i = 0; i < in->red.nvars; i++) {
            int nv = c->fresh ? new_var(c, m->vars[vars[i]].name, m->vars[vars[i]].dim) : (int)vars[i];
            c->vmap[vars[i]] = nv;
            uint32_t u = (uint32_t)nv;
            if (!VEC_PUSH(c->red, c->nred, c->cred, u)) c->oom = true;
        }
        out.a = copy(c, in->a, s, w);
        return emit(c, out);
    }
    default:
        for (int i = 0; i < 3; i++) {
            ir_ref o = ir_operand(in, i);
            ir_ref n = o == IR_NONE ? IR_NONE : copy(c, o, s, w);
            if (i == 0) out.a = n;
            if (i == 1) out.b = n;
            if (i == 2) out.c = n;
        }
        return emit(c, out);
    }
}

static void push_stmt(lag *c, ir_stmt st)
{
    c->tensors[st.tensor].def = (int)c->ns;
    if (!VEC_PUSH(c->stmts, c->ns, c->cs, st)) c->oom = true;
}

/* The statement of recomputed let rd: L's expression shifted. */
static void emit_redo(lag *c, const redo *rd)
{
    const ir_model *m = c->m;
    const ir_stmt *ls = &m->stmts[m->tensors[rd->let].def];
    const ir_tensor *lt = &m->tensors[rd->let];
    ir_stmt st = {.tensor = rd->tensor, .per_step = true, .loc = ls->loc};
    int r = 0, w = -1;
    if (rd->s.vd >= 0) st.vars[r++] = w = new_var(c, rd->wname ? rd->wname : "w", rd->s.vd);
    for (int i = 0; i < lt->rank; i++) {
        int v = new_var(c, m->vars[ls->vars[i]].name, m->vars[ls->vars[i]].dim);
        c->vmap[ls->vars[i]] = v;
        st.vars[r++] = v;
    }
    c->fresh = true;
    st.root = copy(c, ls->root, rd->s, w);
    c->fresh = false;
    push_stmt(c, st);
}

/* The shift register of kept let L, at the end of the step. */
static void emit_hidden_updates(lag *c, int let)
{
    const ir_model *m = c->m;
    const ir_tensor *lt = &m->tensors[let];
    const ir_stmt *ls = &m->stmts[lt->def];
    for (int64_t k = c->window[let]; k >= 1; k--) {
        ir_stmt st = {.tensor = c->hidden[let] + (int)k - 1, .per_step = true, .loc = ls->loc};
        ir_index ix[IR_MAX_RANK];
        for (int i = 0; i < lt->rank; i++) {
            st.vars[i] = new_var(c, m->vars[ls->vars[i]].name, lt->dims[i]);
            ix[i] = (ir_index){.kind = IR_IX_VAR, .var = st.vars[i]};
        }
        st.root = load_at(c, ls->loc, k == 1 ? let : c->hidden[let] + (int)k - 2, -1, ix, lt->rank);
        push_stmt(c, st);
    }
}

#define FREEZE(dst, src, n)                                                       \
    do {                                                                          \
        (dst) = arena_array(c.a, (n) ? (n) : 1, sizeof *(src));                   \
        if (!(dst)) goto oom;                                                     \
        if (n) memcpy((dst), (src), (n) * sizeof *(src));                         \
    } while (0)

bool pass_lag(arena *a, ir_model **mp, diag *d)
{
    const ir_model *m = *mp;
    bool any = false;
    for (uint32_t r = 0; r < m->ninsts && !any; r++)
        any = lagged(&m->insts[r]) && m->tensors[m->insts[r].load.tensor].kind == IR_LET;
    if (!any) return true;

    lag c = {.m = m, .a = a, .d = d};
    size_t nt = m->ntensors ? m->ntensors : 1;
    c.reads_state = calloc(nt, sizeof *c.reads_state);
    c.window = calloc(nt, sizeof *c.window);
    c.hidden = calloc(nt, sizeof *c.hidden);
    c.vmap = malloc((m->nvars ? m->nvars : 1) * sizeof *c.vmap);
    ir_model *out = arena_alloc(a, sizeof *out);
    if (!c.reads_state || !c.window || !c.hidden || !c.vmap || !out) goto oom;

    /* plan: which lets read states, which reads are recomputed, which lets are kept */
    for (uint32_t si = 0; si < m->nstmts; si++) {
        const ir_stmt *s = &m->stmts[si];
        if (m->tensors[s->tensor].kind == IR_LET) c.reads_state[s->tensor] = reads_state(&c, s->root);
    }
    for (uint32_t si = 0; si < m->nstmts && !c.failed; si++) plan_reads(&c, m->stmts[si].root);
    for (uint32_t si = 0; si < m->nstmts; si++) mark_used(&c, m->stmts[si].root, (shift){0, -1});
    if (c.oom) goto oom;
    if (c.failed) goto done;

    /* the old tensors and variables keep their ids; the new tensors follow */
    for (uint32_t i = 0; i < m->ntensors; i++)
        if (!VEC_PUSH(c.tensors, c.nt, c.ct, m->tensors[i])) goto oom;
    for (uint32_t i = 0; i < m->nvars; i++) {
        c.vmap[i] = (int)i;
        if (!VEC_PUSH(c.vars, c.nv, c.cv, m->vars[i])) goto oom;
    }
    for (size_t i = 0; i < c.nrd; i++) {
        redo *rd = &c.rd[i];
        if (!rd->used) continue;
        const ir_tensor *lt = &m->tensors[rd->let];
        ir_tensor t = {.kind = IR_LET, .per_step = true, .def = -1, .loc = lt->loc};
        if (rd->s.vd >= 0) t.dims[t.rank++] = rd->s.vd;
        for (int k = 0; k < lt->rank; k++) t.dims[t.rank++] = lt->dims[k];
        char k[32] = "";
        if (rd->s.k) snprintf(k, sizeof k, "%lld", (long long)rd->s.k);
        t.name = arena_printf(a, "%s_lag%s%s", lt->name, k, rd->s.vd >= 0 && rd->wname ? rd->wname : rd->s.vd >= 0 ? "w" : "");
        if (!t.name) goto oom;
        rd->tensor = add_tensor(&c, t, rd->let, rd->s.k, rd->s.vd >= 0);
    }
    for (uint32_t li = 0; li < m->ntensors; li++) {
        if (!c.window[li]) continue;
        const ir_tensor *lt = &m->tensors[li];
        for (int64_t k = 1; k <= c.window[li]; k++) {
            ir_tensor t = {.kind = IR_STATE, .hidden = true, .rank = lt->rank, .def = -1, .loc = lt->loc};
            memcpy(t.dims, lt->dims, sizeof t.dims);
            t.name = arena_printf(a, "%s_prev%lld", lt->name, (long long)k);
            if (!t.name) goto oom;
            int ti = add_tensor(&c, t, (int)li, k, false);
            if (k == 1) c.hidden[li] = ti;
        }
    }
    if (c.oom) goto oom;

    /* the statements: each one copied, a let's recomputed lets after it, the
     * shift registers last */
    for (uint32_t si = 0; si < m->nstmts; si++) {
        const ir_stmt *s = &m->stmts[si];
        ir_stmt st = *s;
        st.root = copy(&c, s->root, (shift){0, -1}, -1);
        push_stmt(&c, st);
        for (size_t i = 0; i < c.nrd; i++)
            if (c.rd[i].used && c.rd[i].feasible > 0 && c.rd[i].let == s->tensor) emit_redo(&c, &c.rd[i]);
    }
    for (uint32_t li = 0; li < m->ntensors; li++)
        if (c.window[li]) emit_hidden_updates(&c, (int)li);
    ir_stmt *inits = arena_array(a, m->ninits ? m->ninits : 1, sizeof *inits);
    if (!inits) goto oom;
    for (uint32_t ii = 0; ii < m->ninits; ii++) {
        inits[ii] = m->inits[ii];
        inits[ii].root = copy(&c, m->inits[ii].root, (shift){0, -1}, -1);
    }
    if (c.oom) goto oom;

    *out = *m;
    out->ntensors = (uint32_t)c.nt;
    out->ninsts = (uint32_t)c.ni;
    out->nix = (uint32_t)c.nix;
    out->nred_vars = (uint32_t)c.nred;
    out->nvars = (uint32_t)c.nv;
    out->nstmts = (uint32_t)c.ns;
    out->inits = inits;
    out->norigins = (uint32_t)c.no;
    FREEZE(out->tensors, c.tensors, c.nt);
    FREEZE(out->insts, c.insts, c.ni);
    FREEZE(out->ix, c.ix, c.nix);
    FREEZE(out->red_vars, c.red, c.nred);
    FREEZE(out->vars, c.vars, c.nv);
    FREEZE(out->stmts, c.stmts, c.ns);
    FREEZE(out->origins, c.origins, c.no);
    *mp = out;
    goto done;
oom:
    diag_error(d, "out of memory while rewriting the lagged lets of model '%s'", m->name);
    c.failed = true;
done:
    free(c.reads_state);
    free(c.window);
    free(c.hidden);
    free(c.vmap);
    free(c.rd);
    free(c.tensors);
    free(c.insts);
    free(c.ix);
    free(c.red);
    free(c.vars);
    free(c.stmts);
    free(c.origins);
    return !c.failed;
}
