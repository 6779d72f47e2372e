/* cpu_chunk.c: the core of the chunked algorithm on the CPU (plan.h,
 * plan_chunk_core), forward and backward, in C, over f32 canonical tensors,
 * one (sequence, head) per work item of the thread pool. Per chunk of C steps,
 * with b the cumulative log-decay inside the chunk (b_t = g_0 + ... + g_t, per
 * head or per key) and H the state at the chunk's start:
 *   delta rule: U = (I + L)^-1 (V - diag(beta) (exp(b) * W) H), L[t][s] =
 *               beta_t (w_t . w_s) exp(b_t - b_s) for s < t (the UT transform,
 *               solved by forward substitution); else U = V;
 *   readout:    R_t = exp(b_t) (H^T q_t) + sum_{s<=t} exp(b_t - b_s) (q_t . k_s) U_s
 *               (S(t-1): exp(b_{t-1}) and s < t);
 *   state:      H <- exp(b_last) H + sum_s exp(b_last - b_s) k_s U_s^T.
 * The U of the delta rule is written with k (the readouts, the state) and w
 * (L and the correction): passes/chunk.c proves them one vector.
 *
 * The backward is the reverse of those three steps, chunk by chunk from the
 * last, the cotangent dH of the chunk's end state carried to its start (the
 * reverse chunk-state scan; dH of the first chunk's start is the gradient of
 * the initial state). The chunk start states are recomputed first from the
 * run's initial state (the driver runs the backward a segment of chunks at a
 * time from its checkpoints, driver/grad_chunked.c). Through the substitution:
 * dRHS = (I + L)^-T dU, solved by back substitution with the transposed
 * system, and dL[t][s] = -dRHS_t . U_s; through the cumulative log-decays: the
 * gradient of every b_t, then dg as its reverse cumulative sum.
 *
 * Every exponent, forward and backward, is b_t - b_s with s <= t, or b_t, or
 * b_last - b_s: <= 0 where the decays are <= 1 (log-decays <= 0); no product
 * of raw decays, no division by one. With a decay per key the exponents are
 * per key (b_t[i] - b_s[i]) and the delta rule is not chunked (passes/chunk.c
 * refuses it). Accumulation in f64 for the carried H and dH and the dot
 * products, f32 for the chunk's matrices and the operands' gradients. This is
 * the CPU's reference of the chunked numerics (tests compare it with the
 * interpreter and with tests/unit/helpers/chunk_ref.c); the GPU renders the
 * same forward on tensor cores (codegen/cuda_chunk.c). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codegen/cpu_chunk.h"
#include "support/dtype.h"

/* The operands of a run, from a forward or a backward io. */
typedef struct ops {
    const float *q[PASS_MAX_READOUTS], *k, *v, *g, *beta, *w;
} ops;

/* One (sequence, head) of a run of T steps. */
typedef struct item {
    const plan_chunk_core *c;
    int64_t b, hh, T;
    bool per_key;
    int64_t sbase; /* the state's offset of this (sequence, head) */
} item;

static item item_of(const plan_chunk_core *c, int64_t T, int64_t index)
{
    item it = {c, index / c->nheads, index % c->nheads, T, c->decay == PASS_DECAY_KEY, 0};
    it.sbase = it.b * c->state_elems + c->head_off[it.hh];
    return it;
}

/* The row of step t (of the run) of a canonical tensor of width d. */
static const float *row(const item *it, const float *p, int d, int64_t t)
{
    return p + (size_t)((it->b * it->T + t) * it->c->nheads + it->hh) * (size_t)d;
}

static float *row_w(const item *it, float *p, int d, int64_t t)
{
    return p + (size_t)((it->b * it->T + t) * it->c->nheads + it->hh) * (size_t)d;
}

/* b at local step t, key i (one value per head unless per key) */
#define BC(t, i) (it->per_key ? bc[(t) * K + (i)] : bc[(t) * K])

/* The cumulative log-decay of the chunk's n steps from c0: bc[t][i] (or
 * bc[t][0]). */
static void chunk_decay(const item *it, const ops *o, int64_t c0, int n, float *bc)
{
    const plan_chunk_core *c = it->c;
    const int K = c->K;
    for (int t = 0; t < n; t++)
        for (int i = 0; i < (it->per_key ? K : 1); i++) {
            float g = c->decay == PASS_DECAY_NONE ? 0 : it->per_key ? row(it, o->g, K, c0 + t)[i] : row(it, o->g, 1, c0 + t)[0];
            bc[t * K + i] = (t ? bc[(t - 1) * K + i] : 0) + g;
        }
}

