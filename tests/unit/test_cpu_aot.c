/* test_cpu_aot.c: `ssmc build` bundles, used the way a C program would.
 *
 * Builds examples/mamba2.ssm with odd dims (H=3, P=37, N=19) into a temporary
 * directory with the CLI (`ssmc build FILE -o DIR --target cpu`), checks that
 * lib<model>.so needs neither LLVM nor ssmc, compiles tests/aot/mamba2_main.c
 * against DIR/mamba2.h twice (linked with the .so and with the .a), runs both
 * on fresh random inputs written as raw f32 files (3 threads from a random
 * initial state; 1 thread with no state given), and compares the outputs and
 * the final state with the interpreter on the same values (relative error at
 * most 1e-5). A bundle whose grid cuts a vector state into tiles runs on a
 * misaligned state exactly as on an aligned one (its wrapper copies the state
 * to an aligned buffer). Then through the API: a bundle for the portable level
 * cpu:x86-64-v3 (on x86-64 hosts) gives the same results, and targets the
 * build cannot make (cuda:sm_90, unknown ones) are refused with a message. A
 * model whose tensors are named like C macros and keywords builds and runs.
 * A bundle of a model with the language's version 2 constructs (an init, a
 * let kept in hidden states, a recomputed window, sin and select) runs
 * without its state given (the init gives it) and with it, against the
 * interpreter, and its header lists no hidden state.
 * Needs a C compiler (cc, or $CC) and ar; exits 77 (skipped) when this build
 * has no CPU backend. SSMC_TEST_SEED=<n> repeats a run. */
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
#include <unistd.h>

#include "ssmc.h"
#include "support/support.h"
#include "tests/unit/helpers/cpu_harness.h"

static const ssmc_dim dims[] = {{"H", 3}, {"P", 37}, {"N", 19}};
#define NDIMS 3
#define BATCH 2
#define SEQLEN 33

static char dir[64];
static const char *root;

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    return system(cmd);
}

static bool file_contains(const char *path, const char *needle)
{
    size_t len;
    const char *why;
    char *text = read_file(path, &len, &why);
    if (!text) fail_msg("cannot read %s: %s", path, why);
    bool found = false;
    size_t k = strlen(needle);
    for (size_t i = 0; i + k <= len && !found; i++) found = memcmp(text + i, needle, k) == 0;
    free(text);
    return found;
}

static void write_raw(const char *name, const double *v, size_t n)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s.bin", dir, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    for (size_t i = 0; i < n; i++) {
        float x = (float)v[i];
        assert_int_equal(fwrite(&x, sizeof x, 1, f), 1);
    }
    assert_int_equal(fclose(f), 0);
}

static float *read_raw(const char *name, size_t n)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s.out", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f) fail_msg("%s was not written", path);
    float *p = malloc(n * sizeof *p);
    assert_non_null(p);
    assert_int_equal(fread(p, sizeof *p, n, f), n);
    fclose(f);
    return p;
}

static double rel_error(const float *got, const double *ref, size_t n)
{
    double maxref = 0, maxdiff = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(got[i])) return INFINITY;
        maxref = fmax(maxref, fabs(ref[i]));
        maxdiff = fmax(maxdiff, fabs(got[i] - ref[i]));
    }
    return maxref > 0 ? maxdiff / maxref : maxdiff;
}

