/* test_parser.c: the recursive-descent parser (frontend/parse.c) and the AST
 * printer (`--emit=ast`, through ssmc_emit).
 *
 * Good inputs: the shape of the tree (declarations, statements, index kinds,
 * operator precedence and associativity, reductions against max(a, b), scalar
 * lets, several models). Bad inputs: parse_file returns NULL with one located
 * diagnostic naming what was expected. The nesting bound (255 parentheses
 * parse, 256 do not) and the tree-height bound (long operator chains) hold, so
 * no input can overflow the stack of a later recursive pass. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frontend/ast.h"
#include "ssmc.h"
#include "support/support.h"

typedef struct parsed {
    arena a;
    diag d;
    src_file f;
    ast_file *file;
} parsed;

static void parse_text(parsed *p, const char *text)
{
    memset(p, 0, sizeof *p);
    arena_init(&p->a);
    p->f = (src_file){"test.ssm", text, strlen(text)};
    p->file = parse_file(&p->a, &p->d, &p->f);
}

static void parsed_free(parsed *p)
{
    arena_free(&p->a);
    diag_free(&p->d);
}

/* The AST printer's text for one expression (the right side of statement si of the first model). */
static char *print_rhs(const char *stmt)
{
    strbuf src = {0};
    sb_printf(&src, "model m { %s }", stmt);
    parsed p;
    parse_text(&p, sb_cstr(&src));
    if (!p.file) fail_msg("'%s' did not parse: %s", stmt, sb_cstr(&p.d.text));
    strbuf out = {0};
    ast_print(&out, p.file);
    /* the statement is the only line that starts with "  (" */
    const char *line = strstr(sb_cstr(&out), "  (");
    assert_non_null(line);
    const char *end = strchr(line, '\n');
    char *text = strndup(line + 2, (size_t)(end - line - 2));
    sb_free(&out);
    sb_free(&src);
    parsed_free(&p);
    return text;
}

static void assert_rhs(const char *stmt, const char *want)
{
    char *got = print_rhs(stmt);
    if (strcmp(got, want) != 0) fail_msg("'%s'\n  printed %s\n  wanted  %s", stmt, got, want);
    free(got);
}

/* parse_file must fail with exactly one diagnostic containing want at line:col. */
static void assert_syntax_error(const char *text, const char *want, unsigned line, unsigned col)
{
    parsed p;
    parse_text(&p, text);
    if (p.file) fail_msg("'%s' parsed, expected an error containing '%s'", text, want);
    assert_int_equal(p.d.nerrors, 1);
    const char *msg = sb_cstr(&p.d.text);
    char where[64];
    snprintf(where, sizeof where, "test.ssm:%u:%u: error: ", line, col);
    if (strncmp(msg, where, strlen(where)) != 0) fail_msg("'%s': got '%s', expected it at %s", text, msg, where);
    if (!strstr(msg, want)) fail_msg("'%s': got '%s', expected '%s'", text, msg, want);
    /* the quoted line and the caret follow */
    const char *caret = strchr(msg, '^');
    if (!caret) fail_msg("no caret in '%s'", msg);
    parsed_free(&p);
}

static const char *mamba2 =
    "model mamba2 {\n"
    "  dim    H = 8, P = 64, N = 128;\n"
    "  input  x[T,H,P], dt[T,H], B[T,N], C[T,N];\n"
    "  param  A_log[H], D[H], dt_bias[H];\n"
    "  state  S[H,P,N];\n"
    "  output y[T,H,P];\n"
    "  let A[h]       = -exp(A_log[h]);\n"
    "  let delta[t,h] = softplus(dt[t,h] + dt_bias[h]);\n"
    "  S[h,p,n] = exp(delta[t,h] * A[h]) * S[h,p,n] + delta[t,h] * x[t,h,p] * B[t,n];\n"
    "  y[t,h,p] = sum(n: S[h,p,n] * C[t,n]) + D[h] * x[t,h,p];\n"
    "}\n";

