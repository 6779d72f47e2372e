/* gmem.h: where the gradient drivers' buffers live and how data moves
 * between them and the caller's tensors, for driver/grad.c (the recurrent
 * backward) and driver/grad_chunked.c (the chunked one): on the host (malloc,
 * memcpy, conversions and sums in C), or, for the device entry points, on the
 * backend's device (backend.mem, codegen/backend.h), every move enqueued on
 * one stream. Each driver is written once, against these; nothing here
 * synchronises but gmem_sync. */
#ifndef SSMC_DRIVER_GMEM_H
#define SSMC_DRIVER_GMEM_H

#include "codegen/backend.h"

typedef struct gmem {
    const backend *be;
    const backend_mem *dev; /* NULL: the host */
    void *ctx;              /* the backend state the device hooks take */
    void *stream;
    diag *d;
} gmem;

/* Uninitialised; NULL (reported) when memory ran out. */
void *gmem_alloc(const gmem *g, size_t bytes);
/* Zeroed; NULL (reported) when memory ran out. */
void *gmem_calloc(const gmem *g, size_t bytes);
/* Does not wait for work in flight: gmem_sync first where some may use p. */
void gmem_free(const gmem *g, void *p);
ssmc_status gmem_zero(const gmem *g, void *p, size_t bytes);
/* `height` rows of `width` bytes, `spitch` apart in src and `dpitch` in dst. */
ssmc_status gmem_copy2d(const gmem *g, void *dst, size_t dpitch, const void *src, size_t spitch, size_t width,
                        size_t height);
ssmc_status gmem_copy(const gmem *g, void *dst, const void *src, size_t bytes);
/* n elements from dtype sd to dd. */
ssmc_status gmem_convert(const gmem *g, void *dst, ssmc_dtype dd, const void *src, ssmc_dtype sd, size_t n);
/* dst[e] = the sum over r < rows of src[r * n + e]; src in dtype wd (f32 on
 * a device); summed in f64 on the host, in f32 by the device's helper kernel
 * (codegen/cuda.c cuda_emit_helpers). */
ssmc_status gmem_sum_rows(const gmem *g, void *dst, ssmc_dtype dd, const void *src, ssmc_dtype wd, int64_t rows,
                          size_t n);
/* The backend's run of a compiled state: run on the host, run_device on the stream. */
ssmc_status gmem_run(const gmem *g, void *state, int64_t B, int64_t T, const backend_tensor *bt);
/* The device's work on the stream done, before buffers it uses are freed. */
ssmc_status gmem_sync(const gmem *g);

/* A per-step tensor's slice of steps [t0, t0 + n) as a run over those steps
 * takes it, [B, n, elems]: the caller's tensor itself, in place, when that is
 * its layout (one sequence, or the whole sequence); else `scratch`, copied
 * in from it (in) or back to it (gmem_slice_back). */
typedef struct gmem_slice {
    char *base;          /* the caller's [B, T, elems]; NULL: not given */
    ssmc_dtype dtype;
    size_t elems;
    char *scratch;       /* [B, C, elems], or NULL when always in place */
} gmem_slice;

/* For slices of at most C steps of bt ([B, T, elems]): scratch only with
 * several sequences and several slices; false (reported) when memory ran out. */
bool gmem_slice_init(const gmem *g, gmem_slice *s, const backend_tensor *bt, size_t elems, int64_t B, int64_t T,
                     int64_t C);
ssmc_status gmem_slice_at(const gmem *g, const gmem_slice *s, int64_t B, int64_t T, int64_t t0, int64_t n, bool in,
                          void **out);
ssmc_status gmem_slice_back(const gmem *g, const gmem_slice *s, int64_t B, int64_t T, int64_t t0, int64_t n);

#endif
