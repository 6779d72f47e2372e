/* chunk_ref.h: the chunked core's reference (tests): the canonical recurrence
 * of passes/plan.h's plan_chunk_core, step by step in f64,
 *     h(t) = exp(g_t) (h(t-1) - beta_t w_t (w_t^T h(t-1))) + k_t v_t^T,
 *     R_r(t) = h(t)^T q_r(t) (h(t-1) for a readout of S(t-1)),
 * over canonical tensors in f64 ([B, T, nheads, D]) indexed by the prologue's
 * and the epilogue's tensor ids, the state s0 (NULL: zero) / s1 (NULL: dropped)
 * in the state tensor's layout. */
#ifndef SSMC_TEST_CHUNK_REF_H
#define SSMC_TEST_CHUNK_REF_H

#include "passes/plan.h"

void chunk_ref_core(const plan_chunk_core *c, double *const *pdata, double *const *edata, const double *s0, double *s1,
                    int64_t B, int64_t T);

/* Its backward, by reverse-mode differentiation of that recurrence step by
 * step (every state kept): for L = sum_r <dR_r, R_r> + <ds1, h(T)> with dR
 * in dedata (by the epilogue's readout ids) and ds1 (NULL: zero), writes the
 * gradient of every operand into dpdata (by the prologue's ids; k and w
 * apart, as independent operands) and of the initial state into ds0 (NULL:
 * dropped). */
void chunk_ref_core_backward(const plan_chunk_core *c, double *const *pdata, const double *s0, double *const *dedata,
                             const double *ds1, double *const *dpdata, double *ds0, int64_t B, int64_t T);

#endif
