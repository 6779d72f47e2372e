/* ast.h: the syntax tree of a source file, as the parser builds it and the
 * checker annotates it. All nodes live in one arena. Names are NUL-terminated
 * copies. The checker fills the fields marked (check). */
#ifndef SSMC_AST_H
#define SSMC_AST_H

#include "support/diag.h"

#define AST_MAX_AXES 8

typedef enum ast_index_kind {
    AST_IX_VAR,     /* i                 .name */
    AST_IX_DIV,     /* i / R             .name, .div_name or .k (literal) */
    AST_IX_INT,     /* 3                 .k */
    AST_IX_T,       /* t - k             .k (0 for plain t) */
    AST_IX_T_VAR    /* t - j             .name */
} ast_index_kind;

typedef struct ast_index {
    ast_index_kind kind;
    src_loc loc;        /* of the whole index */
    const char *name;   /* the index variable */
    src_loc name_loc;
    const char *div_name; /* AST_IX_DIV by a dim */
    src_loc div_loc;
    int64_t k;
    int var;            /* (check) index variable id within the statement */
    int64_t div;        /* (check) the divisor's value for AST_IX_DIV */
} ast_index;

typedef enum ast_expr_kind {
    AST_NUM,    /* .num */
    AST_NAME,   /* .name: a dim, a scalar param or a scalar let (tensor reads without brackets) */
    AST_READ,   /* .name[.ix...] */
    AST_NEG,    /* -.a */
    AST_BIN,    /* .a .op .b with op one of + - * / */
    AST_CMP,    /* .a .op .b, op one of < l(<=) > g(>=) = (==) ! (!=): 1 or 0 */
    AST_CALL,   /* .name(.args...) */
    AST_REDUCE, /* sum/max(.vars: .a) with .op '+' or 'M'; a variable may name its dim: j[W] */
    AST_IDX     /* (check) an AST_NAME that is an index variable used as a number: .var */
} ast_expr_kind;

typedef struct ast_expr ast_expr;
struct ast_expr {
    ast_expr_kind kind;
    src_loc loc;
    double num;
    const char *name;
    char op;
    ast_expr *a, *b;
    ast_expr **args;
    int nargs;
    ast_index *ix;
    int nix;
    const char **vars;   /* AST_REDUCE bound variables */
    src_loc *var_locs;
    const char **var_dims; /* AST_REDUCE: the dim named in j[W], or NULL */
    src_loc *var_dim_locs;
    int nvars;
    int *var_ids;        /* (check) AST_REDUCE: ids of the bound variables */
    int sym;             /* (check) AST_NAME/AST_READ: declaration index, or -1 for a dim */
    int fn;              /* (check) AST_CALL: its row of the op table (support/ops.h) */
    int var;             /* (check) AST_IDX: the index variable's id within the statement */
};

typedef enum ast_decl_kind { AST_DIM, AST_INPUT, AST_PARAM, AST_STATE, AST_OUTPUT, AST_LET } ast_decl_kind;

typedef struct ast_decl {
    ast_decl_kind kind;
    const char *name;
    src_loc loc;
    int64_t value;                 /* AST_DIM default */
    int naxes;
    const char *axes[AST_MAX_AXES]; /* dim names; "T" for the time axis */
    src_loc axis_locs[AST_MAX_AXES];
    int stmt;                      /* (check) AST_LET: its statement */
    bool reads_state;              /* (check) AST_LET: its value depends on a state */
} ast_decl;

typedef struct ast_stmt {
    bool is_let;
    bool is_init;  /* init S[...] = expr; the state's initial value */
    const char *name;
    src_loc loc;
    ast_index *lhs;
    int nlhs;
    bool brackets;
    ast_expr *rhs;
    int sym;       /* (check) the declaration it defines or updates */
    int nvars;     /* (check) index variables of the statement (free and bound) */
    const char **var_names; /* (check) */
    int *var_dims; /* (check) dim declaration index of each variable */
} ast_stmt;

typedef struct ast_model {
    const char *name;
    src_loc loc;
    ast_decl *decls;
    int ndecls;
    ast_stmt *stmts;
    int nstmts;
} ast_model;

typedef struct ast_file {
    ast_model *models;
    int nmodels;
} ast_file;

typedef struct arena arena;
typedef struct diag diag;

/* Parses a whole file. Returns NULL (with diagnostics) on a syntax error. */
ast_file *parse_file(arena *a, diag *d, const src_file *f);

/* Semantic checks of one model with its dims overridden (names must exist).
 * Annotates the tree. Returns false (with diagnostics) on an error. */
typedef struct ast_dim_override {
    const char *name;
    int64_t value;
} ast_dim_override;
bool check_model(arena *a, diag *d, const src_file *f, ast_model *m,
                 const ast_dim_override *over, int nover);

/* Builtin functions are the rows of kind OPK_FUNC of the op table
 * (support/ops.h): a call's `fn` is the row's index there. */

/* Prints the tree (ssmc emit --emit=ast). */
typedef struct strbuf strbuf;
void ast_print(strbuf *out, const ast_file *f);

#endif