static void test_structure(void **state)
{
    (void)state;
    parsed p;
    parse_text(&p, mamba2);
    assert_non_null(p.file);
    assert_int_equal(p.d.nerrors, 0);
    assert_int_equal(p.file->nmodels, 1);
    const ast_model *m = &p.file->models[0];
    assert_string_equal(m->name, "mamba2");
    assert_int_equal(m->loc.line, 1);
    assert_int_equal(m->loc.col, 7);
    assert_int_equal(m->ndecls, 12); /* 3 dims, 4 inputs, 3 params, 1 state, 1 output */
    assert_int_equal(m->decls[2].kind, AST_DIM);
    assert_string_equal(m->decls[2].name, "N");
    assert_int_equal(m->decls[2].value, 128);
    const ast_decl *x = &m->decls[3];
    assert_int_equal(x->kind, AST_INPUT);
    assert_int_equal(x->naxes, 3);
    assert_string_equal(x->axes[0], "T");
    assert_string_equal(x->axes[2], "P");
    assert_int_equal(x->axis_locs[1].col, 14);
    assert_int_equal(m->decls[11].kind, AST_OUTPUT);

    assert_int_equal(m->nstmts, 4);
    assert_true(m->stmts[0].is_let);
    assert_string_equal(m->stmts[0].name, "A");
    assert_int_equal(m->stmts[0].nlhs, 1);
    assert_int_equal(m->stmts[0].rhs->kind, AST_NEG);
    assert_int_equal(m->stmts[0].rhs->a->kind, AST_CALL);
    assert_string_equal(m->stmts[0].rhs->a->name, "exp");
    const ast_stmt *s = &m->stmts[2];
    assert_false(s->is_let);
    assert_true(s->brackets);
    assert_int_equal(s->nlhs, 3);
    assert_int_equal(s->loc.line, 9);
    assert_int_equal(s->loc.col, 3);
    assert_int_equal(s->rhs->kind, AST_BIN);
    assert_int_equal(s->rhs->op, '+');
    const ast_expr *y = m->stmts[3].rhs;
    assert_int_equal(y->a->kind, AST_REDUCE);
    assert_int_equal(y->a->op, '+');
    assert_int_equal(y->a->nvars, 1);
    assert_string_equal(y->a->vars[0], "n");
    assert_int_equal(y->a->var_locs[0].col, 18);
    parsed_free(&p);
}

static void test_indices(void **state)
{
    (void)state;
    parsed p;
    parse_text(&p, "model m { y[t] = x[t - 3, i / R, i / 2, 7, t - j, t, k]; }");
    assert_non_null(p.file);
    const ast_expr *e = p.file->models[0].stmts[0].rhs;
    assert_int_equal(e->kind, AST_READ);
    assert_int_equal(e->nix, 7);
    assert_int_equal(e->ix[0].kind, AST_IX_T);
    assert_int_equal(e->ix[0].k, 3);
    assert_int_equal(e->ix[1].kind, AST_IX_DIV);
    assert_string_equal(e->ix[1].name, "i");
    assert_string_equal(e->ix[1].div_name, "R");
    assert_int_equal(e->ix[2].kind, AST_IX_DIV);
    assert_null(e->ix[2].div_name);
    assert_int_equal(e->ix[2].k, 2);
    assert_int_equal(e->ix[3].kind, AST_IX_INT);
    assert_int_equal(e->ix[3].k, 7);
    assert_int_equal(e->ix[4].kind, AST_IX_T_VAR);
    assert_string_equal(e->ix[4].name, "j");
    assert_int_equal(e->ix[5].kind, AST_IX_T);
    assert_int_equal(e->ix[5].k, 0);
    assert_int_equal(e->ix[6].kind, AST_IX_VAR);
    assert_int_equal(e->ix[6].loc.col, 54);
    parsed_free(&p);
}

static void test_precedence(void **state)
{
    (void)state;
    assert_rhs("y = 1 + 2 * 3;", "(assign y () (+ 1 (* 2 3)))");
    assert_rhs("y = 1 - 2 - 3;", "(assign y () (- (- 1 2) 3))");
    assert_rhs("y = 8 / 4 / 2 * 3;", "(assign y () (* (/ (/ 8 4) 2) 3))");
    assert_rhs("y = (1 + 2) * 3;", "(assign y () (* (+ 1 2) 3))");
    assert_rhs("y = -a * b;", "(assign y () (* (neg a) b))");
    assert_rhs("y = - -a;", "(assign y () (neg (neg a)))");
    assert_rhs("y = +a - +1.5;", "(assign y () (- a 1.5))");
    assert_rhs("y = a - -b * c;", "(assign y () (- a (* (neg b) c)))");
    assert_rhs("y = 1e-6 + 2.5e3;", "(assign y () (+ 9.9999999999999995e-07 2500))");
    /* comparisons bind more loosely than + and -, and do not chain */
    assert_rhs("y = a + b < c * d;", "(assign y () (< (+ a b) (* c d)))");
    assert_rhs("y = a - 1 <= -b;", "(assign y () (<= (- a 1) (neg b)))");
    assert_rhs("y = a > b;", "(assign y () (> a b))");
    assert_rhs("y = a >= b;", "(assign y () (>= a b))");
    assert_rhs("y = a == b;", "(assign y () (== a b))");
    assert_rhs("y = a != b;", "(assign y () (!= a b))");
    assert_rhs("y = (a < b) * (b < c);", "(assign y () (* (< a b) (< b c)))");
    assert_rhs("y = (a < b) < c;", "(assign y () (< (< a b) c))");
    assert_rhs("y = select(a < b, a, b == c);", "(assign y () (call select (< a b) a (== b c)))");
    assert_rhs("y = sum(i: x[i] > 0);", "(assign y () (sum (i) (> (read x i) 0)))");
}

