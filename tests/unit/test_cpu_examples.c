/* test_cpu_examples.c: every example of the zoo (each .ssm file of examples/) on the CPU
 * backend against the f64 interpreter.
 *
 * For each model, at three sizes (the file's defaults; small odd dims, e.g.
 * H=3, P=5, N=7; larger odd dims, e.g. mamba2's P=37 cut into items of 13, 13
 * and 11 values, mamba's E=37 into tiles of 5 and a last one of 2, GLA's
 * V=37 as one inner loop that no vector width divides): T = 1 and T = 33,
 * batch 1 and 3, from a zero and from a random initial state and with no
 * initial state given at all (a model's init then gives it), in f32 (relative
 * error at most 1e-5: max |got - ref| / max |ref|) and with bf16 tensors (at
 * most 1e-2). Every output and every final state is checked; outputs are
 * poisoned with NaN first; inputs are fresh random values in ranges where the
 * gates stay meaningful. Half the runs hand over buffers 8 bytes off a 64-byte
 * boundary (the backend then works on aligned copies of states and outputs),
 * half aligned ones. Compiled with 3 worker threads, so the pool splits
 * items unevenly. Exits 77 (skipped) when this build has no CPU backend.
 *
 * The seed comes from the clock; SSMC_TEST_SEED=<n> repeats a run. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ssmc.h"
#include "tests/unit/helpers/cpu_harness.h"

#define MAX_DIMS 4
#define MAX_RANGES 6
#define THREADS 3

typedef struct example {
    const char *model;
    ssmc_dim small[MAX_DIMS]; /* ends at a NULL name */
    ssmc_dim tiled[MAX_DIMS];
    harness_range ranges[MAX_RANGES];
} example;

