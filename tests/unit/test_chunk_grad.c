/* test_chunk_grad.c: the backward of the chunked algorithm (docs/chunked.md,
 * "Gradients").
 *
 * - The reference core's backward (tests/unit/helpers/chunk_ref.c, reverse
 *   mode of the canonical recurrence in f64) against central finite
 *   differences of the reference core's forward, along a random direction
 *   over every operand and the initial state, for every kind of core (no,
 *   per-head and per-key decay; the delta rule with and without a decay;
 *   readouts of S(t) and S(t-1)).
 * - The CPU core's backward (codegen/cpu_chunk.c, chunked, f32) against the
 *   reference's on the same cores, T not a multiple of C, from a state and
 *   from zero, with and without a final-state cotangent.
 * - Whole models on the CPU with --algo=chunked (driver/grad_chunked.c)
 *   against the interpreter's recurrent gradients (which test_grad checks
 *   against finite differences): every example the chunked algorithm takes
 *   and models made for the test, at odd sizes, every input, param and
 *   initial state, initial states given and not, cotangents of the final
 *   states given; every chunk's state kept (grad_chunk 1) and recomputed.
 * - T = 65,536 at tiny dims: finite, and equal to the recurrent CPU backward.
 * - The tape: what ssmc_grad_info_of says for T from 1 to 10^6, and what a
 *   tape holds. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "codegen/cpu_chunk.h"
#include "driver/pipeline.h"
#include "helpers/chunk_ref.h"
#include "helpers/files.h"
#include "ssmc.h"
#include "support/support.h"

static uint64_t rng = 0x2545f4914f6cdd1dull;
static double uniform(void) { return uniform_pm1(&rng); }

/* ---- cores made from models ---- */

/* Models whose cores cover every kind; odd K and V, several heads. */
static const char *const core_models[] = {
    /* no decay, readouts of S(t) and S(t-1) */
    "model a { dim H = 2, K = 3, V = 5; input q[T,H,K], k[T,H,K], v[T,H,V]; state S[H,K,V]; output y[T,H,V], z[T,H,V];"
    " z[t,h,j] = sum(i: q[t,h,i] * S[h,i,j]);"
    " S[h,i,j] = S[h,i,j] + k[t,h,i] * v[t,h,j]; y[t,h,j] = sum(i: q[t,h,i] * S[h,i,j]); }",
    /* a decay per head, the value axis first */
    "model b { dim H = 3, K = 5, V = 3; input q[T,H,K], k[T,H,K], v[T,H,V], g[T,H]; state S[H,V,K]; output y[T,H,V];"
    " S[h,j,i] = exp(-softplus(g[t,h])) * S[h,j,i] + k[t,h,i] * v[t,h,j]; y[t,h,j] = sum(i: q[t,h,i] * S[h,j,i]); }",
    /* a decay per key, both readouts */
    "model c { dim H = 2, K = 5, V = 3; input q[T,H,K], k[T,H,K], v[T,H,V], g[T,H,K]; state S[H,K,V];"
    " output y[T,H,V], z[T,H,V]; z[t,h,j] = sum(i: q[t,h,i] * S[h,i,j]);"
    " S[h,i,j] = exp(-softplus(g[t,h,i])) * S[h,i,j] + k[t,h,i] * v[t,h,j]; y[t,h,j] = sum(i: k[t,h,i] * S[h,i,j]); }",
    /* the delta rule, no decay */
    "model d { dim H = 2, K = 3, V = 5; input q[T,H,K], k[T,H,K], v[T,H,V], b[T,H]; state S[H,K,V]; output y[T,H,V];"
    " let p[t,h,j] = sum(m: k[t,h,m] * S[h,m,j]);"
    " S[h,i,j] = S[h,i,j] - sigmoid(b[t,h]) * k[t,h,i] * p[t,h,j] + sigmoid(b[t,h]) * k[t,h,i] * v[t,h,j];"
    " y[t,h,j] = sum(i: q[t,h,i] * S[h,i,j]); }",
    /* the gated delta rule, a readout of S(t-1) too */
    "model e { dim H = 3, K = 3, V = 3; input q[T,H,K], k[T,H,K], v[T,H,V], a[T,H], b[T,H]; state S[H,K,V];"
    " output y[T,H,V], z[T,H,V]; z[t,h,j] = sum(i: q[t,h,i] * S[h,i,j]);"
    " let p[t,h,j] = sum(m: k[t,h,m] * S[h,m,j]);"
    " S[h,i,j] = sigmoid(a[t,h]) * (S[h,i,j] - sigmoid(b[t,h]) * k[t,h,i] * p[t,h,j]) + k[t,h,i] * v[t,h,j];"
    " y[t,h,j] = sum(i: q[t,h,i] * S[h,i,j]); }",
};
#define NCORE_MODELS (sizeof core_models / sizeof *core_models)

typedef struct made_core {
    arena a;
    diag d;
    pass_plan *plan;
    const plan_chunk_core *c;
} made_core;

