/* test_grad.c: the gradients the compiler derives (passes/grad.c) and the
 * checkpointed backward that runs them (driver/grad.c), on the interpreter.
 *
 * The check: for random inputs, params, initial states and cotangents (of
 * every output and every final state) and a random direction v over every
 * input, param and initial state, the directional derivative <grad, v> from
 * ssmc_backward agrees with central finite differences of
 * L = sum <dy, y> + <dS, S(T)> computed by ssmc_run in f64 (Richardson-
 * extrapolated, so the difference's own error is far below the tolerance),
 * to a relative error of 1e-6. Also: the training forward's outputs and
 * final states equal ssmc_run's. Cases: every example (small dims, several
 * chunks), and models made for each construct of the language; the same
 * models at checkpoint intervals of 1, 2 and T; a long sequence (T = 65,536)
 * whose gradients stay finite; the checkpoint memory bound. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers/files.h"
#include "helpers/grad_dims.h"
#include "ssmc.h"
#include "support/support.h"

#define MAXT 32

typedef struct gmodel {
    ssmc_ctx *ctx;
    ssmc_model *m;
    int n;
    ssmc_tensor_info info[MAXT];
    size_t count[MAXT];
    int64_t B, T;
} gmodel;

static void gm_open_on(gmodel *g, ssmc_device dev, const char *file, const char *src, size_t len, const ssmc_dim *dims,
                       int ndims, int64_t B, int64_t T, int64_t chunk)
{
    memset(g, 0, sizeof *g);
    g->ctx = ssmc_ctx_new();
    ssmc_options o = {.device = dev, .dims = dims, .ndims = ndims, .grad_chunk = chunk, .threads = 2};
    if (ssmc_compile(g->ctx, file, src, len, &o, &g->m) != SSMC_OK) fail_msg("%s: %s", file, ssmc_ctx_error(g->ctx));
    g->n = ssmc_model_num_tensors(g->m);
    assert_true(g->n <= MAXT);
    g->B = B;
    g->T = T;
    for (int i = 0; i < g->n; i++) {
        ssmc_model_tensor(g->m, i, &g->info[i]);
        size_t c = g->info[i].role == SSMC_PARAM ? 1 : (size_t)B;
        if (g->info[i].per_step) c *= (size_t)T;
        for (int j = 0; j < g->info[i].rank; j++) c *= (size_t)g->info[i].shape[j];
        g->count[i] = c;
    }
}

static void gm_open(gmodel *g, const char *file, const char *src, size_t len, const ssmc_dim *dims, int ndims,
                    int64_t B, int64_t T, int64_t chunk)
{
    gm_open_on(g, SSMC_DEVICE_INTERP, file, src, len, dims, ndims, B, T, chunk);
}

static void gm_close(gmodel *g)
{
    ssmc_model_free(g->m);
    ssmc_ctx_free(g->ctx);
}

static double **alloc_set(const gmodel *g)
{
    double **v = calloc(MAXT, sizeof *v);
    for (int i = 0; i < g->n; i++) v[i] = calloc(g->count[i] + 1, sizeof(double));
    return v;
}

static void free_set(const gmodel *g, double **v)
{
    for (int i = 0; v && i < g->n; i++) free(v[i]);
    free(v);
}

/* Without initial states (g_no_states): states are not given to the runs, so
 * that init statements give their initial values, and the loss has no
 * final-state term (a state not given has no final value). */
static bool g_no_states;

static bool is_value(ssmc_role r) { return r == SSMC_INPUT || r == SSMC_PARAM || (r == SSMC_STATE && !g_no_states); }
static bool is_given(ssmc_role r) { return r != SSMC_STATE || !g_no_states; }
static bool in_loss(ssmc_role r) { return r == SSMC_OUTPUT || (r == SSMC_STATE && !g_no_states); }

/* L(theta + h v) by ssmc_run; outs (optional) receives the outputs and final states. */
static double loss(const gmodel *g, double *const *theta, double *const *v, double h, double *const *cot,
                   double **outs)
{
    double **buf = alloc_set(g);
    ssmc_arg args[MAXT];
    int na = 0;
    for (int i = 0; i < g->n; i++) {
        if (is_value(g->info[i].role))
            for (size_t k = 0; k < g->count[i]; k++) buf[i][k] = theta[i][k] + h * v[i][k];
        else
            for (size_t k = 0; k < g->count[i]; k++) buf[i][k] = NAN;
        if (is_given(g->info[i].role)) args[na++] = (ssmc_arg){g->info[i].name, SSMC_F64, buf[i], 0};
    }
    if (ssmc_run(g->m, g->B, g->T, args, na) != SSMC_OK) fail_msg("%s", ssmc_ctx_error(g->ctx));
    double L = 0;
    for (int i = 0; i < g->n; i++) {
        if (!in_loss(g->info[i].role)) continue;
        for (size_t k = 0; k < g->count[i]; k++) L += cot[i][k] * buf[i][k];
        if (outs) memcpy(outs[i], buf[i], g->count[i] * sizeof(double));
    }
    free_set(g, buf);
    return L;
}

/* Fills theta, the cotangents and a direction with values in [-scale, scale). */
static void draw(const gmodel *g, uint64_t seed, double scale, double **theta, double **cot, double **v)
{
    uint64_t rng = seed * 0x9e3779b97f4a7c15ull + 7;
    for (int i = 0; i < g->n; i++)
        for (size_t k = 0; k < g->count[i]; k++) {
            bool val = is_value(g->info[i].role), out = in_loss(g->info[i].role);
            theta[i][k] = val ? scale * uniform_pm1(&rng) : 0;
            cot[i][k] = out ? uniform_pm1(&rng) : 0;
            v[i][k] = val ? uniform_pm1(&rng) : 0;
        }
}

/* The gradients by the training forward and the backward; checks the
 * forward's results against ssmc_run's (ref). Returns <grad, v>. */
