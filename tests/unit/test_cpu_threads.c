/* test_cpu_threads.c: two models compiled and run at the same time from two
 * threads, each with its own context (the library keeps no global state: every
 * compile has its own LLVM context, target machine, JIT and thread pool).
 * Thread A builds mamba2, thread B gla, both with a pool of 2 workers; each
 * compiles while the other does, then runs 12 times on fresh random data
 * against the interpreter (relative error at most 1e-5), so that compiles,
 * JIT lookups and pool runs of the two overlap. Results are collected and
 * asserted on the main thread. Exits 77 without a CPU backend. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ssmc.h"
#include "tests/unit/helpers/cpu_harness.h"

#define RUNS 12

typedef struct worker {
    const char *model;
    ssmc_dim dims[3];
    harness_range ranges[3];
    uint64_t seed;
    pthread_barrier_t *start;
    /* results */
    ssmc_status compile_status;
    bool failed;
    char why[640];
    double worst;
} worker;

static void *work(void *arg)
{
    worker *w = arg;
    char rel[64];
    snprintf(rel, sizeof rel, "examples/%s.ssm", w->model);
    size_t len;
    char *src = harness_read_source(rel, &len);
    pthread_barrier_wait(w->start); /* both threads compile at once */
    if (!src) {
        w->failed = true;
        snprintf(w->why, sizeof w->why, "cannot read %s", rel);
        return NULL;
    }
    ssmc_ctx *ctx = ssmc_ctx_new(), *rctx = ssmc_ctx_new();
    ssmc_model *cpu = NULL, *ref = NULL;
    w->compile_status = harness_compile(ctx, rel, src, len, w->dims, 3, SSMC_DEVICE_CPU, 2, &cpu);
    if (w->compile_status == SSMC_OK &&
        harness_compile(rctx, rel, src, len, w->dims, 3, SSMC_DEVICE_INTERP, 0, &ref) != SSMC_OK) {
        w->failed = true;
        snprintf(w->why, sizeof w->why, "interpreter compile: %s", ssmc_ctx_error(rctx));
    } else if (w->compile_status != SSMC_OK && w->compile_status != SSMC_ERR_UNSUPPORTED) {
        w->failed = true;
        snprintf(w->why, sizeof w->why, "cpu compile: %s", ssmc_ctx_error(ctx));
    }
    for (int i = 0; !w->failed && w->compile_status == SSMC_OK && i < RUNS; i++) {
        harness_run r = {.batch = 1 + i % 3, .T = 9 + i, .dtype = SSMC_F32, .random_state = i % 2,
                         .ranges = w->ranges, .seed = w->seed + (uint64_t)i};
        harness_result res;
        harness_compare(cpu, ref, &r, &res);
        if (!res.ok || !(res.worst <= 1e-5)) {
            w->failed = true;
            snprintf(w->why, sizeof w->why, "run %d: %s (worst %.3e in '%s'; %s)", i, res.ok ? "too far" : res.why,
                     res.worst, res.worst_name ? res.worst_name : "?", ssmc_ctx_error(ctx));
        }
        if (res.worst > w->worst) w->worst = res.worst;
    }
    ssmc_model_free(cpu);
    ssmc_model_free(ref);
    ssmc_ctx_free(ctx);
    ssmc_ctx_free(rctx);
    free(src);
    return NULL;
}

static void test_two_models_two_threads(void **state)
{
    (void)state;
    uint64_t seed = harness_seed();
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, 2);
    worker w[2] = {
        {"mamba2", {{"H", 3}, {"P", 37}, {"N", 19}}, {{"dt", -3, 1}, {"A_log", -1, 1.5}}, seed, &start, 0, 0, "", 0},
        {"gla", {{"H", 2}, {"K", 19}, {"V", 37}}, {{"gk", -4, 4}}, seed + 100, &start, 0, 0, "", 0},
    };
    pthread_t tid;
    assert_int_equal(pthread_create(&tid, NULL, work, &w[1]), 0);
    work(&w[0]);
    pthread_join(tid, NULL);
    pthread_barrier_destroy(&start);
    if (w[0].compile_status == SSMC_ERR_UNSUPPORTED) skip();
    for (int i = 0; i < 2; i++) {
        if (w[i].failed) fail_msg("%s: %s (SSMC_TEST_SEED=%" PRIu64 ")", w[i].model, w[i].why, seed);
        assert_int_equal(w[i].compile_status, SSMC_OK);
        printf("  %s: %d runs, worst rel error %.3e\n", w[i].model, RUNS, w[i].worst);
    }
}

int main(void)
{
    if (!harness_cpu_available()) return 77; /* no LLVM in this build: skipped */
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_two_models_two_threads)};
    return cmocka_run_group_tests_name("cpu threads", tests, NULL, NULL);
}
