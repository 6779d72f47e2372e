/* plan.h: the kernel plan, built once in passes/plan.c for a target and
 * rendered by every backend (codegen/llvm.c for CPUs, codegen/cuda.c for
 * GPUs). The plan holds every decision about loops, placement and memory;
 * a renderer decides only instruction-level matters (intrinsics, vector
 * width of a load, shuffles, barriers).
 *
 * Vocabulary (the recurrent algorithm, SPEC §3):
 *  - a *work item* is one sequence of the batch times one tile of every index
 *    class on the grid (classes passes/schedule.c found splittable); items are
 *    independent, so any assignment of items to workers (CPU threads, GPU
 *    blocks) gives the same result;
 *  - inside an item, the time-invariant lets run once, then for t = 0 .. T-1
 *    every per-step statement in program order;
 *  - every class c inside an item is covered by cls[c].threads threads times
 *    cls[c].slots values per thread (blocked: the thread with coordinate k owns
 *    values k * slots .. k * slots + slots - 1). A target with one lane (a CPU)
 *    has one thread everywhere, and a class's slots are a loop; a GPU spreads
 *    one class over the lanes of a warp (reductions over it are shuffles) and
 *    one over the other threads (the columns);
 *  - every state and let has a place: registers of the thread that owns the
 *    element, block-local memory (GPU shared memory, CPU scratch), a global
 *    per-item workspace, or (CPU states) its own tensor, updated in place.
 *
 * The target description (plan_target, passes/target.c) brings in the facts
 * a plan depends on: lanes, vector width, workers, cache and shared-memory
 * budgets, register budget. The same plan_make serves every target; steps that
 * only make sense with lanes (layout, register placement, distributed
 * reductions, load patterns) or with loops (interchange, fusion, hoisting,
 * cache-line prefetch) key off the target's facts, not off a backend's name. */
#ifndef SSMC_PASSES_PLAN_H
#define SSMC_PASSES_PLAN_H

#include "ssmc.h"
#include "passes/passes.h"

/* ---- the target ---- */

/* Knobs of a GPU layout, for benchmarking (0: the default). */
typedef struct plan_tune {
    int lane_slots;  /* slots per thread of the lane class (default 16) */
    int state_slots; /* state elements per thread (default 32) */
    int warps;       /* most warps along the column class when it is split (default 4) */
    int share_lets;  /* 1: expensive per-step lets that several threads would each compute are
                        computed once, by the whole block, into shared memory; 2: never
                        (default 1) */
} plan_tune;

typedef struct plan_target {
    const char *name;          /* "cpu", "cuda" */
    int lanes;                 /* threads that run one item together: 1 (loops) or a warp */
    int vector_floats;         /* tiles of a contiguous axis are multiples of this */
    int workers;               /* items that run at once (CPU threads); 0: as many as there are */
    int min_items;             /* work items per sequence at least (when classes allow) */
    int64_t item_state_floats; /* an item's states should fit this (a CPU's L1 data cache) */
    int64_t local_floats;      /* block-local memory per item (GPU shared memory), 0: unbounded */
    int max_reg_slots;         /* registers per thread for states and lets together */
    op_cost hoist_cost;        /* loops: subexpressions at least this costly are hoisted */
    op_cost share_cost;        /* lanes: per-step lets at least this costly are computed once per block */
    bool partial_sums;         /* split reductions: a class an output's root SUM runs over may go on the
                                  grid (each item sums its tile into a scratch slice, the tiles' sums
                                  are added after the kernel); lanes only */
    plan_tune tune;
} plan_target;

/* The CPU target (threads: workers, 0 for every online CPU) and the CUDA
 * target (tune may be NULL). */
plan_target plan_target_cpu(int threads);
plan_target plan_target_cuda(const plan_tune *tune);

/* ---- the plan ---- */

typedef enum plan_place { PLAN_PLACE_NONE, PLAN_PLACE_REG, PLAN_PLACE_LOCAL, PLAN_PLACE_GLOBAL, PLAN_PLACE_TENSOR } plan_place;
extern const char *const plan_place_names[];

typedef struct plan_class {
    int64_t n;      /* the class's extent (the value of its dim) */
    bool split;     /* on the grid */
    int64_t tile;   /* values per item: the tile when split, else n */
    int64_t ntiles; /* items along the class */
    int threads;    /* threads covering it in an item */
    int slots;      /* values per thread: threads * slots >= tile */
    int stride;     /* of its coordinate in the thread id */
    bool lane;      /* threads a power of two inside one warp (or 1): butterfly reductions */
} plan_class;