static void core_open(made_core *mc, const char *src, int C)
{
    memset(mc, 0, sizeof *mc);
    arena_init(&mc->a);
    ssmc_options o = {0};
    pipeline pl = {.a = &mc->a, .d = &mc->d, .o = &o};
    if (pipeline_run(&pl, "core.ssm", src, strlen(src), PIPE_ANALYSIS) != SSMC_OK) fail_msg("%s", sb_cstr(&mc->d.text));
    assert_true(pl.chunks.all);
    plan_target tg = plan_target_cpu(1);
    if (plan_make_chunked(&mc->a, pl.ir, &pl.an, &pl.chunks, C, &tg, &mc->plan, &mc->d) != SSMC_OK)
        fail_msg("%s", sb_cstr(&mc->d.text));
    assert_int_equal(mc->plan->chunked->ncores, 1);
    mc->c = &mc->plan->chunked->cores[0];
}

static void core_close(made_core *mc)
{
    arena_free(&mc->a);
    diag_free(&mc->d);
}

/* The operand tensors of a core (f64, by prologue or epilogue id), sized for
 * B sequences of T steps, and the state. */
typedef struct core_data {
    const plan_chunk_core *c;
    int64_t B, T;
    int npro, nepi;
    double **p, **e;  /* operands by prologue id, readouts by epilogue id */
    size_t *pn, *en;  /* their element counts */
    double *s0;
    size_t sn;
} core_data;

static void data_init(core_data *cd, const made_core *mc, int64_t B, int64_t T)
{
    const plan_chunk_core *c = mc->c;
    const ir_model *pro = mc->plan->chunked->parts.prologue, *epi = mc->plan->chunked->parts.epilogue;
    memset(cd, 0, sizeof *cd);
    cd->c = c;
    cd->B = B;
    cd->T = T;
    cd->npro = (int)pro->ntensors;
    cd->nepi = (int)epi->ntensors;
    cd->p = calloc((size_t)cd->npro, sizeof *cd->p);
    cd->e = calloc((size_t)cd->nepi, sizeof *cd->e);
    cd->pn = calloc((size_t)cd->npro, sizeof *cd->pn);
    cd->en = calloc((size_t)cd->nepi, sizeof *cd->en);
    const pass_chunk_ops *op = &c->ops;
    int ids[PASS_MAX_READOUTS + 5], n = 0;
    for (int r = 0; r < c->nreadouts; r++) ids[n++] = op->q[r];
    ids[n++] = op->k;
    ids[n++] = op->v;
    if (op->g >= 0) ids[n++] = op->g;
    if (op->beta >= 0) ids[n++] = op->beta;
    if (op->w >= 0) ids[n++] = op->w;
    for (int i = 0; i < n; i++) {
        cd->pn[ids[i]] = (size_t)(B * T * ir_tensor_elems(pro, &pro->tensors[ids[i]]));
        cd->p[ids[i]] = calloc(cd->pn[ids[i]] + 1, sizeof(double));
    }
    for (int r = 0; r < c->nreadouts; r++) {
        cd->en[op->r[r]] = (size_t)(B * T * ir_tensor_elems(epi, &epi->tensors[op->r[r]]));
        cd->e[op->r[r]] = calloc(cd->en[op->r[r]] + 1, sizeof(double));
    }
    cd->sn = (size_t)(B * c->state_elems);
    cd->s0 = calloc(cd->sn + 1, sizeof(double));
}

static void data_free(core_data *cd)
{
    for (int i = 0; i < cd->npro; i++) free(cd->p[i]);
    for (int i = 0; i < cd->nepi; i++) free(cd->e[i]);
    free(cd->p);
    free(cd->e);
    free(cd->pn);
    free(cd->en);
    free(cd->s0);
}

/* Random operands as a model would make them: log-decays <= 0, beta in
 * (0, 1), keys of norm <= 1 (a stable delta rule); k and w equal (as
 * passes/chunk.c proves them) when `same_kw`. */
static void data_draw(core_data *cd, bool same_kw, bool state)
{
    const pass_chunk_ops *op = &cd->c->ops;
    for (int i = 0; i < cd->npro; i++)
        for (size_t k = 0; cd->p[i] && k < cd->pn[i]; k++) {
            double u = uniform();
            cd->p[i][k] = i == op->g ? -0.05 - 0.6 * fabs(u) : i == op->beta ? 0.5 + 0.45 * u : u;
        }
    if (op->w >= 0) {
        int K = cd->c->K;
        for (size_t r = 0; r < cd->pn[op->k] / (size_t)K; r++) {
            double n2 = 0;
            for (int i = 0; i < K; i++) n2 += cd->p[op->k][r * K + i] * cd->p[op->k][r * K + i];
            for (int i = 0; i < K; i++) {
                cd->p[op->k][r * K + i] /= sqrt(n2) + 0.1;
                if (same_kw) cd->p[op->w][r * K + i] = cd->p[op->k][r * K + i];
            }
        }
    }
    for (size_t k = 0; k < cd->sn; k++) cd->s0[k] = state ? uniform() : 0;
}