static void test_calls_and_reductions(void **state)
{
    (void)state;
    assert_rhs("y = max(a, b);", "(assign y () (call max a b))");
    assert_rhs("y = max(i: x[i]);", "(assign y () (max (i) (read x i)))");
    assert_rhs("y = sum(i, j: x[i] * z[j]);", "(assign y () (sum (i j) (* (read x i) (read z j))))");
    assert_rhs("y = max(i);", "(assign y () (call max i))"); /* arity is the checker's business */
    assert_rhs("y = exp(log(a) + pow(b, 2));", "(assign y () (call exp (+ (call log a) (call pow b 2))))");
    assert_rhs("y = f();", "(assign y () (call f))");
    assert_rhs("let s = sum(i: max(j: x[i, j]));", "(let s () (sum (i) (max (j) (read x i j))))");
    /* a reduction variable may name its range: j[W] */
    assert_rhs("y = sum(j[W]: x[t - j]);", "(assign y () (sum (j[W]) (read x (- t j))))");
    assert_rhs("y = max(i, j[W]: x[i] * j);", "(assign y () (max (i j[W]) (* (read x i) j)))");
    assert_rhs("y = max(x[i], j);", "(assign y () (call max (read x i) j))"); /* a call, brackets and all */
    assert_rhs("y = max(x[i]: 1);", "(assign y () (max (x[i]) 1))");           /* the checker says i is no dim */
    assert_rhs("y = sin(a) + cos(b) * erf(c);", "(assign y () (+ (call sin a) (* (call cos b) (call erf c))))");
}

static void test_lets_and_models(void **state)
{
    (void)state;
    parsed p;
    parse_text(&p, "// two models\nmodel a { let s = 1; let v[i] = w[i]; }\nmodel b {}\nmodel c { dim Q = 1; }");
    assert_non_null(p.file);
    assert_int_equal(p.file->nmodels, 3);
    const ast_model *a = &p.file->models[0];
    assert_int_equal(a->nstmts, 2);
    assert_true(a->stmts[0].is_let);
    assert_false(a->stmts[0].brackets);
    assert_int_equal(a->stmts[0].nlhs, 0);
    assert_true(a->stmts[1].brackets);
    assert_string_equal(p.file->models[1].name, "b");
    assert_int_equal(p.file->models[1].ndecls, 0);
    assert_int_equal(p.file->models[1].nstmts, 0);
    assert_int_equal(p.file->models[2].decls[0].value, 1);
    parsed_free(&p);

    /* init: a keyword only where a name follows it */
    parse_text(&p, "model a { init S[i] = w[i]; init[i] = 2; init = 3; let init = 4; }");
    assert_non_null(p.file);
    a = &p.file->models[0];
    assert_int_equal(a->nstmts, 4);
    assert_true(a->stmts[0].is_init);
    assert_string_equal(a->stmts[0].name, "S");
    assert_false(a->stmts[1].is_init);
    assert_string_equal(a->stmts[1].name, "init");
    assert_false(a->stmts[2].is_init);
    assert_string_equal(a->stmts[2].name, "init");
    assert_true(a->stmts[3].is_let);
    parsed_free(&p);
    assert_rhs("init S[i, j] = select(i == j, 1, 0);", "(init S (i j) (call select (== i j) 1 0))");
}

