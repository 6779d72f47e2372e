/* cuda_main.c: a program that runs an ssmc AOT bundle of examples/mamba2.ssm
 * on a GPU through its header alone: no ssmc, no LLVM, no NVRTC, no CUDA
 * toolkit (the device buffers it needs come from libcuda.so.1, opened here
 * with dlopen as the bundle does). Built by test_cuda_aot.c (which runs it
 * only to see it refuse cleanly where there is no GPU) and test_gpu_aot.c.
 *
 *   cuda_main DIR SIG IO P S MODE B T ROWS
 * SIG: the signature (MAMBA2_CUDA_*), IO, P, S: its element sizes in bytes
 * (inputs and outputs, params, states). Tensors are read from DIR/<name>.bin
 * in those dtypes (DIR/S.bin: ROWS rows); results go to DIR/y.out and
 * DIR/S.out (the whole pool). MODE:
 *   host    mamba2_cuda_run_host (host tensors; no S.bin: no state given)
 *   run     mamba2_cuda_run on device buffers, the default stream
 *   decode  mamba2_cuda_decode on device buffers: DIR/idx.bin (int32 [B]) and,
 *           if present, DIR/has.bin (uint8 [B]), copied to the device
 *   step    mamba2_cuda_decode_step (T must be 1), the same inputs
 * Bad calls are checked to be refused first. Before exiting it looks for
 * NVRTC among the libraries mapped into the process.
 * Exit status: 0; 1 a file error; 2 a call failed; 3 a bad call was accepted;
 * 4 no GPU (MAMBA2_ERR_NODEVICE: the message is printed); 5 NVRTC was loaded. */
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mamba2.h"

typedef unsigned long long dptr;
static int (*cu_alloc)(dptr *, size_t), (*cu_free)(dptr), (*cu_htod)(dptr, const void *, size_t),
    (*cu_dtoh)(void *, dptr, size_t), (*cu_sync)(void);

static void *load(const char *dir, const char *name, size_t n, int optional)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.bin", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f && optional) return NULL;
    void *p = malloc(n ? n : 1);
    if (!f || !p || fread(p, 1, n, f) != n) {
        fprintf(stderr, "cannot read %s (%zu bytes)\n", path, n);
        exit(1);
    }
    fclose(f);
    return p;
}

static void save(const char *dir, const char *name, const void *p, size_t n)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.out", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, 1, n, f) != n || fclose(f) != 0) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(1);
    }
}

static void sym(void *lib, const char *name, void *fn)
{
    void *s = dlsym(lib, name);
    if (!s) {
        fprintf(stderr, "libcuda.so.1 lacks %s\n", name);
        exit(2);
    }
    memcpy(fn, &s, sizeof s);
}

static dptr to_device(const void *host, size_t n)
{
    dptr d = 0;
    if (cu_alloc(&d, n ? n : 1) || (host && cu_htod(d, host, n))) {
        fprintf(stderr, "cuMemAlloc or cuMemcpyHtoD failed\n");
        exit(2);
    }
    return d;
}

static int nvrtc_mapped(void)
{
    FILE *f = fopen("/proc/self/maps", "r");
    char line[4096];
    int found = 0;
    while (f && fgets(line, sizeof line, f))
        if (strstr(line, "nvrtc")) {
            fprintf(stderr, "mapped: %s", line);
            found = 1;
        }
    if (f) fclose(f);
    return found;
}