/* L = sum_r <dR_r, R_r> + <ds1, h(T)> by the reference forward. */
static double ref_loss(const core_data *cd, double *const *dR, const double *ds1, double *s1)
{
    chunk_ref_core(cd->c, cd->p, cd->e, cd->s0, s1, cd->B, cd->T);
    double L = 0;
    for (int r = 0; r < cd->c->nreadouts; r++) {
        int id = cd->c->ops.r[r];
        for (size_t k = 0; k < cd->en[id]; k++) L += dR[id][k] * cd->e[id][k];
    }
    for (size_t k = 0; ds1 && k < cd->sn; k++) L += ds1[k] * s1[k];
    return L;
}

static double **alloc_like(double **src, const size_t *n, int count)
{
    double **out = calloc((size_t)count, sizeof *out);
    for (int i = 0; i < count; i++)
        if (src[i]) out[i] = calloc(n[i] + 1, sizeof(double));
    return out;
}

static void free_set(double **s, int count)
{
    for (int i = 0; i < count; i++) free(s[i]);
    free(s);
}

/* The reference backward's directional derivative against finite differences. */
static void test_ref_backward_fd(void **state)
{
    (void)state;
    for (size_t mi = 0; mi < NCORE_MODELS; mi++) {
        made_core mc;
        core_open(&mc, core_models[mi], 4);
        core_data cd;
        data_init(&cd, &mc, 2, 7);
        data_draw(&cd, false, true);
        double **dR = alloc_like(cd.e, cd.en, cd.nepi), **dp = alloc_like(cd.p, cd.pn, cd.npro);
        double **dir = alloc_like(cd.p, cd.pn, cd.npro), **base = alloc_like(cd.p, cd.pn, cd.npro);
        double *ds1 = calloc(cd.sn + 1, sizeof *ds1), *ds0 = calloc(cd.sn + 1, sizeof *ds0);
        double *s1 = calloc(cd.sn + 1, sizeof *s1), *sdir = calloc(cd.sn + 1, sizeof *sdir), *sbase = calloc(cd.sn + 1, sizeof *sbase);
        for (int i = 0; i < cd.nepi; i++)
            for (size_t k = 0; dR[i] && k < cd.en[i]; k++) dR[i][k] = uniform();
        for (size_t k = 0; k < cd.sn; k++) {
            ds1[k] = uniform();
            sdir[k] = uniform();
            sbase[k] = cd.s0[k];
        }
        for (int i = 0; i < cd.npro; i++)
            for (size_t k = 0; dir[i] && k < cd.pn[i]; k++) {
                dir[i][k] = uniform();
                base[i][k] = cd.p[i][k];
            }
        chunk_ref_core_backward(cd.c, cd.p, cd.s0, dR, ds1, dp, ds0, cd.B, cd.T);
        double an = 0, scale = 0;
        for (int i = 0; i < cd.npro; i++)
            for (size_t k = 0; dp[i] && k < cd.pn[i]; k++) {
                an += dp[i][k] * dir[i][k];
                scale += fabs(dp[i][k] * dir[i][k]);
            }
        for (size_t k = 0; k < cd.sn; k++) {
            an += ds0[k] * sdir[k];
            scale += fabs(ds0[k] * sdir[k]);
        }
        /* central differences at h and h/2, Richardson-extrapolated */
        double D[2];
        for (int hi = 0; hi < 2; hi++) {
            double h = hi ? 5e-4 : 1e-3, L[2];
            for (int sg = 0; sg < 2; sg++) {
                double e = sg ? -h : h;
                for (int i = 0; i < cd.npro; i++)
                    for (size_t k = 0; dir[i] && k < cd.pn[i]; k++) cd.p[i][k] = base[i][k] + e * dir[i][k];
                for (size_t k = 0; k < cd.sn; k++) cd.s0[k] = sbase[k] + e * sdir[k];
                L[sg] = ref_loss(&cd, dR, ds1, s1);
            }
            D[hi] = (L[0] - L[1]) / (2 * h);
        }
        double fd = (4 * D[1] - D[0]) / 3;
        if (!(fabs(fd - an) <= 1e-7 * scale))
            fail_msg("core model %zu: the reference backward's <grad, v> = %.12g, finite differences %.12g", mi, an, fd);
        free_set(dR, cd.nepi);
        free_set(dp, cd.npro);
        free_set(dir, cd.npro);
        free_set(base, cd.npro);
        free(ds1);
        free(ds0);
        free(s1);
        free(sdir);
        free(sbase);
        data_free(&cd);
        core_close(&mc);
    }
}

/* ---- the CPU core against the reference ---- */

static float *to_f32(const double *x, size_t n)
{
    float *f = calloc(n + 1, sizeof *f);
    for (size_t k = 0; x && k < n; k++) f[k] = (float)x[k];
    return f;
}

/* The CPU backward of one core from (state, ds1) given or not, every gradient
 * against the reference (k and w: their sum); returns the worst relative error. */
