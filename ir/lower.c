/* lower.c: the checked AST of one model to the IR (see ir.h).
 * Assumes check_model succeeded on the tree. Dims become constants; lets
 * become tensors; each statement's index variables become model-wide
 * variables; reads of a state are marked as seeing S(t-1) or S(t) by their
 * position relative to the state's update. Init statements go to model.inits,
 * the others to model.stmts, each list in source order. */
#include "ir.h"

#include <stdlib.h>
#include <string.h>

#include "frontend/ast.h"
#include "support/support.h"

typedef struct lowerer {
    arena *a;
    const ast_model *am;
    int *dim_of_decl;    /* decl -> IR dim id, or -1 */
    int *tensor_of_decl; /* decl -> IR tensor id, or -1 */
    int *updated_at;     /* IR tensor -> defining statement */
    int var_base;        /* first IR var of the current statement */
    int stmt;
    ir_inst *insts;
    size_t ninsts, cinsts;
    ir_index *ix;
    size_t nix, cix;
    uint32_t *red;
    size_t nred, cred;
    ir_var *vars;
    size_t nvars, cvars;
    bool oom;
} lowerer;


static ir_ref emit(lowerer *l, ir_inst in)
{
    if (l->ninsts >= UINT32_MAX - 1 || !VEC_PUSH(l->insts, l->ninsts, l->cinsts, in)) {
        l->oom = true;
        return IR_NONE;
    }
    return (ir_ref)(l->ninsts - 1);
}

static ir_ref lower_expr(lowerer *l, const ast_expr *e)
{
    if (l->oom) return IR_NONE;
    ir_inst in = {.loc = e->loc, .a = IR_NONE, .b = IR_NONE, .c = IR_NONE};
    switch (e->kind) {
    case AST_NUM:
        in.op = IR_CONST;
        in.num = e->num;
        return emit(l, in);
    case AST_NAME: /* a dim: scalar tensor reads were turned into AST_READ */
        in.op = IR_CONST;
        in.num = (double)l->am->decls[e->sym].value;
        return emit(l, in);
    case AST_READ: {
        const ast_decl *d = &l->am->decls[e->sym];
        int t = l->tensor_of_decl[e->sym];
        in.op = IR_LOAD;
        in.load.tensor = t;
        in.load.lag_var = -1;
        in.load.ix = (uint32_t)l->nix;
        int first = 0;
        if (d->naxes > 0 && strcmp(d->axes[0], "T") == 0) {
            first = 1;
            if (e->ix[0].kind == AST_IX_T_VAR)
                in.load.lag_var = l->var_base + e->ix[0].var;
            else
                in.load.lag = e->ix[0].k;
        }
        for (int i = first; i < e->nix; i++) {
            const ast_index *ax = &e->ix[i];
            ir_index ix = {.var = -1};
            if (ax->kind == AST_IX_INT) {
                ix.kind = IR_IX_CONST;
                ix.k = ax->k;
            } else if (ax->kind == AST_IX_DIV) {
                ix.kind = IR_IX_DIV;
                ix.var = l->var_base + ax->var;
                ix.k = ax->div;
            } else {
                ix.kind = IR_IX_VAR;
                ix.var = l->var_base + ax->var;
            }
            if (!VEC_PUSH(l->ix, l->nix, l->cix, ix)) l->oom = true;
        }
        if (d->kind == AST_STATE) in.load.after_update = l->updated_at[t] >= 0 && l->updated_at[t] < l->stmt;
        return emit(l, in);
    }
    case AST_NEG:
        in.op = IR_NEG;
        in.a = lower_expr(l, e->a);
        return emit(l, in);
    case AST_BIN:
        in.op = e->op == '+' ? IR_ADD : e->op == '-' ? IR_SUB : e->op == '*' ? IR_MUL : IR_DIV;
        in.a = lower_expr(l, e->a);
        in.b = lower_expr(l, e->b);
        return emit(l, in);
    case AST_CMP:
        in.op = e->op == '<'   ? IR_LT
                : e->op == 'l' ? IR_LE
                : e->op == '>' ? IR_GT
                : e->op == 'g' ? IR_GE
                : e->op == '=' ? IR_EQ
                               : IR_NE;
        in.a = lower_expr(l, e->a);
        in.b = lower_expr(l, e->b);
        return emit(l, in);
    case AST_IDX:
        in.op = IR_IDX;
        in.var = l->var_base + e->var;
        return emit(l, in);
    case AST_CALL:
        in.op = (uint8_t)e->fn; /* the op table row: ir_op */
        in.a = lower_expr(l, e->args[0]);
        if (e->nargs > 1) in.b = lower_expr(l, e->args[1]);
        if (e->nargs > 2) in.c = lower_expr(l, e->args[2]);
        return emit(l, in);
    case AST_REDUCE:
        in.op = e->op == '+' ? IR_SUM : IR_RMAX;
        in.red.vars = (uint32_t)l->nred;
        in.red.nvars = (uint32_t)e->nvars;
        for (int i = 0; i < e->nvars; i++) {
            uint32_t v = (uint32_t)(l->var_base + e->var_ids[i]);
            if (!VEC_PUSH(l->red, l->nred, l->cred, v)) l->oom = true;
        }
        in.a = lower_expr(l, e->a);
        return emit(l, in);
    }
    return IR_NONE;
}

