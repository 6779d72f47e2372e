/* test_analysis.c: the recurrence analysis (passes/analysis.c, SPEC §2).
 *
 * Through the API (ssmc_emit with SSMC_EMIT_ANALYSIS): the class of every
 * state of the examples of examples/ (read from the source tree, so a
 * retuned example that changes class fails here), their axis roles and
 * readouts; the edge cases (a coefficient read from another state, a state
 * reached through a chain of lets, a state never read, a state never updated,
 * a nonlinear update through a let, a dense map, S * S, rank-2 corrections,
 * coupled low-rank factors, transposed reads, folded literals, an update that
 * ignores its state; version 2's selects with one and with two transitions,
 * selects on the state, a coefficient by an index value, an init, a lagged
 * let of the state); the scalar/diagonal rule flipping with the contracted
 * axis; invariance of the result when a let is inlined by hand; and the
 * expansion limit. Directly through pass_analyze: the structured results
 * (roles, rank, the coefficient instruction, readout fields, reads). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frontend/ast.h"
#include "ir/ir.h"
#include "passes/passes.h"
#include "ssmc.h"
#include "support/support.h"

/* ---- helpers ---- */

static char *emit_analysis(const char *name, const char *src)
{
    ssmc_ctx *ctx = ssmc_ctx_new();
    assert_non_null(ctx);
    char *text = NULL;
    ssmc_status s = ssmc_emit(ctx, name, src, strlen(src), NULL, SSMC_EMIT_ANALYSIS, &text);
    if (s != SSMC_OK) fail_msg("%s: emit failed (%s): %s", name, ssmc_status_name(s), ssmc_ctx_error(ctx));
    ssmc_ctx_free(ctx);
    return text;
}

static char *read_example(const char *model)
{
    const char *dir = getenv("SSMC_SOURCE_DIR");
    if (!dir) fail_msg("SSMC_SOURCE_DIR is not set");
    char path[4096];
    snprintf(path, sizeof path, "%s/examples/%s.ssm", dir, model);
    size_t len;
    const char *err;
    char *text = read_file(path, &len, &err);
    if (!text) fail_msg("%s: %s", path, err);
    return text;
}

/* The line of `text` that starts with `prefix`, copied into buf; NULL if none. */
static const char *line_starting(const char *text, const char *prefix, char *buf, size_t cap)
{
    size_t n = strlen(prefix);
    for (const char *p = text; p && *p;) {
        const char *end = strchr(p, '\n');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len >= n && memcmp(p, prefix, n) == 0) {
            if (len >= cap) len = cap - 1;
            memcpy(buf, p, len);
            buf[len] = 0;
            return buf;
        }
        p = end ? end + 1 : NULL;
    }
    return NULL;
}

/* "  state NAME[...]: CLASS" or "  state NAME: CLASS". */
static void expect_class(const char *text, const char *state, const char *cls)
{
    char prefix[128], buf[512];
    snprintf(prefix, sizeof prefix, "  state %s[", state);
    const char *line = line_starting(text, prefix, buf, sizeof buf);
    if (!line) {
        snprintf(prefix, sizeof prefix, "  state %s:", state);
        line = line_starting(text, prefix, buf, sizeof buf);
    }
    if (!line) fail_msg("no line for state %s in:\n%s", state, text);
    const char *colon = strstr(line, ": ");
    if (!colon || strcmp(colon + 2, cls) != 0)
        fail_msg("state %s: expected class '%s', got line '%s' in:\n%s", state, cls, line, text);
}

/* A whole line of the output. */
static void expect_line(const char *text, const char *want)
{
    char buf[512];
    const char *line = line_starting(text, want, buf, sizeof buf);
    if (!line || strcmp(line, want) != 0) fail_msg("expected the line '%s' in:\n%s", want, text);
}

static void expect_no_line(const char *text, const char *prefix)
{
    char buf[512];
    if (line_starting(text, prefix, buf, sizeof buf)) fail_msg("unexpected line '%s' in:\n%s", buf, text);
}

/* ---- the examples ---- */

typedef struct example_case {
    const char *model;
    const char *state, *cls;
    const char *state2, *cls2; /* a second state, or NULL */
} example_case;

