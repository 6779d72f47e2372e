/* dtype.h: element access for the dtypes that cross the API (f32, f16, bf16,
 * f64), through double. One definition for the driver, the CLI and tests. */
#ifndef SSMC_DTYPE_H
#define SSMC_DTYPE_H

#include <stddef.h>

#include "ssmc.h"

size_t dtype_size(ssmc_dtype dt);
double dtype_get(const void *p, ssmc_dtype dt, size_t i);
/* f16 and bf16 round to nearest even */
void dtype_set(void *p, ssmc_dtype dt, size_t i, double v);

#endif