/* How the values of an index variable are spread over a thread's slots: the
 * value at slot j of the thread with coordinate k (of class cls) is k * slots + j
 * (plus the tile base when cls is split), valid when below n. A variable of no
 * class (it indexes only inputs and params) is spread over the lane class's
 * coordinate the same way (`spread`, n its own dim). */
typedef struct plan_dom {
    int cls;       /* PLAN_FLAT_DOM(stmt) for the elements of a flat statement */
    int64_t n;
    int slots;
    bool spread;
} plan_dom;

/* The domain of flat statement si: slot m is element tid + m * nthreads of
 * its left side (row-major over the tiles), n elements in all. */
#define PLAN_FLAT_DOM(si) (-1 - (int)(si))
#define PLAN_FLAT_STMT(cls) (-1 - (cls))

/* A reduction: a loop over every value; over the thread's slots and then
 * across threads; or (an outer reduction of a flat statement with a group,
 * pass_plan.group) over the lanes of the element's group: lane l of the group
 * accumulates values l, l + G, .. of the reduction's domain flattened row-major
 * (its variables in order, the first slowest), then a butterfly over the G lanes. */
enum { PLAN_RED_SEQ, PLAN_RED_DIST, PLAN_RED_GROUP };
enum { PLAN_LD_INLINE, PLAN_LD_PAT };  /* a load of an input or param: at its use, or
                                          from a pattern's registers */

/* A load of an input (prefetched one step ahead) or a param (hoisted before
 * the time loop) at indices that depend only on the thread's slots, shared by
 * every load with the same key. Its registers are pat<id>[slot of doms[0]]... */
typedef struct plan_pat {
    int tensor;
    int64_t lag;
    ir_index_kind kind[IR_MAX_RANK]; /* per axis of the tensor */
    int64_t k[IR_MAX_RANK];          /* the constant, or the divisor */
    int dom_of[IR_MAX_RANK];         /* VAR/DIV axes: index into doms */
    int pos[IR_MAX_RANK];            /* flat domains: the axis's variable's position on
                                        the statement's left side */
    int ndoms;
    plan_dom doms[IR_MAX_RANK];      /* the innermost axis's domain last */
} plan_pat;

/* Cache-line prefetch of a per-step input's or output's slice one step ahead
 * (targets with loops): cls[i] is the class on the grid that axis i follows,
 * or -1 for the whole axis; the slice spans span + 1 floats. */
typedef struct plan_prefetch {
    int tensor;
    int cls[IR_MAX_RANK];
    int64_t span;
} plan_prefetch;

#define PLAN_LINE_FLOATS 16 /* a cache line */

typedef enum plan_algo { PLAN_ALGO_RECURRENT, PLAN_ALGO_CHUNKED } plan_algo;

typedef struct plan_buf {
    plan_place mem; /* PLAN_PLACE_LOCAL or PLAN_PLACE_GLOBAL */
    int64_t off;    /* in floats, from the start of that memory */
    int64_t len;
} plan_buf;

/* ---- the chunked algorithm (SPEC §3): PLAN_ALGO_CHUNKED ----
 * A chunked model runs as three parts (passes/chunk_lower.c): the prologue, a
 * model without states that computes every chunk form's canonical operands;
 * one core per chunked state, the chunked recurrence over those operands; the
 * epilogue, a model without states that makes the outputs from the readout
 * results. Prologue and epilogue are planned as recurrent models for the same
 * target; reading no input at a lag, they may run with batch and time folded
 * (B * T sequences of one step, the same memory: `fold`).
 *
 * The core of state S, on canonical tensors of the prologue and epilogue in
 * [B, T, nheads, D] row-major (D: K for q, k, w, per-key g; V for v and R; 1 for
 * per-head g and beta):
 *     h(t) = exp(g_t) (h(t-1) - beta_t w_t (w_t^T h(t-1))) + k_t v_t^T
 *     R_r(t) = h(t)^T q_r(t)     (or h(t-1) for a readout of S(t-1))
 * with h[K][V] per (sequence, head) starting from S's initial value (zero when
 * none) and leaving its final value in S, read and written in S's own layout:
 * element (head hh, key i, value j) of sequence b at
 *     b * state_elems + head_off[hh] + i * key_stride + j * value_stride.
 * The chunk: C steps at a time, matrix products inside (intra-chunk
 * attention masked by exp(b_t - b_s) of the cumulative log-decay b, s <= t, or
 * s < t for S(t-1)), the state carried between chunks (docs/architecture.md). */