static const example examples[] = {
    {"mamba2", {{"H", 3}, {"P", 5}, {"N", 7}}, {{"H", 3}, {"P", 37}, {"N", 19}},
     {{"dt", -3, 1}, {"A_log", -1, 1.5}}},
    /* H = G * R must hold: only P, N and W change */
    {"mamba2_conv", {{"P", 5}, {"N", 7}, {"W", 3}}, {{"P", 37}, {"N", 19}, {"W", 5}},
     {{"dt", -3, 1}, {"A_log", -1, 1.5}}},
    {"mamba", {{"E", 5}, {"N", 3}}, {{"E", 37}, {"N", 19}}, {{"dt", -3, 1}, {"A_log", -1, 1.5}}},
    {"gla", {{"H", 3}, {"K", 5}, {"V", 7}}, {{"H", 3}, {"K", 19}, {"V", 37}}, {{"gk", -4, 4}}},
    {"deltanet", {{"H", 3}, {"K", 5}, {"V", 7}}, {{"H", 3}, {"K", 19}, {"V", 37}}, {{"b", -3, 3}}},
    {"gated_deltanet", {{"H", 3}, {"K", 5}, {"V", 7}}, {{"H", 3}, {"K", 19}, {"V", 37}},
     {{"a", -3, 3}, {"b", -3, 3}, {"A_log", -1, 1.5}}},
    {"rwkv6", {{"H", 3}, {"K", 5}, {"V", 7}}, {{"H", 3}, {"K", 19}, {"V", 37}}, {{"wlog", -3, 1.5}}},
    /* z > 0 keeps the normaliser away from 0 */
    {"linear_attn", {{"H", 3}, {"K", 5}, {"V", 7}}, {{"H", 3}, {"K", 19}, {"V", 37}},
     {{"q", -2, 2}, {"k", -2, 2}, {"z", 0.1, 1}}},
    {"retnet", {{"H", 3}, {"K", 5}, {"V", 7}}, {{"H", 3}, {"K", 19}, {"V", 37}}, {{"scale", 0, 3}}},
    {"lstm", {{"G", 4}, {"E", 5}, {"H", 3}}, {{"G", 4}, {"E", 19}, {"H", 37}}, {{"W", -0.7, 0.7}, {"U", -0.7, 0.7}}},
    /* R = 2: the pairs' two halves */
    {"mamba3", {{"H", 3}, {"P", 5}, {"N", 7}}, {{"H", 3}, {"P", 37}, {"N", 19}},
     {{"dt", -3, 1}, {"A_log", -1, 1.5}, {"theta", -3, 3}}},
    /* TOPK = 2 of M */
    {"mom", {{"M", 5}, {"E", 3}, {"K", 5}, {"V", 7}}, {{"M", 3}, {"E", 5}, {"K", 19}, {"V", 37}}, {{"Wr", -1, 1}}},
    {"ttt_linear", {{"H", 3}, {"K", 5}, {"V", 7}, {"L", 2}}, {{"H", 3}, {"K", 19}, {"V", 37}, {"L", 4}},
     {{"base_lr", 0, 1}}},
    /* the models under ssmc.ops (python/ssmc/ops.py): fla's and mamba_ssm's semantics, log-space gates */
    {"fla_linear_attn", {{"H", 3}, {"K", 5}, {"V", 7}}, {{"H", 3}, {"K", 19}, {"V", 37}}, {{"scale", 0.2, 0.5}}},
    {"fla_retention", {{"H", 3}, {"K", 5}, {"V", 7}}, {{"H", 3}, {"K", 19}, {"V", 37}},
     {{"g_gamma", -0.5, -0.01}, {"scale", 0.2, 0.5}}},
    {"fla_simple_gla", {{"H", 3}, {"K", 5}, {"V", 7}}, {{"H", 3}, {"K", 19}, {"V", 37}}, {{"g", -1, 0}}},
    {"fla_gla", {{"H", 3}, {"K", 5}, {"V", 7}}, {{"H", 3}, {"K", 19}, {"V", 37}}, {{"g", -1, 0}}},
    {"fla_gla_kv", {{"H", 3}, {"K", 5}, {"V", 7}}, {{"H", 3}, {"K", 19}, {"V", 37}}, {{"gk", -1, 0}, {"gv", -1, 0}}},
    /* |k|^2 <= 1 and beta in (0, 1): the delta rule's transition is a contraction */
    {"fla_delta_rule", {{"H", 3}, {"K", 5}, {"V", 7}}, {{"H", 3}, {"K", 19}, {"V", 37}},
     {{"k", -0.22, 0.22}, {"beta", 0, 1}}},
    {"fla_gated_delta_rule", {{"K", 5}, {"V", 7}}, {{"K", 19}, {"V", 37}},
     {{"k", -0.22, 0.22}, {"beta", 0, 1}, {"g", -1, 0}}},
    {"mamba2_ssd", {{"P", 5}, {"N", 7}}, {{"P", 37}, {"N", 19}}, {{"dt", 0, 1}, {"A", -1.5, 0}}},
    {"mamba2_ssd_z", {{"P", 5}, {"N", 7}}, {{"P", 37}, {"N", 19}}, {{"dt", 0, 1}, {"A", -1.5, 0}}},
    {"mamba_ssu", {{"P", 5}, {"N", 7}}, {{"P", 37}, {"N", 19}}, {{"dt", 0, 1}, {"A", -1.5, 0}}},
    {"mamba_ssu_z", {{"P", 5}, {"N", 7}}, {{"P", 37}, {"N", 19}}, {{"dt", 0, 1}, {"A", -1.5, 0}}},
};
#define NEXAMPLES (sizeof examples / sizeof *examples)

static int ndims_of(const ssmc_dim *d)
{
    int n = 0;
    while (n < MAX_DIMS && d[n].name) n++;
    return n;
}

static uint64_t seed0;

