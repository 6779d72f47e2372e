/* rounding.c: how many f32 roundings can pile up in the value of each tensor
 * in one step (see passes.h, pass_rounding): the length of the longest chain
 * of rounded operations from the data to it. The `--verify` tolerance is
 * proportional to it (docs/numerics.md, "How --verify judges").
 *
 * Weights: +, -, *, / and sqrt round once (1); the polynomial functions (exp,
 * log, log1p, tanh, sigmoid, softplus, silu, pow, rsqrt) a few times (4);
 * negation, abs, relu, min, max and max-reductions are exact (0); a sum of n
 * terms adds n, the length of recursive summation. Inputs, params and
 * constants start at 0; a read of a let or a state carries that tensor's
 * length. States are read before their update in the step (S(t-1)), so the
 * statements are walked twice, the second walk seeing the states' lengths
 * from the first: a state's own length is then two steps of its update, which
 * stands for the error a damped recurrence carries from step to step (a decay
 * below 1 shrinks the old error; docs/numerics.md). Time itself is the
 * caller's: `carried` adds to a state what it carries over the whole run (an
 * undamped running sum's growth), and the readers see it. */
#include <stdlib.h>

#include "passes.h"

static double op_weight(ir_op op)
{
    switch (op) {
    case IR_ADD: case IR_SUB: case IR_MUL: case IR_DIV: case IR_SQRT: return 1;
    case IR_EXP: case IR_LOG: case IR_LOG1P: case IR_TANH: case IR_SIGMOID: case IR_SOFTPLUS: case IR_SILU:
    case IR_POW: case IR_RSQRT: return 4;
    default: return 0; /* CONST, LOAD, NEG, ABS, RELU, MIN, MAX, and the reductions (below) */
    }
}

/* The length of instruction r's value (a statement's expression is a tree of
 * bounded height: the parser bounds it). */
static double length(const ir_model *m, const double *len, ir_ref r)
{
    if (r == IR_NONE) return 0;
    const ir_inst *in = &m->insts[r];
    if (in->op == IR_LOAD) {
        const ir_tensor *t = &m->tensors[in->load.tensor];
        return t->kind == IR_LET || t->kind == IR_STATE ? len[in->load.tensor] : 0;
    }
    if (in->op == IR_SUM || in->op == IR_RMAX) {
        double n = 1;
        for (uint32_t i = 0; i < in->red.nvars; i++) n *= (double)m->dims[m->vars[m->red_vars[in->red.vars + i]].dim].value;
        return length(m, len, in->a) + (in->op == IR_SUM ? n : 0);
    }
    double a = length(m, len, in->a), b = length(m, len, in->b);
    return (a > b ? a : b) + op_weight((ir_op)in->op);
}

void pass_rounding(const ir_model *m, const double *carried, double *len)
{
    for (uint32_t i = 0; i < m->ntensors; i++) len[i] = 0;
    for (int walk = 0; walk < 2; walk++)
        for (uint32_t si = 0; si < m->nstmts; si++) {
            const ir_stmt *s = &m->stmts[si];
            len[s->tensor] = length(m, len, s->root) + (carried ? carried[s->tensor] : 0);
        }
}
