/* test_chunk.c: the chunk forms (passes/chunk.c) and the split of a chunked
 * model into prologue, cores and epilogue (passes/chunk_lower.c), on the f64
 * interpreter: for every example whose states all have a chunk form, and for
 * models made for the test, the original model and prologue -> a reference
 * core (the canonical recurrence, run step by step in f64 here) -> epilogue
 * give the same outputs and final states on fresh random inputs (relative
 * error <= 1e-10); the forms refused say why, located. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "driver/pipeline.h"
#include "helpers/chunk_ref.h"
#include "helpers/files.h"
#include "support/support.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static double uniform(void) { return uniform_pm1(&rng); }

/* elements of tensor t for a run */
static size_t elems(const ir_model *m, const ir_tensor *t, int64_t B, int64_t T)
{
    size_t n = (size_t)ir_tensor_elems(m, t);
    if (t->kind == IR_PARAM) return n;
    return n * (size_t)B * (t->per_step ? (size_t)T : 1);
}

static double **alloc_data(const ir_model *m) { return calloc(m->ntensors + 1, sizeof(double *)); }

static void free_data(const ir_model *m, double **d)
{
    for (uint32_t i = 0; d && i < m->ntensors; i++) free(d[i]);
    free(d);
}

/* Tensor `name` of model `to` from the data of model `from` (the same name). */
static double *same_name(const ir_model *from, double **data, const char *name)
{
    int k = ir_find_tensor(from, name);
    return k >= 0 ? data[k] : NULL;
}

static double rel_err(const double *a, const double *b, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs(a[i] - b[i]);
        if (isnan(e)) return NAN; /* a non-finite value fails whatever follows it */
        if (e > num) num = e;
        if (fabs(b[i]) > den) den = fabs(b[i]);
    }
    return den > 0 ? num / den : num;
}

/* The check for one model: 0 when all its states are chunkable and the parts
 * reproduce it; 1 when some state has no chunk form (forms->all false). */
