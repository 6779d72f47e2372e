/* grad_example.c: one training step's gradients through the ssmc C API
 * (docs/api.md, "Gradients"; docs/gradients.md).
 *
 * A gated linear recurrence with a learned decay, run on the f64 interpreter
 * over 2 sequences of 100 steps: the training forward keeps a checkpoint of
 * the state every C = ceil(sqrt(100)) = 10 steps, the backward gives the
 * gradients of L = sum(y) (every cotangent of y is 1) with respect to the
 * input, the param (summed over the batch) and the initial state. Prints one
 * value of each and the bytes the tape held. Built by CMake as
 * `grad_example`; run it with no arguments. */
#include <stdio.h>
#include <stdlib.h>

#include "ssmc.h"

static const char source[] =
    "model gated {\n"
    "  dim N = 4;\n"
    "  input  x[T,N];\n"
    "  param  a[N];\n"
    "  state  S[N];\n"
    "  output y[T,N];\n"
    "  S[n] = sigmoid(a[n]) * S[n] + x[t,n];\n"
    "  y[t,n] = tanh(S[n]);\n"
    "}\n";

enum { B = 2, T = 100, N = 4 };

int main(void)
{
    ssmc_ctx *ctx = ssmc_ctx_new();
    if (!ctx) return 1;
    ssmc_options opts = {.device = SSMC_DEVICE_INTERP};
    ssmc_model *m = NULL;
    if (ssmc_compile(ctx, "gated.ssm", source, sizeof source - 1, &opts, &m) != SSMC_OK) {
        fprintf(stderr, "%s", ssmc_ctx_error(ctx));
        ssmc_ctx_free(ctx);
        return 1;
    }
    static float x[B][T][N], y[B][T][N], dy[B][T][N], dx[B][T][N];
    float a[N] = {0.5f, 1.0f, 1.5f, 2.0f}, S[B][N] = {{0}}, da[N], dS0[B][N];
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            for (int n = 0; n < N; n++) {
                x[b][t][n] = (float)((b + 1) * (t % 7) - n) / 8.0f;
                dy[b][t][n] = 1.0f;
            }

    /* the forward: as ssmc_run, plus the tape */
    ssmc_arg args[] = {{"x", SSMC_F32, x}, {"a", SSMC_F32, a}, {"S", SSMC_F32, S}, {"y", SSMC_F32, y}};
    ssmc_tape *tape = NULL;
    int rc = 0;
    if (ssmc_forward_train(m, B, T, args, 4, &tape) != SSMC_OK) rc = 1;

    /* the backward: the inputs and params again, the cotangents, the gradients wanted */
    ssmc_arg values[] = {{"x", SSMC_F32, x}, {"a", SSMC_F32, a}};
    ssmc_arg douts[] = {{"y", SSMC_F32, dy}}; /* the final state's cotangent: zero */
    ssmc_arg grads[] = {{"x", SSMC_F32, dx}, {"a", SSMC_F32, da}, {"S", SSMC_F32, dS0}};
    if (rc == 0 && ssmc_backward(m, tape, values, 2, douts, 1, grads, 3) != SSMC_OK) rc = 1;
    if (rc) {
        fprintf(stderr, "%s", ssmc_ctx_error(ctx));
    } else {
        printf("model %s: dL/dx[0,0,0] = %.6f, dL/da[0] = %.6f, dL/dS0[1,3] = %.6f; tape %zu bytes for %d x %d steps\n",
               ssmc_model_name(m), dx[0][0][0], da[0], dS0[1][3], ssmc_tape_bytes(tape), B, T);
    }
    ssmc_tape_free(tape);
    ssmc_model_free(m);
    ssmc_ctx_free(ctx);
    return rc;
}
