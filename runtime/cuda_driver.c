/* cuda_driver.c: the CUDA driver API and NVRTC through dlopen (see cuda_driver.h).
 * AOT bundles compile it too (driver/bundle.c), with RT_CUDA_NO_NVRTC defined:
 * the driver part only.
 *
 * The functions used are listed once, in two X-macro tables; each table becomes
 * a struct of function pointers filled from dlsym, and every handle owns its
 * own copy, so there is no global state. Where the driver exports versioned
 * symbols (_v2) the table names them directly: those are the symbols cuda.h
 * maps its names to, and the unversioned ones are legacy ABIs with 32-bit sizes.
 * Assumes a 64-bit Linux ABI (CUdeviceptr and size_t are 64 bits, enums are int).
 * Guarantees: no CUDA call goes unchecked; a failure becomes SSMC_ERR_BACKEND
 * (SSMC_ERR_NOMEM for out-of-memory) with the function and the driver's error
 * name and text; a missing library, symbol or device is SSMC_ERR_UNSUPPORTED. */
#include "runtime/cuda_driver.h"
#include "support/env.h"

#include <dlfcn.h>
#include <link.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef int nvrtcResult;
typedef struct nvrtc_program_st *nvrtcProgram;

/* Values from cuda.h that this file uses. */
enum {
    CUDA_SUCCESS = 0,
    CUDA_ERROR_OUT_OF_MEMORY = 2,
    CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT = 16,
    CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75,
    CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76,
    CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN = 97,
    CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8,
    CU_JIT_ERROR_LOG_BUFFER = 5,
    CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES = 6,
    CU_STREAM_NON_BLOCKING = 1,
    CU_EVENT_DEFAULT = 0,
    NVRTC_SUCCESS = 0
};

/* CUDA_MEMCPY2D of cuda.h (the _v2 layout), for device-to-device copies only. */
typedef struct cuda_memcpy2d {
    size_t srcXInBytes, srcY;
    int srcMemoryType;
    const void *srcHost;
    CUdeviceptr srcDevice;
    void *srcArray;
    size_t srcPitch;
    size_t dstXInBytes, dstY;
    int dstMemoryType;
    void *dstHost;
    CUdeviceptr dstDevice;
    void *dstArray;
    size_t dstPitch;
    size_t WidthInBytes, Height;
} cuda_memcpy2d;
enum { CU_MEMORYTYPE_DEVICE = 2 };

/* Above this much dynamic shared memory a kernel must opt in (all archs >= 7.0). */
#define DEFAULT_SHARED_LIMIT (48u * 1024u)

#define RT_CUDA_DRIVER_FNS(CUDA_FN)                                                                     \
    CUDA_FN(CUresult, cuInit, (unsigned))                                                               \
    CUDA_FN(CUresult, cuDriverGetVersion, (int *))                                                      \
    CUDA_FN(CUresult, cuGetErrorName, (CUresult, const char **))                                        \
    CUDA_FN(CUresult, cuGetErrorString, (CUresult, const char **))                                      \
    CUDA_FN(CUresult, cuDeviceGetCount, (int *))                                                        \
    CUDA_FN(CUresult, cuDeviceGet, (CUdevice *, int))                                                   \
    CUDA_FN(CUresult, cuDeviceGetName, (char *, int, CUdevice))                                         \
    CUDA_FN(CUresult, cuDeviceGetAttribute, (int *, int, CUdevice))                                     \
    CUDA_FN(CUresult, cuDeviceTotalMem_v2, (size_t *, CUdevice))                                        \
    CUDA_FN(CUresult, cuDevicePrimaryCtxRetain, (CUcontext *, CUdevice))                                \
    CUDA_FN(CUresult, cuDevicePrimaryCtxRelease_v2, (CUdevice))                                         \
    CUDA_FN(CUresult, cuCtxSetCurrent, (CUcontext))                                                     \
    CUDA_FN(CUresult, cuCtxSynchronize, (void))                                                         \
    CUDA_FN(CUresult, cuMemAlloc_v2, (CUdeviceptr *, size_t))                                           \
    CUDA_FN(CUresult, cuMemFree_v2, (CUdeviceptr))                                                      \
    CUDA_FN(CUresult, cuMemcpyHtoD_v2, (CUdeviceptr, const void *, size_t))                             \
    CUDA_FN(CUresult, cuMemcpyDtoH_v2, (void *, CUdeviceptr, size_t))                                   \
    CUDA_FN(CUresult, cuMemcpyDtoD_v2, (CUdeviceptr, CUdeviceptr, size_t))                              \
    CUDA_FN(CUresult, cuMemsetD8_v2, (CUdeviceptr, unsigned char, size_t))                              \
    CUDA_FN(CUresult, cuMemcpyHtoDAsync_v2, (CUdeviceptr, const void *, size_t, CUstream))              \
    CUDA_FN(CUresult, cuMemcpyDtoHAsync_v2, (void *, CUdeviceptr, size_t, CUstream))                    \
    CUDA_FN(CUresult, cuMemcpyDtoDAsync_v2, (CUdeviceptr, CUdeviceptr, size_t, CUstream))               \
    CUDA_FN(CUresult, cuMemsetD8Async, (CUdeviceptr, unsigned char, size_t, CUstream))                  \
    CUDA_FN(CUresult, cuMemcpy2DAsync_v2, (const cuda_memcpy2d *, CUstream))                             \
    CUDA_FN(CUresult, cuModuleLoadDataEx, (CUmodule *, const void *, unsigned, int *, void **))         \
    CUDA_FN(CUresult, cuModuleUnload, (CUmodule))                                                       \
    CUDA_FN(CUresult, cuModuleGetFunction, (CUfunction *, CUmodule, const char *))                      \
    CUDA_FN(CUresult, cuModuleGetGlobal_v2, (CUdeviceptr *, size_t *, CUmodule, const char *))          \
    CUDA_FN(CUresult, cuFuncSetAttribute, (CUfunction, int, int))                                       \
    CUDA_FN(CUresult, cuLaunchKernel,                                                                   \
            (CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, CUstream, \
             void **, void **))                                                                         \
    CUDA_FN(CUresult, cuStreamCreate, (CUstream *, unsigned))                                           \
    CUDA_FN(CUresult, cuStreamDestroy_v2, (CUstream))                                                   \
    CUDA_FN(CUresult, cuStreamSynchronize, (CUstream))                                                  \
    CUDA_FN(CUresult, cuEventCreate, (CUevent *, unsigned))                                             \
    CUDA_FN(CUresult, cuEventDestroy_v2, (CUevent))                                                     \
    CUDA_FN(CUresult, cuEventRecord, (CUevent, CUstream))                                               \
    CUDA_FN(CUresult, cuEventSynchronize, (CUevent))                                                    \
    CUDA_FN(CUresult, cuEventElapsedTime, (float *, CUevent, CUevent))