/* The pseudo-values U[t][V] of the chunk from its start state H, and for the
 * delta rule L[t][s] (s < t, rows of C). */
static void chunk_values(const item *it, const ops *o, int64_t c0, int n, const double *H, const float *bc, float *U,
                         float *L)
{
    const plan_chunk_core *c = it->c;
    const int K = c->K, V = c->V, C = c->C;
    for (int t = 0; t < n; t++) memcpy(U + (size_t)t * V, row(it, o->v, V, c0 + t), (size_t)V * sizeof *U);
    if (!c->delta) return;
    for (int t = 0; t < n; t++) {
        const float *wt = row(it, o->w, K, c0 + t);
        float beta = row(it, o->beta, 1, c0 + t)[0];
        /* U_t -= beta exp(b_t) H^T w_t */
        double e = exp(BC(t, 0));
        for (int x = 0; x < V; x++) {
            double acc = 0;
            for (int i = 0; i < K; i++) acc += (double)wt[i] * H[i * V + x];
            U[t * V + x] -= (float)(beta * e * acc);
        }
        for (int s = 0; s < t; s++) {
            const float *ws = row(it, o->w, K, c0 + s);
            double dot = 0;
            for (int i = 0; i < K; i++) dot += (double)wt[i] * ws[i];
            L[t * C + s] = (float)(beta * dot * exp(BC(t, 0) - BC(s, 0)));
        }
        /* forward substitution: U_t -= sum_{s<t} L[t][s] U_s (rows s already solved) */
        for (int s = 0; s < t; s++) {
            float l = L[t * C + s];
            for (int x = 0; x < V; x++) U[t * V + x] -= l * U[s * V + x];
        }
    }
}

/* H <- exp(b_last) H + sum_s exp(b_last - b_s) k_s U_s^T */
static void chunk_carry(const item *it, const ops *o, int64_t c0, int n, const float *bc, const float *U, double *H)
{
    const int K = it->c->K, V = it->c->V;
    for (int i = 0; i < K; i++) {
        double e = exp(BC(n - 1, i));
        for (int x = 0; x < V; x++) H[i * V + x] *= e;
    }
    for (int s = 0; s < n; s++) {
        const float *ks = row(it, o->k, K, c0 + s);
        for (int i = 0; i < K; i++) {
            double f = ks[i] * exp(BC(n - 1, i) - BC(s, i));
            for (int x = 0; x < V; x++) H[i * V + x] += f * U[s * V + x];
        }
    }
}

static void load_state(const item *it, const void *state, ssmc_dtype dt, double *H)
{
    const plan_chunk_core *c = it->c;
    for (int i = 0; i < c->K; i++)
        for (int v = 0; v < c->V; v++)
            H[i * c->V + v] = state ? dtype_get(state, dt, (size_t)(it->sbase + i * c->key_stride + v * c->value_stride)) : 0;
}

static void store_state(const item *it, void *state, ssmc_dtype dt, const double *H)
{
    const plan_chunk_core *c = it->c;
    for (int i = 0; i < c->K; i++)
        for (int v = 0; v < c->V; v++)
            dtype_set(state, dt, (size_t)(it->sbase + i * c->key_stride + v * c->value_stride), H[i * c->V + v]);
}

/* ---- forward ---- */

/* the work of one (sequence, head); scratch: cpu_chunk_scratch_bytes */
static void run_item(const plan_chunk_core *c, const chunk_core_io *io, int64_t T, int64_t index, void *buf)
{
    const int K = c->K, V = c->V, C = c->C;
    item it0 = item_of(c, T, index);
    const item *it = &it0;
    ops o = {.k = io->k, .v = io->v, .g = io->g, .beta = io->beta, .w = io->w};
    double *H = buf;                           /* [K][V] */
    float *U = (float *)(H + (size_t)K * V);   /* [C][V] */
    float *bc = U + (size_t)C * V;             /* [C][K] (or [C] of rows K apart) cumulative log-decay */
    float *L = bc + (size_t)C * K;             /* [C][C] */
    float *hv = L + (size_t)C * C;             /* [V] */
    load_state(it, io->state, io->state_dtype, H);
    for (int64_t c0 = 0; c0 < T; c0 += C) {
        int n = (int)(T - c0 < C ? T - c0 : C);
        chunk_decay(it, &o, c0, n, bc);
        chunk_values(it, &o, c0, n, H, bc, U, L);
        /* readouts */
        for (int r = 0; r < c->nreadouts; r++) {
            bool prev = c->prev[r];
            for (int t = 0; t < n; t++) {
                const float *q = row(it, io->q[r], K, c0 + t);
                float *R = row_w(it, io->r[r], V, c0 + t);
                int tb = prev ? t - 1 : t; /* the step whose state is read */
                for (int x = 0; x < V; x++) hv[x] = 0;
                for (int i = 0; i < K; i++) {
                    double e = tb >= 0 ? exp(BC(tb, i)) : 1.0;
                    float qi = (float)(q[i] * e);
                    for (int x = 0; x < V; x++) hv[x] += qi * (float)H[i * V + x];
                }
                for (int s = 0; s <= tb; s++) {
                    const float *ks = row(it, o.k, K, c0 + s);
                    double a = 0;
                    for (int i = 0; i < K; i++) a += (double)q[i] * ks[i] * exp(BC(tb, i) - BC(s, i));
                    for (int x = 0; x < V; x++) hv[x] += (float)a * U[s * V + x];
                }
                memcpy(R, hv, (size_t)V * sizeof *R);
            }
        }
        chunk_carry(it, &o, c0, n, bc, U, H);
    }
    if (io->state) store_state(it, io->state, io->state_dtype, H);
}

