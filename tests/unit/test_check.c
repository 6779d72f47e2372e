/* test_check.c: the semantic checks (frontend/check.c) through the public API.
 *
 * Every bad model must make ssmc_compile return SSMC_ERR_SOURCE, leave no
 * model, and leave in ssmc_ctx_error one diagnostic at the expected
 * file:line:col with the expected text. Every good model (the examples, and
 * small models at the edges of the rules) must compile for the interpreter.
 * -D overrides are checked the same way: unknown names, out-of-range values,
 * and values that make a grouped index stop dividing. A file's models: the
 * one chosen, two of one name (an error), and 10,000 checked in linear time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ssmc.h"
#include "tests/unit/helpers/files.h"
#include "support/support.h"

/* A model body is wrapped as "model m {\n<decls>\n<body>\n}" so that line 3 is its first statement. */
typedef struct bad_case {
    const char *decls; /* line 2 */
    const char *body;  /* line 3 on */
    const char *where; /* "L:C", or NULL for an error without a location */
    const char *want;
} bad_case;

static const bad_case bad[] = {
    /* names */
    {"dim N = 4; input x[T,N]; output y[T,N];", "y[t,n] = x[t,n] * scale;", "3:19", "undeclared name 'scale'"},
    {"dim N = 4; input x[T,N]; output y[T,N];", "y[t,n] = b[n];", "3:10", "undeclared tensor 'b'"},
    {"dim N = 4; input x[T,N]; output y[T,N]; param x[N];", "y[t,n] = x[t,n];", "2:47",
     "'x' is already declared at 2:18"},
    {"dim N = 4, N = 5; input x[T,N]; output y[T,N];", "y[t,n] = x[t,n];", "2:12", "'N' is already declared at 2:5"},
    {"dim N = 4; input x[T,N]; output y[T,N];", "let a[t,n] = x[t,n];\nlet a[t,n] = x[t,n];\ny[t,n] = a[t,n];", "4:5",
     "'a' is already declared at 3:5"},
    {"dim N = 4; input x[T,N]; output y[T,N];", "let x[t,n] = 1;\ny[t,n] = x[t,n];", "3:5",
     "'x' is already declared at 2:18"},
    {"dim N = 4; input x[T,N]; output y[T,N];", "y[t,n] = a[t,n];\nlet a[t,n] = x[t,n];", "3:10",
     "let 'a' is used before it is defined at 4:5"},
    {"dim N = 4; input x[T,N]; output y[T,N];", "y[t,n] = s;\nlet s = 1;", "3:10",
     "let 's' is used before it is defined at 4:5"},
    {"dim N = 4; input x[T,N]; output y[T,N];", "let a[t,n] = a[t,n] + x[t,n];\ny[t,n] = a[t,n];", "3:14",
     "let 'a' is read in its own definition"},
    {"dim N = 4; input x[T,N]; output y[T,N];", "z[t,n] = x[t,n];\ny[t,n] = x[t,n];", "3:1",
     "undeclared name 'z' (declare it as a state or an output, or use 'let')"},
    /* index counts and variables */
    {"dim N = 4, K = 3; input x[T,N]; param W[N,K]; output y[T,N];", "y[t,n] = x[t,n] * W[n];", "3:19",
     "'W' has 2 axes but is indexed with 1 index"},
    {"dim N = 4; input x[T,N]; output y[T,N];", "y[t,n] = x[t];", "3:10", "'x' has 2 axes but is indexed with 1 index"},
    {"dim N = 4; input x[T,N]; state S[N]; output y[T,N];", "S[n,k] = x[t,n];\ny[t,n] = S[n];", "3:1",
     "'S' has 1 axis but is assigned with 2 indices"},
    {"dim N = 4; input x[T,N]; output y[T,N];", "y[t,n] = x[t,k];", "3:14",
     "index variable 'k' is not bound: it must appear on the left side or in a reduction"},
    {"dim N = 4, K = 3; input x[T,N], z[T,K]; output y[T,N];", "y[t,n] = x[t,n] * z[t,n];", "3:23",
     "index variable 'n' indexes an axis of dim K here, but an axis of dim N at 3:5"},
    {"dim N = 4, K = 4; input x[T,N], z[T,K]; output y[T,N];", "y[t,n] = x[t,n] * z[t,n];", "3:23",
     "an axis of dim K here, but an axis of dim N"}, /* same size, different dim */
    {"dim N = 4, K = 3; input x[T,N]; param W[N,K]; output y[T,N];", "y[t,n] = sum(k: W[k,k]) * x[t,n];", "3:21",
     "index variable 'k' indexes an axis of dim K here, but an axis of dim N at 3:19"},
    {"dim N = 4; input x[T,N]; output y[T,N];", "y[t,N] = x[t,N];", "3:5",
     "'N' is a dim; an index variable needs another name"},
    {"dim N = 4; input x[T,N]; param n; output y[T,N];", "y[t,n] = x[t,n] * n;", "3:19",
     "'n' is both an index variable here and a param; rename one of them"},
    {"dim N = 4; input x[T,N]; output y[T,N];", "y[t,n] = n[t];", "3:10", "'n' is an index variable, not a tensor"},
    {"dim N = 4; input x[T,N]; output y[T,N];", "y[t,n] = x[t,n] * N[n];", "3:19", "'N' is a dim and takes no indices"},
    {"dim N = 4; input x[T,N]; param w[N]; output y[T,N];", "y[t,n] = x[t,n] * w;", "3:19",
     "'w' is a tensor of 1 axis and needs indices"},
    {"dim N = 4; input x[T,N]; output y[T,N,N];", "y[t,n,n] = x[t,n];", "3:7",
     "index variable 'n' appears twice on the left side"},
    {"dim N = 4; input x[T,N]; output y[T,N];", "y[t,0] = x[t,0];", "3:5",
     "an index on the left side must be a plain index variable"},
    {"dim N = 4; input x[T,N]; output y[T,N];", "let a[t,j] = 1;\ny[t,n] = x[t,n];", "3:9",
     "cannot infer the range of 'j': the right side never uses it to index an axis"},
    {"dim N = 4; input x[T,N]; output y[T,N];", "y[t,n] = x[t,n] - x[t,4];", "3:23",
     "index 4 is out of range for axis N = 4 of 'x'"},
    /* reductions */
    {"dim N = 4, K = 3; input x[T,N]; output y[T,N];", "y[t,n] = sum(k: x[t,n]);", "3:14",
     "reduction variable 'k' is not used in the reduced expression"},
    {"dim N = 4; input x[T,N]; output y[T,N];", "y[t,n] = max(n: x[t,n]);", "3:14",
     "'n' is already an index variable here (bound at 3:5); a reduction needs a new name"},
    {"dim N = 4; input x[T,N]; output y[T,N];", "y[t,n] = sum(j: x[t - j, n]);", "3:14",
     "cannot infer the range of 'j': use it to index an axis directly"},
    /* t and T */
    {"dim N = 4; input x[T,N]; param w[N]; output y[T,N];", "y[t,n] = x[t,n] * w[t];", "3:21",
     "param 'w' has no time axis; 't' cannot index it"},
    {"dim N = 4; input x[T,N]; state S[N]; output y[T,N];", "S[n] = S[t,n] + x[t,n];\ny[t,n] = S[n];", "3:10",
     "state 'S' has no time axis; 't' cannot index it"},
    {"dim N = 4; input x[T,N]; state S[N]; output y[T,N];", "S[n] = S[t - 1,n] + x[t,n];\ny[t,n] = S[n];", "3:10",
     "state 'S' has no time axis"},
    {"dim N = 4; input x[T,N]; state S[N]; output y[T,N];", "S[t] = x[t,0];\ny[t,n] = S[n];", "3:3",
     "'t' cannot index a state"},
    {"dim N = 4; input x[T,N]; output y[T,N];", "y[t,n] = x[n,t];", "3:12",
     "the first index of per-step 'x' must be t (or t - k)"},
    {"dim N = 4; input x[T,N]; output y[T,N];", "y[t,n] = x[t,t];", "3:14", "'t' may only be the first index"},
    {"dim N = 4; input x[T,N]; output y[T,N];", "y[n,n] = x[t,n];", "3:3", "the first index on the left must be plain t"},
    {"dim N = 4; input x[T,N]; output y[T,N];", "let a[n,t] = x[t,n];\ny[t,n] = a[t,n];", "3:9",
     "'t' may only be the first index of a let"},
    {"dim N = 4; input x[T,N]; output y[T,N];", "let a[t - 1,n] = x[t,n];\ny[t,n] = a[t,n];", "3:7",
     "the first index on the left must be plain t"},
    {"dim N = 4; input x[T,N]; output y[T,N];", "y[t,n] = x[t,n] * t;", "3:19", "'t' cannot be used as a value"},
    {"dim N = 4; input x[T,N]; output y[T,N];", "y[t,n] = x[t,n] * T;", "3:19", "'T' cannot be used as a value"},
    {"dim N = 4; input x[N,T]; output y[T,N];", "y[t,n] = x[t,n];", "2:22", "T may only be the first axis"},
    {"dim N = 4; input x[T,N]; state S[T,N]; output y[T,N];", "y[t,n] = x[t,n];", "2:34",
     "a state has no time axis; only inputs and outputs start with T"},
    {"dim N = 4; input x[T,N]; param P[T,N]; output y[T,N];", "y[t,n] = x[t,n];", "2:34", "a param has no time axis"},
    {"dim N = 4; input x[N]; output y[T,N];", "y[t,n] = x[n];", "2:20", "the first axis of input 'x' must be T"},
    {"dim N = 4; input x; output y[T,N];", "y[t,n] = x;", "2:18", "the first axis of input 'x' must be T"},
    {"dim N = 4; input x[T,N]; output y[N];", "y[n] = x[t,n];", "2:35", "the first axis of output 'y' must be T"},
    /* version 2: index variables as numbers, comparisons, select, lagged lets, init, j[W] */
    {"dim N = 4; input x[T,N]; output y[T,N];", "y[t,n] = x[t,n] < 1 < 2;", "3:21", "comparisons do not chain"},
    {"dim N = 4; input x[T,N]; output y[T,N];", "y[t,n] = select(x[t,n], 1);", "3:10",
     "'select' takes 3 arguments, found 2"},
    {"dim N = 4; input x[T,N]; output y[T,N];", "y[t,n] = sin(x[t,n], 1);", "3:10", "'sin' takes 1 argument, found 2"},
    {"dim N = 4; input x[T,N]; output y[T,N];", "y[t,n] = x[t,n] * k;", "3:19", "undeclared name 'k'"},
    {"dim N = 4; input x[T,N]; output y[T,N];", "let r[t,i] = i;\ny[t,n] = r[t,n];", "3:9",
     "cannot infer the range of 'i'"},
    {"dim N = 4; input x[T,N]; output y[T,N];", "y[t,n] = sum(j: j) + x[t,n];", "3:14",
     "cannot infer the range of 'j': use it to index an axis directly"},
    {"dim N = 4; input x[T,N]; state S[N]; output y[T,N];", "S[n] = x[t,n];\nlet h[t,n] = S[n];\ny[t,n] = h[t - 65,n];",
     "5:12", "let 'h' reads a state, so its earlier values are kept in copies of it, at most 64"},
    {"dim N = 4; input x[T,N]; state S[N]; output y[T,N];",
     "S[n] = x[t,n];\nlet h[t,n] = S[n];\nlet g[t,n] = 2 * h[t,n];\ny[t,n] = g[t - 65,n];", "6:12",
     "let 'g' reads a state"}, /* through a let */
    {"dim N = 4; input x[T,N]; state S[N]; output y[T,N];", "S[n] = x[t,n];\ny[t,n] = S[n];\ninit S[n] = x[t,n];",
     "5:13", "an init may read only params, dims, literals and index variables; 'x' is an input"},
    {"dim N = 4; input x[T,N]; state S[N], R[N]; output y[T,N];",
     "S[n] = x[t,n];\nR[n] = S[n];\ny[t,n] = R[n];\ninit R[n] = S[n];", "6:13",
     "an init may read only params, dims, literals and index variables; 'S' is a state"},
    {"dim N = 4; input x[T,N]; param p; state S[N]; output y[T,N];", "let a = p;\nS[n] = x[t,n];\ny[t,n] = S[n];\ninit S[n] = a;",
     "6:13", "'a' is a let"},
    {"dim N = 4; input x[T,N]; output y[T,N];", "y[t,n] = x[t,n];\ninit y[n] = 0;", "4:6",
     "an init gives a state its initial value; 'y' is an output"},
    {"dim N = 4; input x[T,N]; state S[N]; output y[T,N];", "S[n] = x[t,n];\ny[t,n] = S[n];\ninit S = 0;", "5:6",
     "'S' has 1 axis but its init has 0 indices"},
    {"dim N = 4; input x[T,N]; state S[N]; output y[T,N];", "S[n] = x[t,n];\ny[t,n] = S[n];\ninit S[1] = 0;", "5:8",
     "an index on the left side must be a plain index variable"},
    {"dim N = 4; input x[T,N]; state S[N]; output y[T,N];", "init S[n] = 0;\ninit S[m] = 1;\nS[n] = x[t,n];\ny[t,n] = S[n];",
     "4:6", "state 'S' already has an init at 3:6"},
    {"dim N = 4, W = 2; input x[T,N]; output y[T,N];", "y[t,n] = sum(n[W]: x[t - n, 0]);", "3:14",
     "'n' is already an index variable here (bound at 3:5)"},
    {"dim N = 4, W = 2; input x[T,N]; param q; output y[T,N];", "y[t,n] = sum(j[q]: x[t - j, n]);", "3:16",
     "'q' is a param, not a dim"},
    {"dim N = 4, W = 2; input x[T,N]; output y[T,N];", "y[t,n] = sum(j[W]: x[t - j, j]);", "3:29",
     "index variable 'j' indexes an axis of dim N here, but an axis of dim W at 3:16"},
    /* time offsets and time-invariant lets */
    {"dim N = 4; input x[T,N]; state S[N]; output y[T,N];", "S[n] = x[t,n];\ny[t,n] = S[t - 1,n];", "4:12",
     "state 'S' has no time axis; 't' cannot index it"},
    {"dim N = 4; input x[T,N]; param w[N]; output y[T,N];", "let a[n] = w[n];\ny[t,n] = a[t - 1,n];", "4:12",
     "let 'a' is time-invariant: it is computed once, not at every step, so it cannot be read at an earlier step"},
    {"dim N = 4; input x[T,N]; param w[N]; output y[T,N];", "let a[n] = w[n] * x[t,n];\ny[t,n] = a[n];", "3:19",
     "a time-invariant let cannot read per-step 'x'"},
    {"dim N = 4; input x[T,N]; state S[N]; output y[T,N];", "let a[n] = S[n];\nS[n] = x[t,n];\ny[t,n] = a[n];",
     "3:12", "a time-invariant let cannot read state 'S'"},
    {"dim N = 4; input x[T,N]; output y[T,N];", "let a[t,n] = x[t,n];\nlet b[n] = a[t,n];\ny[t,n] = b[n];", "4:12",
     "a time-invariant let cannot read per-step 'a'"},
    /* assignments */
    {"dim N = 4; input x[T,N]; state S[N]; output y[T,N];", "S[n] = S[n] + x[t,n];\nS[n] = S[n];\ny[t,n] = S[n];",
     "4:1", "state 'S' is already updated in this step at 3:1"},
    {"dim N = 4; input x[T,N]; output y[T,N];", "y[t,n] = x[t,n];\ny[t,n] = x[t,n];", "4:1",
     "output 'y' is already written at 3:1"},
    {"dim N = 4; input x[T,N]; output y[T,N], z[T,N];", "y[t,n] = x[t,n];", "2:41", "output 'z' is never written"},
    {"dim N = 4; input x[T,N]; output y[T,N];", "x[t,n] = 1;\ny[t,n] = x[t,n];", "3:1",
     "cannot assign to input 'x'; only states and outputs are assigned"},
    {"dim N = 4; input x[T,N]; param w[N]; output y[T,N];", "w[n] = 1;\ny[t,n] = x[t,n];", "3:1",
     "cannot assign to param 'w'"},
    {"dim N = 4; input x[T,N]; output y[T,N];", "let a[t,n] = 1 + x[t,n];\na[t,n] = 2;\ny[t,n] = a[t,n];", "4:1",
     "cannot assign to let 'a'"},
    {"dim N = 4; input x[T,N]; output y[T,N];", "N = 3;\ny[t,n] = x[t,n];", "3:1", "cannot assign to dim 'N'"},
    {"dim N = 4; input x[T,N]; output y[T,N], z[T,N];", "y[t,n] = x[t,n];\nz[t,n] = y[t,n];", "4:10",
     "output 'y' cannot be read; compute it with a let and read that"},
    /* grouped indices */
    {"dim H = 6, G = 4; input x[T,H], k[T,G]; output y[T,H];", "y[t,h] = x[t,h] * k[t,h / 4];", "3:27",
     "group divisor 4 does not divide the range H = 6 of 'h'"},
    {"dim H = 8, G = 4; input x[T,H], k[T,G]; output y[T,H];", "y[t,h] = x[t,h] * k[t,h / 4];", "3:23",
     "'h / 4' ranges over 2 values but axis G of 'k' has 4"},
    {"dim H = 8, G = 4, R = 3; input x[T,H], k[T,G]; output y[T,H];", "y[t,h] = x[t,h] * k[t,h / R];", "3:27",
     "group divisor 3 does not divide the range H = 8 of 'h'"},
    {"dim H = 8, G = 4; input x[T,H], k[T,G]; param R; output y[T,H];", "y[t,h] = x[t,h] * k[t,h / R];", "3:27",
     "'R' is not a dim; a group divisor is a dim or an integer"},
    {"dim H = 8, G = 4; input x[T,H], k[T,G]; output y[T,H];", "y[t,h] = x[t,h] * k[t,h / Q];", "3:27",
     "'Q' is not a dim"},
    {"dim H = 8, G = 4; input x[T,H], k[T,G]; output y[T,H];", "y[t,h] = x[t,h] * k[t,h / 0];", "3:27",
     "a group divisor must be at least 1"},
    {"dim H = 8, G = 4; input x[T,H], k[T,G]; output y[T,G];", "y[t,g] = sum(h: k[t,h / 2]);", "3:14",
     "cannot infer the range of 'h'"},
    /* functions */
    {"dim N = 4; input x[T,N]; output y[T,N];", "y[t,n] = gelu(x[t,n]);", "3:10", "unknown function 'gelu'"},
    {"dim N = 4; input x[T,N]; output y[T,N];", "y[t,n] = exp(x[t,n], 2);", "3:10", "'exp' takes 1 argument, found 2"},
    {"dim N = 4; input x[T,N]; output y[T,N];", "y[t,n] = pow(x[t,n]);", "3:10", "'pow' takes 2 arguments, found 1"},
    {"dim N = 4; input x[T,N]; output y[T,N];", "y[t,n] = max(x[t,n]);", "3:10", "'max' takes 2 arguments, found 1"},
    {"dim N = 4; input x[T,N]; output y[T,N];", "y[t,n] = tanh();", "3:10", "'tanh' takes 1 argument, found 0"},
    {"dim N = 4; input x[T,N]; output y[T,N];", "y[t,n] = min(1, 2, x[t,n]);", "3:10", "'min' takes 2 arguments, found 3"},
    /* declarations */
    {"dim N = 4; input x[T,Q]; output y[T,N];", "y[t,n] = x[t,n];", "2:22", "undeclared dim 'Q'"},
    {"dim N = 4; param w[N]; input x[T,w]; output y[T,N];", "y[t,n] = x[t,n];", "2:34", "'w' is a param, not a dim"},
    {"dim N = 1048576, K = 1048576, J = 2; param w[N,K,J]; input x[T,N]; output y[T,N];", "y[t,n] = x[t,n];", "2:50",
     "'w' would have more than 2^40 elements"},
    {"dim N = 65536; input x[T,N]; output y[T];", "let o[t,i,j,k] = x[t,i] * x[t,j] * x[t,k];\ny[t] = o[t,0,0,0];",
     "3:13", "'o' would have more than 2^40 elements"}, /* a let's size comes from its variables */
    {"dim N = 65536; param w[N]; input x[T]; output y[T];", "let o[i,j,k] = w[i] * w[j] * w[k];\ny[t] = o[0,0,0];",
     "3:11", "'o' would have more than 2^40 elements"},
};

