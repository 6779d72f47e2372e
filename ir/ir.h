/* ir.h: the IR of one model: the per-step computation over index domains.
 *
 * A model is a list of tensors (inputs, params, states, outputs, lets) and a
 * list of statements in program order. Each statement defines one tensor over
 * the index domain of its free variables: a time-invariant let (evaluated once,
 * before step 0), a per-step let, a state update, or an output. Its value is an
 * expression in the model's flat instruction array; instructions refer to each
 * other by 32-bit index, and an operand always precedes its user.
 *
 * Reads (IR_LOAD) name a tensor and one index per axis. A read of a state says
 * which value it sees: `after_update` false is S(t-1), true is S(t). Reads of
 * per-step tensors carry a time lag on their T axis: t - lag - var (var
 * optional). Lowering gives lags to inputs and per-step lets; passes/lag.c
 * then replaces every lagged read of a let (by lets of its own recomputed at
 * the lag, or by hidden states that keep earlier values), so the backends see
 * lags on inputs only. IR_IDX is an index variable's value as a number.
 *
 * A state may have an init statement (model.inits): its initial value from
 * params, literals and index variables, used when the caller gives none.
 * Dims are concrete here: -D overrides are applied before lowering.
 *
 * Extensions that only passes make (the front end never produces them):
 * - `reverse` models (the adjoint of passes/grad.c) run their steps at
 *   t = T-1, T-2, ..., 0. A state's S(t-1) ("@old") is then the value left by
 *   the step executed before, i.e. at time t + 1, and its initial value is the
 *   value before step T-1. A lag k on a per-step tensor reads k steps earlier
 *   in execution order, at time t + k, and reads past the end (t + k >= T)
 *   give 0: a reverse model is exactly a forward model run on per-step
 *   tensors reversed in time.
 * - IR_IX_AFFINE indices, var * k + var2, with var2 ranging over k values:
 *   the adjoint of a grouped read x[i / k] enumerates the k values of i that
 *   read one element. */
#ifndef SSMC_IR_H
#define SSMC_IR_H

#include <stdbool.h>
#include <stdint.h>

#include "support/diag.h"
#include "support/ops.h"

#define IR_MAX_RANK 8
typedef uint32_t ir_ref;
#define IR_NONE UINT32_MAX

/* The ops come from the one table in support/ops.h (arity, name, kind, cost,
 * derivative rule): op_table[op]. SUM and RMAX reduce their operand over
 * bound variables (.red). */
typedef enum ir_op {
#define X(id, arity, name, kind, cost, grad) IR_##id,
    SSMC_OPS(X)
#undef X
    IR_OP_COUNT
} ir_op;

typedef enum ir_kind { IR_INPUT, IR_PARAM, IR_STATE, IR_OUTPUT, IR_LET } ir_kind;
extern const char *const ir_kind_names[];

typedef struct ir_dim {
    const char *name;
    int64_t value;
    src_loc loc;
} ir_dim;

typedef struct ir_tensor {
    const char *name;
    ir_kind kind;
    bool per_step;            /* a T axis first (not counted in rank) */
    int rank;
    int dims[IR_MAX_RANK];    /* dim ids of the axes after T */
    int def;                  /* the statement defining it (lets, outputs, updated states), or -1 */
    bool hidden;              /* a state made by passes/lag.c: not part of the public API; it
                                 starts from zero and its final value is dropped */
    src_loc loc;
} ir_tensor;

/* A tensor made by passes/lag.c, and what it holds (for --emit=ir). */
typedef struct ir_origin {
    int tensor;  /* the new let or hidden state */
    int let;     /* the let whose earlier values it holds */
    int64_t lag; /* at t - lag, */
    bool window; /* ... minus the value w of its first axis (a let over every w of that dim) */
} ir_origin;

typedef struct ir_var {
    const char *name;
    int dim;                  /* its range is dims[dim].value */
} ir_var;

typedef enum ir_index_kind {
    IR_IX_VAR,   /* var */
    IR_IX_DIV,   /* var / k: grouped axes */
    IR_IX_CONST, /* k */
    IR_IX_AFFINE /* var * k + var2, var2 ranging over [0, k) (passes only) */
} ir_index_kind;

typedef struct ir_index {
    ir_index_kind kind;
    int var;
    int64_t k;
    int var2; /* IR_IX_AFFINE only */
} ir_index;

typedef struct ir_inst {
    uint8_t op;     /* ir_op */
    src_loc loc;
    ir_ref a, b, c; /* operands, op_table[op].arity of them in this order (IR_NONE when absent) */
    union {
        double num; /* CONST */
        int var;    /* IDX: the index variable */
        struct {
            int tensor;
            uint32_t ix;       /* indices: model.ix[ix .. ix + rank) */
            int64_t lag;       /* per-step tensors: read at t - lag - var */
            int lag_var;       /* ... var (-1: none) */
            bool after_update; /* states: sees S(t) rather than S(t-1) */
        } load;
        struct {
            uint32_t vars;     /* bound variables: model.red_vars[vars .. vars + nvars) */
            uint32_t nvars;
        } red;
    };
} ir_inst;

typedef struct ir_stmt {
    int tensor;              /* the tensor it defines */
    int vars[IR_MAX_RANK];   /* free variables, one per axis of the tensor (after T) */
    ir_ref root;
    bool per_step;           /* false: a time-invariant let, evaluated once */
    src_loc loc;
} ir_stmt;