typedef struct plan_chunk_core {
    int form;                 /* its chunk form (pass_chunks.forms) */
    int state;                /* the state tensor of the source model */
    int nheads, K, V;         /* V = 1 for a vector state */
    int C;                    /* chunk length */
    pass_decay decay;         /* g absent (NONE), [.., nheads] (SCALAR) or [.., nheads, K] (KEY) */
    bool delta;
    int nreadouts;
    bool prev[PASS_MAX_READOUTS]; /* readout r reads S(t-1) */
    pass_chunk_ops ops;       /* operand tensors: q, k, v, g, beta, w of the prologue; r of the epilogue */
    int64_t state_elems, key_stride, value_stride;
    int64_t *head_off;        /* [nheads] */
} plan_chunk_core;

typedef struct plan_chunked {
    pass_chunk_parts parts;
    struct pass_plan *prologue, *epilogue; /* their recurrent plans, for the same target */
    bool fold_prologue, fold_epilogue;
    plan_chunk_core *cores;
    int ncores;
} plan_chunked;

typedef struct pass_plan {
    const ir_model *m;
    plan_target target;
    plan_algo algo;
    plan_chunked *chunked;  /* PLAN_ALGO_CHUNKED: the parts (the fields below then plan nothing) */
    pass_sched sched;
    const pass_analysis *an;

    /* the grid and the classes */
    int ncls;
    plan_class *cls;        /* [ncls] */
    int *grid;              /* [ngrid] classes on the grid, slowest first */
    int ngrid;
    int64_t items_per_seq;  /* work items per sequence: the product of the grid's ntiles */

    /* inside an item (lanes) */
    int lane_cls;           /* the class on the lanes (reductions over it are shuffles), or -1 */
    int col_cls;            /* the class spread over the other threads, or -1 */
    int layout_threads;     /* product of every class's threads */
    int nthreads;           /* threads per item, a multiple of layout_threads */

    /* tensors [ntensors] */
    int64_t *fstride;       /* [ntensors * IR_MAX_RANK] row-major strides over the declared axes */
    int64_t *lstride;       /* [ntensors * IR_MAX_RANK] strides over the item's slice (0: extent 1) */
    int64_t *elems;         /* elements of one sequence's slice */
    int64_t *lelems;        /* elements of the item's slice */
    plan_place *place;      /* states and lets (inputs, params, outputs: NONE) */
    bool *dbuf;             /* a block-local per-step let with two buffers, by the parity of t */
    int *buf_tensor;        /* its buffer: LOCAL and GLOBAL tensors, and a TENSOR-placed state
                               updated through a copy (not in place); else -1 */

    /* statements [nstmts] */
    bool *layout;           /* lanes: threads follow the layout; false: flat over the domain */
    int *group;             /* lanes: a flat per-step statement whose elements are too few for the
                               block: G > 1 lanes per element (a power of two, at most a warp),
                               element eb + tid / G of pass eb computed by the lanes tid % G, its
                               outer reductions PLAN_RED_GROUP; 1: one thread per element */
    int *buf_stmt;          /* lanes: a flat non-in-place update's scratch area; -1: temporaries
                               in registers */
    bool *stmt_xchg;        /* loops: the statement has an interchanged SUM */
    int *fuse;              /* loops: a state update: the readout fused into its loops, or -1;
                               the readout itself: -2 (emitted with the update) */
    ir_ref *fuse_sum;       /* the readout's reduction that runs inside the update's loops */

    /* instructions [ninsts] */
    uint8_t *red_mode;      /* SUM/RMAX: PLAN_RED_* */
    plan_dom *red_dom;      /* DIST reductions */
    int *xchg_var;          /* loops: an interchanged SUM: the statement variable innermost; else -1 */
    int *hoist_var;         /* loops: an expensive subtree that varies with one outer loop variable
                               only: computed for each of its values before the nest; else -1 */
    int *buf_inst;          /* interchanged SUMs and hoisted subtrees: their buffer, or -1 */
    uint8_t *ld_kind;       /* loads of inputs and params: PLAN_LD_* */
    int *ld_pat;            /* the pattern of a PLAN_LD_PAT load */
    plan_pat *pats;
    int npats;

    plan_prefetch *prefetch;
    int nprefetch;

    /* split reductions (target.partial_sums): statement si's linear root (its
     * terms, passes/schedule.c) runs over the item's tile of class k (k split)
     * when partial[si * ncls + k]. Its output o then goes to a scratch area of
     * part_tiles[o] slices (the product of those classes' ntiles), each
     * [batch][T][elems[o]] in f32, slice number the item's tile index over
     * those classes (the first class slowest), at part_off[o] * batch * T
     * floats past the workspace of every item; after the kernel, a finishing
     * step sums the slices in order into the output, in its dtype. An
     * accumulator state o (S = S + terms) instead starts from the given state
     * in the items of tile 0 and from zero in the others, tile 0 keeps it in
     * the state's own memory, and tiles 1 .. part_tiles[o] - 1 leave their
     * final values in slices [batch][elems[o]] (f32) at part_off[o] * batch
     * floats past the partial outputs' scratch (part_floats * batch * T);
     * the finishing step adds them, in order, to the state. part_tiles[o] = 0:
     * not partial. part_floats: the outputs' scratch floats per sequence and
     * step, part_state_floats the accumulators' per sequence (0: none). */
    bool *partial;          /* [nstmts * ncls] */
    int64_t *part_tiles;    /* [ntensors] */
    int64_t *part_off;      /* [ntensors] */
    int64_t part_floats;
    int64_t part_state_floats;

    /* memory per item, in floats: buffers in block-local memory (GPU shared
     * memory, CPU scratch) or the global workspace, each aligned to the
     * target's vector width */
    plan_buf *bufs;
    int nbufs;
    int64_t local_floats;
    int64_t global_floats;
} pass_plan;

