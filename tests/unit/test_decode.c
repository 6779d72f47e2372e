/* test_decode.c: decoding against state pools (ssmc_decode, ssmc_rows) on the
 * CPU and the interpreter.
 *
 * The interpreter's decode is held to its definition: with rows 0..B-1 it is
 * exactly ssmc_run, and with rows out of order it is ssmc_run on the gathered
 * rows, scattered back. The CPU's is held to the interpreter's: mamba2,
 * gated_deltanet and gla (declared and odd dims), f32 and bf16 pools, T = 1
 * and T = 3, sequences on rows out of order, a padding slot (its outputs stay
 * poisoned, no row changes) and a sequence that starts from the model's
 * initial state (has_state 0; ttt_linear's is its init, W0, but it reads at
 * t - j, so it is refused: a decode cannot carry the window). Rows no sequence
 * has must come out bit for bit unchanged; batch 256 from a pool of 300
 * rows. Four single steps give what one run of four steps gives. Bad calls are refused with a message. Exits 77
 * (skipped) without the CPU backend. SSMC_TEST_SEED=<n> repeats a run. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ssmc.h"
#include "support/dtype.h"
#include "tests/unit/helpers/cpu_harness.h"

static uint64_t rng;

static double uniform(void)
{
    rng += 0x9e3779b97f4a7c15ull;
    uint64_t z = (rng ^ (rng >> 31)) * 0xbf58476d1ce4e5b9ull;
    return (double)((z ^ (z >> 29)) >> 11) * 0x1.0p-53 * 2.0 - 1.0;
}

#define MAXT 16

/* The tensors of one decode: inputs [B, T, ...], params, pools [R, ...],
 * outputs [B, T, ...], in dtype dt, and their f64 twins. */
typedef struct tensors {
    int n;
    ssmc_tensor_info info[MAXT];
    size_t count[MAXT];
    void *data[MAXT];
    double *ref[MAXT];
    ssmc_dtype dt;
} tensors;

static size_t count_of(const ssmc_tensor_info *in, int64_t B, int64_t R, int64_t T)
{
    size_t n = 1;
    for (int j = 0; j < in->rank; j++) n *= (size_t)in->shape[j];
    if (in->role == SSMC_STATE) return n * (size_t)R;
    if (in->role != SSMC_PARAM) n *= (size_t)B;
    return in->per_step ? n * (size_t)T : n;
}

static void fill(tensors *ts, ssmc_model *m, ssmc_dtype dt, int64_t B, int64_t R, int64_t T)
{
    memset(ts, 0, sizeof *ts);
    ts->n = ssmc_model_num_tensors(m);
    ts->dt = dt;
    assert_true(ts->n <= MAXT);
    for (int i = 0; i < ts->n; i++) {
        ssmc_model_tensor(m, i, &ts->info[i]);
        size_t c = count_of(&ts->info[i], B, R, T);
        ts->count[i] = c;
        ts->data[i] = malloc((c ? c : 1) * dtype_size(dt));
        ts->ref[i] = malloc((c ? c : 1) * sizeof(double));
        assert_true(ts->data[i] && ts->ref[i]);
        for (size_t k = 0; k < c; k++) {
            /* dt of mamba2 and a of gated DeltaNet: small decays, so a state stays bounded */
            double lo = strcmp(ts->info[i].name, "dt") == 0 || strcmp(ts->info[i].name, "a") == 0 ? -3 : -1;
            double v = ts->info[i].role == SSMC_OUTPUT ? NAN : lo + (1 - lo) * (uniform() + 1) / 2;
            dtype_set(ts->data[i], dt, k, v);
            ts->ref[i][k] = dtype_get(ts->data[i], dt, k);
        }
    }
}

static void release(tensors *ts)
{
    for (int i = 0; i < ts->n; i++) {
        free(ts->data[i]);
        free(ts->ref[i]);
    }
}

static int args_of(tensors *ts, bool ref, ssmc_arg *a)
{
    for (int i = 0; i < ts->n; i++)
        a[i] = (ssmc_arg){ts->info[i].name, ref ? SSMC_F64 : ts->dt, ref ? (void *)ts->ref[i] : ts->data[i], 0};
    return ts->n;
}

