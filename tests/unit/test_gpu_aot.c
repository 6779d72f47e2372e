/* test_gpu_aot.c: a bundle with cuda targets, run on the GPU by a program that
 * has nothing of ssmc, LLVM or NVRTC, against the f64 interpreter; and the
 * library's ssmc_decode_device.
 *
 * The bundle: `ssmc build examples/mamba2.ssm --target cuda:sm_80,cuda:sm_<this
 * GPU's arch> --dtype f32,bf16/f32/f32`; tests/aot/cuda_main.c built with the
 * header's link line and run with LD_LIBRARY_PATH unset (it fails if NVRTC is
 * mapped into it when it is done): the host path from a state and from none,
 * device pointers in f32 and in bf16 (f32 params and states), decoding against
 * a pool of 7 rows (sequences on rows out of order, a padding slot whose
 * outputs must stay poisoned, a sequence without a state) for T = 4 and one
 * step (the T = 1 kernel), batch 1 and batch 256 from a pool of 300 rows.
 * Inputs are fresh uniform draws, outputs poisoned; every output and pool must
 * be within ssmc_model_tolerance (f32) or 2e-2 (bf16) of the interpreter's
 * ssmc_run or ssmc_decode on the same rounded values.
 *
 * The library: ssmc_decode_device on a model compiled for cuda (mamba2 and
 * gated_deltanet, f32 and bf16, T = 1 and T = 3) against ssmc_decode on the
 * interpreter, and ssmc_decode (host) refused on cuda. Exits 77 (skipped)
 * when no GPU can be opened. SSMC_TEST_SEED=<n> repeats a run. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "runtime/cuda_driver.h"
#include "ssmc.h"
#include "support/dtype.h"
#include "support/support.h"
#include "tests/unit/helpers/cpu_harness.h"

static rt_cuda *gpu;
static char dir[64];
static uint64_t rng;

static double uniform(void)
{
    rng += 0x9e3779b97f4a7c15ull;
    uint64_t z = (rng ^ (rng >> 31)) * 0xbf58476d1ce4e5b9ull;
    return (double)((z ^ (z >> 29)) >> 11) * 0x1.0p-53 * 2.0 - 1.0;
}

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

#define MAXT 16

/* One call's tensors in their dtypes, and the f64 values the interpreter
 * gets (the same, rounded): inputs [B, T, ...], params, states [R, ...]. */
typedef struct call {
    int n;
    ssmc_tensor_info info[MAXT];
    ssmc_dtype dt[MAXT];
    size_t count[MAXT];
    void *data[MAXT];
    double *ref[MAXT];
} call;

static ssmc_dtype class_dtype(ssmc_role r, const ssmc_dtype sig[3])
{
    return r == SSMC_PARAM ? sig[1] : r == SSMC_STATE ? sig[2] : sig[0];
}

static void call_fill(call *c, ssmc_model *m, const ssmc_dtype sig[3], int64_t B, int64_t T, int64_t R)
{
    memset(c, 0, sizeof *c);
    c->n = ssmc_model_num_tensors(m);
    assert_true(c->n <= MAXT);
    for (int i = 0; i < c->n; i++) {
        ssmc_model_tensor(m, i, &c->info[i]);
        size_t k = 1;
        for (int j = 0; j < c->info[i].rank; j++) k *= (size_t)c->info[i].shape[j];
        if (c->info[i].role == SSMC_STATE) k *= (size_t)R;
        else if (c->info[i].role != SSMC_PARAM) k *= (size_t)B;
        if (c->info[i].per_step) k *= (size_t)T;
        c->count[i] = k;
        c->dt[i] = class_dtype(c->info[i].role, sig);
        c->data[i] = malloc((k ? k : 1) * dtype_size(c->dt[i]));
        c->ref[i] = malloc((k ? k : 1) * sizeof(double));
        assert_true(c->data[i] && c->ref[i]);
        const char *nm = c->info[i].name;
        double lo = strcmp(nm, "dt") == 0 || strcmp(nm, "a") == 0 ? -3 : -1;
        for (size_t e = 0; e < k; e++) {
            double v = c->info[i].role == SSMC_OUTPUT ? NAN : lo + (1 - lo) * (uniform() + 1) / 2;
            dtype_set(c->data[i], c->dt[i], e, v);
            c->ref[i][e] = dtype_get(c->data[i], c->dt[i], e);
        }
    }
}

static void call_free(call *c)
{
    for (int i = 0; i < c->n; i++) {
        free(c->data[i]);
        free(c->ref[i]);
    }
}