static char *wrap(const char *decls, const char *body)
{
    strbuf s = {0};
    sb_printf(&s, "model m {\n%s\n%s\n}\n", decls, body);
    return sb_take(&s);
}

/* Compiles src; expects SSMC_ERR_SOURCE with want at where (file m.ssm). */
static void expect_error(ssmc_ctx *ctx, const char *src, const ssmc_options *o, const char *where, const char *want)
{
    ssmc_model *m = (ssmc_model *)1;
    ssmc_status s = ssmc_compile(ctx, "m.ssm", src, strlen(src), o, &m);
    const char *msg = ssmc_ctx_error(ctx);
    if (s != SSMC_ERR_SOURCE) fail_msg("status %s for\n%s(expected '%s'; got '%s')", ssmc_status_name(s), src, want, msg);
    assert_null(m);
    char head[64];
    if (where)
        snprintf(head, sizeof head, "m.ssm:%s: error: ", where);
    else
        snprintf(head, sizeof head, "error: ");
    if (strncmp(msg, head, strlen(head)) != 0 || !strstr(msg, want))
        fail_msg("for\n%sexpected '%s%s'\ngot      '%s'", src, head, want, msg);
    /* one diagnostic: the first error only */
    const char *second = strstr(msg + 1, ": error: ");
    if (where && second && strstr(second + 1, ": error: ")) fail_msg("more than one error:\n%s", msg);
    if (where && !strchr(msg, '^')) fail_msg("no caret in\n%s", msg);
}

