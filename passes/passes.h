/* passes.h: the passes over the IR, in the order the driver runs them.
 * Each pass lives in its own file (passes/<name>.c) with one entry point. */
#ifndef SSMC_PASSES_H
#define SSMC_PASSES_H

#include "ir/ir.h"
#include "support/support.h"

/* ---- lag.c: lets read at earlier steps, rewritten (run first, after lowering) ----
 * Replaces every read of a per-step let at t - k or t - j by a read of a let
 * that recomputes it at that lag, or of hidden states that keep its earlier
 * values (see lag.c). *m is replaced by the rewritten model (allocated in a);
 * a model without such reads is left as it is. False with a diagnostic when
 * memory runs out or a kept let would need too many copies. */
bool pass_lag(arena *a, ir_model **m, diag *d);

/* ---- analysis.c: how each state's update acts on the state (SPEC §2) ---- */
typedef enum pass_class {
    PASS_CLASS_CONSTANT,  /* never updated */
    PASS_CLASS_IDENTITY,  /* S(t) = S(t-1) + U_t */
    PASS_CLASS_SCALAR,    /* S(t) = a_t S(t-1) + U_t, a_t on no axis, or constant along every
                             axis a readout contracts and along some passive axis */
    PASS_CLASS_DIAGONAL,  /* elementwise: a_t varies along a contracted axis or along every axis */
    PASS_CLASS_DIAG_RANK, /* diagonal plus a rank-r correction (delta rule) */
    PASS_CLASS_DENSE,     /* a general linear map */
    PASS_CLASS_NONLINEAR  /* not affine in S */
} pass_class;

typedef enum pass_role { PASS_ROLE_INDEPENDENT, PASS_ROLE_PASSIVE, PASS_ROLE_MIXED } pass_role;

/* A read of another state by an update: the update is coupled to it. */
typedef struct pass_read {
    int tensor;
    bool after_update; /* reads its S(t) rather than S(t-1) */
} pass_read;

typedef struct pass_state {
    int tensor;
    pass_class cls;
    int rank;                     /* r of diagonal+rank-r */
    pass_role roles[IR_MAX_RANK]; /* per axis of the state (all mixed when nonlinear) */
    pass_class diag;              /* the pointwise part alone: IDENTITY, SCALAR or DIAGONAL (for
                                     DIAG_RANK its diagonal part); cls when constant, nonlinear
                                     or truncated */
    ir_ref coef;                  /* the pointwise coefficient when it is one expression of the
                                     update statement, else IR_NONE */
    const char *coef_text;        /* the pointwise coefficient as text; NULL when not affine */
    ir_ref why;                   /* NONLINEAR: where the update stops being affine */
    bool truncated;               /* too large to expand: DENSE stands for "affine, unknown" */
    const pass_read *reads;       /* other states the update reads */
    int nreads;
} pass_state;

typedef struct pass_readout {
    int output;     /* tensor id of the output */
    int state;      /* tensor id of the state read */
    int axis;       /* the state axis contracted */
    ir_ref sum;     /* the reduction instruction */
    int via;        /* the per-step let whose statement holds the sum, or -1 */
    bool after_update; /* reads S(t) rather than S(t-1) */
} pass_readout;

typedef struct pass_analysis {
    pass_state *states;
    int nstates;
    pass_readout *readouts;
    int nreadouts;
} pass_analysis;

bool pass_analyze(arena *a, const ir_model *m, pass_analysis *out, diag *d);
void pass_analysis_print(strbuf *out, const ir_model *m, const pass_analysis *an);

/* ---- chunk.c: the chunk form of each state (SPEC §3's chunked algorithm) ----
 * A product coef * f_1 * ... * f_n of IR subexpressions (f recip: a divisor);
 * each factor's variables are mapped to the update statement's variables (or to
 * atoms past nvars that a sum bound) by `map`, the variables of statement
 * `stmt`, which holds it. */
#define PASS_MAX_FACTORS 16
#define PASS_MAX_READOUTS 4

