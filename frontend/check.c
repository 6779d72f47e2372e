/* check.c: semantic checks of one model (SPEC §1), after -D overrides.
 *
 * Resolves every name to its declaration, gives every index variable of a
 * statement an id and a dim, and rejects, with a located error: duplicate and
 * undeclared names, wrong index counts, unbound index variables, a variable on
 * axes of different dims, `t` misused, inputs/outputs whose first axis is not T,
 * a state updated twice or an output not written exactly once, writes to inputs
 * or params, group divisors that do not divide, unknown functions and wrong
 * arity, time offsets on anything but inputs and per-step lets (and, on a let
 * that reads a state, beyond MAX_LAG_WINDOW steps), init statements that read
 * anything but params, and names that are both an index variable and a tensor.
 * Lets become declarations (kind AST_LET) whose axes are inferred from their
 * right side; an index variable used as a number becomes AST_IDX. On success
 * the tree is annotated as ast.h says. */
#include "ast.h"
#include "support/ops.h"

#include <stdlib.h>
#include <string.h>

#define MAX_VARS 64
#define MAX_ELEMS ((int64_t)1 << 40)
/* A let that reads a state is read at t - k through k hidden states of its size
 * (passes/lag.c); beyond this many the program is refused. */
#define MAX_LAG_WINDOW 64


typedef struct var_info {
    const char *name;
    src_loc loc;   /* where it is bound */
    int dim;       /* decl index of its dim, or -1 while unknown */
    src_loc dim_loc; /* where its dim was fixed */
    bool used;
} var_info;

typedef struct checker {
    arena *a;
    diag *d;
    const src_file *f;
    ast_model *m;
    ast_decl *decls; /* declarations plus one per let, in order */
    int ndecls, cap;
    int *defined_at; /* per decl: statement index that defines/updates it, or -1 */
    int *init_at;    /* per decl: its init statement, or -1 */
    name_index names; /* decl name -> index in decls (the first of a name) */
    /* the statement being checked */
    ast_stmt *st;
    int stmt_index;
    var_info vars[MAX_VARS];
    int nvars;
    int scope[MAX_VARS]; /* visible variables, innermost last */
    int nscope;
    bool time_invariant; /* checking a time-invariant let */
    bool init;           /* checking an init statement */
    bool reads_state;    /* the statement's right side depends on a state (directly or through lets) */
    bool ok;
} checker;

static void err(checker *c, src_loc loc, const char *fmt, ...)
{
    if (!c->ok) return; /* first error only: later ones are usually consequences */
    c->ok = false;
    strbuf m = {0};
    va_list ap;
    va_start(ap, fmt);
    sb_vprintf(&m, fmt, ap);
    va_end(ap);
    diag_at(c->d, c->f, loc, "%s", sb_cstr(&m));
    sb_free(&m);
}

static int find_decl(checker *c, const char *name) { return name_index_get(&c->names, name); }

static const char *kind_name(ast_decl_kind k)
{
    static const char *names[] = {"dim", "input", "param", "state", "output", "let"};
    return names[k];
}

static bool per_step(const ast_decl *d) { return d->naxes > 0 && strcmp(d->axes[0], "T") == 0; }

static int64_t dim_value(checker *c, int dim) { return c->decls[dim].value; }

/* A name not declared yet may be a let that a later statement defines. */
static const ast_stmt *later_let(checker *c, const char *name)
{
    for (int i = c->stmt_index + 1; i < c->m->nstmts; i++)
        if (c->m->stmts[i].is_let && strcmp(c->m->stmts[i].name, name) == 0) return &c->m->stmts[i];
    return NULL;
}

/* ---- index variables ---- */

static int lookup_var(checker *c, const char *name)
{
    for (int i = c->nscope - 1; i >= 0; i--)
        if (strcmp(c->vars[c->scope[i]].name, name) == 0) return c->scope[i];
    return -1;
}

