/* test_threads.c: two different models compiled and run at the same time from
 * two threads of one process, each thread with its own context, on the
 * interpreter and on the CPU backend (test_cpu_threads.c compares concurrent
 * CPU runs with the interpreter; this test needs no LLVM for its interpreter
 * half and asks for more: identical bits). First each model runs once on the
 * main thread alone; then thread A (mamba2) and thread B (gated_deltanet)
 * each compile their own model, wait for each other, and run it 20 times on
 * the same inputs, outputs poisoned before every run. Every output and final
 * state must equal the single-threaded run bit for bit: the library keeps no
 * mutable global state for two compiles or two runs to trample. The CPU half
 * skips when the CPU backend is not in this build. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ssmc.h"
#include "tests/unit/helpers/cpu_harness.h"

#define RUNS 20
#define BATCH 2
#define SEQ 33

typedef struct job {
    const char *model;
    ssmc_dim dims[3];
    ssmc_device device;
    pthread_barrier_t *start;
    /* the single-threaded results: per tensor, f32 */
    int n;
    ssmc_tensor_info info[16];
    char names[16][32]; /* info[].name points into a model: copied to outlive it */
    size_t count[16];
    float *want[16];
    /* set by the worker */
    char why[512];
    bool failed, unsupported;
} job;

static char *source_of(const job *j, size_t *len)
{
    char rel[64];
    snprintf(rel, sizeof rel, "examples/%s.ssm", j->model);
    return harness_read_source(rel, len);
}

/* Runs m once on inputs from a fixed seed into fresh buffers; outputs and
 * final states land in got[] (malloc'd, count[] elements). */
static bool run_once(job *j, ssmc_model *m, float **got, ssmc_ctx *ctx)
{
    uint64_t s = 0x5eed;
    ssmc_arg args[16];
    float *in[16] = {0};
    bool ok = true;
    for (int i = 0; i < j->n; i++) {
        in[i] = malloc(j->count[i] * sizeof(float));
        if (!in[i]) return false;
        for (size_t k = 0; k < j->count[i]; k++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            double u = (double)(s >> 11) * 0x1.0p-53 * 2 - 1;
            in[i][k] = j->info[i].role == SSMC_OUTPUT ? NAN : (float)u;
        }
        args[i] = (ssmc_arg){j->info[i].name, SSMC_F32, in[i], 0};
    }
    if (ssmc_run(m, BATCH, SEQ, args, j->n) != SSMC_OK) {
        snprintf(j->why, sizeof j->why, "run: %s", ssmc_ctx_error(ctx));
        ok = false;
    }
    for (int i = 0; i < j->n; i++) {
        if (ok && (j->info[i].role == SSMC_OUTPUT || j->info[i].role == SSMC_STATE))
            got[i] = in[i];
        else
            free(in[i]);
    }
    return ok;
}

static ssmc_status compile(job *j, ssmc_ctx *ctx, ssmc_model **m)
{
    size_t len;
    char *src = source_of(j, &len);
    if (!src) return SSMC_ERR_IO;
    ssmc_status s = harness_compile(ctx, j->model, src, len, j->dims, 3, j->device, 2, m);
    free(src);
    return s;
}

static void *work(void *arg)
{
    job *j = arg;
    ssmc_ctx *ctx = ssmc_ctx_new();
    ssmc_model *m = NULL;
    ssmc_status s = compile(j, ctx, &m); /* both threads compile at once */
    pthread_barrier_wait(j->start);
    if (s != SSMC_OK) {
        j->failed = true;
        snprintf(j->why, sizeof j->why, "compile: %s", ssmc_ctx_error(ctx));
    }
    for (int r = 0; !j->failed && r < RUNS; r++) {
        float *got[16] = {0};
        if (!run_once(j, m, got, ctx)) {
            j->failed = true;
            break;
        }
        for (int i = 0; i < j->n; i++) {
            if (!got[i]) continue;
            if (!j->failed && memcmp(got[i], j->want[i], j->count[i] * sizeof(float)) != 0) {
                j->failed = true;
                snprintf(j->why, sizeof j->why, "run %d: '%s' differs from the single-threaded run", r,
                         j->info[i].name);
            }
            free(got[i]);
        }
    }
    ssmc_model_free(m);
    ssmc_ctx_free(ctx);
    return NULL;
}

