/* abi_probe.c: the layout of the public structs of ssmc.h as this compiler
 * sees them, one line per field ("struct field offset size") and per struct
 * ("struct - sizeof"), for test_abi.py to compare with the ctypes structs of
 * python/ssmc/_lib.py. */
#include <stddef.h>
#include <stdio.h>

#include "ssmc.h"

#define FIELD(s, f) printf("%s %s %zu %zu\n", #s, #f, offsetof(s, f), sizeof(((s *)0)->f))
#define SIZE(s) printf("%s - %zu\n", #s, sizeof(s))

int main(void)
{
    FIELD(ssmc_dim, name);
    FIELD(ssmc_dim, value);
    SIZE(ssmc_dim);
    FIELD(ssmc_options, model);
    FIELD(ssmc_options, dims);
    FIELD(ssmc_options, ndims);
    FIELD(ssmc_options, device);
    FIELD(ssmc_options, algo);
    FIELD(ssmc_options, threads);
    FIELD(ssmc_options, cuda_arch);
    FIELD(ssmc_options, check_finite);
    FIELD(ssmc_options, grad_chunk);
    FIELD(ssmc_options, chunk);
    SIZE(ssmc_options);
    FIELD(ssmc_arg, name);
    FIELD(ssmc_arg, dtype);
    FIELD(ssmc_arg, data);
    FIELD(ssmc_arg, flags);
    SIZE(ssmc_arg);
    FIELD(ssmc_tensor_info, name);
    FIELD(ssmc_tensor_info, role);
    FIELD(ssmc_tensor_info, per_step);
    FIELD(ssmc_tensor_info, rank);
    FIELD(ssmc_tensor_info, shape);
    SIZE(ssmc_tensor_info);
    FIELD(ssmc_grad_info, chunk);
    FIELD(ssmc_grad_info, checkpoints);
    FIELD(ssmc_grad_info, state_bytes);
    FIELD(ssmc_grad_info, tape_bytes);
    FIELD(ssmc_grad_info, backward_bytes);
    SIZE(ssmc_grad_info);
    printf("enum SSMC_F64 %d\n", (int)SSMC_F64);
    printf("enum SSMC_DEVICE_CUDA %d\n", (int)SSMC_DEVICE_CUDA);
    printf("enum SSMC_ERR_NUMERIC %d\n", (int)SSMC_ERR_NUMERIC);
    printf("enum SSMC_ALGO_SCAN %d\n", (int)SSMC_ALGO_SCAN);
    printf("enum SSMC_OUTPUT %d\n", (int)SSMC_OUTPUT);
    printf("enum SSMC_MAX_RANK %d\n", (int)SSMC_MAX_RANK);
    return 0;
}