/* max |got - ref| / max |ref| over tensor i; NaN in both (a padding slot's
 * outputs) is skipped, NaN in one fails. */
static double rel_error(const tensors *ts, int i, const char *what)
{
    double mref = 0, mdiff = 0;
    for (size_t k = 0; k < ts->count[i]; k++) {
        double g = dtype_get(ts->data[i], ts->dt, k), r = ts->ref[i][k];
        if (isnan(g) && isnan(r)) continue;
        if (isnan(g) != isnan(r)) fail_msg("%s: %s[%zu] is %g, the interpreter's %g", what, ts->info[i].name, k, g, r);
        mref = fmax(mref, fabs(r));
        mdiff = fmax(mdiff, fabs(g - r));
    }
    return mref > 0 ? mdiff / mref : mdiff;
}

static ssmc_model *compile(ssmc_ctx *ctx, const char *file, const ssmc_dim *dims, int nd, ssmc_device dev)
{
    size_t len;
    char *src = harness_read_source(file, &len);
    assert_non_null(src);
    ssmc_model *m = NULL;
    ssmc_status s = harness_compile(ctx, file, src, len, dims, nd, dev, 2, &m);
    free(src);
    if (s != SSMC_OK) fail_msg("%s: %s", file, ssmc_ctx_error(ctx));
    return m;
}

static const int32_t perm_index[] = {5, 0, -1, 3};
static const uint8_t perm_has[] = {1, 0, 1, 1};

/* The CPU's decode against the interpreter's, on one model. */
static void cpu_case(const char *file, const ssmc_dim *dims, int nd, ssmc_dtype dt, int64_t T, bool with_has)
{
    ssmc_ctx *ctx = ssmc_ctx_new();
    ssmc_model *cpu = compile(ctx, file, dims, nd, SSMC_DEVICE_CPU), *ref = compile(ctx, file, dims, nd, SSMC_DEVICE_INTERP);
    tensors ts;
    fill(&ts, cpu, dt, 4, 7, T);
    double *before[MAXT] = {0};
    for (int i = 0; i < ts.n; i++)
        if (ts.info[i].role == SSMC_STATE) {
            before[i] = malloc(ts.count[i] * sizeof(double));
            memcpy(before[i], ts.ref[i], ts.count[i] * sizeof(double));
        }
    ssmc_arg a[MAXT], r[MAXT];
    int n = args_of(&ts, false, a);
    args_of(&ts, true, r);
    ssmc_rows rows = {perm_index, with_has ? perm_has : NULL, 7};
    if (ssmc_decode(cpu, 4, T, a, n, &rows) != SSMC_OK) fail_msg("%s: %s", file, ssmc_ctx_error(ctx));
    if (ssmc_decode(ref, 4, T, r, n, &rows) != SSMC_OK) fail_msg("%s: %s", file, ssmc_ctx_error(ctx));
    char what[200];
    snprintf(what, sizeof what, "%s %s T=%lld%s%s", file, dt == SSMC_F32 ? "f32" : "bf16", (long long)T,
             nd ? " odd dims" : "", with_has ? " has_state" : "");
    for (int i = 0; i < ts.n; i++) {
        if (ts.info[i].role != SSMC_OUTPUT && ts.info[i].role != SSMC_STATE) continue;
        double e = rel_error(&ts, i, what);
        double tol = ssmc_model_tolerance(cpu, i, dt, T);
        printf("# %-60s %-3s rel %.2e (tol %.1e)\n", what, ts.info[i].name, e, tol);
        if (!(e <= tol)) fail_msg("%s: %s: relative error %.3e > %.1e", what, ts.info[i].name, e, tol);
        if (ts.info[i].role != SSMC_STATE) continue;
        /* rows 1, 2, 4 and 6 belong to no sequence: unchanged, bit for bit */
        size_t row = ts.count[i] / 7;
        for (int64_t rr = 0; rr < 7; rr++) {
            if (rr == 5 || rr == 0 || rr == 3) continue;
            for (size_t k = rr * row; k < (rr + 1) * row; k++)
                if (dtype_get(ts.data[i], dt, k) != before[i][k])
                    fail_msg("%s: row %lld of pool %s changed", what, (long long)rr, ts.info[i].name);
        }
        free(before[i]);
    }
    /* the padding slot's outputs are still poisoned */
    for (int i = 0; i < ts.n; i++)
        if (ts.info[i].role == SSMC_OUTPUT) {
            size_t per = ts.count[i] / 4;
            for (size_t k = 2 * per; k < 3 * per; k++) assert_true(isnan(dtype_get(ts.data[i], dt, k)));
        }
    release(&ts);
    ssmc_model_free(cpu);
    ssmc_model_free(ref);
    ssmc_ctx_free(ctx);
}