static int ref_args(call *c, ssmc_arg *a, bool states)
{
    int k = 0;
    for (int i = 0; i < c->n; i++)
        if (states || c->info[i].role != SSMC_STATE) a[k++] = (ssmc_arg){c->info[i].name, SSMC_F64, c->ref[i], 0};
    return k;
}

/* max |got - ref| / max |ref|: NaN in both (padding) skipped, NaN in one fails. */
static double rel(const void *got, ssmc_dtype dt, const double *ref, size_t n, const char *what)
{
    double mref = 0, mdiff = 0;
    for (size_t k = 0; k < n; k++) {
        double g = dtype_get(got, dt, k), r = ref[k];
        if (isnan(g) && isnan(r)) continue;
        if (isnan(g) != isnan(r) || !isfinite(g)) fail_msg("%s: element %zu is %g, the interpreter's %g", what, k, g, r);
        mref = fmax(mref, fabs(r));
        mdiff = fmax(mdiff, fabs(g - r));
    }
    return mref > 0 ? mdiff / mref : mdiff;
}

static void write_bin(const char *name, const void *p, size_t n)
{
    char path[128];
    snprintf(path, sizeof path, "%s/%s.bin", dir, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, n, f), n);
    fclose(f);
}

static void *read_out(const char *name, size_t n)
{
    char path[128];
    snprintf(path, sizeof path, "%s/%s.out", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f) fail_msg("%s was not written", path);
    void *p = malloc(n ? n : 1);
    assert_non_null(p);
    assert_int_equal(fread(p, 1, n, f), n);
    fclose(f);
    return p;
}

/* ---- the bundle, run by tests/aot/cuda_main.c ---- */

static const ssmc_dtype sigs[2][3] = {{SSMC_F32, SSMC_F32, SSMC_F32}, {SSMC_BF16, SSMC_F32, SSMC_F32}};

/* One run of cuda_main (mode host, run, decode or step) against the
 * interpreter's ssmc_run or ssmc_decode. */
static void bundle_case(ssmc_model *ref, int sig, const char *mode, int64_t B, int64_t T, int64_t R,
                        const int32_t *idx, const uint8_t *has, bool with_state)
{
    bool rows = idx != NULL;
    call c;
    call_fill(&c, ref, sigs[sig], B, T, rows ? R : B);
    char path[128];
    snprintf(path, sizeof path, "%s/S.bin", dir);
    remove(path);
    snprintf(path, sizeof path, "%s/has.bin", dir);
    remove(path);
    for (int i = 0; i < c.n; i++)
        if (c.info[i].role != SSMC_OUTPUT && (c.info[i].role != SSMC_STATE || with_state))
            write_bin(c.info[i].name, c.data[i], c.count[i] * dtype_size(c.dt[i]));
    if (rows) write_bin("idx", idx, (size_t)B * 4);
    if (has) write_bin("has", has, (size_t)B);
    int rc = sh("env -u LD_LIBRARY_PATH '%s/cuda_main' '%s' %d %zu %zu %zu %s %lld %lld %lld", dir, dir, sig,
                dtype_size(sigs[sig][0]), dtype_size(sigs[sig][1]), dtype_size(sigs[sig][2]), mode, (long long)B,
                (long long)T, (long long)(rows ? R : B));
    if (rc == 5) fail_msg("cuda_main %s: NVRTC was mapped into the program", mode);
    if (rc != 0) fail_msg("cuda_main %s exited with %d", mode, rc);
    ssmc_arg a[MAXT];
    int n = ref_args(&c, a, with_state);
    ssmc_rows rr = {idx, has, R};
    assert_int_equal(rows ? ssmc_decode(ref, B, T, a, n, &rr) : ssmc_run(ref, B, T, a, n), SSMC_OK);
    for (int i = 0; i < c.n; i++) {
        ssmc_role role = c.info[i].role;
        if (role != SSMC_OUTPUT && !(role == SSMC_STATE && with_state)) continue;
        void *got = read_out(c.info[i].name, c.count[i] * dtype_size(c.dt[i]));
        char what[160];
        snprintf(what, sizeof what, "bundle %s %s B=%lld T=%lld%s %s", mode, sig ? "bf16/f32/f32" : "f32",
                 (long long)B, (long long)T, has ? " has_state" : "", c.info[i].name);
        double e = rel(got, c.dt[i], c.ref[i], c.count[i], what);
        double tol = c.dt[i] == SSMC_F32 && sigs[sig][0] == SSMC_F32 ? ssmc_model_tolerance(ref, i, SSMC_F32, T) : 2e-2;
        printf("# %-58s rel %.2e (tol %.1e)\n", what, e, tol);
        if (!(e <= tol)) fail_msg("%s: relative error %.3e > %.1e", what, e, tol);
        free(got);
    }
    call_free(&c);
}

