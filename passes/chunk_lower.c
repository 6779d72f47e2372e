/* chunk_lower.c: a chunked model split into the three parts the chunked
 * algorithm runs (SPEC §3):
 *
 *   prologue  a model without states: every input, param and let that reads no
 *             state, and, per chunked state S, the canonical operands of its
 *             chunk form as outputs over [T, heads..., D] (heads: the axes of S
 *             but the key and value axes, in S's order):
 *               S__q<r>[t, h.., i]  readout r's query      S__k[t, h.., i]  the key
 *               S__v[t, h.., j]     the value (a vector state: no j)
 *               S__g[t, h..(, i)]   the log of the decay (absent for identity)
 *               S__beta[t, h..], S__w[t, h.., i]  the delta rule's scalar and key
 *   core      per state, the chunked recurrence over those operands
 *             (S(t) = exp(g) (S - beta w w^T S) + k v^T, R_r = q_r^T S(t) or
 *             S(t-1)); a backend's kernel, not IR;
 *   epilogue  a model without states: the inputs, params and state-free lets
 *             again, the readout results S__r<r>[t, h.., j] as inputs, and every
 *             output and let that held a readout, the readout's sum replaced by
 *             its result (plus the sum's terms free of S).
 * Both parts are ordinary verified models, so every backend runs them with
 * the recurrent plan; having no state, a backend may run them with the batch
 * and time axes folded together (a [B, T] sequence as B * T steps of one).
 * Assumes pass_chunk_forms found a form for every state. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "passes/passes.h"

typedef struct lower {
    const ir_model *m;
    arena *a;
    diag *d;
    const pass_chunks *cs;
    ir_builder b;
    int *tmap;         /* [ntensors] old tensor -> new, -1 */
    bool *free_of_s;   /* [ntensors] a let that reads no state (transitively) */
    ir_ref replace_at; /* the one instruction copy_tree replaces (a readout's sum) */
    ir_ref replace_by;
    bool bad;
} lower;

static bool reads_state(const ir_model *m, ir_ref r, const bool *free_of_s)
{
    if (r == IR_NONE) return false;
    const ir_inst *in = &m->insts[r];
    if (in->op == IR_LOAD) {
        const ir_tensor *t = &m->tensors[in->load.tensor];
        return t->kind == IR_STATE || (t->kind == IR_LET && !free_of_s[in->load.tensor]);
    }
    if (in->op == IR_CONST || in->op == IR_IDX) return false;
    for (int i = 0; i < 3; i++)
        if (reads_state(m, ir_operand(in, i), free_of_s)) return true;
    return false;
}

/* ---- building ---- */

static ir_ref inst(lower *l, ir_inst in)
{
    ir_ref r = ir_build_inst(&l->b, in);
    if (r == IR_NONE) l->bad = true;
    return r;
}

static ir_ref num(lower *l, double v, src_loc loc) { return inst(l, (ir_inst){.op = IR_CONST, .loc = loc, .a = IR_NONE, .b = IR_NONE, .c = IR_NONE, .num = v}); }

static ir_ref op2(lower *l, ir_op op, ir_ref a, ir_ref b, src_loc loc)
{
    return inst(l, (ir_inst){.op = (uint8_t)op, .loc = loc, .a = a, .b = b, .c = IR_NONE});
}

/* The variable v stands for under map (NULL: itself). */
static int mapv(const int *map, int v) { return map && map[v] >= 0 ? map[v] : v; }

/* A copy of the tree r of the source model, its variables mapped, its tensors
 * renamed by tmap (a tensor the new model lacks makes it fail). */
