/* test_cuda_emu_grad.c: gradients on the CUDA backend without a GPU. The
 * real backend (codegen/cuda_backend.c, runtime/cuda_driver.c) and the
 * gradient driver (driver/grad.c) run on an emulated driver and NVRTC
 * (tests/unit/helpers/emu_driver.h: kernels rendered by codegen/cuda.c,
 * compiled as C++ against tests/gpu/emu/cuda_emu.h, run over their real grid
 * and block on CPU threads; device memory is host memory, NaN when
 * allocated), against the interpreter (tests/unit/helpers/grad_cases.h): for
 * every example and every model of tests/gpu/edge.ssm, the training forward
 * and the backward on device pointers (ssmc_forward_train_device,
 * ssmc_backward_device: the adjoint's reverse kernels, the trace, the
 * checkpoints, 2D slice copies, conversions and the params' batch sums on the
 * device), from states and from init statements, f32 and bf16, and the host
 * API on the cuda device; `ssmc run --device cuda --grad --verify`. Cases run
 * in child processes, one per core (each compiles its kernels); skip()
 * without a C++ compiler. test_gpu_grad runs the same cases on a GPU. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers/emu_driver.h"
#include "helpers/grad_cases.h"

static bool have_emu;
static char workdir[64];

static void test_examples(void **state)
{
    (void)state;
    if (!have_emu) skip();
    gcase cases[128];
    grad_run_cases(cases, grad_example_cases(cases, 128), true);
}

static void test_edge_models(void **state)
{
    (void)state;
    if (!have_emu) skip();
    gcase cases[32];
    grad_run_cases(cases, grad_edge_cases(cases, 32), true);
}

/* The chunked algorithm's gradients on the cuda device (driver/grad_chunked.c
 * with the cuda core backward, codegen/cuda_chunk_bwd.c) against the
 * interpreter's, at bf16's tolerance. */
static void test_chunked(void **state)
{
    (void)state;
    if (!have_emu) skip();
    gcase cases[12];
    grad_run_cases(cases, grad_chunked_cases(cases, 12), true);
}

/* The CLI's gradients on the cuda device, checked against the interpreter's
 * by the CLI itself (f32 and bf16 tensors). */
static void test_cli_grad_verify(void **state)
{
    (void)state;
    if (!have_emu) skip();
    const char *cli = getenv("SSMC_CLI"), *root = getenv("SSMC_SOURCE_DIR");
    if (!cli || !root) skip();
    static const char *const dtypes[] = {"f32", "bf16"};
    for (int i = 0; i < 2; i++) {
        char cmd[2048];
        snprintf(cmd, sizeof cmd,
                 "%s run %s/examples/gated_deltanet.ssm --device cuda --grad --verify -D H=2 -D K=3 -D V=2 --batch 2 "
                 "--seqlen 9 --dtype %s > %s/cli.out 2>&1",
                 cli, root, dtypes[i], workdir);
        int rc = system(cmd);
        snprintf(cmd, sizeof cmd, "%s/cli.out", workdir);
        FILE *f = fopen(cmd, "r");
        char text[16384] = "";
        size_t n = f ? fread(text, 1, sizeof text - 1, f) : 0;
        text[n] = 0;
        if (f) fclose(f);
        if (rc != 0 || !strstr(text, "verify grad") || strstr(text, "FAIL"))
            fail_msg("ssmc run --device cuda --grad --verify --dtype %s (exit %d):\n%s", dtypes[i], rc, text);
    }
}

/* The helper kernels (conversions, batch sums) into the kernel cache before
 * the cases fork, so that they are compiled once: a training step of a model
 * with a param and a state, in bf16. */
static void warm_helpers(void)
{
    gcase c = {.file = "tests/gpu/edge.ssm", .model = "v2_lag", .B = 2, .T = 3, .C = 2, .dt = SSMC_BF16, .states = true};
    char msg[2048] = "";
    if (!grad_case(&c, msg, sizeof msg)) fail_msg("%s", msg);
}

static int setup(void **state)
{
    (void)state;
    strcpy(workdir, "/tmp/ssmc-emugrad-XXXXXX");
    if (!mkdtemp(workdir)) return -1;
    have_emu = emu_driver_setup(workdir);
    if (have_emu) warm_helpers();
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", workdir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_examples),
        cmocka_unit_test(test_edge_models),
        cmocka_unit_test(test_chunked),
        cmocka_unit_test(test_cli_grad_verify),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
