/* test_ir.c: lowering (ir/lower.c) and the verifier (ir/verify.c).
 *
 * Lowering: reads of a state carry after_update exactly when they follow the
 * state's update; per-step reads carry their lag (t - k) or lag variable
 * (t - j, the reduction's variable); grouped and constant indices, statement
 * flags (once / per step), tensor kinds and defining statements, and dims with
 * -D overrides applied. Verifier: it accepts every lowered example, and it
 * rejects, with a message naming the broken invariant, IR broken by hand in
 * each of the ways it checks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frontend/ast.h"
#include "ir/ir.h"
#include "tests/unit/helpers/files.h"
#include "support/support.h"

typedef struct lowered {
    arena a;
    diag d;
    src_file f;
    ir_model *m;
} lowered;

static void lower_with(lowered *l, const char *text, const ast_dim_override *over, int nover)
{
    memset(l, 0, sizeof *l);
    arena_init(&l->a);
    l->f = (src_file){"ir.ssm", text, strlen(text)};
    ast_file *af = parse_file(&l->a, &l->d, &l->f);
    if (!af) fail_msg("parse: %s", sb_cstr(&l->d.text));
    if (!check_model(&l->a, &l->d, &l->f, &af->models[0], over, nover)) fail_msg("check: %s", sb_cstr(&l->d.text));
    l->m = ir_lower(&l->a, &l->d, &l->f, &af->models[0]);
    if (!l->m) fail_msg("lower: %s", sb_cstr(&l->d.text));
    if (!ir_verify(l->m, &l->d)) fail_msg("verify: %s", sb_cstr(&l->d.text));
}

static void lower(lowered *l, const char *text) { lower_with(l, text, NULL, 0); }

static void lowered_free(lowered *l)
{
    arena_free(&l->a);
    diag_free(&l->d);
}

/* The k-th load (in instruction order) of tensor `name` within statement si's expression. */
static bool reaches(const ir_model *m, ir_ref from, ir_ref r)
{
    if (from == IR_NONE) return false;
    if (from == r) return true;
    return reaches(m, m->insts[from].a, r) || reaches(m, m->insts[from].b, r);
}

static const ir_inst *load_of(const ir_model *m, uint32_t si, const char *name, int k)
{
    int t = ir_find_tensor(m, name);
    if (t < 0) fail_msg("no tensor %s", name);
    for (ir_ref r = 0; r < m->ninsts; r++) {
        const ir_inst *in = &m->insts[r];
        if (in->op == IR_LOAD && in->load.tensor == t && reaches(m, m->stmts[si].root, r) && k-- == 0) return in;
    }
    fail_msg("statement %u has no load %d of %s", si, k, name);
    return NULL;
}

static const char *state_rw = "model s {\n"
                              "  dim N = 4;\n"
                              "  input x[T,N];\n"
                              "  state S[N], U[N];\n"
                              "  output before[T,N], after[T,N];\n"
                              "  let prev[t,n] = S[n];\n"            /* 0: S old */
                              "  S[n] = 0.5 * S[n] + x[t,n];\n"      /* 1: S old */
                              "  after[t,n] = S[n] + U[n];\n"        /* 2: S new, U old */
                              "  U[n] = U[n] + S[n];\n"              /* 3: U old, S new */
                              "  before[t,n] = prev[t,n] + U[n];\n"  /* 4: U new */
                              "}\n";

static void test_after_update(void **state)
{
    (void)state;
    lowered l;
    lower(&l, state_rw);
    const ir_model *m = l.m;
    assert_int_equal(m->nstmts, 5);
    assert_false(load_of(m, 0, "S", 0)->load.after_update);
    assert_false(load_of(m, 1, "S", 0)->load.after_update);
    assert_true(load_of(m, 2, "S", 0)->load.after_update);
    assert_false(load_of(m, 2, "U", 0)->load.after_update);
    assert_false(load_of(m, 3, "U", 0)->load.after_update);
    assert_true(load_of(m, 3, "S", 0)->load.after_update);
    assert_true(load_of(m, 4, "U", 0)->load.after_update);
    /* defining statements */
    assert_int_equal(m->tensors[ir_find_tensor(m, "S")].def, 1);
    assert_int_equal(m->tensors[ir_find_tensor(m, "U")].def, 3);
    assert_int_equal(m->tensors[ir_find_tensor(m, "prev")].def, 0);
    assert_int_equal(m->tensors[ir_find_tensor(m, "x")].def, -1);
    lowered_free(&l);

    /* a state never updated: every read sees the initial value, never "after" */
    lower(&l, "model r { dim N = 2; input x[T,N]; state S[N]; output y[T,N]; y[t,n] = S[n] + x[t,n]; }");
    assert_false(load_of(l.m, 0, "S", 0)->load.after_update);
    assert_int_equal(l.m->tensors[ir_find_tensor(l.m, "S")].def, -1);
    lowered_free(&l);
}