typedef struct pass_factor {
    ir_ref r;
    const int *map; /* [nvars]: the statement's variables -> the update's */
    uint32_t stmt;
    bool recip;
} pass_factor;

typedef struct pass_product {
    double coef;
    int nf;
    pass_factor f[PASS_MAX_FACTORS];
} pass_product;

typedef enum pass_decay { PASS_DECAY_NONE, PASS_DECAY_SCALAR, PASS_DECAY_KEY } pass_decay;

typedef struct pass_chunk_readout {
    int output;          /* the output (or the let holding the sum) */
    uint32_t stmt;       /* the statement holding the sum */
    ir_ref sum;
    bool after_update;   /* reads S(t), else S(t-1) */
    int var;             /* the sum's variable (the key axis) */
    int value_var;       /* the statement's variable on the value axis */
    int axis_var[IR_MAX_RANK]; /* the statement's variable on each axis of S (the key axis: var) */
    pass_product query;  /* q[i], in the readout statement's variables */
    bool rest;           /* the sum also holds terms free of S: */
    pass_product rest_terms[PASS_MAX_READOUTS]; /* ... these, summed over the sum's variable */
    int nrest;
} pass_chunk_readout;

/* S(t) = a (S(t-1) - beta w (w^T S(t-1))) + key value^T over key and value axes. */
typedef struct pass_chunk {
    int state;
    bool ok;              /* a chunk form: else why (at `where`, or IR_NONE) */
    const char *why;
    ir_ref where;
    uint32_t update;      /* the update statement */
    int key_axis, value_axis; /* axes of the state; value -1: a vector state */
    pass_decay decay_kind;
    pass_product decay;   /* a_t (> 0, proven) */
    pass_product key, value;
    bool delta;
    pass_product beta, dkey;
    pass_chunk_readout readouts[PASS_MAX_READOUTS];
    int nreadouts;
} pass_chunk;

typedef struct pass_chunks {
    pass_chunk *forms; /* one per state, in the analysis' order */
    int nforms;
    bool all;          /* every state has a chunk form */
} pass_chunks;

bool pass_chunk_forms(arena *a, const ir_model *m, const pass_analysis *an, pass_chunks *out, diag *d);

/* ---- chunk_lower.c: a chunked model as prologue, cores and epilogue ----
 * (see chunk_lower.c). Tensor ids: q, k, v, g, beta, w of the prologue's
 * outputs (g -1 for an identity decay; beta, w -1 without a delta rule), r of
 * the epilogue's inputs (the readout results). */
typedef struct pass_chunk_ops {
    int q[PASS_MAX_READOUTS], k, v, g, beta, w;
    int r[PASS_MAX_READOUTS];
} pass_chunk_ops;

typedef struct pass_chunk_parts {
    ir_model *prologue, *epilogue;
    pass_chunk_ops *ops; /* one per chunk form */
    int nops;
} pass_chunk_parts;

bool pass_chunk_lower(arena *a, const ir_model *m, const pass_chunks *cs, pass_chunk_parts *out, diag *d);
void pass_chunk_print(strbuf *out, const ir_model *m, const pass_chunks *cs);
/* ---- rounding.c: how much f32 rounding each tensor's value carries ----
 * len[ntensors]: for every tensor, the length of the longest chain of rounded
 * operations behind its value in one step (a sum of n terms counts n; see
 * rounding.c for the weights), plus carried[tensor] for a tensor a statement
 * defines (carried may be NULL). 0 for inputs and params. */
void pass_rounding(const ir_model *m, const double *carried, double *len);

/* ---- schedule.c: what can run in parallel, and how states are updated ----
 *
 * An index class joins every index variable and every axis of a state, let or
 * output that the statements tie together (the same variable indexing them).
 * A class is `splittable` when each value of it can be computed apart from the
 * others for the whole sequence: every state and output has an axis in it, no
 * reduction runs over it, and no read of a state or let reaches another value
 * of it (no grouped, constant or mixed index). Backends put batch x splittable
 * classes on their grid (threads, blocks); everything else loops inside.
 * Inputs and params are read-only and may be read at any index. */
