/* cuda_bundle.h: what the CUDA code of an AOT bundle runs on. driver/bundle.c
 * compiles the kernels a bundle needs to cubins and PTX with NVRTC at build
 * time and generates the tables below (rt_cb_bundle) and thin entry points
 * around these functions; the bundle compiles this file and
 * runtime/cuda_driver.c (without NVRTC: RT_CUDA_NO_NVRTC) beside them, so at
 * run time it needs libcuda.so.1 alone, opened with dlopen. libssmc holds this
 * file too, for its tests.
 *
 * Kernels are codegen/cuda.c's by pool row (cuda_sig.rows): every run, a
 * forward or a decode, takes rows (NULL: sequence b's states are row b) and
 * has (NULL: every sequence has its state). Each dtype signature has four: T
 * of the call or one step (cuda_sig.one_step), with vector loads (every
 * pointer 16-byte aligned) or without. Each kernel has a cubin per arch built
 * and one PTX; a handle loads, on first use, the image rt_cb_pick chooses for
 * its GPU, as the driver chooses from a fatbinary.
 *
 * Errors: every function returns an ssmc_status and leaves a message in the
 * handle (rt_cb_error); nothing prints. A handle may be used from several
 * threads: a lock serialises the setup of each call (loading, the workspace,
 * the host path's copies), and launches on different streams overlap. */
#ifndef RT_CUDA_BUNDLE_H
#define RT_CUDA_BUNDLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ssmc.h"

typedef struct rt_cb_image {
    int arch;                  /* 90: a cubin for sm_90, or PTX for compute_90 */
    bool ptx;                  /* PTX text, NUL-terminated */
    const unsigned char *data;
    size_t len;
} rt_cb_image;

typedef struct rt_cb_kernel {
    int sig;                   /* the dtype signature (rt_cb_bundle.sigs) */
    bool one_step;             /* T = 1 only */
    bool vec;                  /* needs every pointer 16-byte aligned */
    int first, nimages;        /* its images: images[first .. first + nimages) */
} rt_cb_kernel;

/* One of the kernel's tensor parameters, in their order (the IR's, lets left
 * out): a hidden state (passes/lag.c) is never given a pointer. */
typedef struct rt_cb_tensor {
    const char *name;
    ssmc_role role;
    bool per_step;
    bool hidden;
    int64_t elems;             /* of one sequence's slice (one step's, for per-step tensors) */
} rt_cb_tensor;

enum { RT_CB_IO, RT_CB_PARAMS, RT_CB_STATES }; /* the three dtypes of a signature */

typedef struct rt_cb_bundle {
    const char *model;
    const char *kernel;        /* the kernel's name in every image */
    int ntensors;
    const rt_cb_tensor *tensors;
    int nsigs;
    const ssmc_dtype (*sigs)[3]; /* inputs and outputs, params, states */
    int nkernels;
    const rt_cb_kernel *kernels;
    const rt_cb_image *images;
    int64_t items_per_seq;     /* blocks per sequence */
    unsigned threads;          /* per block */
    unsigned shared_bytes;     /* dynamic shared memory per block */
    int64_t ws_floats;         /* global workspace per block */
} rt_cb_bundle;

/* The image of `n` a GPU of compute capability arch (10 major + minor) runs:
 * the cubin of the highest arch of its major at most arch, else the PTX of the
 * highest arch at most arch (JIT-compiled by the driver), else -1. */
int rt_cb_pick(const rt_cb_image *images, int n, int arch);

typedef struct rt_cb rt_cb;

/* Opens CUDA device `device` (its primary context) through libcuda. *out is
 * set whenever memory allows, on failure too, to hold the message
 * (SSMC_ERR_UNSUPPORTED: no driver, no such GPU, or no image for its arch). */
ssmc_status rt_cb_open(const rt_cb_bundle *b, int device, rt_cb **out);
void rt_cb_close(rt_cb *h); /* NULL is allowed */
/* The message of the last failed call on h ("" after a success). */
const char *rt_cb_error(const rt_cb *h);
/* The GPU's compute capability (e.g. 90). */
int rt_cb_arch(const rt_cb *h);

/* A run on device pointers (ptrs[i]: tensor i of b->tensors, NULL for hidden
 * ones), enqueued on `stream` (NULL: the default stream) with no copies and no
 * synchronisation. rows and has: device pointers or NULL (cuda_sig.rows); the
 * states are pools of however many rows the caller keeps. Every other pointer
 * must be given. */
ssmc_status rt_cb_run(rt_cb *h, int sig, int64_t batch, int64_t T, void *const *ptrs, const int32_t *rows,
                      const uint8_t *has, void *stream);
/* A run on host pointers: copied to the device, run, copied back, with the
 * device synchronised. States (all or none) are [batch, ...]: given, read and
 * written; none, every sequence from the model's initial state. Outputs not
 * given are not copied back. */
ssmc_status rt_cb_run_host(rt_cb *h, int sig, int64_t batch, int64_t T, void *const *ptrs);

#endif
