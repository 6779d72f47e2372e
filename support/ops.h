/* ops.h: the one table of operations, shared by every stage.
 *
 * Each row: X(ID, arity, name, kind, cost, grad)
 *   ID     IR_<ID> in the IR (ir/ir.h generates its enum from this table)
 *   arity  operand count (reductions: 1, the body), in the operand fields a, b, c
 *          of ir_inst in the order the language writes them (select(c, x, y):
 *          a = c, b = x, c = y)
 *   name   printed name; for kind OPK_FUNC also the language's function name
 *          (frontend/check.c looks builtin calls up here)
 *   kind   OPK_LEAF (constant, tensor read, index variable), OPK_ARITH (an operator
 *          of the language's syntax), OPK_FUNC (a builtin function), OPK_RED (a
 *          reduction)
 *   cost   OPC_CHEAP, OPC_DIV (division-like: a few cycles, no table),
 *          OPC_TRANS (transcendental: a polynomial or a special-function unit);
 *          planning decisions (hoisting, computing a let once per block) read it
 *   grad   the derivative rule: the name of its function in the gradients pass
 *          (passes/grad.c), which the pass expands from this table, so an op
 *          without a rule does not build
 *
 * Adding a builtin function: one row here, one case in the interpreter
 * (ir/interp.c), one line in each renderer (codegen/llvm.c, codegen/cuda.c)
 * and its rule in passes/grad.c. The front end needs nothing: a row of kind
 * OPK_FUNC is callable by its name with its arity. */
#ifndef SSMC_OPS_H
#define SSMC_OPS_H

#include <stdint.h>

typedef enum op_kind { OPK_LEAF, OPK_ARITH, OPK_FUNC, OPK_RED } op_kind;
typedef enum op_cost { OPC_CHEAP, OPC_DIV, OPC_TRANS } op_cost;

#define SSMC_OPS(X)                                                            \
    X(CONST,    0, "const",    OPK_LEAF,  OPC_CHEAP, grad_none)    /* .num */  \
    X(LOAD,     0, "load",     OPK_LEAF,  OPC_CHEAP, grad_none)    /* .load */ \
    X(IDX,      0, "idx",      OPK_LEAF,  OPC_CHEAP, grad_none)    /* .var */  \
    X(NEG,      1, "neg",      OPK_ARITH, OPC_CHEAP, grad_neg)                 \
    X(ADD,      2, "add",      OPK_ARITH, OPC_CHEAP, grad_add)                 \
    X(SUB,      2, "sub",      OPK_ARITH, OPC_CHEAP, grad_sub)                 \
    X(MUL,      2, "mul",      OPK_ARITH, OPC_CHEAP, grad_mul)                 \
    X(DIV,      2, "div",      OPK_ARITH, OPC_DIV,   grad_div)                 \
    X(LT,       2, "lt",       OPK_ARITH, OPC_CHEAP, grad_lt)    /* 1 or 0 */  \
    X(LE,       2, "le",       OPK_ARITH, OPC_CHEAP, grad_le)                  \
    X(GT,       2, "gt",       OPK_ARITH, OPC_CHEAP, grad_gt)                  \
    X(GE,       2, "ge",       OPK_ARITH, OPC_CHEAP, grad_ge)                  \
    X(EQ,       2, "eq",       OPK_ARITH, OPC_CHEAP, grad_eq)                  \
    X(NE,       2, "ne",       OPK_ARITH, OPC_CHEAP, grad_ne)                  \
    X(EXP,      1, "exp",      OPK_FUNC,  OPC_TRANS, grad_exp)                 \
    X(LOG,      1, "log",      OPK_FUNC,  OPC_TRANS, grad_log)                 \
    X(LOG1P,    1, "log1p",    OPK_FUNC,  OPC_TRANS, grad_log1p)               \
    X(SQRT,     1, "sqrt",     OPK_FUNC,  OPC_DIV,   grad_sqrt)                \
    X(RSQRT,    1, "rsqrt",    OPK_FUNC,  OPC_DIV,   grad_rsqrt)               \
    X(ABS,      1, "abs",      OPK_FUNC,  OPC_CHEAP, grad_abs)                 \
    X(TANH,     1, "tanh",     OPK_FUNC,  OPC_TRANS, grad_tanh)                \
    X(SIN,      1, "sin",      OPK_FUNC,  OPC_TRANS, grad_sin)                 \
    X(COS,      1, "cos",      OPK_FUNC,  OPC_TRANS, grad_cos)                 \
    X(ERF,      1, "erf",      OPK_FUNC,  OPC_TRANS, grad_erf)                 \
    X(SIGMOID,  1, "sigmoid",  OPK_FUNC,  OPC_TRANS, grad_sigmoid)             \
    X(SOFTPLUS, 1, "softplus", OPK_FUNC,  OPC_TRANS, grad_softplus)            \
    X(SILU,     1, "silu",     OPK_FUNC,  OPC_TRANS, grad_silu)                \
    X(RELU,     1, "relu",     OPK_FUNC,  OPC_CHEAP, grad_relu)                \
    X(POW,      2, "pow",      OPK_FUNC,  OPC_TRANS, grad_pow)                 \
    X(MIN,      2, "min",      OPK_FUNC,  OPC_CHEAP, grad_min)                 \
    X(MAX,      2, "max",      OPK_FUNC,  OPC_CHEAP, grad_max)                 \
    X(SELECT,   3, "select",   OPK_FUNC,  OPC_CHEAP, grad_select)  /* a ? b : c */\
    X(SUM,      1, "sum",      OPK_RED,   OPC_CHEAP, grad_sum)   /* .red */    \
    X(RMAX,     1, "rmax",     OPK_RED,   OPC_CHEAP, grad_rmax)  /* .red */

typedef struct op_info {
    const char *name;
    uint8_t arity;
    uint8_t kind; /* op_kind */
    uint8_t cost; /* op_cost */
} op_info;

/* Indexed by ir_op. */
extern const op_info op_table[];

#endif
