/* test_cuda_loader.c: loading the CUDA driver and NVRTC (runtime/cuda_driver.h)
 * without needing a GPU. A missing driver is SSMC_ERR_UNSUPPORTED with a
 * message naming the library; where NVRTC is present, kernels compile to PTX
 * and cubin and a syntax error is reported with the program name and line.
 * Without NVRTC the compile cases are skipped. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/cuda_driver.h"

static const char vadd_src[] =
    "extern \"C\" __global__ void vadd(const float *a, const float *b, float *c, int n)\n"
    "{\n"
    "    int i = blockIdx.x * blockDim.x + threadIdx.x;\n"
    "    if (i < n) c[i] = a[i] + b[i] * SCALE;\n"
    "}\n";

static const char bad_src[] =
    "extern \"C\" __global__ void broken(float *x)\n"
    "{\n"
    "    x[0] = 1.0f +;\n"
    "}\n";

static const char half_src[] =
    "#include <cuda_fp16.h>\n"
    "#include <cuda_bf16.h>\n"
    "extern \"C\" __global__ void cvt(const __half *a, __nv_bfloat16 *b)\n"
    "{\n"
    "    b[threadIdx.x] = __float2bfloat16(__half2float(a[threadIdx.x]));\n"
    "}\n";

static void test_driver_missing(void **state)
{
    strbuf err = {0};
    rt_cuda *c = (rt_cuda *)1;
    assert_int_equal(rt_cuda_open_from("libcuda-ssmc-absent.so.1", 0, &c, &err), SSMC_ERR_UNSUPPORTED);
    assert_null(c);
    assert_non_null(strstr(sb_cstr(&err), "libcuda-ssmc-absent.so.1"));
    sb_free(&err);
}

/* rt_cuda_open either works or says why; with no libcuda at all it is
 * UNSUPPORTED and names the library. */
static void test_driver_default(void **state)
{
    strbuf err = {0};
    rt_cuda *c = NULL;
    void *probe = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!probe) probe = dlopen("libcuda.so", RTLD_NOW | RTLD_LOCAL);
    ssmc_status st = rt_cuda_open(&c, &err);
    if (st == SSMC_OK) {
        assert_non_null(c);
        assert_true(rt_cuda_arch(c) > 0);
        rt_cuda_close(c);
    } else {
        assert_null(c);
        assert_true(err.len > 0);
        if (!probe) {
            assert_int_equal(st, SSMC_ERR_UNSUPPORTED);
            assert_non_null(strstr(sb_cstr(&err), "libcuda.so.1"));
        }
    }
    sb_free(&err);
}

static void test_nvrtc_missing(void **state)
{
    strbuf err = {0};
    rt_nvrtc *n = (rt_nvrtc *)1;
    assert_int_equal(rt_nvrtc_load_from("libnvrtc-ssmc-absent.so", &n, &err), SSMC_ERR_UNSUPPORTED);
    assert_null(n);
    assert_non_null(strstr(sb_cstr(&err), "libnvrtc-ssmc-absent.so"));
    sb_free(&err);
}

/* NVRTC, or a skip when this machine has none. */
static rt_nvrtc *nvrtc_or_skip(void)
{
    strbuf err = {0};
    rt_nvrtc *n = NULL;
    ssmc_status st = rt_nvrtc_load(&n, &err);
    if (st != SSMC_OK) {
        assert_int_equal(st, SSMC_ERR_UNSUPPORTED);
        assert_non_null(strstr(sb_cstr(&err), "libnvrtc.so"));
        sb_free(&err);
        skip();
    }
    sb_free(&err);
    return n;
}

static void test_nvrtc_version(void **state)
{
    rt_nvrtc *n = nvrtc_or_skip();
    int major, minor;
    rt_nvrtc_version(n, &major, &minor);
    assert_true(major >= 11);
    assert_true(minor >= 0);
    assert_non_null(strstr(rt_nvrtc_version_string(n), "nvrtc "));
    rt_nvrtc_free(n);
}