static void test_bad_models(void **state)
{
    (void)state;
    ssmc_ctx *ctx = ssmc_ctx_new();
    assert_non_null(ctx);
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char *src = wrap(bad[i].decls, bad[i].body);
        expect_error(ctx, src, NULL, bad[i].where, bad[i].want);
        free(src);
    }
    ssmc_ctx_free(ctx);
}

/* Valid models at the edges of the rules. */
static const char *good[] = {
    /* a state read before (S(t-1)) and after (S(t)) its update, by a let and an output */
    "model a { dim N = 4; input x[T,N]; state S[N]; output y[T,N], z[T,N];\n"
    "  let p[t,n] = S[n]; S[n] = S[n] + x[t,n]; y[t,n] = S[n] - p[t,n]; z[t,n] = p[t,n]; }",
    /* a state that is only read (never updated) and a scalar state */
    "model b { dim N = 2; input x[T,N]; state S[N], c; output y[T,N]; y[t,n] = S[n] * c + x[t,n]; }",
    /* scalar params and lets, dims as values, lets reading time-invariant lets */
    "model c { dim N = 3; input x[T]; param s; output y[T];\n"
    "  let a = s * N; let b = a + 1; let d[t] = x[t] * b; y[t] = d[t] + a; }",
    /* t - k and t - j offsets, j ranging over a dim it indexes elsewhere */
    "model d { dim D = 4, K = 3; input x[T,D]; param w[D,K]; output y[T,D];\n"
    "  y[t,d] = sum(j: w[d,j] * x[t - j, d]) + x[t - 100, d]; }",
    /* grouped heads by a dim and by a literal, integer indices at both ends */
    "model e { dim H = 8, G = 2, R = 4; input q[T,H], k[T,G]; output o[T,H];\n"
    "  o[t,h] = q[t,h] * k[t,h / R] + k[t,h / 4] + k[t,0] * k[t,1] + q[t,7]; }",
    /* sum over two variables, max as a reduction and a function, nested reductions */
    "model f { dim N = 4, K = 3; input x[T,N,K]; output a[T], b[T,N];\n"
    "  a[t] = sum(n, k: x[t,n,k]); b[t,n] = max(k: max(x[t,n,k], sum(m: x[t,m,k]))); }",
    /* reduction variables reused in sibling reductions; shadowing nothing */
    "model g { dim N = 4; input x[T,N]; output y[T]; y[t] = sum(i: x[t,i]) * max(i: x[t,i]); }",
    /* every function */
    "model h { input x[T]; output y[T];\n"
    "  y[t] = exp(x[t]) + log(x[t]) + log1p(x[t]) + sqrt(x[t]) + rsqrt(x[t]) + abs(x[t]) + tanh(x[t])\n"
    "       + sigmoid(x[t]) + softplus(x[t]) + silu(x[t]) + relu(x[t]) + pow(x[t], 2) + min(x[t], 1) + max(x[t], 1); }",
    /* an output with no axis besides T, and declarations after statements that do not use them */
    "model i { input x[T]; output y[T]; y[t] = x[t]; param unused; }",
    /* a let with only t, and an identifier that only looks like a keyword */
    "model j { input x[T]; output y[T]; let models[t] = x[t]; y[t] = models[t]; }",
    /* eight axes */
    "model k { dim A = 1, B = 2; input x[T,A,B,A,B,A,B,A]; output y[T,B];\n"
    "  y[t,b] = sum(a: x[t,a,b,a,b,a,b,a]); }",
    /* delta rule: a state read at other indices in its own update */
    "model l { dim K = 3, V = 2; input k[T,K], v[T,V]; state S[K,V]; output o[T,V];\n"
    "  S[i,j] = S[i,j] + k[t,i] * (v[t,j] - sum(a: k[t,a] * S[a,j])); o[t,j] = sum(i: k[t,i] * S[i,j]); }",
    /* version 2: the new functions, comparisons, select, index variables as numbers */
    "model m { dim N = 4; input x[T,N]; output y[T,N];\n"
    "  y[t,n] = sin(x[t,n]) + cos(x[t,n]) * erf(x[t,n]) + (x[t,n] < 1) + (n == 2) * select(n >= 1, n, -n); }",
    /* lets read at earlier steps, a window by name, one that reads a state */
    "model n { dim N = 4, W = 3; input x[T,N]; state S[N]; output y[T,N];\n"
    "  let u[t,n] = x[t,n] * 2; S[n] = S[n] * 0.5 + u[t - 1,n]; let h[t,n] = S[n];\n"
    "  y[t,n] = sum(j[W]: u[t - j,n] + h[t - j,n] * j) + h[t - 64,n]; }",
    /* init from params, dims, literals and index variables, anywhere in the model */
    "model o { dim K = 3; input x[T,K]; param lam, W0[K,K]; state P[K,K], W[K,K]; output y[T,K];\n"
    "  init P[i,j] = select(i == j, 1, 0) / lam + K; W[i,j] = W[i,j] + x[t,i] * P[i,j];\n"
    "  y[t,i] = sum(j: W[i,j]); init W[a,b] = sum(c[K]: W0[a,c] * W0[c,b]); }",
    /* a name that is a variable in one statement and a tensor in another */
    "model p { dim N = 2; input x[T,N]; param a; output y[T,N], z[T,N]; y[t,n] = x[t,n] * a; z[t,a] = x[t,a]; }",
};

