/* grad_dims.h: the small dims at which the gradient tests run each example
 * (test_grad, test_cuda_emu, test_gpu_grad): a table for the examples whose
 * dims must keep a relation (groups), else every dim at most 3 where the model
 * still checks with that. Failures end the running CMocka test. */
#ifndef SSMC_TEST_GRAD_DIMS_H
#define SSMC_TEST_GRAD_DIMS_H

#include <stddef.h>

#include "ssmc.h"

typedef struct example_dims {
    const char *file;
    ssmc_dim dims[8];
    int ndims;
} example_dims;

/* The dims of example `file` (source src, len bytes): the table's entry, else
 * `own` filled. */
const example_dims *grad_example_dims(const char *file, const char *src, size_t len, example_dims *own);

#endif