static void test_cpu_against_interp(void **state)
{
    static const ssmc_dim odd[] = {{"H", 3}, {"P", 9}, {"N", 11}};
    static const ssmc_dim odd_gdn[] = {{"H", 3}, {"K", 9}, {"V", 11}};
    static const char *const files[] = {"examples/mamba2.ssm", "examples/gated_deltanet.ssm", "examples/gla.ssm"};
    for (int f = 0; f < 3; f++)
        for (int v = 0; v < 4; v++) {
            bool o = v & 1;
            cpu_case(files[f], o ? (f == 0 ? odd : odd_gdn) : NULL, o ? 3 : 0, v & 2 ? SSMC_BF16 : SSMC_F32,
                     v & 2 ? 3 : 1, v == 1 || v == 2);
        }
}

/* Batch 256 from a pool of 300 rows (every seventh row plus eleven, mod 300:
 * distinct), one step, on 2 threads. */
static void test_batch_256(void **state)
{
    static const ssmc_dim dims[] = {{"H", 2}, {"P", 8}, {"N", 16}};
    ssmc_ctx *ctx = ssmc_ctx_new();
    ssmc_model *cpu = compile(ctx, "examples/mamba2.ssm", dims, 3, SSMC_DEVICE_CPU),
               *ref = compile(ctx, "examples/mamba2.ssm", dims, 3, SSMC_DEVICE_INTERP);
    int32_t index[256];
    for (int i = 0; i < 256; i++) index[i] = (int32_t)((i * 7 + 11) % 300);
    index[100] = -1; /* and a padding slot */
    tensors ts;
    fill(&ts, cpu, SSMC_F32, 256, 300, 1);
    ssmc_arg a[MAXT], r[MAXT];
    int n = args_of(&ts, false, a);
    args_of(&ts, true, r);
    ssmc_rows rows = {index, NULL, 300};
    assert_int_equal(ssmc_decode(cpu, 256, 1, a, n, &rows), SSMC_OK);
    assert_int_equal(ssmc_decode(ref, 256, 1, r, n, &rows), SSMC_OK);
    for (int i = 0; i < ts.n; i++) {
        if (ts.info[i].role != SSMC_OUTPUT && ts.info[i].role != SSMC_STATE) continue;
        double e = rel_error(&ts, i, "batch 256");
        printf("# batch 256, a pool of 300 rows: %s rel %.2e\n", ts.info[i].name, e);
        assert_true(e <= ssmc_model_tolerance(cpu, i, SSMC_F32, 1));
    }
    release(&ts);
    ssmc_model_free(cpu);
    ssmc_model_free(ref);
    ssmc_ctx_free(ctx);
}

/* The interpreter's decode is what its definition says: ssmc_run on rows
 * 0..B-1, and on the gathered rows otherwise. */
