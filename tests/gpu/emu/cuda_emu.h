// cuda_emu.h: the few CUDA builtins the kernels of codegen/cuda.c use, on CPU
// threads, for tests/unit/test_cuda_emu.c. One std::thread per GPU thread,
// blocks one after another; __syncthreads is a barrier over the block and a
// warp shuffle goes through a per-warp exchange between two warp barriers, so a
// kernel whose lanes disagree on their shuffles deadlocks (the test times out)
// rather than computing garbage. Vector loads check their alignment. Include it
// before the generated source, then define EMU_KERNEL as the kernel's name and
// include it again with EMU_TAIL defined for emu_launch.
#ifndef EMU_TAIL
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>
#include <thread>
#include <utility>
#include <vector>
#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__
#define __constant__
struct emu_dim3 { unsigned x, y, z; };
static thread_local emu_dim3 threadIdx, blockIdx, gridDim;
/* A launch's dynamic shared memory: its bytes (rounded up to 16) end where a
 * page that may not be read or written begins, so a kernel that reads past what
 * its launch gave it faults here as on a GPU (which compute-sanitizer reports) */
static float *emu_smem_base;
static size_t emu_smem_bytes;
#define SSMC_DYN_SMEM float *const ssmc_smem = emu_smem_base
static pthread_barrier_t emu_block_barrier, emu_warp_barrier[32];
static float emu_exchange[32][32];
static inline void __syncthreads() { pthread_barrier_wait(&emu_block_barrier); }
static inline float __shfl_xor_sync(unsigned, float v, int o)
{
    int lane = threadIdx.x % 32, w = threadIdx.x / 32;
    emu_exchange[w][lane] = v;
    pthread_barrier_wait(&emu_warp_barrier[w]);
    float r = emu_exchange[w][lane ^ o];
    pthread_barrier_wait(&emu_warp_barrier[w]);
    return r;
}
/* mma.sync.m16n8k16.row.col.f32.bf16.bf16.f32 (codegen/cuda_chunk.c's ck_mma):
 * the warp's fragments exchanged, each lane's four results computed from the
 * whole A (16 x 16) and B (16 x 8) in the PTX fragment layout */
static unsigned emu_mma_a[32][32][4], emu_mma_b[32][32][2];
static inline float emu_bf16(unsigned short b)
{
    unsigned u = (unsigned)b << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static inline void ck_mma(float *d, unsigned a0, unsigned a1, unsigned a2, unsigned a3, unsigned b0, unsigned b1)
{
    int lane = threadIdx.x % 32, w = threadIdx.x / 32;
    unsigned *a = emu_mma_a[w][lane];
    a[0] = a0, a[1] = a1, a[2] = a2, a[3] = a3;
    emu_mma_b[w][lane][0] = b0, emu_mma_b[w][lane][1] = b1;
    pthread_barrier_wait(&emu_warp_barrier[w]);
    float A[16][16], Bm[16][8];
    for (int l = 0; l < 32; l++) {
        int g = l >> 2, t = l & 3;
        const unsigned *x = emu_mma_a[w][l], *y = emu_mma_b[w][l];
        for (int h = 0; h < 2; h++) {
            A[g][2 * t + h] = emu_bf16((unsigned short)(x[0] >> (16 * h)));
            A[g + 8][2 * t + h] = emu_bf16((unsigned short)(x[1] >> (16 * h)));
            A[g][2 * t + 8 + h] = emu_bf16((unsigned short)(x[2] >> (16 * h)));
            A[g + 8][2 * t + 8 + h] = emu_bf16((unsigned short)(x[3] >> (16 * h)));
            Bm[2 * t + h][g] = emu_bf16((unsigned short)(y[0] >> (16 * h)));
            Bm[2 * t + 8 + h][g] = emu_bf16((unsigned short)(y[1] >> (16 * h)));
        }
    }
    pthread_barrier_wait(&emu_warp_barrier[w]);
    int g = lane >> 2, t = lane & 3;
    for (int e = 0; e < 4; e++) {
        int r = g + (e >> 1) * 8, c = 2 * t + (e & 1);
        float acc = 0;
        for (int k = 0; k < 16; k++) acc += A[r][k] * Bm[k][c];
        d[e] += acc;
    }
}
static inline float emu_exchange_get(float v, int src)
{
    int lane = threadIdx.x % 32, w = threadIdx.x / 32;
    emu_exchange[w][lane] = v;
    pthread_barrier_wait(&emu_warp_barrier[w]);
    float r = emu_exchange[w][src & 31];
    pthread_barrier_wait(&emu_warp_barrier[w]);
    return r;
}
static inline float __shfl_up_sync(unsigned, float v, int o)
{
    int lane = threadIdx.x % 32;
    return emu_exchange_get(v, lane >= o ? lane - o : lane);
}
static inline float __shfl_sync(unsigned, float v, int src) { return emu_exchange_get(v, src); }
static inline float __shfl_down_sync(unsigned, float v, int o)
{
    int lane = threadIdx.x % 32;
    return emu_exchange_get(v, lane + o < 32 ? lane + o : lane);
}
/* atomicAdd on a float (shared or global memory): one lock for every thread of the launch */
static inline float atomicAdd(float *p, float v)
{
    static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_lock(&mu);
    float old = *p;
    *p = old + v;
    pthread_mutex_unlock(&mu);
    return old;
}
static inline float __uint_as_float(unsigned u) { float f; memcpy(&f, &u, 4); return f; }
static inline float __int_as_float(int u) { float f; memcpy(&f, &u, 4); return f; }
static inline unsigned __float_as_uint(float f) { unsigned u; memcpy(&u, &f, 4); return u; }
struct float2 { float x, y; };
struct float4 { float x, y, z, w; };
struct double2 { double x, y; };
struct uint2 { unsigned x, y; };
struct uint4 { unsigned x, y, z, w; };
template <class T> static inline T __ldg(const T *p)
{
    if ((sizeof(T) == 8 || sizeof(T) == 16) && ((uintptr_t)p % sizeof(T))) {
        fprintf(stderr, "cuda_emu: misaligned %zu-byte load at %p\n", sizeof(T), (const void *)p);
        abort();
    }
    return *p;
}
#else
#ifndef EMU_TAIL_DONE
#define EMU_TAIL_DONE
/* The launch's `shared` bytes of dynamic shared memory, ending at a guard page. */
static void emu_smem_map(size_t shared, void **map, size_t *len)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE), bytes = (shared + 15) / 16 * 16, data = (bytes + page - 1) / page * page;
    *len = data + page;
    *map = mmap(NULL, *len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (*map == MAP_FAILED || mprotect((char *)*map + data, page, PROT_NONE) != 0) {
        fprintf(stderr, "cuda_emu: cannot map %zu bytes of shared memory\n", shared);
        abort();
    }
    emu_smem_base = (float *)((char *)*map + data - bytes);
    emu_smem_bytes = bytes;
}
/* Runs `body` on every thread of every block, one block after another: one
 * host thread per CUDA thread for the whole launch, which walks the blocks in
 * order; shared memory (`shared` bytes) is garbage (NaN) at each block's start. */