static void test_lags(void **state)
{
    (void)state;
    lowered l;
    lower(&l, "model c {\n"
              "  dim D = 4, K = 3;\n"
              "  input x[T,D];\n"
              "  param w[D,K];\n"
              "  output y[T,D];\n"
              "  y[t,d] = sum(j: w[d,j] * x[t - j, d]) + x[t - 2, d] + x[t, d];\n"
              "}\n");
    const ir_model *m = l.m;
    const ir_inst *conv = load_of(m, 0, "x", 0);
    assert_true(conv->load.lag_var >= 0);
    assert_string_equal(m->vars[conv->load.lag_var].name, "j");
    assert_int_equal(m->dims[m->vars[conv->load.lag_var].dim].value, 3);
    /* the lag variable is the reduction's own variable */
    const ir_inst *sum = NULL;
    for (ir_ref r = 0; r < m->ninsts; r++)
        if (m->insts[r].op == IR_SUM) sum = &m->insts[r];
    assert_non_null(sum);
    assert_int_equal(sum->red.nvars, 1);
    assert_int_equal(m->red_vars[sum->red.vars], (uint32_t)conv->load.lag_var);
    const ir_inst *two = load_of(m, 0, "x", 1);
    assert_int_equal(two->load.lag, 2);
    assert_int_equal(two->load.lag_var, -1);
    const ir_inst *now = load_of(m, 0, "x", 2);
    assert_int_equal(now->load.lag, 0);
    assert_int_equal(now->load.lag_var, -1);
    /* a param read has no lag at all */
    const ir_inst *w = load_of(m, 0, "w", 0);
    assert_int_equal(w->load.lag, 0);
    assert_int_equal(w->load.lag_var, -1);
    lowered_free(&l);
}

static void test_indices_and_flags(void **state)
{
    (void)state;
    lowered l;
    lower(&l, "model g {\n"
              "  dim H = 8, G = 2, R = 4, K = 3;\n"
              "  input q[T,H,K], k[T,G,K];\n"
              "  param W[K,K], s;\n"
              "  output o[T,H];\n"
              "  let A[i] = W[i,2] * s;\n"                              /* once */
              "  let c = s + K;\n"                                      /* once, scalar */
              "  let p[t,h] = q[t,h,0];\n"                              /* per step */
              "  o[t,h] = sum(i: q[t,h,i] * k[t,h / R,i] * A[i]) + p[t,h] * c;\n"
              "}\n");
    const ir_model *m = l.m;
    assert_false(m->stmts[0].per_step);
    assert_false(m->stmts[1].per_step);
    assert_true(m->stmts[2].per_step);
    assert_true(m->stmts[3].per_step);
    const ir_tensor *A = &m->tensors[ir_find_tensor(m, "A")];
    assert_int_equal(A->kind, IR_LET);
    assert_false(A->per_step);
    assert_int_equal(A->rank, 1);
    assert_string_equal(m->dims[A->dims[0]].name, "K");
    const ir_tensor *c = &m->tensors[ir_find_tensor(m, "c")];
    assert_int_equal(c->rank, 0);
    const ir_tensor *p = &m->tensors[ir_find_tensor(m, "p")];
    assert_true(p->per_step);
    assert_int_equal(p->rank, 1);
    /* W[i, 2]: a variable then a constant */
    const ir_inst *wl = load_of(m, 0, "W", 0);
    assert_int_equal(m->ix[wl->load.ix].kind, IR_IX_VAR);
    assert_int_equal(m->ix[wl->load.ix + 1].kind, IR_IX_CONST);
    assert_int_equal(m->ix[wl->load.ix + 1].k, 2);
    /* k[t, h / R, i]: the divisor is R's value */
    const ir_inst *kl = load_of(m, 3, "k", 0);
    const ir_index *g = &m->ix[kl->load.ix];
    assert_int_equal(g->kind, IR_IX_DIV);
    assert_int_equal(g->k, 4);
    assert_string_equal(m->vars[g->var].name, "h");
    /* the dim K read as a value becomes a constant */
    bool three = false;
    for (ir_ref r = 0; r < m->ninsts; r++)
        if (m->insts[r].op == IR_CONST && m->insts[r].num == 3 && reaches(m, m->stmts[1].root, r)) three = true;
    assert_true(three);
    /* the output's free variable is h, of dim H */
    assert_string_equal(m->vars[m->stmts[3].vars[0]].name, "h");
    assert_int_equal(m->vars[m->stmts[3].vars[0]].dim, m->tensors[ir_find_tensor(m, "o")].dims[0]);
    lowered_free(&l);

    /* -D overrides are applied before lowering */
    ast_dim_override over[] = {{"H", 16}, {"G", 4}};
    lower_with(&l, "model g { dim H = 8, G = 2; input q[T,H], k[T,G]; output o[T,H]; o[t,h] = q[t,h] * k[t,h / 4]; }",
               over, 2);
    assert_int_equal(l.m->dims[0].value, 16);
    assert_int_equal(l.m->dims[1].value, 4);
    assert_int_equal(ir_tensor_elems(l.m, &l.m->tensors[ir_find_tensor(l.m, "k")]), 4);
    lowered_free(&l);
}

