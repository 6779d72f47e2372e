/* test_varlen.c: variable-length batches (SPEC §3, ssmc_run_varlen).
 *
 * A packed run of N sequences along T of a batch of one is held to its
 * definition: sequence i run on its own (ssmc_run, batch 1, its own length, on
 * copies of its slices and of row i of each state) gives the same outputs and
 * final state row. Checked on the interpreter and the CPU for models whose
 * sequences could leak into one another if a boundary were crossed: a
 * convolution over t - k (mamba2_conv), an init statement and a window
 * (ttt_linear), a nonlinear cell (lstm), a per-key decay (gla), and the chunked
 * algorithm with chunks longer than some sequences (gated_deltanet), with
 * states given, not given, and given final-only; sequences of one step among
 * them. Bad offsets (not from 0, not to T, empty or falling sequences, none)
 * are refused with a message; an error inside a sequence says which. The
 * gradients of a packed batch (ssmc_forward_train_varlen and ssmc_backward)
 * are held to its sequences' own, params summed over them.
 * SSMC_TEST_SEED=<n> repeats a run. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ssmc.h"
#include "tests/unit/helpers/cpu_harness.h"

#define MAXT 16

static uint64_t rng;

static double uniform(void)
{
    rng += 0x9e3779b97f4a7c15ull;
    uint64_t z = (rng ^ (rng >> 31)) * 0xbf58476d1ce4e5b9ull;
    return (double)((z ^ (z >> 29)) >> 11) * 0x1.0p-53 * 2.0 - 1.0;
}

enum state_use { STATE_GIVEN, STATE_NONE, STATE_FINAL_ONLY };

typedef struct tcase {
    const char *file;
    ssmc_dim dims[4];
    int ndims;
    ssmc_algo algo;
    int chunk;
} tcase;

/* elements of one row: one step of a per-step tensor, one sequence of a state, a whole param */
static size_t row_elems(const ssmc_tensor_info *in)
{
    size_t n = 1;
    for (int j = 0; j < in->rank; j++) n *= (size_t)in->shape[j];
    return n;
}

static ssmc_model *compile(ssmc_ctx *ctx, const tcase *tc, ssmc_device dev)
{
    size_t len;
    char *src = harness_read_source(tc->file, &len);
    assert_non_null(src);
    ssmc_options o = {.dims = tc->dims, .ndims = tc->ndims, .device = dev, .algo = tc->algo, .chunk = tc->chunk,
                      .threads = 2};
    ssmc_model *m = NULL;
    ssmc_status s = ssmc_compile(ctx, tc->file, src, len, &o, &m);
    if (s != SSMC_OK) fprintf(stderr, "%s", ssmc_ctx_error(ctx));
    assert_int_equal(s, SSMC_OK);
    free(src);
    return m;
}