static double backprop(const gmodel *g, double *const *theta, double *const *cot, double *const *v, double **grads,
                       double *const *ref)
{
    double **buf = alloc_set(g);
    ssmc_arg args[MAXT], douts[MAXT], gargs[MAXT];
    int ng = 0, nd = 0, na = 0;
    for (int i = 0; i < g->n; i++) {
        ssmc_role r = g->info[i].role;
        for (size_t k = 0; k < g->count[i]; k++) buf[i][k] = is_value(r) ? theta[i][k] : NAN;
        args[i] = (ssmc_arg){g->info[i].name, SSMC_F64, buf[i], 0};
        if (is_given(r)) na++;
        if (in_loss(r)) douts[nd++] = (ssmc_arg){g->info[i].name, SSMC_F64, cot[i], 0};
        if (is_value(r)) {
            for (size_t k = 0; k < g->count[i]; k++) grads[i][k] = NAN; /* poisoned */
            gargs[ng++] = (ssmc_arg){g->info[i].name, SSMC_F64, grads[i], 0};
        }
    }
    ssmc_tape *tape = NULL;
    ssmc_arg given[MAXT];
    na = 0;
    for (int i = 0; i < g->n; i++)
        if (is_given(g->info[i].role)) given[na++] = args[i];
    if (ssmc_forward_train(g->m, g->B, g->T, given, na, &tape) != SSMC_OK) fail_msg("%s", ssmc_ctx_error(g->ctx));
    for (int i = 0; i < g->n; i++) {
        ssmc_role r = g->info[i].role;
        if (!in_loss(r)) continue;
        for (size_t k = 0; k < g->count[i]; k++)
            if (!(fabs(buf[i][k] - ref[i][k]) <= 1e-12 * (1 + fabs(ref[i][k]))))
                fail_msg("training forward: %s[%zu] = %.17g, ssmc_run gives %.17g", g->info[i].name, k, buf[i][k],
                         ref[i][k]);
    }
    /* the backward takes the inputs and params again (not the final states the forward wrote) */
    ssmc_arg vals[MAXT];
    int nv = 0;
    for (int i = 0; i < g->n; i++)
        if (g->info[i].role == SSMC_INPUT || g->info[i].role == SSMC_PARAM) vals[nv++] = args[i];
    if (ssmc_backward(g->m, tape, vals, nv, douts, nd, gargs, ng) != SSMC_OK) fail_msg("%s", ssmc_ctx_error(g->ctx));
    ssmc_tape_free(tape);
    double dd = 0;
    for (int i = 0; i < g->n; i++) {
        if (!is_value(g->info[i].role)) continue;
        for (size_t k = 0; k < g->count[i]; k++) {
            if (!isfinite(grads[i][k])) fail_msg("grad of %s[%zu] is %g", g->info[i].name, k, grads[i][k]);
            dd += grads[i][k] * v[i][k];
        }
    }
    free_set(g, buf);
    return dd;
}

/* The check of the top of the file for one model; returns the relative error. */
static double check_model(const char *file, const char *src, size_t len, const ssmc_dim *dims, int ndims, int64_t B,
                          int64_t T, int64_t chunk, double scale, uint64_t seed)
{
    gmodel g;
    gm_open(&g, file, src, len, dims, ndims, B, T, chunk);
    /* what needs the language's version 2 (select, comparisons) is refused
     * with that said, at its place: reported and skipped until it lands */
    ssmc_grad_info info;
    if (ssmc_grad_info_of(g.m, T, &info) == SSMC_ERR_UNSUPPORTED &&
        strstr(ssmc_ctx_error(g.ctx), "from the language's version 2")) {
        fprintf(stderr, "SKIP %s: %s", file, ssmc_ctx_error(g.ctx));
        gm_close(&g);
        return 0;
    }
    double **theta = alloc_set(&g), **cot = alloc_set(&g), **v = alloc_set(&g), **grads = alloc_set(&g);
    double **ref = alloc_set(&g);
    draw(&g, seed, scale, theta, cot, v);
    loss(&g, theta, v, 0, cot, ref);
    double ad = backprop(&g, theta, cot, v, grads, ref);
    double h = 1e-4;
    double d1 = (loss(&g, theta, v, h, cot, NULL) - loss(&g, theta, v, -h, cot, NULL)) / (2 * h);
    double d2 = (loss(&g, theta, v, h / 2, cot, NULL) - loss(&g, theta, v, -h / 2, cot, NULL)) / h;
    double fd = (4 * d2 - d1) / 3;
    double den = fmax(fabs(ad), fabs(fd));
    double rel = den > 0 ? fabs(ad - fd) / den : 0;
    if (getenv("SSMC_TEST_VERBOSE"))
        fprintf(stderr, "%-28s chunk %lld  <grad,v> %.15g  fd %.15g  rel %.2e\n", file, (long long)chunk, ad, fd, rel);
    if (!(rel <= 1e-6)) fail_msg("%s (chunk %lld): <grad, v> = %.15g, finite differences %.15g, rel err %.3e", file,
                                 (long long)chunk, ad, fd, rel);
    assert_true(den > 1e-9); /* the check means nothing on a zero gradient */
    free_set(&g, theta);
    free_set(&g, cot);
    free_set(&g, v);
    free_set(&g, grads);
    free_set(&g, ref);
    gm_close(&g);
    return rel;
}

static void check_src(const char *name, const char *src, int64_t T, int64_t chunk)
{
    check_model(name, src, strlen(src), NULL, 0, 2, T, chunk, 1.0, 1);
}

/* The same with no initial state given: init statements apply. */
static void check_src_init(const char *name, const char *src, int64_t T, int64_t chunk)
{
    g_no_states = true;
    check_model(name, src, strlen(src), NULL, 0, 2, T, chunk, 1.0, 1);
    g_no_states = false;
}

/* ---- every example, small ---- */

