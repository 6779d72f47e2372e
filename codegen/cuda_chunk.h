/* cuda_chunk.h: CUDA C of a chunked core on tensor cores (codegen/cuda_chunk.c).
 *
 * The kernel (cuda_chunk_kernel_name) takes (long long B, long long T, float *ws
 * (unused), then every readout's q, k, v, g, beta as const float * — g and
 * beta may be NULL when the core has no decay or no delta rule —, every
 * readout's R as float *, and the state (its dtype's storage type; NULL: start
 * at zero, drop the final value)), over the canonical tensors of plan.h. It is
 * launched over cuda_chunk_launch's grid, block and dynamic shared memory. */
#ifndef SSMC_CODEGEN_CUDA_CHUNK_H
#define SSMC_CODEGEN_CUDA_CHUNK_H

#include "codegen/cuda.h"

/* Whether this version renders the core (false with a diagnostic when d). */
bool cuda_chunk_supported(const plan_chunk_core *c, diag *d);
/* The value tile of a block. */
int cuda_chunk_vt(const plan_chunk_core *c);
cuda_launch cuda_chunk_launch(const plan_chunk_core *c, int64_t batch);
void cuda_chunk_kernel_name(strbuf *out, const ir_model *m, const plan_chunk_core *c);
/* The source: m is the source model (names), has_state whether a state is
 * given (its dtype then). */
ssmc_status cuda_chunk_emit(strbuf *out, const ir_model *m, const plan_chunk_core *c, bool has_state,
                            ssmc_dtype state_dtype, diag *d);

#endif