/* One packed run against its sequences run one by one, on f32 tensors. */
static void check_packed(const tcase *tc, ssmc_device dev, const int64_t *cu, int64_t nseq, enum state_use su)
{
    ssmc_ctx *ctx = ssmc_ctx_new();
    ssmc_model *m = compile(ctx, tc, dev);
    int n = ssmc_model_num_tensors(m);
    assert_true(n <= MAXT);
    int64_t T = cu[nseq];
    ssmc_tensor_info info[MAXT];
    float *packed[MAXT], *alone[MAXT];
    size_t row[MAXT], count[MAXT];
    for (int i = 0; i < n; i++) {
        assert_int_equal(ssmc_model_tensor(m, i, &info[i]), SSMC_OK);
        row[i] = row_elems(&info[i]);
        count[i] = row[i] * (info[i].role == SSMC_PARAM ? 1 : info[i].role == SSMC_STATE ? (size_t)nseq : (size_t)T);
        packed[i] = malloc(count[i] * sizeof(float) + 4);
        alone[i] = malloc(count[i] * sizeof(float) + 4);
        assert_non_null(packed[i]);
        assert_non_null(alone[i]);
        for (size_t k = 0; k < count[i]; k++)
            packed[i][k] = info[i].role == SSMC_OUTPUT ? NAN
                           : info[i].role == SSMC_STATE && su != STATE_GIVEN ? (su == STATE_FINAL_ONLY ? NAN : 0.0f)
                                                                            : (float)(0.5 * uniform());
        memcpy(alone[i], packed[i], count[i] * sizeof(float));
    }
    ssmc_arg args[MAXT];
    int na = 0;
    for (int i = 0; i < n; i++) {
        if (info[i].role == SSMC_STATE && su == STATE_NONE) continue;
        args[na++] = (ssmc_arg){info[i].name, SSMC_F32, packed[i],
                                info[i].role == SSMC_STATE && su == STATE_FINAL_ONLY ? SSMC_ARG_FINAL_ONLY : 0};
    }
    ssmc_status s = ssmc_run_varlen(m, T, cu, nseq, args, na);
    if (s != SSMC_OK) fprintf(stderr, "%s", ssmc_ctx_error(ctx));
    assert_int_equal(s, SSMC_OK);

    /* each sequence alone, on copies of its own slices */
    for (int64_t q = 0; q < nseq; q++) {
        int64_t L = cu[q + 1] - cu[q];
        float *piece[MAXT];
        for (int i = 0; i < n; i++) {
            size_t cnt = info[i].role == SSMC_PARAM ? row[i] : info[i].role == SSMC_STATE ? row[i] : row[i] * (size_t)L;
            size_t off = info[i].role == SSMC_PARAM ? 0 : info[i].role == SSMC_STATE ? (size_t)q * row[i]
                                                                                      : (size_t)cu[q] * row[i];
            piece[i] = malloc(cnt * sizeof(float) + 4);
            assert_non_null(piece[i]);
            memcpy(piece[i], alone[i] + off, cnt * sizeof(float));
        }
        ssmc_arg one[MAXT];
        int no = 0;
        for (int i = 0; i < n; i++) {
            if (info[i].role == SSMC_STATE && su == STATE_NONE) continue;
            one[no++] = (ssmc_arg){info[i].name, SSMC_F32, piece[i],
                                   info[i].role == SSMC_STATE && su == STATE_FINAL_ONLY ? SSMC_ARG_FINAL_ONLY : 0};
        }
        s = ssmc_run(m, 1, L, one, no);
        if (s != SSMC_OK) fprintf(stderr, "%s", ssmc_ctx_error(ctx));
        assert_int_equal(s, SSMC_OK);
        for (int i = 0; i < n; i++) {
            if (info[i].role == SSMC_OUTPUT || (info[i].role == SSMC_STATE && su != STATE_NONE)) {
                size_t cnt = info[i].role == SSMC_STATE ? row[i] : row[i] * (size_t)L;
                size_t off = info[i].role == SSMC_STATE ? (size_t)q * row[i] : (size_t)cu[q] * row[i];
                memcpy(alone[i] + off, piece[i], cnt * sizeof(float));
            }
            free(piece[i]);
        }
    }
    for (int i = 0; i < n; i++) {
        if (info[i].role != SSMC_OUTPUT && !(info[i].role == SSMC_STATE && su != STATE_NONE)) continue;
        double maxref = 0, maxdiff = 0;
        for (size_t k = 0; k < count[i]; k++) {
            assert_true(isfinite(packed[i][k]));
            maxref = fmax(maxref, fabs(alone[i][k]));
            maxdiff = fmax(maxdiff, fabs((double)packed[i][k] - alone[i][k]));
        }
        /* the same kernels on the same values; only the buffers' alignment differs */
        if (!(maxdiff <= 1e-6 * maxref))
            fail_msg("%s on %s: %s %s differs from its sequences run alone by %.3e (max %.3e)", tc->file,
                     dev == SSMC_DEVICE_CPU ? "cpu" : "interp", info[i].role == SSMC_OUTPUT ? "output" : "state",
                     info[i].name, maxdiff, maxref);
    }
    for (int i = 0; i < n; i++) {
        free(packed[i]);
        free(alone[i]);
    }
    ssmc_model_free(m);
    ssmc_ctx_free(ctx);
}

