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
#include "helpers/files.h"
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
 * interpreter's, at bf16's tolerance: every chunkable example through the
 * host API and through the device entry points (device pointers from the
 * emulated driver: the tape, the work and the segments' slices on the
 * device), and on the device with several sequences, T not a multiple of
 * the chunk and several segments, from zero and in bf16. */
static void test_chunked(void **state)
{
    (void)state;
    if (!have_emu) skip();
    gcase cases[24];
    grad_run_cases(cases, grad_chunked_cases(cases, 24), true);
}

/* A chunked model's tape serves the backward of the memory it was made on:
 * one of ssmc_forward_train (host) is refused by ssmc_backward_device and
 * one of ssmc_forward_train_device (device pointers: the emulator's device
 * memory is host memory) by ssmc_backward, each with a message that says
 * which to use; both hold what ssmc_grad_info_of says. And the tolerance
 * --verify holds the chunked model to: its cores' bf16 operands. */
static void test_chunked_tapes(void **state)
{
    (void)state;
    if (!have_emu) skip();
    size_t len;
    char *src = test_slurp("examples/fla_simple_gla.ssm", &len);
    ssmc_dim dims[3] = {{"H", 2}, {"K", 8}, {"V", 6}};
    ssmc_ctx *ctx = ssmc_ctx_new();
    ssmc_options o = {.device = SSMC_DEVICE_CUDA, .algo = SSMC_ALGO_CHUNKED, .chunk = 16, .dims = dims, .ndims = 3};
    ssmc_model *m = NULL;
    if (ssmc_compile(ctx, "fla_simple_gla.ssm", src, len, &o, &m) != SSMC_OK) fail_msg("%s", ssmc_ctx_error(ctx));
    enum { B = 2, T = 20 };
    int n = ssmc_model_num_tensors(m);
    ssmc_arg args[16];
    float *bufs[16];
    assert_true(n <= 16);
    for (int i = 0; i < n; i++) {
        ssmc_tensor_info ti;
        ssmc_model_tensor(m, i, &ti);
        size_t k = ti.role == SSMC_PARAM ? 1 : (size_t)B * (ti.per_step ? T : 1);
        for (int j = 0; j < ti.rank; j++) k *= (size_t)ti.shape[j];
        bufs[i] = aligned_alloc(256, (k * sizeof(float) + 255) / 256 * 256);
        for (size_t e = 0; e < k; e++) bufs[i][e] = 0.125f * (float)(e % 7) - 0.375f;
        args[i] = (ssmc_arg){ti.name, SSMC_F32, bufs[i], 0};
    }
    ssmc_grad_info info;
    assert_int_equal(ssmc_grad_info_of(m, T, &info), SSMC_OK);
    ssmc_tape *host = NULL, *dev = NULL;
    if (ssmc_forward_train(m, B, T, args, n, &host) != SSMC_OK) fail_msg("%s", ssmc_ctx_error(ctx));
    if (ssmc_forward_train_device(m, B, T, args, n, &dev, NULL) != SSMC_OK) fail_msg("%s", ssmc_ctx_error(ctx));
    assert_int_equal(ssmc_tape_bytes(host), B * info.tape_bytes);
    assert_int_equal(ssmc_tape_bytes(dev), B * info.tape_bytes);
    assert_int_equal(ssmc_backward_device(m, host, NULL, 0, NULL, 0, NULL, 0, NULL), SSMC_ERR_ARG);
    if (!strstr(ssmc_ctx_error(ctx), "ssmc_backward_device: the tape was made by ssmc_forward_train, whose "
                                     "checkpoints are on the host: use ssmc_backward"))
        fail_msg("host tape: %s", ssmc_ctx_error(ctx));
    assert_int_equal(ssmc_backward(m, dev, NULL, 0, NULL, 0, NULL, 0), SSMC_ERR_ARG);
    if (!strstr(ssmc_ctx_error(ctx), "ssmc_backward: the tape was made by ssmc_forward_train_device, whose "
                                     "checkpoints are on the device: use ssmc_backward_device"))
        fail_msg("device tape: %s", ssmc_ctx_error(ctx));
    ssmc_tape_free(host);
    ssmc_tape_free(dev);
    for (int i = 0; i < n; i++) free(bufs[i]);
    /* --verify holds a chunked CUDA run to its cores' bf16 operands, whatever the
     * tensors' dtype; the recurrent one to f32 rounding */
    ssmc_model *r = NULL;
    o.algo = SSMC_ALGO_RECURRENT;
    if (ssmc_compile(ctx, "fla_simple_gla.ssm", src, len, &o, &r) != SSMC_OK) fail_msg("%s", ssmc_ctx_error(ctx));
    int y = ssmc_model_find(m, "o");
    assert_true(y >= 0 && ssmc_model_find(r, "o") == y);
    assert_true(ssmc_model_tolerance(m, y, SSMC_F32, T) >= 2e-2);
    assert_true(ssmc_model_tolerance(m, y, SSMC_BF16, T) >= 2e-2);
    assert_true(ssmc_model_tolerance(r, y, SSMC_F32, T) < 1e-3);
    assert_int_equal(ssmc_model_arith_dtype(m, SSMC_F32), SSMC_BF16);
    assert_int_equal(ssmc_model_arith_dtype(m, SSMC_F16), SSMC_BF16);
    assert_int_equal(ssmc_model_arith_dtype(r, SSMC_F32), SSMC_F32);
    ssmc_model_free(r);
    ssmc_model_free(m);
    ssmc_ctx_free(ctx);
    free(src);
}