static void check_example(const example *e)
{
    char rel[128];
    snprintf(rel, sizeof rel, "examples/%s.ssm", e->model);
    size_t len;
    char *src = harness_read_source(rel, &len);
    assert_non_null(src);
    const ssmc_dim *sizes[3] = {NULL, e->small, e->tiled};
    static const char *size_names[3] = {"defaults", "small odd dims", "tiled odd dims"};
    uint64_t seed = seed0 + (uint64_t)(e - examples) * 1000;
    for (int si = 0; si < 3; si++) {
        int nd = sizes[si] ? ndims_of(sizes[si]) : 0;
        ssmc_ctx *ctx = ssmc_ctx_new();
        ssmc_model *cpu = NULL, *ref = NULL;
        ssmc_status s = harness_compile(ctx, rel, src, len, sizes[si], nd, SSMC_DEVICE_CPU, THREADS, &cpu);
        if (s == SSMC_ERR_UNSUPPORTED) {
            ssmc_ctx_free(ctx);
            free(src);
            skip();
        }
        if (s != SSMC_OK) fail_msg("%s (%s): cpu compile failed: %s", e->model, size_names[si], ssmc_ctx_error(ctx));
        ssmc_ctx *rctx = ssmc_ctx_new();
        s = harness_compile(rctx, rel, src, len, sizes[si], nd, SSMC_DEVICE_INTERP, 0, &ref);
        if (s != SSMC_OK) fail_msg("%s: interpreter compile failed: %s", e->model, ssmc_ctx_error(rctx));
        static const int64_t Ts[] = {1, 33}, batches[] = {1, 3};
        static const ssmc_dtype dtypes[] = {SSMC_F32, SSMC_BF16};
        for (int ti = 0; ti < 2; ti++)
            for (int bi = 0; bi < 2; bi++)
                for (int init = 0; init < 3; init++)
                    for (int di = 0; di < 2; di++) {
                        harness_run r = {.batch = batches[bi], .T = Ts[ti], .dtype = dtypes[di],
                                         .random_state = init == 1, .no_state = init == 2, .ranges = e->ranges,
                                         .seed = seed++, .misalign = (init == 1) != bi};
                        harness_result res;
                        harness_compare(cpu, ref, &r, &res);
                        double tol = dtypes[di] == SSMC_F32 ? 1e-5 : 1e-2;
                        const char *what = dtypes[di] == SSMC_F32 ? "f32" : "bf16";
                        if (!res.ok)
                            fail_msg("%s (%s) T=%" PRId64 " batch %" PRId64 " %s state, %s: %s [%s] "
                                     "(SSMC_TEST_SEED=%" PRIu64 ")",
                                     e->model, size_names[si], r.T, r.batch, init == 2 ? "no" : init ? "random" : "zero", what, res.why,
                                     ssmc_ctx_error(ctx), seed0);
                        if (!(res.worst <= tol) || res.checked < (init == 2 ? 1 : 2))
                            fail_msg("%s (%s) T=%" PRId64 " batch %" PRId64 " %s state, %s: '%s' rel error %.3e "
                                     "> %.0e (%d checked; SSMC_TEST_SEED=%" PRIu64 ")",
                                     e->model, size_names[si], r.T, r.batch, init == 2 ? "no" : init ? "random" : "zero", what,
                                     res.worst_name ? res.worst_name : "?", res.worst, tol, res.checked, seed0);
                    }
        ssmc_model_free(cpu);
        ssmc_model_free(ref);
        ssmc_ctx_free(ctx);
        ssmc_ctx_free(rctx);
    }
    free(src);
}

static void test_example(void **state) { check_example(*state); }

/* A model added to examples/ without a line above would go untested. */
static void test_every_example_listed(void **state)
{
    (void)state;
    const char *root = getenv("SSMC_SOURCE_DIR");
    char path[4096];
    snprintf(path, sizeof path, "%s/examples", root ? root : ".");
    DIR *dir = opendir(path);
    assert_non_null(dir);
    int found = 0;
    for (struct dirent *de; (de = readdir(dir));) {
        size_t n = strlen(de->d_name);
        if (n < 5 || strcmp(de->d_name + n - 4, ".ssm") != 0) continue;
        bool listed = false;
        for (size_t i = 0; i < NEXAMPLES; i++)
            listed |= strlen(examples[i].model) == n - 4 && strncmp(examples[i].model, de->d_name, n - 4) == 0;
        if (!listed) fail_msg("examples/%s has no entry in test_cpu_examples.c", de->d_name);
        found++;
    }
    closedir(dir);
    assert_int_equal(found, (int)NEXAMPLES);
}

int main(void)
{
    if (!harness_cpu_available()) return 77; /* no LLVM in this build: skipped */
    seed0 = harness_seed();
    printf("test_cpu_examples: SSMC_TEST_SEED=%" PRIu64 "\n", seed0);
    struct CMUnitTest tests[NEXAMPLES + 1];
    tests[0] = (struct CMUnitTest)cmocka_unit_test(test_every_example_listed);
    for (size_t i = 0; i < NEXAMPLES; i++)
        tests[i + 1] = (struct CMUnitTest){examples[i].model, test_example, NULL, NULL, (void *)&examples[i]};
    return cmocka_run_group_tests_name("cpu examples", tests, NULL, NULL);
}