static int new_var(checker *c, const char *name, src_loc loc)
{
    if (c->nvars == MAX_VARS) {
        err(c, loc, "too many index variables in one statement (at most %d)", MAX_VARS);
        return -1;
    }
    if (find_decl(c, name) >= 0 && c->decls[find_decl(c, name)].kind == AST_DIM) {
        err(c, loc, "'%s' is a dim; an index variable needs another name", name);
        return -1;
    }
    int v = c->nvars++;
    c->vars[v] = (var_info){.name = name, .loc = loc, .dim = -1};
    c->scope[c->nscope++] = v;
    return v;
}

/* Gives variable v the dim of an axis, or checks it has that dim already. */
static void bind_dim(checker *c, int v, int dim, src_loc loc)
{
    var_info *vi = &c->vars[v];
    if (vi->dim < 0) {
        vi->dim = dim;
        vi->dim_loc = loc;
    } else if (vi->dim != dim) {
        err(c, loc, "index variable '%s' indexes an axis of dim %s here, but an axis of dim %s at %u:%u",
            vi->name, c->decls[dim].name, c->decls[vi->dim].name, vi->dim_loc.line, vi->dim_loc.col);
    }
}

/* ---- expressions ---- */

static void check_expr(checker *c, ast_expr *e);

/* A read of a tensor: index count, `t` placement, dims of plain variables.
 * Division and offset indices are validated in pass 2 (check_late). */