static void test_good_models(void **state)
{
    (void)state;
    ssmc_ctx *ctx = ssmc_ctx_new();
    for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
        ssmc_model *m = NULL;
        if (ssmc_compile(ctx, "good.ssm", good[i], strlen(good[i]), NULL, &m) != SSMC_OK)
            fail_msg("%s\n%s", good[i], ssmc_ctx_error(ctx));
        assert_non_null(m);
        assert_string_equal(ssmc_ctx_error(ctx), "");
        ssmc_model_free(m);
    }
    ssmc_ctx_free(ctx);
}

static void test_examples_compile(void **state)
{
    (void)state;
    char names[64][128];
    int count = test_list_examples(names, 64);
    ssmc_ctx *ctx = ssmc_ctx_new();
    for (int i = 0; i < count; i++) {
        size_t len;
        char *src = test_slurp(names[i], &len);
        ssmc_model *m = NULL;
        if (ssmc_compile(ctx, names[i], src, len, NULL, &m) != SSMC_OK) fail_msg("%s", ssmc_ctx_error(ctx));
        ssmc_model_free(m);
        free(src);
    }
    ssmc_ctx_free(ctx);
    assert_true(count >= 5);
}

static const char *grouped = "model g {\n"
                             "  dim H = 8, G = 2;\n"
                             "  input q[T,H], k[T,G];\n"
                             "  output o[T,H];\n"
                             "  o[t,h] = q[t,h] * k[t,h / 4];\n"
                             "}\n";