static double cpu_vs_ref(const made_core *mc, int64_t B, int64_t T, bool state, bool final_cot)
{
    core_data cd;
    data_init(&cd, mc, B, T);
    data_draw(&cd, true, state);
    const plan_chunk_core *c = cd.c;
    const pass_chunk_ops *op = &c->ops;
    double **dR = alloc_like(cd.e, cd.en, cd.nepi), **dp = alloc_like(cd.p, cd.pn, cd.npro);
    double *ds1 = calloc(cd.sn + 1, sizeof *ds1), *ds0 = calloc(cd.sn + 1, sizeof *ds0);
    for (int i = 0; i < cd.nepi; i++)
        for (size_t k = 0; dR[i] && k < cd.en[i]; k++) dR[i][k] = (float)uniform();
    for (size_t k = 0; final_cot && k < cd.sn; k++) ds1[k] = (float)uniform();
    /* values exact in f32 */
    for (int i = 0; i < cd.npro; i++)
        for (size_t k = 0; cd.p[i] && k < cd.pn[i]; k++) cd.p[i][k] = (float)cd.p[i][k];
    for (size_t k = 0; k < cd.sn; k++) cd.s0[k] = (float)cd.s0[k];
    chunk_ref_core_backward(c, cd.p, cd.s0, dR, ds1, dp, ds0, B, T);

    assert_true(cd.npro > 0 && cd.nepi > 0);
    float **fp = calloc((size_t)cd.npro, sizeof *fp), **fdp = calloc((size_t)cd.npro, sizeof *fdp);
    float **fdr = calloc((size_t)cd.nepi, sizeof *fdr);
    for (int i = 0; i < cd.npro; i++)
        if (cd.p[i]) {
            fp[i] = to_f32(cd.p[i], cd.pn[i]);
            fdp[i] = to_f32(NULL, cd.pn[i]);
            for (size_t k = 0; k < cd.pn[i]; k++) fdp[i][k] = NAN; /* poisoned: every element is written */
        }
    for (int i = 0; i < cd.nepi; i++)
        if (cd.e[i]) fdr[i] = to_f32(dR[i], cd.en[i]);
    float *fs0 = to_f32(cd.s0, cd.sn), *fds = to_f32(ds1, cd.sn);
    chunk_core_grad_io io = {.k = fp[op->k], .v = fp[op->v], .g = op->g >= 0 ? fp[op->g] : NULL,
                             .beta = op->beta >= 0 ? fp[op->beta] : NULL, .w = op->w >= 0 ? fp[op->w] : NULL,
                             .dk = fdp[op->k], .dv = fdp[op->v], .dg = op->g >= 0 ? fdp[op->g] : NULL,
                             .dbeta = op->beta >= 0 ? fdp[op->beta] : NULL, .dw = op->w >= 0 ? fdp[op->w] : NULL,
                             .state = state ? fs0 : NULL, .dstate = fds};
    for (int r = 0; r < c->nreadouts; r++) {
        io.q[r] = fp[op->q[r]];
        io.dq[r] = fdp[op->q[r]];
        io.dr[r] = fdr[op->r[r]];
    }
    void *scratch = aligned_alloc(64, (cpu_chunk_backward_scratch_bytes(c, T) + 63) / 64 * 64);
    cpu_chunk_backward_items(c, &io, B, T, 0, B * c->nheads, scratch);
    free(scratch);

    double worst = 0;
    int ids[PASS_MAX_READOUTS + 5], n = 0;
    for (int r = 0; r < c->nreadouts; r++) ids[n++] = op->q[r];
    ids[n++] = op->k;
    ids[n++] = op->v;
    if (op->g >= 0) ids[n++] = op->g;
    if (op->beta >= 0) ids[n++] = op->beta;
    for (int j = 0; j <= n; j++) {
        bool st = j == n;
        int id = st ? -1 : ids[j];
        size_t cnt = st ? cd.sn : cd.pn[id];
        double md = 0, mr = 0;
        for (size_t k = 0; k < cnt; k++) {
            double ref = st ? ds0[k] : dp[id][k], got = st ? fds[k] : fdp[id][k];
            if (id == op->k && op->w >= 0) { /* one vector: the sum */
                ref += dp[op->w][k];
                got += fdp[op->w][k];
            }
            if (!isfinite(got)) return INFINITY;
            md = fmax(md, fabs(got - ref));
            mr = fmax(mr, fabs(ref));
        }
        double e = mr > 0 ? md / mr : md;
        if (getenv("SSMC_TEST_VERBOSE")) fprintf(stderr, "  grad %d: rel %.2e (max %.2e)\n", j, e, mr);
        worst = fmax(worst, e);
    }
    for (int i = 0; i < cd.npro; i++) {
        free(fp[i]);
        free(fdp[i]);
    }
    for (int i = 0; i < cd.nepi; i++) free(fdr[i]);
    free(fp);
    free(fdp);
    free(fdr);
    free(fs0);
    free(fds);
    free_set(dR, cd.nepi);
    free_set(dp, cd.npro);
    free(ds1);
    free(ds0);
    data_free(&cd);
    return worst;
}

