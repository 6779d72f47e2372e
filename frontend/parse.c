/* parse.c: recursive-descent parser for SPEC §1. Reads the whole token stream
 * first; stops at the first syntax error with a located diagnostic. Nesting is
 * bounded (MAX_DEPTH), and so is the height of every expression tree
 * (MAX_HEIGHT: operator chains grow the tree without recursing here), so no
 * input can exhaust the stack here or in the passes that walk the tree
 * recursively. Builds the AST in the
 * caller's arena; names are not resolved here (check.c does that). */
#include "ast.h"
#include "lex.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 256
#define MAX_HEIGHT 1024

typedef struct parser {
    arena *a;
    diag *d;
    const src_file *f;
    token *toks;
    size_t ntoks, pos;
    int depth;  /* parse_unary calls in progress: one per level of nesting */
    int height; /* height of the expression tree the last parse_ call returned */
    bool failed;
} parser;

static token *peek(parser *p) { return &p->toks[p->pos]; }
static token *peek2(parser *p, size_t k)
{
    return &p->toks[p->pos + k < p->ntoks ? p->pos + k : p->ntoks - 1];
}
static token *advance(parser *p)
{
    token *t = &p->toks[p->pos];
    if (p->pos + 1 < p->ntoks) p->pos++;
    return t;
}

static void describe(const token *t, char *buf, size_t n)
{
    if (t->kind == TOK_IDENT || t->kind == TOK_INT || t->kind == TOK_FLOAT)
        snprintf(buf, n, "'%.*s'", (int)(t->len > 40 ? 40 : t->len), t->start);
    else
        snprintf(buf, n, "%s", tok_names[t->kind]);
}

/* t is the current token. When it starts a later line than the token before
 * it (or is the end of the file), what is missing most likely belongs at the
 * end of that earlier line, so the caret goes right after its last token. */
static void fail(parser *p, const token *t, const char *what)
{
    if (p->failed) return;
    p->failed = true;
    char found[64];
    describe(t, found, sizeof found);
    const token *prev = p->pos > 0 && t == &p->toks[p->pos] ? &p->toks[p->pos - 1] : NULL;
    if (prev && (t->kind == TOK_EOF || t->loc.line > prev->loc.line)) {
        char after[64];
        describe(prev, after, sizeof after);
        src_loc end = {prev->loc.line, prev->loc.col + prev->len};
        diag_at(p->d, p->f, end, "expected %s after %s, found %s", what, after, found);
        return;
    }
    diag_at(p->d, p->f, t->loc, "expected %s, found %s", what, found);
}

static bool accept(parser *p, tok_kind k)
{
    if (peek(p)->kind != k) return false;
    advance(p);
    return true;
}

static token *expect(parser *p, tok_kind k, const char *what)
{
    if (peek(p)->kind == k) return advance(p);
    fail(p, peek(p), what ? what : tok_names[k]);
    return NULL;
}

static char *name_of(parser *p, const token *t) { return arena_strndup(p->a, t->start, t->len); }

static ast_expr *new_expr(parser *p, ast_expr_kind k, src_loc loc)
{
    ast_expr *e = arena_alloc(p->a, sizeof *e);
    if (!e) {
        if (!p->failed) diag_error(p->d, "out of memory");
        p->failed = true;
        return NULL;
    }
    e->kind = k;
    e->loc = loc;
    e->sym = -1;
    return e;
}

/* Records the height of the tree e (NULL passes through) just built at token at. */
static ast_expr *set_height(parser *p, ast_expr *e, int h, const token *at)
{
    if (!e) return NULL;
    p->height = h;
    if (h <= MAX_HEIGHT) return e;
    if (!p->failed)
        diag_at(p->d, p->f, at->loc, "expression is too deep (more than %d operations on one path); split it with lets",
                MAX_HEIGHT);
    p->failed = true;
    return NULL;
}

static ast_expr *parse_expr(parser *p);

