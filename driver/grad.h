/* grad.h: what driver/grad.c (the gradient API: training forward, backward,
 * tape) needs from the rest of the driver, and what it gives it. */
#ifndef SSMC_DRIVER_GRAD_H
#define SSMC_DRIVER_GRAD_H

#include "codegen/backend.h"

/* A model's gradient machinery (its adjoint, compiled for its device), made
 * at the first gradient call and freed with the model. */
typedef struct grad_state grad_state;
void grad_state_free(grad_state *g);

/* ---- from driver/api.c ---- */
/* The model's arena, backend, options, the diagnostics sink of its context,
 * and the slot that holds its grad_state. */
arena *api_model_arena(ssmc_model *m);
const backend *api_model_backend(const ssmc_model *m);
const ssmc_options *api_model_options(const ssmc_model *m);
diag *api_model_diag(ssmc_model *m);
grad_state **api_model_grad(ssmc_model *m);

#endif
