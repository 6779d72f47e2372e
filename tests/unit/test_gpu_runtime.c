/* test_gpu_runtime.c: the CUDA runtime layer (runtime/cuda_driver.h) on a real GPU:
 * NVRTC to cubin and to PTX for the device's arch, module load, launches with
 * and without streams and with more than 48 KiB of dynamic shared memory, copies
 * timed with events, errors named, and two handles used from two threads.
 * Exits 77 (skipped) when no GPU can be opened. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/cuda_driver.h"

static rt_cuda *gpu;

static const char vadd_src[] =
    "extern \"C\" __global__ void vadd(const float *a, const float *b, float *c, int n)\n"
    "{\n"
    "    int i = blockIdx.x * blockDim.x + threadIdx.x;\n"
    "    if (i < n) c[i] = a[i] + b[i];\n"
    "}\n"
    "__device__ int counter[4];\n"
    "extern \"C\" __global__ void bump(int by) { atomicAdd(&counter[threadIdx.x % 4], by); }\n"
    /* reverses n floats through dynamic shared memory: one block, n <= its size */
    "extern \"C\" __global__ void reverse(const float *x, float *y, int n)\n"
    "{\n"
    "    extern __shared__ float tile[];\n"
    "    for (int i = threadIdx.x; i < n; i += blockDim.x) tile[i] = x[i];\n"
    "    __syncthreads();\n"
    "    for (int i = threadIdx.x; i < n; i += blockDim.x) y[i] = tile[n - 1 - i];\n"
    "}\n";

/* The message of the last failed call; ok() fails the test with it. */
static strbuf gerr;

static void ok(ssmc_status st)
{
    if (st != SSMC_OK) fail_msg("%s", sb_cstr(&gerr));
}

/* Compiles vadd_src for the device and loads it. */
static CUmodule load_module(bool cubin)
{
    strbuf err = {0};
    rt_nvrtc *n = NULL;
    if (rt_nvrtc_load(&n, &err) != SSMC_OK) fail_msg("%s", sb_cstr(&err));
    char *image;
    size_t len;
    if (rt_nvrtc_compile(n, vadd_src, "gpu_test.cu", rt_cuda_arch_name(gpu), cubin, NULL, 0, &image, &len, &err) !=
        SSMC_OK)
        fail_msg("%s", sb_cstr(&err));
    rt_nvrtc_free(n);
    CUmodule m;
    if (rt_cuda_module_load(gpu, image, &m, &err) != SSMC_OK) fail_msg("%s", sb_cstr(&err));
    free(image);
    sb_free(&err);
    return m;
}

static void test_device_info(void **state)
{
    assert_true(rt_cuda_arch(gpu) >= 50);
    assert_true(rt_cuda_sm_count(gpu) > 0);
    assert_true(strlen(rt_cuda_device_name(gpu)) > 0);
    assert_true(rt_cuda_max_shared(gpu) >= 48 * 1024);
    assert_true(rt_cuda_total_mem(gpu) > 0);
    assert_true(rt_cuda_driver_version(gpu) >= 11000);
    char want[16];
    snprintf(want, sizeof want, "sm_%d", rt_cuda_arch(gpu));
    assert_string_equal(rt_cuda_arch_name(gpu), want);
    printf("# %s, %s, %d SMs, %zu MiB, driver %d\n", rt_cuda_device_name(gpu), rt_cuda_arch_name(gpu),
           rt_cuda_sm_count(gpu), rt_cuda_total_mem(gpu) >> 20, rt_cuda_driver_version(gpu));
}

static void run_vadd(CUmodule m, CUstream stream)
{
    CUfunction f;
    ok(rt_cuda_module_function(gpu, m, "vadd", &f, &gerr));
    int n = (1 << 20) + 3; /* not a multiple of the block */
    size_t bytes = (size_t)n * sizeof(float);
    float *a = malloc(bytes), *b = malloc(bytes), *c = malloc(bytes);
    for (int i = 0; i < n; i++) {
        a[i] = (float)(i % 1000) * 0.25f + 1.0f;
        b[i] = (float)(i % 777) * -0.5f - 3.0f;
    }
    CUdeviceptr da, db, dc;
    ok(rt_cuda_alloc(gpu, bytes, &da, &gerr));
    ok(rt_cuda_alloc(gpu, bytes, &db, &gerr));
    ok(rt_cuda_alloc(gpu, bytes, &dc, &gerr));
    if (stream) {
        ok(rt_cuda_htod_async(gpu, da, a, bytes, stream, &gerr));
        ok(rt_cuda_htod_async(gpu, db, b, bytes, stream, &gerr));
        ok(rt_cuda_memset_async(gpu, dc, 0xff, bytes, stream, &gerr)); /* poison: NaN */
    } else {
        ok(rt_cuda_htod(gpu, da, a, bytes, &gerr));
        ok(rt_cuda_htod(gpu, db, b, bytes, &gerr));
        ok(rt_cuda_memset(gpu, dc, 0xff, bytes, &gerr));
    }
    void *params[] = {&da, &db, &dc, &n};
    unsigned grid[3] = {(unsigned)(n + 255) / 256, 1, 1}, block[3] = {256, 1, 1};
    ok(rt_cuda_launch(gpu, f, grid, block, 0, stream, params, &gerr));
    memset(c, 0, bytes);
    if (stream) {
        ok(rt_cuda_dtoh_async(gpu, c, dc, bytes, stream, &gerr));
        ok(rt_cuda_stream_sync(gpu, stream, &gerr));
    } else {
        ok(rt_cuda_dtoh(gpu, c, dc, bytes, &gerr));
    }
    for (int i = 0; i < n; i++)
        if (c[i] != a[i] + b[i]) fail_msg("c[%d] = %g, expected %g", i, c[i], a[i] + b[i]);
    ok(rt_cuda_free(gpu, da, &gerr));
    ok(rt_cuda_free(gpu, db, &gerr));
    ok(rt_cuda_free(gpu, dc, &gerr));
    free(a);
    free(b);
    free(c);
}

