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
} pass_sched;

bool pass_schedule(arena *a, const ir_model *m, pass_sched *out, diag *d);
void pass_schedule_print(strbuf *out, const ir_model *m, const pass_sched *s);

#endif