static void test_compile_ptx(void **state)
{
    rt_nvrtc *n = nvrtc_or_skip();
    strbuf log = {0};
    char *image;
    size_t len;
    const char *opts[] = {"-DSCALE=2.0f"};
    ssmc_status st = rt_nvrtc_compile(n, vadd_src, "vadd.cu", "sm_90", false, opts, 1, &image, &len, &log);
    if (st != SSMC_OK) fail_msg("%s", sb_cstr(&log));
    assert_true(len > 0);
    assert_int_equal(image[len - 1], 0); /* PTX comes NUL-terminated */
    assert_non_null(strstr(image, ".entry vadd"));
    assert_non_null(strstr(image, ".target sm_90"));
    free(image);
    rt_nvrtc_free(n);
    sb_free(&log);
}

static void test_compile_cubin(void **state)
{
    rt_nvrtc *n = nvrtc_or_skip();
    strbuf log = {0};
    char *image;
    size_t len;
    const char *opts[] = {"-DSCALE=1.0f", "--use_fast_math"};
    ssmc_status st = rt_nvrtc_compile(n, vadd_src, "vadd.cu", "sm_90", true, opts, 2, &image, &len, &log);
    if (st != SSMC_OK) fail_msg("%s", sb_cstr(&log));
    assert_true(len > 64);
    assert_memory_equal(image, "\x7f" "ELF", 4);
    free(image);
    rt_nvrtc_free(n);
    sb_free(&log);
}

static void test_compile_half_headers(void **state)
{
    rt_nvrtc *n = nvrtc_or_skip();
    if (!rt_nvrtc_include_dir(n)[0]) {
        rt_nvrtc_free(n);
        skip(); /* no CUDA headers on this machine */
    }
    strbuf log = {0};
    char *image;
    size_t len;
    ssmc_status st = rt_nvrtc_compile(n, half_src, "cvt.cu", "sm_90", false, NULL, 0, &image, &len, &log);
    if (st != SSMC_OK) fail_msg("include dir %s: %s", rt_nvrtc_include_dir(n), sb_cstr(&log));
    assert_non_null(strstr(image, ".entry cvt"));
    free(image);
    rt_nvrtc_free(n);
    sb_free(&log);
}

static void test_compile_error(void **state)
{
    rt_nvrtc *n = nvrtc_or_skip();
    strbuf log = {0};
    char *image = (char *)1;
    size_t len = 9;
    ssmc_status st = rt_nvrtc_compile(n, bad_src, "ssmc_broken.cu", "sm_90", false, NULL, 0, &image, &len, &log);
    assert_int_equal(st, SSMC_ERR_BACKEND);
    assert_null(image);
    assert_int_equal(len, 0);
    const char *msg = sb_cstr(&log);
    assert_non_null(strstr(msg, "ssmc_broken.cu"));
    assert_non_null(strstr(msg, "ssmc_broken.cu(3)")); /* the line of the generated source */
    assert_non_null(strstr(msg, "error"));
    rt_nvrtc_free(n);
    sb_free(&log);
}

static void test_compile_bad_arch(void **state)
{
    rt_nvrtc *n = nvrtc_or_skip();
    strbuf log = {0};
    char *image;
    size_t len;
    assert_int_equal(rt_nvrtc_compile(n, vadd_src, "vadd.cu", "sm_x", false, NULL, 0, &image, &len, &log),
                     SSMC_ERR_ARG);
    assert_non_null(strstr(sb_cstr(&log), "sm_x"));
    log.len = 0;
    assert_int_equal(rt_nvrtc_compile(n, vadd_src, "vadd.cu", "compute_90", true, NULL, 0, &image, &len, &log),
                     SSMC_ERR_ARG);
    log.len = 0;
    const char *opts[] = {"-DSCALE=1.0f"};
    ssmc_status st = rt_nvrtc_compile(n, vadd_src, "vadd.cu", "compute_90", false, opts, 1, &image, &len, &log);
    if (st != SSMC_OK) fail_msg("%s", sb_cstr(&log));
    free(image);
    rt_nvrtc_free(n);
    sb_free(&log);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_driver_missing),
        cmocka_unit_test(test_driver_default),
        cmocka_unit_test(test_nvrtc_missing),
        cmocka_unit_test(test_nvrtc_version),
        cmocka_unit_test(test_compile_ptx),
        cmocka_unit_test(test_compile_cubin),
        cmocka_unit_test(test_compile_half_headers),
        cmocka_unit_test(test_compile_error),
        cmocka_unit_test(test_compile_bad_arch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
