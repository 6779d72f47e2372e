/* dtype.h: element access for the dtypes that cross the API (f32, f16, bf16,
 * f64), through double. One definition for the driver, the CLI and tests. */
#ifndef SSMC_DTYPE_H
#define SSMC_DTYPE_H

#include <stdbool.h>
#include <stddef.h>

#include "ssmc.h"

/* The dtype table: X(ENUM, name, bytes, npy descr), in the order of
 * ssmc_dtype (include/ssmc.h; dtype.c checks the order at compile time). The
 * name is the CLI's (`--dtype`); the descr is NumPy's, bf16 being stored as
 * `<u2` bit patterns. */
#define SSMC_DTYPES(X)              \
    X(SSMC_F32, "f32", 4, "<f4")   \
    X(SSMC_F16, "f16", 2, "<f2")   \
    X(SSMC_BF16, "bf16", 2, "<u2") \
    X(SSMC_F64, "f64", 8, "<f8")

#define SSMC_NDTYPES 4

size_t dtype_size(ssmc_dtype dt);
const char *dtype_name(ssmc_dtype dt);
const char *dtype_descr(ssmc_dtype dt);
/* The dtype called `name`; false when there is none. */
bool dtype_from_name(const char *name, ssmc_dtype *out);
double dtype_get(const void *p, ssmc_dtype dt, size_t i);
/* f16 and bf16 round to nearest even */
void dtype_set(void *p, ssmc_dtype dt, size_t i, double v);

#endif