static void test_verify_examples(void **state)
{
    (void)state;
    char names[64][128];
    int count = test_list_examples(names, 64);
    for (int i = 0; i < count; i++) {
        size_t len;
        char *src = test_slurp(names[i], &len);
        lowered l;
        lower(&l, src); /* verifies */
        lowered_free(&l);
        free(src);
    }
    assert_true(count >= 5);
}

/* ---- the verifier against hand-broken IR ---- */

static const char *base = "model b {\n"
                          "  dim N = 4, K = 2, G = 2;\n"
                          "  input x[T,N], g[T,G];\n"
                          "  param w[N,K];\n"
                          "  state S[N];\n"
                          "  output y[T,N];\n"
                          "  let c[n] = w[n,1];\n"                                    /* 0: once */
                          "  let p[t,n] = sum(k: w[n,k]) * x[t - 1,n] + g[t, n / 2];\n" /* 1 */
                          "  S[n] = S[n] * c[n] + p[t,n];\n"                           /* 2 */
                          "  y[t,n] = -S[n] + select(n < 2, p[t - 1,n], 1);\n"        /* 3 */
                          "  init S[n] = w[n,0];\n"                                   /* inits[0] */
                          "}\n";

typedef void (*breaker)(ir_model *m);

static ir_inst *find_load(ir_model *m, uint32_t si, const char *name)
{
    return (ir_inst *)load_of(m, si, name, 0);
}

static ir_inst *find_op(ir_model *m, ir_op op)
{
    for (ir_ref r = 0; r < m->ninsts; r++)
        if (m->insts[r].op == op) return &m->insts[r];
    fail_msg("no %s", op_table[op].name);
    return NULL;
}