template <class F> static void emu_blocks(long long blocks, int threads, unsigned shared, const F &body)
{
    void *map;
    size_t len;
    emu_smem_map(shared, &map, &len);
    pthread_barrier_init(&emu_block_barrier, NULL, (unsigned)threads);
    for (int w = 0; w * 32 < threads; w++)
        pthread_barrier_init(&emu_warp_barrier[w], NULL, (unsigned)(threads - w * 32 < 32 ? threads - w * 32 : 32));
    std::vector<std::thread> th;
    for (int i = 0; i < threads; i++)
        th.emplace_back([=, &body] {
            threadIdx.x = (unsigned)i;
            gridDim.x = (unsigned)blocks;
            for (long long b = 0; b < blocks; b++) {
                if (i == 0)
                    for (size_t k = 0; k < emu_smem_bytes / sizeof(float); k++) emu_smem_base[k] = NAN; /* garbage */
                pthread_barrier_wait(&emu_block_barrier); /* the block's start */
                blockIdx.x = (unsigned)b;
                body();
                pthread_barrier_wait(&emu_block_barrier); /* every thread is done with the block */
            }
        });
    for (auto &x : th) x.join();
    munmap(map, len);
    pthread_barrier_destroy(&emu_block_barrier);
    for (int w = 0; w * 32 < threads; w++) pthread_barrier_destroy(&emu_warp_barrier[w]);
}
template <class... P, size_t... I>
static void emu_call_idx(void (*f)(long long, long long, float *, P...), long long B, long long T, float *ws,
                         void **ptrs, std::index_sequence<I...>)
{
    f(B, T, ws, (P)ptrs[I]...);
}
template <class... P>
static void emu_call(void (*f)(long long, long long, float *, P...), long long B, long long T, float *ws, void **ptrs)
{
    emu_call_idx(f, B, T, ws, ptrs, std::index_sequence_for<P...>{});
}
/* A kernel of any signature, its arguments as cuLaunchKernel takes them
 * (params[i] points at argument i): what the emulated driver
 * (tests/gpu/emu/fake_cuda.cpp) launches. */
template <class... P, size_t... I>
static void emu_params_idx(void (*f)(P...), void **params, std::index_sequence<I...>)
{
    f(*(P *)params[I]...);
}
template <class... P> static int emu_run(void (*f)(P...), long long blocks, int threads, unsigned shared, void **params)
{
    emu_blocks(blocks, threads, shared, [=] { emu_params_idx(f, params, std::index_sequence_for<P...>{}); });
    return 0;
}
#endif
#ifdef EMU_KERNEL
extern "C" int emu_launch(long long blocks, int threads, unsigned shared, long long B, long long T, float *ws, void **ptrs)
{
    emu_blocks(blocks, threads, shared, [=] { emu_call(EMU_KERNEL, B, T, ws, ptrs); });
    return 0;
}
#endif
#ifdef EMU_KERNEL2
/* a second kernel of the same source and signature (a chunked core's second pass) */
extern "C" int emu_launch2(long long blocks, int threads, unsigned shared, long long B, long long T, float *ws, void **ptrs)
{
    emu_blocks(blocks, threads, shared, [=] { emu_call(EMU_KERNEL2, B, T, ws, ptrs); });
    return 0;
}
#endif
#ifdef EMU_KERNEL3
/* a third (a chunked core backward's third pass) */
extern "C" int emu_launch3(long long blocks, int threads, unsigned shared, long long B, long long T, float *ws, void **ptrs)
{
    emu_blocks(blocks, threads, shared, [=] { emu_call(EMU_KERNEL3, B, T, ws, ptrs); });
    return 0;
}
#endif
#endif