int main(int argc, char **argv)
{
    if (argc != 10) {
        fprintf(stderr, "usage: cuda_main DIR SIG IO P S host|run|decode|step B T ROWS\n");
        return 1;
    }
    const char *dir = argv[1], *mode = argv[6];
    int sig = atoi(argv[2]);
    size_t io = (size_t)atoi(argv[3]), pb = (size_t)atoi(argv[4]), sb = (size_t)atoi(argv[5]);
    int64_t B = atoll(argv[7]), T = atoll(argv[8]), R = atoll(argv[9]);
    const size_t H = MAMBA2_DIM_H, P = MAMBA2_DIM_P, N = MAMBA2_DIM_N, BT = (size_t)(B * T);
    int host = strcmp(mode, "host") == 0, rows = strcmp(mode, "decode") == 0 || strcmp(mode, "step") == 0;
    if (!rows) R = B;

    mamba2_cuda *g = NULL;
    int rc = mamba2_cuda_open(0, &g);
    if (rc == MAMBA2_ERR_NODEVICE) {
        fprintf(stderr, "no GPU: %s\n", mamba2_cuda_error(g));
        mamba2_cuda_close(g);
        return 4;
    }
    if (rc != 0) {
        fprintf(stderr, "mamba2_cuda_open: %d: %s\n", rc, mamba2_cuda_error(g));
        return 2;
    }

    size_t nx = BT * H * P * io, ndt = BT * H * io, nb = BT * N * io, nh = H * pb, ns = (size_t)R * H * P * N * sb;
    void *x = load(dir, "x", nx, 0), *dt = load(dir, "dt", ndt, 0), *Bm = load(dir, "B", nb, 0),
         *C = load(dir, "C", nb, 0), *A_log = load(dir, "A_log", nh, 0), *D = load(dir, "D", nh, 0),
         *dt_bias = load(dir, "dt_bias", nh, 0), *S = load(dir, "S", ns, host), *y = malloc(nx);
    int32_t *idx = rows ? load(dir, "idx", (size_t)B * 4, 0) : NULL;
    uint8_t *has = rows ? load(dir, "has", (size_t)B, 1) : NULL;
    if (!y) return 1;
    memset(y, 0xff, nx); /* poisoned (NaN in f32, bf16 and f16): padding slots keep it */

    mamba2_cuda_tensors t = {x, dt, Bm, C, A_log, D, dt_bias, S, y};
    if (host) {
        /* bad calls: an unknown signature, a missing input */
        mamba2_cuda_tensors bad = t;
        bad.mamba2_C = NULL;
        if (mamba2_cuda_run_host(g, 99, B, T, &t) != MAMBA2_ERR_ARG || mamba2_cuda_run_host(g, sig, B, T, &bad) != MAMBA2_ERR_ARG ||
            !*mamba2_cuda_error(g))
            return 3;
        if ((rc = mamba2_cuda_run_host(g, sig, B, T, &t)) != 0) {
            fprintf(stderr, "mamba2_cuda_run_host: %d: %s\n", rc, mamba2_cuda_error(g));
            return 2;
        }
        save(dir, "y", y, nx);
        if (S) save(dir, "S", S, ns);
    } else {
        /* the primary context the bundle opened is current on this thread */
        void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
        if (!lib) return 2;
        sym(lib, "cuMemAlloc_v2", &cu_alloc);
        sym(lib, "cuMemFree_v2", &cu_free);
        sym(lib, "cuMemcpyHtoD_v2", &cu_htod);
        sym(lib, "cuMemcpyDtoH_v2", &cu_dtoh);
        sym(lib, "cuCtxSynchronize", &cu_sync);
        dptr dx = to_device(x, nx), ddt = to_device(dt, ndt), dB = to_device(Bm, nb), dC = to_device(C, nb),
             dA = to_device(A_log, nh), dD = to_device(D, nh), dbias = to_device(dt_bias, nh), dS = to_device(S, ns),
             dy = to_device(y, nx), didx = rows ? to_device(idx, (size_t)B * 4) : 0,
             dhas = has ? to_device(has, (size_t)B) : 0;
        mamba2_cuda_tensors d = {(void *)(uintptr_t)dx, (void *)(uintptr_t)ddt, (void *)(uintptr_t)dB,
                                 (void *)(uintptr_t)dC, (void *)(uintptr_t)dA, (void *)(uintptr_t)dD,
                                 (void *)(uintptr_t)dbias, (void *)(uintptr_t)dS, (void *)(uintptr_t)dy};
        mamba2_cuda_tensors bad = d;
        bad.mamba2_S = NULL; /* a run on device pointers takes every tensor */
        if (mamba2_cuda_run(g, sig, B, T, &bad, NULL) != MAMBA2_ERR_ARG ||
            mamba2_cuda_decode(g, sig, B, T, &d, NULL, NULL, NULL) != MAMBA2_ERR_ARG)
            return 3;
        const int32_t *ri = (const int32_t *)(uintptr_t)didx;
        const uint8_t *rh = (const uint8_t *)(uintptr_t)dhas;
        if (strcmp(mode, "run") == 0) rc = mamba2_cuda_run(g, sig, B, T, &d, NULL);
        else if (strcmp(mode, "decode") == 0) rc = mamba2_cuda_decode(g, sig, B, T, &d, ri, rh, NULL);
        else if (T == 1) rc = mamba2_cuda_decode_step(g, sig, B, &d, ri, rh, NULL);
        else rc = -1;
        if (rc != 0 || cu_sync() != 0) {
            fprintf(stderr, "mamba2_cuda_%s: %d: %s\n", mode, rc, mamba2_cuda_error(g));
            return 2;
        }
        void *Sout = malloc(ns);
        if (!Sout || cu_dtoh(y, dy, nx) || cu_dtoh(Sout, dS, ns)) return 2;
        save(dir, "y", y, nx);
        save(dir, "S", Sout, ns);
        dptr all[] = {dx, ddt, dB, dC, dA, dD, dbias, dS, dy, didx, dhas};
        for (size_t i = 0; i < sizeof all / sizeof *all; i++)
            if (all[i]) cu_free(all[i]);
        free(Sout);
    }
    mamba2_cuda_close(g);
    if (nvrtc_mapped()) return 5;
    return 0;
}