static void test_cpu_core_backward(void **state)
{
    (void)state;
    static const int Cs[] = {4, 16};
    static const int64_t Ts[] = {13, 1, 4, 37};
    for (size_t mi = 0; mi < NCORE_MODELS; mi++)
        for (int ci = 0; ci < 2; ci++)
            for (int ti = 0; ti < 4; ti++)
                for (int v = 0; v < 4; v++) {
                    made_core mc;
                    core_open(&mc, core_models[mi], Cs[ci]);
                    double e = cpu_vs_ref(&mc, 2, Ts[ti], v & 1, v & 2);
                    core_close(&mc);
                    if (!(e <= 2e-5))
                        fail_msg("core model %zu, C %d, T %lld, state %d, final cotangent %d: the CPU core's backward "
                                 "is %g from the reference's",
                                 mi, Cs[ci], (long long)Ts[ti], v & 1, (v & 2) != 0, e);
                }
}

/* ---- whole models: the CPU's chunked gradients against the interpreter's ---- */

#define MAXT 32

typedef struct run {
    ssmc_ctx *ctx;
    ssmc_model *m;
    int n;
    ssmc_tensor_info info[MAXT];
    size_t count[MAXT];
} run;

static bool run_open(run *r, ssmc_device dev, ssmc_algo algo, const char *file, const char *src, size_t len,
                     const ssmc_dim *dims, int ndims, int64_t B, int64_t T, int chunk, int64_t grad_chunk)
{
    memset(r, 0, sizeof *r);
    r->ctx = ssmc_ctx_new();
    ssmc_options o = {.device = dev, .algo = algo, .dims = dims, .ndims = ndims, .chunk = chunk, .grad_chunk = grad_chunk,
                      .threads = 2};
    if (ssmc_compile(r->ctx, file, src, len, &o, &r->m) != SSMC_OK) return false;
    r->n = ssmc_model_num_tensors(r->m);
    assert_true(r->n <= MAXT);
    for (int i = 0; i < r->n; i++) {
        ssmc_model_tensor(r->m, i, &r->info[i]);
        size_t c = r->info[i].role == SSMC_PARAM ? 1 : (size_t)B;
        if (r->info[i].per_step) c *= (size_t)T;
        for (int j = 0; j < r->info[i].rank; j++) c *= (size_t)r->info[i].shape[j];
        r->count[i] = c;
    }
    return true;
}

static void run_close(run *r)
{
    ssmc_model_free(r->m);
    ssmc_ctx_free(r->ctx);
}

/* The forward's outputs and final states (out[i], every tensor) and the
 * gradients (grad[i], every input, param and state) of one run, from values
 * drawn from `seed` (f32-exact), initial states given when `states`,
 * final-state cotangents when `final_cot`. */
static void grads_of(run *r, int64_t B, int64_t T, uint64_t seed, bool states, bool final_cot, double **out,
                     double **grad)
{
    uint64_t g = seed;
    float *buf[MAXT], *cot[MAXT], *gr[MAXT];
    ssmc_arg args[MAXT], vals[MAXT], douts[MAXT], grads[MAXT];
    int na = 0, nv = 0, nd = 0, ng = 0;
    for (int i = 0; i < r->n; i++) {
        size_t c = r->count[i];
        ssmc_role role = r->info[i].role;
        buf[i] = calloc(c + 1, sizeof(float));
        cot[i] = calloc(c + 1, sizeof(float));
        gr[i] = calloc(c + 1, sizeof(float));
        for (size_t k = 0; k < c; k++) {
            buf[i][k] = role == SSMC_OUTPUT ? NAN : (float)(0.5 * uniform_pm1(&g));
            cot[i][k] = (float)uniform_pm1(&g);
            gr[i][k] = NAN;
        }
        /* a state not given still receives its final value (FINAL_ONLY) */
        args[na++] = (ssmc_arg){r->info[i].name, SSMC_F32, buf[i], role == SSMC_STATE && !states ? SSMC_ARG_FINAL_ONLY : 0};
        if (role == SSMC_INPUT || role == SSMC_PARAM) vals[nv++] = args[na - 1];
        if (role == SSMC_OUTPUT || (role == SSMC_STATE && final_cot)) douts[nd++] = (ssmc_arg){r->info[i].name, SSMC_F32, cot[i], 0};
        if (role != SSMC_OUTPUT) grads[ng++] = (ssmc_arg){r->info[i].name, SSMC_F32, gr[i], 0};
    }
    ssmc_tape *tape = NULL;
    if (ssmc_forward_train(r->m, B, T, args, na, &tape) != SSMC_OK ||
        ssmc_backward(r->m, tape, vals, nv, douts, nd, grads, ng) != SSMC_OK)
        fail_msg("%s", ssmc_ctx_error(r->ctx));
    ssmc_tape_free(tape);
    for (int i = 0; i < r->n; i++) {
        out[i] = calloc(r->count[i] + 1, sizeof(double));
        grad[i] = calloc(r->count[i] + 1, sizeof(double));
        for (size_t k = 0; k < r->count[i]; k++) {
            out[i][k] = buf[i][k];
            grad[i][k] = gr[i][k];
        }
        free(buf[i]);
        free(cot[i]);
        free(gr[i]);
    }
}

