/* env.c: see env.h. */
#include <stdlib.h>

#include "support/env.h"

static const struct {
    const char *name, *where, *what;
} vars[ENV_COUNT] = {
#define ENV_ROW(name, where, what) {#name, where, what},
    SSMC_ENV_TABLE(ENV_ROW)
#undef ENV_ROW
};

const char *env_name(env_var v) { return v < ENV_COUNT ? vars[v].name : NULL; }
const char *env_where(env_var v) { return v < ENV_COUNT ? vars[v].where : NULL; }
const char *env_what(env_var v) { return v < ENV_COUNT ? vars[v].what : NULL; }

const char *env_get(env_var v)
{
    if (v >= ENV_COUNT) return NULL;
    const char *s = getenv(vars[v].name);
    return s && *s ? s : NULL;
}

long env_long(env_var v, long lo, long hi, long fallback)
{
    const char *s = env_get(v);
    if (!s) return fallback;
    char *end;
    long n = strtol(s, &end, 10);
    return *end || n < lo || n > hi ? fallback : n;
}