static const tcase cases[] = {
    {"examples/mamba2_conv.ssm", {{"P", 3}, {"N", 4}}, 2, SSMC_ALGO_AUTO, 0},
    {"examples/ttt_linear.ssm", {{"H", 2}, {"K", 4}, {"V", 3}}, 3, SSMC_ALGO_AUTO, 0},
    {"examples/lstm.ssm", {{"E", 5}, {"H", 6}}, 2, SSMC_ALGO_AUTO, 0},
    {"examples/gla.ssm", {{"H", 2}, {"K", 5}, {"V", 3}}, 3, SSMC_ALGO_AUTO, 0},
    {"examples/gated_deltanet.ssm", {{"H", 2}, {"K", 5}, {"V", 3}}, 3, SSMC_ALGO_CHUNKED, 4},
};

static void random_offsets(int64_t *cu, int64_t nseq)
{
    cu[0] = 0;
    for (int64_t i = 0; i < nseq; i++) /* lengths 1..9; the first always 1 */
        cu[i + 1] = cu[i] + (i == 0 ? 1 : 1 + (int64_t)((uniform() + 1.0) * 4.5));
}

static void test_packed_equals_alone(void **st)
{
    (void)st;
    ssmc_device devs[2] = {SSMC_DEVICE_INTERP, SSMC_DEVICE_CPU};
    for (int d = 0; d < 2; d++) {
        if (devs[d] == SSMC_DEVICE_CPU && !harness_cpu_available()) continue;
        for (size_t c = 0; c < sizeof cases / sizeof *cases; c++)
            for (int su = STATE_GIVEN; su <= STATE_FINAL_ONLY; su++) {
                int64_t cu[6];
                random_offsets(cu, 5);
                check_packed(&cases[c], devs[d], cu, 5, (enum state_use)su);
            }
        /* one sequence is a plain run of batch one */
        int64_t one[2] = {0, 7};
        check_packed(&cases[0], devs[d], one, 1, STATE_GIVEN);
    }
}

static void expect_refused(ssmc_model *m, ssmc_ctx *ctx, int64_t T, const int64_t *cu, int64_t nseq,
                           const ssmc_arg *args, int na, const char *want)
{
    ssmc_status s = ssmc_run_varlen(m, T, cu, nseq, args, na);
    assert_int_equal(s, SSMC_ERR_ARG);
    if (!strstr(ssmc_ctx_error(ctx), want)) fail_msg("expected '%s' in: %s", want, ssmc_ctx_error(ctx));
}

static void test_bad_offsets(void **st)
{
    (void)st;
    ssmc_ctx *ctx = ssmc_ctx_new();
    ssmc_model *m = compile(ctx, &cases[3], SSMC_DEVICE_INTERP);
    int n = ssmc_model_num_tensors(m);
    ssmc_arg args[MAXT];
    float *bufs[MAXT];
    const int64_t T = 6, N = 3;
    for (int i = 0; i < n; i++) {
        ssmc_tensor_info in;
        ssmc_model_tensor(m, i, &in);
        size_t cnt = row_elems(&in) * (in.role == SSMC_PARAM ? 1 : in.role == SSMC_STATE ? (size_t)N : (size_t)T);
        bufs[i] = calloc(cnt, sizeof(float));
        args[i] = (ssmc_arg){in.name, SSMC_F32, bufs[i], 0};
    }
    expect_refused(m, ctx, T, (const int64_t[]){1, 2, 4, 6}, N, args, n, "must run from 0 to T = 6");
    expect_refused(m, ctx, T, (const int64_t[]){0, 2, 4, 5}, N, args, n, "must run from 0 to T = 6");
    expect_refused(m, ctx, T, (const int64_t[]){0, 2, 2, 6}, N, args, n, "sequence 1 is empty");
    expect_refused(m, ctx, T, (const int64_t[]){0, 4, 2, 6}, N, args, n, "of negative length");
    expect_refused(m, ctx, T, (const int64_t[]){0}, 0, args, n, "at least two offsets");
    expect_refused(m, ctx, T, NULL, N, args, n, "at least two offsets");
    /* an error inside a run says which sequence: here a missing input */
    expect_refused(m, ctx, T, (const int64_t[]){0, 2, 4, 6}, N, args + 1, n - 1, "in sequence 0 of cu_seqlens");
    assert_int_equal(ssmc_run_varlen(NULL, T, (const int64_t[]){0, 6}, 1, args, n), SSMC_ERR_ARG);
    /* and the good offsets run */
    assert_int_equal(ssmc_run_varlen(m, T, (const int64_t[]){0, 2, 4, 6}, N, args, n), SSMC_OK);
    for (int i = 0; i < n; i++) free(bufs[i]);
    ssmc_model_free(m);
    ssmc_ctx_free(ctx);
}

