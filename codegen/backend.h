/* backend.h: what the driver asks of a device backend (the f64 interpreter,
 * CPU through LLVM, CUDA through NVRTC). A backend compiles one verified IR model into an opaque
 * state, runs it on host tensors, and renders its generated code as text.
 * Tensors come in IR tensor order; data is NULL for a tensor not given (lets
 * always; a state without initial/final value; an output not kept). */
#ifndef SSMC_BACKEND_H
#define SSMC_BACKEND_H

#include "ssmc.h"
#include "ir/ir.h"
#include "passes/plan.h"
#include "support/support.h"

typedef struct backend_tensor {
    void *data;
    ssmc_dtype dtype;
    bool fresh; /* a state whose data only receives the final state (SSMC_ARG_FINAL_ONLY):
                   the run starts from the model's initial value, as for one not given */
} backend_tensor;

/* Device memory for the gradient drivers (driver/grad.c, driver/grad_chunked.c,
 * through driver/gmem.h) on device tensors: their checkpoints, traces, adjoint
 * states and work live on the device, and every move between them and the
 * caller's tensors is enqueued on `stream`. `ctx` is a compiled state of the
 * backend (any of one model's). Pointers are
 * device addresses; alloc gives uninitialised memory (NULL with a message when
 * it fails); free does not wait for work in flight (call sync first). */
typedef struct backend_mem {
    void *(*alloc)(void *ctx, size_t bytes, diag *d);
    void (*free)(void *ctx, void *p);
    /* `height` rows of `width` bytes, `spitch` apart in src and `dpitch` in dst */
    ssmc_status (*copy2d)(void *ctx, void *dst, size_t dpitch, const void *src, size_t spitch, size_t width,
                          size_t height, void *stream, diag *d);
    ssmc_status (*zero)(void *ctx, void *p, size_t bytes, void *stream, diag *d);
    /* n elements converted between dtypes (through f32) */
    ssmc_status (*convert)(void *ctx, void *dst, ssmc_dtype dd, const void *src, ssmc_dtype sd, size_t n, void *stream,
                           diag *d);
    /* dst[e] = sum over r < rows of src[r * n + e], src f32 */
    ssmc_status (*sum_rows)(void *ctx, void *dst, ssmc_dtype dd, const float *src, int64_t rows, size_t n, void *stream,
                            diag *d);
    /* waits for the stream's work; stream NULL: every stream's */
    ssmc_status (*sync)(void *ctx, void *stream, diag *d);
} backend_mem;

typedef struct backend {
    const char *name;
    /* The target the pipeline plans this device's kernels for; NULL for a
     * backend that runs the IR itself (the interpreter: no plan). */
    plan_target (*target)(const ssmc_options *o);
    /* m is verified; p is its plan for target(o) (NULL without a target). Both
     * outlive the state. */
    ssmc_status (*compile)(const ir_model *m, const pass_plan *p, const ssmc_options *o, diag *d, void **state);
    ssmc_status (*run)(void *state, int64_t batch, int64_t T, const backend_tensor *tensors, diag *d);
    /* Text of generated code (SSMC_EMIT_LLVM, _CUDA, _PTX) from a plan for
     * target(o); no device needed. NULL for a backend that generates none. */
    ssmc_status (*emit)(const pass_plan *p, const ssmc_options *o, ssmc_emit_kind kind, strbuf *out, diag *d);
    void (*free)(void *state);
    /* Runs on device tensors (data are device addresses), enqueued on `stream`
     * with no copies or synchronisation; NULL for a backend without a device. */
    ssmc_status (*run_device)(void *state, int64_t batch, int64_t T, const backend_tensor *tensors, void *stream,
                              diag *d);
    /* Runs against state pools (ssmc_decode, ssmc_decode_device; ssmc.h,
     * ssmc_rows): every state is given, as a pool of rows->rows rows; device:
     * every pointer (tensors, index, has_state) is a device address and the
     * run is enqueued on `stream`. NULL for a backend that cannot. */
    ssmc_status (*decode)(void *state, int64_t batch, int64_t T, const backend_tensor *tensors, const ssmc_rows *rows,
                          bool device, void *stream, diag *d);
    /* Runs reverse models (ir.h), as the adjoint of passes/grad.c is: what
     * gradients need of a backend beyond running ordinary models. */
    bool reverse;
    /* The chunked runner (codegen/chunked_run.h) of a model compiled with a
     * chunked plan, NULL otherwise; NULL for a backend whose chunked models
     * have no backward (the chunked backward, driver/grad_chunked.c, runs the
     * parts and the cores through it). */
    struct chunked_state *(*chunked)(void *state);
    /* Device memory for gradients on device tensors; NULL without a device. */
    const backend_mem *mem;
    /* The precision of the chunked cores' matrix-product operands, whatever the
     * tensors' dtype (bf16 on CUDA's tensor cores; 0, i.e. SSMC_F32, the tensors'
     * own elsewhere): what `--verify` holds a chunked run to (ssmc_model_tolerance). */
    ssmc_dtype chunk_operands;
} backend;

/* The device table (codegen/backends.c): the backend of a device, NULL where
 * this build has none or the device is unknown; its CLI name and the name
 * messages use (NULL when unknown); a device by its CLI name. */
const backend *backend_for(ssmc_device device);
const char *device_name(ssmc_device device);
const char *device_title(ssmc_device device);
bool device_from_name(const char *name, ssmc_device *out);

#endif