/* index := t | t - INT | t - IDENT | IDENT | IDENT / (INT | IDENT) | INT */
static bool parse_index(parser *p, ast_index *ix)
{
    token *t = peek(p);
    memset(ix, 0, sizeof *ix);
    ix->loc = t->loc;
    ix->var = -1;
    if (accept(p, TOK_T)) {
        ix->kind = AST_IX_T;
        if (accept(p, TOK_MINUS)) {
            token *k = peek(p);
            if (k->kind == TOK_INT) {
                advance(p);
                ix->k = (int64_t)k->num;
            } else if (k->kind == TOK_IDENT) {
                advance(p);
                ix->kind = AST_IX_T_VAR;
                ix->name = name_of(p, k);
                ix->name_loc = k->loc;
            } else {
                fail(p, k, "an integer or an index variable after 't -'");
                return false;
            }
        }
        return true;
    }
    if (t->kind == TOK_INT) {
        advance(p);
        ix->kind = AST_IX_INT;
        ix->k = (int64_t)t->num;
        return true;
    }
    if (t->kind == TOK_IDENT) {
        advance(p);
        ix->kind = AST_IX_VAR;
        ix->name = name_of(p, t);
        ix->name_loc = t->loc;
        if (accept(p, TOK_SLASH)) {
            token *r = peek(p);
            ix->kind = AST_IX_DIV;
            ix->div_loc = r->loc;
            if (r->kind == TOK_INT) {
                advance(p);
                ix->k = (int64_t)r->num;
            } else if (r->kind == TOK_IDENT) {
                advance(p);
                ix->div_name = name_of(p, r);
            } else {
                fail(p, r, "a dim or an integer after '/' in an index");
                return false;
            }
        }
        return true;
    }
    fail(p, t, "an index ('t', 't - k', a variable, 'i / R' or an integer)");
    return false;
}

static bool parse_index_list(parser *p, ast_index **out, int *n)
{
    ast_index tmp[AST_MAX_AXES + 1];
    int count = 0;
    if (peek(p)->kind == TOK_RBRACK) {
        fail(p, peek(p), "an index");
        return false;
    }
    do {
        if (count == AST_MAX_AXES) {
            if (!p->failed) diag_at(p->d, p->f, peek(p)->loc, "too many indices (at most %d)", AST_MAX_AXES);
            p->failed = true;
            return false;
        }
        if (!parse_index(p, &tmp[count])) return false;
        count++;
    } while (accept(p, TOK_COMMA));
    if (!expect(p, TOK_RBRACK, "',' or ']'")) return false;
    *out = arena_array(p->a, (size_t)count, sizeof **out);
    if (!*out) return false;
    memcpy(*out, tmp, (size_t)count * sizeof **out);
    *n = count;
    return true;
}

/* After 'sum(' or 'max(': is this `i, j[W] :` (a reduction)? (`max(x[i], y)`
 * is a call: what follows the brackets decides.) */
static bool looks_like_reduction(parser *p)
{
    size_t k = 0;
    for (;;) {
        if (peek2(p, k)->kind != TOK_IDENT) return false;
        k++;
        if (peek2(p, k)->kind == TOK_LBRACK) {
            if (peek2(p, k + 1)->kind == TOK_BIG_T) return true; /* j[T]: reported as a reduction's error */
            if (peek2(p, k + 1)->kind != TOK_IDENT || peek2(p, k + 2)->kind != TOK_RBRACK) return false;
            k += 3;
        }
        if (peek2(p, k)->kind == TOK_COLON) return true;
        if (peek2(p, k)->kind != TOK_COMMA) return false;
        k++;
    }
}

