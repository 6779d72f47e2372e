/* npy.h: reading and writing NumPy .npy files (SPEC §5: tensors on disk).
 *
 * Reads format versions 1.0, 2.0 and 3.0 holding a C-ordered array of one of
 * `<f8`, `<f4`, `<f2`, or `<u2` (bf16 bit patterns, only with RT_NPY_ALLOW_BF16),
 * or of `<i4` or `<i8` integers (only with RT_NPY_ALLOW_INDEX; read as int64).
 * Anything else (Fortran order, big-endian or unknown dtypes, a truncated file,
 * a header that lies about its length, a shape whose size overflows, data shorter
 * or longer than the shape) is rejected with a message; no input crashes the
 * reader. Writes `<f4` and `<f8` arrays that numpy.load reads back.
 * Values are decoded from little-endian whatever the host's byte order. */
#ifndef RT_NPY_H
#define RT_NPY_H

#include <stddef.h>
#include <stdint.h>

#include "ssmc.h"
#include "support/dtype.h"
#include "support/support.h"

#define RT_NPY_MAX_RANK SSMC_MAX_RANK
/* rt_npy_read refuses a header longer than this (numpy's are a few hundred
 * bytes) and array data larger than RT_NPY_MAX_BYTES (16 GiB), before reading
 * them; it never reads past what the header's shape needs. */
#define RT_NPY_MAX_HEADER (1 << 20)
#define RT_NPY_MAX_BYTES ((uint64_t)1 << 34)


/* Flags for rt_npy_read and rt_npy_parse. */
enum {
    RT_NPY_ALLOW_BF16 = 1u << 0,  /* accept `<u2` as bf16 bit patterns */
    RT_NPY_ALLOW_INDEX = 1u << 1  /* accept `<i4` and `<i8` (offsets such as cu_seqlens), read as int64 */
};

typedef struct rt_npy {
    int rank;                         /* 0 for a scalar */
    int64_t shape[RT_NPY_MAX_RANK];   /* shape[0..rank) */
    ssmc_dtype dtype;                 /* SSMC_F64, F32, F16 or BF16 (f16/bf16: uint16_t bit patterns); unused when index */
    int index;                        /* 0, or 4 or 8: the file held `<i4` or `<i8` (RT_NPY_ALLOW_INDEX) and
                                       * data holds count int64_t */
    void *data;                       /* malloc'd, count elements in host byte order */
    size_t count;                     /* product of the shape (1 for rank 0, may be 0) */
} rt_npy;

/* Parses a whole .npy file held in memory. On success *out owns its data
 * (rt_npy_free); on failure *out is empty and err says why. */
ssmc_status rt_npy_parse(const void *buf, size_t len, unsigned flags, rt_npy *out, strbuf *err);
/* Reads and parses `path` (a file, a pipe, a device: read as far as the
 * header says, see RT_NPY_MAX_BYTES); messages start with the path. */
ssmc_status rt_npy_read(const char *path, unsigned flags, rt_npy *out, strbuf *err);
void rt_npy_free(rt_npy *a);


/* Converts all a->count elements (of a float array: a->index is 0) into dst, which holds that many elements of
 * the target type (f16 and bf16 as uint16_t bit patterns, rounded to nearest even). */
void rt_npy_convert(const rt_npy *a, ssmc_dtype to, void *dst);
void rt_npy_to_f64(const rt_npy *a, double *dst);
void rt_npy_to_f32(const rt_npy *a, float *dst);

/* Writes data (the product of shape[0..rank) elements, C order) as a version
 * 1.0 file (2.0 when the header needs it). rank is 0..RT_NPY_MAX_RANK. */
ssmc_status rt_npy_write_f32(const char *path, const float *data, int rank, const int64_t *shape,
                             strbuf *err);
ssmc_status rt_npy_write_f64(const char *path, const double *data, int rank, const int64_t *shape,
                             strbuf *err);

#endif