static ir_ref copy_tree(lower *l, ir_ref r, const int *map)
{
    if (r == IR_NONE) return IR_NONE;
    if (r == l->replace_at) return l->replace_by;
    const ir_model *m = l->m;
    ir_inst in = m->insts[r];
    ir_ref ops[3];
    for (int i = 0; i < 3; i++) ops[i] = copy_tree(l, ir_operand(&in, i), map);
    in.a = ops[0];
    in.b = ops[1];
    in.c = ops[2];
    switch ((ir_op)in.op) {
    case IR_LOAD: {
        int nt = l->tmap[in.load.tensor];
        if (nt < 0) {
            l->bad = true;
            return IR_NONE;
        }
        const ir_tensor *t = &m->tensors[in.load.tensor];
        uint32_t first = 0;
        for (int i = 0; i < t->rank; i++) {
            ir_index ix = m->ix[in.load.ix + (uint32_t)i];
            if (ix.kind != IR_IX_CONST) ix.var = mapv(map, ix.var);
            if (ix.kind == IR_IX_AFFINE) ix.var2 = mapv(map, ix.var2);
            uint32_t at = ir_build_index(&l->b, ix);
            if (i == 0) first = at;
        }
        in.load.tensor = nt;
        in.load.ix = first;
        if (in.load.lag_var >= 0) in.load.lag_var = mapv(map, in.load.lag_var);
        break;
    }
    case IR_IDX: in.var = mapv(map, in.var); break;
    case IR_SUM:
    case IR_RMAX: {
        uint32_t first = 0;
        for (uint32_t i = 0; i < in.red.nvars; i++) {
            uint32_t at = ir_build_red_var(&l->b, (uint32_t)mapv(map, (int)m->red_vars[in.red.vars + i]));
            if (i == 0) first = at;
        }
        in.red.vars = first;
        break;
    }
    default: break;
    }
    return inst(l, in);
}

/* coef * f_1 * ... as a tree. */
static ir_ref build_product(lower *l, const pass_product *p, src_loc loc)
{
    ir_ref acc = IR_NONE;
    for (int i = 0; i < p->nf; i++) {
        ir_ref f = copy_tree(l, p->f[i].r, p->f[i].map);
        if (p->f[i].recip)
            acc = op2(l, IR_DIV, acc == IR_NONE ? num(l, 1, loc) : acc, f, loc);
        else
            acc = acc == IR_NONE ? f : op2(l, IR_MUL, acc, f, loc);
    }
    if (acc == IR_NONE) return num(l, p->coef, loc);
    if (p->coef != 1) acc = op2(l, IR_MUL, num(l, p->coef, loc), acc, loc);
    return acc;
}

/* log of a positive product: the argument of a lone exp, else the sum of logs. */
static ir_ref build_log(lower *l, const pass_product *p, src_loc loc)
{
    const ir_model *m = l->m;
    if (p->coef == 1 && p->nf == 1 && !p->f[0].recip && m->insts[p->f[0].r].op == IR_EXP)
        return copy_tree(l, m->insts[p->f[0].r].a, p->f[0].map);
    ir_ref acc = p->coef != 1 ? num(l, log(p->coef), loc) : IR_NONE;
    for (int i = 0; i < p->nf; i++) {
        const ir_inst *in = &m->insts[p->f[i].r];
        ir_ref x = in->op == IR_EXP ? copy_tree(l, in->a, p->f[i].map)
                                    : inst(l, (ir_inst){.op = IR_LOG, .loc = loc, .a = copy_tree(l, p->f[i].r, p->f[i].map),
                                                        .b = IR_NONE, .c = IR_NONE});
        if (p->f[i].recip) x = inst(l, (ir_inst){.op = IR_NEG, .loc = loc, .a = x, .b = IR_NONE, .c = IR_NONE});
        acc = acc == IR_NONE ? x : op2(l, IR_ADD, acc, x, loc);
    }
    return acc == IR_NONE ? num(l, 0, loc) : acc;
}

static int add_tensor(lower *l, const char *name, ir_kind kind, const int *dims, int rank, src_loc loc)
{
    ir_tensor t = {.name = name, .kind = kind, .per_step = true, .rank = rank, .def = -1, .loc = loc};
    memcpy(t.dims, dims, (size_t)rank * sizeof *dims);
    int id = ir_build_tensor(&l->b, t);
    if (id < 0) l->bad = true;
    return id;
}

static void add_stmt(lower *l, int tensor, const int *vars, int rank, ir_ref root, bool per_step, src_loc loc)
{
    ir_stmt s = {.tensor = tensor, .root = root, .per_step = per_step, .loc = loc};
    memcpy(s.vars, vars, (size_t)rank * sizeof *vars);
    int si = ir_build_stmt(&l->b, s);
    if (si < 0 || tensor < 0) {
        l->bad = true;
        return;
    }
    l->b.tensors[tensor].def = si;
}

