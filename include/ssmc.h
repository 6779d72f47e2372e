/* ssmc.h: the public C API of ssmc, a compiler for recurrent sequence models.
 *
 * A context collects diagnostics; a model is one `model` block of a source file,
 * compiled with its dims bound for one device. Running a model takes host tensors
 * named as in the source, in any of the supported dtypes. Nothing in the library
 * prints, exits or aborts: every fallible call returns an ssmc_status and leaves a
 * readable message in the context (ssmc_ctx_error).
 *
 * Shapes (SPEC §5): an input is [B, T, ...declared axes after T], a param as
 * declared, a state [B, ...declared], an output [B, T, ...]. All row-major.
 * See docs/api.md. */
#ifndef SSMC_H
#define SSMC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SSMC_VERSION "0.1.0"
#define SSMC_MAX_RANK 8
/* The longest source text ssmc_compile, ssmc_check, ssmc_emit and ssmc_build
 * take (64 MiB; `ssmc` reads no larger file): beyond it, SSMC_ERR_SOURCE. */
#define SSMC_MAX_SOURCE_BYTES ((size_t)64 << 20)

typedef struct ssmc_ctx ssmc_ctx;
typedef struct ssmc_model ssmc_model;

typedef enum ssmc_status {
    SSMC_OK = 0,
    SSMC_ERR_SOURCE,      /* the source did not parse or check: see the diagnostics */
    SSMC_ERR_ARG,         /* a bad argument: unknown name, wrong shape, missing tensor */
    SSMC_ERR_IO,          /* a file could not be read or written */
    SSMC_ERR_NOMEM,       /* an allocation failed (host or device) */
    SSMC_ERR_UNSUPPORTED, /* not available in this build or on this machine */
    SSMC_ERR_BACKEND,     /* LLVM, NVRTC or the CUDA driver failed: see the log */
    SSMC_ERR_NUMERIC      /* a non-finite value was found (check_finite) */
} ssmc_status;

typedef enum ssmc_device {
    SSMC_DEVICE_INTERP, /* the f64 reference interpreter */
    SSMC_DEVICE_CPU,    /* LLVM JIT */
    SSMC_DEVICE_CUDA    /* NVRTC + CUDA driver */
} ssmc_device;

typedef enum ssmc_algo {
    SSMC_ALGO_AUTO,
    SSMC_ALGO_RECURRENT,
    SSMC_ALGO_CHUNKED,
    SSMC_ALGO_SCAN
} ssmc_algo;

typedef enum ssmc_dtype { SSMC_F32, SSMC_F16, SSMC_BF16, SSMC_F64 } ssmc_dtype;

typedef enum ssmc_role { SSMC_INPUT, SSMC_PARAM, SSMC_STATE, SSMC_OUTPUT } ssmc_role;

typedef struct ssmc_dim {
    const char *name;
    int64_t value;
} ssmc_dim;

typedef struct ssmc_options {
    const char *model;     /* which model of the file; NULL: the first */
    const ssmc_dim *dims;  /* overrides of the declared dim defaults (-D) */
    int ndims;
    ssmc_device device;
    ssmc_algo algo;
    int threads;           /* CPU worker threads; 0: all cores */
    const char *cuda_arch; /* e.g. "sm_90"; NULL: the GPU's own */
    int check_finite;      /* nonzero: report NaN/Inf in inputs and outputs */
    int64_t grad_chunk;    /* gradients: keep the states every grad_chunk steps; 0: ceil(sqrt(T)) (chunked:
                              whole chunks; <= chunk keeps every chunk's state, docs/chunked.md) */
    int chunk;             /* the chunked algorithm's chunk length (--chunk); 0: the default, 64 */
} ssmc_options;

/* One tensor handed to ssmc_run. Inputs and params are read; outputs are
 * written; a state is read as the initial state and overwritten with the final
 * state. A state not given starts from the model's initial value (its `init`
 * statement, or zero without one) and its final value is dropped; a state
 * given with SSMC_ARG_FINAL_ONLY starts from that same initial value and its
 * data only receives the final state. */
typedef struct ssmc_arg {
    const char *name;
    ssmc_dtype dtype;
    void *data;
    unsigned flags; /* SSMC_ARG_*; 0 for the ordinary use */
} ssmc_arg;

#define SSMC_ARG_FINAL_ONLY 1u /* a state: data is not read, only written with the final state */

typedef struct ssmc_tensor_info {
    const char *name;
    ssmc_role role;
    int per_step;                  /* has the T axis (inputs, outputs) */
    int rank;                      /* declared axes, T excluded */
    int64_t shape[SSMC_MAX_RANK];  /* declared axes, T excluded */
} ssmc_tensor_info;