static double rel(const double *got, const double *ref, size_t n)
{
    double md = 0, mr = 0;
    for (size_t k = 0; k < n; k++) {
        if (!isfinite(got[k])) return INFINITY;
        md = fmax(md, fabs(got[k] - ref[k]));
        mr = fmax(mr, fabs(ref[k]));
    }
    return mr > 0 ? md / mr : md;
}

/* One model: the CPU's chunked gradients against the interpreter's (and its
 * forward's results); false when the chunked algorithm does not take it. */
static bool check_against_interp(const char *file, const char *src, size_t len, const ssmc_dim *dims, int ndims,
                                 int64_t B, int64_t T, int chunk, int64_t grad_chunk, bool states, bool final_cot)
{
    run rc, ri;
    if (!run_open(&rc, SSMC_DEVICE_CPU, SSMC_ALGO_CHUNKED, file, src, len, dims, ndims, B, T, chunk, grad_chunk)) {
        if (!strstr(ssmc_ctx_error(rc.ctx), "no chunk form")) fail_msg("%s: %s", file, ssmc_ctx_error(rc.ctx));
        run_close(&rc);
        return false;
    }
    if (!run_open(&ri, SSMC_DEVICE_INTERP, SSMC_ALGO_AUTO, file, src, len, dims, ndims, B, T, 0, 0))
        fail_msg("%s: %s", file, ssmc_ctx_error(ri.ctx));
    double *oc[MAXT], *gc[MAXT], *oi[MAXT], *gi[MAXT];
    grads_of(&rc, B, T, 7, states, final_cot, oc, gc);
    grads_of(&ri, B, T, 7, states, final_cot, oi, gi);
    for (int i = 0; i < ri.n; i++) {
        ssmc_role role = ri.info[i].role;
        double eo = role == SSMC_OUTPUT || role == SSMC_STATE ? rel(oc[i], oi[i], ri.count[i]) : 0;
        double eg = role != SSMC_OUTPUT ? rel(gc[i], gi[i], ri.count[i]) : 0;
        if (getenv("SSMC_TEST_VERBOSE"))
            fprintf(stderr, "%-34s %-8s value %.2e grad %.2e\n", file, ri.info[i].name, eo, eg);
        if (!(eo <= 2e-5)) fail_msg("%s: the chunked training forward's %s is %g from the interpreter's", file, ri.info[i].name, eo);
        if (!(eg <= 2e-5))
            fail_msg("%s (T %lld, C %d, grad_chunk %lld, states %d, final cotangents %d): the chunked gradient of %s is "
                     "%g from the interpreter's",
                     file, (long long)T, chunk, (long long)grad_chunk, states, final_cot, ri.info[i].name, eg);
    }
    for (int i = 0; i < ri.n; i++) {
        free(oc[i]);
        free(gc[i]);
        free(oi[i]);
        free(gi[i]);
    }
    run_close(&rc);
    run_close(&ri);
    return true;
}

static bool have_cpu(void)
{
    static const char probe_src[] = "model p { input x[T]; output y[T]; y[t] = x[t]; }";
    ssmc_ctx *probe = ssmc_ctx_new();
    ssmc_model *pm = NULL;
    ssmc_options po = {.device = SSMC_DEVICE_CPU};
    bool cpu = ssmc_compile(probe, "p", probe_src, sizeof probe_src - 1, &po, &pm) == SSMC_OK;
    ssmc_model_free(pm);
    ssmc_ctx_free(probe);
    if (!cpu) fprintf(stderr, "SKIP: no CPU backend in this build\n");
    return cpu;
}

/* Odd dims for an example: every dim at most 3 (the model's own where it
 * then does not check: a group H = G * R), read from its IR. */
static int odd_dims(const char *file, const char *src, size_t len, ssmc_dim *dims, char names[][64])
{
    int n = 0;
    ssmc_ctx *ctx = ssmc_ctx_new();
    char *ir = NULL;
    if (ssmc_emit(ctx, file, src, len, NULL, SSMC_EMIT_IR, &ir) != SSMC_OK) fail_msg("%s: %s", file, ssmc_ctx_error(ctx));
    for (const char *p = strstr(ir, "\n  dim "); p && n < 8; p = strstr(p + 1, "\n  dim ")) {
        long long v;
        if (sscanf(p, "\n  dim %63s = %lld", names[n], &v) != 2) break;
        dims[n] = (ssmc_dim){names[n], v < 3 ? v : 3};
        n++;
    }
    free(ir);
    ssmc_model *m = NULL;
    ssmc_options o = {.device = SSMC_DEVICE_INTERP, .dims = dims, .ndims = n};
    if (ssmc_compile(ctx, file, src, len, &o, &m) != SSMC_OK) n = 0;
    ssmc_model_free(m);
    ssmc_ctx_free(ctx);
    return n;
}