static void test_syntax_errors(void **state)
{
    (void)state;
    assert_syntax_error("", "expected 'model', found end of file", 1, 1);
    assert_syntax_error("// nothing\n", "the file holds no model", 2, 1);
    assert_syntax_error("modle m {}", "expected 'model', found 'modle'", 1, 1);
    assert_syntax_error("model m {}\n;", "expected another 'model' or the end of the file, found ';'", 2, 1);
    assert_syntax_error("model {}", "expected a model name, found '{'", 1, 7);
    assert_syntax_error("model m { dim N = 4 }", "expected ',' or ';', found '}'", 1, 21);
    /* a missing ';' at the end of a line is reported right after the line's last token */
    assert_syntax_error("model m {\n  input x[T]\n  output y[T];\n}", "expected ',' or ';' after ']', found 'output'",
                        2, 13);
    assert_syntax_error("model m {\n  y[t] = x[t]\n}", "expected an operator or ';' after ']', found '}'", 2, 14);
    assert_syntax_error("model m {\n  y[t] = x[t];\n", "expected '}' to close the model after ';', found end of file",
                        2, 15);
    assert_syntax_error("model m { y[t] = x[t; }", "expected ',' or ']', found ';'", 1, 21);
    assert_syntax_error("model m { y[t] = (x[t]; }", "expected ')', found ';'", 1, 23);
    assert_syntax_error("model m { y[t] = x[t]); }", "expected an operator or ';', found ')'", 1, 22);
    assert_syntax_error("model m { y[] = 1; }", "expected an index, found ']'", 1, 13);
    assert_syntax_error("model m { y[t] = x[t - 1.5]; }", "after 't -', found '1.5'", 1, 24);
    assert_syntax_error("model m { y[t] = x[i / (2)]; }", "a dim or an integer after '/' in an index", 1, 24);
    assert_syntax_error("model m { y[t] = x[2 * i]; }", "expected ',' or ']', found '*'", 1, 22);
    assert_syntax_error("model m { y[t] = sum(x[t]); }", "reduction variables and ':'", 1, 22);
    assert_syntax_error("model m { y[t] = sum(i x[t]); }", "reduction variables and ':'", 1, 22);
    assert_syntax_error("model m { y[t] = max(i: x[i]; }", "')' to close the reduction", 1, 29);
    assert_syntax_error("model m { y[t] = * 2; }", "expected an expression, found '*'", 1, 18);
    assert_syntax_error("model m { y[t] = t; }", "'t' cannot be used as a value", 1, 18);
    assert_syntax_error("model m { y[t] = x[t] / T; }", "'T' cannot be used as a value", 1, 25);
    assert_syntax_error("model m { y x; }", "expected '[' or '=', found 'x'", 1, 13);
    assert_syntax_error("model m { let = 1; }", "expected a name after 'let', found '='", 1, 15);
    assert_syntax_error("model m { dim N; }", "'=' and the dim's default size", 1, 16);
    assert_syntax_error("model m { dim N = 2.5; }", "an integer size, found '2.5'", 1, 19);
    assert_syntax_error("model m { dim N = 0; }", "a dim must be at least 1", 1, 19);
    assert_syntax_error("model m { input x[T, 3]; }", "a dim name (or T) as an axis, found '3'", 1, 22);
    assert_syntax_error("model m { input x[A,B,C,D,E,F,G,H,I]; }", "too many axes (at most 8)", 1, 35);
    assert_syntax_error("model m { y = x[a,b,c,d,e,f,g,h,i]; }", "too many indices (at most 8)", 1, 33);
    assert_syntax_error("model m { y = sum(a,b,c,d,e,f,g,h,i: 1); }", "too many reduction variables", 1, 35);
    assert_syntax_error("model m { y = f(1,2,3,4,5,6,7,8,9); }", "at most 8 arguments", 1, 33);
    assert_syntax_error("model m { model n {} }", "expected a declaration, a statement or '}', found 'model'", 1, 11);
    assert_syntax_error("model m { y = a < b < c; }", "comparisons do not chain: '<' follows a comparison", 1, 21);
    assert_syntax_error("model m { y = a == b != c; }", "write (a == b) * (b != c) for both", 1, 22);
    assert_syntax_error("model m { y = sum(j[]: 1); }", "expected a dim name in 'j[W]', found ']'", 1, 21);
    assert_syntax_error("model m { y = sum(j[W: 1); }", "']' after the dim of the reduction variable", 1, 22);
    assert_syntax_error("model m { y = sum(j[T]: 1); }", "expected a dim name in 'j[W]', found 'T'", 1, 21);
    assert_syntax_error("model m { init S = ; }", "expected an expression, found ';'", 1, 20);
    assert_syntax_error("model m { y = a ! b; }", "unexpected character '!'", 1, 17);
    assert_syntax_error("model m { y = a =< b; }", "expected an operator or ';', found '='", 1, 17);
    /* lexical errors come through parse_file the same way */
    assert_syntax_error("model m { y = .5; }", "'.5' is written '0.5'", 1, 15);
    assert_syntax_error("model m {\n  /* open", "unterminated comment", 2, 3);
}

