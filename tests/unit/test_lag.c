/* test_lag.c: passes/lag.c, lets read at earlier steps.
 *
 * The interpreter runs a model with lagged let reads as it is (it keeps the
 * lets' history) and after the pass (recomputed lets, hidden states); the two
 * must agree to 1e-12 on fresh random inputs, from zero and from given initial
 * states, at T = 1 and T = 9. Also: what the pass makes (which reads are
 * recomputed, which lets are kept in how many hidden states), that models
 * without lagged let reads come back untouched, that the rewritten IR reads
 * no let at a lag, that hidden states are not public (ssmc_model_num_tensors)
 * and get neither an initial nor a final value through ssmc_run, and the
 * located error for a window that is too large. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frontend/ast.h"
#include "ir/ir.h"
#include "passes/passes.h"
#include "ssmc.h"
#include "support/support.h"

typedef struct lowered {
    arena a;
    diag d;
    src_file f;
    ir_model *m;
} lowered;

static void lower(lowered *l, const char *text)
{
    memset(l, 0, sizeof *l);
    arena_init(&l->a);
    l->f = (src_file){"lag.ssm", text, strlen(text)};
    ast_file *af = parse_file(&l->a, &l->d, &l->f);
    if (!af) fail_msg("parse: %s", sb_cstr(&l->d.text));
    if (!check_model(&l->a, &l->d, &l->f, &af->models[0], NULL, 0)) fail_msg("check: %s", sb_cstr(&l->d.text));
    l->m = ir_lower(&l->a, &l->d, &l->f, &af->models[0]);
    if (!l->m || !ir_verify(l->m, &l->d)) fail_msg("lower: %s", sb_cstr(&l->d.text));
}

static void lowered_free(lowered *l)
{
    diag_free(&l->d);
    arena_free(&l->a);
}

static uint64_t rng = 0x6a09e667f3bcc909ull;

/* Runs m (batch 2, T steps) on the inputs, params and initial states in
 * `given` (per tensor id of the first `nbase` tensors; NULL: none); returns
 * the outputs and final states, per tensor id. */
static double **run(const ir_model *m, uint32_t nbase, double **given, int64_t T)
{
    double **data = calloc(m->ntensors, sizeof *data);
    double **res = calloc(nbase, sizeof *res);
    for (uint32_t i = 0; i < nbase; i++) {
        const ir_tensor *t = &m->tensors[i];
        size_t n = (size_t)ir_tensor_elems(m, t) * (t->kind == IR_PARAM ? 1 : 2) * (t->per_step ? (size_t)T : 1);
        if (t->kind == IR_OUTPUT) {
            data[i] = malloc(n * sizeof(double));
            for (size_t k = 0; k < n; k++) data[i][k] = NAN;
        } else if (t->kind == IR_STATE) {
            data[i] = malloc(n * sizeof(double));
            for (size_t k = 0; k < n; k++) data[i][k] = given[i] ? given[i][k] : 0.0;
            if (!given[i]) {
                free(data[i]);
                data[i] = NULL;
            }
        } else if (t->kind != IR_LET) {
            data[i] = given[i];
        }
        res[i] = data[i];
    }
    diag d = {0};
    ir_interp_args args = {.batch = 2, .T = T, .data = data};
    if (!ir_interp(m, &args, &d)) fail_msg("interp: %s", sb_cstr(&d.text));
    diag_free(&d);
    free(data);
    return res;
}

static double maxdiff(const double *a, const double *b, size_t n, double *scale)
{
    double md = 0;
    for (size_t k = 0; k < n; k++) {
        if (isnan(a[k]) || isnan(b[k])) return INFINITY;
        md = fmax(md, fabs(a[k] - b[k]));
        *scale = fmax(*scale, fabs(a[k]));
    }
    return md;
}

