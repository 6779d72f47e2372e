// fake_cuda.cpp: an emulated CUDA driver and NVRTC in one library, for
// tests/unit/test_cuda_emu.c. Pointed at by SSMC_CUDA_DRIVER and SSMC_NVRTC,
// it lets the real CUDA backend (codegen/cuda_backend.c, runtime/cuda_driver.c)
// and the gradient driver's device path run without a GPU: "device memory" is
// host memory (so a test passes host buffers as device pointers), allocated
// full of 0xff bytes (NaN in every float dtype, so a read of memory nothing
// wrote shows); streams are synchronous; "NVRTC" compiles the source as C++
// against cuda_emu.h (kernels on CPU threads) into a shared object, which is
// the "cubin" a module load dlopens. Only the functions runtime/cuda_driver.c
// loads are here. Environment (set by the test): SSMC_EMU_HEADER, the path of
// cuda_emu.h; SSMC_EMU_WORK, a directory for sources and objects (a
// precompiled cuda_emu.h there is used when present); CXX, the compiler.
// emu_host_copies, not the driver's, counts the copies between host and
// device memory, for tests of what the device entry points copy.
#include <dlfcn.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;

struct cuda_memcpy2d { // runtime/cuda_driver.c's copy of CUDA_MEMCPY2D
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
};

static const char magic[8] = {'E', 'M', 'U', 'S', 'O', 0, 0, 0};
static std::atomic<int> serial{0};
static std::atomic<long> host_copies{0}; // copies between host and device memory (emu_host_copies)

static const char *env_or(const char *name, const char *fallback)
{
    const char *v = getenv(name);
    return v && *v ? v : fallback;
}

static void *ptr(CUdeviceptr p) { return (void *)(uintptr_t)p; }

extern "C" {

// Not the driver's: how many copies between host and device memory this
// process made, for a test to check that the device entry points make none.
long emu_host_copies(void) { return host_copies; }

CUresult cuInit(unsigned) { return 0; }
CUresult cuDriverGetVersion(int *v) { *v = 13000; return 0; }
CUresult cuGetErrorName(CUresult r, const char **s) { *s = r ? "CUDA_ERROR_EMULATED" : "CUDA_SUCCESS"; return 0; }
CUresult cuGetErrorString(CUresult, const char **s) { *s = "an error of the emulated driver"; return 0; }
CUresult cuDeviceGetCount(int *n) { *n = 1; return 0; }
CUresult cuDeviceGet(CUdevice *d, int o) { *d = o; return 0; }
CUresult cuDeviceGetName(char *n, int len, CUdevice) { snprintf(n, (size_t)len, "cuda_emu"); return 0; }
CUresult cuDeviceGetAttribute(int *v, int attr, CUdevice)
{
    switch (attr) {
    case 16: *v = 4; break;           // multiprocessors
    case 75: *v = 9; break;           // compute capability 9.0
    case 76: *v = 0; break;
    case 97: *v = 227 * 1024; break;  // shared memory per block, opt-in
    default: *v = 0;
    }
    return 0;
}
CUresult cuDeviceTotalMem_v2(size_t *b, CUdevice) { *b = (size_t)1 << 33; return 0; }
CUresult cuDevicePrimaryCtxRetain(void **c, CUdevice) { *c = (void *)&serial; return 0; }
CUresult cuDevicePrimaryCtxRelease_v2(CUdevice) { return 0; }
CUresult cuCtxSetCurrent(void *) { return 0; }
CUresult cuCtxSynchronize(void) { return 0; }

CUresult cuMemAlloc_v2(CUdeviceptr *p, size_t n)
{
    void *q = aligned_alloc(256, (n + 255) / 256 * 256);
    if (!q) return 2;
    memset(q, 0xff, n);
    *p = (CUdeviceptr)(uintptr_t)q;
    return 0;
}
CUresult cuMemFree_v2(CUdeviceptr p) { free(ptr(p)); return 0; }
CUresult cuMemcpyHtoD_v2(CUdeviceptr d, const void *s, size_t n) { host_copies++; memcpy(ptr(d), s, n); return 0; }
CUresult cuMemcpyDtoH_v2(void *d, CUdeviceptr s, size_t n) { host_copies++; memcpy(d, ptr(s), n); return 0; }
CUresult cuMemcpyDtoD_v2(CUdeviceptr d, CUdeviceptr s, size_t n) { memmove(ptr(d), ptr(s), n); return 0; }
CUresult cuMemsetD8_v2(CUdeviceptr d, unsigned char b, size_t n) { memset(ptr(d), b, n); return 0; }
CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr d, const void *s, size_t n, void *) { return cuMemcpyHtoD_v2(d, s, n); }
CUresult cuMemcpyDtoHAsync_v2(void *d, CUdeviceptr s, size_t n, void *) { return cuMemcpyDtoH_v2(d, s, n); }
CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr d, CUdeviceptr s, size_t n, void *) { return cuMemcpyDtoD_v2(d, s, n); }
CUresult cuMemsetD8Async(CUdeviceptr d, unsigned char b, size_t n, void *) { return cuMemsetD8_v2(d, b, n); }
CUresult cuMemcpy2DAsync_v2(const cuda_memcpy2d *p, void *)
{
    if (p->srcMemoryType != 2 || p->dstMemoryType != 2 || p->WidthInBytes > p->srcPitch || p->WidthInBytes > p->dstPitch)
        return 1; // only device to device, rows that do not overlap their pitch
    for (size_t r = 0; r < p->Height; r++)
        memcpy((char *)ptr(p->dstDevice) + p->dstXInBytes + (p->dstY + r) * p->dstPitch,
               (const char *)ptr(p->srcDevice) + p->srcXInBytes + (p->srcY + r) * p->srcPitch, p->WidthInBytes);
    return 0;
}