static void br_operand_after_user(ir_model *m) { find_op(m, IR_MUL)->a = m->ninsts - 1; }
static void br_operand_out_of_range(ir_model *m) { m->stmts[3].root = m->ninsts + 5; }
static void br_operand_count(ir_model *m) { find_op(m, IR_NEG)->b = 0; }
static void br_missing_operand(ir_model *m) { find_op(m, IR_ADD)->b = IR_NONE; }
static void br_unknown_op(ir_model *m) { find_op(m, IR_NEG)->op = IR_OP_COUNT; }
static void br_load_output(ir_model *m) { find_load(m, 3, "S")->load.tensor = ir_find_tensor(m, "y"); }
static void br_load_no_tensor(ir_model *m) { find_load(m, 3, "S")->load.tensor = (int)m->ntensors; }
static void br_lag_on_param(ir_model *m) { find_load(m, 0, "w")->load.lag = 1; }
static void br_lag_on_let(ir_model *m) { find_load(m, 2, "c")->load.lag = 1; }
static void br_lag_on_output_reader(ir_model *m) { find_load(m, 3, "S")->load.lag = 1; }
static void br_third_operand(ir_model *m) { find_op(m, IR_NEG)->c = 0; }
static void br_select_two_operands(ir_model *m) { find_op(m, IR_SELECT)->c = IR_NONE; }
static void br_idx_unbound(ir_model *m)
{
    /* c[n] in S's update becomes k, a variable of p's reduction */
    ir_inst *c = find_load(m, 2, "c");
    c->op = IR_IDX;
    c->var = m->ix[find_load(m, 1, "w")->load.ix + 1].var;
}
static void br_init_reads_input(ir_model *m) { m->insts[m->inits[0].root].load.tensor = ir_find_tensor(m, "x"); }
static void br_init_of_output(ir_model *m) { m->inits[0].tensor = ir_find_tensor(m, "y"); }
static void br_hidden_output(ir_model *m) { m->tensors[ir_find_tensor(m, "y")].hidden = true; }
static void br_lag_var_on_state(ir_model *m) { find_load(m, 2, "S")->load.lag_var = 0; }
static void br_negative_lag(ir_model *m) { find_load(m, 1, "x")->load.lag = -1; }
static void br_lag_var_unbound(ir_model *m) { find_load(m, 1, "x")->load.lag_var = (int)m->nvars - 1; }
static void br_state_sees_new(ir_model *m) { find_load(m, 2, "S")->load.after_update = true; }
static void br_state_sees_old(ir_model *m) { find_load(m, 3, "S")->load.after_update = false; }
static void br_after_update_on_input(ir_model *m) { find_load(m, 1, "x")->load.after_update = true; }
static void br_const_index_range(ir_model *m) { m->ix[find_load(m, 0, "w")->load.ix + 1].k = 2; }
static void br_negative_const_index(ir_model *m) { m->ix[find_load(m, 0, "w")->load.ix + 1].k = -1; }
static void br_var_of_other_dim(ir_model *m)
{
    /* w[n, k] becomes w[k, k]: k ranges over K but indexes an axis of N */
    ir_inst *w = find_load(m, 1, "w");
    m->ix[w->load.ix].var = m->ix[w->load.ix + 1].var;
}
static void br_unbound_var(ir_model *m)
{
    /* statement 3 reads S at the variable of statement 0 */
    m->ix[find_load(m, 3, "S")->load.ix].var = m->stmts[0].vars[0];
}
static void br_var_out_of_range(ir_model *m) { m->ix[find_load(m, 3, "S")->load.ix].var = (int)m->nvars; }
static void br_group_divisor(ir_model *m) { m->ix[find_load(m, 1, "g")->load.ix].k = 4; }
static void br_group_divisor_zero(ir_model *m) { m->ix[find_load(m, 1, "g")->load.ix].k = 0; }
static void br_let_before_def(ir_model *m)
{
    /* statement 0 reads p, which statement 1 defines */
    find_load(m, 0, "w")->load.tensor = ir_find_tensor(m, "p");
}
static void br_invariant_reads_step(ir_model *m)
{
    /* the time-invariant let c reads the input x: w[n, 1] becomes x[t, n] */
    find_load(m, 0, "w")->load.tensor = ir_find_tensor(m, "x");
}
static void br_invariant_reads_state(ir_model *m)
{
    find_load(m, 0, "w")->load.tensor = ir_find_tensor(m, "S"); /* w[n, 1] becomes S[n] */
}
static void br_reduction_rebinds(ir_model *m)
{
    ir_inst *sum = find_op(m, IR_SUM);
    m->red_vars[sum->red.vars] = (uint32_t)m->stmts[1].vars[0];
}
static void br_reduction_empty(ir_model *m) { find_op(m, IR_SUM)->red.nvars = 0; }
static void br_reduction_range(ir_model *m) { find_op(m, IR_SUM)->red.vars = m->nred_vars; }
static void br_defined_twice(ir_model *m) { m->stmts[3].tensor = m->stmts[2].tensor; }
static void br_def_mismatch(ir_model *m) { m->tensors[ir_find_tensor(m, "y")].def = 2; }
static void br_writes_input(ir_model *m)
{
    int x = ir_find_tensor(m, "x");
    m->stmts[3].tensor = x;
}
static void br_writes_nothing(ir_model *m) { m->stmts[3].tensor = -1; }
static void br_output_unwritten(ir_model *m) { m->nstmts = 3; }
static void br_per_step_flag(ir_model *m) { m->stmts[0].per_step = true; }
static void br_state_flag(ir_model *m) { m->stmts[2].per_step = false; }
static void br_free_var_range(ir_model *m) { m->stmts[3].vars[0] = (int)m->nvars; }
static void br_free_var_dim(ir_model *m) { m->vars[m->stmts[3].vars[0]].dim = 2; /* G: y's axis is N */ }
static void br_input_without_t(ir_model *m) { m->tensors[ir_find_tensor(m, "x")].per_step = false; }
static void br_state_with_t(ir_model *m) { m->tensors[ir_find_tensor(m, "S")].per_step = true; }
static void br_axis_of_no_dim(ir_model *m) { m->tensors[ir_find_tensor(m, "w")].dims[1] = 7; }
static void br_rank(ir_model *m) { m->tensors[ir_find_tensor(m, "w")].rank = IR_MAX_RANK + 1; }
static void br_load_ix_range(ir_model *m) { find_load(m, 3, "S")->load.ix = m->nix; }

