/* ast_print.c: the syntax tree as an indented S-expression listing
 * (ssmc emit --emit=ast). Stable text: golden tests compare it. */
#include "ast.h"

static void indent(strbuf *o, int n)
{
    for (int i = 0; i < n; i++) sb_puts(o, "  ");
}

static void print_index(strbuf *o, const ast_index *ix)
{
    switch (ix->kind) {
    case AST_IX_VAR: sb_puts(o, ix->name); break;
    case AST_IX_DIV:
        if (ix->div_name)
            sb_printf(o, "(/ %s %s)", ix->name, ix->div_name);
        else
            sb_printf(o, "(/ %s %lld)", ix->name, (long long)ix->k);
        break;
    case AST_IX_INT: sb_printf(o, "%lld", (long long)ix->k); break;
    case AST_IX_T:
        if (ix->k)
            sb_printf(o, "(- t %lld)", (long long)ix->k);
        else
            sb_puts(o, "t");
        break;
    case AST_IX_T_VAR: sb_printf(o, "(- t %s)", ix->name); break;
    }
}

static void print_expr(strbuf *o, const ast_expr *e)
{
    switch (e->kind) {
    case AST_NUM: sb_printf(o, "%.17g", e->num); break;
    case AST_NAME:
    case AST_IDX: sb_puts(o, e->name); break;
    case AST_READ:
        sb_printf(o, "(read %s", e->name);
        for (int i = 0; i < e->nix; i++) {
            sb_putc(o, ' ');
            print_index(o, &e->ix[i]);
        }
        sb_putc(o, ')');
        break;
    case AST_NEG:
        sb_puts(o, "(neg ");
        print_expr(o, e->a);
        sb_putc(o, ')');
        break;
    case AST_BIN:
        sb_printf(o, "(%c ", e->op);
        print_expr(o, e->a);
        sb_putc(o, ' ');
        print_expr(o, e->b);
        sb_putc(o, ')');
        break;
    case AST_CMP: {
        const char *op = e->op == 'l' ? "<=" : e->op == 'g' ? ">=" : e->op == '=' ? "==" : e->op == '!' ? "!=" : NULL;
        sb_printf(o, "(%s ", op ? op : e->op == '<' ? "<" : ">");
        print_expr(o, e->a);
        sb_putc(o, ' ');
        print_expr(o, e->b);
        sb_putc(o, ')');
        break;
    }
    case AST_CALL:
        sb_printf(o, "(call %s", e->name);
        for (int i = 0; i < e->nargs; i++) {
            sb_putc(o, ' ');
            print_expr(o, e->args[i]);
        }
        sb_putc(o, ')');
        break;
    case AST_REDUCE:
        sb_printf(o, "(%s (", e->name);
        for (int i = 0; i < e->nvars; i++) {
            sb_printf(o, "%s%s", i ? " " : "", e->vars[i]);
            if (e->var_dims && e->var_dims[i]) sb_printf(o, "[%s]", e->var_dims[i]);
        }
        sb_puts(o, ") ");
        print_expr(o, e->a);
        sb_putc(o, ')');
        break;
    }
}

void ast_print(strbuf *o, const ast_file *f)
{
    static const char *kinds[] = {"dim", "input", "param", "state", "output", "let"};
    for (int mi = 0; mi < f->nmodels; mi++) {
        const ast_model *m = &f->models[mi];
        sb_printf(o, "(model %s\n", m->name);
        for (int i = 0; i < m->ndecls; i++) {
            const ast_decl *d = &m->decls[i];
            if (d->kind == AST_LET) continue;
            indent(o, 1);
            sb_printf(o, "(%s %s", kinds[d->kind], d->name);
            if (d->kind == AST_DIM) sb_printf(o, " %lld", (long long)d->value);
            for (int j = 0; j < d->naxes; j++) sb_printf(o, " %s", d->axes[j]);
            sb_puts(o, ")\n");
        }
        for (int i = 0; i < m->nstmts; i++) {
            const ast_stmt *s = &m->stmts[i];
            indent(o, 1);
            sb_printf(o, "(%s %s (", s->is_let ? "let" : s->is_init ? "init" : "assign", s->name);
            for (int j = 0; j < s->nlhs; j++) {
                if (j) sb_putc(o, ' ');
                print_index(o, &s->lhs[j]);
            }
            sb_puts(o, ") ");
            print_expr(o, s->rhs);
            sb_puts(o, ")\n");
        }
        sb_puts(o, ")\n");
    }
}
