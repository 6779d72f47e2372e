/* llvm.h: CPU code through the LLVM 19 C API (codegen/llvm.c is the only file
 * that includes llvm-c). One lowering of a verified IR model to an LLVM module,
 * three ways out of it: JIT (ORC LLJIT), text (`--emit=llvm`) and an object
 * file (AOT bundles, driver/bundle.c).
 *
 * The generated kernel runs work items. An item is one sequence b of the batch
 * and one tile of every index class that the plan puts on the grid (classes that
 * passes/schedule.c found splittable); everything else of the model is a loop
 * inside the item: the time-invariant lets once, then for t = 0 .. T-1 every
 * per-step statement in program order. Items are independent of each other, so
 * any partition of [0, batch * items_per_seq) over threads gives the same result.
 *
 *   void <symbol>(const llvm_kargs *a, int64_t item_begin, int64_t item_end, float *scratch)
 *
 * runs items [item_begin, item_end) (nothing when item_begin >= item_end).
 * Every tensor is f32 and row-major in the layouts of SPEC §5; tensors must not
 * overlap (an output or state sharing memory with any other tensor is undefined).
 * a->tensors is indexed by IR tensor id: inputs and params are read; a state
 * holds the initial state on entry and the final state on return (it must be
 * given: zeros for "no initial state"); an output may be NULL (not computed);
 * lets are NULL (they live in scratch). A model with init statements also
 * reads a->fresh, a byte per tensor id: nonzero for a state given no initial
 * value, which then starts from its init statement (its buffer's content is
 * ignored; a state without an init starts from the buffer, zeros). scratch holds scratch_floats floats,
 * 64-byte aligned, private to the calling thread for the duration of the call.
 *
 * Without LLVM (SSMC_HAVE_LLVM undefined) every function here reports
 * SSMC_ERR_UNSUPPORTED. */
#ifndef SSMC_CODEGEN_LLVM_H
#define SSMC_CODEGEN_LLVM_H

#include <stdbool.h>
#include <stdint.h>

#include "ir/ir.h"
#include "passes/plan.h"
#include "ssmc.h"
#include "support/support.h"

typedef struct llvm_kargs {
    int64_t T;
    float *const *tensors;        /* [ntensors] */
    const unsigned char *fresh;   /* [ntensors]: read only when the model has init statements */
} llvm_kargs;

typedef void llvm_kernel_fn(const llvm_kargs *a, int64_t item_begin, int64_t item_end, float *scratch);

/* What a caller needs to know to run a kernel. */
typedef struct llvm_kernel_shape {
    int64_t items_per_seq;  /* work items per sequence */
    int64_t scratch_floats; /* f32 scratch per concurrent call (a multiple of 16) */
    int64_t scratch_stride; /* floats from one worker's scratch to the next: whole 4 KiB pages
                               (SCRATCH_PAGE_FLOATS), from a page-aligned block, so that no
                               two threads' scratch share a page (see set_shape in llvm.c) */
} llvm_kernel_shape;

#define SCRATCH_PAGE_FLOATS 1024

/* A JIT-compiled kernel: one LLJIT instance (no state shared with any other). */
typedef struct llvm_jit llvm_jit;

/* The kernel's symbol for model `name` ("ssmc_<name>"), in a. */
const char *llvm_symbol(arena *a, const char *name);

/* Renders the plan (made for plan_target_cpu) of a model, optimises the
 * module (O3 for the host CPU) and JIT-compiles it. */
ssmc_status llvm_jit_compile(const pass_plan *p, diag *d, llvm_jit **out, llvm_kernel_shape *shape);
llvm_kernel_fn *llvm_jit_kernel(const llvm_jit *j);
void llvm_jit_free(llvm_jit *j); /* NULL is allowed */

/* The optimised module as text, after comment lines that say which index
 * classes are on the grid and how each statement loops. */
ssmc_status llvm_emit_text(const pass_plan *p, strbuf *out, diag *d);

/* Writes the optimised module as a position-independent object file for the
 * host CPU (cpu NULL) or for the LLVM CPU named `cpu` (e.g. "x86-64-v3"); the
 * kernel is the global symbol llvm_symbol(m->name), with hidden visibility. */
ssmc_status llvm_emit_object(const pass_plan *p, const char *cpu, const char *path, llvm_kernel_shape *shape,
                             diag *d);

#endif