static void check_read(checker *c, ast_expr *e)
{
    int s = find_decl(c, e->name);
    if (s < 0) {
        const ast_stmt *let = later_let(c, e->name);
        if (lookup_var(c, e->name) >= 0)
            err(c, e->loc, "'%s' is an index variable, not a tensor", e->name);
        else if (let)
            err(c, e->loc, "let '%s' is used before it is defined at %u:%u", e->name, let->loc.line, let->loc.col);
        else
            err(c, e->loc, "undeclared tensor '%s'", e->name);
        return;
    }
    e->sym = s;
    ast_decl *d = &c->decls[s];
    if (d->kind == AST_DIM) {
        err(c, e->loc, "'%s' is a dim and takes no indices", e->name);
        return;
    }
    if (d->kind == AST_OUTPUT) {
        err(c, e->loc, "output '%s' cannot be read; compute it with a let and read that", e->name);
        return;
    }
    if (d->kind == AST_LET && d->stmt >= c->stmt_index) {
        err(c, e->loc, "let '%s' is used before it is defined", e->name);
        return;
    }
    if (d->kind == AST_LET && d->stmt < 0) {
        err(c, e->loc, "let '%s' is read in its own definition", e->name);
        return;
    }
    bool ps = per_step(d);
    if (!ps && e->nix > 0 && (e->ix[0].kind == AST_IX_T || e->ix[0].kind == AST_IX_T_VAR)) {
        if (d->kind == AST_LET && (e->ix[0].kind == AST_IX_T_VAR || e->ix[0].k != 0))
            err(c, e->ix[0].loc,
                "let '%s' is time-invariant: it is computed once, not at every step, so it cannot be read at an "
                "earlier step",
                e->name);
        else
            err(c, e->ix[0].loc, "%s '%s' has no time axis; 't' cannot index it%s", kind_name(d->kind), e->name,
                d->kind == AST_STATE ? " (a read before the state's update sees the previous step)" : "");
        return;
    }
    if (e->nix != d->naxes) {
        err(c, e->loc, "'%s' has %d ax%s but is indexed with %d ind%s", e->name, d->naxes,
            d->naxes == 1 ? "is" : "es", e->nix, e->nix == 1 ? "ex" : "ices");
        return;
    }
    if (c->init && d->kind != AST_PARAM) {
        err(c, e->loc, "an init may read only params, dims, literals and index variables; '%s' is %s %s", e->name,
            d->kind == AST_INPUT ? "an" : "a", kind_name(d->kind));
        return;
    }
    if (d->kind == AST_STATE || (d->kind == AST_LET && d->reads_state)) c->reads_state = true;
    if (c->time_invariant) {
        if (ps) {
            err(c, e->loc, "a time-invariant let cannot read per-step '%s'; index the let with t to make it per step",
                e->name);
            return;
        }
        if (d->kind == AST_STATE) {
            err(c, e->loc, "a time-invariant let cannot read state '%s'", e->name);
            return;
        }
    }
    for (int i = 0; i < e->nix; i++) {
        ast_index *ix = &e->ix[i];
        bool time_axis = ps && i == 0;
        if (time_axis) {
            if (ix->kind != AST_IX_T && ix->kind != AST_IX_T_VAR) {
                err(c, ix->loc, "the first index of per-step '%s' must be t (or t - k)", e->name);
                return;
            }
            if (d->kind != AST_INPUT && d->kind != AST_LET && !(ix->kind == AST_IX_T && ix->k == 0)) {
                err(c, ix->loc, "time offsets are only allowed on inputs and per-step lets; '%s' is a %s", e->name,
                    kind_name(d->kind));
                return;
            }
            if (d->kind == AST_LET && d->reads_state && ix->kind == AST_IX_T && ix->k > MAX_LAG_WINDOW) {
                err(c, ix->loc,
                    "let '%s' reads a state, so its earlier values are kept in copies of it, at most %d; it cannot "
                    "be read at t - %lld",
                    e->name, MAX_LAG_WINDOW, (long long)ix->k);
                return;
            }
        } else if (ix->kind == AST_IX_T || ix->kind == AST_IX_T_VAR) {
            if (ps)
                err(c, ix->loc, "'t' may only be the first index");
            else
                err(c, ix->loc, "%s '%s' has no time axis; 't' cannot index it", kind_name(d->kind), e->name);
            return;
        }
        int dim = find_decl(c, d->axes[i]);
        if (ix->kind == AST_IX_VAR || ix->kind == AST_IX_DIV || ix->kind == AST_IX_T_VAR) {
            int v = lookup_var(c, ix->name);
            int named = v < 0 ? find_decl(c, ix->name) : -1;
            if (named >= 0) { /* a dim or tensor where an index variable goes: say what an index may be */
                err(c, ix->name_loc,
                    "'%s' is %s %s, not an index variable: %s", ix->name,
                    strchr("aeiou", kind_name(c->decls[named].kind)[0]) ? "an" : "a", kind_name(c->decls[named].kind),
                    ix->kind == AST_IX_T_VAR ? "t - k takes an integer literal or an index variable as k"
                    : ix->kind == AST_IX_DIV ? "i / R divides an index variable"
                                             : "an index is an index variable, an integer literal, t - k or i / R");
                return;
            }
            if (v < 0) {
                err(c, ix->name_loc,
                    "index variable '%s' is not bound: it must appear on the left side or in a reduction", ix->name);
                return;
            }
            ix->var = v;
            c->vars[v].used = true;
            if (ix->kind == AST_IX_VAR) bind_dim(c, v, dim, ix->name_loc);
        }
    }
}

