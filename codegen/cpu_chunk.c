/* cpu_chunk.c: the core of the chunked algorithm on the CPU (plan.h,
 * plan_chunk_core), in C, over f32 canonical tensors, one (sequence, head) per
 * work item of the thread pool. Per chunk of C steps, with b the cumulative
 * log-decay inside the chunk (b_t = g_0 + ... + g_t, per head or per key) and
 * H the state at the chunk's start:
 *   delta rule: U = (I + L)^-1 (V - diag(beta) (exp(b) * W) H), L[t][s] =
 *               beta_t (w_t . w_s) exp(b_t - b_s) for s < t (the UT transform,
 *               solved by forward substitution); else U = V;
 *   readout:    R_t = exp(b_t) (H^T q_t) + sum_{s<=t} exp(b_t - b_s) (q_t . k_s) U_s
 *               (S(t-1): exp(b_{t-1}) and s < t);
 *   state:      H <- exp(b_last) H + sum_s exp(b_last - b_s) k_s U_s^T.
 * Every exponent is <= 0 where the decays are <= 1 (log-decays <= 0): no
 * product of raw decays, no division by one. With a decay per key the
 * exponents are per key (b_t[i] - b_s[i]) and the delta rule is not chunked
 * (passes/chunk.c refuses it). Accumulation in f64 for the state's carry and
 * f32 elsewhere: the chunk's sums are short. This is the CPU's reference of the
 * chunked numerics (tests compare it with the interpreter); the GPU renders the
 * same algorithm on tensor cores (codegen/cuda_chunk.c). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "codegen/cpu_chunk.h"
#include "support/dtype.h"

typedef struct cpu_core_job {
    const plan_chunk_core *c;
    const chunk_core_io *io;
    int64_t B, T;
    ssmc_status st;
} cpu_core_job;

/* the work of one (sequence, head); scratch: (K * V) * 2 + C * (C + K + V + K) floats */
static void run_item(const cpu_core_job *j, int64_t item, float *buf)
{
    const plan_chunk_core *c = j->c;
    const chunk_core_io *io = j->io;
    const int K = c->K, V = c->V, C = c->C, NH = c->nheads;
    int64_t b = item / NH, hh = item % NH, T = j->T;
    double *H = (double *)buf;                   /* [K][V] */
    float *U = (float *)(H + (size_t)K * V);     /* [C][V] */
    float *bc = U + (size_t)C * V;               /* [C] or [C][K] cumulative log-decay */
    float *L = bc + (size_t)C * K;               /* [C][C] */
    float *hv = L + (size_t)C * C;               /* [V] */
    bool per_key = c->decay == PASS_DECAY_KEY;
    int64_t sbase = b * c->state_elems + c->head_off[hh];
    for (int i = 0; i < K; i++)
        for (int v = 0; v < V; v++)
            H[i * V + v] = io->state ? dtype_get(io->state, io->state_dtype, (size_t)(sbase + i * c->key_stride + v * c->value_stride)) : 0;
#define ROW(p, d, t) ((p) + ((size_t)((b * T + (t)) * NH + hh)) * (d))
    for (int64_t c0 = 0; c0 < T; c0 += C) {
        int n = (int)(T - c0 < C ? T - c0 : C);
        /* cumulative log-decay */
        for (int t = 0; t < n; t++)
            for (int i = 0; i < (per_key ? K : 1); i++) {
                float g = c->decay == PASS_DECAY_NONE ? 0 : per_key ? ROW(io->g, K, c0 + t)[i] : ROW(io->g, 1, c0 + t)[0];
                bc[t * K + i] = (t ? bc[(t - 1) * K + i] : 0) + g;
            }
#define BC(t, i) (per_key ? bc[(t) * K + (i)] : bc[(t) * K])
        /* pseudo-values */
        for (int t = 0; t < n; t++) {
            const float *v = ROW(io->v, V, c0 + t);
            for (int x = 0; x < V; x++) U[t * V + x] = v[x];
        }
        if (c->delta) {
            for (int t = 0; t < n; t++) {
                const float *wt = ROW(io->w, K, c0 + t);
                float beta = ROW(io->beta, 1, c0 + t)[0];
                /* U_t -= beta exp(b_t) H^T w_t */
                double e = exp(BC(t, 0));
                for (int x = 0; x < V; x++) {
                    double acc = 0;
                    for (int i = 0; i < K; i++) acc += (double)wt[i] * H[i * V + x];
                    U[t * V + x] -= (float)(beta * e * acc);
                }
                for (int s = 0; s < t; s++) {
                    const float *ws = ROW(io->w, K, c0 + s);
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
        /* readouts */
        for (int r = 0; r < c->nreadouts; r++) {
            bool prev = c->prev[r];
            for (int t = 0; t < n; t++) {
                const float *q = ROW(io->q[r], K, c0 + t);
                float *R = ROW(io->r[r], V, c0 + t);
                int tb = prev ? t - 1 : t; /* the step whose state is read */
                for (int x = 0; x < V; x++) hv[x] = 0;
                for (int i = 0; i < K; i++) {
                    double e = tb >= 0 ? exp(BC(tb, i)) : 1.0;
                    float qi = (float)(q[i] * e);
                    for (int x = 0; x < V; x++) hv[x] += qi * (float)H[i * V + x];
                }
                for (int s = 0; s <= tb; s++) {
                    const float *ks = ROW(io->k, K, c0 + s);
                    double a = 0;
                    for (int i = 0; i < K; i++) a += (double)q[i] * ks[i] * exp(BC(tb, i) - BC(s, i));
                    for (int x = 0; x < V; x++) hv[x] += (float)a * U[s * V + x];
                }
                memcpy(R, hv, (size_t)V * sizeof *R);
            }
        }
        /* the state at the chunk's end */
        for (int i = 0; i < K; i++) {
            double e = exp(BC(n - 1, i));
            for (int x = 0; x < V; x++) H[i * V + x] *= e;
        }
        for (int s = 0; s < n; s++) {
            const float *ks = ROW(io->k, K, c0 + s);
            for (int i = 0; i < K; i++) {
                double f = ks[i] * exp(BC(n - 1, i) - BC(s, i));
                for (int x = 0; x < V; x++) H[i * V + x] += f * U[s * V + x];
            }
        }
#undef BC
    }
#undef ROW
    if (io->state)
        for (int i = 0; i < K; i++)
            for (int v = 0; v < V; v++)
                dtype_set(io->state, io->state_dtype, (size_t)(sbase + i * c->key_stride + v * c->value_stride), H[i * V + v]);
}

size_t cpu_chunk_scratch_bytes(const plan_chunk_core *c)
{
    size_t K = (size_t)c->K, V = (size_t)c->V, C = (size_t)c->C;
    return K * V * sizeof(double) + (C * V + C * K + C * C + V) * sizeof(float) + 64;
}

void cpu_chunk_run_items(const plan_chunk_core *c, const chunk_core_io *io, int64_t B, int64_t T, int64_t begin,
                         int64_t end, void *scratch)
{
    cpu_core_job j = {c, io, B, T, SSMC_OK};
    for (int64_t it = begin; it < end; it++) run_item(&j, it, scratch);
}