static void test_examples(void **state)
{
    (void)state;
    if (!have_cpu()) return;
    char names[64][128];
    int nex = test_list_examples(names, 64), chunked = 0;
    for (int i = 0; i < nex; i++) {
        size_t len;
        char *src = test_slurp(names[i], &len);
        ssmc_dim dims[8];
        char dn[8][64];
        int nd = odd_dims(names[i], src, len, dims, dn);
        /* T = 37 in chunks of 4 (the last one short), segments of 2 chunks:
         * initial states and final cotangents given; neither */
        if (check_against_interp(names[i], src, len, dims, nd, 2, 37, 4, 0, true, true)) {
            chunked++;
            check_against_interp(names[i], src, len, dims, nd, 2, 37, 4, 0, false, false);
        }
        free(src);
    }
    assert_true(chunked >= 19); /* every example but lstm, mamba3, mom, retnet and ttt_linear */
}

/* Models made for the test: reads at t - 1 in the prologue and in the
 * epilogue (history states in both parts), two states in one model, a
 * nonlinear epilogue, params in both parts, several heads; every chunk's
 * state kept (grad_chunk 1), segments of one chunk and of several. */
static void test_made(void **state)
{
    (void)state;
    if (!have_cpu()) return;
    static const char *const srcs[] = {
        /* token shift in the prologue and a lagged skip in the epilogue; params in both */
        "model s { dim H = 3, K = 3, V = 5; input q[T,H,K], k[T,H,K], v[T,H,V], g[T,H]; param mix[H], D[H];"
        " state S[H,K,V]; output y[T,H,V];"
        " let kk[t,h,i] = k[t,h,i] + mix[h] * k[t-1,h,i];"
        " S[h,i,j] = exp(-softplus(g[t,h] + mix[h])) * S[h,i,j] + kk[t,h,i] * v[t,h,j];"
        " y[t,h,j] = tanh(sum(i: q[t,h,i] * S[h,i,j])) + D[h] * v[t-1,h,j]; }",
        /* two states, a normalised readout (linear attention's), both readout kinds */
        "model n { dim H = 2, K = 3, V = 3; input q[T,H,K], k[T,H,K], v[T,H,V]; state S[H,K,V], z[H,K];"
        " output y[T,H,V], p[T,H,V];"
        " p[t,h,j] = sum(i: q[t,h,i] * S[h,i,j]);"
        " S[h,i,j] = 0.9 * S[h,i,j] + exp(k[t,h,i]) * v[t,h,j]; z[h,i] = z[h,i] + exp(k[t,h,i]);"
        " let num[t,h,j] = sum(i: exp(q[t,h,i]) * S[h,i,j]); let den[t,h] = sum(i: exp(q[t,h,i]) * z[h,i]);"
        " y[t,h,j] = num[t,h,j] / den[t,h]; }",
    };
    for (size_t i = 0; i < sizeof srcs / sizeof *srcs; i++)
        for (int v = 0; v < 4; v++) {
            bool states = v & 1, cot = v & 2;
            assert_true(check_against_interp("made.ssm", srcs[i], strlen(srcs[i]), NULL, 0, 3, 29, 4, 0, states, cot));
            assert_true(check_against_interp("made.ssm", srcs[i], strlen(srcs[i]), NULL, 0, 2, 29, 4, 1, states, cot));
            assert_true(check_against_interp("made.ssm", srcs[i], strlen(srcs[i]), NULL, 0, 1, 29, 8, 100, states, cot));
        }
    for (size_t mi = 0; mi < NCORE_MODELS; mi++) {
        assert_true(check_against_interp("core.ssm", core_models[mi], strlen(core_models[mi]), NULL, 0, 2, 23, 4, 0, true, true));
        assert_true(check_against_interp("core.ssm", core_models[mi], strlen(core_models[mi]), NULL, 0, 2, 23, 16, 1, false, true));
    }
}

/* ---- long sequences ---- */

static void test_long_sequence(void **state)
{
    (void)state;
    if (!have_cpu()) return;
    static const char *const files[] = {"examples/gated_deltanet.ssm", "examples/gla.ssm", "examples/mamba2.ssm"};
    static const ssmc_dim dims[] = {{"H", 1}, {"K", 2}, {"V", 2}, {"P", 2}, {"N", 2}};
    const int64_t T = 65536;
    for (size_t f = 0; f < 3; f++) {
        size_t len;
        char *src = test_slurp(files[f], &len);
        ssmc_dim d[3] = {dims[0], f == 2 ? dims[3] : dims[1], f == 2 ? dims[4] : dims[2]};
        run rc, rr;
        if (!run_open(&rc, SSMC_DEVICE_CPU, SSMC_ALGO_CHUNKED, files[f], src, len, d, 3, 1, T, 0, 0) ||
            !run_open(&rr, SSMC_DEVICE_CPU, SSMC_ALGO_RECURRENT, files[f], src, len, d, 3, 1, T, 0, 0))
            fail_msg("%s: %s", files[f], ssmc_ctx_error(rc.ctx));
        ssmc_grad_info info;
        assert_int_equal(ssmc_grad_info_of(rc.m, T, &info), SSMC_OK);
        assert_int_equal(info.chunk, 32 * 64); /* sqrt(1024 chunks of 64) chunks a segment */
        assert_int_equal(info.checkpoints, 32);
        double *oc[MAXT], *gc[MAXT], *orr[MAXT], *gr[MAXT];
        grads_of(&rc, 1, T, 3, true, true, oc, gc);
        grads_of(&rr, 1, T, 3, true, true, orr, gr);
        for (int i = 0; i < rc.n; i++) {
            if (rc.info[i].role == SSMC_OUTPUT) continue;
            double e = rel(gc[i], gr[i], rc.count[i]);
            if (getenv("SSMC_TEST_VERBOSE")) fprintf(stderr, "%s %s: %.2e\n", files[f], rc.info[i].name, e);
            if (!(e <= 1e-3)) fail_msg("%s at T = %lld: the chunked gradient of %s is %g from the recurrent one", files[f], (long long)T, rc.info[i].name, e);
        }
        for (int i = 0; i < rc.n; i++) {
            free(oc[i]);
            free(gc[i]);
            free(orr[i]);
            free(gr[i]);
        }
        run_close(&rc);
        run_close(&rr);
        free(src);
    }
}