static void test_dim_overrides(void **state)
{
    (void)state;
    ssmc_ctx *ctx = ssmc_ctx_new();
    ssmc_options o = {0};
    ssmc_model *m = NULL;

    ssmc_dim unknown[] = {{"X", 3}};
    o.dims = unknown;
    o.ndims = 1;
    expect_error(ctx, grouped, &o, NULL, "-D X: model 'g' has no dim named 'X' (its dims: H, G)");
    ssmc_dim zero[] = {{"H", 0}};
    o.dims = zero;
    expect_error(ctx, grouped, &o, NULL, "-D H=0: a dim must be between 1 and 2^31");
    ssmc_dim negative[] = {{"G", -2}};
    o.dims = negative;
    expect_error(ctx, grouped, &o, NULL, "-D G=-2: a dim must be between 1 and 2^31");
    ssmc_dim huge[] = {{"G", ((int64_t)1 << 31) + 1}};
    o.dims = huge;
    expect_error(ctx, grouped, &o, NULL, "a dim must be between 1 and 2^31");
    /* H = 12 still divides by 4 but then h / 4 has 3 values for G = 2 */
    ssmc_dim twelve[] = {{"H", 12}};
    o.dims = twelve;
    expect_error(ctx, grouped, &o, "5:25", "'h / 4' ranges over 3 values but axis G of 'k' has 2");
    ssmc_dim ten[] = {{"H", 10}};
    o.dims = ten;
    expect_error(ctx, grouped, &o, "5:29", "group divisor 4 does not divide the range H = 10 of 'h'");
    /* both changed together: fine, and the shapes follow */
    ssmc_dim both[] = {{"H", 12}, {"G", 3}};
    o.dims = both;
    o.ndims = 2;
    assert_int_equal(ssmc_compile(ctx, "g.ssm", grouped, strlen(grouped), &o, &m), SSMC_OK);
    ssmc_tensor_info info;
    assert_int_equal(ssmc_model_tensor(m, ssmc_model_find(m, "k"), &info), SSMC_OK);
    assert_int_equal(info.shape[0], 3);
    ssmc_model_free(m);
    /* the same dim twice is an error (the last one used to win, silently),
     * whether the values differ or not */
    ssmc_dim twice[] = {{"H", 4}, {"G", 4}, {"H", 16}};
    o.dims = twice;
    o.ndims = 3;
    expect_error(ctx, grouped, &o, NULL, "-D H=16: 'H' is already given (-D H=4); give each dim once");
    twice[2].value = 4;
    expect_error(ctx, grouped, &o, NULL, "-D H=4: 'H' is already given (-D H=4)");
    assert_int_equal(ssmc_check(ctx, "g.ssm", grouped, strlen(grouped), &o), SSMC_ERR_SOURCE);
    ssmc_ctx_free(ctx);
}

