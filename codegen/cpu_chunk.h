/* cpu_chunk.h: the chunked algorithm's core on the CPU (codegen/cpu_chunk.c). */
#ifndef SSMC_CODEGEN_CPU_CHUNK_H
#define SSMC_CODEGEN_CPU_CHUNK_H

#include "codegen/chunked_run.h"

/* Scratch one worker needs (8-byte aligned). */
size_t cpu_chunk_scratch_bytes(const plan_chunk_core *c);
/* Work items [begin, end) of B * nheads, each a (sequence, head). */
void cpu_chunk_run_items(const plan_chunk_core *c, const chunk_core_io *io, int64_t B, int64_t T, int64_t begin,
                         int64_t end, void *scratch);

/* The backward (chunked_run.h, chunk_core_grad_io) of a run of T steps: the
 * scratch one worker needs (8-byte aligned), and work items [begin, end). */
size_t cpu_chunk_backward_scratch_bytes(const plan_chunk_core *c, int64_t T);
void cpu_chunk_backward_items(const plan_chunk_core *c, const chunk_core_grad_io *io, int64_t B, int64_t T,
                              int64_t begin, int64_t end, void *scratch);

#endif