static void test_examples(void **state)
{
    (void)state;
    char names[64][128];
    int n = test_list_examples(names, 64);
    assert_true(n > 0);
    for (int i = 0; i < n; i++) {
        example_dims own;
        size_t len;
        char *src = test_slurp(names[i], &len);
        const example_dims *e = grad_example_dims(names[i], src, len, &own);
        check_model(names[i], src, len, e->dims, e->ndims, 2, 7, 0, 1.0, 3);
        if (strstr(src, "init ")) { /* and from its init statements */
            g_no_states = true;
            check_model(names[i], src, len, e->dims, e->ndims, 2, 7, 0, 1.0, 4);
            g_no_states = false;
        }
        free(src);
    }
}

/* ---- the CPU backend against the interpreter ---- */

/* Gradients of one example on `dev` with f32 tensors (values exact in f32). */
static void grads_on(ssmc_device dev, const char *file, const char *src, size_t len, const example_dims *e,
                     int64_t B, int64_t T, double **out, gmodel *g)
{
    gm_open_on(g, dev, file, src, len, e->dims, e->ndims, B, T, 0);
    uint64_t rng = 99;
    float *buf[MAXT], *cot[MAXT], *gr[MAXT];
    ssmc_arg args[MAXT], vals[MAXT], douts[MAXT], grads[MAXT];
    int nv = 0, nd = 0, ng = 0, na = 0;
    for (int i = 0; i < g->n; i++) {
        size_t c = g->count[i];
        buf[i] = calloc(c + 1, sizeof(float));
        cot[i] = calloc(c + 1, sizeof(float));
        gr[i] = calloc(c + 1, sizeof(float));
        ssmc_role r = g->info[i].role;
        for (size_t k = 0; k < c; k++) {
            buf[i][k] = r == SSMC_OUTPUT ? NAN : (float)(0.5 * uniform_pm1(&rng));
            cot[i][k] = (float)uniform_pm1(&rng);
        }
        args[na] = (ssmc_arg){g->info[i].name, SSMC_F32, buf[i], 0};
        if (r == SSMC_INPUT || r == SSMC_PARAM) vals[nv++] = args[na];
        if (in_loss(r)) douts[nd++] = (ssmc_arg){g->info[i].name, SSMC_F32, cot[i], 0};
        if (r != SSMC_OUTPUT) grads[ng++] = (ssmc_arg){g->info[i].name, SSMC_F32, gr[i], 0};
        if (is_given(r)) na++;
    }
    ssmc_tape *tape = NULL;
    if (ssmc_forward_train(g->m, B, T, args, na, &tape) != SSMC_OK ||
        ssmc_backward(g->m, tape, vals, nv, douts, nd, grads, ng) != SSMC_OK)
        fail_msg("%s on %s: %s", file, dev == SSMC_DEVICE_CPU ? "cpu" : "interp", ssmc_ctx_error(g->ctx));
    ssmc_tape_free(tape);
    for (int i = 0; i < g->n; i++) {
        out[i] = calloc(g->count[i] + 1, sizeof(double));
        for (size_t k = 0; k < g->count[i]; k++) out[i][k] = gr[i][k];
        free(buf[i]);
        free(cot[i]);
        free(gr[i]);
    }
}

static void test_cpu_against_interp(void **state)
{
    (void)state;
    static const char probe_src[] = "model p { input x[T]; output y[T]; y[t] = x[t]; }";
    ssmc_ctx *probe = ssmc_ctx_new();
    ssmc_model *pm = NULL;
    ssmc_options po = {.device = SSMC_DEVICE_CPU};
    bool cpu = ssmc_compile(probe, "p", probe_src, sizeof probe_src - 1, &po, &pm) == SSMC_OK;
    ssmc_model_free(pm);
    ssmc_ctx_free(probe);
    if (!cpu) {
        fprintf(stderr, "SKIP test_cpu_against_interp: no CPU backend in this build\n");
        return;
    }
    char names[64][128];
    int nex = test_list_examples(names, 64);
    for (int k = 0; k < 2 * nex; k++) {
        size_t len;
        char *src = test_slurp(names[k / 2], &len);
        /* each example twice: with initial states, and without (init statements), where it has any */
        g_no_states = k % 2;
        if (g_no_states && !strstr(src, "init ")) {
            free(src);
            continue;
        }
        example_dims own;
        const example_dims *e = grad_example_dims(names[k / 2], src, len, &own);
        gmodel gi, gc;
        double *ri[MAXT], *rc[MAXT];
        grads_on(SSMC_DEVICE_INTERP, e->file, src, len, e, 2, 37, ri, &gi);
        grads_on(SSMC_DEVICE_CPU, e->file, src, len, e, 2, 37, rc, &gc);
        for (int i = 0; i < gi.n; i++) {
            if (gi.info[i].role == SSMC_OUTPUT) continue;
            double md = 0, mr = 0;
            for (size_t j = 0; j < gi.count[i]; j++) {
                if (!isfinite(rc[i][j])) fail_msg("%s: cpu grad %s[%zu] = %g", e->file, gi.info[i].name, j, rc[i][j]);
                md = fmax(md, fabs(rc[i][j] - ri[i][j]));
                mr = fmax(mr, fabs(ri[i][j]));
            }
            if (getenv("SSMC_TEST_VERBOSE"))
                fprintf(stderr, "cpu %-28s %-8s rel %.2e\n", e->file, gi.info[i].name, mr > 0 ? md / mr : md);
            if (!(md <= 1e-5 * mr + 1e-7))
                fail_msg("%s: cpu grad of %s differs from the interpreter's by %g (max %g)", e->file, gi.info[i].name, md,
                         mr);
        }
        for (int i = 0; i < gi.n; i++) {
            free(ri[i]);
            free(rc[i]);
        }
        gm_close(&gi);
        gm_close(&gc);
        free(src);
    }
    g_no_states = false;
}

/* ---- one model per construct ---- */

static void test_elementwise(void **state)
{
    (void)state;
    check_src("elementwise",
              "model m { dim N = 3; input x[T,N]; param w[N], b; state S[N]; output y[T,N];\n"
              "  S[n] = sigmoid(w[n]) * S[n] + tanh(x[t,n] * b);\n"
              "  y[t,n] = exp(S[n]) * x[t,n] - S[n] / (2 + x[t,n] * x[t,n]); }\n",
              6, 0);
}