/* ---- the tape ---- */

static void test_tape(void **state)
{
    (void)state;
    if (!have_cpu()) return;
    /* GLA at H = 2, K = 3, V = 5: its one state is 30 floats a sequence; the
     * prologue and epilogue read nothing at t - k, so that is the checkpoint */
    size_t len;
    char *src = test_slurp("examples/gla.ssm", &len);
    ssmc_dim d[3] = {{"H", 2}, {"K", 3}, {"V", 5}};
    for (int store = 0; store < 2; store++) {
        run r;
        if (!run_open(&r, SSMC_DEVICE_CPU, SSMC_ALGO_CHUNKED, "gla.ssm", src, len, d, 3, 1, 1, 8, store ? 1 : 0))
            fail_msg("%s", ssmc_ctx_error(r.ctx));
        for (int64_t T = 1; T <= 1000000; T = T < 100 ? T + 1 : T * 3 / 2) {
            ssmc_grad_info info;
            assert_int_equal(ssmc_grad_info_of(r.m, T, &info), SSMC_OK);
            int64_t nch = (T + 7) / 8, sq = (int64_t)ceil(sqrt((double)nch));
            assert_int_equal(info.state_bytes, 30 * sizeof(float));
            assert_int_equal(info.chunk % 8, 0);
            assert_int_equal(info.checkpoints, (T + info.chunk - 1) / info.chunk);
            assert_int_equal(info.tape_bytes, (size_t)info.checkpoints * info.state_bytes);
            if (store) { /* every chunk's state kept */
                assert_int_equal(info.checkpoints, nch);
            } else { /* sqrt(T / C) states, never T / C: segments of sqrt(T / C) chunks */
                assert_int_equal(info.chunk, sq * 8);
                assert_true(info.checkpoints <= sq);
            }
        }
        /* a real tape holds what the plan says, for every sequence */
        for (int64_t T = 5; T <= 200; T += 39) {
            run rt;
            assert_true(run_open(&rt, SSMC_DEVICE_CPU, SSMC_ALGO_CHUNKED, "gla.ssm", src, len, d, 3, 3, T, 8, store ? 1 : 0));
            ssmc_grad_info info;
            assert_int_equal(ssmc_grad_info_of(rt.m, T, &info), SSMC_OK);
            float *bufs[MAXT];
            ssmc_arg args[MAXT];
            for (int i = 0; i < rt.n; i++) {
                bufs[i] = calloc(rt.count[i] + 1, sizeof(float));
                for (size_t k = 0; k < rt.count[i]; k++) bufs[i][k] = 0.25f;
                args[i] = (ssmc_arg){rt.info[i].name, SSMC_F32, bufs[i], 0};
            }
            ssmc_tape *tape = NULL;
            assert_int_equal(ssmc_forward_train(rt.m, 3, T, args, rt.n, &tape), SSMC_OK);
            assert_int_equal(ssmc_tape_bytes(tape), 3 * info.tape_bytes);
            /* the device entry points take device pointers: refused on the cpu, said so */
            ssmc_tape *dt = NULL;
            assert_int_equal(ssmc_forward_train_device(rt.m, 3, T, args, rt.n, &dt, NULL), SSMC_ERR_UNSUPPORTED);
            assert_null(dt);
            assert_non_null(strstr(ssmc_ctx_error(rt.ctx), "ssmc_forward_train_device takes device pointers"));
            assert_int_equal(ssmc_backward_device(rt.m, tape, args, rt.n, NULL, 0, NULL, 0, NULL), SSMC_ERR_UNSUPPORTED);
            assert_non_null(strstr(ssmc_ctx_error(rt.ctx), "needs a model compiled for the cuda device"));
            ssmc_tape_free(tape);
            for (int i = 0; i < rt.n; i++) free(bufs[i]);
            run_close(&rt);
        }
        run_close(&r);
    }
    free(src);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ref_backward_fd),
        cmocka_unit_test(test_cpu_core_backward),
        cmocka_unit_test(test_examples),
        cmocka_unit_test(test_made),
        cmocka_unit_test(test_long_sequence),
        cmocka_unit_test(test_tape),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
