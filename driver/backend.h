/* backend.h: what the driver asks of a device backend (the f64 interpreter,
 * CPU through LLVM, CUDA through NVRTC). A backend compiles one verified IR model into an opaque
 * state, runs it on host tensors, and renders its generated code as text.
 * Tensors come in IR tensor order; data is NULL for a tensor not given (lets
 * always; a state without initial/final value; an output not kept). */
#ifndef SSMC_BACKEND_H
#define SSMC_BACKEND_H

#include "ssmc.h"
#include "ir/ir.h"
#include "support/support.h"

typedef struct backend_tensor {
    void *data;
    ssmc_dtype dtype;
} backend_tensor;

typedef struct backend {
    const char *name;
    ssmc_status (*compile)(const ir_model *m, const ssmc_options *o, diag *d, void **state);
    ssmc_status (*run)(void *state, int64_t batch, int64_t T, const backend_tensor *tensors, diag *d);
    /* Text of generated code (SSMC_EMIT_LLVM, _CUDA, _PTX); no device needed.
     * NULL for a backend that generates none (the interpreter). */
    ssmc_status (*emit)(const ir_model *m, const ssmc_options *o, ssmc_emit_kind kind, strbuf *out, diag *d);
    void (*free)(void *state);
    /* Runs on device tensors (data are device addresses), enqueued on `stream`
     * with no copies or synchronisation; NULL for a backend without a device. */
    ssmc_status (*run_device)(void *state, int64_t batch, int64_t T, const backend_tensor *tensors, void *stream,
                              diag *d);
    /* Runs reverse models (ir.h), as the adjoint of passes/grad.c is: what
     * gradients need of a backend beyond running ordinary models. */
    bool reverse;
} backend;

/* The device table (driver/backends.c): the backend of a device, NULL where
 * this build has none or the device is unknown; its CLI name and the name
 * messages use (NULL when unknown); a device by its CLI name. */
const backend *backend_for(ssmc_device device);
const char *device_name(ssmc_device device);
const char *device_title(ssmc_device device);
bool device_from_name(const char *name, ssmc_device *out);

#endif
