/* gmem.c: see gmem.h. */
#include <stdlib.h>
#include <string.h>

#include "gmem.h"
#include "support/dtype.h"

void *gmem_alloc(const gmem *g, size_t bytes)
{
    if (g->dev) return g->dev->alloc(g->ctx, bytes ? bytes : 1, g->d);
    void *p = malloc(bytes + 1);
    if (!p) diag_error(g->d, "out of memory");
    return p;
}

void gmem_free(const gmem *g, void *p)
{
    if (!p) return;
    if (g->dev) g->dev->free(g->ctx, p);
    else free(p);
}

ssmc_status gmem_zero(const gmem *g, void *p, size_t bytes)
{
    if (g->dev) return bytes ? g->dev->zero(g->ctx, p, bytes, g->stream, g->d) : SSMC_OK;
    memset(p, 0, bytes);
    return SSMC_OK;
}

void *gmem_calloc(const gmem *g, size_t bytes)
{
    void *p = gmem_alloc(g, bytes);
    if (p && gmem_zero(g, p, bytes) != SSMC_OK) {
        gmem_free(g, p);
        p = NULL;
    }
    return p;
}

ssmc_status gmem_copy2d(const gmem *g, void *dst, size_t dpitch, const void *src, size_t spitch, size_t width,
                        size_t height)
{
    if (!width || !height) return SSMC_OK;
    if (g->dev) return g->dev->copy2d(g->ctx, dst, dpitch, src, spitch, width, height, g->stream, g->d);
    for (size_t r = 0; r < height; r++) memcpy((char *)dst + r * dpitch, (const char *)src + r * spitch, width);
    return SSMC_OK;
}

ssmc_status gmem_copy(const gmem *g, void *dst, const void *src, size_t bytes)
{
    return gmem_copy2d(g, dst, bytes, src, bytes, bytes, 1);
}

ssmc_status gmem_convert(const gmem *g, void *dst, ssmc_dtype dd, const void *src, ssmc_dtype sd, size_t n)
{
    if (dd == sd) return gmem_copy(g, dst, src, n * dtype_size(dd));
    if (g->dev) return n ? g->dev->convert(g->ctx, dst, dd, src, sd, n, g->stream, g->d) : SSMC_OK;
    for (size_t i = 0; i < n; i++) dtype_set(dst, dd, i, dtype_get(src, sd, i));
    return SSMC_OK;
}

ssmc_status gmem_sum_rows(const gmem *g, void *dst, ssmc_dtype dd, const void *src, ssmc_dtype wd, int64_t rows,
                          size_t n)
{
    if (g->dev) return n ? g->dev->sum_rows(g->ctx, dst, dd, src, rows, n, g->stream, g->d) : SSMC_OK;
    for (size_t e = 0; e < n; e++) {
        double sum = 0;
        for (int64_t r = 0; r < rows; r++) sum += dtype_get(src, wd, (size_t)r * n + e);
        dtype_set(dst, dd, e, sum);
    }
    return SSMC_OK;
}

ssmc_status gmem_run(const gmem *g, void *state, int64_t B, int64_t T, const backend_tensor *bt)
{
    return g->dev ? g->be->run_device(state, B, T, bt, g->stream, g->d) : g->be->run(state, B, T, bt, g->d);
}

ssmc_status gmem_sync(const gmem *g) { return g->dev ? g->dev->sync(g->ctx, g->stream, g->d) : SSMC_OK; }

ssmc_status gmem_slice_at(const gmem *g, const gmem_slice *s, int64_t B, int64_t T, int64_t t0, int64_t n, bool in,
                          void **out)
{
    size_t row = s->elems * dtype_size(s->dtype);
    if (B == 1 || n == T) {
        *out = s->base + (size_t)t0 * row;
        return SSMC_OK;
    }
    *out = s->scratch;
    return in ? gmem_copy2d(g, s->scratch, (size_t)n * row, s->base + (size_t)t0 * row, (size_t)T * row,
                            (size_t)n * row, (size_t)B)
              : SSMC_OK;
}

ssmc_status gmem_slice_back(const gmem *g, const gmem_slice *s, int64_t B, int64_t T, int64_t t0, int64_t n)
{
    size_t row = s->elems * dtype_size(s->dtype);
    if (B == 1 || n == T) return SSMC_OK;
    return gmem_copy2d(g, s->base + (size_t)t0 * row, (size_t)T * row, s->scratch, (size_t)n * row, (size_t)n * row,
                       (size_t)B);
}

bool gmem_slice_init(const gmem *g, gmem_slice *s, const backend_tensor *bt, size_t elems, int64_t B, int64_t T,
                     int64_t C)
{
    s->base = bt->data;
    s->dtype = bt->dtype;
    s->elems = elems;
    s->scratch = NULL;
    if (!bt->data || B == 1 || C == T) return true;
    s->scratch = gmem_alloc(g, (size_t)B * (size_t)C * elems * dtype_size(bt->dtype));
    return s->scratch != NULL;
}