size_t cpu_chunk_scratch_bytes(const plan_chunk_core *c)
{
    size_t K = (size_t)c->K, V = (size_t)c->V, C = (size_t)c->C;
    return K * V * sizeof(double) + (C * V + C * K + C * C + V) * sizeof(float) + 64;
}

void cpu_chunk_run_items(const plan_chunk_core *c, const chunk_core_io *io, int64_t B, int64_t T, int64_t begin,
                         int64_t end, void *scratch)
{
    (void)B;
    for (int64_t it = begin; it < end; it++) run_item(c, io, T, it, scratch);
}

/* ---- backward ---- */

/* The scratch of one (sequence, head) for a run of T steps, in order. */
typedef struct bwd_scratch {
    double *Hs;   /* [nchunks][K][V] every chunk's start state */
    double *dH;   /* [K][V] the cotangent of the current chunk's end state */
    double *dH0;  /* [K][V] ... of its start state */
    double *db;   /* [C][K] the cotangent of b */
    float *U, *dU, *dRHS; /* [C][V] */
    float *bc;    /* [C][K] */
    float *L;     /* [C][C] */
    double *hk;   /* [K] */
} bwd_scratch;

static size_t bwd_layout(const plan_chunk_core *c, int64_t T, char *base, bwd_scratch *s)
{
    size_t K = (size_t)c->K, V = (size_t)c->V, C = (size_t)c->C, nch = (size_t)((T + c->C - 1) / c->C);
    size_t off = 0;
#define TAKE(field, type, n)                                                                                           \
    do {                                                                                                               \
        if (s) s->field = (type *)(base + off);                                                                        \
        off += ((n) * sizeof(type) + 63) / 64 * 64;                                                                    \
    } while (0)
    TAKE(Hs, double, nch * K * V);
    TAKE(dH, double, K * V);
    TAKE(dH0, double, K * V);
    TAKE(db, double, C * K);
    TAKE(U, float, C * V);
    TAKE(dU, float, C * V);
    TAKE(dRHS, float, C * V);
    TAKE(bc, float, C * K);
    TAKE(L, float, C * C);
    TAKE(hk, double, K);
#undef TAKE
    return off;
}

size_t cpu_chunk_backward_scratch_bytes(const plan_chunk_core *c, int64_t T) { return bwd_layout(c, T, NULL, NULL) + 64; }

/* The backward of one chunk (n steps from c0) from its start state H: the
 * operands' gradients of its steps written, dH (the cotangent of its end
 * state) replaced by that of its start. */