/* The source's dims and variables, its inputs and params, and every let free of
 * states with its statement (time-invariant ones too), in their order. */
static void copy_common(lower *l)
{
    const ir_model *m = l->m;
    ir_build_init(&l->b, NULL);
    for (uint32_t i = 0; i < m->ndims; i++) ir_build_dim(&l->b, m->dims[i].name, m->dims[i].value);
    for (uint32_t i = 0; i < m->nvars; i++) ir_build_var(&l->b, m->vars[i].name, m->vars[i].dim);
    for (uint32_t i = 0; i < m->ntensors; i++) {
        const ir_tensor *t = &m->tensors[i];
        l->tmap[i] = -1;
        if (t->kind == IR_INPUT || t->kind == IR_PARAM || (t->kind == IR_LET && l->free_of_s[i])) {
            ir_tensor c = *t;
            c.def = -1;
            l->tmap[i] = ir_build_tensor(&l->b, c);
        }
    }
}

/* The statements of the lets free of states, copied in program order. */
static void copy_free_lets(lower *l)
{
    const ir_model *m = l->m;
    for (uint32_t si = 0; si < m->nstmts; si++) {
        const ir_stmt *s = &m->stmts[si];
        if (m->tensors[s->tensor].kind != IR_LET || !l->free_of_s[s->tensor]) continue;
        add_stmt(l, l->tmap[s->tensor], s->vars, m->tensors[s->tensor].rank, copy_tree(l, s->root, NULL), s->per_step, s->loc);
    }
}

/* A name for a new tensor: the state's name and the role, joined by "__" (an
 * identifier, as the renderers need), made unique among the source's names. */
static const char *name2(lower *l, const char *a, const char *b)
{
    const char *n = arena_printf(l->a, "%s__%s", a, b);
    for (int k = 2; n && ir_find_tensor(l->m, n) >= 0; k++) n = arena_printf(l->a, "%s__%s%d", a, b, k);
    return n;
}

/* The canonical axes of state f: its head axes in order, then `last` (the key
 * or value axis, or -1: none): dims and the update's variables. */
static int canon_axes(const lower *l, const pass_chunk *f, int last, int *dims, int *vars)
{
    const ir_model *m = l->m;
    const ir_tensor *st = &m->tensors[f->state];
    const ir_stmt *u = &m->stmts[f->update];
    int n = 0;
    for (int ax = 0; ax < st->rank; ax++) {
        if (ax == f->key_axis || ax == f->value_axis) continue;
        dims[n] = st->dims[ax];
        vars[n++] = u->vars[ax];
    }
    if (last >= 0) {
        dims[n] = st->dims[last];
        vars[n++] = u->vars[last];
    }
    return n;
}

static void canonical(lower *l, const pass_chunk *f, const char *what, int last, ir_ref root, int *out)
{
    const ir_model *m = l->m;
    int dims[IR_MAX_RANK], vars[IR_MAX_RANK];
    int n = canon_axes(l, f, last, dims, vars);
    src_loc loc = m->stmts[f->update].loc;
    int t = add_tensor(l, name2(l, m->tensors[f->state].name, what), IR_OUTPUT, dims, n, loc);
    add_stmt(l, t, vars, n, root, true, loc);
    *out = t;
}

/* The readout r's query, in the update's variables: its statement's variable
 * on each axis of S stands for the update's variable there. */
static pass_product query_in_update(lower *l, const pass_chunk *f, const pass_chunk_readout *r)
{
    const ir_model *m = l->m;
    const ir_stmt *u = &m->stmts[f->update];
    int *map = arena_array(l->a, m->nvars + 1, sizeof *map);
    pass_product q = r->query;
    if (!map) {
        l->bad = true;
        return q;
    }
    for (uint32_t v = 0; v < m->nvars; v++) map[v] = (int)v;
    for (int ax = 0; ax < m->tensors[f->state].rank; ax++) map[r->axis_var[ax]] = u->vars[ax];
    for (int i = 0; i < q.nf; i++) {
        int *fm = arena_array(l->a, m->nvars + 1, sizeof *fm);
        if (!fm) {
            l->bad = true;
            return q;
        }
        for (uint32_t v = 0; v < m->nvars; v++) fm[v] = map[q.f[i].map[v]];
        q.f[i].map = fm;
    }
    return q;
}

