/* cuda_driver.h: the CUDA driver API and NVRTC, loaded with dlopen at run time.
 *
 * No CUDA header is needed to build: the few driver types used are declared
 * here (ABI-compatible with cuda.h on 64-bit Linux). rt_nvrtc works without a
 * GPU or a driver; rt_cuda needs libcuda and a device and reports
 * SSMC_ERR_UNSUPPORTED, with the reason, when either is missing. Every driver
 * and NVRTC call is checked; a failure's message names the function and the
 * driver's error name and text. Handles are independent: two models may each
 * load NVRTC and open the device in one process, from any threads (each rt_cuda
 * call makes the context current on the calling thread first). */
#ifndef RT_CUDA_H
#define RT_CUDA_H

#include <stdbool.h>
#include <stddef.h>

#include "ssmc.h"
#include "support/support.h"

typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;
typedef struct CUctx_st *CUcontext;
typedef struct CUmod_st *CUmodule;
typedef struct CUfunc_st *CUfunction;
typedef struct CUstream_st *CUstream;
typedef struct CUevent_st *CUevent;

/* ---- NVRTC (not in AOT bundles: runtime/cuda_driver.c built with RT_CUDA_NO_NVRTC) ---- */
typedef struct rt_nvrtc rt_nvrtc;

/* Loads NVRTC from the usual library names and CUDA install paths. */
ssmc_status rt_nvrtc_load(rt_nvrtc **out, strbuf *err);
/* Loads NVRTC from exactly `library` (a name for dlopen or a path). */
ssmc_status rt_nvrtc_load_from(const char *library, rt_nvrtc **out, strbuf *err);
void rt_nvrtc_free(rt_nvrtc *n);
void rt_nvrtc_version(const rt_nvrtc *n, int *major, int *minor);
/* "nvrtc 13.0": part of every kernel cache key. */
const char *rt_nvrtc_version_string(const rt_nvrtc *n);
/* The include directory passed with -I ("" when none was found). */
const char *rt_nvrtc_include_dir(const rt_nvrtc *n);

/* Compiles CUDA C `src` (named `prog_name` in the log) for `arch` ("sm_90",
 * "sm_90a"): a cubin when `cubin`, else PTX for the matching compute_ target.
 * Options: --gpu-architecture, --std=c++17, -default-device, -I the CUDA
 * include directory when found, then extra_opts[0..nopts). On success *image is
 * malloc'd (PTX text with its NUL, counted in *image_len) and `log` receives
 * NVRTC's warnings if any. On failure (SSMC_ERR_BACKEND, or SSMC_ERR_ARG for a
 * malformed arch) `log` gets a message naming the program and arch, followed by
 * NVRTC's log, whose lines read "prog_name(LINE): error: ...". */
ssmc_status rt_nvrtc_compile(rt_nvrtc *n, const char *src, const char *prog_name, const char *arch, bool cubin,
                             const char *const *extra_opts, int nopts, char **image, size_t *image_len,
                             strbuf *log);

/* ---- the driver ---- */
typedef struct rt_cuda rt_cuda;

/* Loads libcuda, initialises it and retains device 0's primary context. */
ssmc_status rt_cuda_open(rt_cuda **out, strbuf *err);
/* The same for device `device` (CUDA's ordinal). */
ssmc_status rt_cuda_open_device(int device, rt_cuda **out, strbuf *err);
/* The same with an explicit library (a name for dlopen or a path) and device. */
ssmc_status rt_cuda_open_from(const char *library, int device, rt_cuda **out, strbuf *err);
void rt_cuda_close(rt_cuda *c); /* releases the primary context; NULL is allowed */

int rt_cuda_arch(const rt_cuda *c);              /* compute capability as 10*major+minor, e.g. 90 */
const char *rt_cuda_arch_name(const rt_cuda *c); /* "sm_90" */
int rt_cuda_sm_count(const rt_cuda *c);
const char *rt_cuda_device_name(const rt_cuda *c);
size_t rt_cuda_max_shared(const rt_cuda *c);     /* dynamic shared memory per block, opt-in limit */
size_t rt_cuda_total_mem(const rt_cuda *c);
int rt_cuda_driver_version(const rt_cuda *c);    /* e.g. 13000 */
/* Makes the context current on this thread (every call below does it too). */
ssmc_status rt_cuda_make_current(rt_cuda *c, strbuf *err);
ssmc_status rt_cuda_sync(rt_cuda *c, strbuf *err); /* the whole context */

