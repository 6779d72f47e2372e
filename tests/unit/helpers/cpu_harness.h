/* cpu_harness.h: what the CPU backend's tests (tests/unit/test_cpu_*.c) share:
 * one model compiled twice (CPU backend and f64 interpreter), fresh random
 * data in a chosen dtype handed to both (the interpreter gets the same values,
 * after rounding to that dtype, in f64), outputs poisoned with NaN before the
 * run, and the relative error of every output and final state,
 * max |got - ref| / max |ref|. Nothing here calls CMocka: callers assert on
 * the results. */
#ifndef SSMC_TEST_CPU_HARNESS_H
#define SSMC_TEST_CPU_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ssmc.h"

typedef struct harness_range {
    const char *name;
    double lo, hi;
} harness_range;

typedef struct harness_run {
    int64_t batch, T;
    ssmc_dtype dtype;             /* of every tensor handed to the CPU model */
    bool random_state;            /* initial states random (else zeros) */
    bool no_state;                /* states not given at all: start at zero (or their init), final
                                     not checked */
    bool final_only;              /* states given with SSMC_ARG_FINAL_ONLY, their buffers poisoned
                                     with NaN: start as not given, final checked */
    bool skip_outputs;            /* the first output not given (it must stay untouched) */
    bool misalign;                /* every buffer 8 bytes past a 64-byte boundary (else on one) */
    const harness_range *ranges;  /* ends at a NULL name; tensors not listed draw from [-1, 1] */
    uint64_t seed;
} harness_run;

typedef struct harness_result {
    double worst;           /* largest relative error over the checked tensors */
    const char *worst_name; /* where (points into the model) */
    int checked;            /* outputs and final states compared */
    char why[512];          /* set when the run itself failed or a value was not finite */
    bool ok;
} harness_result;

/* The text of SSMC_SOURCE_DIR/rel (malloc'd), or NULL. */
char *harness_read_source(const char *rel, size_t *len);

/* Compiles `source` with the given dims for `device` (threads for the CPU);
 * the _model form picks a model of the file by name (NULL: the first). */
ssmc_status harness_compile(ssmc_ctx *ctx, const char *name, const char *source, size_t len, const ssmc_dim *dims,
                            int ndims, ssmc_device device, int threads, ssmc_model **out);
ssmc_status harness_compile_model(ssmc_ctx *ctx, const char *name, const char *source, size_t len, const char *model,
                                  const ssmc_dim *dims, int ndims, ssmc_device device, int threads, ssmc_model **out);

/* Runs cpu and ref (same model, any two devices) on the same data and compares. */
void harness_compare(ssmc_model *cpu, ssmc_model *ref, const harness_run *r, harness_result *res);

/* Whether this build has the CPU backend (tests exit 77, skipped, when not). */
bool harness_cpu_available(void);

/* The seed of a test run: SSMC_TEST_SEED when set, else the clock. */
uint64_t harness_seed(void);

#endif
