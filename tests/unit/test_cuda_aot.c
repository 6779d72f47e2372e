/* test_cuda_aot.c: bundles with cuda targets, checked without a GPU.
 *
 * `ssmc build examples/mamba2.ssm --target cpu,cuda:sm_80,cuda:sm_90 --dtype
 * f32,bf16/f32/f32` (cuda targets only when this build has no CPU backend)
 * must give a library holding, for every kernel, a cubin for sm_80 and one for
 * sm_90 (ELF for EM_CUDA, the arch in e_flags, a global function ssmc_mamba2
 * with its .nv.info section: what cuModuleGetFunction finds and the driver
 * launches with) and PTX for compute_90 whose entry takes exactly the
 * parameters runtime/cuda_bundle.c passes (B, T, ws, rows, has and the nine
 * tensors), which ptxas (when present) compiles for sm_90 and for a later
 * arch, sm_100 (the forward-compatibility path); no NVRTC, LLVM, ssmc or
 * libcuda among the libraries it needs, and no name of NVRTC in it at all
 * (libcuda.so.1 is named: it is opened with dlopen); no global symbol but
 * the entry points. tests/aot/cuda_main.c builds against the header (shared,
 * as the header's link line says, and static) and, with no GPU here, fails
 * cleanly with MAMBA2_ERR_NODEVICE and the loader's reason; the CPU entry
 * points of the same bundle run. A cuda-only bundle at odd dims has no CPU
 * entry points and shares the images of kernels whose source is the same; a
 * model that reads at t - k has no decode entry points. rt_cb_pick chooses
 * images as the driver chooses from a fatbinary. Bad targets and dtypes are
 * refused. The bundle builds skip() where NVRTC cannot be loaded. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "runtime/cuda_bundle.h"
#include "runtime/cuda_driver.h"
#include "ssmc.h"
#include "support/support.h"
#include "tests/unit/helpers/cpu_harness.h"

static char dir[64];
static bool have_nvrtc, have_gpu;

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

static char *slurp(const char *path, size_t *len)
{
    const char *why;
    char *text = read_file(path, len, &why);
    if (!text) fail_msg("cannot read %s: %s", path, why);
    return text;
}

static bool contains(const char *text, size_t len, const char *needle)
{
    size_t k = strlen(needle);
    for (size_t i = 0; i + k <= len; i++)
        if (memcmp(text + i, needle, k) == 0) return true;
    return false;
}

/* ---- the embedded images ---- */

