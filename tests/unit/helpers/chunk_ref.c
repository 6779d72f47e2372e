/* chunk_ref.c: see chunk_ref.h. */
#include "chunk_ref.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void chunk_ref_core(const plan_chunk_core *c, double *const *pdata, double *const *edata, const double *s0, double *s1,
                    int64_t B, int64_t T)
{
    const int K = c->K, V = c->V, nh = c->nheads;
    const pass_chunk_ops *op = &c->ops;
    double *h = calloc((size_t)K * V, sizeof *h), *old = calloc((size_t)K * V, sizeof *old);
    double *pred = calloc((size_t)V, sizeof *pred);
    if (!h || !old || !pred) abort();
    for (int64_t b = 0; b < B; b++)
        for (int hh = 0; hh < nh; hh++) {
            int64_t sbase = b * c->state_elems + c->head_off[hh];
            for (int i = 0; i < K; i++)
                for (int j = 0; j < V; j++) h[i * V + j] = s0 ? s0[sbase + i * c->key_stride + j * c->value_stride] : 0;
            for (int64_t t = 0; t < T; t++) {
                int64_t row = (b * T + t) * nh + hh;
                const double *k = pdata[op->k] + row * K, *v = pdata[op->v] + row * V;
                memcpy(old, h, (size_t)K * V * sizeof *h);
                if (c->delta) {
                    const double *w = pdata[op->w] + row * K;
                    double beta = pdata[op->beta][row];
                    for (int j = 0; j < V; j++) {
                        pred[j] = 0;
                        for (int i = 0; i < K; i++) pred[j] += w[i] * h[i * V + j];
                    }
                    for (int i = 0; i < K; i++)
                        for (int j = 0; j < V; j++) h[i * V + j] -= beta * w[i] * pred[j];
                }
                for (int i = 0; i < K; i++) {
                    double a = c->decay == PASS_DECAY_NONE ? 1
                               : c->decay == PASS_DECAY_KEY ? exp(pdata[op->g][row * K + i])
                                                            : exp(pdata[op->g][row]);
                    for (int j = 0; j < V; j++) h[i * V + j] = a * h[i * V + j] + k[i] * v[j];
                }
                for (int r = 0; r < c->nreadouts; r++) {
                    const double *q = pdata[op->q[r]] + row * K, *src = c->prev[r] ? old : h;
                    double *R = edata[op->r[r]] + row * V;
                    for (int j = 0; j < V; j++) {
                        R[j] = 0;
                        for (int i = 0; i < K; i++) R[j] += q[i] * src[i * V + j];
                    }
                }
            }
            for (int i = 0; s1 && i < K; i++)
                for (int j = 0; j < V; j++) s1[sbase + i * c->key_stride + j * c->value_stride] = h[i * V + j];
        }
    free(h);
    free(old);
    free(pred);
}