/* The model before and after the pass, from zero and from random states. */
static void compare(const char *name, const char *text)
{
    lowered l;
    lower(&l, text);
    const ir_model *m0 = l.m;
    ir_model *m1 = l.m;
    if (!pass_lag(&l.a, &m1, &l.d)) fail_msg("%s: pass_lag: %s", name, sb_cstr(&l.d.text));
    if (!ir_verify(m1, &l.d)) fail_msg("%s: verify after pass_lag: %s", name, sb_cstr(&l.d.text));
    for (uint32_t r = 0; r < m1->ninsts; r++) {
        const ir_inst *in = &m1->insts[r];
        if (in->op == IR_LOAD && m1->tensors[in->load.tensor].kind == IR_LET && (in->load.lag || in->load.lag_var >= 0))
            fail_msg("%s: a let is still read at a lag (%%%u)", name, r);
    }
    uint32_t nb = m0->ntensors;
    for (int64_t T = 1; T <= 9; T += 8)
        for (int with_state = 0; with_state < 2; with_state++) {
            double **given = calloc(nb, sizeof *given);
            for (uint32_t i = 0; i < nb; i++) {
                const ir_tensor *t = &m0->tensors[i];
                if (t->kind == IR_OUTPUT || t->kind == IR_LET || (t->kind == IR_STATE && !with_state)) continue;
                size_t n = (size_t)ir_tensor_elems(m0, t) * (t->kind == IR_PARAM ? 1 : 2) * (t->per_step ? (size_t)T : 1);
                given[i] = malloc(n * sizeof(double));
                for (size_t k = 0; k < n; k++) given[i][k] = uniform_pm1(&rng);
            }
            double **a = run(m0, nb, given, T), **b = run(m1, nb, given, T);
            for (uint32_t i = 0; i < nb; i++) {
                const ir_tensor *t = &m0->tensors[i];
                if (t->kind != IR_OUTPUT && !(t->kind == IR_STATE && with_state)) continue;
                size_t n = (size_t)ir_tensor_elems(m0, t) * 2 * (t->per_step ? (size_t)T : 1);
                double scale = 1e-300, md = maxdiff(a[i], b[i], n, &scale);
                if (!(md <= 1e-12 * scale))
                    fail_msg("%s: %s differs by %g (scale %g) at T = %lld, %s", name, t->name, md, scale, (long long)T,
                             with_state ? "given states" : "zero states");
            }
            for (uint32_t i = 0; i < nb; i++) {
                const ir_tensor *t = &m0->tensors[i];
                if (t->kind == IR_OUTPUT || t->kind == IR_STATE) {
                    free(a[i]);
                    free(b[i]);
                }
                free(given[i]); /* a state's given values were copied by run() */
            }
            free(a);
            free(b);
            free(given);
        }
    lowered_free(&l);
}

static const struct {
    const char *name, *text;
} models[] = {
    {"constant lags",
     "model a { dim C = 3; input x[T,C]; output y[T,C];\n"
     "  let u[t,c] = silu(x[t,c]) * x[t - 1, c];\n"
     "  y[t,c] = u[t,c] - u[t - 1, c] + 2 * u[t - 3, c]; }"},
    {"a convolution over a computed signal",
     "model a { dim C = 3, W = 4; input x[T,C]; param w[C,W]; output y[T,C];\n"
     "  let u[t,c] = tanh(x[t,c] + x[t - 2, c]);\n"
     "  y[t,c] = sum(j[W]: w[c,j] * u[t - j, c]); }"},
    {"lets through lets, a reduction inside",
     "model a { dim C = 3, N = 5; input x[T,C], b[T,N]; output y[T,C];\n"
     "  let nb[t] = rsqrt(sum(n: b[t,n] * b[t,n]) + 0.1);\n"
     "  let u[t,c] = x[t,c] * nb[t] + sum(n: b[t - 1, n]);\n"
     "  let v[t,c] = u[t,c] * u[t - 1, c];\n"
     "  y[t,c] = v[t - 2, c] + sum(k[N]: u[t - k, c] * k); }"},
    {"a let that reads a state",
     "model a { dim C = 3, W = 3; input x[T,C]; state S[C]; output y[T,C], z[T,C];\n"
     "  let h[t,c] = tanh(S[c]);\n"
     "  S[c] = 0.9 * S[c] + x[t,c] * h[t - 1, c];\n"
     "  let g[t,c] = S[c] * 2;\n"
     "  y[t,c] = g[t - 2, c] + h[t - 1, c];\n"
     "  z[t,c] = sum(j[W]: g[t - j, c] * (j + 1)); }"},
    {"lags that would add up: kept",
     "model a { dim C = 2, W = 3; input x[T,C]; output y[T,C];\n"
     "  let u[t,c] = sum(i[W]: x[t - i, c]);\n"
     "  y[t,c] = sum(j[W]: u[t - j, c] * j); }"},
    {"a time-invariant let and an init beside",
     "model a { dim C = 3; input x[T,C]; param p[C]; state S[C]; output y[T,C];\n"
     "  let a[c] = exp(p[c]);\n"
     "  let u[t,c] = a[c] * x[t,c];\n"
     "  S[c] = S[c] + u[t - 1, c];\n"
     "  y[t,c] = S[c] + u[t - 1, c] * select(c == 1, a[c], 0);\n"
     "  init S[c] = p[c] + c; }"},
};

static void test_equivalence(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof models / sizeof *models; i++) compare(models[i].name, models[i].text);
}

/* The tensors the pass made, as "name=origin:lag:window" words. */
static void made(const ir_model *m, strbuf *out)
{
    for (uint32_t i = 0; i < m->norigins; i++) {
        const ir_origin *o = &m->origins[i];
        sb_printf(out, "%s%s=%s:%lld%s%s", i ? " " : "", m->tensors[o->tensor].name, m->tensors[o->let].name,
                  (long long)o->lag, o->window ? ":w" : "", m->tensors[o->tensor].hidden ? ":hidden" : "");
    }
}

