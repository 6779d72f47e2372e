/* chunked_run.h: a chunked plan (passes/plan.h, PLAN_ALGO_CHUNKED) run on a
 * backend. The runner is the same for every backend: it compiles the prologue
 * and epilogue as models of their own with the backend itself, a core per
 * chunked state with the backend's core hooks, and at every run allocates the
 * canonical operands and readout results (f32, in the backend's memory), runs
 * the prologue (batch and time folded when the plan allows), the cores, and the
 * epilogue into the caller's outputs. */
#ifndef SSMC_CODEGEN_CHUNKED_RUN_H
#define SSMC_CODEGEN_CHUNKED_RUN_H

#include "codegen/backend.h"

/* What a core reads and writes in one run: f32 canonical tensors (plan.h)
 * and the state (its initial value, replaced by its final one), all in the
 * backend's memory. state NULL: start from zero, drop the final value. */
typedef struct chunk_core_io {
    const float *q[PASS_MAX_READOUTS], *k, *v, *g, *beta, *w;
    float *r[PASS_MAX_READOUTS];
    void *state;
    ssmc_dtype state_dtype;
} chunk_core_io;

/* What a core's backward reads and writes in one run of T steps: the
 * gradients of L = sum_r <dr_r, R_r> + <dstate, h(T)> with respect to every
 * operand and the state before the first step (f32, the same layouts as
 * chunk_core_io). With the delta rule k and w are one vector (passes/chunk.c
 * proves it): only dk + dw is the gradient along it, and how it splits
 * between the two is the algorithm's. */
typedef struct chunk_core_grad_io {
    const float *q[PASS_MAX_READOUTS], *k, *v, *g, *beta, *w; /* the operands (absent ones NULL) */
    const float *dr[PASS_MAX_READOUTS];                         /* the readouts' cotangents */
    float *dq[PASS_MAX_READOUTS], *dk, *dv, *dg, *dbeta, *dw;   /* written; NULL where the operand is */
    const float *state; /* the state before the first step, f32 in the state's layout; NULL: zero */
    float *dstate;      /* in: the cotangent of h(T); out: the gradient of the state before the first step */
    void *work;         /* core_backward's workspace (core_backward_ws bytes, uninitialised); NULL when it needs none */
} chunk_core_grad_io;

typedef struct chunk_hooks {
    const backend *be; /* compiles and runs the prologue and the epilogue */
    /* the run's workspace in the backend's memory (host memory on a CPU, device
     * memory on a GPU), at least `bytes`, 256-byte aligned, valid until the next
     * call; the backend keeps and grows it (runs of one model are serialised) */
    void *(*workspace)(void *ctx, size_t bytes, diag *d);
    /* zeroes `bytes` at `ptr` in the backend's memory (a state given only to
     * receive its final value starts from zero: SSMC_ARG_FINAL_ONLY) */
    ssmc_status (*zero)(void *ctx, void *ptr, size_t bytes, void *stream, diag *d);
    /* the cores */
    ssmc_status (*core_compile)(void *ctx, const plan_chunk_core *c, const ssmc_options *o, diag *d, void **core);
    ssmc_status (*core_run)(void *ctx, void *core, int64_t batch, int64_t T, const chunk_core_io *io, void *stream,
                            diag *d);
    void (*core_free)(void *ctx, void *core);
    /* the core's backward over T steps (chunk_core_grad_io) in the backend's
     * memory, enqueued on `stream`: chunk states recomputed from io->state,
     * then the chunks in reverse; NULL where the backend has none (gradients
     * of a chunked model are then refused) */
    ssmc_status (*core_backward)(void *ctx, void *core, int64_t batch, int64_t T, const chunk_core_grad_io *io,
                                 void *stream, diag *d);
    /* the bytes of io->work core_backward needs for a run of batch x T;
     * NULL: none */
    size_t (*core_backward_ws)(void *ctx, void *core, int64_t batch, int64_t T);
    /* whether core_backward renders this core (false with the reason in d
     * when d); NULL: every core */
    bool (*core_has_backward)(void *ctx, void *core, diag *d);
    /* core_run on host memory (chunked_core_forward); NULL: core_run takes
     * host memory itself (a CPU backend) */
    ssmc_status (*core_run_host)(void *ctx, void *core, int64_t batch, int64_t T, const chunk_core_io *io, diag *d);
    /* core_backward on host memory, with a workspace of its own (io->work
     * unused), finished when it returns; NULL: core_backward takes host
     * memory itself */
    ssmc_status (*core_backward_host)(void *ctx, void *core, int64_t batch, int64_t T, const chunk_core_grad_io *io,
                                      diag *d);
} chunk_hooks;

typedef struct chunked_state chunked_state;

/* m is the source model, p its chunked plan; ctx is handed to every hook. */
ssmc_status chunked_compile(const chunk_hooks *h, void *ctx, const ir_model *m, const pass_plan *p, const ssmc_options *o,
                            diag *d, chunked_state **out);
/* tensors in IR order of the source model, as backend.h's run takes them; on
 * a device backend (device true) their data are device addresses, and every
 * step is enqueued on `stream`. */
ssmc_status chunked_run(chunked_state *s, int64_t batch, int64_t T, const backend_tensor *tensors, bool device,
                        void *stream, diag *d);
void chunked_free(chunked_state *s);

/* For the chunked backward (driver/grad_chunked.c), which runs the parts
 * itself: the plan, and core c's forward and backward, on host memory
 * (device false: hooks.core_run_host or core_run, core_backward_host or
 * core_backward) or on the backend's device (device true: core_run and
 * core_backward, enqueued on `stream`). chunked_core_backward_ws: the bytes
 * of io->work that chunked_core_backward needs there (0: none, io->work may
 * be NULL). chunked_has_backward is false, with the reason in d when d,
 * where the backend has no core backward or does not render one of the
 * cores'; chunked_core_backward is then SSMC_ERR_UNSUPPORTED, said in d. */
const plan_chunked *chunked_plan(const chunked_state *s);
bool chunked_has_backward(const chunked_state *s, diag *d);
ssmc_status chunked_core_forward(chunked_state *s, int c, int64_t batch, int64_t T, const chunk_core_io *io, bool device,
                                 void *stream, diag *d);
size_t chunked_core_backward_ws(const chunked_state *s, int c, int64_t batch, int64_t T, bool device);
ssmc_status chunked_core_backward(chunked_state *s, int c, int64_t batch, int64_t T, const chunk_core_grad_io *io,
                                  bool device, void *stream, diag *d);

#endif