static void test_vadd_cubin(void **state)
{
    CUmodule m = load_module(true);
    run_vadd(m, NULL);
    ok(rt_cuda_module_unload(gpu, m, &gerr));
}

static void test_vadd_ptx_on_stream(void **state)
{
    CUmodule m = load_module(false);
    CUstream s;
    ok(rt_cuda_stream_new(gpu, &s, &gerr));
    run_vadd(m, s);
    ok(rt_cuda_stream_free(gpu, s, &gerr));
    ok(rt_cuda_module_unload(gpu, m, &gerr));
}

static void test_global_and_dtod(void **state)
{
    CUmodule m = load_module(true);
    CUdeviceptr counter;
    size_t size;
    ok(rt_cuda_module_global(gpu, m, "counter", &counter, &size, &gerr));
    assert_int_equal(size, 4 * sizeof(int));
    ok(rt_cuda_memset(gpu, counter, 0, size, &gerr));
    CUfunction f;
    ok(rt_cuda_module_function(gpu, m, "bump", &f, &gerr));
    int by = 3;
    void *params[] = {&by};
    unsigned grid[3] = {10, 1, 1}, block[3] = {64, 1, 1};
    ok(rt_cuda_launch(gpu, f, grid, block, 0, NULL, params, &gerr));
    CUdeviceptr copy;
    ok(rt_cuda_alloc(gpu, size, &copy, &gerr));
    ok(rt_cuda_dtod(gpu, copy, counter, size, &gerr));
    int host[4];
    ok(rt_cuda_dtoh(gpu, host, copy, size, &gerr));
    for (int i = 0; i < 4; i++) assert_int_equal(host[i], 10 * 16 * 3);
    ok(rt_cuda_free(gpu, copy, &gerr));
    ok(rt_cuda_module_unload(gpu, m, &gerr));
}

static void test_large_shared(void **state)
{
    CUmodule m = load_module(true);
    CUfunction f;
    ok(rt_cuda_module_function(gpu, m, "reverse", &f, &gerr));
    int n = 96 * 1024 / 4; /* 96 KiB of dynamic shared memory: needs the opt-in */
    if ((size_t)n * 4 > rt_cuda_max_shared(gpu)) n = (int)(rt_cuda_max_shared(gpu) / 4);
    size_t bytes = (size_t)n * 4;
    float *x = malloc(bytes), *y = malloc(bytes);
    for (int i = 0; i < n; i++) x[i] = (float)i;
    CUdeviceptr dx, dy;
    ok(rt_cuda_alloc(gpu, bytes, &dx, &gerr));
    ok(rt_cuda_alloc(gpu, bytes, &dy, &gerr));
    ok(rt_cuda_htod(gpu, dx, x, bytes, &gerr));
    void *params[] = {&dx, &dy, &n};
    unsigned grid[3] = {1, 1, 1}, block[3] = {256, 1, 1};
    ok(rt_cuda_launch(gpu, f, grid, block, (unsigned)bytes, NULL, params, &gerr));
    ok(rt_cuda_dtoh(gpu, y, dy, bytes, &gerr));
    for (int i = 0; i < n; i++) assert_true(y[i] == (float)(n - 1 - i));
    ok(rt_cuda_free(gpu, dx, &gerr));
    ok(rt_cuda_free(gpu, dy, &gerr));
    ok(rt_cuda_module_unload(gpu, m, &gerr));
    free(x);
    free(y);
}

