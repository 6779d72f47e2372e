/* cuda_plan.h: the fields of a cuda_plan, shared by the planner
 * (codegen/cuda_plan.c) and the emitter (codegen/cuda.c). Nothing else
 * includes it; the rest of the project sees the opaque plan of codegen/cuda.h.
 *
 * The kernel runs one block per grid item: a batch element times one tile of
 * every splittable class. Inside a block every class c is covered by
 * cls[c].threads threads times cls[c].slots register slots: the thread whose
 * coordinate for c is k (tid / stride % threads) owns the local values
 * k * slots .. k * slots + slots - 1 (blocked, so a thread's values along an
 * axis are contiguous: vector loads). A tensor that lacks class c is held by
 * every thread along c (replicas); only the replica with coordinate 0 writes
 * memory. Threads beyond layout_threads (up to nthreads) are replicas of the
 * whole layout; they exist to give flat statements more threads. */
#ifndef SSMC_CODEGEN_CUDA_PLAN_H
#define SSMC_CODEGEN_CUDA_PLAN_H

#include "codegen/cuda.h"

typedef struct cuda_cls {
    int64_t n;      /* the class's extent (the value of its dim) */
    bool split;     /* on the grid */
    int64_t tile;   /* values per block: the tile when split, else n */
    int64_t ntiles; /* blocks along the class */
    int threads;    /* threads covering it */
    int slots;      /* register slots per thread: threads * slots >= tile */
    int stride;     /* of its coordinate in the thread id */
    bool lane;      /* threads a power of two inside one warp (or 1): butterfly reductions */
} cuda_cls;

/* How the values of an index variable are spread over a thread's slots: the
 * value at slot j of the thread with coordinate k (of class cls) is k * slots + j
 * (plus the tile base when cls is split), valid when below n. A variable of no
 * class (it indexes only inputs and params) is spread over the lane class's
 * coordinate the same way (`spread`, n its own dim). */
typedef struct cuda_dom {
    int cls;       /* CUDA_FLAT_DOM(stmt) for the elements of a flat statement */
    int64_t n;
    int slots;
    bool spread;
} cuda_dom;

/* The domain of flat statement si: slot m is element tid + m * nthreads of
 * its left side (row-major over the tiles), n elements in all. */
#define CUDA_FLAT_DOM(si) (-1 - (int)(si))
#define CUDA_FLAT_STMT(cls) (-1 - (cls))

enum { CUDA_RED_SEQ, CUDA_RED_DIST };  /* a reduction: loop over every value, or
                                          over the thread's slots and then across
                                          threads (warp shuffles) */
enum { CUDA_LD_INLINE, CUDA_LD_PAT };  /* a load of an input or param: at its use,
                                          or from a pattern's registers */

/* A load of an input (prefetched one step ahead) or a param (hoisted before
 * the time loop) at indices that depend only on the thread's slots, shared by
 * every load with the same key. Its registers are pat<id>[slot of doms[0]]... */
typedef struct cuda_pat {
    int tensor;
    int64_t lag;
    ir_index_kind kind[IR_MAX_RANK]; /* per axis of the tensor */
    int64_t k[IR_MAX_RANK];          /* the constant, or the divisor */
    int dom_of[IR_MAX_RANK];         /* VAR/DIV axes: index into doms */
    int pos[IR_MAX_RANK];            /* flat domains: the axis's variable's position on
                                        the statement's left side */
    int ndoms;
    cuda_dom doms[IR_MAX_RANK];      /* the innermost axis's domain last */
} cuda_pat;

struct cuda_plan {
    const ir_model *m;
    pass_sched sched;
    int ncls;
    cuda_cls *cls;
    int lane_cls;           /* the class on the lanes (reductions over it are shuffles), or -1 */
    int col_cls;            /* the class spread over the other threads, or -1 */
    int layout_threads;     /* product of every class's threads */
    int nthreads;           /* a multiple of layout_threads */
    cuda_place *place;      /* [ntensors]: states and lets */
    bool *dbuf;             /* [ntensors]: a shared per-step let with two buffers, by the
                               parity of t (no barrier before the next step writes it) */
    int64_t *off;           /* [ntensors]: offset in floats in shared memory or the workspace */
    int64_t shared_floats;  /* per block */
    int64_t ws_floats;      /* per block */
    bool *layout;           /* [nstmts]: true: threads follow the layout; false: flat over the domain */
    int *scratch;           /* [nstmts]: flat non-in-place updates: -1 temporaries in
                               registers, else offset of a scratch area */
    cuda_place scratch_place;
    uint8_t *red_mode;      /* [ninsts] for SUM/RMAX */
    cuda_dom *red_dom;      /* [ninsts] for DIST reductions */
    uint8_t *ld_kind;       /* [ninsts] for loads of inputs and params */
    int *ld_pat;            /* [ninsts] pattern of a CUDA_LD_PAT load */
    cuda_pat *pats;
    int npats;
};

/* The number of tensors' slots (product over the tensor's axes' classes). */
int64_t cuda_reg_slots(const cuda_plan *p, int tensor);
/* Extent in a block of a state or let: product of its axes' tiles. */
int64_t cuda_local_elems(const cuda_plan *p, int tensor);

#endif
