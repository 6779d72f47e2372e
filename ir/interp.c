/* interp.c: the reference interpreter. Runs any verified model sequentially in
 * f64, straight from the IR: for each sequence, the time-invariant lets once,
 * then every statement in order at every step. It is the oracle every backend
 * is checked against, so it favours being obviously right over being fast.
 *
 * A state update is computed into a scratch buffer and copied over the state
 * after the statement, so the update is simultaneous over all indices and
 * reads inside it see S(t-1); later statements see S(t). Reads of an input
 * before the start of the sequence give 0. A state not given starts from its
 * init statement (zero without one). A per-step let read at an earlier step
 * keeps every step's value of the sequence (the backends see no such reads:
 * passes/lag.c rewrites them; the interpreter runs the IR either way, so the
 * two can be compared). select evaluates the chosen operand only. A reverse model (ir.h)
 * runs its steps from t = T-1 down to 0, and its lags look forward in time. */
#include "ir.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct interp {
    const ir_model *m;
    const ir_interp_args *args;
    int64_t b, t;
    double **buf;       /* per tensor: states' current value, lets' current value */
    double **hist;      /* per tensor: lets read at earlier steps: [T][elems] of this sequence */
    int64_t *env;       /* per variable: its current value */
    int64_t *strides;   /* per tensor, per axis (row-major over the declared axes) */
    int64_t *elems;     /* per tensor */
} interp;

static double softplus(double x) { return x > 0 ? x + log1p(exp(-x)) : log1p(exp(x)); }
static double sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }

static double eval(interp *I, ir_ref r);

static double load(interp *I, const ir_inst *in)
{
    const ir_model *m = I->m;
    const ir_tensor *t = &m->tensors[in->load.tensor];
    int64_t off = 0;
    const int64_t *st = &I->strides[in->load.tensor * IR_MAX_RANK];
    for (int i = 0; i < t->rank; i++) {
        const ir_index *ix = &m->ix[in->load.ix + (uint32_t)i];
        int64_t v;
        switch (ix->kind) {
        case IR_IX_CONST: v = ix->k; break;
        case IR_IX_DIV: v = I->env[ix->var] / ix->k; break;
        case IR_IX_AFFINE: v = I->env[ix->var] * ix->k + I->env[ix->var2]; break;
        default: v = I->env[ix->var]; break;
        }
        off += v * st[i];
    }
    int64_t lag = in->load.lag + (in->load.lag_var >= 0 ? I->env[in->load.lag_var] : 0);
    int64_t tt = m->reverse ? I->t + lag : I->t - lag;
    int64_t n = I->elems[in->load.tensor];
    switch (t->kind) {
    case IR_INPUT:
        if (tt < 0 || tt >= I->args->T) return 0.0;
        return I->args->data[in->load.tensor][(I->b * I->args->T + tt) * n + off];
    case IR_PARAM: return I->args->data[in->load.tensor][off];
    case IR_LET:
        if (tt == I->t) return I->buf[in->load.tensor][off];
        return tt < 0 || tt >= I->args->T ? 0.0 : I->hist[in->load.tensor][tt * n + off];
    default: return I->buf[in->load.tensor][off];
    }
}

/* Iterates over every combination of the bound variables of a reduction. */
static double reduce(interp *I, const ir_inst *in)
{
    const ir_model *m = I->m;
    const uint32_t *vars = &m->red_vars[in->red.vars];
    uint32_t n = in->red.nvars;
    for (uint32_t i = 0; i < n; i++) I->env[vars[i]] = 0;
    double acc = in->op == IR_SUM ? 0.0 : -INFINITY;
    for (;;) {
        double x = eval(I, in->a);
        acc = in->op == IR_SUM ? acc + x : (x > acc || isnan(x) ? x : acc);
        uint32_t i = n;
        while (i > 0) {
            i--;
            if (++I->env[vars[i]] < m->dims[m->vars[vars[i]].dim].value) break;
            I->env[vars[i]] = 0;
            if (i == 0) return acc;
        }
    }
}