static const struct {
    const char *name;
    breaker fn;
    const char *want;
} broken[] = {
    {"operand after user", br_operand_after_user, "operand after its user"},
    {"operand out of range", br_operand_out_of_range, "operand out of range"},
    {"extra operand", br_operand_count, "wrong operand count"},
    {"missing operand", br_missing_operand, "wrong operand count"},
    {"unknown op", br_unknown_op, "unknown op"},
    {"load of an output", br_load_output, "load of an output"},
    {"load of no tensor", br_load_no_tensor, "load of no tensor"},
    {"lag on a param", br_lag_on_param, "time lag on a tensor without T"},
    {"lag on a time-invariant let", br_lag_on_let, "time lag on a tensor without T"},
    {"lag on a state", br_lag_on_output_reader, "time lag on a tensor without T"},
    {"third operand of a negation", br_third_operand, "wrong operand count"},
    {"select with two operands", br_select_two_operands, "wrong operand count"},
    {"index variable unbound", br_idx_unbound, "index variable not bound here"},
    {"init reads an input", br_init_reads_input, "init statement reads something other than a param"},
    {"init of an output", br_init_of_output, "init statement of no state"},
    {"hidden output", br_hidden_output, "hidden tensor that is not a state"},
    {"lag variable on a state", br_lag_var_on_state, "time lag on a tensor without T"},
    {"negative lag", br_negative_lag, "negative time lag"},
    {"lag variable unbound", br_lag_var_unbound, "time-lag variable not bound here"},
    {"state read in its update sees S(t)", br_state_sees_new, "state read sees the wrong step"},
    {"state read after its update sees S(t-1)", br_state_sees_old, "state read sees the wrong step"},
    {"after_update on an input", br_after_update_on_input, "after_update on a non-state"},
    {"constant index too large", br_const_index_range, "constant index out of range"},
    {"constant index negative", br_negative_const_index, "constant index out of range"},
    {"variable of another dim", br_var_of_other_dim, "variable indexes an axis of another dim"},
    {"unbound variable", br_unbound_var, "index variable not bound here"},
    {"variable out of range", br_var_out_of_range, "index variable out of range"},
    {"group divisor", br_group_divisor, "group divisor does not map"},
    {"group divisor zero", br_group_divisor_zero, "group divisor does not map"},
    {"let before its definition", br_let_before_def, "let read before its definition"},
    {"time-invariant reads an input", br_invariant_reads_step, "time-invariant statement reads a per-step value"},
    {"time-invariant reads a state", br_invariant_reads_state, "time-invariant statement reads a per-step value"},
    {"reduction rebinds", br_reduction_rebinds, "reduction rebinds a bound variable"},
    {"reduction of nothing", br_reduction_empty, "reduction variables out of range"},
    {"reduction variables out of range", br_reduction_range, "reduction variables out of range"},
    {"tensor defined twice", br_defined_twice, "tensor defined twice"},
    {"def is another statement", br_def_mismatch, "tensor's def is not this statement"},
    {"statement writes an input", br_writes_input, "statement writes an input or a param"},
    {"statement writes no tensor", br_writes_nothing, "statement defines no tensor"},
    {"output never written", br_output_unwritten, "output not written exactly once"},
    {"once flag on a per-step let", br_per_step_flag, "per_step flag is wrong"},
    {"state update not per step", br_state_flag, "per_step flag is wrong"},
    {"free variable out of range", br_free_var_range, "free variable out of range or repeated"},
    {"free variable of another dim", br_free_var_dim, "free variable of another dim than its axis"},
    {"input without T", br_input_without_t, "input or output without T"},
    {"state with T", br_state_with_t, "param or state with T"},
    {"axis of no dim", br_axis_of_no_dim, "tensor axis of no dim"},
    {"rank out of range", br_rank, "tensor rank out of range"},
    {"load indices out of range", br_load_ix_range, "load indices out of range"},
};