static void test_interp_definition(void **state)
{
    ssmc_ctx *ctx = ssmc_ctx_new();
    ssmc_model *m = compile(ctx, "examples/gated_deltanet.ssm", NULL, 0, SSMC_DEVICE_INTERP);
    tensors a, b;
    uint64_t keep = rng;
    fill(&a, m, SSMC_F64, 4, 7, 3);
    rng = keep;
    fill(&b, m, SSMC_F64, 4, 4, 3); /* the same draws: inputs and params first, as declared */
    int S = ssmc_model_find(m, "S"), y = ssmc_model_find(m, "y");
    size_t row = a.count[S] / 7;
    for (int k = 0; k < 4; k++) /* b's batch: a's rows in perm_index order (the padding slot's: its own) */
        if (perm_index[k] >= 0) memcpy((double *)b.data[S] + k * row, (double *)a.data[S] + perm_index[k] * row, row * 8);
    ssmc_arg aa[MAXT], ba[MAXT];
    int n = args_of(&a, false, aa);
    args_of(&b, false, ba);
    ssmc_rows rows = {perm_index, NULL, 7};
    assert_int_equal(ssmc_decode(m, 4, 3, aa, n, &rows), SSMC_OK);
    assert_int_equal(ssmc_run(m, 4, 3, ba, n), SSMC_OK);
    size_t per = a.count[y] / 4;
    for (int k = 0; k < 4; k++) {
        if (perm_index[k] < 0) continue;
        assert_memory_equal((double *)a.data[y] + k * per, (double *)b.data[y] + k * per, per * 8);
        assert_memory_equal((double *)a.data[S] + perm_index[k] * row, (double *)b.data[S] + k * row, row * 8);
    }
    /* rows 0..B-1, every sequence with its state: exactly ssmc_run */
    release(&b);
    static const int32_t ident[] = {0, 1, 2, 3};
    tensors c;
    keep = rng;
    fill(&b, m, SSMC_F64, 4, 4, 3);
    rng = keep;
    fill(&c, m, SSMC_F64, 4, 4, 3);
    args_of(&b, false, ba);
    ssmc_arg ca[MAXT];
    args_of(&c, false, ca);
    ssmc_rows id = {ident, NULL, 4};
    assert_int_equal(ssmc_decode(m, 4, 3, ba, n, &id), SSMC_OK);
    assert_int_equal(ssmc_run(m, 4, 3, ca, n), SSMC_OK);
    assert_memory_equal(b.data[y], c.data[y], b.count[y] * 8);
    assert_memory_equal(b.data[S], c.data[S], b.count[S] * 8);
    release(&a);
    release(&b);
    release(&c);
    ssmc_model_free(m);
    ssmc_ctx_free(ctx);
}

/* Four single steps on the CPU give what one run of four steps gives. */
static void test_steps_make_a_run(void **state)
{
    ssmc_ctx *ctx = ssmc_ctx_new();
    ssmc_model *m = compile(ctx, "examples/mamba2.ssm", NULL, 0, SSMC_DEVICE_CPU);
    tensors ts;
    fill(&ts, m, SSMC_F32, 2, 2, 4);
    int S = ssmc_model_find(m, "S"), y = ssmc_model_find(m, "y");
    float *S0 = malloc(ts.count[S] * 4), *yrun = malloc(ts.count[y] * 4);
    memcpy(S0, ts.data[S], ts.count[S] * 4);
    ssmc_arg a[MAXT];
    int n = args_of(&ts, false, a);
    a[y].data = yrun;
    assert_int_equal(ssmc_run(m, 2, 4, a, n), SSMC_OK);
    float *Srun = malloc(ts.count[S] * 4);
    memcpy(Srun, ts.data[S], ts.count[S] * 4);
    memcpy(ts.data[S], S0, ts.count[S] * 4);
    /* step t: the inputs of step t of both sequences, gathered */
    static const int32_t rows01[] = {0, 1};
    ssmc_rows rows = {rows01, NULL, 2};
    float *step[MAXT] = {0};
    double worst = 0;
    for (int t = 0; t < 4; t++) {
        ssmc_arg sa[MAXT];
        for (int i = 0; i < n; i++) {
            sa[i] = a[i];
            if (!ts.info[i].per_step) continue;
            size_t per = ts.count[i] / 8; /* B = 2, T = 4 */
            free(step[i]);
            step[i] = malloc(2 * per * 4);
            for (int b = 0; b < 2; b++)
                if (ts.info[i].role == SSMC_INPUT) memcpy(step[i] + b * per, (float *)ts.data[i] + (b * 4 + t) * per, per * 4);
            sa[i].data = step[i];
        }
        assert_int_equal(ssmc_decode(m, 2, 1, sa, n, &rows), SSMC_OK);
        size_t per = ts.count[y] / 8;
        for (int b = 0; b < 2; b++)
            for (size_t k = 0; k < per; k++)
                worst = fmax(worst, fabs(step[y][b * per + k] - yrun[(b * 4 + t) * per + k]));
    }
    for (size_t k = 0; k < ts.count[S]; k++) worst = fmax(worst, fabs(((float *)ts.data[S])[k] - Srun[k]));
    printf("# four steps against one run: max |difference| %.3e\n", worst);
    assert_true(worst <= 1e-5);
    for (int i = 0; i < MAXT; i++) free(step[i]);
    free(S0);
    free(yrun);
    free(Srun);
    release(&ts);
    ssmc_model_free(m);
    ssmc_ctx_free(ctx);
}