static double eval(interp *I, ir_ref r)
{
    const ir_inst *in = &I->m->insts[r];
    double a = 0, b = 0;
    if (in->op == IR_SELECT) return eval(I, in->a) != 0 ? eval(I, in->b) : eval(I, in->c);
    if (in->op != IR_SUM && in->op != IR_RMAX) {
        if (in->a != IR_NONE) a = eval(I, in->a);
        if (in->b != IR_NONE) b = eval(I, in->b);
    }
    switch ((ir_op)in->op) {
    case IR_CONST: return in->num;
    case IR_LOAD: return load(I, in);
    case IR_IDX: return (double)I->env[in->var];
    case IR_LT: return a < b;
    case IR_LE: return a <= b;
    case IR_GT: return a > b;
    case IR_GE: return a >= b;
    case IR_EQ: return a == b;
    case IR_NE: return a != b;
    case IR_SIN: return sin(a);
    case IR_COS: return cos(a);
    case IR_ERF: return erf(a);
    case IR_SELECT: break;
    case IR_NEG: return -a;
    case IR_ADD: return a + b;
    case IR_SUB: return a - b;
    case IR_MUL: return a * b;
    case IR_DIV: return a / b;
    case IR_EXP: return exp(a);
    case IR_LOG: return log(a);
    case IR_LOG1P: return log1p(a);
    case IR_SQRT: return sqrt(a);
    case IR_RSQRT: return 1.0 / sqrt(a);
    case IR_ABS: return fabs(a);
    case IR_TANH: return tanh(a);
    case IR_SIGMOID: return sigmoid(a);
    case IR_SOFTPLUS: return softplus(a);
    case IR_SILU: return a * sigmoid(a);
    case IR_RELU: return a > 0 ? a : 0.0;
    case IR_POW: return pow(a, b);
    case IR_MIN: return fmin(a, b);
    case IR_MAX: return fmax(a, b);
    case IR_SUM:
    case IR_RMAX: return reduce(I, in);
    case IR_OP_COUNT: break;
    }
    return NAN;
}

/* Evaluates statement s over its whole domain into dst (row-major). */
static void run_stmt(interp *I, const ir_stmt *s, double *dst)
{
    const ir_model *m = I->m;
    const ir_tensor *t = &m->tensors[s->tensor];
    for (int i = 0; i < t->rank; i++) I->env[s->vars[i]] = 0;
    int64_t n = I->elems[s->tensor];
    for (int64_t k = 0; k < n; k++) {
        dst[k] = eval(I, s->root);
        for (int i = t->rank - 1; i >= 0; i--) {
            if (++I->env[s->vars[i]] < m->dims[t->dims[i]].value) break;
            I->env[s->vars[i]] = 0;
        }
    }
}