/* The single-threaded reference of j, on the calling thread. */
static void prepare(job *j)
{
    ssmc_ctx *ctx = ssmc_ctx_new();
    ssmc_model *m = NULL;
    ssmc_status s = compile(j, ctx, &m);
    if (s == SSMC_ERR_UNSUPPORTED) {
        j->unsupported = true;
        ssmc_ctx_free(ctx);
        return;
    }
    if (s != SSMC_OK) fail_msg("%s: %s", j->model, ssmc_ctx_error(ctx));
    j->n = ssmc_model_num_tensors(m);
    assert_true(j->n <= 16);
    for (int i = 0; i < j->n; i++) {
        ssmc_model_tensor(m, i, &j->info[i]);
        snprintf(j->names[i], sizeof j->names[i], "%s", j->info[i].name);
        j->info[i].name = j->names[i];
        size_t c = j->info[i].role == SSMC_PARAM ? 1 : BATCH * (j->info[i].per_step ? SEQ : 1);
        for (int k = 0; k < j->info[i].rank; k++) c *= (size_t)j->info[i].shape[k];
        j->count[i] = c;
    }
    if (!run_once(j, m, j->want, ctx)) fail_msg("%s: %s", j->model, j->why);
    int checked = 0;
    for (int i = 0; i < j->n; i++) {
        if (!j->want[i]) continue;
        checked++;
        double amax = 0;
        for (size_t k = 0; k < j->count[i]; k++) {
            if (!isfinite(j->want[i][k])) fail_msg("%s: '%s' is not finite", j->model, j->info[i].name);
            amax = fmax(amax, fabs(j->want[i][k]));
        }
        if (!(amax > 0)) fail_msg("%s: '%s' is all zeros", j->model, j->info[i].name);
    }
    assert_int_equal(checked, 2);
    ssmc_model_free(m);
    ssmc_ctx_free(ctx);
}

static void two_threads(ssmc_device device)
{
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, 2);
    job jobs[2] = {
        {.model = "mamba2", .dims = {{"H", 3}, {"P", 8}, {"N", 16}}, .device = device, .start = &start},
        {.model = "gated_deltanet", .dims = {{"H", 2}, {"K", 8}, {"V", 12}}, .device = device, .start = &start},
    };
    prepare(&jobs[0]);
    prepare(&jobs[1]);
    if (jobs[0].unsupported || jobs[1].unsupported) {
        pthread_barrier_destroy(&start);
        print_message("the cpu backend is not in this build\n");
        skip();
    }
    pthread_t tid;
    assert_int_equal(pthread_create(&tid, NULL, work, &jobs[1]), 0);
    work(&jobs[0]);
    pthread_join(tid, NULL);
    pthread_barrier_destroy(&start);
    for (int i = 0; i < 2; i++)
        for (int k = 0; k < jobs[i].n; k++) free(jobs[i].want[k]);
    for (int i = 0; i < 2; i++)
        if (jobs[i].failed) fail_msg("%s: %s", jobs[i].model, jobs[i].why);
}

static void test_interp_two_threads(void **state)
{
    (void)state;
    two_threads(SSMC_DEVICE_INTERP);
}

static void test_cpu_two_threads(void **state)
{
    (void)state;
    two_threads(SSMC_DEVICE_CPU);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_interp_two_threads),
        cmocka_unit_test(test_cpu_two_threads),
    };
    return cmocka_run_group_tests_name("threads", tests, NULL, NULL);
}