CUresult cuModuleLoadDataEx(void **mod, const void *image, unsigned, int *, void **)
{
    if (memcmp(image, magic, sizeof magic) != 0) return 200; // CUDA_ERROR_INVALID_IMAGE
    uint64_t len;
    memcpy(&len, (const char *)image + 8, 8);
    std::string path = std::string(env_or("SSMC_EMU_WORK", "/tmp")) + "/mod" + std::to_string(getpid()) + "_" +
                       std::to_string(serial++) + ".so";
    FILE *f = fopen(path.c_str(), "wb");
    if (!f || fwrite((const char *)image + 16, 1, len, f) != len) {
        if (f) fclose(f);
        return 200;
    }
    fclose(f);
    void *h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    unlink(path.c_str());
    if (!h) {
        fprintf(stderr, "fake_cuda: %s\n", dlerror());
        return 200;
    }
    *mod = h;
    return 0;
}
CUresult cuModuleUnload(void *mod) { return dlclose(mod) ? 1 : 0; }
CUresult cuModuleGetFunction(void **f, void *mod, const char *name)
{
    *f = dlsym(mod, (std::string("emu_entry_") + name).c_str());
    return *f ? 0 : 500; // CUDA_ERROR_NOT_FOUND
}
CUresult cuModuleGetGlobal_v2(CUdeviceptr *, size_t *, void *, const char *) { return 500; }
CUresult cuFuncSetAttribute(void *, int, int) { return 0; }
CUresult cuLaunchKernel(void *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                        unsigned shared, void *, void **params, void **)
{
    if (gy != 1 || gz != 1 || by != 1 || bz != 1 || bx > 1024) return 1;
    typedef int (*entry)(long long, int, unsigned, void **);
    entry e;
    memcpy(&e, &f, sizeof e);
    auto t0 = std::chrono::steady_clock::now();
    int r = e(gx, (int)bx, shared, params);
    if (getenv("SSMC_EMU_VERBOSE"))
        fprintf(stderr, "fake_cuda: launch %u x %u in %.3f s\n", gx, bx,
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    return r;
}
CUresult cuStreamCreate(void **s, unsigned) { *s = malloc(1); return 0; }
CUresult cuStreamDestroy_v2(void *s) { free(s); return 0; }
CUresult cuStreamSynchronize(void *) { return 0; }
CUresult cuEventCreate(void **e, unsigned) { *e = calloc(1, sizeof(double)); return 0; }
CUresult cuEventDestroy_v2(void *e) { free(e); return 0; }
CUresult cuEventRecord(void *e, void *)
{
    *(double *)e = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
    return 0;
}
CUresult cuEventSynchronize(void *) { return 0; }
CUresult cuEventElapsedTime(float *ms, void *a, void *b) { *ms = (float)(*(double *)b - *(double *)a); return 0; }

// ---- NVRTC ----

struct emu_prog {
    std::string src, name, log, image;
};

const char *nvrtcGetErrorString(int r) { return r ? "NVRTC_ERROR_COMPILATION (emulated)" : "NVRTC_SUCCESS"; }
// a version no real NVRTC has, so kernel-cache keys never match a real one
int nvrtcVersion(int *a, int *b) { *a = 0; *b = 1; return 0; }
int nvrtcCreateProgram(emu_prog **p, const char *src, const char *name, int, const char *const *, const char *const *)
{
    *p = new emu_prog{src, name ? name : "prog", "", ""};
    return 0;
}
int nvrtcDestroyProgram(emu_prog **p)
{
    delete *p;
    *p = nullptr;
    return 0;
}

// The names of the source's kernels: extern "C" __global__ void [__launch_bounds__(N)] NAME(, where NAME
// may be a macro of the source (#define NAME name: the chunked kernels, codegen/cuda_chunk.c)
static std::vector<std::string> kernels(const std::string &src)
{
    std::vector<std::string> out;
    const std::string key = "extern \"C\" __global__ void ";
    for (size_t at = src.find(key); at != std::string::npos; at = src.find(key, at + 1)) {
        size_t p = at + key.size();
        if (src.compare(p, 18, "__launch_bounds__(") == 0) p = src.find(')', p) + 2;
        size_t e = src.find('(', p);
        std::string name = src.substr(p, e - p), def = "#define " + name + " ";
        size_t d = src.find(def);
        if (d != std::string::npos) {
            size_t v = d + def.size(), end = src.find('\n', v);
            name = src.substr(v, end == std::string::npos ? std::string::npos : end - v);
        }
        out.push_back(name);
    }
    return out;
}

int nvrtcCompileProgram(emu_prog *p, int, const char *const *)
{
    std::string work = env_or("SSMC_EMU_WORK", "/tmp"), header = env_or("SSMC_EMU_HEADER", "cuda_emu.h");
    std::string base = work + "/prog" + std::to_string(getpid()) + "_" + std::to_string(serial++);
    std::string cpp = base + ".cpp", so = base + ".so", log = base + ".log";
    std::string pch = work + "/cuda_emu.h"; // with cuda_emu.h.gch beside it when the test made one
    FILE *f = fopen(cpp.c_str(), "w");
    if (!f) return 6;
    fprintf(f, "#include \"%s\"\n#line 1 \"%s\"\n%s\n#define EMU_TAIL\n#include \"%s\"\n",
            access(pch.c_str(), R_OK) == 0 ? pch.c_str() : header.c_str(), p->name.c_str(), p->src.c_str(), header.c_str());
    for (const std::string &k : kernels(p->src))
        fprintf(f, "extern \"C\" int emu_entry_%s(long long b, int t, unsigned s, void **p) { return emu_run(%s, b, t, s, p); }\n",
                k.c_str(), k.c_str());
    fclose(f);
    std::string cmd = std::string(env_or("CXX", "c++")) + " -std=c++17 -O1 -shared -fPIC -w -o " + so + " " + cpp +
                      " -lpthread > " + log + " 2>&1";
    auto t0 = std::chrono::steady_clock::now();
    int rc = system(cmd.c_str());
    if (getenv("SSMC_EMU_VERBOSE"))
        fprintf(stderr, "fake_cuda: compiled %s in %.2f s\n", p->name.c_str(),
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    std::string text;
    if (FILE *l = fopen(log.c_str(), "r")) {
        char buf[4096];
        size_t n;
        while ((n = fread(buf, 1, sizeof buf, l)) > 0) text.append(buf, n);
        fclose(l);
    }
    p->log = text;
    if (rc == 0)
        if (FILE *s = fopen(so.c_str(), "rb")) {
            std::string bytes;
            char buf[65536];
            size_t n;
            while ((n = fread(buf, 1, sizeof buf, s)) > 0) bytes.append(buf, n);
            fclose(s);
            uint64_t len = bytes.size();
            p->image.assign(magic, sizeof magic);
            p->image.append((const char *)&len, 8);
            p->image += bytes;
        }
    unlink(cpp.c_str());
    unlink(so.c_str());
    unlink(log.c_str());
    return rc == 0 && !p->image.empty() ? 0 : 6;
}
int nvrtcGetProgramLogSize(emu_prog *p, size_t *n) { *n = p->log.size() + 1; return 0; }
int nvrtcGetProgramLog(emu_prog *p, char *out) { memcpy(out, p->log.c_str(), p->log.size() + 1); return 0; }
int nvrtcGetPTXSize(emu_prog *p, size_t *n) { *n = p->src.size() + 1; return 0; } // the "PTX" is the source
int nvrtcGetPTX(emu_prog *p, char *out) { memcpy(out, p->src.c_str(), p->src.size() + 1); return 0; }
int nvrtcGetCUBINSize(emu_prog *p, size_t *n) { *n = p->image.size(); return 0; }
int nvrtcGetCUBIN(emu_prog *p, char *out) { memcpy(out, p->image.data(), p->image.size()); return 0; }
}