static void test_functions(void **state)
{
    (void)state;
    check_src("functions",
              "model m { dim N = 3; input x[T,N]; param p[N]; output y[T,N];\n"
              "  let u[t,n] = x[t,n] * x[t,n] + 0.5;\n"
              "  y[t,n] = log(u[t,n]) + log1p(u[t,n]) + sqrt(u[t,n]) + rsqrt(u[t,n]) + softplus(x[t,n] * p[n])\n"
              "         + silu(x[t,n] - p[n]) + pow(u[t,n], p[n]) + pow(2, x[t,n]) - -x[t,n]; }\n",
              4, 0);
}

static void test_reduction_sum(void **state)
{
    (void)state;
    check_src("sum",
              "model m { dim N = 3, K = 2; input x[T,N], q[T,K]; param W[K,N]; state S[K,N]; output y[T,K];\n"
              "  S[k,n] = 0.9 * S[k,n] + sum(j: W[k,j] * x[t,j]) * x[t,n];\n"
              "  y[t,k] = sum(n, k2: S[k2,n] * q[t,k2] * W[k,n]) + sum(n: x[t,n]) * sum(j: W[k,j] * q[t,k]); }\n",
              5, 0);
}

static void test_nested_reduction(void **state)
{
    (void)state;
    check_src("nested",
              "model m { dim N = 3, K = 2; input x[T,N]; param W[K,N]; output y[T,K];\n"
              "  y[t,k] = sum(n: W[k,n] * tanh(sum(j: W[k,j] * x[t,j]) * x[t,n])); }\n",
              4, 0);
}

static void test_grouped(void **state)
{
    (void)state;
    check_src("grouped",
              "model m { dim H = 4, G = 2, R = 2, N = 3; input x[T,H], B[T,G,N]; param A[G]; state S[H,N];\n"
              "  output y[T,H];\n"
              "  S[h,n] = sigmoid(A[h / R]) * S[h,n] + x[t,h] * B[t, h / R, n];\n"
              "  y[t,h] = sum(n: S[h,n] * B[t, h / 2, n]); }\n",
              5, 0);
}

static void test_time_offsets(void **state)
{
    (void)state;
    check_src("offsets",
              "model m { dim D = 3; input x[T,D]; param mu[D]; state S[D]; output y[T,D];\n"
              "  S[d] = 0.5 * S[d] + mu[d] * x[t,d] + (1 - mu[d]) * x[t - 1, d] * x[t - 3, d];\n"
              "  y[t,d] = S[d] * x[t - 2, d]; }\n",
              7, 0);
}

static void test_convolution(void **state)
{
    (void)state;
    check_src("conv",
              "model m { dim D = 2, W = 3; input x[T,D]; param w[D,W], b[D]; state S[D]; output y[T,D];\n"
              "  let xc[t,d] = silu(sum(j: w[d,j] * x[t - j, d]) + b[d]);\n"
              "  S[d] = 0.7 * S[d] + xc[t,d];\n"
              "  y[t,d] = S[d] * xc[t,d] + sum(j: w[d,j] * w[d,j] * x[t - j, d]); }\n",
              7, 0);
}

static void test_lets(void **state)
{
    (void)state;
    check_src("lets",
              "model m { dim N = 3; input x[T,N]; param a[N], s; state S[N]; output y[T,N];\n"
              "  let A[n] = -exp(a[n]) * s;\n"
              "  let A2[n] = A[n] * A[n] + s;\n"
              "  let c = sum(n: a[n]);\n"
              "  let g[t,n] = exp(A[n] * x[t,n]);\n"
              "  S[n] = g[t,n] * S[n] + A2[n] * x[t,n] + c;\n"
              "  y[t,n] = S[n] * g[t,n] + A[n]; }\n",
              5, 0);
}

static void test_old_and_new(void **state)
{
    (void)state;
    check_src("old_new",
              "model m { dim N = 3; input x[T,N]; state S[N], U[N]; output before[T,N], after[T,N];\n"
              "  let prev[t,n] = S[n];\n"
              "  S[n] = 0.5 * S[n] + x[t,n] * U[n];\n"
              "  after[t,n] = S[n] * U[n];\n"
              "  U[n] = tanh(U[n] + S[n] * prev[t,n]);\n"
              "  before[t,n] = prev[t,n] + U[n] * S[n]; }\n",
              6, 0);
}

static void test_coupled(void **state)
{
    (void)state;
    check_src("coupled",
              "model m { dim N = 2, K = 3; input x[T,N]; param W[N,K]; state a[N,K], b[K]; output y[T,K];\n"
              "  a[n,k] = 0.5 * a[n,k] + b[k] * x[t,n];\n"
              "  b[k] = 0.8 * b[k] + sum(n: a[n,k] * W[n,k]) - 0.1 * sum(j: b[j]);\n"
              "  y[t,k] = b[k]; }\n",
              6, 0);
}

static void test_delta_rule(void **state)
{
    (void)state;
    check_src("delta",
              "model m { dim K = 3, V = 2; input k[T,K], v[T,V], b[T]; state S[K,V]; output y[T,V];\n"
              "  let pred[t,j] = sum(i: k[t,i] * S[i,j]);\n"
              "  S[i,j] = S[i,j] + sigmoid(b[t]) * k[t,i] * (v[t,j] - pred[t,j]);\n"
              "  y[t,j] = sum(i: S[i,j] * k[t,i]); }\n",
              6, 0);
}

static void test_never_updated_state(void **state)
{
    (void)state;
    check_src("constant_state",
              "model m { dim N = 3; input x[T,N]; state C[N], S[N]; output y[T,N];\n"
              "  S[n] = 0.5 * S[n] + C[n] * x[t,n];\n"
              "  y[t,n] = S[n] + C[n]; }\n",
              5, 0);
}