static void test_bundle(void **state)
{
    char targets[64];
    int arch = rt_cuda_arch(gpu);
    snprintf(targets, sizeof targets, arch == 80 ? "cuda:sm_80" : "cuda:sm_80,cuda:sm_%d", arch);
    const char *cli = getenv("SSMC_CLI"), *root = getenv("SSMC_SOURCE_DIR");
    assert_true(cli && root);
    int rc = sh("'%s' build '%s/examples/mamba2.ssm' -o '%s' --target %s --dtype f32,bf16/f32/f32", cli, root, dir,
                targets);
    if (rc != 0) fail_msg("ssmc build --target %s exited with %d", targets, rc);
    /* the program, linked as the header says */
    char header[128], line[1024];
    snprintf(header, sizeof header, "%s/mamba2.h", dir);
    size_t len;
    const char *why;
    char *h = read_file(header, &len, &why);
    assert_non_null(h);
    const char *at = strstr(strstr(h, "the shared library"), "cc prog.c ");
    assert_non_null(at);
    snprintf(line, sizeof line, "%.*s", (int)strcspn(at + 10, "\n"), at + 10);
    free(h);
    const char *cc = getenv("CC") && *getenv("CC") ? getenv("CC") : "cc";
    rc = sh("cd '%s' && %s -O2 '%s/tests/aot/cuda_main.c' -o '%s/cuda_main' %s", dir, cc, root, dir, line);
    if (rc != 0) fail_msg("tests/aot/cuda_main.c does not build (%d)", rc);
    assert_int_equal(sh("ldd '%s/cuda_main' | grep -q -i nvrtc", dir), 1);

    ssmc_ctx *ctx = ssmc_ctx_new();
    size_t sl;
    char *src = harness_read_source("examples/mamba2.ssm", &sl);
    ssmc_model *ref = NULL;
    assert_int_equal(harness_compile(ctx, "mamba2.ssm", src, sl, NULL, 0, SSMC_DEVICE_INTERP, 0, &ref), SSMC_OK);
    static const int32_t idx[4] = {5, 0, -1, 3};
    static const uint8_t has[4] = {1, 0, 1, 1};
    bundle_case(ref, 0, "host", 2, 33, 0, NULL, NULL, true);
    bundle_case(ref, 0, "host", 3, 7, 0, NULL, NULL, false);
    bundle_case(ref, 0, "run", 3, 7, 0, NULL, NULL, true);
    bundle_case(ref, 1, "run", 2, 33, 0, NULL, NULL, true);
    bundle_case(ref, 0, "run", 2, 1, 0, NULL, NULL, true); /* T = 1: the one-step kernel */
    bundle_case(ref, 0, "decode", 4, 4, 7, idx, has, true);
    bundle_case(ref, 1, "decode", 4, 4, 7, idx, NULL, true);
    bundle_case(ref, 0, "step", 4, 1, 7, idx, has, true);
    bundle_case(ref, 1, "step", 4, 1, 7, idx, has, true);
    static const int32_t one[1] = {2};
    bundle_case(ref, 1, "step", 1, 1, 3, one, NULL, true);
    int32_t *big = malloc(256 * sizeof *big);
    for (int i = 0; i < 256; i++) big[i] = (int32_t)((i * 7 + 11) % 300); /* distinct rows of 300 */
    bundle_case(ref, 1, "step", 256, 1, 300, big, NULL, true);
    bundle_case(ref, 0, "decode", 256, 2, 300, big, NULL, true);
    free(big);
    ssmc_model_free(ref);
    ssmc_ctx_free(ctx);
    free(src);
}

/* ---- the library: ssmc_decode_device ---- */