/* n nested parentheses around x */
static char *nested(int n, const char *open, const char *close)
{
    strbuf s = {0};
    sb_puts(&s, "model m { y = ");
    for (int i = 0; i < n; i++) sb_puts(&s, open);
    sb_puts(&s, "x");
    for (int i = 0; i < n; i++) sb_puts(&s, close);
    sb_puts(&s, "; }");
    return sb_take(&s);
}

static void test_nesting_bound(void **state)
{
    (void)state;
    static const struct {
        const char *open, *close;
    } forms[] = {{"(", ")"}, {"exp(", ")"}, {"-", ""}, {"sum(i: ", ")"}, {"max(", ", 1)"}};
    for (size_t k = 0; k < sizeof forms / sizeof *forms; k++) {
        for (int n = 254; n <= 257; n++) {
            char *text = nested(n, forms[k].open, forms[k].close);
            parsed p;
            parse_text(&p, text);
            if ((p.file != NULL) != (n <= 255))
                fail_msg("%d levels of '%s': %s", n, forms[k].open, p.file ? "parsed" : sb_cstr(&p.d.text));
            if (!p.file && !strstr(sb_cstr(&p.d.text), "nested too deeply (more than 256 levels)"))
                fail_msg("%s", sb_cstr(&p.d.text));
            parsed_free(&p);
            free(text);
        }
    }
    /* far beyond the bound: a clean error, not a stack overflow */
    char *text = nested(100000, "(", ")");
    parsed p;
    parse_text(&p, text);
    assert_null(p.file);
    assert_int_equal(p.d.nerrors, 1);
    parsed_free(&p);
    free(text);
}

/* x op x op ... with n operators */
static char *chain(int n, const char *op)
{
    strbuf s = {0};
    sb_puts(&s, "model m { y = x");
    for (int i = 0; i < n; i++) sb_printf(&s, " %s x", op);
    sb_puts(&s, "; }");
    return sb_take(&s);
}

static void test_height_bound(void **state)
{
    (void)state;
    static const char *ops[] = {"+", "*", "-", "/"};
    for (size_t k = 0; k < 4; k++) {
        for (int n = 1022; n <= 1024; n++) {
            char *text = chain(n, ops[k]);
            parsed p;
            parse_text(&p, text);
            if ((p.file != NULL) != (n <= 1023)) fail_msg("%d '%s': %s", n, ops[k], p.file ? "parsed" : sb_cstr(&p.d.text));
            if (!p.file && !strstr(sb_cstr(&p.d.text), "expression is too deep (more than 1024 operations"))
                fail_msg("%s", sb_cstr(&p.d.text));
            parsed_free(&p);
            free(text);
        }
    }
    /* heights add up through parentheses: a chain of 600 at the bottom of another */
    strbuf s = {0};
    sb_puts(&s, "model m { y = (x");
    for (int i = 0; i < 600; i++) sb_puts(&s, " * x");
    sb_puts(&s, ")");
    for (int i = 0; i < 600; i++) sb_puts(&s, " + x");
    sb_puts(&s, "; }");
    parsed p;
    parse_text(&p, sb_cstr(&s));
    assert_null(p.file);
    assert_non_null(strstr(sb_cstr(&p.d.text), "too deep"));
    parsed_free(&p);
    sb_free(&s);
    /* a million operators: refused, not a crash in a later pass */
    char *text = chain(1000000, "+");
    parse_text(&p, text);
    assert_null(p.file);
    parsed_free(&p);
    free(text);
}