typedef enum ssmc_emit_kind {
    SSMC_EMIT_AST,
    SSMC_EMIT_IR,
    SSMC_EMIT_ANALYSIS,
    SSMC_EMIT_LLVM,
    SSMC_EMIT_CUDA,
    SSMC_EMIT_PTX,
    SSMC_EMIT_PLAN, /* the kernel plan for opts->device (the interpreter: the CPU's) */
    SSMC_EMIT_GRAD, /* the adjoint model (docs/gradients.md) */
    /* or'ed with SSMC_EMIT_PLAN, _LLVM, _CUDA or _PTX: that stage of the models the gradients
     * run (the training forward, the adjoint, an init's), the recurrent algorithm's, instead of
     * the model's own (`ssmc emit --emit=plan --grad`) */
    SSMC_EMIT_FOR_GRAD = 0x100
} ssmc_emit_kind;

/* ---- context ---- */
ssmc_ctx *ssmc_ctx_new(void);
void ssmc_ctx_free(ssmc_ctx *ctx);
/* The text of every diagnostic of the last failed call ("" if none). */
const char *ssmc_ctx_error(const ssmc_ctx *ctx);
/* Called with each diagnostic as it is reported, in addition to collecting it. */
void ssmc_ctx_set_diag_callback(ssmc_ctx *ctx, void (*fn)(void *ud, const char *msg), void *ud);
const char *ssmc_status_name(ssmc_status s);

/* ---- compiling ---- */
/* Compiles one model of `source` (named `filename` in diagnostics). */
ssmc_status ssmc_compile(ssmc_ctx *ctx, const char *filename, const char *source, size_t len,
                         const ssmc_options *opts, ssmc_model **out);
void ssmc_model_free(ssmc_model *m);

/* Parses the file and checks every model in it (only opts->model when set),
 * through lowering and the recurrence analysis, as `ssmc check` does. */
ssmc_status ssmc_check(ssmc_ctx *ctx, const char *filename, const char *source, size_t len,
                       const ssmc_options *opts);

/* Text output of a compiler stage (ast, ir, analysis, plan, llvm, cuda, ptx) for the
 * model chosen by opts (all models for ast). *text is malloc'd; free() it. */
ssmc_status ssmc_emit(ssmc_ctx *ctx, const char *filename, const char *source, size_t len,
                      const ssmc_options *opts, ssmc_emit_kind kind, char **text);

/* ---- introspection ---- */
const char *ssmc_model_name(const ssmc_model *m);
int ssmc_model_num_tensors(const ssmc_model *m);
ssmc_status ssmc_model_tensor(const ssmc_model *m, int i, ssmc_tensor_info *info);
/* Index of a tensor by name, or -1. */
int ssmc_model_find(const ssmc_model *m, const char *name);

/* The tolerance `ssmc run --verify` holds public tensor i (an output or a
 * state) to: the largest relative error max|got - ref| / max|ref| that a run
 * of T steps with tensors of `dtype` may show against the f64 interpreter,
 * from f32 rounding alone. It grows with the model's reductions and chains of
 * operations (docs/numerics.md, "How --verify judges"), and a chunked run on a
 * backend whose matrix products take coarser operands (CUDA: bf16) is held to
 * that precision; -1 when m is NULL, i
 * is not an output or a state, dtype is unknown or T is below 1. */
double ssmc_model_tolerance(const ssmc_model *m, int i, ssmc_dtype dtype, int64_t T);

/* The coarsest precision a run of m with tensors of `dtype` computes in:
 * dtype itself, or the operands of a chunked model's matrix products where
 * they are coarser (bf16 on CUDA's tensor cores). What the tolerances of
 * --verify (values and gradients) are set by. */
ssmc_dtype ssmc_model_arith_dtype(const ssmc_model *m, ssmc_dtype dtype);

/* ---- running ---- */
/* Runs the model over `batch` sequences of length `T` (T >= 1) on host tensors. */
ssmc_status ssmc_run(ssmc_model *m, int64_t batch, int64_t T, const ssmc_arg *args, int nargs);

/* The same on tensors already on the GPU, for a model compiled for
 * SSMC_DEVICE_CUDA: every ssmc_arg.data is a device address (a CUdeviceptr in
 * the primary context of device 0), and the kernel is enqueued on `stream` (a
 * CUstream; NULL: the default stream) with no copies and no synchronisation.
 * A state given is read as the initial state and overwritten in place with the
 * final state (T = 1 is one decode step). check_finite does not apply. The
 * first run of each dtype signature compiles (or loads from the kernel cache)
 * before it enqueues. */