static ast_expr *parse_reduction(parser *p, token *kw, char op)
{
    ast_expr *e = new_expr(p, AST_REDUCE, kw->loc);
    if (!e) return NULL;
    e->op = op;
    e->name = op == '+' ? "sum" : "max";
    const char *names[AST_MAX_AXES], *dims[AST_MAX_AXES];
    src_loc locs[AST_MAX_AXES], dim_locs[AST_MAX_AXES];
    int n = 0;
    do {
        token *v = expect(p, TOK_IDENT, "an index variable");
        if (!v) return NULL;
        if (n == AST_MAX_AXES) {
            if (!p->failed) diag_at(p->d, p->f, v->loc, "too many reduction variables (at most %d)", AST_MAX_AXES);
            p->failed = true;
            return NULL;
        }
        names[n] = name_of(p, v);
        locs[n] = v->loc;
        dims[n] = NULL;
        dim_locs[n] = v->loc;
        if (accept(p, TOK_LBRACK)) { /* j[W]: the variable's range named */
            token *w = expect(p, TOK_IDENT, "a dim name in 'j[W]'");
            if (!w || !expect(p, TOK_RBRACK, "']' after the dim of the reduction variable")) return NULL;
            dims[n] = name_of(p, w);
            dim_locs[n] = w->loc;
        }
        n++;
    } while (accept(p, TOK_COMMA));
    if (!expect(p, TOK_COLON, "':' after the reduction variables")) return NULL;
    e->vars = arena_array(p->a, (size_t)n, sizeof *e->vars);
    e->var_locs = arena_array(p->a, (size_t)n, sizeof *e->var_locs);
    e->var_dims = arena_array(p->a, (size_t)n, sizeof *e->var_dims);
    e->var_dim_locs = arena_array(p->a, (size_t)n, sizeof *e->var_dim_locs);
    if (!e->vars || !e->var_locs || !e->var_dims || !e->var_dim_locs) return NULL;
    memcpy(e->vars, names, (size_t)n * sizeof *names);
    memcpy(e->var_locs, locs, (size_t)n * sizeof *locs);
    memcpy(e->var_dims, dims, (size_t)n * sizeof *dims);
    memcpy(e->var_dim_locs, dim_locs, (size_t)n * sizeof *dim_locs);
    e->nvars = n;
    e->a = parse_expr(p);
    if (!e->a || !expect(p, TOK_RPAREN, "')' to close the reduction")) return NULL;
    return set_height(p, e, p->height + 1, kw);
}

static ast_expr *parse_call_args(parser *p, ast_expr *e)
{
    ast_expr *args[8];
    int n = 0, h = 0;
    if (peek(p)->kind != TOK_RPAREN) {
        do {
            if (n == 8) {
                fail(p, peek(p), "')' (at most 8 arguments)");
                return NULL;
            }
            args[n] = parse_expr(p);
            if (!args[n]) return NULL;
            if (p->height > h) h = p->height;
            n++;
        } while (accept(p, TOK_COMMA));
    }
    if (!expect(p, TOK_RPAREN, "',' or ')'")) return NULL;
    e->args = arena_array(p->a, (size_t)(n ? n : 1), sizeof *e->args);
    if (!e->args) return NULL;
    memcpy(e->args, args, (size_t)n * sizeof *args);
    e->nargs = n;
    p->height = h + 1; /* within bounds: h is an argument's checked height */
    return e;
}

static ast_expr *parse_primary(parser *p)
{
    token *t = peek(p);
    switch (t->kind) {
    case TOK_INT:
    case TOK_FLOAT: {
        advance(p);
        ast_expr *e = new_expr(p, AST_NUM, t->loc);
        if (e) e->num = t->num;
        p->height = 1;
        return e;
    }
    case TOK_LPAREN: {
        advance(p);
        ast_expr *e = parse_expr(p);
        if (!e || !expect(p, TOK_RPAREN, "')'")) return NULL;
        return e;
    }
    case TOK_SUM:
        advance(p);
        if (!expect(p, TOK_LPAREN, "'(' after 'sum'")) return NULL;
        /* `sum(j[]`, `sum(j[T]`, `sum(j[W:` are reductions gone wrong: their own errors are the precise ones */
        if (!looks_like_reduction(p) &&
            !(peek(p)->kind == TOK_IDENT && peek2(p, 1)->kind == TOK_LBRACK &&
              (peek2(p, 2)->kind == TOK_RBRACK || peek2(p, 2)->kind == TOK_BIG_T ||
               (peek2(p, 2)->kind == TOK_IDENT && peek2(p, 3)->kind == TOK_COLON)))) {
            fail(p, peek(p), "reduction variables and ':' (as in 'sum(i: e)')");
            return NULL;
        }
        return parse_reduction(p, t, '+');
    case TOK_MAX: {
        advance(p);
        if (!expect(p, TOK_LPAREN, "'(' after 'max'")) return NULL;
        if (looks_like_reduction(p)) return parse_reduction(p, t, 'M');
        ast_expr *e = new_expr(p, AST_CALL, t->loc);
        if (!e) return NULL;
        e->name = "max";
        return parse_call_args(p, e);
    }
    case TOK_IDENT: {
        advance(p);
        char *name = name_of(p, t);
        if (!name) return NULL;
        if (accept(p, TOK_LPAREN)) {
            ast_expr *e = new_expr(p, AST_CALL, t->loc);
            if (!e) return NULL;
            e->name = name;
            return parse_call_args(p, e);
        }
        if (accept(p, TOK_LBRACK)) {
            ast_expr *e = new_expr(p, AST_READ, t->loc);
            if (!e) return NULL;
            e->name = name;
            if (!parse_index_list(p, &e->ix, &e->nix)) return NULL;
            p->height = 1;
            return e;
        }
        ast_expr *e = new_expr(p, AST_NAME, t->loc);
        if (e) e->name = name;
        p->height = 1;
        return e;
    }
    case TOK_T:
    case TOK_BIG_T:
        if (!p->failed)
            diag_at(p->d, p->f, t->loc, "'%s' cannot be used as a value; it may only appear in an index",
                    t->kind == TOK_T ? "t" : "T");
        p->failed = true;
        return NULL;
    default:
        fail(p, t, "an expression");
        return NULL;
    }
}