/* Gradients of a packed batch (ssmc_forward_train_varlen, then ssmc_backward
 * on its tape) against each sequence's own training forward and backward on
 * copies: inputs' and initial states' gradients land in their slices, params'
 * are summed over the sequences. */
static void check_packed_grads(const tcase *tc, ssmc_device dev, const int64_t *cu, int64_t nseq)
{
    ssmc_ctx *ctx = ssmc_ctx_new();
    ssmc_model *m = compile(ctx, tc, dev);
    int n = ssmc_model_num_tensors(m);
    int64_t T = cu[nseq];
    ssmc_tensor_info info[MAXT];
    size_t row[MAXT], count[MAXT];
    float *val[MAXT], *val0[MAXT], *cot[MAXT], *gp[MAXT];
    double *ga[MAXT];
    for (int i = 0; i < n; i++) {
        ssmc_model_tensor(m, i, &info[i]);
        row[i] = row_elems(&info[i]);
        count[i] = row[i] * (info[i].role == SSMC_PARAM ? 1 : info[i].role == SSMC_STATE ? (size_t)nseq : (size_t)T);
        val[i] = malloc(count[i] * sizeof(float) + 4);
        val0[i] = malloc(count[i] * sizeof(float) + 4);
        cot[i] = malloc(count[i] * sizeof(float) + 4);
        gp[i] = malloc(count[i] * sizeof(float) + 4);
        ga[i] = calloc(count[i] + 1, sizeof(double));
        for (size_t k = 0; k < count[i]; k++) {
            val[i][k] = info[i].role == SSMC_OUTPUT ? NAN : (float)(0.5 * uniform());
            cot[i][k] = (float)uniform();
            gp[i][k] = NAN;
        }
        memcpy(val0[i], val[i], count[i] * sizeof(float));
    }
    ssmc_arg all[MAXT], vals[MAXT], douts[MAXT], grads[MAXT];
    int nv = 0, nd = 0, ng = 0;
    for (int i = 0; i < n; i++) {
        ssmc_role r = info[i].role;
        all[i] = (ssmc_arg){info[i].name, SSMC_F32, val[i], 0};
        if (r == SSMC_INPUT || r == SSMC_PARAM) vals[nv++] = all[i];
        if (r == SSMC_OUTPUT || r == SSMC_STATE) douts[nd++] = (ssmc_arg){info[i].name, SSMC_F32, cot[i], 0};
        if (r != SSMC_OUTPUT) grads[ng++] = (ssmc_arg){info[i].name, SSMC_F32, gp[i], 0};
    }
    ssmc_tape *tape = NULL;
    ssmc_status s = ssmc_forward_train_varlen(m, T, cu, nseq, all, n, &tape);
    if (s == SSMC_OK) s = ssmc_backward(m, tape, vals, nv, douts, nd, grads, ng);
    if (s != SSMC_OK) fail_msg("%s: %s", tc->file, ssmc_ctx_error(ctx));
    assert_true(ssmc_tape_bytes(tape) > 0);
    ssmc_tape_free(tape);

    for (int64_t q = 0; q < nseq; q++) {
        int64_t L = cu[q + 1] - cu[q];
        float *v1[MAXT], *c1[MAXT], *g1[MAXT];
        size_t cnt[MAXT], off[MAXT];
        for (int i = 0; i < n; i++) {
            ssmc_role r = info[i].role;
            cnt[i] = r == SSMC_PARAM || r == SSMC_STATE ? row[i] : row[i] * (size_t)L;
            off[i] = r == SSMC_PARAM ? 0 : r == SSMC_STATE ? (size_t)q * row[i] : (size_t)cu[q] * row[i];
            v1[i] = malloc(cnt[i] * sizeof(float) + 4);
            c1[i] = malloc(cnt[i] * sizeof(float) + 4);
            g1[i] = malloc(cnt[i] * sizeof(float) + 4);
            memcpy(v1[i], val0[i] + off[i], cnt[i] * sizeof(float));
            memcpy(c1[i], cot[i] + off[i], cnt[i] * sizeof(float));
        }
        ssmc_arg a1[MAXT], vv[MAXT], dd[MAXT], gg[MAXT];
        int n1 = 0, n2 = 0, n3 = 0;
        for (int i = 0; i < n; i++) {
            ssmc_role r = info[i].role;
            a1[i] = (ssmc_arg){info[i].name, SSMC_F32, v1[i], 0};
            if (r == SSMC_INPUT || r == SSMC_PARAM) vv[n1++] = a1[i];
            if (r == SSMC_OUTPUT || r == SSMC_STATE) dd[n2++] = (ssmc_arg){info[i].name, SSMC_F32, c1[i], 0};
            if (r != SSMC_OUTPUT) gg[n3++] = (ssmc_arg){info[i].name, SSMC_F32, g1[i], 0};
        }
        ssmc_tape *t1 = NULL;
        s = ssmc_forward_train(m, 1, L, a1, n, &t1);
        if (s == SSMC_OK) s = ssmc_backward(m, t1, vv, n1, dd, n2, gg, n3);
        if (s != SSMC_OK) fail_msg("%s alone: %s", tc->file, ssmc_ctx_error(ctx));
        ssmc_tape_free(t1);
        for (int i = 0; i < n; i++) {
            if (info[i].role != SSMC_OUTPUT)
                for (size_t k = 0; k < cnt[i]; k++) ga[i][off[i] + k] += g1[i][k]; /* params: summed */
            free(v1[i]), free(c1[i]), free(g1[i]);
        }
    }
    for (int i = 0; i < n; i++) {
        if (info[i].role == SSMC_OUTPUT) continue;
        double maxref = 0, maxdiff = 0;
        for (size_t k = 0; k < count[i]; k++) {
            assert_true(isfinite(gp[i][k]));
            maxref = fmax(maxref, fabs(ga[i][k]));
            maxdiff = fmax(maxdiff, fabs(gp[i][k] - ga[i][k]));
        }
        if (!(maxdiff <= 1e-5 * maxref))
            fail_msg("%s on %s: the gradient of %s differs from its sequences' by %.3e (max %.3e)", tc->file,
                     dev == SSMC_DEVICE_CPU ? "cpu" : "interp", info[i].name, maxdiff, maxref);
    }
    for (int i = 0; i < n; i++) free(val[i]), free(val0[i]), free(cot[i]), free(gp[i]), free(ga[i]);
    ssmc_model_free(m);
    ssmc_ctx_free(ctx);
}