/* Runs `ssmc ARGS` (the CLI at SSMC_CLI, from SSMC_SOURCE_DIR) into text;
 * returns its exit status. */
static int cli_run(const char *cli, const char *root, const char *args, char *text, size_t cap)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "cd %s && %s %s > %s/cli.out 2>&1", root, cli, args, workdir);
    int rc = system(cmd);
    snprintf(cmd, sizeof cmd, "%s/cli.out", workdir);
    FILE *f = fopen(cmd, "r");
    size_t n = f ? fread(text, 1, cap - 1, f) : 0;
    text[n] = 0;
    if (f) fclose(f);
    return rc;
}

/* The CLI's gradients on the cuda device, checked against the interpreter's
 * by the CLI itself (f32 and bf16 tensors), and, for the cases with a plan
 * fact, the adjoint's plan (`ssmc emit --emit=plan --grad --device cuda`;
 * the training forward's where `forward` is set) saying it. */
static void test_cli_grad_verify(void **state)
{
    (void)state;
    if (!have_emu) skip();
    const char *cli = getenv("SSMC_CLI"), *root = getenv("SSMC_SOURCE_DIR");
    if (!cli || !root) skip();
    static const struct {
        const char *file, *args, *plan, *grads[2];
        bool forward;
    } cases[] = {
        {"examples/gated_deltanet.ssm", "-D H=2 -D K=3 -D V=2", NULL, {"verify grad", NULL}, false},
        {"examples/gated_deltanet.ssm", "-D H=2 -D K=3 -D V=2 --dtype bf16", NULL, {"verify grad", NULL}, false},
        /* split reductions over several tiles in the adjoint: at K = 16, V = 70 simple GLA's
         * adjoint splits K in 2 tiles of 8, dv and dg summed over them after the kernel */
        {"bench/gpu/simple_gla.ssm", "-D H=2 -D K=16 -D V=70", "partial over the item's tile of class K, 2 tiles",
         {"verify grad   g ", NULL}, false},
        /* fla's gated delta rule at R = 1, V = 33: the adjoint on the forward's grid: da a
         * partial let read by dg, dscale a partial accumulator, the grouped reads' gathers at
         * R = 1 tying like plain ones (passes/schedule.c); V in 3 tiles of 16 that overhang it */
        {"examples/fla_gated_delta_rule.ssm", "-D H=3 -D HV=3 -D R=1 -D K=48 -D V=33", "items = batch x V x HV",
         {"verify grad   g ", "verify grad   scale "}, false},
        /* gated_deltanet.ssm at K = 48, V = 33: its key norm's adjoint, dkinv = sum(i: dkn * k)
         * with dkn partial over V, is a sum of shares, so the adjoint splits V too */
        {"examples/gated_deltanet.ssm", "-D H=3 -D K=48 -D V=33", "items = batch x V x H",
         {"verify grad   k ", "verify grad   A_log "}, false},
        /* RetNet at its declared dims: the adjoint's dgamma, a replicated let with a long sum,
         * is computed flat by the block over groups of 32 lanes (passes/layout.c 6e) */
        {"examples/retnet.ssm", "", "dgamma[h]: flat over the block, a group of 32 lanes per element",
         {"verify grad   q ", NULL}, false},
        /* a param's accumulator with a long sum (16 x 40 values a step), one copy a thread: summed once a
         * step, by a warp's lanes together, from block-local memory (passes/layout.c 6e) */
        {"tests/gpu/edge.ssm", "--model scale_sum", "dscale: flat over the block, a group of 32 lanes per element",
         {"verify grad   scale ", NULL}, false},
        /* mamba3's training forward, one item per sequence: its lane class P takes 16 lanes, so a
         * thread holds 64 of S[H,P,N,R]'s values, not 512 on 4 threads (passes/layout.c) */
        {"examples/mamba3.ssm", "", "P = 16: inside the item; 16 threads x 1 slot; lanes", {"verify grad   theta ", NULL},
         true},
    };
    static char text[16384];
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        char args[1024];
        if (cases[k].plan) {
            snprintf(args, sizeof args, "emit %s --emit=plan --grad --device cuda %s", cases[k].file, cases[k].args);
            int rc = cli_run(cli, root, args, text, sizeof text);
            char *adj = strstr(text, "__adjoint");
            if (adj && cases[k].forward) *adj = '\0'; /* the training forward's plan comes first */
            const char *in = cases[k].forward ? text : adj;
            if (rc != 0 || !in || !strstr(in, cases[k].plan))
                fail_msg("%s %s: the %s's plan lacks '%s' (exit %d):\n%s", cases[k].file, cases[k].args,
                         cases[k].forward ? "training forward" : "adjoint", cases[k].plan, rc, text);
        }
        snprintf(args, sizeof args, "run %s --device cuda --grad --verify %s --batch 2 --seqlen 9", cases[k].file,
                 cases[k].args);
        int rc = cli_run(cli, root, args, text, sizeof text);
        bool ok = rc == 0 && !strstr(text, "FAIL");
        for (int g = 0; g < 2; g++) ok &= !cases[k].grads[g] || strstr(text, cases[k].grads[g]) != NULL;
        if (!ok) fail_msg("ssmc %s (exit %d):\n%s", args, rc, text);
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
        cmocka_unit_test(test_chunked_tapes),
        cmocka_unit_test(test_cli_grad_verify),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