static void check_expr(checker *c, ast_expr *e)
{
    if (!c->ok) return;
    switch (e->kind) {
    case AST_NUM: return;
    case AST_NAME: {
        int s = find_decl(c, e->name);
        int v = lookup_var(c, e->name);
        if (v >= 0) {
            if (s >= 0) {
                err(c, e->loc, "'%s' is both an index variable here and a %s; rename one of them", e->name,
                    kind_name(c->decls[s].kind));
                return;
            }
            e->kind = AST_IDX; /* its 0-based value as a number */
            e->var = v;
            c->vars[v].used = true;
            return;
        }
        if (s < 0) {
            const ast_stmt *let = later_let(c, e->name);
            if (let)
                err(c, e->loc, "let '%s' is used before it is defined at %u:%u", e->name, let->loc.line, let->loc.col);
            else
                err(c, e->loc, "undeclared name '%s'", e->name);
            return;
        }
        e->sym = s;
        ast_decl *d = &c->decls[s];
        if (d->kind == AST_DIM) return;
        if (d->naxes > 0) {
            err(c, e->loc, "'%s' is a tensor of %d ax%s and needs indices", e->name, d->naxes,
                d->naxes == 1 ? "is" : "es");
            return;
        }
        e->kind = AST_READ; /* a scalar read */
        check_read(c, e);
        return;
    }
    case AST_READ: check_read(c, e); return;
    case AST_NEG: check_expr(c, e->a); return;
    case AST_BIN:
    case AST_CMP:
        check_expr(c, e->a);
        check_expr(c, e->b);
        return;
    case AST_IDX: return;
    case AST_CALL: {
        int fn = -1;
        for (int i = 0; op_table[i].name; i++)
            if (op_table[i].kind == OPK_FUNC && strcmp(op_table[i].name, e->name) == 0) fn = i;
        if (fn < 0) {
            err(c, e->loc, "unknown function '%s'", e->name);
            return;
        }
        int arity = op_table[fn].arity;
        if (e->nargs != arity) {
            err(c, e->loc, "'%s' takes %d argument%s, found %d", e->name, arity, arity == 1 ? "" : "s", e->nargs);
            return;
        }
        e->fn = fn;
        for (int i = 0; i < e->nargs; i++) check_expr(c, e->args[i]);
        return;
    }
    case AST_REDUCE: {
        int saved = c->nscope;
        e->var_ids = arena_array(c->a, (size_t)e->nvars, sizeof *e->var_ids);
        if (!e->var_ids) {
            err(c, e->loc, "out of memory");
            return;
        }
        for (int i = 0; i < e->nvars; i++) {
            int prev = lookup_var(c, e->vars[i]);
            if (prev >= 0) {
                err(c, e->var_locs[i], "'%s' is already an index variable here (bound at %u:%u); a reduction needs a new name",
                    e->vars[i], c->vars[prev].loc.line, c->vars[prev].loc.col);
                return;
            }
            e->var_ids[i] = new_var(c, e->vars[i], e->var_locs[i]);
            if (e->var_ids[i] < 0) return;
            if (e->var_dims && e->var_dims[i]) { /* j[W]: the range given by name */
                int w = find_decl(c, e->var_dims[i]);
                if (w < 0) {
                    err(c, e->var_dim_locs[i], "undeclared dim '%s'", e->var_dims[i]);
                    return;
                }
                if (c->decls[w].kind != AST_DIM) {
                    err(c, e->var_dim_locs[i], "'%s' is a %s, not a dim; 'j[W]' names the range of j", e->var_dims[i],
                        kind_name(c->decls[w].kind));
                    return;
                }
                bind_dim(c, e->var_ids[i], w, e->var_dim_locs[i]);
            }
        }
        check_expr(c, e->a);
        for (int i = 0; c->ok && i < e->nvars; i++)
            if (!c->vars[e->var_ids[i]].used)
                err(c, e->var_locs[i], "reduction variable '%s' is not used in the reduced expression", e->vars[i]);
        c->nscope = saved;
        return;
    }
    }
}