static void test_gru(void **state)
{
    (void)state;
    check_src("gru",
              "model gru { dim E = 2, H = 3; input x[T,E];\n"
              "  param Wz[H,E], Uz[H,H], Wr[H,E], Ur[H,H], Wn[H,E], Un[H,H], bz[H], bn[H];\n"
              "  state h[H]; output y[T,H];\n"
              "  let z[t,j] = sigmoid(sum(e: Wz[j,e] * x[t,e]) + sum(a: Uz[j,a] * h[a]) + bz[j]);\n"
              "  let r[t,j] = sigmoid(sum(e: Wr[j,e] * x[t,e]) + sum(a: Ur[j,a] * h[a]));\n"
              "  let n[t,j] = tanh(sum(e: Wn[j,e] * x[t,e]) + r[t,j] * sum(a: Un[j,a] * h[a]) + bn[j]);\n"
              "  h[j] = (1 - z[t,j]) * n[t,j] + z[t,j] * h[j];\n"
              "  y[t,j] = h[j]; }\n",
              6, 0);
}

/* ---- the language's version 2 ---- */

static void test_select_and_compare(void **state)
{
    (void)state;
    check_src("select",
              "model m { dim N = 3; input x[T,N], c[T,N]; param p[N]; state S[N]; output y[T,N];\n"
              "  S[n] = select(c[t,n] > 0, 0.9 * S[n] + x[t,n], tanh(S[n] * p[n]));\n"
              "  y[t,n] = S[n] * (x[t,n] < p[n]) + select(c[t,n] <= 0.2, x[t,n], p[n] * S[n]); }\n",
              6, 0);
}

static void test_trig_erf(void **state)
{
    (void)state;
    check_src("trig",
              "model m { dim N = 3; input x[T,N]; param w[N]; state S[N]; output y[T,N];\n"
              "  S[n] = 0.5 * S[n] + sin(x[t,n] * w[n]) * cos(S[n]);\n"
              "  y[t,n] = erf(S[n] + x[t,n]); }\n",
              6, 0);
}

static void test_index_as_number(void **state)
{
    (void)state;
    check_src("index_number",
              "model m { dim N = 3; input x[T,N]; param W[N,N]; state S[N,N]; output y[T,N];\n"
              "  S[i,j] = 0.5 * S[i,j] + select(i == j, x[t,i], W[i,j] * x[t,j]) * (j + 1);\n"
              "  y[t,i] = sum(j: S[i,j] * (i - j)) + x[t,i] * i; }\n",
              5, 0);
}

static void test_nonsmooth(void **state)
{
    (void)state;
    check_src("nonsmooth",
              "model m { dim N = 4; input x[T,N], z[T,N]; param p[N]; state S[N]; output y[T,N];\n"
              "  S[n] = 0.5 * S[n] + relu(x[t,n]) + abs(z[t,n] - p[n]);\n"
              "  y[t,n] = min(S[n], x[t,n]) * max(z[t,n], p[n] * S[n]); }\n",
              6, 0);
}

static void test_reduction_max(void **state)
{
    (void)state;
    check_src("rmax",
              "model m { dim N = 4, K = 2; input x[T,N]; param W[K,N]; state S[K]; output y[T,K];\n"
              "  let mx[t,k] = max(n: W[k,n] * x[t,n]);\n"
              "  S[k] = 0.7 * S[k] + exp(mx[t,k] - 1);\n"
              "  y[t,k] = S[k] * max(n: x[t,n] * S[k] + W[k,n]); }\n",
              6, 0);
}

static void test_constant_index(void **state)
{
    (void)state;
    check_src("constant_index",
              "model m { dim G = 3, N = 2; input x[T,N]; param W[G,N]; state S[G,N]; output y[T,N];\n"
              "  let pre[t,g,n] = W[g,n] * x[t,n] + S[g,n];\n"
              "  S[g,n] = tanh(pre[t,g,n]) * sigmoid(pre[t,0,n]);\n"
              "  y[t,n] = S[1,n] * W[2,n] + pre[t,2,n]; }\n",
              6, 0);
}

static void test_diagonal_read(void **state)
{
    (void)state;
    check_src("diagonal",
              "model m { dim N = 3; input x[T,N]; state S[N,N]; output y[T,N];\n"
              "  S[i,j] = 0.5 * S[i,j] + x[t,i] * x[t,j];\n"
              "  y[t,i] = S[i,i] * x[t,i]; }\n",
              5, 0);
}

static void test_mlstm(void **state)
{
    (void)state;
    /* mLSTM (Beck et al. 2024, xLSTM) with its max stabiliser m */
    check_src("mlstm",
              "model mlstm { dim K = 3, V = 2;\n"
              "  input q[T,K], k[T,K], v[T,V], ig[T], fg[T];\n"
              "  state C[K,V], n[K], m;\n"
              "  output h[T,V];\n"
              "  let lf[t] = -softplus(-fg[t]);\n"
              "  let mnew[t] = max(lf[t] + m, ig[t]);\n"
              "  let fp[t] = exp(lf[t] + m - mnew[t]);\n"
              "  let ip[t] = exp(ig[t] - mnew[t]);\n"
              "  C[i,j] = fp[t] * C[i,j] + ip[t] * k[t,i] * v[t,j];\n"
              "  n[i] = fp[t] * n[i] + ip[t] * k[t,i];\n"
              "  m = mnew[t];\n"
              "  let den[t] = max(abs(sum(i: n[i] * q[t,i])), exp(-m));\n"
              "  h[t,j] = sum(i: C[i,j] * q[t,i]) / den[t]; }\n",
              7, 0);
}

static void test_lagged_lets(void **state)
{
    (void)state;
    /* recomputed at the lag (reads no state), and kept in hidden states (reads one) */
    check_src("lagged_lets",
              "model m { dim D = 2, W = 3; input x[T,D]; param w[D,W]; state S[D]; output y[T,D];\n"
              "  let L[t,d] = tanh(x[t,d] * w[d,0]);\n"
              "  S[d] = 0.6 * S[d] + L[t,d] * L[t - 1, d];\n"
              "  let M[t,d] = S[d] * x[t,d];\n"
              "  y[t,d] = M[t - 2, d] + sum(j[W]: w[d,j] * L[t - j, d]) + M[t - 1, d] * L[t - 2, d]; }\n",
              7, 0);
}