static void test_model_choice(void **state)
{
    (void)state;
    const char *two = "model first { input x[T]; output y[T]; y[t] = x[t]; }\n"
                      "model second { input x[T]; output y[T]; y[t] = x[t] + nope; }\n";
    ssmc_ctx *ctx = ssmc_ctx_new();
    ssmc_model *m = NULL;
    assert_int_equal(ssmc_compile(ctx, "two.ssm", two, strlen(two), NULL, &m), SSMC_OK);
    assert_string_equal(ssmc_model_name(m), "first");
    ssmc_model_free(m);
    ssmc_options o = {.model = "second"};
    expect_error(ctx, two, &o, "2:55", "undeclared name 'nope'");
    o.model = "third";
    expect_error(ctx, two, &o, NULL, "no model named 'third' (the file has: first, second)");
    ssmc_ctx_free(ctx);
}

/* Two models of one name: an error at the second, for check and compile alike. */
static void test_duplicate_model(void **state)
{
    (void)state;
    const char *dup = "model a { input x[T]; output y[T]; y[t] = x[t]; }\n"
                      "model b { input x[T]; output y[T]; y[t] = x[t]; }\n"
                      "model a { input x[T]; output y[T]; y[t] = 2 * x[t]; }\n";
    ssmc_ctx *ctx = ssmc_ctx_new();
    expect_error(ctx, dup, NULL, "3:7", "model 'a' is already defined at 1:7");
    ssmc_options o = {.model = "b"};
    expect_error(ctx, dup, &o, "3:7", "model 'a' is already defined at 1:7");
    assert_int_equal(ssmc_check(ctx, "dup.ssm", dup, strlen(dup), NULL), SSMC_ERR_SOURCE);
    assert_non_null(strstr(ssmc_ctx_error(ctx), "dup.ssm:3:7: error: model 'a' is already defined at 1:7"));
    ssmc_ctx_free(ctx);
}

