/* grad_cases.h: gradient cases on the cuda device against the interpreter,
 * shared by test_cuda_emu_grad (an emulated driver, helpers/emu_driver.h) and
 * test_gpu_grad (a GPU). A case compiles one model for both devices, runs a
 * training step (ssmc_forward_train_device and ssmc_backward_device on device
 * buffers made with runtime/cuda_driver.h, or the host API) with the same
 * values (exact in the case's dtype) and compares the training forward's
 * outputs and final states and every gradient: max|got - ref| <= tol *
 * max|ref| + 1e-7, tol 1e-5 in f32 (as the CPU backend's), 2e-2 in bf16. */
#ifndef SSMC_TEST_GRAD_CASES_H
#define SSMC_TEST_GRAD_CASES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "grad_dims.h"

typedef struct gcase {
    const char *file, *model;
    example_dims dims;
    int64_t B, T, C;
    ssmc_dtype dt;
    bool states; /* initial states given (and final-state cotangents); else the inits */
    bool host;   /* ssmc_forward_train / ssmc_backward on the cuda device instead of the device entry points */
    int chunk;   /* > 0: the cuda model compiled with SSMC_ALGO_CHUNKED, chunks of `chunk` steps (the tolerance
                  * is then bf16's: the cores' matrix products take bf16 operands) */
    bool stream; /* the device entry points on a stream of their own (non-blocking: work left on the default
                  * stream would race it on a GPU), not the default stream */
} gcase;

/* One case; false with the reason in msg. */
bool grad_case(const gcase *c, char *msg, size_t cap);
/* Every case, each reported on stdout; fork_them: in child processes, one per
 * core (the emulator's compiles), else in this process. Fails the running
 * CMocka test when any fails. SSMC_TEST_ONLY=S runs the files containing S. */
void grad_run_cases(const gcase *cases, int n, bool fork_them);
/* Every example (test_grad's small dims, f32 from states over several chunks
 * and sequences; from its inits where it has some; bf16 and the host API for
 * three) and every edge model (tests/gpu/edge.ssm); return how many. */
int grad_example_cases(gcase *cases, int max);
int grad_edge_cases(gcase *cases, int max);
/* The chunked algorithm's gradients on the cuda device: the examples whose
 * cores the cuda core backward renders (no decay, a decay per head or per
 * key, the delta rule), each through the host API and through the device
 * entry points, and two more on the device on a stream of their own
 * (several sequences and segments, from zero; bf16 tensors). */
int grad_chunked_cases(gcase *cases, int max);

#endif