static void chunk_backward(const item *it, const ops *o, const chunk_core_grad_io *io, int64_t c0, int n,
                           const double *H, bwd_scratch *s)
{
    const plan_chunk_core *c = it->c;
    const int K = c->K, V = c->V, C = c->C;
    float *bc = s->bc, *U = s->U, *dU = s->dU, *L = s->L;
    double *dH = s->dH, *dH0 = s->dH0, *db = s->db, *hk = s->hk;
    chunk_decay(it, o, c0, n, bc);
    chunk_values(it, o, c0, n, H, bc, U, L);
    memset(dU, 0, (size_t)n * V * sizeof *dU);
    memset(db, 0, (size_t)n * K * sizeof *db);
    /* the operands' gradients of these steps start at zero */
    for (int t = 0; t < n; t++) {
        for (int r = 0; r < c->nreadouts; r++) memset(row_w(it, io->dq[r], K, c0 + t), 0, (size_t)K * sizeof(float));
        memset(row_w(it, io->dk, K, c0 + t), 0, (size_t)K * sizeof(float));
        if (c->delta) {
            memset(row_w(it, io->dw, K, c0 + t), 0, (size_t)K * sizeof(float));
            row_w(it, io->dbeta, 1, c0 + t)[0] = 0;
        }
    }
    int last = n - 1;
    /* the carry: H' = exp(b_last) H + sum_s exp(b_last - b_s) k_s U_s^T */
    for (int i = 0; i < K; i++) {
        double e = exp(BC(last, i)), acc = 0;
        for (int x = 0; x < V; x++) {
            dH0[i * V + x] = e * dH[i * V + x];
            acc += H[i * V + x] * dH[i * V + x];
        }
        db[last * K + i] += e * acc;
    }
    for (int s2 = 0; s2 < n; s2++) {
        const float *ks = row(it, o->k, K, c0 + s2);
        float *dks = row_w(it, io->dk, K, c0 + s2);
        for (int i = 0; i < K; i++) {
            double e = exp(BC(last, i) - BC(s2, i)), m = 0;
            for (int x = 0; x < V; x++) m += dH[i * V + x] * U[s2 * V + x];
            dks[i] += (float)(e * m);
            double tb = ks[i] * e * m;
            db[last * K + i] += tb;
            db[s2 * K + i] -= tb;
            double f = ks[i] * e;
            for (int x = 0; x < V; x++) dU[s2 * V + x] += (float)(f * dH[i * V + x]);
        }
    }
    /* the readouts: R_t = exp(b_tb) H^T q_t + sum_{s<=tb} A[t][s] U_s */
    for (int r = 0; r < c->nreadouts; r++) {
        bool prev = c->prev[r];
        for (int t = 0; t < n; t++) {
            const float *q = row(it, o->q[r], K, c0 + t), *dR = row(it, io->dr[r], V, c0 + t);
            float *dq = row_w(it, io->dq[r], K, c0 + t);
            int tb = prev ? t - 1 : t;
            for (int i = 0; i < K; i++) {
                double acc = 0;
                for (int x = 0; x < V; x++) acc += H[i * V + x] * dR[x];
                double e = tb >= 0 ? exp(BC(tb, i)) : 1.0;
                dq[i] += (float)(e * acc);
                if (tb >= 0) db[tb * K + i] += q[i] * e * acc;
                double qe = q[i] * e;
                for (int x = 0; x < V; x++) dH0[i * V + x] += qe * dR[x];
            }
            for (int s2 = 0; s2 <= tb; s2++) {
                const float *ks = row(it, o->k, K, c0 + s2);
                float *dks = row_w(it, io->dk, K, c0 + s2);
                double D = 0, A = 0;
                for (int x = 0; x < V; x++) D += (double)U[s2 * V + x] * dR[x];
                for (int i = 0; i < K; i++) {
                    double e = exp(BC(tb, i) - BC(s2, i));
                    A += (double)q[i] * ks[i] * e;
                    dq[i] += (float)(ks[i] * e * D);
                    dks[i] += (float)(q[i] * e * D);
                    double x = q[i] * ks[i] * e * D;
                    db[tb * K + i] += x;
                    db[s2 * K + i] -= x;
                }
                for (int x = 0; x < V; x++) dU[s2 * V + x] += (float)(A * dR[x]);
            }
        }
    }
    /* the pseudo-values: U = (I + L)^-1 (V - diag(beta) exp(b) W H) */
    float *dRHS = c->delta ? s->dRHS : dU;
    if (c->delta) {
        /* dRHS = (I + L)^-T dU: back substitution, the rows after t solved first */
        for (int t = n - 1; t >= 0; t--)
            for (int x = 0; x < V; x++) {
                double acc = dU[t * V + x];
                for (int s2 = t + 1; s2 < n; s2++) acc -= (double)L[s2 * C + t] * dRHS[s2 * V + x];
                dRHS[t * V + x] = (float)acc;
            }
        for (int t = 0; t < n; t++) {
            const float *wt = row(it, o->w, K, c0 + t);
            float *dwt = row_w(it, io->dw, K, c0 + t);
            float beta = row(it, o->beta, 1, c0 + t)[0];
            double dbeta = 0;
            /* L[t][s] = beta_t (w_t . w_s) exp(b_t - b_s), dL[t][s] = -dRHS_t . U_s */
            for (int s2 = 0; s2 < t; s2++) {
                const float *ws = row(it, o->w, K, c0 + s2);
                float *dws = row_w(it, io->dw, K, c0 + s2);
                double dL = 0, dot = 0;
                for (int x = 0; x < V; x++) dL -= (double)dRHS[t * V + x] * U[s2 * V + x];
                for (int i = 0; i < K; i++) dot += (double)wt[i] * ws[i];
                double e = exp(BC(t, 0) - BC(s2, 0)), f = dL * beta * e;
                dbeta += dL * dot * e;
                for (int i = 0; i < K; i++) {
                    dwt[i] += (float)(f * ws[i]);
                    dws[i] += (float)(f * wt[i]);
                }
                db[t * K] += dL * L[t * C + s2];
                db[s2 * K] -= dL * L[t * C + s2];
            }
            /* RHS_t = v_t - beta_t exp(b_t) H^T w_t */
            double e = exp(BC(t, 0)), wy = 0;
            for (int i = 0; i < K; i++) {
                double acc = 0;
                for (int x = 0; x < V; x++) acc += H[i * V + x] * dRHS[t * V + x];
                hk[i] = acc;
                wy += wt[i] * acc;
                dwt[i] -= (float)(beta * e * acc);
                double f = beta * e * wt[i];
                for (int x = 0; x < V; x++) dH0[i * V + x] -= f * dRHS[t * V + x];
            }
            dbeta -= e * wy;
            db[t * K] -= beta * e * wy;
            row_w(it, io->dbeta, 1, c0 + t)[0] = (float)dbeta;
        }
    }
    for (int t = 0; t < n; t++) memcpy(row_w(it, io->dv, V, c0 + t), dRHS + (size_t)t * V, (size_t)V * sizeof(float));
    /* b_t = g_0 + ... + g_t: dg_s = sum_{t >= s} db_t (one value per head: summed over the keys) */
    if (c->decay == PASS_DECAY_KEY)
        for (int i = 0; i < K; i++) {
            double acc = 0;
            for (int t = n - 1; t >= 0; t--) row_w(it, io->dg, K, c0 + t)[i] = (float)(acc += db[t * K + i]);
        }
    if (c->decay == PASS_DECAY_SCALAR) {
        double acc = 0;
        for (int t = n - 1; t >= 0; t--) {
            for (int i = 0; i < K; i++) acc += db[t * K + i];
            row_w(it, io->dg, 1, c0 + t)[0] = (float)acc;
        }
    }
    memcpy(dH, dH0, (size_t)K * V * sizeof *dH);
}