/* ssmc_check on a file of 10,000 models takes time linear in the file (it
 * parsed the whole file again for every model: 1,000 models 9.8 s, 10,000
 * not done after 25 minutes), in a child that a timer ends; an error in the
 * last model is found at its place. */
static void test_many_models(void **state)
{
    (void)state;
    strbuf sb = {0};
    for (int i = 0; i < 10000; i++)
        sb_printf(&sb,
                  "model m%d {\n  dim H = 4, N = 8;\n  input x[T,H,N];\n  param a[H];\n  state S[H,N];\n"
                  "  output y[T,H];\n  S[h,n] = sigmoid(a[h]) * S[h,n] + x[t,h,n];\n  y[t,h] = sum(n: S[h,n]%s);\n}\n",
                  i, i == 9999 ? " + nope" : "");
    assert_false(sb.failed);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        alarm(60);
        ssmc_ctx *ctx = ssmc_ctx_new();
        clock_t c0 = clock();
        ssmc_status st = ssmc_check(ctx, "many.ssm", sb.data, sb.len, NULL);
        double cpu_s = (double)(clock() - c0) / CLOCKS_PER_SEC;
        bool located = strstr(ssmc_ctx_error(ctx), "many.ssm:89999:28: error: undeclared name 'nope'") != NULL;
        printf("test_many_models: 10,000 models checked in %.2f s of CPU time\n", cpu_s);
        fflush(stdout);
        _exit(st == SSMC_ERR_SOURCE && located && cpu_s < 20 ? 0 : 1);
    }
    int ws;
    assert_true(waitpid(pid, &ws, 0) == pid);
    if (!WIFEXITED(ws) || WEXITSTATUS(ws) != 0)
        fail_msg("checking 10,000 models: %s", WIFEXITED(ws) ? "wrong result or too slow" : "did not finish in 60 s");
    sb_free(&sb);
}

/* The diagnostic callback sees each message as it is reported. */
static void collect(void *ud, const char *msg) { sb_puts(ud, msg); }

static void test_diag_callback(void **state)
{
    (void)state;
    ssmc_ctx *ctx = ssmc_ctx_new();
    strbuf seen = {0};
    ssmc_ctx_set_diag_callback(ctx, collect, &seen);
    const char *src = "model m { input x[T]; output y[T]; y[t] = x[t] * q; }";
    ssmc_model *m = NULL;
    assert_int_equal(ssmc_compile(ctx, "cb.ssm", src, strlen(src), NULL, &m), SSMC_ERR_SOURCE);
    assert_string_equal(sb_cstr(&seen), ssmc_ctx_error(ctx));
    assert_non_null(strstr(sb_cstr(&seen), "cb.ssm:1:50: error: undeclared name 'q'"));
    sb_free(&seen);
    ssmc_ctx_free(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_models),      cmocka_unit_test(test_good_models),
        cmocka_unit_test(test_examples_compile), cmocka_unit_test(test_dim_overrides),
        cmocka_unit_test(test_model_choice),    cmocka_unit_test(test_diag_callback),
        cmocka_unit_test(test_duplicate_model), cmocka_unit_test(test_many_models),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