/* memory; a zero-byte alloc gives 0, and freeing 0 does nothing */
ssmc_status rt_cuda_alloc(rt_cuda *c, size_t bytes, CUdeviceptr *out, strbuf *err);
ssmc_status rt_cuda_free(rt_cuda *c, CUdeviceptr p, strbuf *err);
ssmc_status rt_cuda_htod(rt_cuda *c, CUdeviceptr dst, const void *src, size_t bytes, strbuf *err);
ssmc_status rt_cuda_dtoh(rt_cuda *c, void *dst, CUdeviceptr src, size_t bytes, strbuf *err);
ssmc_status rt_cuda_dtod(rt_cuda *c, CUdeviceptr dst, CUdeviceptr src, size_t bytes, strbuf *err);
ssmc_status rt_cuda_memset(rt_cuda *c, CUdeviceptr dst, unsigned char byte, size_t bytes, strbuf *err);
ssmc_status rt_cuda_htod_async(rt_cuda *c, CUdeviceptr dst, const void *src, size_t bytes, CUstream s, strbuf *err);
ssmc_status rt_cuda_dtoh_async(rt_cuda *c, void *dst, CUdeviceptr src, size_t bytes, CUstream s, strbuf *err);
ssmc_status rt_cuda_dtod_async(rt_cuda *c, CUdeviceptr dst, CUdeviceptr src, size_t bytes, CUstream s, strbuf *err);
/* `height` rows of `width` bytes, `spitch` apart at src and `dpitch` at dst
 * (pitches at most the driver's limit, 2^31 - 1 on current GPUs). */
ssmc_status rt_cuda_dtod_2d_async(rt_cuda *c, CUdeviceptr dst, size_t dpitch, CUdeviceptr src, size_t spitch,
                                  size_t width, size_t height, CUstream s, strbuf *err);
ssmc_status rt_cuda_memset_async(rt_cuda *c, CUdeviceptr dst, unsigned char byte, size_t bytes, CUstream s,
                                 strbuf *err);

/* modules: `image` is a cubin or NUL-terminated PTX; a PTX JIT failure's log is
 * included in the message */
ssmc_status rt_cuda_module_load(rt_cuda *c, const void *image, CUmodule *out, strbuf *err);
ssmc_status rt_cuda_module_unload(rt_cuda *c, CUmodule m, strbuf *err);
ssmc_status rt_cuda_module_function(rt_cuda *c, CUmodule m, const char *name, CUfunction *out, strbuf *err);
ssmc_status rt_cuda_module_global(rt_cuda *c, CUmodule m, const char *name, CUdeviceptr *ptr, size_t *bytes,
                                  strbuf *err);

/* Launches f on `stream` (NULL: the default stream). params[i] points at the
 * i-th kernel argument. Above 48 KiB of dynamic shared memory the function's
 * limit is raised first. */
ssmc_status rt_cuda_launch(rt_cuda *c, CUfunction f, const unsigned grid[3], const unsigned block[3],
                           unsigned shared_bytes, CUstream stream, void **params, strbuf *err);

/* streams (non-blocking with respect to the default stream) and events */
ssmc_status rt_cuda_stream_new(rt_cuda *c, CUstream *out, strbuf *err);
ssmc_status rt_cuda_stream_free(rt_cuda *c, CUstream s, strbuf *err);
ssmc_status rt_cuda_stream_sync(rt_cuda *c, CUstream s, strbuf *err);
ssmc_status rt_cuda_event_new(rt_cuda *c, CUevent *out, strbuf *err);
ssmc_status rt_cuda_event_free(rt_cuda *c, CUevent e, strbuf *err);
ssmc_status rt_cuda_event_record(rt_cuda *c, CUevent e, CUstream s, strbuf *err);
ssmc_status rt_cuda_event_sync(rt_cuda *c, CUevent e, strbuf *err);
/* Milliseconds between two recorded, completed events. */
ssmc_status rt_cuda_event_elapsed(rt_cuda *c, CUevent start, CUevent end, float *ms, strbuf *err);

#endif