/* Pass 2: needs every plain variable's dim. */
static void check_late(checker *c, ast_expr *e)
{
    if (!c->ok || !e) return;
    switch (e->kind) {
    case AST_NEG: check_late(c, e->a); return;
    case AST_BIN:
    case AST_CMP:
        check_late(c, e->a);
        check_late(c, e->b);
        return;
    case AST_CALL:
        for (int i = 0; i < e->nargs; i++) check_late(c, e->args[i]);
        return;
    case AST_REDUCE:
        for (int i = 0; c->ok && i < e->nvars; i++)
            if (c->vars[e->var_ids[i]].dim < 0)
                err(c, e->var_locs[i], "cannot infer the range of '%s': use it to index an axis directly", e->vars[i]);
        check_late(c, e->a);
        return;
    case AST_READ: break;
    default: return;
    }
    ast_decl *d = &c->decls[e->sym];
    for (int i = 0; c->ok && i < e->nix; i++) {
        ast_index *ix = &e->ix[i];
        int64_t axis = strcmp(d->axes[i], "T") == 0 ? -1 : dim_value(c, find_decl(c, d->axes[i]));
        if (ix->kind == AST_IX_INT && (ix->k < 0 || ix->k >= axis)) {
            err(c, ix->loc, "index %lld is out of range for axis %s = %lld of '%s'", (long long)ix->k, d->axes[i],
                (long long)axis, e->name);
        } else if (ix->kind == AST_IX_T_VAR || ix->kind == AST_IX_DIV) {
            var_info *v = &c->vars[ix->var];
            if (v->dim < 0) {
                err(c, ix->name_loc, "cannot infer the range of '%s': use it to index an axis directly", v->name);
                return;
            }
            if (ix->kind == AST_IX_T_VAR && d->kind == AST_LET && d->reads_state &&
                dim_value(c, v->dim) > MAX_LAG_WINDOW + 1) {
                err(c, ix->loc,
                    "let '%s' reads a state, so its earlier values are kept in copies of it, at most %d; reading it "
                    "at t - %s, %s < %lld, needs %lld",
                    e->name, MAX_LAG_WINDOW, v->name, v->name, (long long)dim_value(c, v->dim),
                    (long long)dim_value(c, v->dim) - 1);
                return;
            }
            if (ix->kind == AST_IX_DIV) {
                int64_t r = ix->k;
                if (ix->div_name) {
                    int rd = find_decl(c, ix->div_name);
                    if (rd < 0 || c->decls[rd].kind != AST_DIM) {
                        err(c, ix->div_loc, "'%s' is not a dim; a group divisor is a dim or an integer", ix->div_name);
                        return;
                    }
                    r = dim_value(c, rd);
                }
                if (r < 1) {
                    err(c, ix->div_loc, "a group divisor must be at least 1");
                    return;
                }
                int64_t range = dim_value(c, v->dim);
                if (range % r != 0) {
                    err(c, ix->div_loc, "group divisor %lld does not divide the range %s = %lld of '%s'",
                        (long long)r, c->decls[v->dim].name, (long long)range, v->name);
                    return;
                }
                if (range / r != axis) {
                    err(c, ix->loc, "'%s / %lld' ranges over %lld values but axis %s of '%s' has %lld",
                        v->name, (long long)r, (long long)(range / r), d->axes[i], e->name, (long long)axis);
                    return;
                }
                ix->div = r;
            }
        }
    }
}

/* ---- declarations ---- */

/* Multiplies *elems by an axis of size n unless the tensor would pass MAX_ELEMS. */
static bool grow_elems(int64_t *elems, int64_t n)
{
    if (n > MAX_ELEMS / *elems) return false;
    *elems *= n;
    return true;
}

static bool add_decl(checker *c, const ast_decl *d)
{
    if (c->ndecls == c->cap) {
        int ncap = c->cap ? c->cap * 2 : 32;
        ast_decl *n = arena_array(c->a, (size_t)ncap, sizeof *n);
        if (!n) return false;
        if (c->ndecls) memcpy(n, c->decls, (size_t)c->ndecls * sizeof *n);
        c->decls = n;
        c->cap = ncap;
    }
    if (name_index_put(&c->names, d->name, c->ndecls) == -2) return false;
    c->decls[c->ndecls++] = *d;
    return true;
}