bool ir_interp(const ir_model *m, const ir_interp_args *args, diag *d)
{
    interp I = {.m = m, .args = args};
    size_t nt = m->ntensors ? m->ntensors : 1;
    I.buf = calloc(nt, sizeof *I.buf);
    I.hist = calloc(nt, sizeof *I.hist);
    I.env = calloc(m->nvars ? m->nvars : 1, sizeof *I.env);
    I.strides = calloc(nt * IR_MAX_RANK, sizeof *I.strides);
    I.elems = calloc(nt, sizeof *I.elems);
    int64_t max_elems = 1;
    bool *lagged = calloc(nt, sizeof *lagged); /* lets read at earlier steps */
    bool ok = I.buf && I.hist && I.env && I.strides && I.elems && lagged;
    for (uint32_t r = 0; ok && r < m->ninsts; r++) {
        const ir_inst *in = &m->insts[r];
        if (in->op == IR_LOAD && m->tensors[in->load.tensor].kind == IR_LET && (in->load.lag || in->load.lag_var >= 0))
            lagged[in->load.tensor] = true;
    }
    for (uint32_t i = 0; ok && i < m->ntensors; i++) {
        const ir_tensor *t = &m->tensors[i];
        int64_t s = 1;
        for (int j = t->rank - 1; j >= 0; j--) {
            I.strides[i * IR_MAX_RANK + (uint32_t)j] = s;
            s *= m->dims[t->dims[j]].value;
        }
        I.elems[i] = s;
        if (s > max_elems) max_elems = s;
        if (t->kind == IR_STATE || t->kind == IR_LET) {
            I.buf[i] = calloc((size_t)s, sizeof(double));
            ok = I.buf[i] != NULL;
        }
        if (ok && lagged[i]) {
            bool fits = (uint64_t)args->T <= SIZE_MAX / sizeof(double) / (size_t)s;
            I.hist[i] = fits ? malloc(((size_t)args->T * (size_t)s + 1) * sizeof(double)) : NULL;
            ok = I.hist[i] != NULL;
        }
    }
    double *scratch = ok ? malloc((size_t)max_elems * sizeof(double)) : NULL;
    if (!scratch) {
        ok = false;
        diag_error(d, "out of memory in the interpreter");
    }
    for (I.b = 0; ok && I.b < args->batch; I.b++) {
        int64_t row = args->rows ? args->rows[I.b] : I.b; /* the states' row */
        if (row < 0) continue;
        bool start = args->has_state && !args->has_state[I.b];
        for (uint32_t i = 0; i < m->ntensors; i++) {
            const ir_tensor *t = &m->tensors[i];
            if (t->kind != IR_STATE) continue;
            size_t bytes = (size_t)I.elems[i] * sizeof(double);
            if (args->data[i] && !start && !(args->fresh && args->fresh[i]))
                memcpy(I.buf[i], args->data[i] + row * I.elems[i], bytes);
            else if (ir_find_init(m, (int)i))
                run_stmt(&I, ir_find_init(m, (int)i), I.buf[i]);
            else
                memset(I.buf[i], 0, bytes);
        }
        I.t = 0;
        for (uint32_t si = 0; si < m->nstmts; si++)
            if (!m->stmts[si].per_step) run_stmt(&I, &m->stmts[si], I.buf[m->stmts[si].tensor]);
        for (int64_t step = 0; step < args->T; step++) {
            I.t = m->reverse ? args->T - 1 - step : step;
            for (uint32_t si = 0; si < m->nstmts; si++) {
                const ir_stmt *s = &m->stmts[si];
                if (!s->per_step) continue;
                const ir_tensor *t = &m->tensors[s->tensor];
                size_t bytes = (size_t)I.elems[s->tensor] * sizeof(double);
                if (t->kind == IR_OUTPUT) {
                    run_stmt(&I, s, scratch);
                    if (args->data[s->tensor])
                        memcpy(args->data[s->tensor] + (I.b * args->T + I.t) * I.elems[s->tensor], scratch, bytes);
                } else if (t->kind == IR_STATE) {
                    run_stmt(&I, s, scratch);
                    memcpy(I.buf[s->tensor], scratch, bytes);
                } else {
                    run_stmt(&I, s, I.buf[s->tensor]);
                    if (I.hist[s->tensor]) memcpy(I.hist[s->tensor] + I.t * I.elems[s->tensor], I.buf[s->tensor], bytes);
                }
            }
        }
        for (uint32_t i = 0; i < m->ntensors; i++)
            if (m->tensors[i].kind == IR_STATE && args->data[i])
                memcpy(args->data[i] + row * I.elems[i], I.buf[i], (size_t)I.elems[i] * sizeof(double));
    }
    for (uint32_t i = 0; I.buf && i < m->ntensors; i++) free(I.buf[i]);
    for (uint32_t i = 0; I.hist && i < m->ntensors; i++) free(I.hist[i]);
    free(I.buf);
    free(I.hist);
    free(lagged);
    free(I.env);
    free(I.strides);
    free(I.elems);
    free(scratch);
    return ok;
}