static void backward_item(const plan_chunk_core *c, const chunk_core_grad_io *io, int64_t T, int64_t index, void *buf)
{
    const int K = c->K, V = c->V, C = c->C;
    item it0 = item_of(c, T, index);
    const item *it = &it0;
    ops o = {.k = io->k, .v = io->v, .g = io->g, .beta = io->beta, .w = io->w};
    for (int r = 0; r < c->nreadouts; r++) o.q[r] = io->q[r];
    bwd_scratch s;
    bwd_layout(c, T, (char *)(((uintptr_t)buf + 63) / 64 * 64), &s);
    int64_t nch = (T + C - 1) / C;
    size_t kv = (size_t)K * V;
    /* the chunk start states, from the run's initial state */
    load_state(it, io->state, SSMC_F32, s.Hs);
    for (int64_t ch = 0; ch + 1 < nch; ch++) {
        double *H = s.Hs + (size_t)(ch + 1) * kv;
        memcpy(H, s.Hs + (size_t)ch * kv, kv * sizeof *H);
        chunk_decay(it, &o, ch * C, C, s.bc);
        chunk_values(it, &o, ch * C, C, H, s.bc, s.U, s.L);
        chunk_carry(it, &o, ch * C, C, s.bc, s.U, H);
    }
    /* the reverse chunk-state scan */
    load_state(it, io->dstate, SSMC_F32, s.dH);
    for (int64_t ch = nch - 1; ch >= 0; ch--) {
        int64_t c0 = ch * C;
        int n = (int)(T - c0 < C ? T - c0 : C);
        chunk_backward(it, &o, io, c0, n, s.Hs + (size_t)ch * kv, &s);
    }
    store_state(it, io->dstate, SSMC_F32, s.dH);
}

void cpu_chunk_backward_items(const plan_chunk_core *c, const chunk_core_grad_io *io, int64_t B, int64_t T,
                              int64_t begin, int64_t end, void *scratch)
{
    (void)B;
    for (int64_t it = begin; it < end; it++) backward_item(c, io, T, it, scratch);
}