static int check_parts(const char *name, const char *src, size_t len, int64_t B, int64_t T)
{
    arena a;
    arena_init(&a);
    diag d = {0};
    ssmc_options o = {0};
    pipeline pl = {.a = &a, .d = &d, .o = &o};
    if (pipeline_run(&pl, name, src, len, PIPE_ANALYSIS) != SSMC_OK) fail_msg("%s: %s", name, sb_cstr(&d.text));
    const ir_model *m = pl.ir;
    if (!pl.chunks.all) {
        for (int i = 0; i < pl.chunks.nforms; i++)
            if (!pl.chunks.forms[i].ok) assert_non_null(pl.chunks.forms[i].why);
        arena_free(&a);
        diag_free(&d);
        return 1;
    }
    plan_target tg = plan_target_cpu(1);
    pass_plan *plan;
    if (plan_make_chunked(&a, m, &pl.an, &pl.chunks, 0, &tg, &plan, &d) != SSMC_OK) fail_msg("%s: %s", name, sb_cstr(&d.text));
    const pass_chunk_parts parts = plan->chunked->parts;

    /* the original, from random inputs, params and initial states */
    double **data = alloc_data(m), **ref = alloc_data(m);
    for (uint32_t i = 0; i < m->ntensors; i++) {
        const ir_tensor *t = &m->tensors[i];
        if (t->kind == IR_LET || t->hidden) continue;
        size_t n = elems(m, t, B, T);
        data[i] = malloc((n ? n : 1) * sizeof(double));
        ref[i] = malloc((n ? n : 1) * sizeof(double));
        for (size_t k = 0; k < n; k++) data[i][k] = t->kind == IR_OUTPUT ? NAN : uniform();
        memcpy(ref[i], data[i], n * sizeof(double));
    }
    ir_interp_args args = {.batch = B, .T = T, .data = ref};
    if (!ir_interp(m, &args, &d)) fail_msg("%s: %s", name, sb_cstr(&d.text));

    /* the prologue */
    const ir_model *pro = parts.prologue, *epi = parts.epilogue;
    double **pdata = alloc_data(pro), **edata = alloc_data(epi);
    for (uint32_t i = 0; i < pro->ntensors; i++) {
        const ir_tensor *t = &pro->tensors[i];
        if (t->kind == IR_LET) continue;
        size_t n = elems(pro, t, B, T);
        pdata[i] = malloc((n ? n : 1) * sizeof(double));
        if (t->kind == IR_OUTPUT)
            for (size_t k = 0; k < n; k++) pdata[i][k] = NAN;
        else
            memcpy(pdata[i], same_name(m, data, t->name), n * sizeof(double));
    }
    ir_interp_args pargs = {.batch = B, .T = T, .data = pdata};
    if (!ir_interp(pro, &pargs, &d)) fail_msg("%s prologue: %s", name, sb_cstr(&d.text));

    /* the epilogue's inputs: the original's, and the readout results */
    for (uint32_t i = 0; i < epi->ntensors; i++) {
        const ir_tensor *t = &epi->tensors[i];
        if (t->kind == IR_LET) continue;
        size_t n = elems(epi, t, B, T);
        edata[i] = malloc((n ? n : 1) * sizeof(double));
        double *src = same_name(m, data, t->name);
        if (t->kind == IR_OUTPUT || !src)
            for (size_t k = 0; k < n; k++) edata[i][k] = NAN;
        else
            memcpy(edata[i], src, n * sizeof(double));
    }
    double **finals = alloc_data(m);
    for (int i = 0; i < plan->chunked->ncores; i++) {
        const plan_chunk_core *c = &plan->chunked->cores[i];
        size_t n = elems(m, &m->tensors[c->state], B, T);
        finals[c->state] = malloc(n * sizeof(double));
        chunk_ref_core(c, pdata, edata, data[c->state], finals[c->state], B, T);
    }
    ir_interp_args eargs = {.batch = B, .T = T, .data = edata};
    if (!ir_interp(epi, &eargs, &d)) fail_msg("%s epilogue: %s", name, sb_cstr(&d.text));

    /* the same outputs and final states */
    for (uint32_t i = 0; i < m->ntensors; i++) {
        const ir_tensor *t = &m->tensors[i];
        double e = 0;
        if (t->kind == IR_OUTPUT)
            e = rel_err(same_name(epi, edata, t->name), ref[i], elems(m, t, B, T));
        else if (t->kind == IR_STATE && !t->hidden)
            e = rel_err(finals[i], ref[i], elems(m, t, B, T));
        else
            continue;
        if (!(e <= 1e-10)) fail_msg("%s: %s %s differs through the chunked parts: rel err %g", name, ir_kind_names[t->kind], t->name, e);
    }
    free_data(m, data);
    free_data(m, ref);
    free_data(m, finals);
    free_data(pro, pdata);
    free_data(epi, edata);
    arena_free(&a);
    diag_free(&d);
    return 0;
}

/* Every example: those with a chunk form for every state go through the parts. */
static void test_examples(void **state)
{
    (void)state;
    char names[64][128];
    int n = test_list_examples(names, 64), chunked = 0;
    assert_true(n > 0);
    for (int i = 0; i < n; i++) {
        size_t len;
        char *src = test_slurp(names[i], &len);
        chunked += check_parts(names[i], src, len, 2, 13) == 0;
        free(src);
    }
    /* linear attention, GLA, gated DeltaNet, DeltaNet, Mamba-2, Mamba, RWKV-6 at least */
    assert_true(chunked >= 7);
}

static void check_source(const char *src, int expect)
{
    assert_int_equal(check_parts("test.ssm", src, strlen(src), 3, 21), expect);
}