typedef struct ir_model {
    const char *name;
    src_loc loc;
    const src_file *file;    /* the source, for comments in generated code */
    ir_dim *dims;
    uint32_t ndims;
    ir_tensor *tensors;
    uint32_t ntensors;
    ir_var *vars;
    uint32_t nvars;
    ir_inst *insts;
    uint32_t ninsts;
    ir_index *ix;
    uint32_t nix;
    uint32_t *red_vars;
    uint32_t nred_vars;
    ir_stmt *stmts;
    uint32_t nstmts;
    ir_stmt *inits;          /* init statements (per_step false, one per state at most), in source order */
    uint32_t ninits;
    ir_origin *origins;      /* tensors made by passes/lag.c */
    uint32_t norigins;
    bool reverse;            /* steps run at t = T-1 .. 0 (see the top of this file) */
} ir_model;

/* Elements of one sequence's slice of a tensor (product of its axes, T excluded). */
int64_t ir_tensor_elems(const ir_model *m, const ir_tensor *t);
int ir_find_tensor(const ir_model *m, const char *name);
/* Operand i (0, 1, 2) of an instruction: a, b or c. */
ir_ref ir_operand(const ir_inst *in, int i);
/* Whether the expression at r reads tensor `tensor`. */
bool ir_reads(const ir_model *m, ir_ref r, int tensor);
/* The init statement of state `tensor`, or NULL. */
const ir_stmt *ir_find_init(const ir_model *m, int tensor);
/* What passes/lag.c made tensor `tensor` for, or NULL. */
const ir_origin *ir_find_origin(const ir_model *m, int tensor);
/* The first read of a per-step tensor at an earlier step (t - k, t - j) or
 * hidden state (passes/lag.c), located; NULL when every step reads only its
 * own inputs and the states: then a run continued from its final states (a
 * decode) gives what one run over the whole sequence gives. */
const src_loc *ir_first_lagged_read(const ir_model *m);

/* ---- builder: growable arrays, frozen into the arena by ir_finish ----
 * For passes that make new models (passes/unlag.c, passes/grad.c). The add
 * functions return the new element's id (-1 or IR_NONE once memory ran out;
 * `oom` is then set and ir_finish fails). */
typedef struct arena arena;
typedef struct strbuf strbuf;
typedef struct ir_builder {
    ir_dim *dims;
    size_t ndims, cdims;
    ir_tensor *tensors;
    size_t ntensors, ctensors;
    ir_var *vars;
    size_t nvars, cvars;
    ir_inst *insts;
    size_t ninsts, cinsts;
    ir_index *ix;
    size_t nix, cix;
    uint32_t *red_vars;
    size_t nred_vars, cred_vars;
    ir_stmt *stmts;
    size_t nstmts, cstmts;
    ir_stmt *inits;
    size_t ninits, cinits;
    ir_origin *origins;
    size_t norigins, corigins;
    bool oom;
} ir_builder;

/* Starts a builder holding a copy of m (NULL: empty). */
void ir_build_init(ir_builder *b, const ir_model *m);
int ir_build_dim(ir_builder *b, const char *name, int64_t value);
int ir_build_tensor(ir_builder *b, ir_tensor t);
int ir_build_var(ir_builder *b, const char *name, int dim);
ir_ref ir_build_inst(ir_builder *b, ir_inst in);
uint32_t ir_build_index(ir_builder *b, ir_index ix); /* returns its position in ix[] */
uint32_t ir_build_red_var(ir_builder *b, uint32_t var);
int ir_build_stmt(ir_builder *b, ir_stmt s);
/* Freezes the arrays into a (a model named `name` with the header fields of
 * `like`: loc, file) and frees the builder. NULL when memory ran out. */
ir_model *ir_finish(ir_builder *b, arena *a, const char *name, const ir_model *like, bool reverse);
void ir_build_free(ir_builder *b);

/* Lowering from the checked AST (ir/lower.c). */
typedef struct ast_model ast_model;
ir_model *ir_lower(arena *a, diag *d, const src_file *f, const ast_model *m);

/* Printer (ir/print.c): the text of `ssmc emit --emit=ir`. */
void ir_print(strbuf *out, const ir_model *m);
/* One expression, in the language's syntax (used by the printer and codegen comments). */
void ir_print_expr(strbuf *out, const ir_model *m, ir_ref r);

/* Verifier (ir/verify.c): structural invariants; returns false with a
 * diagnostic naming the broken invariant. Run after lowering and after passes. */
bool ir_verify(const ir_model *m, diag *d);

/* Reference interpreter (ir/interp.c): f64, sequential, any verified model
 * (lagged reads of lets included). Tensors are given as f64 arrays in the
 * layouts of SPEC §5, indexed by tensor id; NULL for a state means its init
 * value (zero without an init statement) and no final state; NULL for an
 * output means it is not kept. Lets must be NULL. */
typedef struct ir_interp_args {
    int64_t batch, T;
    double **data;              /* [ntensors] */
    const unsigned char *fresh; /* [ntensors] or NULL: nonzero for a state whose data only
                                   receives the final state (it starts as one not given) */
    /* Decoding against state pools: NULL, or sequence b's states are row
     * rows[b] of every state given (a negative row: sequence b is skipped, no
     * output written); has_state NULL, or has_state[b] == 0: sequence b starts
     * from its init (or zeros) instead of its row, which gets the final state. */
    const int32_t *rows;
    const uint8_t *has_state;
} ir_interp_args;
bool ir_interp(const ir_model *m, const ir_interp_args *args, diag *d);

#endif