/* Runs DIR/<exe> and checks it against the interpreter on fresh data. */
static void run_and_check(ssmc_model *ref, const char *exe, int threads, bool with_state, uint64_t seed)
{
    int n = ssmc_model_num_tensors(ref);
    double *data[16] = {0};
    ssmc_arg args[16];
    size_t count[16];
    int na = 0;
    uint64_t s = seed;
    assert_true(n <= 16);
    for (int i = 0; i < n; i++) {
        ssmc_tensor_info info;
        ssmc_model_tensor(ref, i, &info);
        size_t c = 1;
        for (int j = 0; j < info.rank; j++) c *= (size_t)info.shape[j];
        if (info.role != SSMC_PARAM) c *= BATCH;
        if (info.per_step) c *= SEQLEN;
        count[i] = c;
        data[i] = malloc(c * sizeof(double));
        assert_non_null(data[i]);
        for (size_t k = 0; k < c; k++) {
            s += 0x9e3779b97f4a7c15ull;
            uint64_t z = (s ^ (s >> 31)) * 0xbf58476d1ce4e5b9ull;
            double u = (double)((z ^ (z >> 29)) >> 11) * 0x1.0p-53;
            double lo = strcmp(info.name, "dt") == 0 ? -3 : -1, hi = 1;
            data[i][k] = info.role == SSMC_OUTPUT ? NAN : (double)(float)(lo + (hi - lo) * u);
        }
        if (info.role == SSMC_STATE && !with_state) continue; /* zero initial state, final not checked */
        if (info.role != SSMC_OUTPUT) write_raw(info.name, data[i], c);
        args[na++] = (ssmc_arg){info.name, SSMC_F64, data[i], 0};
    }
    int rc = sh("'%s/%s' '%s' %d %d %d %s", dir, exe, dir, BATCH, SEQLEN, threads, with_state ? "state" : "nostate");
    if (rc != 0) fail_msg("%s exited with %d", exe, rc);
    assert_int_equal(ssmc_run(ref, BATCH, SEQLEN, args, na), SSMC_OK);
    int checked = 0;
    for (int i = 0; i < n; i++) {
        ssmc_tensor_info info;
        ssmc_model_tensor(ref, i, &info);
        if (info.role == SSMC_OUTPUT || (info.role == SSMC_STATE && with_state)) {
            float *got = read_raw(info.name, count[i]);
            double e = rel_error(got, data[i], count[i]);
            printf("  %s %-9s %s %-2s rel error %.3e\n", exe, with_state ? "state" : "no state",
                   info.role == SSMC_OUTPUT ? "output" : "state", info.name, e);
            if (!(e <= 1e-5)) fail_msg("%s: %s rel error %.3e > 1e-5 (SSMC_TEST_SEED=%" PRIu64 ")", exe, info.name, e,
                                       seed);
            free(got);
            checked++;
        }
        free(data[i]);
    }
    assert_int_equal(checked, with_state ? 2 : 1);
}

/* max |got - ref| / max |ref|, where a NaN in both (a padding slot's
 * poisoned output) is skipped and a NaN in one is an infinite error. */
static double rel_error_nan(const float *got, const double *ref, size_t n)
{
    double maxref = 0, maxdiff = 0;
    for (size_t i = 0; i < n; i++) {
        if (isnan(got[i]) && isnan(ref[i])) continue;
        if (isnan(got[i]) != isnan(ref[i]) || !isfinite(got[i])) return INFINITY;
        maxref = fmax(maxref, fabs(ref[i]));
        maxdiff = fmax(maxdiff, fabs(got[i] - ref[i]));
    }
    return maxref > 0 ? maxdiff / maxref : maxdiff;
}

/* DIR/<exe> in decode mode (mamba2_decode against a pool of 7 rows, four
 * sequences on rows out of order, one a padding slot, one without a state
 * when with_has) against the interpreter's ssmc_decode on the same values. */
