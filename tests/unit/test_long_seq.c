/* test_long_seq.c: long sequences on the CPU backend against the f64
 * interpreter. A scalar-decay model (Mamba-2) and two diagonal-decay models
 * (Mamba, GLA), small dims, one sequence of T = 65,536 steps (T = 1,048,576
 * when SSMC_LONG=1) with gates drawn so that some channels keep a memory of
 * thousands of steps and others forget within a few: every output and the
 * final state must be finite and within 1e-4 relative (max |got - ref| over
 * max |ref|, per tensor) of the interpreter. Inputs are fresh random values
 * (SSMC_TEST_SEED reproduces a run); outputs are poisoned before the run.
 * Skips when the CPU backend is not in this build. docs/numerics.md says why
 * the recurrences cannot overflow here and what can. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ssmc.h"
#include "tests/unit/helpers/cpu_harness.h"

typedef struct long_case {
    const char *model;
    ssmc_dim dims[3];
    int ndims;
    harness_range ranges[4];
} long_case;

static int64_t seq_len(void)
{
    const char *l = getenv("SSMC_LONG");
    return l && strcmp(l, "1") == 0 ? 1048576 : 65536;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void run_case(const long_case *c)
{
    char rel[64];
    snprintf(rel, sizeof rel, "examples/%s.ssm", c->model);
    size_t len;
    char *src = harness_read_source(rel, &len);
    assert_non_null(src);
    ssmc_ctx *ctx = ssmc_ctx_new(), *rctx = ssmc_ctx_new();
    ssmc_model *cpu = NULL, *ref = NULL;
    ssmc_status s = harness_compile(ctx, rel, src, len, c->dims, c->ndims, SSMC_DEVICE_CPU, 0, &cpu);
    if (s == SSMC_ERR_UNSUPPORTED) {
        print_message("the cpu backend is not in this build: %s\n", ssmc_ctx_error(ctx));
        ssmc_ctx_free(ctx);
        ssmc_ctx_free(rctx);
        free(src);
        skip();
    }
    if (s != SSMC_OK) fail_msg("cpu compile of %s: %s", c->model, ssmc_ctx_error(ctx));
    if (harness_compile(rctx, rel, src, len, c->dims, c->ndims, SSMC_DEVICE_INTERP, 0, &ref) != SSMC_OK)
        fail_msg("interpreter compile of %s: %s", c->model, ssmc_ctx_error(rctx));
    uint64_t seed = harness_seed();
    harness_run r = {.batch = 1, .T = seq_len(), .dtype = SSMC_F32, .ranges = c->ranges, .seed = seed};
    harness_result res;
    double t0 = now_s();
    harness_compare(cpu, ref, &r, &res);
    double dt = now_s() - t0;
    print_message("  %s T=%" PRId64 ": worst rel error %.3e in '%s' over %d tensors (%.1f s with the interpreter)\n",
                  c->model, r.T, res.worst, res.worst_name ? res.worst_name : "?", res.checked, dt);
    if (!res.ok) fail_msg("%s: %s (%s; SSMC_TEST_SEED=%" PRIu64 ")", c->model, res.why, ssmc_ctx_error(ctx), seed);
    assert_int_equal(res.checked, 2); /* the output and the final state */
    if (!(res.worst <= 1e-4))
        fail_msg("%s: '%s' is %.3e from the interpreter (SSMC_TEST_SEED=%" PRIu64 ")", c->model, res.worst_name,
                 res.worst, seed);
    ssmc_model_free(cpu);
    ssmc_model_free(ref);
    ssmc_ctx_free(ctx);
    ssmc_ctx_free(rctx);
    free(src);
}

/* scalar decay per head: exp(softplus(dt + dt_bias) * -exp(A_log)), from
 * about 0.9999 (dt = -7, A_log = -2) to about 0.06 (dt = 1, A_log = 1) */
static void test_mamba2_long(void **state)
{
    (void)state;
    long_case c = {"mamba2", {{"H", 2}, {"P", 4}, {"N", 8}}, 3, {{"dt", -7, 1}, {"A_log", -2, 1}, {"dt_bias", -1, 0}, {0}}};
    run_case(&c);
}

/* diagonal decay per (channel, state): the same range as Mamba-2 */
static void test_mamba_long(void **state)
{
    (void)state;
    long_case c = {"mamba", {{"E", 4}, {"N", 8}}, 2, {{"dt", -7, 1}, {"A_log", -2, 1}, {"dt_bias", -1, 0}, {0}}};
    run_case(&c);
}

/* diagonal decay per key: exp(-softplus(-gk) / 16), from about 0.9997 to 0.78 */
static void test_gla_long(void **state)
{
    (void)state;
    long_case c = {"gla", {{"H", 2}, {"K", 4}, {"V", 4}}, 3, {{"gk", -4, 8}, {0}}};
    run_case(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mamba2_long),
        cmocka_unit_test(test_mamba_long),
        cmocka_unit_test(test_gla_long),
    };
    return cmocka_run_group_tests_name("long sequences", tests, NULL, NULL);
}