void chunk_ref_core_backward(const plan_chunk_core *c, double *const *pdata, const double *s0, double *const *dedata,
                             const double *ds1, double *const *dpdata, double *ds0, int64_t B, int64_t T)
{
    const int K = c->K, V = c->V, nh = c->nheads;
    const size_t kv = (size_t)K * V;
    const pass_chunk_ops *op = &c->ops;
    double *hs = calloc((size_t)(T + 1) * kv, sizeof *hs); /* hs[t]: h(t), hs[0] the initial state */
    double *dh = calloc(kv, sizeof *dh), *dm = calloc(kv, sizeof *dm), *m = calloc(kv, sizeof *m);
    double *p = calloc((size_t)V, sizeof *p), *dp = calloc((size_t)V, sizeof *dp);
    if (!hs || !dh || !dm || !m || !p || !dp) abort();
    for (int64_t b = 0; b < B; b++)
        for (int hh = 0; hh < nh; hh++) {
            int64_t sbase = b * c->state_elems + c->head_off[hh];
#define AT(i, j) (sbase + (i) * c->key_stride + (j) * c->value_stride)
            for (int i = 0; i < K; i++)
                for (int j = 0; j < V; j++) hs[i * V + j] = s0 ? s0[AT(i, j)] : 0;
            /* the forward, every state kept */
            for (int64_t t = 0; t < T; t++) {
                int64_t row = (b * T + t) * nh + hh;
                const double *k = pdata[op->k] + row * K, *v = pdata[op->v] + row * V;
                const double *h0 = hs + (size_t)t * kv;
                double *h1 = hs + (size_t)(t + 1) * kv;
                memcpy(h1, h0, kv * sizeof *h1);
                if (c->delta) {
                    const double *w = pdata[op->w] + row * K;
                    double beta = pdata[op->beta][row];
                    for (int j = 0; j < V; j++) {
                        p[j] = 0;
                        for (int i = 0; i < K; i++) p[j] += w[i] * h0[i * V + j];
                    }
                    for (int i = 0; i < K; i++)
                        for (int j = 0; j < V; j++) h1[i * V + j] -= beta * w[i] * p[j];
                }
                for (int i = 0; i < K; i++) {
                    double a = c->decay == PASS_DECAY_NONE ? 1
                               : c->decay == PASS_DECAY_KEY ? exp(pdata[op->g][row * K + i])
                                                            : exp(pdata[op->g][row]);
                    for (int j = 0; j < V; j++) h1[i * V + j] = a * h1[i * V + j] + k[i] * v[j];
                }
            }
            for (int i = 0; i < K; i++)
                for (int j = 0; j < V; j++) dh[i * V + j] = ds1 ? ds1[AT(i, j)] : 0;
            /* the reverse: dh is the cotangent of h(t + 1), then of h(t) */
            for (int64_t t = T - 1; t >= 0; t--) {
                int64_t row = (b * T + t) * nh + hh;
                const double *k = pdata[op->k] + row * K, *v = pdata[op->v] + row * V;
                const double *h0 = hs + (size_t)t * kv, *h1 = hs + (size_t)(t + 1) * kv;
                /* readouts of h(t + 1) add to its cotangent; those of h(t) wait (dm) */
                memset(dm, 0, kv * sizeof *dm);
                for (int r = 0; r < c->nreadouts; r++) {
                    const double *q = pdata[op->q[r]] + row * K, *dR = dedata[op->r[r]] + row * V;
                    const double *src = c->prev[r] ? h0 : h1;
                    double *dq = dpdata[op->q[r]] + row * K, *to = c->prev[r] ? dm : dh;
                    for (int i = 0; i < K; i++) {
                        dq[i] = 0;
                        for (int j = 0; j < V; j++) {
                            dq[i] += src[i * V + j] * dR[j];
                            to[i * V + j] += q[i] * dR[j];
                        }
                    }
                }
                /* h1 = a (m) + k v^T, m = h0 - beta w (w^T h0) */
                double *dk = dpdata[op->k] + row * K, *dv = dpdata[op->v] + row * V;
                for (int i = 0; i < K; i++) {
                    dk[i] = 0;
                    for (int j = 0; j < V; j++) dk[i] += dh[i * V + j] * v[j];
                }
                for (int j = 0; j < V; j++) {
                    dv[j] = 0;
                    for (int i = 0; i < K; i++) dv[j] += dh[i * V + j] * k[i];
                }
                const double *w = c->delta ? pdata[op->w] + row * K : NULL;
                double beta = c->delta ? pdata[op->beta][row] : 0;
                if (c->delta)
                    for (int j = 0; j < V; j++) {
                        p[j] = 0;
                        for (int i = 0; i < K; i++) p[j] += w[i] * h0[i * V + j];
                    }
                for (int i = 0; i < K; i++)
                    for (int j = 0; j < V; j++) m[i * V + j] = h0[i * V + j] - (c->delta ? beta * w[i] * p[j] : 0);
                if (c->decay == PASS_DECAY_SCALAR) dpdata[op->g][row] = 0;
                for (int i = 0; i < K; i++) {
                    double a = c->decay == PASS_DECAY_NONE ? 1
                               : c->decay == PASS_DECAY_KEY ? exp(pdata[op->g][row * K + i])
                                                            : exp(pdata[op->g][row]);
                    double dga = 0;
                    for (int j = 0; j < V; j++) {
                        dga += dh[i * V + j] * a * m[i * V + j];
                        dh[i * V + j] *= a; /* now the cotangent of m */
                    }
                    if (c->decay == PASS_DECAY_KEY) dpdata[op->g][row * K + i] = dga;
                    if (c->decay == PASS_DECAY_SCALAR) dpdata[op->g][row] += dga;
                }
                if (c->delta) {
                    double *dw = dpdata[op->w] + row * K, dbeta = 0;
                    for (int j = 0; j < V; j++) {
                        dp[j] = 0;
                        for (int i = 0; i < K; i++) dp[j] -= beta * w[i] * dh[i * V + j];
                    }
                    for (int i = 0; i < K; i++) {
                        dw[i] = 0;
                        for (int j = 0; j < V; j++) {
                            dbeta -= w[i] * p[j] * dh[i * V + j];
                            dw[i] += -beta * p[j] * dh[i * V + j] + h0[i * V + j] * dp[j];
                        }
                    }
                    dpdata[op->beta][row] = dbeta;
                    for (int i = 0; i < K; i++)
                        for (int j = 0; j < V; j++) dh[i * V + j] += w[i] * dp[j];
                }
                for (size_t e = 0; e < kv; e++) dh[e] += dm[e];
            }
            for (int i = 0; ds0 && i < K; i++)
                for (int j = 0; j < V; j++) ds0[AT(i, j)] = dh[i * V + j];
#undef AT
        }
    free(hs);
    free(dh);
    free(dm);
    free(m);
    free(p);
    free(dp);
}