static void decode_and_check(ssmc_model *ref, const char *exe, int64_t T, int threads, bool with_has, uint64_t seed)
{
    enum { B = 4, R = 7 };
    static const int32_t idx[B] = {5, 0, -1, 3};
    static const uint8_t has[B] = {1, 0, 1, 1};
    int n = ssmc_model_num_tensors(ref);
    double *data[16] = {0};
    ssmc_arg args[16];
    size_t count[16];
    uint64_t s = seed;
    assert_true(n <= 16);
    for (int i = 0; i < n; i++) {
        ssmc_tensor_info info;
        ssmc_model_tensor(ref, i, &info);
        size_t c = 1;
        for (int j = 0; j < info.rank; j++) c *= (size_t)info.shape[j];
        if (info.role == SSMC_STATE) c *= R;
        else if (info.role != SSMC_PARAM) c *= B;
        if (info.per_step) c *= (size_t)T;
        count[i] = c;
        data[i] = malloc(c * sizeof(double));
        assert_non_null(data[i]);
        for (size_t k = 0; k < c; k++) {
            s += 0x9e3779b97f4a7c15ull;
            uint64_t z = (s ^ (s >> 31)) * 0xbf58476d1ce4e5b9ull;
            double u = (double)((z ^ (z >> 29)) >> 11) * 0x1.0p-53;
            double lo = strcmp(info.name, "dt") == 0 ? -3 : -1, hi = 1;
            data[i][k] = info.role == SSMC_OUTPUT ? NAN : (double)(float)(lo + (hi - lo) * u);
        }
        if (info.role != SSMC_OUTPUT) write_raw(info.name, data[i], c);
        args[i] = (ssmc_arg){info.name, SSMC_F64, data[i], 0};
    }
    char path[256];
    snprintf(path, sizeof path, "%s/idx.bin", dir);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(idx, sizeof idx, 1, f), 1);
    fclose(f);
    snprintf(path, sizeof path, "%s/has.bin", dir);
    remove(path);
    if (with_has) {
        f = fopen(path, "wb");
        assert_non_null(f);
        assert_int_equal(fwrite(has, sizeof has, 1, f), 1);
        fclose(f);
    }
    int rc = sh("'%s/%s' '%s' %d %lld %d decode %d", dir, exe, dir, B, (long long)T, threads, R);
    if (rc != 0) fail_msg("%s decode exited with %d", exe, rc);
    ssmc_rows rows = {idx, with_has ? has : NULL, R};
    assert_int_equal(ssmc_decode(ref, B, T, args, n, &rows), SSMC_OK);
    for (int i = 0; i < n; i++) {
        ssmc_tensor_info info;
        ssmc_model_tensor(ref, i, &info);
        if (info.role == SSMC_OUTPUT || info.role == SSMC_STATE) {
            float *got = read_raw(info.name, count[i]);
            double e = rel_error_nan(got, data[i], count[i]);
            printf("  %s decode T=%lld%s %s %-2s rel error %.3e\n", exe, (long long)T, with_has ? " has_state" : "",
                   info.role == SSMC_OUTPUT ? "output" : "pool", info.name, e);
            if (!(e <= 1e-5))
                fail_msg("%s decode: %s rel error %.3e > 1e-5 (SSMC_TEST_SEED=%" PRIu64 ")", exe, info.name, e, seed);
            free(got);
        }
        free(data[i]);
    }
}

/* The link line the header gives for the shared library ("cc prog.c ..."),
 * from "cc" on, without the line end. */
static char *header_link_line(const char *header)
{
    size_t len;
    const char *why;
    char *text = read_file(header, &len, &why);
    if (!text) fail_msg("cannot read %s: %s", header, why);
    const char *at = strstr(text, "the shared library");
    at = at ? strstr(at, "cc prog.c ") : NULL;
    if (!at) fail_msg("%s gives no link line for the shared library", header);
    char *line = strndup(at, strcspn(at, "\n"));
    free(text);
    return line;
}

static void compile_consumers(const char *tag)
{
    const char *cc = getenv("CC") && *getenv("CC") ? getenv("CC") : "cc";
    /* the shared library exactly as the header says to link it: the program
     * must then find it with no LD_LIBRARY_PATH (run_and_check sets none) */
    char header[160];
    snprintf(header, sizeof header, "%s/mamba2.h", dir);
    char *line = header_link_line(header);
    int rc = sh("cd '%s' && unset LD_LIBRARY_PATH && %s -O2 '%s/tests/aot/mamba2_main.c' -o '%s/main_so%s' %s", dir, cc,
                root, dir, tag, line + strlen("cc prog.c "));
    free(line);
    if (rc != 0) fail_msg("compiling tests/aot/mamba2_main.c against the .so as the header says failed (%d)", rc);
    rc = sh("%s -O2 -I'%s' '%s/tests/aot/mamba2_main.c' -o '%s/main_a%s' '%s/libmamba2.a' -lm -lpthread", cc, dir,
            root, dir, tag, dir);
    if (rc != 0) fail_msg("compiling tests/aot/mamba2_main.c against the .a failed (%d)", rc);
}

/* A bundle whose grid cuts a state's rows (a vector state of 50 in tiles of
 * 16, 16, 16, 2): its wrapper copies a misaligned state to an aligned buffer
 * for long runs, so a run on a state at an odd address must give, bit for
 * bit, what a run on an aligned one gives. */
static const char vec_source[] =
    "model vecrnn {\n"
    "  dim E = 50;\n"
    "  input x[T,E], g[T,E];\n"
    "  state s[E];\n"
    "  output y[T,E];\n"
    "  s[e] = sigmoid(g[t,e]) * s[e] + x[t,e];\n"
    "  y[t,e] = s[e] * x[t,e];\n"
    "}\n";