static void test_init(void **state)
{
    (void)state;
    const char *src = "model m { dim N = 3; input x[T,N]; param w[N], A[N,N]; state S[N], M[N,N]; output y[T,N];\n"
                      "  init S[n] = 2 * w[n];\n"
                      "  init M[i,j] = select(i == j, 1, 0) + A[i,j];\n"
                      "  S[n] = 0.5 * S[n] + x[t,n];\n"
                      "  M[i,j] = 0.9 * M[i,j] + x[t,i] * S[j];\n"
                      "  y[t,n] = sum(j: M[n,j] * S[j]) * w[n]; }\n";
    check_src_init("init", src, 5, 2);
    check_src("init_given", src, 5, 2); /* initial states given: the inits do not apply */
}

/* ---- checkpoint intervals ---- */

static void test_chunks(void **state)
{
    (void)state;
    const char *src = "model m { dim D = 2; input x[T,D]; param w[D]; state S[D], U[D]; output y[T,D];\n"
                      "  S[d] = tanh(0.9 * S[d] + w[d] * x[t - 1, d] + x[t - 2, d] * x[t, d] + U[d]);\n"
                      "  U[d] = 0.5 * U[d] + S[d] * x[t - 1, d];\n"
                      "  y[t,d] = S[d] * U[d]; }\n";
    int64_t chunks[] = {1, 2, 3, 4, 7, 0, 100};
    for (size_t i = 0; i < sizeof chunks / sizeof *chunks; i++) check_src("chunks", src, 7, chunks[i]);
    /* one sequence: the chunks run on the caller's tensors in place */
    check_model("chunks_b1", src, strlen(src), NULL, 0, 1, 9, 2, 1.0, 5);
}

/* ---- the plan, and what the tape holds ---- */

static void test_memory_bound(void **state)
{
    (void)state;
    size_t len;
    char *src = test_slurp("examples/mamba2.ssm", &len);
    ssmc_ctx *ctx = ssmc_ctx_new();
    ssmc_dim dims[] = {{"H", 2}, {"P", 2}, {"N", 3}};
    ssmc_options o = {.device = SSMC_DEVICE_INTERP, .dims = dims, .ndims = 3};
    ssmc_model *m = NULL;
    assert_int_equal(ssmc_compile(ctx, "mamba2.ssm", src, len, &o, &m), SSMC_OK);
    size_t state_bytes = 2 * 2 * 3 * sizeof(double); /* S[H,P,N] in f64 */
    int64_t Ts[] = {1, 2, 10, 100, 1000, 4096, 65536, 1000000};
    for (size_t i = 0; i < sizeof Ts / sizeof *Ts; i++) {
        int64_t T = Ts[i];
        ssmc_grad_info info;
        assert_int_equal(ssmc_grad_info_of(m, T, &info), SSMC_OK);
        assert_int_equal(info.state_bytes, state_bytes);
        assert_true(info.chunk >= 1 && info.chunk <= T);
        assert_int_equal(info.checkpoints, (T + info.chunk - 1) / info.chunk);
        /* C = ceil(sqrt(T)): checkpoints plus trace steps within 2 sqrt(T) + 2 */
        double bound = 2 * sqrt((double)T) + 2;
        assert_true((double)(info.checkpoints + info.chunk) <= bound);
        assert_int_equal(info.tape_bytes, (size_t)info.checkpoints * state_bytes);
        assert_true(info.tape_bytes < (size_t)T * state_bytes || T <= 2);
    }
    /* the tape of a real run holds exactly that, for every sequence */
    int64_t B = 3, T = 50;
    ssmc_grad_info info;
    assert_int_equal(ssmc_grad_info_of(m, T, &info), SSMC_OK);
    int n = ssmc_model_num_tensors(m);
    ssmc_arg args[16];
    double *bufs[16];
    for (int i = 0; i < n; i++) {
        ssmc_tensor_info ti;
        ssmc_model_tensor(m, i, &ti);
        size_t c = ti.role == SSMC_PARAM ? 1 : (size_t)B;
        if (ti.per_step) c *= (size_t)T;
        for (int j = 0; j < ti.rank; j++) c *= (size_t)ti.shape[j];
        bufs[i] = calloc(c, sizeof(double));
        for (size_t k = 0; k < c; k++) bufs[i][k] = 0.01 * (double)(k % 7);
        args[i] = (ssmc_arg){ti.name, SSMC_F64, bufs[i], 0};
    }
    ssmc_tape *tape = NULL;
    assert_int_equal(ssmc_forward_train(m, B, T, args, n, &tape), SSMC_OK);
    assert_int_equal(ssmc_tape_bytes(tape), (size_t)B * info.tape_bytes);
    assert_int_equal(info.chunk, 8);
    assert_int_equal(info.checkpoints, 7);
    ssmc_tape_free(tape);
    for (int i = 0; i < n; i++) free(bufs[i]);
    ssmc_model_free(m);
    ssmc_ctx_free(ctx);
    free(src);
}

/* ---- the API's errors ---- */

static void expect_err(ssmc_ctx *ctx, ssmc_status got, ssmc_status want, const char *words)
{
    if (got != want) fail_msg("status %s, expected %s: %s", ssmc_status_name(got), ssmc_status_name(want),
                              ssmc_ctx_error(ctx));
    if (!strstr(ssmc_ctx_error(ctx), words)) fail_msg("the message lacks '%s': %s", words, ssmc_ctx_error(ctx));
}

