/* print.c: the IR as text (ssmc emit --emit=ir) and single expressions in the
 * language's own syntax (for comments in generated code). The text is stable:
 * golden tests compare it. */
#include "ir.h"

#include <stdlib.h>

#include "support/support.h"

static void print_num(strbuf *out, double v)
{
    /* range first: converting a double outside int64's range is undefined */
    if (v > -1e15 && v < 1e15 && v == (double)(int64_t)v)
        sb_printf(out, "%lld", (long long)v);
    else
        sb_printf(out, "%.17g", v);
}

static void print_index(strbuf *out, const ir_model *m, const ir_index *ix)
{
    switch (ix->kind) {
    case IR_IX_VAR: sb_puts(out, m->vars[ix->var].name); break;
    case IR_IX_DIV: sb_printf(out, "%s / %lld", m->vars[ix->var].name, (long long)ix->k); break;
    case IR_IX_CONST: sb_printf(out, "%lld", (long long)ix->k); break;
    case IR_IX_AFFINE:
        sb_printf(out, "%s * %lld + %s", m->vars[ix->var].name, (long long)ix->k, m->vars[ix->var2].name);
        break;
    }
}

static void print_load(strbuf *out, const ir_model *m, const ir_inst *in)
{
    const ir_tensor *t = &m->tensors[in->load.tensor];
    sb_puts(out, t->name);
    if (t->kind == IR_STATE) sb_puts(out, in->load.after_update ? "@new" : "@old");
    if (!t->per_step && t->rank == 0) return;
    sb_putc(out, '[');
    if (t->per_step) {
        const char *dir = m->reverse ? "+" : "-"; /* a reverse model's lags look forward in time */
        sb_putc(out, 't');
        if (in->load.lag) sb_printf(out, " %s %lld", dir, (long long)in->load.lag);
        if (in->load.lag_var >= 0) sb_printf(out, " %s %s", dir, m->vars[in->load.lag_var].name);
        if (t->rank) sb_puts(out, ", ");
    }
    for (int i = 0; i < t->rank; i++) {
        if (i) sb_puts(out, ", ");
        print_index(out, m, &m->ix[in->load.ix + (uint32_t)i]);
    }
    sb_putc(out, ']');
}

static void print_red_vars(strbuf *out, const ir_model *m, const ir_inst *in)
{
    for (uint32_t i = 0; i < in->red.nvars; i++) {
        const ir_var *v = &m->vars[m->red_vars[in->red.vars + i]];
        sb_printf(out, "%s%s", i ? ", " : "", v->name);
    }
}

/* Binding strength in the language: comparisons loosest (and not chaining),
 * then + -, * /, unary minus, primaries. */
static int prec(const ir_inst *in)
{
    switch (in->op) {
    case IR_LT:
    case IR_LE:
    case IR_GT:
    case IR_GE:
    case IR_EQ:
    case IR_NE: return 1;
    case IR_ADD:
    case IR_SUB: return 2;
    case IR_MUL:
    case IR_DIV: return 3;
    case IR_NEG: return 4;
    default: return 5;
    }
}

/* A comparison's spelling in the language, or NULL. */
static const char *cmp_text(int op)
{
    switch (op) {
    case IR_LT: return "<";
    case IR_LE: return "<=";
    case IR_GT: return ">";
    case IR_GE: return ">=";
    case IR_EQ: return "==";
    case IR_NE: return "!=";
    default: return NULL;
    }
}

static void expr(strbuf *out, const ir_model *m, ir_ref r, int min_prec)
{
    const ir_inst *in = &m->insts[r];
    int p = prec(in);
    bool paren = p < min_prec;
    if (paren) sb_putc(out, '(');
    switch (in->op) {
    case IR_CONST: print_num(out, in->num); break;
    case IR_LOAD: print_load(out, m, in); break;
    case IR_IDX: sb_puts(out, m->vars[in->var].name); break;
    case IR_NEG:
        sb_putc(out, '-');
        expr(out, m, in->a, 4);
        break;
    case IR_ADD:
    case IR_SUB:
    case IR_MUL:
    case IR_DIV: {
        static const char ops[] = {[IR_ADD] = '+', [IR_SUB] = '-', [IR_MUL] = '*', [IR_DIV] = '/'};
        expr(out, m, in->a, p);
        sb_printf(out, " %c ", ops[in->op]);
        expr(out, m, in->b, p + 1); /* left associative */
        break;
    }
    case IR_LT:
    case IR_LE:
    case IR_GT:
    case IR_GE:
    case IR_EQ:
    case IR_NE:
        expr(out, m, in->a, p + 1); /* comparisons do not chain */
        sb_printf(out, " %s ", cmp_text(in->op));
        expr(out, m, in->b, p + 1);
        break;
    case IR_SUM:
    case IR_RMAX:
        sb_puts(out, in->op == IR_SUM ? "sum(" : "max(");
        print_red_vars(out, m, in);
        sb_puts(out, ": ");
        expr(out, m, in->a, 0);
        sb_putc(out, ')');
        break;
    default:
        sb_printf(out, "%s(", op_table[in->op].name);
        expr(out, m, in->a, 0);
        for (int i = 1; i < 3; i++) {
            if (ir_operand(in, i) == IR_NONE) continue;
            sb_puts(out, ", ");
            expr(out, m, ir_operand(in, i), 0);
        }
        sb_putc(out, ')');
        break;
    }
    if (paren) sb_putc(out, ')');
}

void ir_print_expr(strbuf *out, const ir_model *m, ir_ref r) { expr(out, m, r, 0); }

