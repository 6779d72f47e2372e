/* ref_models.h: hand-written f64 references for the example models, written
 * from the papers' recurrences as plain C loops, independent of ssmc (no IR, no
 * interpreter, nothing of the project but this header). Tests compare the
 * interpreter against them.
 *
 * Shapes follow SPEC §5, all row-major double: an input [B, T, ...declared axes
 * after T], a param as declared, a state [B, ...declared], an output [B, T, ...].
 * Tensors and dims are passed by their names in examples/<model>.ssm. */
#ifndef SSMC_REF_MODELS_H
#define SSMC_REF_MODELS_H

#include <stdint.h>

typedef struct ref_tensor {
    const char *name;
    double *data;
} ref_tensor;

typedef struct ref_io {
    int64_t B, T;           /* batch size, sequence length */
    const ref_tensor *t;    /* every input, param, state and output of the model */
    int n;
    const char **dim_names; /* every dim of the model (defaults included) */
    const int64_t *dim_values;
    int ndims;
} ref_io;

#define REF_ERR_NO_MODEL (-1)   /* no reference for this model */
#define REF_ERR_MISSING  (-2)   /* a tensor or dim the reference needs was not given */
#define REF_ERR_NOMEM    (-3)   /* scratch memory could not be allocated */

/* Runs the reference for `model` (the model name, e.g. "mamba2"). States in io
 * hold the initial state and receive the final state; outputs are written.
 * Returns 0 or one of the REF_ERR_ codes. */
int ref_run(const char *model, const ref_io *io);

/* Nonzero when `model` has a reference. */
int ref_has(const char *model);

#endif
