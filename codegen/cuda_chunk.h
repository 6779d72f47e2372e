/* cuda_chunk.h: CUDA C of a chunked core on tensor cores (codegen/cuda_chunk.c).
 *
 * A core runs as two kernels of one source, launched in order on one stream:
 * pass 0, the state pass (sequential over the chunks: each chunk's start state,
 * the final state, and with the delta rule each step's U), then pass 1, the
 * readouts (every chunk at once, from its start state). Both
 * (cuda_chunk_kernel_name of the pass) take (long long B, long long T, float *ws
 * (a workspace of cuda_chunk_ws_bytes for the run's batch and T: what pass 0
 * leaves for pass 1), then every readout's q, k, v, g, beta as const float * —
 * g and beta may be NULL when the core has no decay or no delta rule —, every
 * readout's R as float *, and the state (its dtype's storage type; NULL: start
 * at zero, drop the final value)), over the canonical tensors of plan.h, and
 * are launched over cuda_chunk_launch's grid, block and dynamic shared memory
 * for their pass. */
#ifndef SSMC_CODEGEN_CUDA_CHUNK_H
#define SSMC_CODEGEN_CUDA_CHUNK_H

#include "codegen/cuda.h"

/* Whether this version renders the core (false with a diagnostic when d). */
bool cuda_chunk_supported(const plan_chunk_core *c, diag *d);
/* The value tile of a block. */
int cuda_chunk_vt(const plan_chunk_core *c);
#define CUDA_CHUNK_PASSES 2
cuda_launch cuda_chunk_launch(const plan_chunk_core *c, int64_t batch, int64_t T, int pass);
size_t cuda_chunk_ws_bytes(const plan_chunk_core *c, int64_t batch, int64_t T);
void cuda_chunk_kernel_name(strbuf *out, const ir_model *m, const plan_chunk_core *c, int pass);

/* The device helpers every chunked kernel opens with: the bf16 type ck_b16, its rounding
 * ck_bf16 (to nearest even, NaN kept) and ck_mma (mma.sync m16n8k16 bf16 -> f32). */
void cuda_chunk_preamble(strbuf *out);
/* The source: m is the source model (names), has_state whether a state is
 * given (its dtype then). */
ssmc_status cuda_chunk_emit(strbuf *out, const ir_model *m, const plan_chunk_core *c, bool has_state,
                            ssmc_dtype state_dtype, diag *d);
/* The state pass alone, as a device function ck_states(B, T, ws, k, v, g, beta, state) over an f32 state that
 * it leaves as it is, with the macros and helpers of the source above (the backward's first pass). */
ssmc_status cuda_chunk_emit_states(strbuf *out, const ir_model *m, const plan_chunk_core *c, diag *d);

/* The core's backward (codegen/cuda_chunk_bwd.c): cuda_chunk_bwd_passes
 * kernels of one source, launched in order on one stream (pass 0 .. passes - 1:
 * three for a decay none or per head without the delta rule, the chunks'
 * start states, their end states' cotangents, every chunk's gradients; else
 * one); each (cuda_chunk_bwd_kernel_name of its pass) takes (long long B, long long T, float *ws (its
 * workspace, cuda_chunk_bwd_ws_bytes for the run's batch and T), then every
 * readout's q, k, v, g (NULL without a decay), beta (NULL without the delta
 * rule), every readout's dR, the state before the first step (f32, the
 * state's layout; NULL: zero), dstate (in: the cotangent of h(T), NULL: zero;
 * out: the gradient of the initial state, NULL: dropped), every readout's dq,
 * dk, dv, dg, dbeta, dw (NULL where the operand is absent; with the delta
 * rule the whole gradient along k = w is in dk, dw is zero)), f32 canonical
 * tensors, over cuda_chunk_bwd_launch's grid. */
bool cuda_chunk_bwd_supported(const plan_chunk_core *c, diag *d);
#define CUDA_CHUNK_BWD_MAX_PASSES 3
int cuda_chunk_bwd_passes(const plan_chunk_core *c);
size_t cuda_chunk_bwd_ws_bytes(const plan_chunk_core *c, int64_t batch, int64_t T);
cuda_launch cuda_chunk_bwd_launch(const plan_chunk_core *c, int64_t batch, int64_t T, int pass);
void cuda_chunk_bwd_kernel_name(strbuf *out, const ir_model *m, const plan_chunk_core *c, int pass);
ssmc_status cuda_chunk_bwd_emit(strbuf *out, const ir_model *m, const plan_chunk_core *c, diag *d);

#endif