#define FREEZE(dst, src, n)                                                       \
    do {                                                                          \
        (dst) = arena_array(a, (n) ? (n) : 1, sizeof *(src));                     \
        if (!(dst)) goto oom;                                                     \
        if (n) memcpy((dst), (src), (n) * sizeof *(src));                         \
    } while (0)

ir_model *ir_lower(arena *a, diag *d, const src_file *f, const ast_model *am)
{
    lowerer l = {.a = a, .am = am};
    ir_model *m = arena_alloc(a, sizeof *m);
    l.dim_of_decl = calloc((size_t)am->ndecls + 1, sizeof *l.dim_of_decl);
    l.tensor_of_decl = calloc((size_t)am->ndecls + 1, sizeof *l.tensor_of_decl);
    l.updated_at = calloc((size_t)am->ndecls + 1, sizeof *l.updated_at);
    ir_dim *dims = calloc((size_t)am->ndecls + 1, sizeof *dims);
    ir_tensor *tensors = calloc((size_t)am->ndecls + 1, sizeof *tensors);
    ir_stmt *stmts = calloc((size_t)am->nstmts + 1, sizeof *stmts);
    ir_stmt *inits = calloc((size_t)am->nstmts + 1, sizeof *inits);
    if (!m || !l.dim_of_decl || !l.tensor_of_decl || !l.updated_at || !dims || !tensors || !stmts || !inits) goto oom;
    m->name = am->name;
    m->loc = am->loc;
    m->file = f;

    uint32_t nd = 0, nt = 0;
    for (int i = 0; i < am->ndecls; i++) {
        const ast_decl *dc = &am->decls[i];
        l.dim_of_decl[i] = l.tensor_of_decl[i] = -1;
        if (dc->kind == AST_DIM) {
            l.dim_of_decl[i] = (int)nd;
            dims[nd++] = (ir_dim){.name = dc->name, .value = dc->value, .loc = dc->loc};
        }
    }
    for (int i = 0; i < am->ndecls; i++) {
        const ast_decl *dc = &am->decls[i];
        if (dc->kind == AST_DIM) continue;
        static const ir_kind kinds[] = {[AST_INPUT] = IR_INPUT, [AST_PARAM] = IR_PARAM, [AST_STATE] = IR_STATE,
                                        [AST_OUTPUT] = IR_OUTPUT, [AST_LET] = IR_LET};
        ir_tensor t = {.name = dc->name, .kind = kinds[dc->kind], .def = -1, .loc = dc->loc};
        for (int j = 0; j < dc->naxes; j++) {
            if (strcmp(dc->axes[j], "T") == 0) {
                t.per_step = true;
                continue;
            }
            for (uint32_t k = 0; k < nd; k++) /* the dims only: a model may have thousands of lets */
                if (strcmp(dims[k].name, dc->axes[j]) == 0) t.dims[t.rank] = (int)k;
            t.rank++;
        }
        l.tensor_of_decl[i] = (int)nt;
        l.updated_at[nt] = -1;
        tensors[nt++] = t;
    }

    uint32_t nst = 0, nin = 0;
    for (int si = 0; si < am->nstmts; si++) {
        const ast_stmt *s = &am->stmts[si];
        l.stmt = (int)nst;
        l.var_base = (int)l.nvars;
        for (int v = 0; v < s->nvars; v++) {
            ir_var iv = {.name = s->var_names[v], .dim = l.dim_of_decl[s->var_dims[v]]};
            if (!VEC_PUSH(l.vars, l.nvars, l.cvars, iv)) goto oom;
        }
        int t = l.tensor_of_decl[s->sym];
        ir_stmt st = {.tensor = t,
                      .loc = s->loc,
                      .per_step = !s->is_init && (tensors[t].per_step || tensors[t].kind != IR_LET)};
        int r = 0;
        for (int i = 0; i < s->nlhs; i++)
            if (s->lhs[i].kind == AST_IX_VAR) st.vars[r++] = l.var_base + s->lhs[i].var;
        st.root = lower_expr(&l, s->rhs);
        if (l.oom) goto oom;
        if (s->is_init) {
            inits[nin++] = st;
            continue;
        }
        tensors[t].def = (int)nst;
        l.updated_at[t] = (int)nst;
        stmts[nst++] = st;
    }

    m->ndims = nd;
    m->ntensors = nt;
    m->nstmts = nst;
    m->ninits = nin;
    m->ninsts = (uint32_t)l.ninsts;
    m->nix = (uint32_t)l.nix;
    m->nred_vars = (uint32_t)l.nred;
    m->nvars = (uint32_t)l.nvars;
    FREEZE(m->dims, dims, (size_t)nd);
    FREEZE(m->tensors, tensors, (size_t)nt);
    FREEZE(m->stmts, stmts, (size_t)nst);
    FREEZE(m->inits, inits, (size_t)nin);
    FREEZE(m->insts, l.insts, l.ninsts);
    FREEZE(m->ix, l.ix, l.nix);
    FREEZE(m->red_vars, l.red, l.nred);
    FREEZE(m->vars, l.vars, l.nvars);
    goto done;
oom:
    diag_error(d, "out of memory while lowering model '%s'", am->name);
    m = NULL;
done:
    free(l.dim_of_decl);
    free(l.tensor_of_decl);
    free(l.updated_at);
    free(dims);
    free(tensors);
    free(stmts);
    free(inits);
    free(l.insts);
    free(l.ix);
    free(l.red);
    free(l.vars);
    return m;
}