static void check_decls(checker *c, const ast_dim_override *over, int nover)
{
    ast_model *m = c->m;
    for (int i = 0; c->ok && i < m->ndecls; i++) {
        ast_decl *d = &m->decls[i];
        int prev = find_decl(c, d->name);
        if (prev >= 0) {
            err(c, d->loc, "'%s' is already declared at %u:%u", d->name, c->decls[prev].loc.line,
                c->decls[prev].loc.col);
            return;
        }
        if (!add_decl(c, d)) err(c, d->loc, "out of memory");
    }
    name_index given = {0}; /* -D names so far: a dim set twice is an error, not the last one winning */
    for (int i = 0; c->ok && i < nover; i++) {
        int prev = name_index_put(&given, over[i].name, i);
        if (prev >= 0) {
            c->ok = false;
            diag_error(c->d, "-D %s=%lld: '%s' is already given (-D %s=%lld); give each dim once", over[i].name,
                       (long long)over[i].value, over[i].name, over[prev].name, (long long)over[prev].value);
            break;
        }
        if (prev == -2) {
            err(c, m->loc, "out of memory");
            break;
        }
        int k = find_decl(c, over[i].name);
        if (k < 0 || c->decls[k].kind != AST_DIM) {
            c->ok = false;
            strbuf dims = {0};
            for (int j = 0; j < c->ndecls; j++)
                if (c->decls[j].kind == AST_DIM) sb_printf(&dims, "%s%s", dims.len ? ", " : "", c->decls[j].name);
            diag_error(c->d, "-D %s: model '%s' has no dim named '%s' (its dims: %s)", over[i].name, m->name,
                       over[i].name, dims.len ? sb_cstr(&dims) : "none");
            sb_free(&dims);
            break;
        }
        if (over[i].value < 1 || over[i].value > ((int64_t)1 << 31)) {
            c->ok = false;
            diag_error(c->d, "-D %s=%lld: a dim must be between 1 and 2^31", over[i].name, (long long)over[i].value);
            break;
        }
        c->decls[k].value = over[i].value;
    }
    name_index_free(&given);
    for (int i = 0; c->ok && i < c->ndecls; i++) {
        ast_decl *d = &c->decls[i];
        if (d->kind == AST_DIM) continue;
        int64_t elems = 1;
        for (int j = 0; c->ok && j < d->naxes; j++) {
            bool is_t = strcmp(d->axes[j], "T") == 0;
            if (is_t) {
                if (j != 0)
                    err(c, d->axis_locs[j], "T may only be the first axis");
                else if (d->kind != AST_INPUT && d->kind != AST_OUTPUT)
                    err(c, d->axis_locs[j], "a %s has no time axis; only inputs and outputs start with T",
                        kind_name(d->kind));
                continue;
            }
            int k = find_decl(c, d->axes[j]);
            if (k < 0)
                err(c, d->axis_locs[j], "undeclared dim '%s'", d->axes[j]);
            else if (c->decls[k].kind != AST_DIM)
                err(c, d->axis_locs[j], "'%s' is a %s, not a dim", d->axes[j], kind_name(c->decls[k].kind));
            else if (!grow_elems(&elems, c->decls[k].value))
                err(c, d->axis_locs[j], "'%s' would have more than 2^40 elements", d->name);
        }
        if (c->ok && (d->kind == AST_INPUT || d->kind == AST_OUTPUT) && !per_step(d))
            err(c, d->naxes ? d->axis_locs[0] : d->loc, "the first axis of %s '%s' must be T", kind_name(d->kind),
                d->name);
    }
}

/* ---- statements ---- */