static void test_api_errors(void **state)
{
    (void)state;
    static const char src[] = "model m { dim N = 2; input x[T,N]; param w[N]; state S[N]; output y[T,N];\n"
                              "  S[n] = w[n] * S[n] + x[t,n];  y[t,n] = S[n]; }\n";
    ssmc_ctx *ctx = ssmc_ctx_new();
    ssmc_options o = {.device = SSMC_DEVICE_INTERP};
    ssmc_model *m = NULL, *m2 = NULL;
    assert_int_equal(ssmc_compile(ctx, "m.ssm", src, sizeof src - 1, &o, &m), SSMC_OK);
    assert_int_equal(ssmc_compile(ctx, "m.ssm", src, sizeof src - 1, &o, &m2), SSMC_OK);
    double x[2 * 3 * 2] = {0.5, -1, 2, 0.25}, w[2] = {0.5, 0.9}, S[2 * 2] = {0}, y[2 * 3 * 2], gx[12], gw[2], gS[4];
    ssmc_arg args[] = {{"x", SSMC_F64, x, 0}, {"w", SSMC_F64, w, 0}, {"S", SSMC_F64, S, 0}, {"y", SSMC_F64, y, 0}};
    ssmc_tape *tape = NULL;
    expect_err(ctx, ssmc_forward_train(m, 0, 3, args, 4, &tape), SSMC_ERR_ARG, "at least 1");
    assert_null(tape);
    expect_err(ctx, ssmc_forward_train(m, 2, 3, args, 1, &tape), SSMC_ERR_ARG, "missing param 'w'");
    ssmc_arg dup[] = {{"x", SSMC_F64, x, 0}, {"x", SSMC_F64, x, 0}};
    expect_err(ctx, ssmc_forward_train(m, 2, 3, dup, 2, &tape), SSMC_ERR_ARG, "given twice");
    assert_int_equal(ssmc_forward_train(NULL, 2, 3, args, 4, &tape), SSMC_ERR_ARG);
    assert_int_equal(ssmc_forward_train(m, 2, 3, args, 4, &tape), SSMC_OK);
    ssmc_arg vals[] = {{"x", SSMC_F64, x, 0}, {"w", SSMC_F64, w, 0}};
    ssmc_arg douts[] = {{"y", SSMC_F64, y, 0}};
    ssmc_arg grads[] = {{"x", SSMC_F64, gx, 0}, {"w", SSMC_F64, gw, 0}, {"S", SSMC_F64, gS, 0}};
    expect_err(ctx, ssmc_backward(m2, tape, vals, 2, douts, 1, grads, 3), SSMC_ERR_ARG, "on this model");
    expect_err(ctx, ssmc_backward(m, NULL, vals, 2, douts, 1, grads, 3), SSMC_ERR_ARG, "tape");
    ssmc_arg bad_dout[] = {{"x", SSMC_F64, x, 0}};
    expect_err(ctx, ssmc_backward(m, tape, vals, 2, bad_dout, 1, grads, 3), SSMC_ERR_ARG, "no output or state named 'x'");
    ssmc_arg bad_grad[] = {{"y", SSMC_F64, y, 0}};
    expect_err(ctx, ssmc_backward(m, tape, vals, 2, douts, 1, bad_grad, 1), SSMC_ERR_ARG,
               "no input, param or state named 'y'");
    ssmc_arg null_data[] = {{"x", SSMC_F64, NULL, 0}};
    expect_err(ctx, ssmc_backward(m, tape, vals, 2, douts, 1, null_data, 1), SSMC_ERR_ARG, "has no data");
    expect_err(ctx, ssmc_backward(m, tape, vals, 1, douts, 1, grads, 3), SSMC_ERR_ARG, "missing param 'w'");
    /* no cotangent at all: every gradient is zero */
    assert_int_equal(ssmc_backward(m, tape, vals, 2, NULL, 0, grads, 3), SSMC_OK);
    for (int i = 0; i < 12; i++) assert_true(gx[i] == 0);
    assert_true(gw[0] == 0 && gw[1] == 0);
    /* the tape serves several backwards; mixed dtypes */
    float yf[12], gxf[12];
    for (int i = 0; i < 12; i++) yf[i] = 1.0f;
    ssmc_arg doutf[] = {{"y", SSMC_F32, yf, 0}};
    ssmc_arg gradf[] = {{"x", SSMC_F32, gxf, 0}};
    assert_int_equal(ssmc_backward(m, tape, vals, 2, doutf, 1, gradf, 1), SSMC_OK);
    for (int i = 0; i < 12; i++) y[i] = 1.0;
    assert_int_equal(ssmc_backward(m, tape, vals, 2, douts, 1, grads, 3), SSMC_OK);
    for (int i = 0; i < 12; i++) assert_true(fabs(gx[i] - gxf[i]) < 1e-6);
    /* device pointers on a model of a device without them: refused, said so */
    ssmc_tape *dt = NULL;
    expect_err(ctx, ssmc_forward_train_device(m, 2, 3, args, 4, &dt, NULL), SSMC_ERR_UNSUPPORTED, "device");
    assert_null(dt);
    expect_err(ctx, ssmc_backward_device(m, tape, vals, 2, douts, 1, grads, 3, NULL), SSMC_ERR_UNSUPPORTED, "device");
    ssmc_grad_info info;
    assert_int_equal(ssmc_grad_info_of(NULL, 3, &info), SSMC_ERR_ARG);
    expect_err(ctx, ssmc_grad_info_of(m, 0, &info), SSMC_ERR_ARG, "T >= 1");
    assert_int_equal(ssmc_tape_bytes(NULL), 0);
    ssmc_tape_free(NULL);
    ssmc_tape_free(tape);
    ssmc_model_free(m2);
    ssmc_model_free(m);
    ssmc_ctx_free(ctx);
}

/* ---- long sequences ---- */

/* The gradients of a small Mamba-2 over one sequence of 65,536 steps on dev
 * (f64 tensors); false when dev is not in this build. */