ssmc_status ssmc_run_device(ssmc_model *m, int64_t batch, int64_t T, const ssmc_arg *args, int nargs, void *stream);

/* ---- variable-length batches (SPEC §3) ----
 * nseq sequences packed along T of a batch of one: sequence i is steps
 * [cu_seqlens[i], cu_seqlens[i+1]); the offsets run from 0 to T and rise
 * strictly (every sequence has at least one step). Inputs and outputs are
 * [1, T, ...], params as declared, states [nseq, ...]: sequence i starts from
 * row i of each state given (the model's initial value for a state not given
 * or given SSMC_ARG_FINAL_ONLY) and leaves its final state there. Nothing
 * crosses a boundary: reads at t - k see the initial history at a sequence's
 * start, chunks and windows stop at its end. Each sequence is one run of the
 * model (one kernel launch, or one per phase, per sequence). */
ssmc_status ssmc_run_varlen(ssmc_model *m, int64_t T, const int64_t *cu_seqlens, int64_t nseq, const ssmc_arg *args,
                            int nargs);
/* The same on device tensors (as ssmc_run_device); cu_seqlens stays on the host. */
ssmc_status ssmc_run_varlen_device(ssmc_model *m, int64_t T, const int64_t *cu_seqlens, int64_t nseq,
                                   const ssmc_arg *args, int nargs, void *stream);

/* ---- decoding against a state pool (docs/api.md, "Decoding") ----
 * A serving cache keeps the states of many sequences in one pool per state,
 * [rows, ...declared], and steps a batch of them at once: sequence i of the
 * batch reads and writes row index[i] of every state's pool, in place. Inputs
 * and outputs are [batch, T, ...] as for ssmc_run; T = 1 is one decode step,
 * T > 1 several tokens at once (speculative verification, chunked prefill).
 * Every state must be given, as its pool; an output not given is not
 * computed. Rows must be distinct (two sequences on one row race). */
typedef struct ssmc_rows {
    const int32_t *index;     /* [batch]: sequence i's row; negative: a padding slot, skipped
                                 (no output written, no row touched) */
    const uint8_t *has_state; /* [batch] or NULL (every sequence continues from its row):
                                 0: sequence i starts from the model's initial state (its init, or
                                 zeros) instead of its row, which still receives the final state */
    int64_t rows;             /* rows in every state's pool */
} ssmc_rows;

/* On host tensors (index and has_state on the host, checked: every index
 * below rows); for models compiled for the interpreter or the CPU. A model
 * that reads an input or a let at an earlier step (t - k) cannot continue a
 * sequence across calls: SSMC_ERR_UNSUPPORTED, located. */
ssmc_status ssmc_decode(ssmc_model *m, int64_t batch, int64_t T, const ssmc_arg *args, int nargs,
                        const ssmc_rows *rows);
/* The same on device pointers (tensors, index and has_state), enqueued on
 * `stream` as ssmc_run_device; for models compiled for SSMC_DEVICE_CUDA.
 * Indices are not checked (they are on the device): one past rows writes
 * past the pool. */
ssmc_status ssmc_decode_device(ssmc_model *m, int64_t batch, int64_t T, const ssmc_arg *args, int nargs,
                               const ssmc_rows *rows, void *stream);

/* ---- gradients (docs/gradients.md) ----
 * The backward of L = sum over outputs y and final states S of <dy, y> +
 * <dS, S(T)>, derived by the compiler from the model (an adjoint model run in
 * reverse time). The training forward keeps every state each C steps
 * (checkpoints); the backward recomputes C steps at a time from them, so the
 * memory kept is O(T/C + C) states per sequence, never T. */
typedef struct ssmc_tape ssmc_tape;

/* What the backward of a run of T steps keeps and uses, per sequence. */
typedef struct ssmc_grad_info {
    int64_t chunk;         /* C: a checkpoint every C steps */
    int64_t checkpoints;   /* ceil(T / C) */
    size_t state_bytes;    /* one copy of every state (including the history of reads at t - k) */
    size_t tape_bytes;     /* kept from the training forward to the backward: checkpoints * state_bytes */
    size_t backward_bytes; /* the backward's working memory: C steps of the state trace, the chunk's
                              copies of per-step tensors, the adjoint states */
} ssmc_grad_info;

/* The plan for T steps (no run needed). SSMC_ERR_UNSUPPORTED when the model
 * uses something the gradients pass cannot differentiate (the message says
 * what and where) or the device cannot run it. */