/* ---- algo.c: the algorithm (SPEC §3), chosen once for every device ---- */
const char *pass_algo_name(ssmc_algo a);
bool pass_algo_from_name(const char *name, ssmc_algo *out);
/* The algorithm for a model: `requested` when the analysis allows it and it is
 * implemented, the cost model's pick for auto; false with a diagnostic that says
 * why otherwise. */
bool pass_algo_choose(const ir_model *m, const pass_analysis *an, const pass_chunks *cs, ssmc_algo requested,
                      plan_algo *out, diag *d);

/* ---- plan.c ---- */
/* Plans a verified model's kernels for a target with the algorithm chosen.
 * an and sched may be NULL (the analysis is then not consulted; the schedule
 * is computed). Allocates into `a`. */
ssmc_status plan_make(arena *a, const ir_model *m, const pass_analysis *an, const pass_sched *sched, plan_algo algo,
                      const plan_target *target, pass_plan **out, diag *d);

/* `ssmc emit --emit=plan`: the plan as text. */
void plan_print(strbuf *out, const pass_plan *p);
/* The chunked plan of a verified model whose states all have a chunk form
 * (chunks->all): its parts, each planned for the target, and its cores with
 * chunk length C (0: the default, 64). */
ssmc_status plan_make_chunked(arena *a, const ir_model *m, const pass_analysis *an, const pass_chunks *chunks, int C,
                              const plan_target *target, pass_plan **out, diag *d);

/* The same text, every line after `prefix`: the head of a renderer's code. */
void plan_print_comment(strbuf *out, const pass_plan *p, const char *prefix);

/* Queries every renderer needs. */
int plan_axis_class(const pass_plan *p, int tensor, int axis);
bool plan_tracked(const ir_tensor *t); /* states and lets: the tensors a plan places */
bool plan_var_fixed(const pass_plan *p, int v);   /* one value per item: no loop */
int64_t plan_var_extent(const pass_plan *p, int v); /* values of v in an item */
int64_t plan_reg_slots(const pass_plan *p, int tensor);   /* product of its axes' slots */
int64_t plan_local_elems(const pass_plan *p, int tensor); /* product of its axes' tiles */
plan_dom plan_class_dom(const pass_plan *p, int c);         /* the values of class c over the slots */
/* The loop variables of fused readout r in emission order; returns their number. */
int plan_readout_loops(const pass_plan *p, const ir_stmt *r, ir_ref sum, bool xchg, int *out);

#endif