static void test_what_it_makes(void **state)
{
    (void)state;
    static const char *want[] = {
        "u_lag1=u:1 u_lag3=u:3",
        "u_lagj=u:0:w",
        ("u_lag1=u:1 nb_lag1=nb:1 v_lag2=v:2 u_lag2=u:2 nb_lag2=nb:2 u_lag3=u:3 nb_lag3=nb:3 u_lagk=u:0:w "
         "nb_lagk=nb:0:w"),
        "h_prev1=h:1:hidden g_prev1=g:1:hidden g_prev2=g:2:hidden",
        "u_prev1=u:1:hidden u_prev2=u:2:hidden",
        "u_lag1=u:1",
    };
    for (size_t i = 0; i < sizeof models / sizeof *models; i++) {
        lowered l;
        lower(&l, models[i].text);
        ir_model *m = l.m;
        assert_true(pass_lag(&l.a, &m, &l.d));
        strbuf s = {0};
        made(m, &s);
        if (strcmp(sb_cstr(&s), want[i]) != 0) fail_msg("%s: made '%s', expected '%s'", models[i].name, sb_cstr(&s), want[i]);
        sb_free(&s);
        lowered_free(&l);
    }
    /* no lagged let read: the model itself comes back */
    lowered l;
    lower(&l, "model a { dim C = 3; input x[T,C]; output y[T,C]; let u[t,c] = x[t,c]; y[t,c] = u[t,c] + x[t - 1, c]; }");
    ir_model *m = l.m;
    assert_true(pass_lag(&l.a, &m, &l.d));
    assert_ptr_equal(m, l.m);
    lowered_free(&l);
}

/* Hidden states through the public API: not listed, no value in or out. */
static void test_hidden_not_public(void **state)
{
    (void)state;
    const char *src = models[3].text;
    ssmc_ctx *ctx = ssmc_ctx_new();
    ssmc_options o = {.device = SSMC_DEVICE_INTERP};
    ssmc_model *md = NULL;
    assert_int_equal(ssmc_compile(ctx, "lag.ssm", src, strlen(src), &o, &md), SSMC_OK);
    assert_int_equal(ssmc_model_num_tensors(md), 4); /* x, S, y, z */
    for (int i = 0; i < ssmc_model_num_tensors(md); i++) {
        ssmc_tensor_info info;
        assert_int_equal(ssmc_model_tensor(md, i, &info), SSMC_OK);
        assert_null(strstr(info.name, "_prev"));
    }
    assert_int_equal(ssmc_model_find(md, "h_prev1"), -1);
    float x[2 * 4 * 3], y[2 * 4 * 3], h[2 * 3] = {0};
    for (int i = 0; i < 24; i++) x[i] = (float)uniform_pm1(&rng);
    ssmc_arg args[] = {{"x", SSMC_F32, x, 0}, {"y", SSMC_F32, y, 0}, {"h_prev1", SSMC_F32, h, 0}};
    assert_int_equal(ssmc_run(md, 2, 4, args, 3), SSMC_ERR_ARG);
    assert_non_null(strstr(ssmc_ctx_error(ctx), "no input, param, state or output named 'h_prev1'"));
    assert_int_equal(ssmc_run(md, 2, 4, args, 2), SSMC_OK);
    ssmc_model_free(md);
    ssmc_ctx_free(ctx);
}

/* A kept window beyond 64 copies: refused at the read. The checker refuses
 * it for lets that read states; the pass, for lags that would add up. */
static void test_window_too_large(void **state)
{
    (void)state;
    const char *src = "model a { dim C = 2, W = 3, L = 100; input x[T,C]; output y[T,C];\n"
                      "  let u[t,c] = sum(i[W]: x[t - i, c]);\n"
                      "  y[t,c] = sum(j[L]: u[t - j, c]); }";
    ssmc_ctx *ctx = ssmc_ctx_new();
    assert_int_equal(ssmc_check(ctx, "big.ssm", src, strlen(src), NULL), SSMC_ERR_SOURCE);
    const char *e = ssmc_ctx_error(ctx);
    if (!strstr(e, "big.ssm:3:22: error: let 'u' is read at up to 99 steps back") || !strstr(e, "at most 64"))
        fail_msg("got: %s", e);
    const char *src2 = "model a { dim C = 2; input x[T,C]; state S[C]; output y[T,C];\n"
                       "  let h[t,c] = S[c]; S[c] = x[t,c];\n"
                       "  y[t,c] = h[t - 65, c]; }";
    assert_int_equal(ssmc_check(ctx, "big.ssm", src2, strlen(src2), NULL), SSMC_ERR_SOURCE);
    e = ssmc_ctx_error(ctx);
    if (!strstr(e, "big.ssm:3:14: error: let 'h' reads a state") || !strstr(e, "at most 64")) fail_msg("got: %s", e);
    ssmc_ctx_free(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_equivalence),
        cmocka_unit_test(test_what_it_makes),
        cmocka_unit_test(test_hidden_not_public),
        cmocka_unit_test(test_window_too_large),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
