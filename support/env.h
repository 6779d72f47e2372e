/* env.h: every environment variable the library reads, in one table.
 *
 * Configuration goes through ssmc_options and the context; the environment
 * only overrides, for the machine a program runs on, what a user cannot pass
 * through an API call (where the cache lives, how the thread pool treats the
 * CPUs, which tools `ssmc build` runs) and the CUDA layout knobs kept for
 * benchmarking. Each variable is read where this table says, through
 * env_get/env_long, and nowhere else (test_env checks that no other source
 * calls getenv and that docs/api.md, "Environment", lists every row). A new
 * variable is one row here and one line there.
 *
 * The bundle runtime (runtime/pool.c, runtime/cuda_driver.c) compiles this
 * file in too, so a bundle reads SSMC_PIN and SSMC_SPIN_US the same way. */
#ifndef SSMC_SUPPORT_ENV_H
#define SSMC_SUPPORT_ENV_H

/* X(name, where it is read, what it does) */
#define SSMC_ENV_TABLE(X)                                                                                  \
    X(SSMC_CACHE_DIR, "runtime/cache.c", "the kernel cache's directory (before $XDG_CACHE_HOME/ssmc, ~/.cache/ssmc)") \
    X(XDG_CACHE_HOME, "runtime/cache.c", "an absolute path: the cache is $XDG_CACHE_HOME/ssmc")             \
    X(HOME, "runtime/cache.c", "the cache is ~/.cache/ssmc when neither of the above is set")               \
    X(SSMC_PIN, "runtime/pool.c", "0: the CPU thread pool does not pin its threads to CPUs")                \
    X(SSMC_SPIN_US, "runtime/pool.c", "microseconds a worker polls for work before it sleeps (0: never)")  \
    X(SSMC_CUDA_LANE_SLOTS, "codegen/cuda_backend.c", "CUDA layout: slots per lane of the lane class (1-64)") \
    X(SSMC_CUDA_STATE_SLOTS, "codegen/cuda_backend.c", "CUDA layout: state slots per thread (1-64)")      \
    X(SSMC_CUDA_WARPS, "codegen/cuda_backend.c", "CUDA layout: most warps along the column class (1-8)")   \
    X(SSMC_CUDA_SHARE_LETS, "codegen/cuda_backend.c", "CUDA layout: 1 shares costly replicated lets through shared memory, 2 never") \
    X(CUDA_HOME, "runtime/cuda_driver.c", "where NVRTC finds cuda_fp16.h and cuda_bf16.h ($CUDA_HOME/include)") \
    X(CUDA_PATH, "runtime/cuda_driver.c", "as CUDA_HOME, tried after it")                                   \
    X(SSMC_CUDA_DRIVER, "runtime/cuda_driver.c", "the CUDA driver library to load (a path, or a name for dlopen) instead of libcuda.so.1") \
    X(SSMC_NVRTC, "runtime/cuda_driver.c", "the NVRTC library to load (a path, or a name for dlopen) instead of searching for one") \
    X(CC, "driver/bundle.c", "the C compiler `ssmc build` runs (default cc)")                              \
    X(AR, "driver/bundle.c", "the archiver `ssmc build` runs for static bundles (default ar)")              \
    X(OBJCOPY, "driver/bundle.c", "the objcopy `ssmc build` runs to localise a bundle's symbols (default objcopy)")

typedef enum env_var {
#define ENV_ENUM(name, where, what) ENV_##name,
    SSMC_ENV_TABLE(ENV_ENUM)
#undef ENV_ENUM
        ENV_COUNT
} env_var;

/* The variable's name, where it is read, what it does (for docs and tests). */
const char *env_name(env_var v);
const char *env_where(env_var v);
const char *env_what(env_var v);

/* The value, or NULL when unset or empty. */
const char *env_get(env_var v);

/* The value as a whole number in [lo, hi], else `fallback` (unset, empty,
 * not a number, or out of range). */
long env_long(env_var v, long lo, long hi, long fallback);

#endif