static ast_expr *parse_unary(parser *p)
{
    token *t = peek(p);
    if (++p->depth > MAX_DEPTH) {
        if (!p->failed) diag_at(p->d, p->f, t->loc, "expression nested too deeply (more than %d levels)", MAX_DEPTH);
        p->failed = true;
        return NULL;
    }
    ast_expr *e;
    if (accept(p, TOK_MINUS)) {
        ast_expr *a = parse_unary(p);
        e = a ? new_expr(p, AST_NEG, t->loc) : NULL;
        if (e) e->a = a;
        e = set_height(p, e, p->height + 1, t);
    } else if (accept(p, TOK_PLUS)) {
        e = parse_unary(p);
    } else {
        e = parse_primary(p);
    }
    p->depth--;
    return e;
}

/* a op b, where a's tree has height ha and b's is the last one parsed */
static ast_expr *binary(parser *p, token *op, ast_expr *a, int ha, ast_expr *b)
{
    if (!a || !b) return NULL;
    ast_expr *e = new_expr(p, AST_BIN, op->loc);
    if (!e) return NULL;
    e->op = *op->start;
    e->a = a;
    e->b = b;
    return set_height(p, e, (ha > p->height ? ha : p->height) + 1, op);
}

static ast_expr *parse_term(parser *p)
{
    ast_expr *e = parse_unary(p);
    while (e && (peek(p)->kind == TOK_STAR || peek(p)->kind == TOK_SLASH)) {
        token *op = advance(p);
        int ha = p->height;
        e = binary(p, op, e, ha, parse_unary(p));
    }
    return e;
}

/* Every level of nesting (parentheses, calls, reductions, unary signs) goes
 * through parse_unary, which alone counts depth. */
static ast_expr *parse_arith(parser *p)
{
    ast_expr *e = parse_term(p);
    while (e && (peek(p)->kind == TOK_PLUS || peek(p)->kind == TOK_MINUS)) {
        token *op = advance(p);
        int ha = p->height;
        e = binary(p, op, e, ha, parse_term(p));
    }
    return e;
}

/* The comparison's code in ast_expr.op (ast.h), or 0 for another token. */
static char cmp_code(tok_kind k)
{
    switch (k) {
    case TOK_LT: return '<';
    case TOK_LE: return 'l';
    case TOK_GT: return '>';
    case TOK_GE: return 'g';
    case TOK_EQ: return '=';
    case TOK_NE: return '!';
    default: return 0;
    }
}

/* expr := arith [cmp arith]: comparisons bind more loosely than + and -, and
 * do not chain (a < b < c is an error, not (a < b) < c). */
static ast_expr *parse_expr(parser *p)
{
    ast_expr *e = parse_arith(p);
    if (!e || !cmp_code(peek(p)->kind)) return e;
    token *op = advance(p);
    int ha = p->height;
    ast_expr *b = parse_arith(p);
    e = binary(p, op, e, ha, b);
    if (!e) return NULL;
    e->kind = AST_CMP;
    e->op = cmp_code(op->kind);
    token *next = peek(p);
    if (cmp_code(next->kind)) {
        if (!p->failed)
            diag_at(p->d, p->f, next->loc,
                    "comparisons do not chain: '%.*s' follows a comparison; write (a %.*s b) * (b %.*s c) for both, "
                    "or parenthesise one",
                    (int)next->len, next->start, (int)op->len, op->start, (int)next->len, next->start);
        p->failed = true;
        return NULL;
    }
    return e;
}