static void test_packed_grads(void **st)
{
    (void)st;
    ssmc_device devs[2] = {SSMC_DEVICE_INTERP, SSMC_DEVICE_CPU};
    for (int d = 0; d < 2; d++) {
        if (devs[d] == SSMC_DEVICE_CPU && !harness_cpu_available()) continue;
        for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
            int64_t cu[5];
            random_offsets(cu, 4);
            check_packed_grads(&cases[c], devs[d], cu, 4);
        }
    }
    /* a bad offset is refused before anything runs */
    ssmc_ctx *ctx = ssmc_ctx_new();
    ssmc_model *m = compile(ctx, &cases[3], SSMC_DEVICE_INTERP);
    ssmc_tape *tape = (ssmc_tape *)(void *)&ctx;
    assert_int_equal(ssmc_forward_train_varlen(m, 4, (const int64_t[]){0, 2, 2, 4}, 3, NULL, 0, &tape), SSMC_ERR_ARG);
    assert_null(tape);
    assert_non_null(strstr(ssmc_ctx_error(ctx), "sequence 1 is empty"));
    assert_int_equal(ssmc_forward_train_varlen(m, 4, (const int64_t[]){0, 4}, 1, NULL, 0, NULL), SSMC_ERR_ARG);
    ssmc_model_free(m);
    ssmc_ctx_free(ctx);
}

int main(void)
{
    rng = harness_seed();
    printf("test_varlen: seed %llu\n", (unsigned long long)rng);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_packed_equals_alone),
        cmocka_unit_test(test_bad_offsets),
        cmocka_unit_test(test_packed_grads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
