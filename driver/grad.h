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
/* ... its plan (NULL where the backend plans nothing), its backend state,
 * and the slot of its chunked backward */
const pass_plan *api_model_plan(const ssmc_model *m);
void *api_model_state(const ssmc_model *m);
typedef struct grad_chunked grad_chunked;
grad_chunked **api_model_grad_chunked(ssmc_model *m);

/* ... whether a tensor is public (an input, param, state or output the API
 * names; not a let, not a hidden state of passes/lag.c) */
bool api_tensor_public(const ir_tensor *t);
const ir_model *api_model_ir(const ssmc_model *m);

/* ---- from driver/grad.c, for driver/grad_chunked.c and driver/varlen.c ---- */
/* A tape of packed sequences (driver/varlen.c): one tape per sequence. */
typedef struct varlen_tape varlen_tape;
void varlen_tape_free(varlen_tape *v);
ssmc_status varlen_backward(ssmc_model *m, const varlen_tape *v, const ssmc_arg *args, int nargs,
                            const ssmc_arg *douts, int ndouts, const ssmc_arg *grads, int ngrads);
/* A tape that holds v (owned) and says bytes. NULL when out of memory. */
ssmc_tape *grad_tape_of_varlen(const ssmc_model *m, varlen_tape *v, size_t bytes);

/* Compiles a model the gradients pass made for backend be (through the rest
 * of the pipeline, the recurrent algorithm, where be plans). */
ssmc_status grad_compile(const backend *be, ir_model *model, const ssmc_options *o, arena *a, diag *d, void **state);
/* The arguments of ssmc_forward_train and ssmc_backward (or their _device
 * forms: fn, the entry point the messages name) checked as the recurrent
 * backward checks them, into bt/cot/gr (zeroed, by tensor id of ir). */
ssmc_status grad_run_args(const ir_model *ir, int64_t batch, int64_t T, const ssmc_arg *args, int nargs,
                          const char *fn, backend_tensor *bt, diag *d);
ssmc_status grad_backward_args(const ir_model *ir, const ssmc_arg *args, int nargs, const ssmc_arg *douts, int ndouts,
                               const ssmc_arg *grads, int ngrads, const char *fn, backend_tensor *bt,
                               backend_tensor *cot, backend_tensor *gr, diag *d);
/* The checkpoint interval of T steps (ssmc_options.grad_chunk, else ceil(sqrt(T))). */
int64_t grad_interval(const ssmc_options *o, int64_t T);

/* ---- driver/grad_chunked.c: the backward of a model compiled with a
 * chunked plan (docs/chunked.md, "Gradients") ---- */
typedef struct grad_ctape grad_ctape;
void grad_chunked_free(grad_chunked *g);
bool grad_chunked_applies(const ssmc_model *m); /* the model runs the chunked algorithm on a backend with a plan */
ssmc_status grad_chunked_info(ssmc_model *m, int64_t T, ssmc_grad_info *info);
/* device: the tensors are device pointers of the backend, the tape and the
 * work are on the device, everything is enqueued on `stream` (the caller has
 * checked that the backend has device memory, and that the tape was made on
 * the same memory as the backward). */
ssmc_status grad_chunked_forward(ssmc_model *m, int64_t batch, int64_t T, const ssmc_arg *args, int nargs, bool device,
                                 void *stream, grad_ctape **tape);
ssmc_status grad_chunked_backward(ssmc_model *m, const grad_ctape *tape, const ssmc_arg *args, int nargs,
                                  const ssmc_arg *douts, int ndouts, const ssmc_arg *grads, int ngrads, bool device,
                                  void *stream);
size_t grad_ctape_bytes(const grad_ctape *t);
bool grad_ctape_on_device(const grad_ctape *t); /* made by the device entry point */
void grad_ctape_free(grad_ctape *t);

#endif