typedef struct model_builder {
    ast_decl *decls;
    size_t ndecls, cdecls;
    ast_stmt *stmts;
    size_t nstmts, cstmts;
} model_builder;

static bool push_decl(parser *p, model_builder *b, ast_decl *d)
{
    if (b->ndecls >= 100000 || !VEC_PUSH(b->decls, b->ndecls, b->cdecls, *d)) {
        if (!p->failed) diag_error(p->d, "out of memory (or too many declarations)");
        p->failed = true;
        return false;
    }
    return true;
}

static bool parse_dims(parser *p, model_builder *b)
{
    do {
        token *n = expect(p, TOK_IDENT, "a dim name");
        if (!n) return false;
        if (!expect(p, TOK_ASSIGN, "'=' and the dim's default size")) return false;
        token *v = expect(p, TOK_INT, "an integer size");
        if (!v) return false;
        ast_decl d = {.kind = AST_DIM, .name = name_of(p, n), .loc = n->loc, .value = (int64_t)v->num, .stmt = -1};
        if (d.value < 1) {
            diag_at(p->d, p->f, v->loc, "a dim must be at least 1");
            p->failed = true;
            return false;
        }
        if (!push_decl(p, b, &d)) return false;
    } while (accept(p, TOK_COMMA));
    return expect(p, TOK_SEMI, "',' or ';'") != NULL;
}

static bool parse_tensor_decls(parser *p, model_builder *b, ast_decl_kind kind)
{
    do {
        token *n = expect(p, TOK_IDENT, "a tensor name");
        if (!n) return false;
        ast_decl d = {.kind = kind, .name = name_of(p, n), .loc = n->loc, .stmt = -1};
        if (accept(p, TOK_LBRACK)) {
            do {
                token *ax = peek(p);
                if (ax->kind != TOK_IDENT && ax->kind != TOK_BIG_T) {
                    fail(p, ax, "a dim name (or T) as an axis");
                    return false;
                }
                if (d.naxes == AST_MAX_AXES) {
                    diag_at(p->d, p->f, ax->loc, "too many axes (at most %d)", AST_MAX_AXES);
                    p->failed = true;
                    return false;
                }
                advance(p);
                d.axes[d.naxes] = name_of(p, ax);
                d.axis_locs[d.naxes++] = ax->loc;
            } while (accept(p, TOK_COMMA));
            if (!expect(p, TOK_RBRACK, "',' or ']'")) return false;
        }
        if (!push_decl(p, b, &d)) return false;
    } while (accept(p, TOK_COMMA));
    return expect(p, TOK_SEMI, "',' or ';'") != NULL;
}

static bool parse_stmt(parser *p, model_builder *b, bool is_let, bool is_init)
{
    token *n = expect(p, TOK_IDENT, is_let ? "a name after 'let'" : is_init ? "a state after 'init'" : "a statement");
    if (!n) return false;
    ast_stmt s = {.is_let = is_let, .is_init = is_init, .name = name_of(p, n), .loc = n->loc, .sym = -1};
    if (accept(p, TOK_LBRACK)) {
        s.brackets = true;
        if (!parse_index_list(p, &s.lhs, &s.nlhs)) return false;
    }
    if (!expect(p, TOK_ASSIGN, s.brackets ? "'='" : "'[' or '='")) return false;
    s.rhs = parse_expr(p);
    if (!s.rhs) return false;
    if (!expect(p, TOK_SEMI, "an operator or ';'")) return false;
    if (b->nstmts >= 100000 || !VEC_PUSH(b->stmts, b->nstmts, b->cstmts, s)) {
        if (!p->failed) diag_error(p->d, "out of memory (or too many statements)");
        p->failed = true;
        return false;
    }
    return true;
}