static void test_verify_rejects(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof broken / sizeof *broken; i++) {
        lowered l;
        lower(&l, base);
        broken[i].fn(l.m);
        diag d = {0};
        if (ir_verify(l.m, &d)) fail_msg("%s: the verifier accepted it", broken[i].name);
        const char *msg = sb_cstr(&d.text);
        if (strncmp(msg, "error: internal error: ir verify: model b, ", 43) != 0 || !strstr(msg, broken[i].want))
            fail_msg("%s: got '%s', expected '%s'", broken[i].name, msg, broken[i].want);
        assert_int_equal(d.nerrors, 1);
        diag_free(&d);
        lowered_free(&l);
    }
}

/* The verifier must not be fooled by an unbroken copy either. */
static void test_verify_accepts_base(void **state)
{
    (void)state;
    lowered l;
    lower(&l, base);
    diag d = {0};
    assert_true(ir_verify(l.m, &d));
    assert_int_equal(d.nerrors, 0);
    lowered_free(&l);
}

/* A model built by hand, without the front end: y[t, n] = x[t - 1, n] * 2. */
static void test_hand_built(void **state)
{
    (void)state;
    ir_dim dims[] = {{"N", 3, {0, 0}}};
    ir_tensor tensors[] = {
        {.name = "x", .kind = IR_INPUT, .per_step = true, .rank = 1, .dims = {0}, .def = -1},
        {.name = "y", .kind = IR_OUTPUT, .per_step = true, .rank = 1, .dims = {0}, .def = 0},
    };
    ir_var vars[] = {{"n", 0}};
    ir_index ix[] = {{IR_IX_VAR, 0, 0, 0}};
    ir_inst insts[3] = {0};
    insts[0].op = IR_LOAD;
    insts[0].a = insts[0].b = insts[0].c = IR_NONE;
    insts[0].load.tensor = 0;
    insts[0].load.ix = 0;
    insts[0].load.lag = 1;
    insts[0].load.lag_var = -1;
    insts[1].op = IR_CONST;
    insts[1].a = insts[1].b = insts[1].c = IR_NONE;
    insts[1].num = 2;
    insts[2].op = IR_MUL;
    insts[2].a = 0;
    insts[2].b = 1;
    insts[2].c = IR_NONE;
    ir_stmt stmts[] = {{.tensor = 1, .vars = {0}, .root = 2, .per_step = true}};
    ir_model m = {.name = "hand", .dims = dims, .ndims = 1, .tensors = tensors, .ntensors = 2, .vars = vars,
                  .nvars = 1, .insts = insts, .ninsts = 3, .ix = ix, .nix = 1, .stmts = stmts, .nstmts = 1};
    diag d = {0};
    if (!ir_verify(&m, &d)) fail_msg("%s", sb_cstr(&d.text));

    /* and it runs: y[b, t, n] = 2 * x[b, t - 1, n], 0 at t = 0 */
    double x[2 * 3] = {1, 2, 3, 4, 5, 6}, y[2 * 3];
    double *data[] = {x, y};
    ir_interp_args args = {.batch = 1, .T = 2, .data = data};
    assert_true(ir_interp(&m, &args, &d));
    static const double want[] = {0, 0, 0, 2, 4, 6};
    for (int i = 0; i < 6; i++) assert_true(y[i] == want[i]);

    strbuf out = {0};
    ir_print(&out, &m);
    assert_non_null(strstr(sb_cstr(&out), "%0 = load x[t - 1, n]"));
    sb_free(&out);

    /* the same model with the multiply reading an operand defined after it */
    insts[2].a = 2;
    assert_false(ir_verify(&m, &d));
    assert_non_null(strstr(sb_cstr(&d.text), "model hand, statement 0, instruction 2: operand after its user"));
    diag_free(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_after_update),     cmocka_unit_test(test_lags),
        cmocka_unit_test(test_indices_and_flags), cmocka_unit_test(test_verify_examples),
        cmocka_unit_test(test_verify_accepts_base), cmocka_unit_test(test_verify_rejects),
        cmocka_unit_test(test_hand_built),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