static ir_model *build_prologue(lower *l, pass_chunk_parts *out)
{
    const ir_model *m = l->m;
    copy_common(l);
    copy_free_lets(l);
    for (int i = 0; i < l->cs->nforms; i++) {
        const pass_chunk *f = &l->cs->forms[i];
        pass_chunk_ops *op = &out->ops[i];
        src_loc loc = m->stmts[f->update].loc;
        for (int r = 0; r < f->nreadouts; r++) {
            pass_product q = query_in_update(l, f, &f->readouts[r]);
            canonical(l, f, arena_printf(l->a, "q%d", r), f->key_axis, build_product(l, &q, loc), &op->q[r]);
        }
        canonical(l, f, "k", f->key_axis, build_product(l, &f->key, loc), &op->k);
        canonical(l, f, "v", f->value_axis, build_product(l, &f->value, loc), &op->v);
        op->g = -1;
        if (f->decay_kind != PASS_DECAY_NONE)
            canonical(l, f, "g", f->decay_kind == PASS_DECAY_KEY ? f->key_axis : -1, build_log(l, &f->decay, loc), &op->g);
        op->beta = op->w = -1;
        if (f->delta) {
            canonical(l, f, "beta", -1, build_product(l, &f->beta, loc), &op->beta);
            canonical(l, f, "w", f->key_axis, build_product(l, &f->dkey, loc), &op->w);
        }
    }
    return l->bad ? NULL : ir_finish(&l->b, l->a, arena_printf(l->a, "%s__prologue", m->name), m, false);
}

/* A statement that holds readouts: its expression, each readout sum replaced
 * by a read of its result (plus the sum's terms free of S). */
static ir_ref replaced_root(lower *l, const ir_stmt *s, const pass_chunk_parts *parts)
{
    const ir_model *m = l->m;
    ir_ref root = IR_NONE;
    int nsums = 0;
    for (int i = 0; i < l->cs->nforms; i++)
        for (int r = 0; r < l->cs->forms[i].nreadouts; r++)
            if (l->cs->forms[i].readouts[r].stmt == (uint32_t)(s - m->stmts)) nsums++;
    if (nsums != 1) {
        /* several readouts in one statement (y = sum(S) / sum(z) inline): not lowered yet */
        if (nsums > 1) l->bad = true;
        return copy_tree(l, s->root, NULL);
    }
    for (int i = 0; i < l->cs->nforms; i++)
        for (int r = 0; r < l->cs->forms[i].nreadouts; r++) {
            const pass_chunk_readout *ro = &l->cs->forms[i].readouts[r];
            if (ro->stmt != (uint32_t)(s - m->stmts)) continue;
            const pass_chunk *f = &l->cs->forms[i];
            const ir_tensor *st = &m->tensors[f->state];
            /* R[t, heads.., j] at the statement's own variables */
            uint32_t first = 0;
            int n = 0;
            for (int ax = 0; ax < st->rank; ax++) {
                if (ax == f->key_axis) continue;
                uint32_t at = ir_build_index(&l->b, (ir_index){.kind = IR_IX_VAR, .var = ro->axis_var[ax]});
                if (n++ == 0) first = at;
            }
            src_loc loc = m->insts[ro->sum].loc;
            ir_ref rd = inst(l, (ir_inst){.op = IR_LOAD, .loc = loc, .a = IR_NONE, .b = IR_NONE, .c = IR_NONE,
                                          .load = {.tensor = parts->ops[i].r[r], .ix = first, .lag_var = -1}});
            if (n == 0) l->bad = true; /* a scalar readout result: not lowered yet */
            for (int k = 0; k < ro->nrest; k++) {
                ir_ref body = build_product(l, &ro->rest_terms[k], loc);
                ir_inst sum = m->insts[ro->sum];
                sum.a = body;
                sum.b = sum.c = IR_NONE;
                uint32_t rv = ir_build_red_var(&l->b, (uint32_t)ro->var);
                sum.red.vars = rv;
                sum.red.nvars = 1;
                rd = op2(l, IR_ADD, rd, inst(l, sum), loc);
            }
            l->replace_at = ro->sum;
            l->replace_by = rd;
            root = copy_tree(l, s->root, NULL);
            l->replace_at = l->replace_by = IR_NONE;
        }
    return root;
}