static uint64_t rd(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

typedef struct cubin {
    int arch;
    bool kernel;  /* a global function named as the kernel, of nonzero size */
    bool info;    /* its .nv.info.<kernel> section */
} cubin;

/* The ELF for EM_CUDA at p (avail bytes on), or false. */
static bool parse_cubin(const unsigned char *p, size_t avail, const char *kernel, cubin *out)
{
    if (avail < 64 || memcmp(p, "\x7f" "ELF", 4) || p[4] != 2 || p[5] != 1 || rd(p + 18, 2) != 190) return false;
    memset(out, 0, sizeof *out);
    uint64_t flags = rd(p + 48, 4), shoff = rd(p + 40, 8), shentsize = rd(p + 58, 2), shnum = rd(p + 60, 2),
             shstrndx = rd(p + 62, 2);
    /* ELF ABI version 8 (CUDA 12.8 and later) keeps the arch in bits 8..15, earlier ones in 0..7 */
    out->arch = (int)(p[8] >= 8 ? (flags >> 8) & 0xff : flags & 0xff);
    if (shentsize != 64 || shoff + shnum * 64 > avail || shstrndx >= shnum) fail_msg("a cubin's section table is cut off");
    const unsigned char *sh = p + shoff, *shstr = sh + shstrndx * 64;
    uint64_t stroff = rd(shstr + 24, 8);
    char want_info[128];
    snprintf(want_info, sizeof want_info, ".nv.info.%s", kernel);
    for (uint64_t i = 0; i < shnum; i++) {
        const unsigned char *s = sh + i * 64;
        const char *secname = (const char *)p + stroff + rd(s, 4);
        if (strcmp(secname, want_info) == 0) out->info = true;
        if (rd(s + 4, 4) != 2) continue; /* SHT_SYMTAB */
        uint64_t off = rd(s + 24, 8), size = rd(s + 32, 8), link = rd(s + 40, 4);
        if (off + size > avail || link >= shnum) fail_msg("a cubin's symbol table is cut off");
        uint64_t names = rd(sh + link * 64 + 24, 8);
        for (uint64_t k = 0; k + 24 <= size; k += 24) {
            const unsigned char *sy = p + off + k;
            int bind = sy[4] >> 4, type = sy[4] & 15;
            if (type == 2 && bind == 1 && rd(sy + 16, 8) > 0 && strcmp((const char *)p + names + rd(sy, 4), kernel) == 0)
                out->kernel = true;
        }
    }
    return true;
}

typedef struct images {
    int cubins[4]; /* [0]: sm_80, [1]: sm_90, [2]: other */
    int ptx;
} images;

/* Every cubin and PTX image in a file (the .so, or the .a holding the
 * object): cubins at 64-byte alignment (.balign 64), each checked; PTX texts
 * (written to DIR/ptx<i>.ptx) with their entry's parameter count. */
static images scan(const char *path, const char *kernel, int params, bool write_ptx)
{
    size_t len;
    unsigned char *data = (unsigned char *)slurp(path, &len);
    images im = {{0}, 0};
    char entry[128];
    snprintf(entry, sizeof entry, ".visible .entry %s(", kernel);
    for (size_t i = 0; i + 4 <= len; i++) {
        cubin c;
        if (data[i] == 0x7f && parse_cubin(data + i, len - i, kernel, &c)) {
            if (!c.kernel || !c.info) fail_msg("%s: the sm_%d cubin at %zu lacks the kernel %s (function %d, .nv.info %d)", path,
                                               c.arch, i, kernel, c.kernel, c.info);
            im.cubins[c.arch == 80 ? 0 : c.arch == 90 ? 1 : 2]++;
        }
        if (data[i] == '/' && i + 40 < len && memcmp(data + i, "//\n// Generated by NVIDIA NVVM Compiler", 39) == 0) {
            const char *text = (const char *)data + i;
            size_t n = strnlen(text, len - i);
            if (!contains(text, n, ".target sm_90") || !contains(text, n, ".version"))
                fail_msg("%s: a PTX image is not for compute_90", path);
            const char *e = strstr(text, entry);
            if (!e) fail_msg("%s: a PTX image has no entry %s", path, kernel);
            int np = 0;
            for (const char *q = e; *q && *q != ')'; q++) np += strncmp(q, ".param", 6) == 0;
            if (np != params) fail_msg("%s: the PTX entry takes %d parameters, runtime/cuda_bundle.c passes %d", path, np, params);
            if (write_ptx) {
                char out[128];
                snprintf(out, sizeof out, "%s/ptx%d.ptx", dir, im.ptx);
                FILE *f = fopen(out, "wb");
                assert_non_null(f);
                assert_int_equal(fwrite(text, 1, n, f), n);
                fclose(f);
            }
            im.ptx++;
            i += n;
        }
    }
    free(data);
    return im;
}

static const char *cli(void) { return getenv("SSMC_CLI"); }
static const char *root(void) { return getenv("SSMC_SOURCE_DIR"); }
static const char *cc(void) { return getenv("CC") && *getenv("CC") ? getenv("CC") : "cc"; }

/* The link line the header gives for the shared library, after "cc prog.c ". */
static char *header_link_line(const char *header)
{
    size_t len;
    char *text = slurp(header, &len);
    const char *at = strstr(text, "the shared library");
    at = at ? strstr(at, "cc prog.c ") : NULL;
    if (!at) fail_msg("%s gives no link line for the shared library", header);
    char *line = strndup(at + strlen("cc prog.c "), strcspn(at + strlen("cc prog.c "), "\n"));
    free(text);
    return line;
}

static void test_pick(void **state)
{
    static const unsigned char x = 0;
    const rt_cb_image im[] = {{80, false, &x, 1}, {90, false, &x, 1}, {90, true, &x, 1}};
    assert_int_equal(rt_cb_pick(im, 3, 90), 1);  /* its own cubin */
    assert_int_equal(rt_cb_pick(im, 3, 86), 0);  /* sm_80's: the same major, a later minor */
    assert_int_equal(rt_cb_pick(im, 3, 89), 0);
    assert_int_equal(rt_cb_pick(im, 3, 100), 2); /* newer than every cubin: the PTX */
    assert_int_equal(rt_cb_pick(im, 3, 120), 2);
    assert_int_equal(rt_cb_pick(im, 3, 75), -1); /* older than everything */
    assert_int_equal(rt_cb_pick(im, 2, 100), -1); /* no PTX */
    const rt_cb_image two[] = {{80, true, &x, 1}, {90, true, &x, 1}, {86, false, &x, 1}};
    assert_int_equal(rt_cb_pick(two, 3, 89), 2);  /* a cubin before any PTX */
    assert_int_equal(rt_cb_pick(two, 3, 100), 1); /* the highest PTX at most the arch */
    assert_int_equal(rt_cb_pick(two, 3, 87), 2);
    assert_int_equal(rt_cb_pick(two, 3, 81), 0);
}

static void test_bundle(void **state)
{
    if (!have_nvrtc) skip();
    bool cpu = harness_cpu_available();
    const char *targets = cpu ? "cpu,cuda:sm_80,cuda:sm_90" : "cuda:sm_80,cuda:sm_90";
    int rc = sh("'%s' build '%s/examples/mamba2.ssm' -o '%s' --target %s --dtype f32,bf16/f32/f32", cli(), root(), dir,
                targets);
    if (rc != 0) fail_msg("ssmc build --target %s exited with %d", targets, rc);
    char so[128], ar[128], header[128];
    snprintf(so, sizeof so, "%s/libmamba2.so", dir);
    snprintf(ar, sizeof ar, "%s/libmamba2.a", dir);
    snprintf(header, sizeof header, "%s/mamba2.h", dir);
    size_t hl;
    char *h = slurp(header, &hl);
    static const char *const decls[] = {"int mamba2_cuda_open(int device, mamba2_cuda **g);",
                                        "int mamba2_cuda_run(mamba2_cuda *g, int sig,",
                                        "int mamba2_cuda_decode(mamba2_cuda *g, int sig,",
                                        "int mamba2_cuda_decode_step(mamba2_cuda *g, int sig,",
                                        "int mamba2_cuda_run_host(mamba2_cuda *g, int sig,",
                                        "#define MAMBA2_CUDA_F32 0",
                                        "#define MAMBA2_CUDA_BF16_F32_F32 1",
                                        "cubins for sm_80 and sm_90, PTX for compute_90"};
    for (size_t i = 0; i < sizeof decls / sizeof *decls; i++)
        if (!contains(h, hl, decls[i])) fail_msg("mamba2.h lacks '%s'", decls[i]);
    if (cpu && !contains(h, hl, "int mamba2_decode(int64_t batch")) fail_msg("mamba2.h lacks mamba2_decode");
    free(h);

    /* B, T, ws, rows, has and x, dt, B, C, A_log, D, dt_bias, S, y */
    images in_so = scan(so, "ssmc_mamba2", 14, true), in_ar = scan(ar, "ssmc_mamba2", 14, false);
    printf("# %s: %d sm_80 cubins, %d sm_90, %d other, %d PTX\n", so, in_so.cubins[0], in_so.cubins[1], in_so.cubins[2],
           in_so.ptx);
    assert_true(in_so.cubins[0] >= 2 && in_so.cubins[0] <= 8); /* 2 signatures, 4 kernels each, identical ones shared */
    assert_int_equal(in_so.cubins[1], in_so.cubins[0]);
    assert_int_equal(in_so.cubins[2], 0);
    assert_int_equal(in_so.ptx, in_so.cubins[0]);
    assert_memory_equal(&in_ar, &in_so, sizeof in_so);

    /* the PTX is what a GPU newer than every cubin compiles: ptxas takes it for sm_90 and sm_100 */
    const char *ptxas = access("/usr/local/cuda/bin/ptxas", X_OK) == 0 ? "/usr/local/cuda/bin/ptxas" : "ptxas";
    if (sh("%s --version >/dev/null 2>&1", ptxas) == 0) {
        for (int i = 0; i < in_so.ptx; i++)
            for (int a = 0; a < 2; a++) {
                int arch = a ? 100 : 90;
                if (sh("%s -arch=sm_%d '%s/ptx%d.ptx' -o '%s/ptx%d.cubin'", ptxas, arch, dir, i, dir, i) != 0)
                    fail_msg("ptxas -arch=sm_%d rejects the bundle's PTX %d", arch, i);
            }
        printf("# ptxas compiles the %d PTX images for sm_90 and sm_100\n", in_so.ptx);
    } else {
        printf("# no ptxas: the PTX images were not compiled\n");
    }

    /* what the library needs and names */
    size_t sl;
    char *sot = slurp(so, &sl);
    assert_false(contains(sot, sl, "nvrtc"));
    assert_false(contains(sot, sl, "libLLVM"));
    assert_false(contains(sot, sl, "libssmc"));
    assert_true(contains(sot, sl, "libcuda.so.1"));
    free(sot);
    rc = sh("readelf -d '%s' | grep NEEDED | grep -q -i -e nvrtc -e cuda -e LLVM -e ssmc", so);
    if (rc == 0) fail_msg("libmamba2.so needs NVRTC, libcuda, LLVM or ssmc at load time");
    rc = sh("nm '%s' | grep ' [TDBRC] ' | grep -v -q -e ' mamba2_run$' -e ' mamba2_decode$' -e ' ssmc_mamba2$' "
            "-e ' mamba2_cuda_open$' -e ' mamba2_cuda_error$' -e ' mamba2_cuda_close$' -e ' mamba2_cuda_run$' "
            "-e ' mamba2_cuda_decode$' -e ' mamba2_cuda_decode_step$' -e ' mamba2_cuda_run_host$'", ar);
    if (rc == 0) fail_msg("libmamba2.a defines global symbols besides its entry points");
    assert_int_equal(sh("nm '%s' | grep -q ' t rt_cb_run$'", ar), 0); /* runtime/cuda_bundle.c, local */

    /* a C program builds against it, shared and static, and refuses cleanly with no GPU */
    char *line = header_link_line(header);
    rc = sh("cd '%s' && %s -O2 -Wall '%s/tests/aot/cuda_main.c' -o '%s/cuda_so' %s", dir, cc(), root(), dir, line);
    free(line);
    if (rc != 0) fail_msg("tests/aot/cuda_main.c does not build as the header says (%d)", rc);
    rc = sh("%s -O2 -Wall -I'%s' '%s/tests/aot/cuda_main.c' -o '%s/cuda_a' '%s' -lm -lpthread -ldl", cc(), dir, root(),
            dir, ar);
    if (rc != 0) fail_msg("tests/aot/cuda_main.c does not build against the static archive (%d)", rc);
    if (!have_gpu) {
        for (int k = 0; k < 2; k++) {
            rc = sh("'%s/%s' '%s' 0 4 4 4 host 2 3 2 2>'%s/err.txt'", dir, k ? "cuda_a" : "cuda_so", dir, dir);
            char errpath[128];
            snprintf(errpath, sizeof errpath, "%s/err.txt", dir);
            size_t el;
            char *err = slurp(errpath, &el);
            printf("# %s without a GPU: exit %d: %.*s", k ? "cuda_a" : "cuda_so", rc, (int)el, err);
            if (rc != 4 || !contains(err, el, "libcuda")) fail_msg("without a GPU cuda_main should exit 4 naming libcuda");
            free(err);
        }
    }
    /* the CPU entry points of a bundle with CUDA code */
    if (cpu) {
        rc = sh("%s -O2 -I'%s' '%s/tests/aot/mamba2_main.c' -o '%s/main_a' '%s' -lm -lpthread -ldl", cc(), dir, root(),
                dir, ar);
        if (rc != 0) fail_msg("tests/aot/mamba2_main.c does not build against the archive with CUDA code (%d)", rc);
        static const char *const names[] = {"x", "dt", "B", "C", "A_log", "D", "dt_bias"};
        static const size_t counts[] = {2 * 3 * 4 * 32, 2 * 3 * 4, 2 * 3 * 64, 2 * 3 * 64, 4, 4, 4};
        for (int i = 0; i < 7; i++) {
            char path[128];
            snprintf(path, sizeof path, "%s/%s.bin", dir, names[i]);
            FILE *f = fopen(path, "wb");
            assert_non_null(f);
            for (size_t k = 0; k < counts[i]; k++) {
                float v = (float)((k * 7 + (size_t)i) % 11) / 11.f - 0.5f;
                fwrite(&v, 4, 1, f);
            }
            fclose(f);
        }
        rc = sh("'%s/main_a' '%s' 2 3 2 nostate", dir, dir);
        if (rc != 0) fail_msg("the CPU entry point of a bundle with CUDA code failed (%d)", rc);
    }
}

/* A cuda-only bundle at odd dims: no CPU entry points; its vector and plain
 * kernels are the same source (nothing divides by a vector width), so they
 * share images. A model reading at t - k: no decode entry points. */
static void test_cuda_only(void **state)
{
    if (!have_nvrtc) skip();
    char sub[96];
    snprintf(sub, sizeof sub, "%s/odd", dir);
    int rc = sh("'%s' build '%s/examples/mamba2.ssm' -o '%s' --target cuda:sm_90 -D H=3 -D P=37 -D N=19", cli(), root(),
                sub);
    if (rc != 0) fail_msg("a cuda-only build exited with %d", rc);
    char so[160], header[160];
    snprintf(so, sizeof so, "%s/libmamba2.so", sub);
    snprintf(header, sizeof header, "%s/mamba2.h", sub);
    size_t hl;
    char *h = slurp(header, &hl);
    assert_false(contains(h, hl, "mamba2_run(int64_t"));
    assert_false(contains(h, hl, "mamba2_tensors {"));
    assert_true(contains(h, hl, "int mamba2_cuda_decode_step("));
    free(h);
    images im = scan(so, "ssmc_mamba2", 14, false);
    printf("# odd dims, f32, sm_90: %d cubins, %d PTX (4 kernels)\n", im.cubins[1], im.ptx);
    assert_true(im.cubins[1] >= 2 && im.cubins[1] < 4);
    assert_int_equal(im.cubins[0] + im.cubins[2], 0);
    assert_int_equal(sh("nm '%s' | grep -q ' T mamba2_run$'", so), 1);

    snprintf(sub, sizeof sub, "%s/ttt", dir);
    rc = sh("'%s' build '%s/examples/ttt_linear.ssm' -o '%s' --target cuda:sm_90", cli(), root(), sub);
    if (rc != 0) fail_msg("a cuda-only build of ttt_linear exited with %d", rc);
    snprintf(header, sizeof header, "%s/ttt_linear.h", sub);
    h = slurp(header, &hl);
    assert_false(contains(h, hl, "ttt_linear_cuda_decode("));
    assert_true(contains(h, hl, "No decode entry points"));
    assert_true(contains(h, hl, "int ttt_linear_cuda_run("));
    free(h);
}

static void expect_refused(const char *args, const char *needle)
{
    char out[128];
    snprintf(out, sizeof out, "%s/err.txt", dir);
    int rc = sh("'%s' build '%s/examples/mamba2.ssm' -o '%s/bad' %s 2>'%s'", cli(), root(), dir, args, out);
    size_t len;
    char *err = slurp(out, &len);
    if (rc == 0 || !contains(err, len, needle)) fail_msg("ssmc build %s: exit %d, '%.*s' (wanted '%s')", args, rc, (int)len, err, needle);
    printf("# refused %s: %s", args, err);
    free(err);
}

static void test_refusals(void **state)
{
    expect_refused("--target cuda", "a cuda target names a GPU arch");
    expect_refused("--target cuda:sm_", "a cuda target names a GPU arch");
    expect_refused("--target cuda:sm_9x", "a cuda target names a GPU arch");
    expect_refused("--target cuda:sm_90 --dtype bf16/x", "bad dtype signature");
    expect_refused("--target cuda:sm_90 --dtype f32/f32/f32/f32", "bad dtype signature");
    expect_refused("--target cpu --dtype bf16", "CPU code takes f32");
}

static int setup(void **state)
{
    strbuf err = {0};
    rt_nvrtc *n = NULL;
    have_nvrtc = rt_nvrtc_load(&n, &err) == SSMC_OK;
    if (!have_nvrtc) printf("# no NVRTC (%s): the bundle builds are skipped\n", sb_cstr(&err));
    rt_nvrtc_free(n);
    sb_free(&err);
    rt_cuda *gpu = NULL;
    have_gpu = rt_cuda_open(&gpu, &err) == SSMC_OK;
    rt_cuda_close(gpu);
    sb_free(&err);
    strcpy(dir, "/tmp/ssmc-cuda-aot-XXXXXX");
    return mkdtemp(dir) && cli() && root() ? 0 : -1;
}

static int teardown(void **state)
{
    if (dir[0]) sh("rm -rf '%s'", dir);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pick),
        cmocka_unit_test(test_bundle),
        cmocka_unit_test(test_cuda_only),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