ssmc_status ssmc_grad_info_of(ssmc_model *m, int64_t T, ssmc_grad_info *info);

/* The forward of a training step: takes and gives what ssmc_run does, and
 * returns in *tape what ssmc_backward needs (the checkpoints; not the
 * tensors, which the backward is given again). */
ssmc_status ssmc_forward_train(ssmc_model *m, int64_t batch, int64_t T, const ssmc_arg *args, int nargs,
                               ssmc_tape **tape);

/* The backward: `args` are every input and param with the values the
 * forward had; `douts` the cotangents, by the name of an output ([B, T, ...])
 * or of a state ([B, ...], of its final value), zero where not given; `grads`
 * the gradients to write, by the name of an input ([B, T, ...]), a param (as
 * declared, summed over the batch and the steps) or a state ([B, ...], with
 * respect to its initial value). Any dtype each. The tape may be used again. */
ssmc_status ssmc_backward(ssmc_model *m, const ssmc_tape *tape, const ssmc_arg *args, int nargs,
                          const ssmc_arg *douts, int ndouts, const ssmc_arg *grads, int ngrads);

/* The same on device pointers, for a model compiled for SSMC_DEVICE_CUDA:
 * every tensor is a device address (as ssmc_run_device) and the work is
 * enqueued on `stream`; the tape's checkpoints are on the device. Each call
 * waits for `stream` before it returns (it frees its working buffers). A tape
 * from ssmc_forward_train_device serves ssmc_backward_device only, one from
 * ssmc_forward_train ssmc_backward only (SSMC_ERR_ARG otherwise); other
 * devices: SSMC_ERR_UNSUPPORTED. ssmc_tape_free waits for the device. */
ssmc_status ssmc_forward_train_device(ssmc_model *m, int64_t batch, int64_t T, const ssmc_arg *args, int nargs,
                                      ssmc_tape **tape, void *stream);
ssmc_status ssmc_backward_device(ssmc_model *m, const ssmc_tape *tape, const ssmc_arg *args, int nargs,
                                 const ssmc_arg *douts, int ndouts, const ssmc_arg *grads, int ngrads,
                                 void *stream);

/* The training forward of packed sequences (as ssmc_run_varlen: inputs and
 * outputs [1, T, ...], states [nseq, ...]); the tape holds one per sequence.
 * ssmc_backward takes it with tensors of the same shapes: gradients of inputs
 * [1, T, ...], of initial states [nseq, ...], of params summed over every
 * sequence; cotangents of final states [nseq, ...]. Host tensors. */
ssmc_status ssmc_forward_train_varlen(ssmc_model *m, int64_t T, const int64_t *cu_seqlens, int64_t nseq,
                                      const ssmc_arg *args, int nargs, ssmc_tape **tape);

/* Bytes the tape holds (its checkpoints, all sequences). */
size_t ssmc_tape_bytes(const ssmc_tape *tape);
void ssmc_tape_free(ssmc_tape *tape);

/* ---- ahead of time ---- */
/* Builds a bundle of one model of `source` (opts->model; opts->dims apply)
 * into the directory `outdir` (created if needed): <model>.h, a documented C
 * ABI, and lib<model>.so and lib<model>.a, which need neither LLVM nor ssmc
 * nor NVRTC at run time (libc, libm, pthreads; with cuda targets libdl, and
 * the CUDA driver libcuda.so.1 when a CUDA entry point is called). `targets` is
 * a comma-separated list: "cpu" is this machine's CPU, "cpu:x86-64-v2",
 * "cpu:x86-64-v3" or "cpu:x86-64-v4" a portable x86-64 level (one CPU target
 * at most), "cuda:sm_80", "cuda:sm_90", ... GPU archs, each compiled to cubins
 * by NVRTC now (no GPU needed; SSMC_ERR_UNSUPPORTED when NVRTC cannot be
 * loaded), the highest to PTX too; NULL means "cpu". `dtypes` lists the CUDA
 * kernels' dtype signatures, "f32,bf16/f32,bf16/f32/f32": each the dtype of
 * inputs and outputs, then of params, then of states (a dtype left out is the
 * first); NULL means "f32" (the CPU code takes f32 only). Needs a C compiler,
 * `ar` and `objcopy` on PATH (or $CC, $AR and $OBJCOPY); their output is in
 * the diagnostics when they fail. docs/api.md, "Ahead of time", says what the
 * header holds. */
ssmc_status ssmc_build(ssmc_ctx *ctx, const char *filename, const char *source, size_t len, const ssmc_options *opts,
                       const char *targets, const char *dtypes, const char *outdir);

#ifdef __cplusplus
}
#endif
#endif