static void test_errors_named(void **state)
{
    CUmodule m = load_module(true);
    strbuf err = {0};
    CUfunction f;
    assert_int_equal(rt_cuda_module_function(gpu, m, "no_such_kernel", &f, &err), SSMC_ERR_BACKEND);
    assert_non_null(strstr(sb_cstr(&err), "cuModuleGetFunction"));
    assert_non_null(strstr(sb_cstr(&err), "CUDA_ERROR_NOT_FOUND"));
    assert_non_null(strstr(sb_cstr(&err), "no_such_kernel"));

    /* an impossible block size is refused at launch, and the context survives */
    ok(rt_cuda_module_function(gpu, m, "vadd", &f, &gerr));
    CUdeviceptr p = 0;
    int n = 0;
    void *params[] = {&p, &p, &p, &n};
    unsigned grid[3] = {1, 1, 1}, block[3] = {4096, 1, 1};
    err.len = 0;
    assert_int_equal(rt_cuda_launch(gpu, f, grid, block, 0, NULL, params, &err), SSMC_ERR_BACKEND);
    assert_non_null(strstr(sb_cstr(&err), "cuLaunchKernel"));
    assert_non_null(strstr(sb_cstr(&err), "CUDA_ERROR_INVALID_VALUE"));
    ok(rt_cuda_sync(gpu, &gerr));

    /* a corrupt image is refused with the loader's message */
    err.len = 0;
    CUmodule bad;
    assert_int_not_equal(rt_cuda_module_load(gpu, "not a module image", &bad, &err), SSMC_OK);
    assert_non_null(strstr(sb_cstr(&err), "cuModuleLoadDataEx"));

    /* an absurd allocation is out of memory, not a crash */
    err.len = 0;
    CUdeviceptr huge;
    assert_int_equal(rt_cuda_alloc(gpu, (size_t)1 << 50, &huge, &err), SSMC_ERR_NOMEM);
    assert_non_null(strstr(sb_cstr(&err), "cuMemAlloc_v2"));
    assert_int_equal(huge, 0);

    ok(rt_cuda_module_unload(gpu, m, &gerr));
    sb_free(&err);
}

static void test_event_timed_copy(void **state)
{
    size_t bytes = 64u << 20;
    char *host = malloc(bytes);
    memset(host, 7, bytes);
    CUdeviceptr d;
    CUevent start, end;
    ok(rt_cuda_alloc(gpu, bytes, &d, &gerr));
    ok(rt_cuda_event_new(gpu, &start, &gerr));
    ok(rt_cuda_event_new(gpu, &end, &gerr));
    ok(rt_cuda_event_record(gpu, start, NULL, &gerr));
    ok(rt_cuda_htod(gpu, d, host, bytes, &gerr));
    ok(rt_cuda_event_record(gpu, end, NULL, &gerr));
    ok(rt_cuda_event_sync(gpu, end, &gerr));
    float ms = -1;
    ok(rt_cuda_event_elapsed(gpu, start, end, &ms, &gerr));
    assert_true(ms > 0);
    printf("# 64 MiB host-to-device copy (pageable): %.3f ms, %.1f GB/s\n", ms, bytes / (ms * 1e6));
    ok(rt_cuda_event_free(gpu, start, &gerr));
    ok(rt_cuda_event_free(gpu, end, &gerr));
    ok(rt_cuda_free(gpu, d, &gerr));
    free(host);
}

/* A second handle, used from another thread that never touched CUDA: every
 * call must make its context current by itself. */
typedef struct thread_job {
    rt_cuda *c;
    int ok;
    char msg[512];
} thread_job;

static void *other_thread(void *arg)
{
    thread_job *j = arg;
    strbuf err = {0};
    CUdeviceptr p = 0;
    int in[256], out[256];
    for (int i = 0; i < 256; i++) in[i] = i * 7;
    j->ok = rt_cuda_alloc(j->c, sizeof in, &p, &err) == SSMC_OK && rt_cuda_htod(j->c, p, in, sizeof in, &err) == SSMC_OK &&
            rt_cuda_dtoh(j->c, out, p, sizeof out, &err) == SSMC_OK && rt_cuda_free(j->c, p, &err) == SSMC_OK &&
            memcmp(in, out, sizeof in) == 0;
    snprintf(j->msg, sizeof j->msg, "%s", sb_cstr(&err));
    sb_free(&err);
    return NULL;
}

static void test_two_handles_two_threads(void **state)
{
    strbuf err = {0};
    rt_cuda *second = NULL;
    if (rt_cuda_open(&second, &err) != SSMC_OK) fail_msg("%s", sb_cstr(&err));
    thread_job jobs[2] = {{gpu, 0, ""}, {second, 0, ""}};
    pthread_t t[2];
    for (int i = 0; i < 2; i++) assert_int_equal(pthread_create(&t[i], NULL, other_thread, &jobs[i]), 0);
    for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    for (int i = 0; i < 2; i++)
        if (!jobs[i].ok) fail_msg("handle %d: %s", i, jobs[i].msg);
    rt_cuda_close(second);
    sb_free(&err);
}

int main(void)
{
    strbuf err = {0};
    if (rt_cuda_open(&gpu, &err) != SSMC_OK) {
        printf("# skipped: %s\n", sb_cstr(&err));
        sb_free(&err);
        return 77;
    }
    sb_free(&err);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_device_info),
        cmocka_unit_test(test_vadd_cubin),
        cmocka_unit_test(test_vadd_ptx_on_stream),
        cmocka_unit_test(test_global_and_dtod),
        cmocka_unit_test(test_large_shared),
        cmocka_unit_test(test_errors_named),
        cmocka_unit_test(test_event_timed_copy),
        cmocka_unit_test(test_two_handles_two_threads),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    rt_cuda_close(gpu);
    sb_free(&gerr);
    return failed;
}
