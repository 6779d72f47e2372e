/* dtype.c: see dtype.h. */
#include "dtype.h"

#include <math.h>
#include <stdint.h>

#include "support.h"

size_t dtype_size(ssmc_dtype dt) { return dt == SSMC_F64 ? 8 : dt == SSMC_F32 ? 4 : 2; }

double dtype_get(const void *p, ssmc_dtype dt, size_t i)
{
    switch (dt) {
    case SSMC_F32: return ((const float *)p)[i];
    case SSMC_F16: return f16_to_f32(((const uint16_t *)p)[i]);
    case SSMC_BF16: return bf16_to_f32(((const uint16_t *)p)[i]);
    case SSMC_F64: return ((const double *)p)[i];
    }
    return NAN;
}

void dtype_set(void *p, ssmc_dtype dt, size_t i, double v)
{
    switch (dt) {
    case SSMC_F32: ((float *)p)[i] = (float)v; break;
    case SSMC_F16: ((uint16_t *)p)[i] = f32_to_f16((float)v); break;
    case SSMC_BF16: ((uint16_t *)p)[i] = f32_to_bf16((float)v); break;
    case SSMC_F64: ((double *)p)[i] = v; break;
    }
}