static void check_stmt(checker *c, int si)
{
    ast_stmt *s = &c->m->stmts[si];
    c->st = s;
    c->stmt_index = si;
    c->nvars = 0;
    c->nscope = 0;
    c->time_invariant = false;
    c->init = s->is_init;
    c->reads_state = false;

    ast_decl *target = NULL;
    ast_decl let = {0};
    if (s->is_init) {
        int k = find_decl(c, s->name);
        if (k < 0) {
            err(c, s->loc, "undeclared state '%s' (an init gives a declared state its initial value)", s->name);
            return;
        }
        target = &c->decls[k];
        if (target->kind != AST_STATE) {
            err(c, s->loc, "an init gives a state its initial value; '%s' is %s %s", s->name,
                target->kind == AST_INPUT || target->kind == AST_OUTPUT ? "an" : "a", kind_name(target->kind));
            return;
        }
        if (c->init_at[k] >= 0) {
            ast_stmt *first = &c->m->stmts[c->init_at[k]];
            err(c, s->loc, "state '%s' already has an init at %u:%u", s->name, first->loc.line, first->loc.col);
            return;
        }
        c->init_at[k] = si;
        s->sym = k;
        if (s->nlhs != target->naxes) {
            err(c, s->loc, "'%s' has %d ax%s but its init has %d ind%s", s->name, target->naxes,
                target->naxes == 1 ? "is" : "es", s->nlhs, s->nlhs == 1 ? "ex" : "ices");
            return;
        }
    } else if (s->is_let) {
        int prev = find_decl(c, s->name);
        if (prev >= 0) {
            err(c, s->loc, "'%s' is already declared at %u:%u", s->name, c->decls[prev].loc.line,
                c->decls[prev].loc.col);
            return;
        }
        let.kind = AST_LET;
        let.name = s->name;
        let.loc = s->loc;
        let.stmt = -1; /* not readable inside its own definition */
        c->time_invariant = !(s->nlhs > 0 && (s->lhs[0].kind == AST_IX_T || s->lhs[0].kind == AST_IX_T_VAR));
        if (!c->time_invariant) {
            let.axes[let.naxes] = "T";
            let.axis_locs[let.naxes++] = s->lhs[0].loc;
        }
        if (!add_decl(c, &let)) {
            err(c, s->loc, "out of memory");
            return;
        }
        s->sym = c->ndecls - 1;
    } else {
        int k = find_decl(c, s->name);
        if (k < 0) {
            err(c, s->loc, "undeclared name '%s' (declare it as a state or an output, or use 'let')", s->name);
            return;
        }
        target = &c->decls[k];
        if (target->kind != AST_STATE && target->kind != AST_OUTPUT) {
            err(c, s->loc, "cannot assign to %s '%s'; only states and outputs are assigned", kind_name(target->kind),
                s->name);
            return;
        }
        if (c->defined_at[k] >= 0) {
            ast_stmt *first = &c->m->stmts[c->defined_at[k]];
            err(c, s->loc, "%s '%s' is already %s at %u:%u", kind_name(target->kind), s->name,
                target->kind == AST_STATE ? "updated in this step" : "written", first->loc.line, first->loc.col);
            return;
        }
        c->defined_at[k] = si;
        s->sym = k;
        if (s->nlhs != target->naxes) {
            err(c, s->loc, "'%s' has %d ax%s but is assigned with %d ind%s", s->name, target->naxes,
                target->naxes == 1 ? "is" : "es", s->nlhs, s->nlhs == 1 ? "ex" : "ices");
            return;
        }
    }
    /* the left side: distinct plain variables, after `t` where there is one */
    for (int i = 0; c->ok && i < s->nlhs; i++) {
        ast_index *ix = &s->lhs[i];
        bool time_axis = i == 0 && (s->is_let ? !c->time_invariant : target->kind == AST_OUTPUT);
        if (time_axis) {
            if (ix->kind != AST_IX_T || ix->k != 0) err(c, ix->loc, "the first index on the left must be plain t");
            continue;
        }
        if (ix->kind == AST_IX_T || ix->kind == AST_IX_T_VAR) {
            err(c, ix->loc, s->is_let    ? "'t' may only be the first index of a let"
                            : s->is_init ? "'t' cannot index an init: it gives the value before the first step"
                                         : "'t' cannot index a state; a state holds one value per sequence");
            return;
        }
        if (ix->kind != AST_IX_VAR) {
            err(c, ix->loc, "an index on the left side must be a plain index variable");
            return;
        }
        if (lookup_var(c, ix->name) >= 0) {
            err(c, ix->loc, "index variable '%s' appears twice on the left side", ix->name);
            return;
        }
        ix->var = new_var(c, ix->name, ix->name_loc);
        if (ix->var < 0) return;
        if (target) bind_dim(c, ix->var, find_decl(c, target->axes[i]), ix->name_loc);
    }
    if (!c->ok) return;
    if (c->time_invariant && s->nlhs == 0 && s->brackets) {
        err(c, s->loc, "empty index list");
        return;
    }

    check_expr(c, s->rhs);
    for (int i = 0; c->ok && i < s->nlhs; i++) {
        ast_index *ix = &s->lhs[i];
        if (ix->var >= 0 && c->vars[ix->var].dim < 0)
            err(c, ix->name_loc, "cannot infer the range of '%s': the right side never uses it to index an axis",
                ix->name);
    }
    check_late(c, s->rhs);
    if (!c->ok) return;

    if (s->is_let) {
        /* a let's size comes from its variables: bounded like a declared tensor's */
        ast_decl *d = &c->decls[s->sym];
        int64_t elems = 1;
        for (int i = 0; i < s->nlhs; i++) {
            if (s->lhs[i].kind == AST_IX_T) continue;
            var_info *v = &c->vars[s->lhs[i].var];
            if (!grow_elems(&elems, dim_value(c, v->dim))) {
                err(c, s->lhs[i].loc, "'%s' would have more than 2^40 elements", s->name);
                return;
            }
            d->axes[d->naxes] = c->decls[v->dim].name;
            d->axis_locs[d->naxes++] = s->lhs[i].loc;
        }
        d->stmt = si;
        d->reads_state = c->reads_state;
    }
    s->nvars = c->nvars;
    s->var_names = arena_array(c->a, (size_t)(c->nvars ? c->nvars : 1), sizeof *s->var_names);
    s->var_dims = arena_array(c->a, (size_t)(c->nvars ? c->nvars : 1), sizeof *s->var_dims);
    if (!s->var_names || !s->var_dims) {
        err(c, s->loc, "out of memory");
        return;
    }
    for (int i = 0; i < c->nvars; i++) {
        s->var_names[i] = c->vars[i].name;
        s->var_dims[i] = c->vars[i].dim;
    }
}