static void expect_refusal(ssmc_model *m, ssmc_ctx *ctx, ssmc_status want, int64_t B, const ssmc_arg *a, int n,
                           const ssmc_rows *rows, const char *needle)
{
    ssmc_status s = ssmc_decode(m, B, 1, a, n, rows);
    if (s != want || !strstr(ssmc_ctx_error(ctx), needle))
        fail_msg("expected %s with '%s', got %s: %s", ssmc_status_name(want), needle, ssmc_status_name(s),
                 ssmc_ctx_error(ctx));
    printf("# refused: %s\n", ssmc_ctx_error(ctx));
}

static void test_refusals(void **state)
{
    ssmc_ctx *ctx = ssmc_ctx_new();
    ssmc_model *m = compile(ctx, "examples/mamba2.ssm", NULL, 0, SSMC_DEVICE_CPU);
    tensors ts;
    fill(&ts, m, SSMC_F32, 4, 7, 1);
    ssmc_arg a[MAXT];
    int n = args_of(&ts, false, a);
    ssmc_rows rows = {perm_index, NULL, 7};
    expect_refusal(m, ctx, SSMC_ERR_ARG, 4, a, n, NULL, "needs rows");
    ssmc_rows few = {perm_index, NULL, 5};
    expect_refusal(m, ctx, SSMC_ERR_ARG, 4, a, n, &few, "row 5 is past the pool's 5 rows");
    int S = ssmc_model_find(m, "S");
    ssmc_arg b[MAXT];
    int k = 0;
    for (int i = 0; i < n; i++)
        if (i != S) b[k++] = a[i];
    expect_refusal(m, ctx, SSMC_ERR_ARG, 4, b, k, &rows, "missing state 'S'");
    assert_int_equal(ssmc_decode_device(m, 4, 1, a, n, &rows, NULL), SSMC_ERR_UNSUPPORTED);
    assert_non_null(strstr(ssmc_ctx_error(ctx), "cuda"));
    release(&ts);
    ssmc_model_free(m);
    /* ttt_linear reads kn[t - j]: its window cannot carry over */
    m = compile(ctx, "examples/ttt_linear.ssm", NULL, 0, SSMC_DEVICE_CPU);
    fill(&ts, m, SSMC_F32, 4, 7, 1);
    n = args_of(&ts, false, a);
    expect_refusal(m, ctx, SSMC_ERR_UNSUPPORTED, 4, a, n, &rows, "ttt_linear.ssm:");
    release(&ts);
    ssmc_model_free(m);
    ssmc_ctx_free(ctx);
}

int main(void)
{
    if (!harness_cpu_available()) {
        printf("# skipped: this build has no CPU backend\n");
        return 77;
    }
    rng = harness_seed();
    printf("# SSMC_TEST_SEED=%" PRIu64 "\n", rng);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cpu_against_interp),
        cmocka_unit_test(test_batch_256),
        cmocka_unit_test(test_interp_definition),
        cmocka_unit_test(test_steps_make_a_run),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
