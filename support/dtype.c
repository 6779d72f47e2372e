/* dtype.c: see dtype.h. */
#include "dtype.h"

#include <math.h>
#include <stdint.h>

#include "support.h"

#include <string.h>

static const struct {
    const char *name;
    size_t size;
    const char *descr;
} table[] = {
#define X(id, name, size, descr) [id] = {name, size, descr},
    SSMC_DTYPES(X)
#undef X
};

/* the table's rows are ssmc_dtype's values, in order */
#define X(id, name, size, descr) +1
_Static_assert(0 SSMC_DTYPES(X) == SSMC_NDTYPES, "SSMC_NDTYPES is the table's length");
#undef X
_Static_assert(SSMC_F64 == SSMC_NDTYPES - 1, "the dtype table covers ssmc_dtype");

static bool known(ssmc_dtype dt) { return (unsigned)dt < SSMC_NDTYPES; }
size_t dtype_size(ssmc_dtype dt) { return known(dt) ? table[dt].size : 0; }
const char *dtype_name(ssmc_dtype dt) { return known(dt) ? table[dt].name : "?"; }
const char *dtype_descr(ssmc_dtype dt) { return known(dt) ? table[dt].descr : "?"; }

bool dtype_from_name(const char *name, ssmc_dtype *out)
{
    for (int i = 0; name && i < SSMC_NDTYPES; i++)
        if (strcmp(table[i].name, name) == 0) {
            *out = (ssmc_dtype)i;
            return true;
        }
    return false;
}

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