bool check_model(arena *a, diag *d, const src_file *f, ast_model *m, const ast_dim_override *over, int nover)
{
    checker c = {.a = a, .d = d, .f = f, .m = m, .ok = true};
    check_decls(&c, over, nover);
    if (c.ok) {
        c.defined_at = arena_array(a, (size_t)c.ndecls + (size_t)m->nstmts + 1, sizeof *c.defined_at);
        c.init_at = arena_array(a, (size_t)c.ndecls + (size_t)m->nstmts + 1, sizeof *c.init_at);
        if (!c.defined_at || !c.init_at) {
            diag_error(d, "out of memory");
            name_index_free(&c.names);
            return false;
        }
        for (int i = 0; i < c.ndecls + m->nstmts + 1; i++) c.defined_at[i] = c.init_at[i] = -1;
    }
    for (int i = 0; c.ok && i < m->nstmts; i++) check_stmt(&c, i);
    for (int i = 0; c.ok && i < c.ndecls; i++)
        if (c.decls[i].kind == AST_OUTPUT && c.defined_at[i] < 0)
            err(&c, c.decls[i].loc, "output '%s' is never written", c.decls[i].name);
    if (c.ok) {
        m->decls = c.decls;
        m->ndecls = c.ndecls;
    }
    name_index_free(&c.names);
    return c.ok;
}