static void test_example_classes(void **unused)
{
    (void)unused;
    static const example_case cases[] = {
        {"linear_attn", "S", "identity", "z", "identity"},
        {"retnet", "S", "scalar", NULL, NULL},
        {"mamba2", "S", "scalar", NULL, NULL},
        {"mamba", "S", "diagonal", NULL, NULL},
        {"gla", "S", "diagonal", NULL, NULL},
        {"rwkv6", "S", "diagonal", NULL, NULL},
        {"deltanet", "S", "diagonal+rank-1", NULL, NULL},
        {"gated_deltanet", "S", "diagonal+rank-1", NULL, NULL},
        /* the cell is affine in c given h(t-1); h goes through sigmoid gates */
        {"lstm", "h", "nonlinear", "c", "diagonal"},
        /* a rotation of pairs mixes R through constant indices: dense, never cheaper */
        {"mamba3", "S", "dense", NULL, NULL},
        /* the select keeps one transition, 1, in both branches */
        {"mom", "S", "identity", NULL, NULL},
        /* a gradient step of a linear model is the delta rule; its init changes nothing */
        {"ttt_linear", "W", "diagonal+rank-1", NULL, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *src = read_example(cases[i].model);
        char *text = emit_analysis(cases[i].model, src);
        char header[64];
        snprintf(header, sizeof header, "model %s", cases[i].model);
        expect_line(text, header);
        expect_class(text, cases[i].state, cases[i].cls);
        if (cases[i].state2) expect_class(text, cases[i].state2, cases[i].cls2);
        free(text);
        free(src);
    }
}

static void test_example_details(void **unused)
{
    (void)unused;
    static const struct {
        const char *model;
        const char *lines[5];
    } cases[] = {
        {"mamba2",
         {"    axes: H independent, P passive, N passive", "    A_t = exp(delta[t, h] * A[h])", NULL}},
        {"mamba", {"    axes: E independent, N independent", "    A_t = exp(delta[t, e] * A[e, n])", NULL}},
        {"retnet", {"    axes: H independent, K passive, V passive", "    A_t = gamma[h]", NULL}},
        {"gla", {"    axes: H independent, K independent, V passive", "    A_t = exp(lg[t, h, i])", NULL}},
        {"rwkv6", {"    axes: H independent, K independent, V passive", NULL}},
        {"linear_attn", {"    axes: H passive, K passive, V passive", "    A_t = 1", NULL}},
        {"deltanet",
         {"    axes: H independent, K mixed, V passive", "    diagonal part: identity, D_t = 1",
          "    correction: rank 1 along K", NULL}},
        {"gated_deltanet",
         {"    axes: H independent, K mixed, V passive", "    diagonal part: scalar, D_t = alpha[t, h]",
          "    correction: rank 1 along K", NULL}},
        {"lstm", {"    not affine at line 18: sigmoid(pre[t, 3, j])", "    reads h(t-1)", "    reads c(t)", NULL}},
        {"mamba3", {"    axes: H independent, P passive, N independent, R mixed", NULL}},
        {"mom", {"    axes: M passive, K passive, V passive", "    A_t = 1", NULL}},
        {"ttt_linear",
         {"    axes: H independent, K mixed, V passive", "    diagonal part: identity, D_t = 1",
          "    correction: rank 1 along K", NULL}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *src = read_example(cases[i].model);
        char *text = emit_analysis(cases[i].model, src);
        for (int k = 0; cases[i].lines[k]; k++) expect_line(text, cases[i].lines[k]);
        free(text);
        free(src);
    }
}

/* The readout lines, without the instruction number. */
static void expect_readout(const char *text, const char *want)
{
    char buf[512];
    const char *line = line_starting(text, want, buf, sizeof buf);
    if (!line || strncmp(line + strlen(want), " (sum at %", 10) != 0)
        fail_msg("expected a readout line '%s (sum at ...)' in:\n%s", want, text);
}

static void test_example_readouts(void **unused)
{
    (void)unused;
    static const struct {
        const char *model;
        const char *readouts[3];
    } cases[] = {
        {"mamba2", {"  readout y <- S(t) over N", NULL}},
        {"mamba", {"  readout y <- S(t) over N", NULL}},
        {"retnet", {"  readout y <- S(t) over K", NULL}},
        {"gla", {"  readout y <- S(t) over K", NULL}},
        {"rwkv6", {"  readout y <- S(t-1) over K", NULL}},
        {"linear_attn", {"  readout y <- S(t) over K", "  readout y <- z(t) over K via den", NULL}},
        /* pred contracts S(t-1) too, but only feeds the update: not a readout */
        {"deltanet", {"  readout y <- S(t) over K", NULL}},
        {"gated_deltanet", {"  readout y <- S(t) over K", NULL}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *src = read_example(cases[i].model);
        char *text = emit_analysis(cases[i].model, src);
        int n = 0;
        for (; cases[i].readouts[n]; n++) expect_readout(text, cases[i].readouts[n]);
        int count = 0;
        for (const char *p = strstr(text, "\n  readout "); p; p = strstr(p + 1, "\n  readout ")) count++;
        if (count != n) fail_msg("%s: %d readouts, expected %d:\n%s", cases[i].model, count, n, text);
        free(text);
        free(src);
    }
    char *src = read_example("lstm");
    char *text = emit_analysis("lstm", src);
    expect_no_line(text, "  readout");
    free(text);
    free(src);
}

/* ---- edge cases ---- */

typedef struct edge_case {
    const char *name;
    const char *src;
    const char *state, *cls;
    const char *line; /* a line that must appear, or NULL */
} edge_case;

static const edge_case edges[] = {
    {"coefficient from another state",
     "model m { dim H = 2, K = 4; input q[T,H,K], x[T,H,K], g[T,H]; state r[H], S[H,K]; output y[T,H];\n"
     "  r[h] = r[h] + g[t,h];\n"
     "  S[h,i] = sigmoid(r[h]) * S[h,i] + x[t,h,i];\n"
     "  y[t,h] = sum(i: q[t,h,i] * S[h,i]); }\n",
     "S", "scalar", "    reads r(t)"},
    {"coefficient from another state's old value, varying along the contracted axis",
     "model m { dim K = 4; input q[T,K], x[T,K]; state r[K], S[K]; output y[T];\n"
     "  S[i] = exp(-r[i] * r[i]) * S[i] + x[t,i];\n"
     "  r[i] = 0.5 * r[i] + x[t,i];\n"
     "  y[t] = sum(i: q[t,i] * S[i]); }\n",
     "S", "diagonal", "    reads r(t-1)"},
    {"a state reached through two lets",
     "model m { dim H = 2, K = 4, V = 3; input q[T,H,K], k[T,H,K], v[T,H,V], w[T,H,K];\n"
     "  state S[H,K,V]; output y[T,H,V];\n"
     "  let a[t,g,p,r] = exp(w[t,g,p]) * S[g,p,r];\n"
     "  let b[t,c,d,e] = 0.5 * a[t,c,d,e];\n"
     "  S[h,i,j] = b[t,h,i,j] + k[t,h,i] * v[t,h,j];\n"
     "  y[t,h,j] = sum(i: q[t,h,i] * S[h,i,j]); }\n",
     "S", "diagonal", "    axes: H independent, K independent, V passive"},
    {"a state never read",
     "model m { dim H = 2, K = 4; input x[T,H,K], a[T,H]; state S[H,K]; output y[T,H,K];\n"
     "  S[h,i] = sigmoid(a[t,h]) * S[h,i] + x[t,h,i];\n"
     "  y[t,h,i] = x[t,h,i]; }\n",
     "S", "scalar", "    axes: H independent, K passive"},
    {"a state never updated",
     "model m { dim K = 4; input q[T,K]; state M[K]; output y[T];\n"
     "  y[t] = sum(i: q[t,i] * M[i]); }\n",
     "M", "constant", NULL},
    {"tanh of a let that reads the state",
     "model m { dim K = 4; input x[T,K]; param W[K]; state h[K]; output y[T,K];\n"
     "  let pre[t,i] = W[i] * h[i] + x[t,i];\n"
     "  h[i] = tanh(pre[t,i]);\n"
     "  y[t,i] = h[i]; }\n",
     "h", "nonlinear", "    not affine at line 3: tanh(pre[t, i])"},
    {"a dense map",
     "model m { dim K = 4; input x[T,K]; param W[K,K]; state S[K]; output y[T,K];\n"
     "  S[i] = sum(j: W[i,j] * S[j]) + x[t,i];\n"
     "  y[t,i] = S[i]; }\n",
     "S", "dense", "    axes: K mixed"},
    {"S times S",
     "model m { dim K = 4; input x[T,K]; state S[K]; output y[T,K];\n"
     "  S[i] = S[i] * S[i] + x[t,i];\n"
     "  y[t,i] = S[i]; }\n",
     "S", "nonlinear", "    not affine at line 2: S@old[i] * S@old[i]"},
    {"S times S through a let",
     "model m { dim K = 4; input x[T,K]; state S[K]; output y[T,K];\n"
     "  let s2[t,i] = S[i] + x[t,i];\n"
     "  S[i] = s2[t,i] * S[i];\n"
     "  y[t,i] = S[i]; }\n",
     "S", "nonlinear", NULL},
    {"division by the state",
     "model m { dim K = 4; input x[T,K]; state S[K]; output y[T,K];\n"
     "  S[i] = x[t,i] / (S[i] + 2);\n"
     "  y[t,i] = S[i]; }\n",
     "S", "nonlinear", NULL},
    {"max over the state",
     "model m { dim K = 4; input x[T,K]; state S[K]; output y[T,K];\n"
     "  S[i] = max(j: S[j]) + x[t,i];\n"
     "  y[t,i] = S[i]; }\n",
     "S", "nonlinear", NULL},
    {"relu of the state",
     "model m { dim K = 4; input x[T,K]; state S[K]; output y[T,K];\n"
     "  S[i] = relu(S[i]) + x[t,i];\n"
     "  y[t,i] = S[i]; }\n",
     "S", "nonlinear", NULL},
    {"two delta-rule corrections",
     "model m { dim K = 4, V = 3; input q[T,K], k[T,K], l[T,K], v[T,V]; state S[K,V]; output y[T,V];\n"
     "  S[i,j] = S[i,j] - k[t,i] * sum(a: k[t,a] * S[a,j]) - l[t,i] * sum(c: l[t,c] * S[c,j])\n"
     "         + k[t,i] * v[t,j];\n"
     "  y[t,j] = sum(i: q[t,i] * S[i,j]); }\n",
     "S", "diagonal+rank-2", "    correction: rank 2 along K"},
    {"a low-rank product tied by a summed index",
     "model m { dim K = 4, M = 2; input x[T,K]; param U[K,M], W[M,K]; state S[K]; output y[T,K];\n"
     "  S[i] = S[i] - sum(m: U[i,m] * sum(j: W[m,j] * S[j])) + x[t,i];\n"
     "  y[t,i] = S[i]; }\n",
     "S", "dense", NULL},
    {"a rank-1 correction with an extra summed scale",
     "model m { dim K = 4, M = 2; input x[T,K], k[T,K], u[T,M]; state S[K]; output y[T,K];\n"
     "  S[i] = S[i] - k[t,i] * sum(m: u[t,m] * sum(j: k[t,j] * S[j])) + x[t,i];\n"
     "  y[t,i] = S[i]; }\n",
     "S", "diagonal+rank-1", NULL},
    {"mixing on two axes",
     "model m { dim K = 4, V = 3; input k[T,K], w[T,V], x[T,K,V]; state S[K,V]; output y[T,K,V];\n"
     "  S[i,j] = S[i,j] - k[t,i] * sum(a: k[t,a] * S[a,j]) - w[t,j] * sum(b: w[t,b] * S[i,b]) + x[t,i,j];\n"
     "  y[t,i,j] = S[i,j]; }\n",
     "S", "dense", "    axes: K mixed, V mixed"},
    {"a transposed read",
     "model m { dim K = 4; input x[T,K,K]; state S[K,K]; output y[T,K,K];\n"
     "  S[i,j] = 0.5 * S[j,i] + x[t,i,j];\n"
     "  y[t,i,j] = S[i,j]; }\n",
     "S", "dense", NULL},
    {"a read at a constant index",
     "model m { dim K = 4; input x[T,K]; state S[K]; output y[T,K];\n"
     "  S[i] = S[i] + S[0] + x[t,i];\n"
     "  y[t,i] = S[i]; }\n",
     "S", "dense", NULL},
    {"literal coefficients that fold to 1",
     "model m { dim K = 4; input x[T,K]; state S[K], z[K]; output y[T,K];\n"
     "  S[i] = S[i] + 0.5 * S[i] - S[i] / 2 + x[t,i];\n"
     "  z[i] = sum(m: z[i] + 0 * x[t,m]) / K + x[t,i];\n"
     "  y[t,i] = S[i] + z[i]; }\n",
     "z", "identity", NULL},
    {"a literal coefficient other than 1",
     "model m { dim K = 4; input x[T,K]; state S[K]; output y[T,K];\n"
     "  S[i] = S[i] + 0.25 * S[i] + x[t,i];\n"
     "  y[t,i] = S[i]; }\n",
     "S", "scalar", "    A_t = 1 + 0.25"},
    {"an update that ignores its state",
     "model m { dim K = 4; input x[T,K]; state S[K]; output y[T,K];\n"
     "  S[i] = x[t,i];\n"
     "  y[t,i] = S[i]; }\n",
     "S", "scalar", "    A_t = 0"},
    {"a state without axes",
     "model m { dim K = 4; input x[T,K], a[T]; state s; output y[T];\n"
     "  s = a[t] * s + sum(i: x[t,i]);\n"
     "  y[t] = s; }\n",
     "s", "scalar", "    A_t = a[t]"},
    {"an elementwise gate on the only axis",
     "model m { dim D = 8; input f[T,D], c[T,D]; state h[D]; output y[T,D];\n"
     "  h[d] = sigmoid(f[t,d]) * h[d] + (1 - sigmoid(f[t,d])) * c[t,d];\n"
     "  y[t,d] = h[d]; }\n",
     "h", "diagonal", "    axes: D independent"},
    {"a decay shared by a group of heads",
     "model m { dim H = 4, R = 2, G = 2, K = 4, V = 3; input q[T,H,K], k[T,H,K], v[T,H,V], a[T,G];\n"
     "  state S[H,K,V]; output y[T,H,V];\n"
     "  S[h,i,j] = sigmoid(a[t,h / R]) * S[h,i,j] + k[t,h,i] * v[t,h,j];\n"
     "  y[t,h,j] = sum(i: q[t,h,i] * S[h,i,j]); }\n",
     "S", "scalar", "    axes: H independent, K passive, V passive"},
    {"a delta rule with a key-axis gate",
     "model m { dim H = 2, K = 4, V = 3; input q[T,H,K], k[T,H,K], v[T,H,V], g[T,H,K], b[T,H];\n"
     "  state S[H,K,V]; output y[T,H,V];\n"
     "  let pred[t,h,j] = sum(i: k[t,h,i] * exp(g[t,h,i]) * S[h,i,j]);\n"
     "  S[h,i,j] = exp(g[t,h,i]) * S[h,i,j] + sigmoid(b[t,h]) * k[t,h,i] * (v[t,h,j] - pred[t,h,j]);\n"
     "  y[t,h,j] = sum(i: q[t,h,i] * S[h,i,j]); }\n",
     "S", "diagonal+rank-1", "    diagonal part: diagonal, D_t = exp(g[t, h, i])"},
    /* version 2 */
    {"a select with one transition in both branches",
     "model m { dim M = 3, K = 4, V = 3; input on[T,M], q[T,K], k[T,K], v[T,V]; state S[M,K,V]; output y[T,V];\n"
     "  S[m,i,j] = select(on[t,m] > 0, 0.5 * S[m,i,j] + k[t,i] * v[t,j], 0.5 * S[m,i,j]);\n"
     "  y[t,j] = sum(m, i: q[t,i] * S[m,i,j]); }\n",
     "S", "scalar", "    A_t = 0.5"},
    {"a select whose branches differ in their factors' indices (no match: the coefficient keeps both)",
     "model m { dim K = 4; input c[T,K], g[T,K], x[T,K]; state S[K]; output y[T,K];\n"
     "  S[i] = select(c[t,i], g[t,i] * S[i], g[t,0] * S[i]) + x[t,i];\n"
     "  y[t,i] = S[i]; }\n",
     "S", "diagonal", "    A_t = select(c[t, i], 1, 0) * g[t, i] + select(c[t, i], 0, 1) * g[t, 0]"},
    {"a select on the state",
     "model m { dim K = 4; input x[T,K]; state S[K]; output y[T,K];\n"
     "  S[i] = select(S[i] > 1, S[i], 2 * S[i]) + x[t,i];\n"
     "  y[t,i] = S[i]; }\n",
     "S", "nonlinear", "    not affine at line 2: S@old[i] > 1"},
    {"a select whose condition reads the state through a let",
     "model m { dim K = 4; input x[T,K]; state S[K]; output y[T,K];\n"
     "  let big[t,i] = abs(S[i]);\n"
     "  S[i] = select(big[t,i], S[i], 0.5 * S[i]) + x[t,i];\n"
     "  y[t,i] = S[i]; }\n",
     "S", "nonlinear", "    not affine at line 2: abs(S@old[i])"},
    {"a coefficient by an index value: the axis is independent",
     "model m { dim K = 4, V = 3; input k[T,K], v[T,V], q[T,K]; state S[K,V]; output y[T,V];\n"
     "  S[i,j] = (0.5 + 0.1 * i) * S[i,j] + k[t,i] * v[t,j];\n"
     "  y[t,j] = sum(i: q[t,i] * S[i,j]); }\n",
     "S", "diagonal", "    axes: K independent, V passive"},
    {"an index value inside a reduction of the coefficient does not tie the axis",
     "model m { dim K = 4, V = 3; input k[T,K], v[T,V], q[T,K]; state S[K,V]; output y[T,V];\n"
     "  S[i,j] = sum(a[K]: 0.1 * a) * S[i,j] + k[t,i] * v[t,j];\n"
     "  y[t,j] = sum(i: q[t,i] * S[i,j]); }\n",
     "S", "scalar", "    axes: K passive, V passive"},
    {"an init does not change the class",
     "model m { dim K = 4; input x[T,K], a[T]; param p[K]; state S[K]; output y[T];\n"
     "  init S[i] = p[i] * i;\n"
     "  S[i] = a[t] * S[i] + x[t,i];\n"
     "  y[t] = sum(i: S[i]); }\n",
     "S", "scalar", "    A_t = a[t]"},
    {"a let of the state read at t - 1: a hidden state the update reads",
     "model m { dim K = 4; input x[T,K]; state S[K]; output y[T,K];\n"
     "  let h[t,i] = 2 * S[i];\n"
     "  S[i] = 0.5 * S[i] + h[t - 1,i] + x[t,i];\n"
     "  y[t,i] = S[i]; }\n",
     "S", "scalar", "    reads h_prev1(t-1)"},
};

static void test_edge_cases(void **unused)
{
    (void)unused;
    for (size_t i = 0; i < sizeof edges / sizeof edges[0]; i++) {
        char *text = emit_analysis(edges[i].name, edges[i].src);
        expect_class(text, edges[i].state, edges[i].cls);
        if (edges[i].line) expect_line(text, edges[i].line);
        free(text);
    }
}

/* Scalar or diagonal depends on which axis the readout contracts: the same
 * decay along K is diagonal when the output sums over K, scalar when it sums
 * over V (then V is passive and K is not contracted). */
static void test_contracted_axis_decides(void **unused)
{
    (void)unused;
    const char *over_k = "model m { dim K = 4, V = 3; input q[T,K], k[T,K], v[T,V], g[T,K];\n"
                         "  state S[K,V]; output y[T,V];\n"
                         "  S[i,j] = exp(g[t,i]) * S[i,j] + k[t,i] * v[t,j];\n"
                         "  y[t,j] = sum(i: q[t,i] * S[i,j]); }\n";
    const char *over_v = "model m { dim K = 4, V = 3; input q[T,V], k[T,K], v[T,V], g[T,K];\n"
                         "  state S[K,V]; output y[T,K];\n"
                         "  S[i,j] = exp(g[t,i]) * S[i,j] + k[t,i] * v[t,j];\n"
                         "  y[t,i] = sum(j: q[t,j] * S[i,j]); }\n";
    char *a = emit_analysis("over_k", over_k);
    char *b = emit_analysis("over_v", over_v);
    expect_class(a, "S", "diagonal");
    expect_class(b, "S", "scalar");
    expect_line(a, "    axes: K independent, V passive");
    expect_line(b, "    axes: K independent, V passive");
    expect_readout(a, "  readout y <- S(t) over K");
    expect_readout(b, "  readout y <- S(t) over V");
    free(a);
    free(b);
}

/* Inlining a let by hand changes nothing but the instruction numbers. */
static void test_let_inlining_invariant(void **unused)
{
    (void)unused;
    const char *with_let = "model m { dim H = 2, K = 4, V = 3; input q[T,H,K], k[T,H,K], v[T,H,V], b[T,H];\n"
                           "  state S[H,K,V]; output y[T,H,V];\n"
                           "  let pred[t,h,j] = sum(a: k[t,h,a] * S[h,a,j]);\n"
                           "  S[h,i,j] = S[h,i,j] + b[t,h] * k[t,h,i] * (v[t,h,j] - pred[t,h,j]);\n"
                           "  y[t,h,j] = sum(i: q[t,h,i] * S[h,i,j]); }\n";
    const char *inlined = "model m { dim H = 2, K = 4, V = 3; input q[T,H,K], k[T,H,K], v[T,H,V], b[T,H];\n"
                          "  state S[H,K,V]; output y[T,H,V];\n"
                          "  S[h,i,j] = S[h,i,j] + b[t,h] * k[t,h,i] * (v[t,h,j] - sum(a: k[t,h,a] * S[h,a,j]));\n"
                          "  y[t,h,j] = sum(i: q[t,h,i] * S[h,i,j]); }\n";
    char *a = emit_analysis("with_let", with_let);
    char *b = emit_analysis("inlined", inlined);
    const char *lines[] = {"  state S[H,K,V]: diagonal+rank-1", "    axes: H independent, K mixed, V passive",
                           "    diagonal part: identity, D_t = 1", "    correction: rank 1 along K"};
    for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) {
        expect_line(a, lines[i]);
        expect_line(b, lines[i]);
    }
    free(a);
    free(b);
}

/* A chain of lets that doubles the number of terms at each link: the
 * expansion stops at its limit and says so, quickly, instead of guessing;
 * past the limit in a readout, it falls back on the safe side. */
static void test_expansion_limit(void **unused)
{
    (void)unused;
    strbuf src = {0};
    sb_puts(&src, "model m { dim K = 4; input x[T,K]; state S[K]; output y[T,K];\n");
    sb_puts(&src, "  let a0[t,i] = S[i] + x[t,i];\n");
    int links = 24;
    for (int i = 1; i <= links; i++) sb_printf(&src, "  let a%d[t,i] = a%d[t,i] + 0.5 * a%d[t,i];\n", i, i - 1, i - 1);
    sb_printf(&src, "  S[i] = a%d[t,i];\n  y[t,i] = S[i]; }\n", links);
    assert_false(src.failed);
    char *text = emit_analysis("chain", sb_cstr(&src));
    expect_class(text, "S", "dense");
    expect_line(text, "    affine; too large to analyse further");
    free(text);
    /* a short chain of the same shape is analysed fully */
    src.len = 0;
    sb_puts(&src, "model m { dim K = 4; input x[T,K]; state S[K]; output y[T,K];\n");
    sb_puts(&src, "  let a0[t,i] = S[i] + x[t,i];\n");
    for (int i = 1; i <= 4; i++) sb_printf(&src, "  let a%d[t,i] = a%d[t,i] + 0.5 * a%d[t,i];\n", i, i - 1, i - 1);
    sb_puts(&src, "  S[i] = a4[t,i];\n  y[t,i] = S[i]; }\n");
    text = emit_analysis("short chain", sb_cstr(&src));
    expect_class(text, "S", "scalar"); /* 1.5^4, a literal other than 1 */
    free(text);
    /* the same chain in the readout only: the update is still analysed in full,
     * and the lost readouts count every axis as contracted, so the decay that
     * varies along H makes it diagonal rather than scalar */
    src.len = 0;
    sb_puts(&src, "model m { dim H = 2, K = 4; input q[T,H,K], x[T,H,K], g[T,H]; state S[H,K]; output y[T,H];\n");
    sb_puts(&src, "  S[h,i] = exp(g[t,h]) * S[h,i] + x[t,h,i];\n");
    sb_puts(&src, "  let a0[t,h,i] = S[h,i] + x[t,h,i];\n");
    for (int i = 1; i <= links; i++)
        sb_printf(&src, "  let a%d[t,h,i] = a%d[t,h,i] + 0.5 * a%d[t,h,i];\n", i, i - 1, i - 1);
    sb_printf(&src, "  y[t,h] = sum(i: q[t,h,i] * a%d[t,h,i]); }\n", links);
    text = emit_analysis("readout chain", sb_cstr(&src));
    expect_class(text, "S", "diagonal");
    expect_line(text, "    axes: H independent, K passive");
    expect_line(text, "    A_t = exp(g[t, h])");
    free(text);
    sb_free(&src);
}

/* ---- the structured result, through pass_analyze ---- */

static void test_structured_result(void **unused)
{
    (void)unused;
    const char *text = "model m { dim H = 2, K = 4, V = 3; input q[T,H,K], k[T,H,K], v[T,H,V], a[T,H];\n"
                       "  state S[H,K,V], r[H]; output y[T,H,V];\n"
                       "  let den[t,h] = sum(i: q[t,h,i] * r[h]);\n"
                       "  S[h,i,j] = exp(a[t,h]) * S[h,i,j] + k[t,h,i] * v[t,h,j];\n"
                       "  y[t,h,j] = sum(i: q[t,h,i] * S[h,i,j]) / den[t,h]; }\n";
    arena a;
    arena_init(&a);
    diag d = {0};
    src_file f = {"s.ssm", text, strlen(text)};
    ast_file *af = parse_file(&a, &d, &f);
    if (!af) fail_msg("parse: %s", sb_cstr(&d.text));
    if (!check_model(&a, &d, &f, &af->models[0], NULL, 0)) fail_msg("check: %s", sb_cstr(&d.text));
    ir_model *m = ir_lower(&a, &d, &f, &af->models[0]);
    assert_non_null(m);
    pass_analysis an;
    assert_true(pass_analyze(&a, m, &an, &d));
    assert_int_equal(an.nstates, 2);
    int S = ir_find_tensor(m, "S"), r = ir_find_tensor(m, "r"), y = ir_find_tensor(m, "y"),
        den = ir_find_tensor(m, "den");
    const pass_state *ps = &an.states[0];
    assert_int_equal(ps->tensor, S);
    assert_int_equal(ps->cls, PASS_CLASS_SCALAR);
    assert_int_equal(ps->roles[0], PASS_ROLE_INDEPENDENT);
    assert_int_equal(ps->roles[1], PASS_ROLE_PASSIVE);
    assert_int_equal(ps->roles[2], PASS_ROLE_PASSIVE);
    assert_int_equal(ps->nreads, 0);
    /* the coefficient is the exp instruction of the update statement */
    assert_true(ps->coef != IR_NONE);
    assert_int_equal(m->insts[ps->coef].op, IR_EXP);
    assert_string_equal(ps->coef_text, "exp(a[t, h])");
    const pass_state *pr = &an.states[1];
    assert_int_equal(pr->tensor, r);
    assert_int_equal(pr->cls, PASS_CLASS_CONSTANT);
    /* S over K in y's own statement; r over nothing (den sums over i, which indexes q, not r) */
    assert_int_equal(an.nreadouts, 1);
    const pass_readout *ro = &an.readouts[0];
    assert_int_equal(ro->output, y);
    assert_int_equal(ro->state, S);
    assert_int_equal(ro->axis, 1);
    assert_int_equal(ro->via, -1);
    assert_true(ro->after_update);
    assert_int_equal(m->insts[ro->sum].op, IR_SUM);
    assert_true(den >= 0);
    arena_free(&a);
    diag_free(&d);
}

/* On IR that passes/lag.c has not rewritten, a let of S read at t - 1 holds
 * S(t-2): the update is not proven affine in S(t-1), so never a cheaper class;
 * a lagged let that reads no state is a coefficient. */
static void test_unrewritten_lag(void **unused)
{
    (void)unused;
    static const char text[] = "model m { dim K = 4; input x[T,K]; state S[K], R[K]; output y[T,K];\n"
                               "  let h[t,i] = 2 * S[i]; let u[t,i] = x[t,i] * 3;\n"
                               "  S[i] = 0.5 * S[i] + h[t - 1,i];\n"
                               "  R[i] = u[t - 1,i] * R[i] + x[t,i];\n"
                               "  y[t,i] = S[i] + R[i]; }\n";
    arena a;
    arena_init(&a);
    diag d = {0};
    src_file f = {"u.ssm", text, sizeof text - 1};
    ast_file *af = parse_file(&a, &d, &f);
    assert_non_null(af);
    assert_true(check_model(&a, &d, &f, &af->models[0], NULL, 0));
    ir_model *m = ir_lower(&a, &d, &f, &af->models[0]);
    assert_non_null(m);
    pass_analysis an;
    assert_true(pass_analyze(&a, m, &an, &d));
    assert_int_equal(an.states[0].cls, PASS_CLASS_NONLINEAR);
    assert_int_equal(an.states[1].cls, PASS_CLASS_DIAGONAL);
    diag_free(&d);
    arena_free(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_example_classes),
        cmocka_unit_test(test_example_details),
        cmocka_unit_test(test_example_readouts),
        cmocka_unit_test(test_edge_cases),
        cmocka_unit_test(test_contracted_axis_decides),
        cmocka_unit_test(test_let_inlining_invariant),
        cmocka_unit_test(test_expansion_limit),
        cmocka_unit_test(test_structured_result),
        cmocka_unit_test(test_unrewritten_lag),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
