/* test_cpu_lang.c: the constructs of the language's version 2 on the CPU
 * backend against the f64 interpreter, one model each in tests/gpu/edge.ssm
 * (where the CUDA emulation and the GPU tests run them too): v2_ops (sin, cos,
 * erf, comparisons, select, index values, a window by name), v2_lag (lets read
 * at earlier steps: recomputed, kept in hidden states, lags that add up) and
 * v2_init (init statements for states in their tensor and through a copy).
 * At the file's dims and at odd dims cut into tiles (3 worker threads), T = 1,
 * 2 and 17, batch 1 and 3, from zero, random and absent initial states (the
 * inits give them; absent also with the final states asked for, through
 * SSMC_ARG_FINAL_ONLY on NaN-filled buffers), in f32 (at most 1e-5 relative)
 * and bf16 (1e-2). The
 * seed comes from the clock; SSMC_TEST_SEED=<n> repeats a run. Exits 77 (skipped)
 * without a CPU backend. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ssmc.h"
#include "tests/unit/helpers/cpu_harness.h"

#define THREADS 3

typedef struct lang_case {
    const char *model;
    ssmc_dim odd[2]; /* ends at a NULL name */
    int nodd;
} lang_case;

static const lang_case cases[] = {
    {"v2_ops", {{"N", 37}, {"W", 5}}, 2},
    {"v2_lag", {{"N", 19}, {"W", 4}}, 2},
    {"v2_init", {{"K", 7}}, 1},
};

static uint64_t seed0;

static void test_case(void **state)
{
    const lang_case *c = *state;
    const char *rel = "tests/gpu/edge.ssm";
    size_t len;
    char *src = harness_read_source(rel, &len);
    assert_non_null(src);
    uint64_t seed = seed0 + (uint64_t)(c - cases) * 1000;
    for (int si = 0; si < 2; si++) {
        const ssmc_dim *dims = si ? c->odd : NULL;
        int nd = si ? c->nodd : 0;
        ssmc_ctx *ctx = ssmc_ctx_new(), *rctx = ssmc_ctx_new();
        ssmc_model *cpu = NULL, *ref = NULL;
        if (harness_compile_model(ctx, rel, src, len, c->model, dims, nd, SSMC_DEVICE_CPU, THREADS, &cpu) != SSMC_OK)
            fail_msg("%s: cpu compile failed: %s", c->model, ssmc_ctx_error(ctx));
        if (harness_compile_model(rctx, rel, src, len, c->model, dims, nd, SSMC_DEVICE_INTERP, 0, &ref) != SSMC_OK)
            fail_msg("%s: interpreter compile failed: %s", c->model, ssmc_ctx_error(rctx));
        static const int64_t Ts[] = {1, 2, 17}, batches[] = {1, 3};
        static const ssmc_dtype dtypes[] = {SSMC_F32, SSMC_BF16};
        static const char *const modes[] = {"zero", "random", "no", "final-only"};
        for (int ti = 0; ti < 3; ti++)
            for (int bi = 0; bi < 2; bi++)
                for (int init = 0; init < 4; init++)
                    for (int di = 0; di < 2; di++) {
                        harness_run r = {.batch = batches[bi], .T = Ts[ti], .dtype = dtypes[di],
                                         .random_state = init == 1, .no_state = init == 2,
                                         .final_only = init == 3, .seed = seed++, .misalign = (init == 1) != bi};
                        harness_result res;
                        harness_compare(cpu, ref, &r, &res);
                        double tol = dtypes[di] == SSMC_F32 ? 1e-5 : 1e-2;
                        if (!res.ok)
                            fail_msg("%s (%s) T=%" PRId64 " batch %" PRId64 " %s state: %s [%s] (SSMC_TEST_SEED=%" PRIu64 ")",
                                     c->model, si ? "odd dims" : "defaults", r.T, r.batch, modes[init], res.why,
                                     ssmc_ctx_error(ctx), seed0);
                        if (!(res.worst <= tol) || res.checked < 1)
                            fail_msg("%s (%s) T=%" PRId64 " batch %" PRId64 " %s state, %s: '%s' rel error %.3e > %.0e "
                                     "(SSMC_TEST_SEED=%" PRIu64 ")",
                                     c->model, si ? "odd dims" : "defaults", r.T, r.batch, modes[init],
                                     di ? "bf16" : "f32", res.worst_name ? res.worst_name : "?", res.worst, tol, seed0);
                    }
        ssmc_model_free(cpu);
        ssmc_model_free(ref);
        ssmc_ctx_free(ctx);
        ssmc_ctx_free(rctx);
    }
    free(src);
}

/* The chunked algorithm with states given only for their final value: the
 * cores start from zero and write the final state (a model with an init is
 * not chunked: the recurrent algorithm runs its init). */
static void test_chunked_final_only(void **state)
{
    (void)state;
    const char *rel = "examples/linear_attn.ssm";
    size_t len;
    char *src = harness_read_source(rel, &len);
    assert_non_null(src);
    ssmc_ctx *ctx = ssmc_ctx_new();
    ssmc_options o = {.device = SSMC_DEVICE_CPU, .threads = THREADS, .algo = SSMC_ALGO_CHUNKED};
    ssmc_model *cpu = NULL, *ref = NULL;
    if (ssmc_compile(ctx, rel, src, len, &o, &cpu) != SSMC_OK) fail_msg("chunked compile: %s", ssmc_ctx_error(ctx));
    assert_int_equal(harness_compile(ctx, rel, src, len, NULL, 0, SSMC_DEVICE_INTERP, 0, &ref), SSMC_OK);
    for (int di = 0; di < 2; di++) {
        harness_run r = {.batch = 2, .T = 37, .dtype = di ? SSMC_BF16 : SSMC_F32, .final_only = true,
                         .seed = seed0 + 77 + (uint64_t)di};
        harness_result res;
        harness_compare(cpu, ref, &r, &res);
        double tol = di ? 1e-2 : 1e-5;
        if (!res.ok || !(res.worst <= tol) || res.checked < 3)
            fail_msg("chunked, final only, %s: %s '%s' %.3e (SSMC_TEST_SEED=%" PRIu64 ")", di ? "bf16" : "f32", res.why,
                     res.worst_name ? res.worst_name : "?", res.worst, seed0);
    }
    const char *ttt = "examples/ttt_linear.ssm";
    char *tsrc = harness_read_source(ttt, &len);
    ssmc_model *bad = NULL;
    assert_int_equal(ssmc_compile(ctx, ttt, tsrc, len, &o, &bad), SSMC_ERR_UNSUPPORTED);
    assert_non_null(strstr(ssmc_ctx_error(ctx), "the state has an init statement (not chunked yet)"));
    free(tsrc);
    ssmc_model_free(cpu);
    ssmc_model_free(ref);
    ssmc_ctx_free(ctx);
    free(src);
}

int main(void)
{
    if (!harness_cpu_available()) return 77;
    seed0 = harness_seed();
    printf("test_cpu_lang: SSMC_TEST_SEED=%" PRIu64 "\n", seed0);
    struct CMUnitTest tests[sizeof cases / sizeof *cases + 1];
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        tests[i] = (struct CMUnitTest){cases[i].model, test_case, NULL, NULL, (void *)&cases[i]};
    tests[sizeof cases / sizeof *cases] = (struct CMUnitTest)cmocka_unit_test(test_chunked_final_only);
    return cmocka_run_group_tests_name("cpu language v2", tests, NULL, NULL);
}
