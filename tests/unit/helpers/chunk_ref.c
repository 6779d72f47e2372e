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