static void test_emit_ast(void **state)
{
    (void)state;
    const char *src = "model a {\n"
                      "  dim H = 4, R = 2;\n"
                      "  input x[T,H];\n"
                      "  param w[H], s;\n"
                      "  state S[H];\n"
                      "  output y[T,H];\n"
                      "  let g[h] = w[h / R] + s;\n"
                      "  S[h] = max(S[h], x[t - 1, h]) * g[h];\n"
                      "  y[t,h] = sum(i, j: x[t - j, i]) + max(i: S[i]) - -1.5 * +H;\n"
                      "}\n"
                      "model b { input x[T]; output y[T]; y[t] = x[t]; }\n";
    const char *want = "(model a\n"
                       "  (dim H 4)\n"
                       "  (dim R 2)\n"
                       "  (input x T H)\n"
                       "  (param w H)\n"
                       "  (param s)\n"
                       "  (state S H)\n"
                       "  (output y T H)\n"
                       "  (let g (h) (+ (read w (/ h R)) s))\n"
                       "  (assign S (h) (* (call max (read S h) (read x (- t 1) h)) (read g h)))\n"
                       "  (assign y (t h) (- (+ (sum (i j) (read x (- t j) i)) (max (i) (read S i))) (* (neg 1.5) H)))\n"
                       ")\n"
                       "(model b\n"
                       "  (input x T)\n"
                       "  (output y T)\n"
                       "  (assign y (t) (read x t))\n"
                       ")\n";
    ssmc_ctx *ctx = ssmc_ctx_new();
    assert_non_null(ctx);
    char *text = NULL;
    assert_int_equal(ssmc_emit(ctx, "a.ssm", src, strlen(src), NULL, SSMC_EMIT_AST, &text), SSMC_OK);
    assert_non_null(text);
    assert_string_equal(text, want);
    free(text);

    /* the AST is printed before any semantic check: an undeclared name is fine here */
    const char *unchecked = "model m { output y[T]; y[t] = nothing[t] + 1; }";
    assert_int_equal(ssmc_emit(ctx, "u.ssm", unchecked, strlen(unchecked), NULL, SSMC_EMIT_AST, &text), SSMC_OK);
    assert_string_equal(text, "(model m\n  (output y T)\n  (assign y (t) (+ (read nothing t) 1))\n)\n");
    free(text);
    /* ...but it is not for the IR */
    text = (char *)1;
    assert_int_equal(ssmc_emit(ctx, "u.ssm", unchecked, strlen(unchecked), NULL, SSMC_EMIT_IR, &text),
                     SSMC_ERR_SOURCE);
    assert_null(text);
    assert_non_null(strstr(ssmc_ctx_error(ctx), "u.ssm:1:31: error: undeclared tensor 'nothing'"));

    /* a syntax error: no text, the diagnostic in the context */
    const char *bad = "model m { y[t] = ; }";
    text = (char *)1;
    assert_int_equal(ssmc_emit(ctx, "bad.ssm", bad, strlen(bad), NULL, SSMC_EMIT_AST, &text), SSMC_ERR_SOURCE);
    assert_null(text);
    assert_string_equal(ssmc_ctx_error(ctx), "bad.ssm:1:18: error: expected an expression, found ';'\n"
                                             "    model m { y[t] = ; }\n"
                                             "                     ^\n");
    /* the next call starts with a clean slate */
    assert_int_equal(ssmc_emit(ctx, "a.ssm", src, strlen(src), NULL, SSMC_EMIT_AST, &text), SSMC_OK);
    assert_string_equal(ssmc_ctx_error(ctx), "");
    free(text);
    ssmc_ctx_free(ctx);
}

/* Source text is not NUL-terminated at the API: len bytes are taken, no more. */
static void test_length_is_respected(void **state)
{
    (void)state;
    const char *src = "model m { input x[T]; output y[T]; y[t] = x[t]; } garbage that is not read";
    size_t len = strlen("model m { input x[T]; output y[T]; y[t] = x[t]; }");
    ssmc_ctx *ctx = ssmc_ctx_new();
    char *text = NULL;
    assert_int_equal(ssmc_emit(ctx, "len.ssm", src, len, NULL, SSMC_EMIT_AST, &text), SSMC_OK);
    free(text);
    assert_int_equal(ssmc_emit(ctx, "len.ssm", src, len + 3, NULL, SSMC_EMIT_AST, &text), SSMC_ERR_SOURCE);
    assert_non_null(strstr(ssmc_ctx_error(ctx), "expected another 'model' or the end of the file, found 'ga'"));
    ssmc_ctx_free(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_structure),
        cmocka_unit_test(test_indices),
        cmocka_unit_test(test_precedence),
        cmocka_unit_test(test_calls_and_reductions),
        cmocka_unit_test(test_lets_and_models),
        cmocka_unit_test(test_syntax_errors),
        cmocka_unit_test(test_nesting_bound),
        cmocka_unit_test(test_height_bound),
        cmocka_unit_test(test_emit_ast),
        cmocka_unit_test(test_length_is_respected),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