static const char vec_main[] =
    "#include <stdint.h>\n#include <string.h>\n#include \"vecrnn.h\"\n"
    "int main(void)\n{\n"
    "    enum { B = 3, T = 40, E = VECRNN_DIM_E };\n"
    "    static float x[B * T * E], g[B * T * E], y1[B * T * E], y2[B * T * E], s1[B * E + 32], s2[B * E + 32];\n"
    "    unsigned r = 7;\n"
    "    for (size_t i = 0; i < B * T * E; i++) {\n"
    "        x[i] = (float)((r = r * 1103515245u + 12345u) >> 8) / 8388608.0f - 1.0f;\n"
    "        g[i] = (float)((r = r * 1103515245u + 12345u) >> 8) / 8388608.0f - 1.0f;\n"
    "    }\n"
    "    float *sa = (float *)(((uintptr_t)s1 + 63) & ~(uintptr_t)63);\n"
    "    float *sb = (float *)((((uintptr_t)s2 + 63) & ~(uintptr_t)63) + 4);\n"
    "    for (size_t i = 0; i < B * E; i++) sa[i] = sb[i] = 0.25f;\n"
    "    vecrnn_tensors t1 = {x, g, sa, y1}, t2 = {x, g, sb, y2};\n"
    "    if (vecrnn_run(B, T, &t1, 4) || vecrnn_run(B, T, &t2, 4)) return 2;\n"
    "    if (memcmp(y1, y2, sizeof y1) || memcmp(sa, sb, B * E * sizeof(float))) return 4;\n"
    "    if (sa[0] == 0.25f) return 5;\n"
    "    return 0;\n}\n";

static const char *fmt_path(const char *name)
{
    static char path[160];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return path;
}