static bool long_grads(ssmc_device dev, double **gr, size_t *counts, int *nt)
{
    size_t len;
    char *src = test_slurp("examples/mamba2.ssm", &len);
    ssmc_ctx *ctx = ssmc_ctx_new();
    ssmc_dim dims[] = {{"H", 2}, {"P", 2}, {"N", 2}};
    ssmc_options o = {.device = dev, .dims = dims, .ndims = 3, .threads = 2};
    ssmc_model *m = NULL;
    if (ssmc_compile(ctx, "mamba2.ssm", src, len, &o, &m) != SSMC_OK) {
        assert_int_not_equal(dev, SSMC_DEVICE_INTERP);
        ssmc_ctx_free(ctx);
        free(src);
        return false;
    }
    const int64_t B = 1, T = 65536;
    int n = ssmc_model_num_tensors(m);
    ssmc_arg args[16], douts[16], grads[16];
    int nd = 0, ng = 0, na = 0;
    double *bufs[16], *cot[16];
    uint64_t rng = 11;
    for (int i = 0; i < n; i++) {
        ssmc_tensor_info ti;
        ssmc_model_tensor(m, i, &ti);
        size_t c = ti.role == SSMC_PARAM ? 1 : (size_t)B;
        if (ti.per_step) c *= (size_t)T;
        for (int j = 0; j < ti.rank; j++) c *= (size_t)ti.shape[j];
        counts[i] = c;
        bufs[i] = calloc(c, sizeof(double));
        cot[i] = calloc(c, sizeof(double));
        gr[i] = calloc(c, sizeof(double));
        for (size_t k = 0; k < c; k++) {
            bufs[i][k] = uniform_pm1(&rng);
            cot[i][k] = uniform_pm1(&rng);
            gr[i][k] = NAN;
        }
        if (ti.role == SSMC_INPUT || ti.role == SSMC_PARAM) args[na++] = (ssmc_arg){ti.name, SSMC_F64, bufs[i], 0};
        if (ti.role == SSMC_OUTPUT || ti.role == SSMC_STATE) douts[nd++] = (ssmc_arg){ti.name, SSMC_F64, cot[i], 0};
        if (ti.role != SSMC_OUTPUT) grads[ng++] = (ssmc_arg){ti.name, SSMC_F64, gr[i], 0};
    }
    ssmc_tape *tape = NULL;
    assert_int_equal(ssmc_forward_train(m, B, T, args, na, &tape), SSMC_OK);
    if (ssmc_backward(m, tape, args, na, douts, nd, grads, ng) != SSMC_OK) fail_msg("%s", ssmc_ctx_error(ctx));
    ssmc_grad_info info;
    assert_int_equal(ssmc_grad_info_of(m, T, &info), SSMC_OK);
    assert_int_equal(info.chunk, 256);
    assert_int_equal(ssmc_tape_bytes(tape), 256 * info.state_bytes);
    ssmc_tape_free(tape);
    for (int i = 0; i < n; i++) {
        ssmc_tensor_info ti;
        ssmc_model_tensor(m, i, &ti);
        if (ti.role == SSMC_OUTPUT) continue;
        double amax = 0;
        for (size_t e = 0; e < counts[i]; e++) {
            if (!isfinite(gr[i][e])) fail_msg("grad %s[%zu] = %g", ti.name, e, gr[i][e]);
            amax = fmax(amax, fabs(gr[i][e]));
        }
        assert_true(amax > 0);
    }
    for (int i = 0; i < n; i++) {
        free(bufs[i]);
        free(cot[i]);
    }
    *nt = n;
    ssmc_model_free(m);
    ssmc_ctx_free(ctx);
    free(src);
    return true;
}

static void test_long_sequence(void **state)
{
    (void)state;
    double *gi[16], *gc[16];
    size_t counts[16];
    int n = 0;
    long_grads(SSMC_DEVICE_INTERP, gi, counts, &n);
    if (long_grads(SSMC_DEVICE_CPU, gc, counts, &n)) {
        /* f32 kernels and checkpoints over 65,536 steps: the params' sums over every step agree to 1e-4 */
        for (int i = 0; i < n; i++) {
            double md = 0, mr = 0;
            for (size_t e = 0; e < counts[i]; e++) {
                if (isnan(gi[i][e])) continue; /* outputs: no gradient */
                md = fmax(md, fabs(gc[i][e] - gi[i][e]));
                mr = fmax(mr, fabs(gi[i][e]));
            }
            if (getenv("SSMC_TEST_VERBOSE")) fprintf(stderr, "long cpu tensor %d rel %.2e\n", i, mr > 0 ? md / mr : md);
            if (!(md <= 1e-4 * mr)) fail_msg("T = 65536: cpu gradient of tensor %d is %g from the interpreter's (max %g)", i, md, mr);
            free(gc[i]);
        }
    }
    for (int i = 0; i < n; i++) free(gi[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_examples),
        cmocka_unit_test(test_cpu_against_interp),
        cmocka_unit_test(test_elementwise),
        cmocka_unit_test(test_functions),
        cmocka_unit_test(test_reduction_sum),
        cmocka_unit_test(test_nested_reduction),
        cmocka_unit_test(test_grouped),
        cmocka_unit_test(test_time_offsets),
        cmocka_unit_test(test_convolution),
        cmocka_unit_test(test_lets),
        cmocka_unit_test(test_old_and_new),
        cmocka_unit_test(test_coupled),
        cmocka_unit_test(test_delta_rule),
        cmocka_unit_test(test_never_updated_state),
        cmocka_unit_test(test_gru),
        cmocka_unit_test(test_select_and_compare),
        cmocka_unit_test(test_trig_erf),
        cmocka_unit_test(test_index_as_number),
        cmocka_unit_test(test_nonsmooth),
        cmocka_unit_test(test_reduction_max),
        cmocka_unit_test(test_constant_index),
        cmocka_unit_test(test_diagonal_read),
        cmocka_unit_test(test_mlstm),
        cmocka_unit_test(test_lagged_lets),
        cmocka_unit_test(test_init),
        cmocka_unit_test(test_chunks),
        cmocka_unit_test(test_memory_bound),
        cmocka_unit_test(test_api_errors),
        cmocka_unit_test(test_long_sequence),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