static ir_model *build_epilogue(lower *l, pass_chunk_parts *parts)
{
    const ir_model *m = l->m;
    copy_common(l);
    /* the readout results, as inputs */
    for (int i = 0; i < l->cs->nforms; i++) {
        const pass_chunk *f = &l->cs->forms[i];
        for (int r = 0; r < f->nreadouts; r++) {
            int dims[IR_MAX_RANK], vars[IR_MAX_RANK];
            int n = canon_axes(l, f, f->value_axis, dims, vars);
            parts->ops[i].r[r] = add_tensor(l, name2(l, m->tensors[f->state].name, arena_printf(l->a, "r%d", r)), IR_INPUT,
                                            dims, n, m->insts[f->readouts[r].sum].loc);
        }
    }
    /* lets that hold readouts and the outputs: tensors first (a statement may
     * read a let defined before it), then every statement in program order */
    bool *holds = arena_array(l->a, m->ntensors + 1, sizeof *holds);
    if (!holds) return NULL;
    for (int i = 0; i < l->cs->nforms; i++)
        for (int r = 0; r < l->cs->forms[i].nreadouts; r++) holds[m->stmts[l->cs->forms[i].readouts[r].stmt].tensor] = true;
    for (uint32_t ti = 0; ti < m->ntensors; ti++) {
        const ir_tensor *t = &m->tensors[ti];
        if (t->kind == IR_OUTPUT || (t->kind == IR_LET && holds[ti])) {
            ir_tensor c = *t;
            c.def = -1;
            l->tmap[ti] = ir_build_tensor(&l->b, c);
        }
    }
    for (uint32_t si = 0; si < m->nstmts; si++) {
        const ir_stmt *s = &m->stmts[si];
        const ir_tensor *t = &m->tensors[s->tensor];
        bool free_let = t->kind == IR_LET && l->free_of_s[s->tensor];
        if (!free_let && t->kind != IR_OUTPUT && !(t->kind == IR_LET && holds[s->tensor])) continue;
        add_stmt(l, l->tmap[s->tensor], s->vars, t->rank, free_let ? copy_tree(l, s->root, NULL) : replaced_root(l, s, parts),
                 s->per_step, s->loc);
    }
    return l->bad ? NULL : ir_finish(&l->b, l->a, arena_printf(l->a, "%s__epilogue", m->name), m, false);
}

bool pass_chunk_lower(arena *a, const ir_model *m, const pass_chunks *cs, pass_chunk_parts *out, diag *d)
{
    memset(out, 0, sizeof *out);
    lower l = {.m = m, .a = a, .d = d, .cs = cs, .replace_at = IR_NONE, .replace_by = IR_NONE};
    l.tmap = arena_array(a, m->ntensors + 1, sizeof *l.tmap);
    l.free_of_s = arena_array(a, m->ntensors + 1, sizeof *l.free_of_s);
    out->ops = arena_array(a, (size_t)cs->nforms + 1, sizeof *out->ops);
    if (!l.tmap || !l.free_of_s || !out->ops) goto oom;
    if (!cs->all) {
        diag_error(d, "internal error: chunk_lower on a model without a chunk form for every state");
        return false;
    }
    /* lets free of states, in program order (a let reads only earlier ones) */
    for (uint32_t si = 0; si < m->nstmts; si++) {
        const ir_stmt *s = &m->stmts[si];
        if (m->tensors[s->tensor].kind == IR_LET) l.free_of_s[s->tensor] = !reads_state(m, s->root, l.free_of_s);
    }
    out->nops = cs->nforms;
    out->prologue = build_prologue(&l, out);
    if (!out->prologue) goto fail;
    lower e = l;
    e.bad = false;
    out->epilogue = build_epilogue(&e, out);
    if (!out->epilogue) goto fail;
    if (!ir_verify(out->prologue, d) || !ir_verify(out->epilogue, d)) return false;
    return true;
fail:
    if (a->failed) goto oom;
    diag_error(d, "the chunked algorithm cannot split model '%s' into its parts (a readout this version does not lower)",
               m->name);
    return false;
oom:
    diag_error(d, "out of memory");
    return false;
}