static void write_file(const char *name, const char *text, size_t n)
{
    char path[128];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

/* Version 2 in a bundle: S from its init (the state passed as NULL), g read
 * at t - 1 through a hidden state the header does not show, u recomputed over
 * a window, sin and select. The consumer prints y (and S) in %.9g. */
static const char v2_source[] =
    "model v2b {\n"
    "  dim N = 5, W = 3;\n"
    "  input x[T,N];\n"
    "  param p[N];\n"
    "  state S[N];\n"
    "  output y[T,N];\n"
    "  init S[n] = p[n] + n;\n"
    "  let u[t,n] = sin(3 * x[t,n]) + x[t - 1,n];\n"
    "  S[n] = 0.5 * S[n] + u[t - 1,n];\n"
    "  let g[t,n] = S[n] * 2;\n"
    "  y[t,n] = select(x[t,n] > 0, g[t - 1,n], sum(j[W]: u[t - j,n]));\n"
    "}\n";

static const char v2_main[] =
    "#include <stdio.h>\n#include <string.h>\n#include \"v2b.h\"\n"
    "int main(int argc, char **argv)\n{\n"
    "    enum { B = 2, T = 9, N = V2B_DIM_N };\n"
    "    static float x[B * T * N], p[N], S[B * N], y[B * T * N];\n"
    "    for (int i = 0; i < B * T * N; i++) x[i] = (float)((i * 37 % 23) - 11) / 8.0f;\n"
    "    for (int i = 0; i < N; i++) p[i] = 0.25f * (float)i - 0.5f;\n"
    "    for (int i = 0; i < B * N; i++) S[i] = 0.125f * (float)i;\n"
    "    int with_state = argc > 1 && strcmp(argv[1], \"state\") == 0;\n"
    "    v2b_tensors t = {x, p, with_state ? S : NULL, y};\n"
    "    if (v2b_run(B, T, &t, 2)) return 2;\n"
    "    for (int i = 0; i < B * T * N; i++) printf(\"%.9g\\n\", y[i]);\n"
    "    for (int i = 0; with_state && i < B * N; i++) printf(\"%.9g\\n\", S[i]);\n"
    "    return 0;\n}\n";

static void check_v2_bundle(const char *cli)
{
    write_file("v2b.ssm", v2_source, sizeof v2_source - 1);
    write_file("v2b_main.c", v2_main, sizeof v2_main - 1);
    int rc = sh("'%s' build '%s/v2b.ssm' -o '%s'", cli, dir, dir);
    if (rc != 0) fail_msg("ssmc build of v2b exited with %d", rc);
    char h[128];
    snprintf(h, sizeof h, "%s/v2b.h", dir);
    assert_false(file_contains(h, "g_prev"));
    assert_true(file_contains(h, "NULL: the model's init"));
    const char *cc = getenv("CC") && *getenv("CC") ? getenv("CC") : "cc";
    rc = sh("%s -O2 -I'%s' '%s/v2b_main.c' -o '%s/v2b_main' '%s/libv2b.a' -lm -lpthread", cc, dir, dir, dir, dir);
    if (rc != 0) fail_msg("compiling the v2b consumer failed (%d)", rc);
    ssmc_ctx *ctx = ssmc_ctx_new();
    ssmc_model *ref = NULL;
    assert_int_equal(harness_compile(ctx, "v2b.ssm", v2_source, sizeof v2_source - 1, NULL, 0, SSMC_DEVICE_INTERP, 0,
                                     &ref),
                     SSMC_OK);
    enum { B = 2, T = 9, N = 5 };
    for (int with_state = 0; with_state < 2; with_state++) {
        double x[B * T * N], p[N], S[B * N], y[B * T * N];
        for (int i = 0; i < B * T * N; i++) x[i] = (double)(float)((double)((i * 37 % 23) - 11) / 8.0);
        for (int i = 0; i < N; i++) p[i] = 0.25 * i - 0.5;
        for (int i = 0; i < B * N; i++) S[i] = 0.125 * i;
        ssmc_arg args[] = {{"x", SSMC_F64, x, 0}, {"p", SSMC_F64, p, 0}, {"y", SSMC_F64, y, 0}, {"S", SSMC_F64, S, 0}};
        assert_int_equal(ssmc_run(ref, B, T, args, with_state ? 4 : 3), SSMC_OK);
        char cmd[256];
        snprintf(cmd, sizeof cmd, "'%s/v2b_main' %s", dir, with_state ? "state" : "nostate");
        FILE *out = popen(cmd, "r");
        assert_non_null(out);
        float got[B * T * N + B * N];
        int n = 0;
        while (n < B * T * N + B * N && fscanf(out, "%f", &got[n]) == 1) n++;
        assert_int_equal(pclose(out), 0);
        assert_int_equal(n, B * T * N + (with_state ? B * N : 0));
        double ey = rel_error(got, y, B * T * N), es = with_state ? rel_error(got + B * T * N, S, B * N) : 0;
        printf("  v2b %-9s y rel error %.3e, S %.3e\n", with_state ? "state" : "no state", ey, es);
        if (!(ey <= 1e-5) || !(es <= 1e-5)) fail_msg("v2b bundle: y %.3e, S %.3e > 1e-5", ey, es);
    }
    ssmc_model_free(ref);
    ssmc_ctx_free(ctx);
}

static void check_row_split_bundle(const char *cli)
{
    write_file("vecrnn.ssm", vec_source, sizeof vec_source - 1);
    write_file("vecrnn_main.c", vec_main, sizeof vec_main - 1);
    int rc = sh("'%s' build '%s/vecrnn.ssm' -o '%s' --threads 4", cli, dir, dir);
    if (rc != 0) fail_msg("ssmc build of vecrnn exited with %d", rc);
    const char *cc = getenv("CC") && *getenv("CC") ? getenv("CC") : "cc";
    rc = sh("%s -O2 -I'%s' '%s/vecrnn_main.c' -o '%s/vecrnn_main' '%s/libvecrnn.a' -lm -lpthread", cc, dir, dir, dir,
            dir);
    if (rc != 0) fail_msg("compiling the vecrnn consumer failed (%d)", rc);
    rc = sh("'%s/vecrnn_main'", dir);
    if (rc != 0) fail_msg("the vecrnn bundle gave different results on a misaligned state (exit %d)", rc);
}

/* Tensors named like C macros and keywords (`linux` and `unix` are predefined
 * in GNU C, `NULL`, `errno` and `stdin` come with libc, `int` is a keyword):
 * the bundle builds (its fields are <model>_<tensor>), and a consumer that
 * includes the libc headers first runs it right. */
static const char macro_source[] =
    "model macros {\n"
    "  dim N = 4;\n"
    "  input linux[T,N], NULL[T,N];\n"
    "  param unix[N], int;\n"
    "  state errno[N];\n"
    "  output stdin[T,N];\n"
    "  errno[n] = 0.5 * errno[n] + linux[t,n] * unix[n] + int;\n"
    "  stdin[t,n] = errno[n] - NULL[t,n];\n"
    "}\n";

static const char macro_main[] =
    "#include <errno.h>\n#include <math.h>\n#include <stddef.h>\n#include <stdio.h>\n#include \"macros.h\"\n"
    "int main(void)\n{\n"
    "    enum { B = 2, T = 5, N = MACROS_DIM_N };\n"
    "    static float a[B * T * N], b[B * T * N], u[N], k = 0.25f, s[B * N], y[B * T * N];\n"
    "    for (int i = 0; i < B * T * N; i++) a[i] = (float)(i % 7) / 7, b[i] = (float)(i % 3) / 3;\n"
    "    for (int i = 0; i < N; i++) u[i] = (float)i - 1.5f;\n"
    "    macros_tensors t = {0};\n"
    "    t.macros_linux = a;\n    t.macros_NULL = b;\n    t.macros_unix = u;\n    t.macros_int = &k;\n"
    "    t.macros_errno = s;\n    t.macros_stdin = y;\n"
    "    if (macros_run(B, T, &t, 2) != 0) return 2;\n"
    "    for (int bb = 0; bb < B; bb++)\n"
    "        for (int n = 0; n < N; n++) {\n"
    "            double st = 0;\n"
    "            for (int tt = 0; tt < T; tt++) {\n"
    "                int i = (bb * T + tt) * N + n;\n"
    "                st = 0.5 * st + a[i] * u[n] + k;\n"
    "                if (fabs(y[i] - (st - b[i])) > 1e-5) return 3;\n"
    "            }\n"
    "            if (fabs(s[bb * N + n] - st) > 1e-5) return 4;\n"
    "        }\n"
    "    return errno == 0 && stdin != NULL ? 0 : 5;\n}\n";

static void check_macro_names_bundle(const char *cli)
{
    write_file("macros.ssm", macro_source, sizeof macro_source - 1);
    write_file("macros_main.c", macro_main, sizeof macro_main - 1);
    int rc = sh("'%s' build '%s/macros.ssm' -o '%s'", cli, dir, dir);
    if (rc != 0) fail_msg("ssmc build of a model with tensors named like C macros exited with %d", rc);
    assert_true(file_contains(fmt_path("macros.h"), "const float *macros_linux; /* input linux [B, T, N = 4]"));
    const char *cc = getenv("CC") && *getenv("CC") ? getenv("CC") : "cc";
    rc = sh("%s -O2 -I'%s' '%s/macros_main.c' -o '%s/macros_main' '%s/libmacros.a' -lm -lpthread", cc, dir, dir, dir,
            dir);
    if (rc != 0) fail_msg("compiling the consumer of the macros bundle failed (%d)", rc);
    rc = sh("'%s/macros_main'", dir);
    if (rc != 0) fail_msg("the macros bundle gave wrong results (exit %d)", rc);
}

/* The bundles' threads are runtime/pool.c's, compiled in: the archive holds
 * the pool's functions, local, and defines no global symbol but its
 * <model>_run (and its kernel); so two bundles and their pools link into one
 * program, statically and as shared libraries, and both run right. */
static const char two_main[] =
    "#include <stdint.h>\n#include \"vecrnn.h\"\n#include \"macros.h\"\n"
    "int main(void)\n{\n"
    "    static float x[2 * 20 * VECRNN_DIM_E], g[2 * 20 * VECRNN_DIM_E], s[2 * VECRNN_DIM_E], y[2 * 20 * VECRNN_DIM_E];\n"
    "    for (int i = 0; i < 2 * 20 * VECRNN_DIM_E; i++) x[i] = (float)(i % 5) / 5, g[i] = 0.5f;\n"
    "    vecrnn_tensors v = {x, g, s, y};\n"
    "    if (vecrnn_run(2, 20, &v, 3) != 0) return 2;\n"
    "    /* the first element: s = sigmoid(0.5) s + x; y = s x */\n"
    "    double st = 0, sg = 1 / (1 + 0.6065306597126334);\n"
    "    for (int t = 0; t < 20; t++) {\n"
    "        st = sg * st + x[t * VECRNN_DIM_E];\n"
    "        double d = y[t * VECRNN_DIM_E] - st * x[t * VECRNN_DIM_E];\n"
    "        if (d > 1e-5 || d < -1e-5) return 3;\n"
    "    }\n"
    "    static float a[1 * 3 * MACROS_DIM_N], b[1 * 3 * MACROS_DIM_N], u[MACROS_DIM_N], k = 1, out[1 * 3 * MACROS_DIM_N];\n"
    "    macros_tensors m = {0};\n"
    "    m.macros_linux = a;\n    m.macros_NULL = b;\n    m.macros_unix = u;\n    m.macros_int = &k;\n"
    "    m.macros_stdin = out;\n"
    "    if (macros_run(1, 3, &m, 2) != 0) return 4;\n"
    "    /* all zero inputs, k = 1: s = 1, 1.5, 1.75 */\n"
    "    return out[2 * MACROS_DIM_N] == 1.75f ? 0 : 5;\n}\n";

static void check_two_bundles(void)
{
    int rc = sh("nm '%s/libvecrnn.a' | grep -q ' t rt_pool_run$'", dir);
    if (rc != 0) fail_msg("libvecrnn.a does not hold runtime/pool.c's rt_pool_run as a local symbol");
    rc = sh("nm '%s/libvecrnn.a' | grep ' [TDBRC] ' | grep -v -q -e ' vecrnn_run$' -e ' vecrnn_decode$' "
            "-e ' ssmc_vecrnn$'", dir);
    if (rc == 0) fail_msg("libvecrnn.a defines global symbols besides vecrnn_run, vecrnn_decode and its kernel");
    write_file("two_main.c", two_main, sizeof two_main - 1);
    const char *cc = getenv("CC") && *getenv("CC") ? getenv("CC") : "cc";
    rc = sh("%s -O2 -I'%s' '%s/two_main.c' -o '%s/two_main_a' '%s/libvecrnn.a' '%s/libmacros.a' -lm -lpthread", cc, dir,
            dir, dir, dir, dir);
    if (rc != 0) fail_msg("linking two bundles' archives into one program failed (%d)", rc);
    rc = sh("'%s/two_main_a'", dir);
    if (rc != 0) fail_msg("two bundles in one program (static) gave wrong results (exit %d)", rc);
    rc = sh("%s -O2 -I'%s' '%s/two_main.c' -o '%s/two_main_so' -L'%s' -lvecrnn -lmacros -Wl,-rpath,'%s' -lm -lpthread",
            cc, dir, dir, dir, dir, dir);
    if (rc != 0) fail_msg("linking two bundles' shared libraries into one program failed (%d)", rc);
    rc = sh("'%s/two_main_so'", dir);
    if (rc != 0) fail_msg("two bundles in one program (shared) gave wrong results (exit %d)", rc);
}

static void test_bundle(void **state)
{
    (void)state;
    uint64_t seed = harness_seed();
    root = getenv("SSMC_SOURCE_DIR");
    const char *cli = getenv("SSMC_CLI");
    assert_non_null(root);
    assert_non_null(cli);
    size_t len;
    char *src = harness_read_source("examples/mamba2.ssm", &len);
    assert_non_null(src);
    ssmc_ctx *ctx = ssmc_ctx_new();
    ssmc_model *probe = NULL, *ref = NULL;
    ssmc_status s = harness_compile(ctx, "mamba2.ssm", src, len, dims, NDIMS, SSMC_DEVICE_CPU, 1, &probe);
    ssmc_model_free(probe);
    if (s == SSMC_ERR_UNSUPPORTED) {
        free(src);
        ssmc_ctx_free(ctx);
        skip();
    }
    assert_int_equal(harness_compile(ctx, "mamba2.ssm", src, len, dims, NDIMS, SSMC_DEVICE_INTERP, 0, &ref), SSMC_OK);
    strcpy(dir, "/tmp/ssmc-aot-XXXXXX");
    assert_non_null(mkdtemp(dir));

    /* the CLI */
    int rc = sh("'%s' build '%s/examples/mamba2.ssm' -o '%s' --target cpu -D H=3 -D P=37 -D N=19", cli, root, dir);
    if (rc != 0) fail_msg("ssmc build exited with %d", rc);
    char so[128];
    snprintf(so, sizeof so, "%s/libmamba2.so", dir);
    assert_false(file_contains(so, "libLLVM"));
    assert_false(file_contains(so, "libssmc"));
    assert_true(file_contains(so, "mamba2_run"));
    compile_consumers("");
    run_and_check(ref, "main_so", 3, true, seed);
    run_and_check(ref, "main_a", 1, false, seed + 1);
    run_and_check(ref, "main_a", 2, true, seed + 3); /* threads pinned where there are 2 CPUs */
    setenv("SSMC_PIN", "0", 1);                      /* and left to the scheduler */
    run_and_check(ref, "main_a", 2, true, seed + 4);
    unsetenv("SSMC_PIN");
    decode_and_check(ref, "main_so", 1, 3, false, seed + 5);
    decode_and_check(ref, "main_a", 3, 2, true, seed + 6);
    decode_and_check(ref, "main_a", 1, 1, true, seed + 7);

    /* the API: a portable x86-64 level, and targets that cannot be built */
    ssmc_options o = {.dims = dims, .ndims = NDIMS, .threads = 2};
#if defined(__x86_64__)
    s = ssmc_build(ctx, "mamba2.ssm", src, len, &o, "cpu:x86-64-v3", NULL, dir);
    if (s != SSMC_OK) fail_msg("build for cpu:x86-64-v3: %s", ssmc_ctx_error(ctx));
    compile_consumers("_v3");
    run_and_check(ref, "main_so_v3", 2, true, seed + 2);
#endif
    check_row_split_bundle(cli);
    check_macro_names_bundle(cli);
    check_v2_bundle(cli);
    check_two_bundles();

    /* (bundles with cuda targets: test_cuda_aot.c) */
    s = ssmc_build(ctx, "mamba2.ssm", src, len, &o, "cpu,cuda", NULL, dir);
    assert_int_equal(s, SSMC_ERR_ARG);
    assert_non_null(strstr(ssmc_ctx_error(ctx), "a cuda target names a GPU arch"));
    s = ssmc_build(ctx, "mamba2.ssm", src, len, &o, "cpu", "bf16", dir);
    assert_int_equal(s, SSMC_ERR_ARG);
    assert_non_null(strstr(ssmc_ctx_error(ctx), "CPU code takes f32"));
    s = ssmc_build(ctx, "mamba2.ssm", src, len, &o, "cpu:pentium", NULL, dir);
    assert_int_equal(s, SSMC_ERR_ARG);
    assert_non_null(strstr(ssmc_ctx_error(ctx), "unknown cpu target"));
    /* the list in the message is every target there is */
    static const char *const targets[] = {"cpu", "cpu:x86-64", "cpu:x86-64-v2", "cpu:x86-64-v3", "cpu:x86-64-v4",
                                          "cuda:sm_XX"};
    s = ssmc_build(ctx, "mamba2.ssm", src, len, &o, "tpu", NULL, dir);
    assert_int_equal(s, SSMC_ERR_ARG);
    for (size_t i = 0; i < sizeof targets / sizeof *targets; i++) {
        char want[32];
        snprintf(want, sizeof want, "%s%s", targets[i], i + 1 < sizeof targets / sizeof *targets ? "," : " (");
        if (!strstr(ssmc_ctx_error(ctx), want)) fail_msg("the target list lacks %s: %s", targets[i], ssmc_ctx_error(ctx));
    }
    /* a bundle records its own name, so a program linked with it needs it by that name */
    assert_int_equal(sh("readelf -d '%s' 2>/dev/null | grep -q 'soname: \\[libmamba2.so\\]' || "
                        "! command -v readelf >/dev/null", so),
                     0);

    ssmc_model_free(ref);
    ssmc_ctx_free(ctx);
    free(src);
}

static int remove_dir(void **state)
{
    (void)state;
    if (dir[0]) sh("rm -rf '%s'", dir);
    dir[0] = 0;
    return 0;
}

int main(void)
{
    if (!harness_cpu_available()) return 77; /* no LLVM in this build: skipped */
    const struct CMUnitTest tests[] = {cmocka_unit_test_teardown(test_bundle, remove_dir)};
    return cmocka_run_group_tests_name("cpu aot", tests, NULL, NULL);
}
