/* api_example.c: the smallest complete use of the ssmc C API (docs/api.md).
 *
 * Compiles a Mamba-2 layer from a source string with one dim overridden,
 * runs it on the CPU backend (falling back to the reference interpreter in a
 * build without LLVM) over a batch of 2 sequences of 16 steps, and prints one
 * output value and the final state's first element. Built by CMake as
 * `api_example`; run it with no arguments. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "ssmc.h"

static const char source[] =
    "model mamba2 {\n"
    "  dim    H = 4, P = 32, N = 64;\n"
    "  input  x[T,H,P], dt[T,H], B[T,N], C[T,N];\n"
    "  param  A_log[H], D[H], dt_bias[H];\n"
    "  state  S[H,P,N];\n"
    "  output y[T,H,P];\n"
    "  let A[h]       = -exp(A_log[h]);\n"
    "  let delta[t,h] = softplus(dt[t,h] + dt_bias[h]);\n"
    "  S[h,p,n] = exp(delta[t,h] * A[h]) * S[h,p,n] + delta[t,h] * x[t,h,p] * B[t,n];\n"
    "  y[t,h,p] = sum(n: S[h,p,n] * C[t,n]) + D[h] * x[t,h,p];\n"
    "}\n";

/* Elements of tensor i of m for a run of `batch` sequences of T steps. */
static size_t elems(const ssmc_model *m, int i, int64_t batch, int64_t T)
{
    ssmc_tensor_info info;
    ssmc_model_tensor(m, i, &info);
    size_t n = info.role == SSMC_PARAM ? 1 : (size_t)batch;
    if (info.per_step) n *= (size_t)T;
    for (int j = 0; j < info.rank; j++) n *= (size_t)info.shape[j];
    return n;
}

int main(void)
{
    ssmc_ctx *ctx = ssmc_ctx_new();
    if (!ctx) return 1;
    ssmc_dim dims[] = {{"N", 16}}; /* override the file's N = 64 */
    ssmc_options opts = {.dims = dims, .ndims = 1, .device = SSMC_DEVICE_CPU, .threads = 0};
    ssmc_model *m = NULL;
    ssmc_status s = ssmc_compile(ctx, "mamba2.ssm", source, sizeof source - 1, &opts, &m);
    if (s == SSMC_ERR_UNSUPPORTED) { /* no LLVM in this build: use the interpreter */
        opts.device = SSMC_DEVICE_INTERP;
        s = ssmc_compile(ctx, "mamba2.ssm", source, sizeof source - 1, &opts, &m);
    }
    if (s != SSMC_OK) {
        fprintf(stderr, "compile failed (%s):\n%s", ssmc_status_name(s), ssmc_ctx_error(ctx));
        ssmc_ctx_free(ctx);
        return 1;
    }

    /* one f32 buffer per input, param, state and output, filled with a pattern */
    const int64_t batch = 2, T = 16;
    int n = ssmc_model_num_tensors(m);
    ssmc_arg *args = calloc((size_t)n, sizeof *args);
    int rc = args ? 0 : 1;
    for (int i = 0; rc == 0 && i < n; i++) {
        ssmc_tensor_info info;
        ssmc_model_tensor(m, i, &info);
        size_t count = elems(m, i, batch, T);
        float *data = malloc(count * sizeof *data);
        if (!data) {
            rc = 1;
            break;
        }
        for (size_t k = 0; k < count; k++)
            data[k] = info.role == SSMC_STATE ? 0.0f : (float)sin(0.37 * (double)k + (double)i);
        args[i] = (ssmc_arg){info.name, SSMC_F32, data, 0};
    }
    if (rc == 0 && (s = ssmc_run(m, batch, T, args, n)) != SSMC_OK) {
        fprintf(stderr, "run failed (%s):\n%s", ssmc_status_name(s), ssmc_ctx_error(ctx));
        rc = 1;
    }
    if (rc == 0) {
        const float *y = args[ssmc_model_find(m, "y")].data;
        const float *S = args[ssmc_model_find(m, "S")].data;
        /* y is [batch, T, H, P]: the last step of sequence 1, head 0, p = 0 */
        size_t at = ((size_t)(1 * T + (T - 1)) * 4 + 0) * 32 + 0;
        printf("model %s on %s: y[1, %lld, 0, 0] = %.6f, final S[0, 0, 0, 0] = %.6f\n", ssmc_model_name(m),
               opts.device == SSMC_DEVICE_CPU ? "the cpu" : "the interpreter", (long long)(T - 1), y[at], S[0]);
    }
    for (int i = 0; args && i < n; i++) free(args[i].data);
    free(args);
    ssmc_model_free(m);
    ssmc_ctx_free(ctx);
    return rc;
}
