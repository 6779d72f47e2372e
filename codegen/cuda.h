/* cuda.h (codegen): CUDA C for one model, from its IR and schedule.
 *
 * Two steps. cuda_plan_make decides, once per model, how the recurrent kernel
 * maps onto the GPU: which classes of pass_sched go on the grid and in what
 * tiles, how the block's threads and per-thread register slots cover the
 * classes that stay inside a block, where every state and let lives
 * (registers, shared memory, or a global per-block workspace) and how each
 * statement and reduction runs. cuda_emit then renders the kernel's source for
 * one dtype signature of a run (the dtypes of the tensors given, which states
 * and outputs are present). The source needs no header: it carries its own
 * prelude, so NVRTC compiles it with no include path.
 *
 * The kernel (named cuda_kernel_name, in a program named cuda_program_name)
 * takes (long long B, long long T, float *ws, then one pointer per input,
 * param, state and output in IR tensor order); a state's pointer holds the
 * initial state and receives the final state in place; a pointer whose tensor
 * is absent from the signature is never touched. It is launched over
 * cuda_launch_of's grid, block and dynamic shared memory, with `ws` pointing at
 * blocks * ws_floats floats of device memory (NULL when ws_floats is 0).
 * Nothing here needs a GPU, NVRTC or CUDA headers. */
#ifndef SSMC_CODEGEN_CUDA_H
#define SSMC_CODEGEN_CUDA_H

#include <stdbool.h>
#include <stdint.h>

#include "ssmc.h"
#include "ir/ir.h"
#include "passes/passes.h"
#include "support/support.h"

typedef struct cuda_plan cuda_plan;

/* What one run looks like to the generated code. Arrays have m->ntensors
 * entries (lets are ignored). */
typedef struct cuda_sig {
    const ssmc_dtype *dtype; /* dtype of each tensor given */
    const bool *present;     /* inputs and params: must be true; states: an initial
                                state is read and the final state written; outputs:
                                kept */
    bool vec;                /* every pointer is 16-byte aligned: vector loads allowed */
} cuda_sig;

typedef struct cuda_launch {
    int64_t blocks;        /* grid.x */
    unsigned threads;      /* block.x */
    unsigned shared_bytes; /* dynamic shared memory */
    int64_t ws_floats;     /* per block, of the global workspace */
} cuda_launch;

/* Knobs of the layout, for benchmarking (0: the default). */
typedef struct cuda_tune {
    int lane_slots;  /* slots per thread of the lane class (default 16) */
    int state_slots; /* state elements per thread (default 32) */
    int warps;       /* most warps along the column class when it is split (default 4) */
    int share_lets;  /* 1: expensive per-step lets that several threads would each compute are
                        computed once, by the whole block, into shared memory; 2: never
                        (default 1) */
} cuda_tune;

/* The knobs from SSMC_CUDA_LANE_SLOTS, SSMC_CUDA_STATE_SLOTS, SSMC_CUDA_WARPS,
 * SSMC_CUDA_SHARE_LETS. */
cuda_tune cuda_tune_from_env(void);

/* Plans the kernel of a verified model (tune may be NULL). Allocates into `a`. */
ssmc_status cuda_plan_make(arena *a, const ir_model *m, const cuda_tune *tune, cuda_plan **out, diag *d);

/* The CUDA C of the plan's kernel for one signature, appended to out. Every
 * statement is preceded by a comment naming its DSL line. */
ssmc_status cuda_emit(strbuf *out, const cuda_plan *p, const cuda_sig *sig, diag *d);

cuda_launch cuda_launch_of(const cuda_plan *p, int64_t batch);

/* "ssmc_<model>.cu" and "ssmc_<model>". */
void cuda_program_name(strbuf *out, const ir_model *m);
void cuda_kernel_name(strbuf *out, const ir_model *m);

/* A few lines saying how the plan maps the model onto the GPU (they also head
 * the emitted source). */
void cuda_plan_describe(strbuf *out, const cuda_plan *p);

/* Where a state or let lives (for tests and the description). */
typedef enum cuda_place { CUDA_PLACE_NONE, CUDA_PLACE_REG, CUDA_PLACE_SHARED, CUDA_PLACE_GLOBAL } cuda_place;
cuda_place cuda_plan_place(const cuda_plan *p, int tensor);

#endif