#define RT_NVRTC_FNS(NVRTC_FN)                                                                          \
    NVRTC_FN(const char *, nvrtcGetErrorString, (nvrtcResult))                                          \
    NVRTC_FN(nvrtcResult, nvrtcVersion, (int *, int *))                                                 \
    NVRTC_FN(nvrtcResult, nvrtcCreateProgram,                                                           \
             (nvrtcProgram *, const char *, const char *, int, const char *const *, const char *const *)) \
    NVRTC_FN(nvrtcResult, nvrtcDestroyProgram, (nvrtcProgram *))                                        \
    NVRTC_FN(nvrtcResult, nvrtcCompileProgram, (nvrtcProgram, int, const char *const *))                \
    NVRTC_FN(nvrtcResult, nvrtcGetProgramLogSize, (nvrtcProgram, size_t *))                             \
    NVRTC_FN(nvrtcResult, nvrtcGetProgramLog, (nvrtcProgram, char *))                                   \
    NVRTC_FN(nvrtcResult, nvrtcGetPTXSize, (nvrtcProgram, size_t *))                                    \
    NVRTC_FN(nvrtcResult, nvrtcGetPTX, (nvrtcProgram, char *))                                          \
    NVRTC_FN(nvrtcResult, nvrtcGetCUBINSize, (nvrtcProgram, size_t *))                                  \
    NVRTC_FN(nvrtcResult, nvrtcGetCUBIN, (nvrtcProgram, char *))

#define DECLARE_FN(ret, name, args) ret(*name) args;
typedef struct cuda_api {
    RT_CUDA_DRIVER_FNS(DECLARE_FN)
} cuda_api;
#ifndef RT_CUDA_NO_NVRTC
typedef struct nvrtc_api {
    RT_NVRTC_FNS(DECLARE_FN)
} nvrtc_api;
#endif
#undef DECLARE_FN

/* dlsym returns an object pointer; POSIX guarantees it converts to a function
 * pointer, and memcpy says so without a cast ISO C would warn about. */