static void jit_case(const char *file, const ssmc_dtype sig[3], int64_t T, bool with_has)
{
    ssmc_ctx *ctx = ssmc_ctx_new();
    size_t sl;
    char *src = harness_read_source(file, &sl);
    ssmc_model *m = NULL, *ref = NULL;
    if (harness_compile(ctx, file, src, sl, NULL, 0, SSMC_DEVICE_CUDA, 0, &m) != SSMC_OK)
        fail_msg("%s: %s", file, ssmc_ctx_error(ctx));
    assert_int_equal(harness_compile(ctx, file, src, sl, NULL, 0, SSMC_DEVICE_INTERP, 0, &ref), SSMC_OK);
    enum { B = 4, R = 7 };
    static const int32_t idx[B] = {5, 0, -1, 3};
    static const uint8_t has[B] = {1, 0, 1, 1};
    call c;
    call_fill(&c, m, sig, B, T, R);
    strbuf err = {0};
    CUdeviceptr dp[MAXT] = {0}, didx = 0, dhas = 0;
    ssmc_arg a[MAXT];
    for (int i = 0; i < c.n; i++) {
        size_t bytes = c.count[i] * dtype_size(c.dt[i]);
        assert_int_equal(rt_cuda_alloc(gpu, bytes, &dp[i], &err), SSMC_OK);
        assert_int_equal(rt_cuda_htod(gpu, dp[i], c.data[i], bytes, &err), SSMC_OK);
        a[i] = (ssmc_arg){c.info[i].name, c.dt[i], (void *)(uintptr_t)dp[i], 0};
    }
    assert_int_equal(rt_cuda_alloc(gpu, sizeof idx, &didx, &err), SSMC_OK);
    assert_int_equal(rt_cuda_htod(gpu, didx, idx, sizeof idx, &err), SSMC_OK);
    assert_int_equal(rt_cuda_alloc(gpu, sizeof has, &dhas, &err), SSMC_OK);
    assert_int_equal(rt_cuda_htod(gpu, dhas, has, sizeof has, &err), SSMC_OK);
    ssmc_rows drows = {(const int32_t *)(uintptr_t)didx, with_has ? (const uint8_t *)(uintptr_t)dhas : NULL, R};
    if (ssmc_decode_device(m, B, T, a, c.n, &drows, NULL) != SSMC_OK) fail_msg("%s: %s", file, ssmc_ctx_error(ctx));
    assert_int_equal(rt_cuda_sync(gpu, &err), SSMC_OK);
    ssmc_rows hrows = {idx, with_has ? has : NULL, R};
    assert_int_equal(ssmc_decode(m, B, T, a, c.n, &hrows), SSMC_ERR_UNSUPPORTED); /* host tensors: not on cuda */
    ssmc_arg r[MAXT];
    int n = ref_args(&c, r, true);
    assert_int_equal(ssmc_decode(ref, B, T, r, n, &hrows), SSMC_OK);
    for (int i = 0; i < c.n; i++) {
        if (c.info[i].role != SSMC_OUTPUT && c.info[i].role != SSMC_STATE) continue;
        size_t bytes = c.count[i] * dtype_size(c.dt[i]);
        assert_int_equal(rt_cuda_dtoh(gpu, c.data[i], dp[i], bytes, &err), SSMC_OK);
        char what[160];
        snprintf(what, sizeof what, "ssmc_decode_device %s %s T=%lld%s %s", file, dtype_name(sig[0]), (long long)T,
                 with_has ? " has_state" : "", c.info[i].name);
        double e = rel(c.data[i], c.dt[i], c.ref[i], c.count[i], what);
        double tol = sig[0] == SSMC_F32 ? ssmc_model_tolerance(m, i, SSMC_F32, T) : 2e-2;
        printf("# %-70s rel %.2e (tol %.1e)\n", what, e, tol);
        if (!(e <= tol)) fail_msg("%s: relative error %.3e > %.1e", what, e, tol);
    }
    for (int i = 0; i < c.n; i++) rt_cuda_free(gpu, dp[i], &err);
    rt_cuda_free(gpu, didx, &err);
    rt_cuda_free(gpu, dhas, &err);
    sb_free(&err);
    call_free(&c);
    ssmc_model_free(m);
    ssmc_model_free(ref);
    ssmc_ctx_free(ctx);
    free(src);
}

static void test_decode_device(void **state)
{
    static const char *const files[] = {"examples/mamba2.ssm", "examples/gated_deltanet.ssm"};
    for (int f = 0; f < 2; f++)
        for (int v = 0; v < 4; v++) jit_case(files[f], sigs[v & 1], v & 2 ? 3 : 1, v == 1 || v == 2);
}

static int setup(void **state)
{
    strcpy(dir, "/tmp/ssmc-gpu-aot-XXXXXX");
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
    sh("rm -rf '%s'", dir);
    return 0;
}

int main(void)
{
    strbuf err = {0};
    if (rt_cuda_open(&gpu, &err) != SSMC_OK) {
        printf("# skipped: %s\n", sb_cstr(&err));
        sb_free(&err);
        return 77;
    }
    rng = harness_seed();
    printf("# %s (sm_%d); SSMC_TEST_SEED=%" PRIu64 "\n", rt_cuda_device_name(gpu), rt_cuda_arch(gpu), rng);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bundle),
        cmocka_unit_test(test_decode_device),
    };
    int rc = cmocka_run_group_tests(tests, setup, teardown);
    rt_cuda_close(gpu);
    return rc;
}