/* Models made for the test: each shape of chunk form. */
static void test_made(void **state)
{
    (void)state;
    /* a per-head decay from a param and an index value (positive by interval
     * arithmetic), the value axis first */
    check_source("model a { dim H = 2, K = 3, V = 4; input q[T,H,K], k[T,H,K], v[T,H,V]; param D[H]; state S[H,V,K];"
                 " output y[T,H,V]; let gam[h] = 1 - pow(2, -2 - h) * sigmoid(D[h]);"
                 " S[h,j,i] = gam[h] * S[h,j,i] + k[t,h,i] * v[t,h,j]; y[t,h,j] = sum(i: q[t,h,i] * S[h,j,i]); }",
                 0);
    /* readouts of S(t-1) and S(t), a skip term, the key shared by every head */
    check_source("model b { dim H = 2, K = 3, V = 2; input q[T,K], k[T,K], v[T,H,V], g[T,H]; param D[H]; state S[H,K,V];"
                 " output y[T,H,V], z[T,H,V];"
                 " y[t,h,j] = sum(i: q[t,i] * S[h,i,j]) + D[h] * v[t,h,j];"
                 " S[h,i,j] = exp(-softplus(g[t,h])) * S[h,i,j] + k[t,i] * v[t,h,j];"
                 " z[t,h,j] = sum(i: q[t,i] * S[h,i,j]) * 2; }",
                 0);
    /* a delta rule whose correction is not a multiple of the decay */
    check_source("model c { dim H = 1, K = 4, V = 3; input q[T,H,K], k[T,H,K], v[T,H,V], a[T,H], b[T,H]; state S[H,K,V];"
                 " output y[T,H,V];"
                 " let p[t,h,j] = sum(m: k[t,h,m] * S[h,m,j]);"
                 " S[h,i,j] = sigmoid(a[t,h]) * S[h,i,j] - sigmoid(b[t,h]) * k[t,h,i] * p[t,h,j] + k[t,h,i] * v[t,h,j];"
                 " y[t,h,j] = sum(i: q[t,h,i] * S[h,i,j]); }",
                 0);
    /* no chunk form: a decay of unknown sign, a nonlinear update, two keys */
    check_source("model d { dim K = 2, V = 2; input q[T,K], k[T,K], v[T,V]; param w; state S[K,V]; output y[T,V];"
                 " S[i,j] = w * S[i,j] + k[t,i] * v[t,j]; y[t,j] = sum(i: q[t,i] * S[i,j]); }",
                 1);
    check_source("model e { dim K = 2, V = 2; input q[T,K], k[T,K], v[T,V]; state S[K,V]; output y[T,V];"
                 " S[i,j] = tanh(S[i,j]) + k[t,i] * v[t,j]; y[t,j] = sum(i: q[t,i] * S[i,j]); }",
                 1);
    check_source("model f { dim K = 2, V = 2; input q[T,K], k[T,K], u[T,K], v[T,V]; state S[K,V]; output y[T,V];"
                 " S[i,j] = S[i,j] - k[t,i] * sum(m: u[t,m] * S[m,j]) + k[t,i] * v[t,j]; y[t,j] = sum(i: q[t,i] * S[i,j]); }",
                 1);
}

/* The located reason --algo=chunked gives for a model without a chunk form. */
static void test_refusal(void **state)
{
    (void)state;
    ssmc_ctx *ctx = ssmc_ctx_new();
    const char *src = "model d {\n  dim K = 2, V = 2;\n  input q[T,K], k[T,K], v[T,V];\n  param w;\n  state S[K,V];\n"
                      "  output y[T,V];\n  S[i,j] = w * S[i,j] + k[t,i] * v[t,j];\n  y[t,j] = sum(i: q[t,i] * S[i,j]);\n}\n";
    ssmc_options o = {.algo = SSMC_ALGO_CHUNKED};
    ssmc_model *m = NULL;
    assert_int_not_equal(ssmc_compile(ctx, "d.ssm", src, strlen(src), &o, &m), SSMC_OK);
    const char *e = ssmc_ctx_error(ctx);
    assert_non_null(strstr(e, "d.ssm:7:12: error: --algo=chunked: state 'S' has no chunk form: the decay is not provably positive"));
    ssmc_ctx_free(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_examples),
        cmocka_unit_test(test_made),
        cmocka_unit_test(test_refusal),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