_Static_assert(sizeof(void *) == sizeof(void (*)(void)), "function and object pointers differ in size");
#define LOAD_FN(ret, name, args)                   \
    {                                              \
        void *sym = dlsym(lib, #name);             \
        if (!sym) return #name;                    \
        memcpy(&api->name, &sym, sizeof sym);      \
    }
/* Both return the first missing symbol, or NULL when all were found. */
static const char *cuda_api_load(void *lib, cuda_api *api) { RT_CUDA_DRIVER_FNS(LOAD_FN) return NULL; }
#ifndef RT_CUDA_NO_NVRTC
static const char *nvrtc_api_load(void *lib, nvrtc_api *api) { RT_NVRTC_FNS(LOAD_FN) return NULL; }
#endif
#undef LOAD_FN

/* ---- NVRTC ----
 * Left out when RT_CUDA_NO_NVRTC is defined: AOT bundles (driver/bundle.c)
 * compile this file so, and then neither name nor load NVRTC. */
#ifndef RT_CUDA_NO_NVRTC

struct rt_nvrtc {
    void *lib;
    nvrtc_api api;
    int major, minor;
    char version[32];
    char *include_dir; /* malloc'd; "" when none */
};

static const char *const nvrtc_names[] = {
    "libnvrtc.so",
    "libnvrtc.so.13",
    "libnvrtc.so.12",
    "libnvrtc.so.11.2",
    "/usr/local/cuda/lib64/libnvrtc.so",
    "/usr/local/cuda/targets/x86_64-linux/lib/libnvrtc.so",
};

static bool has_cuda_headers(const char *dir)
{
    strbuf p = {0};
    sb_printf(&p, "%s/cuda_fp16.h", dir);
    bool ok = !p.failed && access(p.data, R_OK) == 0;
    sb_free(&p);
    return ok;
}

/* The include directory that goes with this NVRTC, so cuda_fp16.h and
 * cuda_bf16.h resolve: $CUDA_HOME or $CUDA_PATH, then beside the library
 * (<prefix>/lib/libnvrtc.so -> <prefix>/include), then the default install. */
static char *find_include_dir(void *lib)
{
    strbuf cand[5] = {{0}};
    int k = 0;
    const char *env, *slash;
    if ((env = env_get(ENV_CUDA_HOME))) sb_printf(&cand[k++], "%s/include", env);
    if ((env = env_get(ENV_CUDA_PATH))) sb_printf(&cand[k++], "%s/include", env);
    struct link_map *lm = NULL;
    if (dlinfo(lib, RTLD_DI_LINKMAP, &lm) == 0 && lm && lm->l_name && (slash = strrchr(lm->l_name, '/'))) {
        sb_putn(&cand[k], lm->l_name, (size_t)(slash - lm->l_name));
        sb_puts(&cand[k++], "/../include");
    }
    sb_puts(&cand[k++], "/usr/local/cuda/include");
    sb_puts(&cand[k++], "/usr/local/cuda/targets/x86_64-linux/include");
    char *found = NULL;
    for (int i = 0; i < k; i++) {
        if (!found && !cand[i].failed && has_cuda_headers(cand[i].data)) found = realpath(cand[i].data, NULL);
        sb_free(&cand[i]);
    }
    if (!found && (found = malloc(1))) *found = 0;
    return found;
}

ssmc_status rt_nvrtc_load_from(const char *library, rt_nvrtc **out, strbuf *err)
{
    *out = NULL;
    void *lib = dlopen(library, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        sb_printf(err, "cannot load NVRTC from %s: %s", library, dlerror());
        return SSMC_ERR_UNSUPPORTED;
    }
    rt_nvrtc *n = calloc(1, sizeof *n);
    if (!n) {
        dlclose(lib);
        sb_puts(err, "out of memory");
        return SSMC_ERR_NOMEM;
    }
    n->lib = lib;
    const char *missing = nvrtc_api_load(lib, &n->api);
    if (missing) {
        sb_printf(err, "%s lacks %s: NVRTC 11.2 or newer is needed", library, missing);
        rt_nvrtc_free(n);
        return SSMC_ERR_UNSUPPORTED;
    }
    nvrtcResult r = n->api.nvrtcVersion(&n->major, &n->minor);
    if (r != NVRTC_SUCCESS) {
        sb_printf(err, "nvrtcVersion: %s", n->api.nvrtcGetErrorString(r));
        rt_nvrtc_free(n);
        return SSMC_ERR_BACKEND;
    }
    snprintf(n->version, sizeof n->version, "nvrtc %d.%d", n->major, n->minor);
    n->include_dir = find_include_dir(lib);
    if (!n->include_dir) {
        sb_puts(err, "out of memory");
        rt_nvrtc_free(n);
        return SSMC_ERR_NOMEM;
    }
    *out = n;
    return SSMC_OK;
}

ssmc_status rt_nvrtc_load(rt_nvrtc **out, strbuf *err)
{
    const char *lib = env_get(ENV_SSMC_NVRTC);
    if (lib) {
        ssmc_status st = rt_nvrtc_load_from(lib, out, err);
        if (st != SSMC_OK) sb_puts(err, " (named by SSMC_NVRTC)");
        return st;
    }
    strbuf tried = {0};
    ssmc_status st = SSMC_ERR_UNSUPPORTED;
    for (size_t i = 0; i < sizeof nvrtc_names / sizeof nvrtc_names[0]; i++) {
        strbuf why = {0};
        st = rt_nvrtc_load_from(nvrtc_names[i], out, &why);
        if (st == SSMC_OK) {
            sb_free(&why);
            break;
        }
        sb_printf(&tried, "\n  %s", sb_cstr(&why));
        sb_free(&why);
        if (st != SSMC_ERR_UNSUPPORTED) break; /* found but broken: say so, do not mask it */
    }
    if (st != SSMC_OK) sb_printf(err, "cannot load NVRTC (needed to compile CUDA kernels):%s", sb_cstr(&tried));
    sb_free(&tried);
    return st;
}

/* The library is not unloaded: NVRTC carries its own C++ runtime, whose heap
 * blocks only its globals reference, so every unload would leak them. dlopen
 * counts references, so loading again reuses the mapped copy. */
void rt_nvrtc_free(rt_nvrtc *n)
{
    if (!n) return;
    free(n->include_dir);
    free(n);
}

void rt_nvrtc_version(const rt_nvrtc *n, int *major, int *minor)
{
    *major = n->major;
    *minor = n->minor;
}

const char *rt_nvrtc_version_string(const rt_nvrtc *n) { return n->version; }
const char *rt_nvrtc_include_dir(const rt_nvrtc *n) { return n->include_dir; }

static const char arch_flag[] = "--gpu-architecture=";

/* "sm_90", "sm_90a", "compute_100f": a prefix, digits, at most one letter. */
static bool arch_valid(const char *arch, const char **digits)
{
    const char *p = !strncmp(arch, "sm_", 3) ? arch + 3 : !strncmp(arch, "compute_", 8) ? arch + 8 : NULL;
    if (!p || *p < '0' || *p > '9') return false;
    *digits = p;
    while (*p >= '0' && *p <= '9') p++;
    if (*p >= 'a' && *p <= 'z') p++;
    return *p == 0;
}

ssmc_status rt_nvrtc_compile(rt_nvrtc *n, const char *src, const char *prog_name, const char *arch, bool cubin,
                             const char *const *extra_opts, int nopts, char **image, size_t *image_len,
                             strbuf *log)
{
    *image = NULL;
    *image_len = 0;
    const char *digits;
    if (!arch || !arch_valid(arch, &digits) || (cubin && arch[0] != 's')) {
        sb_printf(log, "nvrtc: %s: bad GPU architecture '%s' (expected sm_NN%s)", prog_name, arch ? arch : "(null)",
                  cubin ? "" : " or compute_NN");
        return SSMC_ERR_ARG;
    }
    strbuf arch_opt = {0}, inc_opt = {0};
    sb_printf(&arch_opt, "%s%s_%s", arch_flag, cubin ? "sm" : "compute", digits);
    if (n->include_dir[0]) sb_printf(&inc_opt, "-I%s", n->include_dir);
    const char **opts = malloc(((size_t)(nopts > 0 ? nopts : 0) + 4) * sizeof *opts);
    if (!opts || arch_opt.failed || inc_opt.failed) {
        free(opts);
        sb_free(&arch_opt);
        sb_free(&inc_opt);
        sb_printf(log, "nvrtc: %s: out of memory", prog_name);
        return SSMC_ERR_NOMEM;
    }
    int k = 0;
    opts[k++] = arch_opt.data;
    opts[k++] = "--std=c++17";
    opts[k++] = "-default-device";
    if (inc_opt.len) opts[k++] = inc_opt.data;
    for (int i = 0; i < nopts; i++) opts[k++] = extra_opts[i];

    ssmc_status st = SSMC_OK;
    nvrtcProgram prog = NULL;
    nvrtcResult r = n->api.nvrtcCreateProgram(&prog, src, prog_name, 0, NULL, NULL);
    if (r != NVRTC_SUCCESS) {
        sb_printf(log, "nvrtc: %s: nvrtcCreateProgram: %s", prog_name, n->api.nvrtcGetErrorString(r));
        st = SSMC_ERR_BACKEND;
        goto out;
    }
    nvrtcResult cr = n->api.nvrtcCompileProgram(prog, k, opts);
    size_t log_size = 0;
    char *text = NULL;
    if (n->api.nvrtcGetProgramLogSize(prog, &log_size) == NVRTC_SUCCESS && log_size > 1 &&
        (text = malloc(log_size)) && n->api.nvrtcGetProgramLog(prog, text) != NVRTC_SUCCESS) {
        free(text);
        text = NULL;
    }
    if (text) { /* the log ends in blank lines; the message should not */
        size_t e = strlen(text);
        while (e > 0 && (text[e - 1] == '\n' || text[e - 1] == ' ')) text[--e] = 0;
        if (e == 0) {
            free(text);
            text = NULL;
        }
    }
    if (cr != NVRTC_SUCCESS) {
        sb_printf(log, "nvrtc: %s failed to compile for %s (%s)%s%s", prog_name, arch_opt.data + strlen(arch_flag),
                  n->api.nvrtcGetErrorString(cr), text ? ":\n" : "", text ? text : "");
        free(text);
        st = SSMC_ERR_BACKEND;
        goto out;
    }
    if (text) sb_puts(log, text);
    free(text);

    size_t size = 0;
    r = cubin ? n->api.nvrtcGetCUBINSize(prog, &size) : n->api.nvrtcGetPTXSize(prog, &size);
    if (r == NVRTC_SUCCESS && size == 0) {
        sb_printf(log, "nvrtc: %s: the compiled image is empty", prog_name);
        st = SSMC_ERR_BACKEND;
        goto out;
    }
    if (r == NVRTC_SUCCESS) {
        if (!(*image = malloc(size))) {
            sb_printf(log, "nvrtc: %s: out of memory for a %zu-byte image", prog_name, size);
            st = SSMC_ERR_NOMEM;
            goto out;
        }
        r = cubin ? n->api.nvrtcGetCUBIN(prog, *image) : n->api.nvrtcGetPTX(prog, *image);
    }
    if (r != NVRTC_SUCCESS) {
        sb_printf(log, "nvrtc: %s: %s: %s", prog_name, cubin ? "nvrtcGetCUBIN" : "nvrtcGetPTX",
                  n->api.nvrtcGetErrorString(r));
        free(*image);
        *image = NULL;
        st = SSMC_ERR_BACKEND;
        goto out;
    }
    *image_len = size;
out:
    if (prog) n->api.nvrtcDestroyProgram(&prog);
    free(opts);
    sb_free(&arch_opt);
    sb_free(&inc_opt);
    return st;
}

#endif /* RT_CUDA_NO_NVRTC */

/* ---- the driver ---- */

struct rt_cuda {
    void *lib;
    cuda_api api;
    CUdevice dev;
    CUcontext ctx; /* device's primary context, retained */
    int arch, sm_count, driver_version;
    size_t max_shared, total_mem;
    char name[256];
    char arch_name[24];
};

static const char *const cuda_names[] = {"libcuda.so.1", "libcuda.so"};

/* The message for a failed call: "<what>: <ERROR_NAME>: <text>". */
static ssmc_status cu_fail(const rt_cuda *c, CUresult r, strbuf *err, const char *what)
{
    const char *name = NULL, *text = NULL;
    if (c->api.cuGetErrorName(r, &name) != CUDA_SUCCESS) name = NULL;
    if (c->api.cuGetErrorString(r, &text) != CUDA_SUCCESS) text = NULL;
    sb_printf(err, "%s: %s", what, name ? name : "unknown CUDA error");
    sb_printf(err, text ? " (%d): %s" : " (%d)", r, text);
    return r == CUDA_ERROR_OUT_OF_MEMORY ? SSMC_ERR_NOMEM : SSMC_ERR_BACKEND;
}

static ssmc_status cu_check(const rt_cuda *c, CUresult r, strbuf *err, const char *what)
{
    return r == CUDA_SUCCESS ? SSMC_OK : cu_fail(c, r, err, what);
}

ssmc_status rt_cuda_make_current(rt_cuda *c, strbuf *err)
{
    return cu_check(c, c->api.cuCtxSetCurrent(c->ctx), err, "cuCtxSetCurrent");
}

static int device_attr(rt_cuda *c, int attr, CUresult *r)
{
    int v = 0;
    if (*r == CUDA_SUCCESS) *r = c->api.cuDeviceGetAttribute(&v, attr, c->dev);
    return v;
}

/* After cuInit the library stays loaded for the life of the process: the
 * driver keeps threads and handlers that must not be unmapped under them. */
static ssmc_status cuda_init(rt_cuda *c, const char *library, int device, strbuf *err)
{
    CUresult r = c->api.cuInit(0);
    if (r != CUDA_SUCCESS) {
        cu_fail(c, r, err, "cuInit");
        sb_printf(err, " (with %s): no usable CUDA GPU", library);
        /* ASan's shadow gap covers the range the driver maps device memory into */
        if (r == CUDA_ERROR_OUT_OF_MEMORY)
            sb_puts(err, "; under AddressSanitizer, run with ASAN_OPTIONS=protect_shadow_gap=0");
        return SSMC_ERR_UNSUPPORTED;
    }
    int count = 0;
    if ((r = c->api.cuDeviceGetCount(&count)) != CUDA_SUCCESS) return cu_fail(c, r, err, "cuDeviceGetCount");
    if (device < 0 || device >= count) {
        sb_printf(err, "no CUDA device %d: the driver (%s) sees %d", device, library, count);
        return SSMC_ERR_UNSUPPORTED;
    }
    if ((r = c->api.cuDeviceGet(&c->dev, device)) != CUDA_SUCCESS) return cu_fail(c, r, err, "cuDeviceGet");
    if ((r = c->api.cuDriverGetVersion(&c->driver_version)) != CUDA_SUCCESS)
        return cu_fail(c, r, err, "cuDriverGetVersion");
    if ((r = c->api.cuDeviceGetName(c->name, (int)sizeof c->name, c->dev)) != CUDA_SUCCESS)
        return cu_fail(c, r, err, "cuDeviceGetName");
    if ((r = c->api.cuDeviceTotalMem_v2(&c->total_mem, c->dev)) != CUDA_SUCCESS)
        return cu_fail(c, r, err, "cuDeviceTotalMem_v2");
    int major = device_attr(c, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, &r);
    int minor = device_attr(c, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, &r);
    c->sm_count = device_attr(c, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, &r);
    c->max_shared = (size_t)device_attr(c, CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN, &r);
    if (r != CUDA_SUCCESS) return cu_fail(c, r, err, "cuDeviceGetAttribute");
    c->arch = major * 10 + minor;
    snprintf(c->arch_name, sizeof c->arch_name, "sm_%d", c->arch);
    if ((r = c->api.cuDevicePrimaryCtxRetain(&c->ctx, c->dev)) != CUDA_SUCCESS) {
        c->ctx = NULL;
        return cu_fail(c, r, err, "cuDevicePrimaryCtxRetain");
    }
    return rt_cuda_make_current(c, err);
}

/* Fills a handle from a loaded library and initialises the device. */
static ssmc_status cuda_open_lib(void *lib, const char *library, int device, rt_cuda **out, strbuf *err)
{
    rt_cuda *c = calloc(1, sizeof *c);
    if (!c) {
        dlclose(lib);
        sb_puts(err, "out of memory");
        return SSMC_ERR_NOMEM;
    }
    c->lib = lib;
    const char *missing = cuda_api_load(lib, &c->api);
    if (missing) {
        sb_printf(err, "the CUDA driver %s lacks %s: the driver is too old", library, missing);
        dlclose(lib); /* cuInit has not run: unloading is safe */
        free(c);
        return SSMC_ERR_UNSUPPORTED;
    }
    ssmc_status st = cuda_init(c, library, device, err);
    if (st != SSMC_OK) {
        rt_cuda_close(c);
        return st;
    }
    *out = c;
    return SSMC_OK;
}

ssmc_status rt_cuda_open_from(const char *library, int device, rt_cuda **out, strbuf *err)
{
    *out = NULL;
    void *lib = dlopen(library, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        sb_printf(err, "cannot load the CUDA driver library %s: %s", library, dlerror());
        return SSMC_ERR_UNSUPPORTED;
    }
    return cuda_open_lib(lib, library, device, out, err);
}

ssmc_status rt_cuda_open(rt_cuda **out, strbuf *err) { return rt_cuda_open_device(0, out, err); }

ssmc_status rt_cuda_open_device(int device, rt_cuda **out, strbuf *err)
{
    *out = NULL;
    const char *lib = env_get(ENV_SSMC_CUDA_DRIVER);
    if (lib) {
        ssmc_status st = rt_cuda_open_from(lib, device, out, err);
        if (st != SSMC_OK) sb_puts(err, " (named by SSMC_CUDA_DRIVER)");
        return st;
    }
    strbuf tried = {0};
    for (size_t i = 0; i < sizeof cuda_names / sizeof cuda_names[0]; i++) {
        void *lib = dlopen(cuda_names[i], RTLD_NOW | RTLD_LOCAL);
        if (lib) {
            sb_free(&tried);
            return cuda_open_lib(lib, cuda_names[i], device, out, err);
        }
        sb_printf(&tried, "\n  %s", dlerror());
    }
    sb_printf(err, "no CUDA driver: cannot load libcuda.so.1 or libcuda.so:%s", sb_cstr(&tried));
    sb_free(&tried);
    return SSMC_ERR_UNSUPPORTED;
}

void rt_cuda_close(rt_cuda *c)
{
    if (!c) return;
    if (c->ctx) c->api.cuDevicePrimaryCtxRelease_v2(c->dev);
    free(c);
}

int rt_cuda_arch(const rt_cuda *c) { return c->arch; }
const char *rt_cuda_arch_name(const rt_cuda *c) { return c->arch_name; }
int rt_cuda_sm_count(const rt_cuda *c) { return c->sm_count; }
const char *rt_cuda_device_name(const rt_cuda *c) { return c->name; }
size_t rt_cuda_max_shared(const rt_cuda *c) { return c->max_shared; }
size_t rt_cuda_total_mem(const rt_cuda *c) { return c->total_mem; }
int rt_cuda_driver_version(const rt_cuda *c) { return c->driver_version; }

ssmc_status rt_cuda_sync(rt_cuda *c, strbuf *err)
{
    ssmc_status st = rt_cuda_make_current(c, err);
    return st ? st : cu_check(c, c->api.cuCtxSynchronize(), err, "cuCtxSynchronize");
}

/* ---- memory ---- */

ssmc_status rt_cuda_alloc(rt_cuda *c, size_t bytes, CUdeviceptr *out, strbuf *err)
{
    *out = 0;
    if (bytes == 0) return SSMC_OK;
    ssmc_status st = rt_cuda_make_current(c, err);
    if (st) return st;
    CUresult r = c->api.cuMemAlloc_v2(out, bytes);
    if (r == CUDA_SUCCESS) return SSMC_OK;
    *out = 0;
    st = cu_fail(c, r, err, "cuMemAlloc_v2");
    sb_printf(err, " (allocating %zu bytes)", bytes);
    return st;
}

ssmc_status rt_cuda_free(rt_cuda *c, CUdeviceptr p, strbuf *err)
{
    if (!p) return SSMC_OK;
    ssmc_status st = rt_cuda_make_current(c, err);
    return st ? st : cu_check(c, c->api.cuMemFree_v2(p), err, "cuMemFree_v2");
}

ssmc_status rt_cuda_htod(rt_cuda *c, CUdeviceptr dst, const void *src, size_t bytes, strbuf *err)
{
    ssmc_status st = rt_cuda_make_current(c, err);
    return st ? st : cu_check(c, c->api.cuMemcpyHtoD_v2(dst, src, bytes), err, "cuMemcpyHtoD_v2");
}

ssmc_status rt_cuda_dtoh(rt_cuda *c, void *dst, CUdeviceptr src, size_t bytes, strbuf *err)
{
    ssmc_status st = rt_cuda_make_current(c, err);
    return st ? st : cu_check(c, c->api.cuMemcpyDtoH_v2(dst, src, bytes), err, "cuMemcpyDtoH_v2");
}

ssmc_status rt_cuda_dtod(rt_cuda *c, CUdeviceptr dst, CUdeviceptr src, size_t bytes, strbuf *err)
{
    ssmc_status st = rt_cuda_make_current(c, err);
    return st ? st : cu_check(c, c->api.cuMemcpyDtoD_v2(dst, src, bytes), err, "cuMemcpyDtoD_v2");
}

ssmc_status rt_cuda_memset(rt_cuda *c, CUdeviceptr dst, unsigned char byte, size_t bytes, strbuf *err)
{
    ssmc_status st = rt_cuda_make_current(c, err);
    return st ? st : cu_check(c, c->api.cuMemsetD8_v2(dst, byte, bytes), err, "cuMemsetD8_v2");
}

ssmc_status rt_cuda_htod_async(rt_cuda *c, CUdeviceptr dst, const void *src, size_t bytes, CUstream s, strbuf *err)
{
    ssmc_status st = rt_cuda_make_current(c, err);
    return st ? st : cu_check(c, c->api.cuMemcpyHtoDAsync_v2(dst, src, bytes, s), err, "cuMemcpyHtoDAsync_v2");
}

ssmc_status rt_cuda_dtoh_async(rt_cuda *c, void *dst, CUdeviceptr src, size_t bytes, CUstream s, strbuf *err)
{
    ssmc_status st = rt_cuda_make_current(c, err);
    return st ? st : cu_check(c, c->api.cuMemcpyDtoHAsync_v2(dst, src, bytes, s), err, "cuMemcpyDtoHAsync_v2");
}

ssmc_status rt_cuda_dtod_async(rt_cuda *c, CUdeviceptr dst, CUdeviceptr src, size_t bytes, CUstream s, strbuf *err)
{
    ssmc_status st = rt_cuda_make_current(c, err);
    return st ? st : cu_check(c, c->api.cuMemcpyDtoDAsync_v2(dst, src, bytes, s), err, "cuMemcpyDtoDAsync_v2");
}

ssmc_status rt_cuda_memset_async(rt_cuda *c, CUdeviceptr dst, unsigned char byte, size_t bytes, CUstream s,
                                 strbuf *err)
{
    ssmc_status st = rt_cuda_make_current(c, err);
    return st ? st : cu_check(c, c->api.cuMemsetD8Async(dst, byte, bytes, s), err, "cuMemsetD8Async");
}

ssmc_status rt_cuda_dtod_2d_async(rt_cuda *c, CUdeviceptr dst, size_t dpitch, CUdeviceptr src, size_t spitch,
                                  size_t width, size_t height, CUstream s, strbuf *err)
{
    ssmc_status st = rt_cuda_make_current(c, err);
    if (st) return st;
    cuda_memcpy2d p = {.srcMemoryType = CU_MEMORYTYPE_DEVICE, .srcDevice = src, .srcPitch = spitch,
                       .dstMemoryType = CU_MEMORYTYPE_DEVICE, .dstDevice = dst, .dstPitch = dpitch,
                       .WidthInBytes = width, .Height = height};
    return cu_check(c, c->api.cuMemcpy2DAsync_v2(&p, s), err, "cuMemcpy2DAsync_v2");
}

/* ---- modules and launches ---- */

ssmc_status rt_cuda_module_load(rt_cuda *c, const void *image, CUmodule *out, strbuf *err)
{
    *out = NULL;
    ssmc_status st = rt_cuda_make_current(c, err);
    if (st) return st;
    /* cuModuleLoadData with an error log: a PTX image is JIT-compiled here, and
     * ptxas's complaint is the only useful part of a failure. */
    char jit_log[8192] = "";
    int opts[2] = {CU_JIT_ERROR_LOG_BUFFER, CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES};
    void *vals[2] = {jit_log, (void *)(uintptr_t)sizeof jit_log};
    CUresult r = c->api.cuModuleLoadDataEx(out, image, 2, opts, vals);
    if (r == CUDA_SUCCESS) return SSMC_OK;
    *out = NULL;
    st = cu_fail(c, r, err, "cuModuleLoadDataEx");
    jit_log[sizeof jit_log - 1] = 0;
    if (jit_log[0]) sb_printf(err, ":\n%s", jit_log);
    return st;
}

ssmc_status rt_cuda_module_unload(rt_cuda *c, CUmodule m, strbuf *err)
{
    if (!m) return SSMC_OK;
    ssmc_status st = rt_cuda_make_current(c, err);
    return st ? st : cu_check(c, c->api.cuModuleUnload(m), err, "cuModuleUnload");
}

ssmc_status rt_cuda_module_function(rt_cuda *c, CUmodule m, const char *name, CUfunction *out, strbuf *err)
{
    *out = NULL;
    ssmc_status st = rt_cuda_make_current(c, err);
    if (st) return st;
    CUresult r = c->api.cuModuleGetFunction(out, m, name);
    if (r == CUDA_SUCCESS) return SSMC_OK;
    st = cu_fail(c, r, err, "cuModuleGetFunction");
    sb_printf(err, " (kernel %s)", name);
    return st;
}

ssmc_status rt_cuda_module_global(rt_cuda *c, CUmodule m, const char *name, CUdeviceptr *ptr, size_t *bytes,
                                  strbuf *err)
{
    ssmc_status st = rt_cuda_make_current(c, err);
    if (st) return st;
    CUresult r = c->api.cuModuleGetGlobal_v2(ptr, bytes, m, name);
    if (r == CUDA_SUCCESS) return SSMC_OK;
    st = cu_fail(c, r, err, "cuModuleGetGlobal_v2");
    sb_printf(err, " (global %s)", name);
    return st;
}

ssmc_status rt_cuda_launch(rt_cuda *c, CUfunction f, const unsigned grid[3], const unsigned block[3],
                           unsigned shared_bytes, CUstream stream, void **params, strbuf *err)
{
    ssmc_status st = rt_cuda_make_current(c, err);
    if (st) return st;
    CUresult r;
    if (shared_bytes > DEFAULT_SHARED_LIMIT &&
        (r = c->api.cuFuncSetAttribute(f, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, (int)shared_bytes)) !=
            CUDA_SUCCESS) {
        st = cu_fail(c, r, err, "cuFuncSetAttribute");
        sb_printf(err, " (MAX_DYNAMIC_SHARED_SIZE_BYTES = %u; the device allows %zu)", shared_bytes, c->max_shared);
        return st;
    }
    r = c->api.cuLaunchKernel(f, grid[0], grid[1], grid[2], block[0], block[1], block[2], shared_bytes, stream,
                              params, NULL);
    if (r == CUDA_SUCCESS) return SSMC_OK;
    st = cu_fail(c, r, err, "cuLaunchKernel");
    sb_printf(err, " (grid %ux%ux%u, block %ux%ux%u, %u bytes of shared memory)", grid[0], grid[1], grid[2],
              block[0], block[1], block[2], shared_bytes);
    return st;
}

/* ---- streams and events ---- */

ssmc_status rt_cuda_stream_new(rt_cuda *c, CUstream *out, strbuf *err)
{
    *out = NULL;
    ssmc_status st = rt_cuda_make_current(c, err);
    return st ? st : cu_check(c, c->api.cuStreamCreate(out, CU_STREAM_NON_BLOCKING), err, "cuStreamCreate");
}

ssmc_status rt_cuda_stream_free(rt_cuda *c, CUstream s, strbuf *err)
{
    if (!s) return SSMC_OK;
    ssmc_status st = rt_cuda_make_current(c, err);
    return st ? st : cu_check(c, c->api.cuStreamDestroy_v2(s), err, "cuStreamDestroy_v2");
}

ssmc_status rt_cuda_stream_sync(rt_cuda *c, CUstream s, strbuf *err)
{
    ssmc_status st = rt_cuda_make_current(c, err);
    return st ? st : cu_check(c, c->api.cuStreamSynchronize(s), err, "cuStreamSynchronize");
}

ssmc_status rt_cuda_event_new(rt_cuda *c, CUevent *out, strbuf *err)
{
    *out = NULL;
    ssmc_status st = rt_cuda_make_current(c, err);
    return st ? st : cu_check(c, c->api.cuEventCreate(out, CU_EVENT_DEFAULT), err, "cuEventCreate");
}

ssmc_status rt_cuda_event_free(rt_cuda *c, CUevent e, strbuf *err)
{
    if (!e) return SSMC_OK;
    ssmc_status st = rt_cuda_make_current(c, err);
    return st ? st : cu_check(c, c->api.cuEventDestroy_v2(e), err, "cuEventDestroy_v2");
}

ssmc_status rt_cuda_event_record(rt_cuda *c, CUevent e, CUstream s, strbuf *err)
{
    ssmc_status st = rt_cuda_make_current(c, err);
    return st ? st : cu_check(c, c->api.cuEventRecord(e, s), err, "cuEventRecord");
}

ssmc_status rt_cuda_event_sync(rt_cuda *c, CUevent e, strbuf *err)
{
    ssmc_status st = rt_cuda_make_current(c, err);
    return st ? st : cu_check(c, c->api.cuEventSynchronize(e), err, "cuEventSynchronize");
}

ssmc_status rt_cuda_event_elapsed(rt_cuda *c, CUevent start, CUevent end, float *ms, strbuf *err)
{
    ssmc_status st = rt_cuda_make_current(c, err);
    return st ? st : cu_check(c, c->api.cuEventElapsedTime(ms, start, end), err, "cuEventElapsedTime");
}
