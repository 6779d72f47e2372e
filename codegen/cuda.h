/* cuda.h (codegen): CUDA C for one model, rendered from its kernel plan
 * (passes/plan.h, made for plan_target_cuda: the grid and tiles, how the
 * block's threads and per-thread register slots cover the classes inside a
 * block, where every state and let lives, how each statement and reduction
 * runs, which loads are register patterns were decided there). cuda_emit
 * renders the kernel's source for one dtype signature of a run (the dtypes of
 * the tensors given, which states and outputs are present). The source needs
 * no header: it carries its own prelude, so NVRTC compiles it with no include
 * path.
 *
 * The kernel (named cuda_kernel_name, in a program named cuda_program_name)
 * takes (long long B, long long T, float *ws, [rows, has: see cuda_sig.rows,]
 * then one pointer per input,
 * param, state and output in IR tensor order); a state's pointer holds the
 * initial state and receives the final state in place; a pointer whose tensor
 * is absent from the signature is never touched. It is launched over
 * cuda_launch_of's grid, block and dynamic shared memory, with `ws` pointing at
 * cuda_ws_floats floats of device memory (NULL when that is 0). An output
 * whose statement is a split reduction (plan.h part_tiles) is written into the
 * scratch past the blocks' workspace, not through its pointer: after the
 * kernel, the caller sums its part_tiles slices, in order, into the output
 * (the helper kernel cuda_helper_name(sum_rows) does exactly that); a partial
 * accumulator state leaves tiles 1.. of its final value past those, and the
 * caller adds them to the state (cuda_helper_add_name's kernel).
 * Nothing here needs a GPU, NVRTC or CUDA headers. */
#ifndef SSMC_CODEGEN_CUDA_H
#define SSMC_CODEGEN_CUDA_H

#include <stdbool.h>
#include <stdint.h>

#include "ssmc.h"
#include "ir/ir.h"
#include "passes/plan.h"
#include "support/support.h"

/* What one run looks like to the generated code. Arrays have m->ntensors
 * entries (lets are ignored). */
typedef struct cuda_sig {
    const ssmc_dtype *dtype; /* dtype of each tensor given */
    const bool *present;     /* inputs and params: must be true; states: an initial
                                state is read and the final state written; outputs:
                                kept */
    bool vec;                /* every pointer is 16-byte aligned: vector loads allowed */
    const bool *fresh;       /* NULL, or states present that only receive the final
                                state: the initial value is the init's, or zero */
    /* States by pool row (decoding against a serving cache): the kernel takes
     * two more pointers after ws, const int *rows and const unsigned char *has
     * (either may be NULL). Sequence b of the batch reads and writes row
     * rows[b] of every state tensor given (row b when rows is NULL); a
     * negative row is a padding slot, whose block returns at once (no output
     * written, no state touched); has[b] == 0 makes sequence b start from the
     * model's initial state (its init, or zeros) instead of its row, which
     * still receives the final state. */
    bool rows;
    bool one_step;           /* T is 1 (the kernel's T argument is ignored): a decode step */
} cuda_sig;

typedef struct cuda_launch {
    int64_t blocks;        /* grid.x */
    unsigned threads;      /* block.x */
    unsigned shared_bytes; /* dynamic shared memory */
    int64_t ws_floats;     /* per block, of the global workspace */
    int64_t part_floats;   /* per sequence and step, of the partial sums' scratch past the
                              blocks' workspace (plan.h); 0: none */
    int64_t part_state_floats; /* per sequence, of the partial accumulators' past that */
} cuda_launch;

/* The workspace a launch of batch x T needs, in floats: every block's, then the
 * partial sums' scratch. */
int64_t cuda_ws_floats(const cuda_launch *l, int64_t batch, int64_t T);

/* The CUDA C of the plan's kernel for one signature, appended to out. Every
 * statement is preceded by a comment naming its DSL line. */
ssmc_status cuda_emit(strbuf *out, const pass_plan *p, const cuda_sig *sig, diag *d);

cuda_launch cuda_launch_of(const pass_plan *p, int64_t batch);

/* The NVRTC options the kernels are compiled with, beyond those
 * rt_nvrtc_compile always passes: by the CUDA backend at load time and by
 * driver/bundle.c for AOT bundles. */
#define CUDA_NVRTC_NOPTIONS 1
extern const char *const cuda_nvrtc_options[CUDA_NVRTC_NOPTIONS];

/* The prelude every kernel's source starts with: storage types (ssmc_bf16,
 * ssmc_f16), conversions, loads and stores (ssmc_get, ssmc_st, ...). It reads
 * SSMC_MASK, which the source defines before it. */
void cuda_prelude(strbuf *out);

/* The helper kernels the gradient driver's device buffers need
 * (backend_mem, codegen/backend.h), one program (CUDA_HELPERS_PROGRAM) for
 * every dtype: ssmc_convert_<dst>_<src>(long long n, D *dst, const S *src)
 * converts n elements through f32, ssmc_sum_rows_<dst>(long long rows, long
 * long n, D *dst, const float *src, const int *pool_rows, long long per_seq)
 * writes dst[e] = the sum over r of src[r * n + e], r in order (the params'
 * batch sums; split reductions' tiles), skipping e when pool_rows is not NULL
 * and pool_rows[e / per_seq] < 0 (a decode's padding slot); dtype names as in support/dtype.h (f32, f16, bf16, f64).
 * CUDA_HELPERS_THREADS threads a block, one per element, but ssmc_sum_rows_*:
 * its grid is ceil(n / P) blocks, P = cuda_sum_rows_per_block(rows, n): 32
 * elements a block where the rows are many and the elements few (a param's sums
 * over the batch and the steps), else CUDA_HELPERS_THREADS (P = 32 exactly when
 * n <= 32 gridDim.x); a block's threads are CUDA_HELPERS_THREADS / P groups that
 * sum rows g, g + groups, .. of each element, then one thread adds the groups'
 * sums in order (deterministic), with CUDA_HELPERS_THREADS floats of dynamic
 * shared memory. */
#define CUDA_HELPERS_PROGRAM "ssmc_helpers.cu"
#define CUDA_HELPERS_THREADS 256
int cuda_sum_rows_per_block(int64_t rows, int64_t n);
void cuda_emit_helpers(strbuf *out);
void cuda_helper_add_name(strbuf *out, ssmc_dtype dst);
void cuda_helper_name(strbuf *out, bool sum_rows, ssmc_dtype dst, ssmc_dtype src);

/* "ssmc_<model>.cu" and "ssmc_<model>". */
void cuda_program_name(strbuf *out, const ir_model *m);
void cuda_kernel_name(strbuf *out, const ir_model *m);

#endif