typedef struct pass_sched {
    int nclasses;
    int *class_dim;        /* [nclasses] the dim of each class */
    bool *splittable;      /* [nclasses] */
    int *var_class;        /* [nvars] class of each variable, -1 if it indexes only inputs/params */
    int *axis_class;       /* [ntensors * IR_MAX_RANK] class of each axis; -1 for inputs and params */
    bool *inplace;         /* [nstmts] a state update that reads the old state only at its own
                              element: it may overwrite the state as it goes */
    /* Split reductions. `partial` is the schedule computed as if the root SUM of
     * an output statement whose output no statement reads could run over a
     * class split across items (each item sums its tile, the tiles' partial
     * sums are added afterwards): such a reduction does not poison its
     * classes, and such an output need not carry them. NULL when no statement
     * qualifies. In that schedule (and only there) partial_over[si * nclasses
     * + k] says statement si's root SUM runs over class k and class_partial[k]
     * that some statement does; in this one both are NULL. */
    struct pass_sched *partial;
    bool *partial_over;    /* [nstmts * nclasses] */
    bool *class_partial;   /* [nclasses] */
} pass_sched;

bool pass_schedule(arena *a, const ir_model *m, pass_sched *out, diag *d);
void pass_schedule_print(strbuf *out, const ir_model *m, const pass_sched *s);

/* ---- unlag.c: reads at t - k become reads of history states ----
 * *out computes what m computes and reads every per-step tensor at t only: the
 * values that cross steps are all in states. m's tensors keep their ids; the
 * history states (x__lag1 .. x__lagK for an input x read at lags up to K) come
 * after them, start at zero and are updated at the end of every step. */
bool pass_unlag(arena *a, const ir_model *m, ir_model **out, diag *d);

/* ---- grad.c: the adjoint of a model (SPEC §6, docs/gradients.md) ----
 * For L = sum over outputs y and final states S of <dy, y> + <dS_T, S(T)>,
 * `adjoint` is an ordinary model run in reverse time whose final states are
 * the gradients with respect to the initial states and (per sequence) the
 * params, and whose outputs are the gradients with respect to the inputs.
 * `forward` is the model to run for training: m with its lags turned into
 * history states (pass_unlag; those states are internal, ids >= nfwd), plus
 * one per-step output `S__prev` of S(t-1) for each state S the adjoint needs
 * (its trace, fed to the adjoint when a chunk is recomputed).
 *
 * Per tensor id of `forward` (-1 where there is none):
 *   trace[i]     states: the output in `forward` of S(t-1)
 *   adj_trace[i] states: the input of the adjoint that takes that trace
 *   adj_value[i] inputs, params: the same tensor in the adjoint
 *   adj_grad[i]  inputs: the adjoint's output dx[T, ...]; params: its state
 *                dP (one per sequence, to be summed over the batch); states:
 *                its state dS (initial value: the cotangent of S(T); final
 *                value: the gradient of S's initial value); outputs: its
 *                input dy[T, ...], the cotangent */
typedef struct pass_grad pass_grad;
struct pass_grad {
    ir_model *forward;
    ir_model *adjoint;
    int nfwd; /* tensors of m; forward's tensors [nfwd, forward->ntensors) are internal */
    int *trace, *adj_trace, *adj_value, *adj_grad; /* [forward->ntensors] */
    /* m's init statements as a model of their own, run for one step when the
     * caller gives no initial state: its params are m's, its outputs S__init
     * the initial values; with its own gradients (the adjoint gives what the
     * initial states' gradients pass on to the params). NULL without inits.
     * init_id[i] (per tensor of forward): a param's id in init->forward, a
     * state's S__init there, else -1. */
    pass_grad *init;
    int *init_id;
};

bool pass_grad_build(arena *a, const ir_model *m, pass_grad *out, diag *d);

/* A lowercase copy of name in a (variable names made from dim names). */
const char *pass_lower_name(arena *a, const char *name);

#endif