static void print_lhs(strbuf *out, const ir_model *m, const ir_stmt *s)
{
    const ir_tensor *t = &m->tensors[s->tensor];
    sb_puts(out, t->name);
    if (!t->per_step && t->rank == 0) return;
    sb_putc(out, '[');
    if (t->per_step) sb_printf(out, "t%s", t->rank ? ", " : "");
    for (int i = 0; i < t->rank; i++)
        sb_printf(out, "%s%s:%s", i ? ", " : "", m->vars[s->vars[i]].name, m->dims[t->dims[i]].name);
    sb_putc(out, ']');
}

/* Marks the instructions reachable from r (a statement's expression). */
static void mark(const ir_model *m, ir_ref r, unsigned char *seen)
{
    if (r == IR_NONE || seen[r]) return;
    seen[r] = 1;
    mark(m, m->insts[r].a, seen);
    mark(m, m->insts[r].b, seen);
    mark(m, m->insts[r].c, seen);
}

/* The instructions of statement s, one a line, then `= %root`. */
static void print_body(strbuf *out, const ir_model *m, const ir_stmt *s, unsigned char *seen)
{
    for (uint32_t i = 0; i < m->ninsts; i++) seen[i] = 0;
    mark(m, s->root, seen);
    for (uint32_t i = 0; i < m->ninsts; i++) {
        if (!seen[i]) continue;
        const ir_inst *in = &m->insts[i];
        sb_printf(out, "    %%%u = %s ", i, op_table[in->op].name);
        switch (in->op) {
        case IR_CONST: print_num(out, in->num); break;
        case IR_LOAD: print_load(out, m, in); break;
        case IR_IDX: sb_printf(out, "%s:%s", m->vars[in->var].name, m->dims[m->vars[in->var].dim].name); break;
        case IR_SUM:
        case IR_RMAX:
            sb_putc(out, '[');
            for (uint32_t k = 0; k < in->red.nvars; k++) {
                const ir_var *v = &m->vars[m->red_vars[in->red.vars + k]];
                sb_printf(out, "%s%s:%s", k ? ", " : "", v->name, m->dims[v->dim].name);
            }
            sb_printf(out, "] %%%u", in->a);
            break;
        default:
            sb_printf(out, "%%%u", in->a);
            for (int k = 1; k < 3; k++)
                if (ir_operand(in, k) != IR_NONE) sb_printf(out, ", %%%u", ir_operand(in, k));
            break;
        }
        sb_putc(out, '\n');
    }
    sb_printf(out, "    = %%%u\n", s->root);
}

void ir_print(strbuf *out, const ir_model *m)
{
    sb_printf(out, "model %s%s\n", m->name, m->reverse ? "  reverse: steps run t = T-1 .. 0" : "");
    for (uint32_t i = 0; i < m->ndims; i++) sb_printf(out, "  dim %s = %lld\n", m->dims[i].name, (long long)m->dims[i].value);
    for (uint32_t i = 0; i < m->ntensors; i++) {
        const ir_tensor *t = &m->tensors[i];
        sb_printf(out, "  %-6s %s", ir_kind_names[t->kind], t->name);
        if (t->per_step || t->rank) {
            sb_putc(out, '[');
            if (t->per_step) sb_printf(out, "T%s", t->rank ? ", " : "");
            for (int j = 0; j < t->rank; j++) sb_printf(out, "%s%s", j ? ", " : "", m->dims[t->dims[j]].name);
            sb_putc(out, ']');
        }
        if (t->kind == IR_LET) sb_puts(out, t->per_step ? "  per-step" : "  time-invariant");
        if (t->hidden) sb_puts(out, "  hidden");
        const ir_origin *o = ir_find_origin(m, (int)i);
        if (o) {
            sb_printf(out, ": %s at t", m->tensors[o->let].name);
            if (o->lag) sb_printf(out, " - %lld", (long long)o->lag);
            if (o->window) sb_printf(out, " - w for w < %s", m->dims[t->dims[0]].name);
        }
        if (t->kind == IR_STATE && t->def < 0) sb_puts(out, "  never updated");
        if (t->kind == IR_STATE && ir_find_init(m, (int)i)) sb_puts(out, "  init");
        sb_putc(out, '\n');
    }
    unsigned char *seen = calloc(m->ninsts ? m->ninsts : 1, 1);
    if (!seen) {
        out->failed = true;
        return;
    }
    for (uint32_t ii = 0; ii < m->ninits; ii++) {
        const ir_stmt *s = &m->inits[ii];
        sb_puts(out, "\n  init ");
        print_lhs(out, m, s);
        sb_printf(out, "    ; line %u, unless an initial state is given\n", s->loc.line);
        print_body(out, m, s, seen);
    }
    for (uint32_t si = 0; si < m->nstmts; si++) {
        const ir_stmt *s = &m->stmts[si];
        sb_printf(out, "\n  %s ", s->per_step ? "step" : "once");
        print_lhs(out, m, s);
        const ir_tensor *t = &m->tensors[s->tensor];
        sb_printf(out, "    ; line %u", s->loc.line);
        const ir_origin *o = ir_find_origin(m, s->tensor);
        if (o && t->kind == IR_LET)
            sb_printf(out, ", %s recomputed at an earlier step", m->tensors[o->let].name);
        else if (o)
            sb_printf(out, ", keeps %s for the next step", m->tensors[o->let].name);
        sb_putc(out, '\n');
        print_body(out, m, s, seen);
    }
    free(seen);
}