static bool parse_model(parser *p, ast_model *m, bool first)
{
    token *kw = peek(p);
    if (kw->kind != TOK_MODEL) {
        /* at the token itself: stray text is not something missing from the line before */
        char found[64];
        describe(kw, found, sizeof found);
        if (!p->failed)
            diag_at(p->d, p->f, kw->loc, "expected %s, found %s", first ? "'model'" : "another 'model' or the end of the file",
                    found);
        p->failed = true;
        return false;
    }
    advance(p);
    token *n = expect(p, TOK_IDENT, "a model name");
    if (!n || !expect(p, TOK_LBRACE, "'{'")) return false;
    m->name = name_of(p, n);
    m->loc = n->loc;
    model_builder b = {0};
    bool ok = true;
    while (ok && !accept(p, TOK_RBRACE)) {
        token *t = peek(p);
        switch (t->kind) {
        case TOK_DIM: advance(p); ok = parse_dims(p, &b); break;
        case TOK_INPUT: advance(p); ok = parse_tensor_decls(p, &b, AST_INPUT); break;
        case TOK_PARAM: advance(p); ok = parse_tensor_decls(p, &b, AST_PARAM); break;
        case TOK_STATE: advance(p); ok = parse_tensor_decls(p, &b, AST_STATE); break;
        case TOK_OUTPUT: advance(p); ok = parse_tensor_decls(p, &b, AST_OUTPUT); break;
        case TOK_LET: advance(p); ok = parse_stmt(p, &b, true, false); break;
        case TOK_IDENT:
            /* `init` is a keyword only where a name follows it: `init S[i] = e;` */
            if (t->len == 4 && memcmp(t->start, "init", 4) == 0 && peek2(p, 1)->kind == TOK_IDENT) {
                advance(p);
                ok = parse_stmt(p, &b, false, true);
            } else {
                ok = parse_stmt(p, &b, false, false);
            }
            break;
        case TOK_EOF: fail(p, t, "'}' to close the model"); ok = false; break;
        default: fail(p, t, "a declaration, a statement or '}'"); ok = false; break;
        }
    }
    if (ok) {
        m->decls = arena_array(p->a, b.ndecls ? b.ndecls : 1, sizeof *m->decls);
        m->stmts = arena_array(p->a, b.nstmts ? b.nstmts : 1, sizeof *m->stmts);
        if (m->decls && m->stmts) {
            if (b.ndecls) memcpy(m->decls, b.decls, b.ndecls * sizeof *b.decls);
            if (b.nstmts) memcpy(m->stmts, b.stmts, b.nstmts * sizeof *b.stmts);
            m->ndecls = (int)b.ndecls;
            m->nstmts = (int)b.nstmts;
        } else {
            ok = false;
        }
    }
    free(b.decls);
    free(b.stmts);
    return ok && !p->failed;
}

ast_file *parse_file(arena *a, diag *d, const src_file *f)
{
    parser p = {.a = a, .d = d, .f = f};
    size_t cap = 0;
    lexer lx;
    lex_init(&lx, f->text, f->len);
    for (;;) {
        token t = lex_next(&lx);
        if (t.kind == TOK_ERROR) {
            diag_at(d, f, t.loc, "%s", t.error);
            free(p.toks);
            return NULL;
        }
        if (!VEC_PUSH(p.toks, p.ntoks, cap, t)) {
            diag_error(d, "out of memory");
            free(p.toks);
            return NULL;
        }
        if (t.kind == TOK_EOF) break;
    }
    ast_file *file = arena_alloc(a, sizeof *file);
    ast_model *models = NULL;
    size_t nmodels = 0, cmodels = 0;
    bool ok = file != NULL;
    name_index names = {0}; /* model name -> index: a name defined twice is an error at the second */
    while (ok && peek(&p)->kind != TOK_EOF) {
        ast_model m = {0};
        ok = parse_model(&p, &m, nmodels == 0);
        int prev = ok ? name_index_put(&names, m.name, (int)nmodels) : -1;
        if (prev >= 0) {
            diag_at(d, f, m.loc, "model '%s' is already defined at %u:%u", m.name, models[prev].loc.line,
                    models[prev].loc.col);
            ok = false;
        }
        ok = ok && prev != -2 && VEC_PUSH(models, nmodels, cmodels, m);
    }
    name_index_free(&names);
    if (ok && nmodels == 0) {
        diag_at(d, f, peek(&p)->loc, "expected 'model', found end of file (the file holds no model)");
        ok = false;
    }
    if (ok) {
        file->models = arena_array(a, nmodels, sizeof *models);
        if (file->models) {
            memcpy(file->models, models, nmodels * sizeof *models);
            file->nmodels = (int)nmodels;
        } else {
            ok = false;
        }
    }
    if (!ok && d->nerrors == 0) diag_error(d, "out of memory");
    free(models);
    free(p.toks);
    return ok ? file : NULL;
}
