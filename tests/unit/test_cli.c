/* test_cli.c: the command line contract of SPEC §5, tested by running the
 * `ssmc` binary (SSMC_CLI) in a fresh mkdtemp directory per test and reading
 * what it writes with runtime/npy.h.
 *
 * run: --out writes <output>.npy [B,T,...] and <state>.npy [B,...] as `<f4`
 * for every example; --in takes inputs and params in `<f4`, `<f8` and `<f2`
 * (the values are used: the result equals the library's interpreter on the
 * same values), B and T come from the files; --seed is reproducible and
 * matters only for what is not given; --init-state continues a run (T=10 at
 * once equals 4 steps, then 6 from the saved state, on the interpreter and on
 * the CPU backend when built); --dtype bf16 takes `<u2` files; --verify prints
 * one line per output and state. check on every example and on a bad file;
 * emit; bad flags exit 2 with the usage.
 *
 * Error boundaries (exit 1, a message naming the culprit, never a signal):
 * malformed, truncated and `<i4` files, a wrong shape, a missing file, an
 * unknown name, --init-state of an input, NaN/Inf with --check-finite, absurd
 * -D values, and running out of memory (RLIMIT_AS on the child; under ASan,
 * whose shadow mapping cannot live under RLIMIT_AS at start-up, the CLI gets
 * max_allocation_size_mb instead). The library itself: ssmc_run on the
 * interpreter in a forked child whose address space is capped just above
 * what its tensors take returns SSMC_ERR_NOMEM or SSMC_ERR_ARG. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <regex.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "runtime/npy.h"
#include "ssmc.h"
#include "support/support.h"

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif

#if UNDER_ASAN
/* a failed allocation must come back as NULL for the library to report it */
const char *__asan_default_options(void);
const char *__asan_default_options(void) { return "allocator_may_return_null=1"; }
#endif

/* ---- per-test scratch: a directory and the strings made for it ---- */
static char g_dir[256];
static char *g_strs[512];
static int g_nstrs;

static char *fmt(const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    char *s = NULL;
    assert_true(vasprintf(&s, f, ap) >= 0);
    va_end(ap);
    assert_true(g_nstrs < (int)(sizeof g_strs / sizeof *g_strs));
    g_strs[g_nstrs++] = s;
    return s;
}

static char *tmp(const char *name) { return fmt("%s/%s", g_dir, name); }

static char *example(const char *name) { return fmt("%s/examples/%s.ssm", getenv("SSMC_SOURCE_DIR"), name); }

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st, (void)flag, (void)f;
    return remove(p);
}

static int setup(void **state)
{
    (void)state;
    snprintf(g_dir, sizeof g_dir, "/tmp/ssmc-cli-XXXXXX");
    return mkdtemp(g_dir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    nftw(g_dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    for (int i = 0; i < g_nstrs; i++) free(g_strs[i]);
    g_nstrs = 0;
    return 0;
}

/* ---- running the CLI ---- */
typedef struct proc {
    int rc;      /* exit status, or -signal */
    char *out;   /* stdout, stderr (owned by the string list) */
    char *err;
} proc;

typedef struct limits {
    size_t as_bytes;  /* RLIMIT_AS for the child (0: none) */
    size_t asan_mb;   /* under ASan: max_allocation_size_mb instead */
} limits;

static char *slurp(const char *path)
{
    size_t len;
    const char *why;
    char *t = read_file(path, &len, &why);
    if (!t) t = strdup("");
    assert_non_null(t);
    assert_true(g_nstrs < (int)(sizeof g_strs / sizeof *g_strs));
    g_strs[g_nstrs++] = t;
    return t;
}

static proc run_argv(const limits *lim, char **argv)
{
    const char *cli = getenv("SSMC_CLI");
    if (!cli) fail_msg("SSMC_CLI is not set (run through ctest)");
    char *out = tmp("stdout.txt"), *err = tmp("stderr.txt");
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fo = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644), fe = open(err, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fo < 0 || fe < 0) _exit(120);
        dup2(fo, 1);
        dup2(fe, 2);
        struct rlimit cpu = {120, 120}; /* a hang becomes SIGXCPU, not a stuck test */
        setrlimit(RLIMIT_CPU, &cpu);
        if (lim && UNDER_ASAN && lim->asan_mb) {
            char opt[128];
            snprintf(opt, sizeof opt, "allocator_may_return_null=1:max_allocation_size_mb=%zu", lim->asan_mb);
            setenv("ASAN_OPTIONS", opt, 1);
        } else if (lim && !UNDER_ASAN && lim->as_bytes) {
            struct rlimit as = {lim->as_bytes, lim->as_bytes};
            setrlimit(RLIMIT_AS, &as);
        }
        argv[0] = (char *)cli;
        execv(cli, argv);
        _exit(121);
    }
    int st;
    assert_true(waitpid(pid, &st, 0) == pid);
    proc p = {WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st), slurp(out), slurp(err)};
    assert_int_not_equal(p.rc, 121);
    return p;
}

/* ssmc ARGS... (NULL-terminated) */
static proc ssmc_lim(const limits *lim, ...)
{
    char *argv[64];
    int n = 1;
    va_list ap;
    va_start(ap, lim);
    for (char *a; (a = va_arg(ap, char *)) != NULL;) {
        assert_true(n < 63);
        argv[n++] = a;
    }
    va_end(ap);
    argv[n] = NULL;
    return run_argv(lim, argv);
}
#define ssmc(...) ssmc_lim(NULL, __VA_ARGS__, (char *)NULL)

static void expect_ok(proc p)
{
    if (p.rc != 0) fail_msg("ssmc exited %d\nstderr: %s", p.rc, p.err);
}

/* exit 1 with an error message that contains every one of the NULL-terminated words */
static void expect_error(proc p, ...)
{
    if (p.rc != 1) fail_msg("ssmc exited %d, expected 1\nstderr: %s", p.rc, p.err);
    if (!strstr(p.err, "error")) fail_msg("no error message: '%s'", p.err);
    va_list ap;
    va_start(ap, p);
    for (const char *w; (w = va_arg(ap, const char *)) != NULL;)
        if (!strstr(p.err, w)) fail_msg("the message lacks '%s': %s", w, p.err);
    va_end(ap);
}

static void expect_usage(proc p)
{
    if (p.rc != 2 || !strstr(p.err, "usage:")) fail_msg("expected exit 2 with usage, got %d: %s", p.rc, p.err);
}

/* ---- npy files ---- */
typedef struct arr {
    int rank;
    int64_t shape[8];
    size_t count;
    double *v;
} arr;

static arr load(const char *path, ssmc_dtype want)
{
    rt_npy a;
    strbuf err = {0};
    if (rt_npy_read(path, 0, &a, &err) != SSMC_OK) fail_msg("%s", sb_cstr(&err));
    sb_free(&err);
    assert_int_equal(a.dtype, want);
    arr r = {a.rank, {0}, a.count, malloc((a.count ? a.count : 1) * sizeof(double))};
    assert_non_null(r.v);
    memcpy(r.shape, a.shape, sizeof r.shape);
    rt_npy_to_f64(&a, r.v);
    rt_npy_free(&a);
    return r;
}

static void expect_shape(const arr *a, int rank, ...)
{
    va_list ap;
    va_start(ap, rank);
    assert_int_equal(a->rank, rank);
    for (int i = 0; i < rank; i++) assert_int_equal(a->shape[i], va_arg(ap, int64_t));
    va_end(ap);
}

static void write_f32(const char *path, const double *v, int rank, const int64_t *shape)
{
    size_t n = 1;
    for (int i = 0; i < rank; i++) n *= (size_t)shape[i];
    float *f = malloc(n * sizeof *f);
    assert_non_null(f);
    for (size_t i = 0; i < n; i++) f[i] = (float)v[i];
    strbuf err = {0};
    if (rt_npy_write_f32(path, f, rank, shape, &err) != SSMC_OK) fail_msg("%s", sb_cstr(&err));
    sb_free(&err);
    free(f);
}

static void write_f64(const char *path, const double *v, int rank, const int64_t *shape)
{
    strbuf err = {0};
    if (rt_npy_write_f64(path, v, rank, shape, &err) != SSMC_OK) fail_msg("%s", sb_cstr(&err));
    sb_free(&err);
}

/* A version 1.0 file with any descr, written by hand (`<f2`, `<u2`, `<i4`). */
static void write_raw(const char *path, const char *descr, int rank, const int64_t *shape, const void *data,
                      size_t bytes)
{
    char hdr[256];
    int n = snprintf(hdr, sizeof hdr, "{'descr': '%s', 'fortran_order': False, 'shape': (", descr);
    for (int i = 0; i < rank; i++) n += snprintf(hdr + n, sizeof hdr - (size_t)n, "%lld,%s", (long long)shape[i], i + 1 < rank ? " " : "");
    n += snprintf(hdr + n, sizeof hdr - (size_t)n, "), }");
    while ((10 + n + 1) % 64) hdr[n++] = ' ';
    hdr[n++] = '\n';
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)(n & 255), (unsigned char)(n >> 8)};
    fwrite(pre, 1, 10, f);
    fwrite(hdr, 1, (size_t)n, f);
    if (bytes) fwrite(data, 1, bytes, f);
    fclose(f);
}

/* max |a - b| / max |b| over the elements of b selected by (stride, offset) */
static double rel_err(const double *a, const double *b, size_t n)
{
    double md = 0, mb = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(a[i]) || !isfinite(b[i])) return INFINITY;
        md = fmax(md, fabs(a[i] - b[i]));
        mb = fmax(mb, fabs(b[i]));
    }
    return mb > 0 ? md / mb : md;
}

/* ---- the small Mamba-2 most tests run ---- */
#define MH 2
#define MP 4
#define MN 8
#define MB 2
#define MT 10
static const char *const small[] = {"-D", "H=2", "-D", "P=4", "-D", "N=8"};

typedef struct m2 {
    double x[MB][MT][MH][MP], dt[MB][MT][MH], Bm[MB][MT][MN], C[MB][MT][MN];
    double A_log[MH], D[MH], dt_bias[MH];
} m2;

/* values on a 1/64 grid in [-1, 1]: exact in f16, bf16 and f32 */
static double grid(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (double)((int)((*s >> 33) % 129) - 64) / 64.0;
}

static void m2_fill(m2 *m, uint64_t seed)
{
    double *all = (double *)m;
    for (size_t i = 0; i < sizeof *m / sizeof(double); i++) all[i] = grid(&seed);
}

/* Writes the inputs of steps [t0, t0+T) and the params: x f32, dt f64, B f16
 * by hand, C f32, A_log f64, D and dt_bias f32. Returns the --in arguments. */
static void m2_write(const m2 *m, int t0, int T, const char *tag, char **ins)
{
    static double buf[MB * MT * MH * MP];
    uint16_t h[MB * MT * MN];
    size_t k = 0;
    for (int b = 0; b < MB; b++)
        for (int t = t0; t < t0 + T; t++)
            for (int i = 0; i < MH * MP; i++) buf[k++] = (&m->x[b][t][0][0])[i];
    write_f32(tmp(fmt("%s_x.npy", tag)), buf, 4, (int64_t[]){MB, T, MH, MP});
    k = 0;
    for (int b = 0; b < MB; b++)
        for (int t = t0; t < t0 + T; t++)
            for (int i = 0; i < MH; i++) buf[k++] = m->dt[b][t][i];
    write_f64(tmp(fmt("%s_dt.npy", tag)), buf, 3, (int64_t[]){MB, T, MH});
    k = 0;
    for (int b = 0; b < MB; b++)
        for (int t = t0; t < t0 + T; t++)
            for (int i = 0; i < MN; i++) h[k++] = f32_to_f16((float)m->Bm[b][t][i]);
    write_raw(tmp(fmt("%s_B.npy", tag)), "<f2", 3, (int64_t[]){MB, T, MN}, h, k * 2);
    k = 0;
    for (int b = 0; b < MB; b++)
        for (int t = t0; t < t0 + T; t++)
            for (int i = 0; i < MN; i++) buf[k++] = m->C[b][t][i];
    write_f32(tmp(fmt("%s_C.npy", tag)), buf, 3, (int64_t[]){MB, T, MN});
    write_f64(tmp("A_log.npy"), m->A_log, 1, (int64_t[]){MH});
    write_f32(tmp("D.npy"), m->D, 1, (int64_t[]){MH});
    write_f32(tmp("dt_bias.npy"), m->dt_bias, 1, (int64_t[]){MH});
    const char *names[] = {"x", "dt", "B", "C"};
    for (int i = 0; i < 4; i++) {
        ins[2 * i] = "--in";
        ins[2 * i + 1] = fmt("%s=%s", names[i], tmp(fmt("%s_%s.npy", tag, names[i])));
    }
    const char *pn[] = {"A_log", "D", "dt_bias"};
    for (int i = 0; i < 3; i++) {
        ins[8 + 2 * i] = "--in";
        ins[8 + 2 * i + 1] = fmt("%s=%s", pn[i], tmp(fmt("%s.npy", pn[i])));
    }
}
#define M2_NINS 14

/* ssmc run mamba2 (small) with the given --in arguments and extra ones */
static proc m2_run(char **ins, int nins, ...)
{
    char *argv[64];
    int n = 1;
    argv[n++] = "run";
    argv[n++] = example("mamba2");
    for (int i = 0; i < 6; i++) argv[n++] = (char *)small[i];
    for (int i = 0; i < nins; i++) argv[n++] = ins[i];
    va_list ap;
    va_start(ap, nins);
    for (char *a; (a = va_arg(ap, char *)) != NULL;) argv[n++] = a;
    va_end(ap);
    argv[n] = NULL;
    return run_argv(NULL, argv);
}

static bool cpu_available(void)
{
    static const char src[] = "model m { input x[T]; output y[T]; y[t] = x[t]; }";
    ssmc_ctx *ctx = ssmc_ctx_new();
    ssmc_options o = {.device = SSMC_DEVICE_CPU};
    ssmc_model *m = NULL;
    ssmc_status s = ssmc_compile(ctx, "m.ssm", src, sizeof src - 1, &o, &m);
    ssmc_model_free(m);
    ssmc_ctx_free(ctx);
    return s == SSMC_OK;
}

static const char *const examples[] = {"deltanet", "gated_deltanet", "gla", "linear_attn", "lstm",
                                       "mamba", "mamba2", "retnet", "rwkv6"};
#define NEX (sizeof examples / sizeof *examples)

/* ================= run ================= */

static void test_out_every_output_and_state(void **state)
{
    (void)state;
    for (size_t e = 0; e < NEX; e++) {
        char *dir = tmp(fmt("out_%s", examples[e]));
        expect_ok(ssmc("run", example(examples[e]), "--batch", "2", "--seqlen", "3", "--seed", "5", "--out", dir));
        /* the library says what the model holds */
        size_t len;
        const char *why;
        char *src = read_file(example(examples[e]), &len, &why);
        assert_non_null(src);
        ssmc_ctx *ctx = ssmc_ctx_new();
        ssmc_model *m = NULL;
        assert_int_equal(ssmc_compile(ctx, "x.ssm", src, len, NULL, &m), SSMC_OK);
        int files = 0;
        for (int i = 0; i < ssmc_model_num_tensors(m); i++) {
            ssmc_tensor_info ti;
            ssmc_model_tensor(m, i, &ti);
            char *p = fmt("%s/%s.npy", dir, ti.name);
            if (ti.role != SSMC_OUTPUT && ti.role != SSMC_STATE) {
                assert_int_not_equal(access(p, F_OK), 0); /* only outputs and states */
                continue;
            }
            arr a = load(p, SSMC_F32);
            int lead = ti.role == SSMC_OUTPUT ? 2 : 1;
            assert_int_equal(a.rank, lead + ti.rank);
            assert_int_equal(a.shape[0], 2);
            if (lead == 2) assert_int_equal(a.shape[1], 3);
            for (int j = 0; j < ti.rank; j++) assert_int_equal(a.shape[lead + j], ti.shape[j]);
            double amax = 0;
            for (size_t k = 0; k < a.count; k++) {
                if (!isfinite(a.v[k])) fail_msg("%s: %s[%zu] is not finite", examples[e], ti.name, k);
                amax = fmax(amax, fabs(a.v[k]));
            }
            if (!(amax > 0)) fail_msg("%s: %s is all zeros", examples[e], ti.name);
            free(a.v);
            files++;
        }
        DIR *d = opendir(dir);
        assert_non_null(d);
        int n = 0;
        for (struct dirent *de; (de = readdir(d)) != NULL;) n += de->d_name[0] != '.';
        closedir(d);
        assert_int_equal(n, files);
        ssmc_model_free(m);
        ssmc_ctx_free(ctx);
        free(src);
    }
}

/* Every input and param given, in three dtypes; B and T from the files. The
 * result is the library interpreter's on the same values, whatever the seed. */
static void test_in_files_are_used(void **state)
{
    (void)state;
    static m2 m;
    m2_fill(&m, 11);
    char *ins[M2_NINS];
    m2_write(&m, 0, MT, "all", ins);
    char *o1 = tmp("o1"), *o2 = tmp("o2");
    expect_ok(m2_run(ins, M2_NINS, "--seed", "1", "--out", o1, NULL));
    expect_ok(m2_run(ins, M2_NINS, "--seed", "2", "--out", o2, NULL));
    arr y1 = load(fmt("%s/y.npy", o1), SSMC_F32), y2 = load(fmt("%s/y.npy", o2), SSMC_F32);
    arr s1 = load(fmt("%s/S.npy", o1), SSMC_F32);
    expect_shape(&y1, 4, (int64_t)MB, (int64_t)MT, (int64_t)MH, (int64_t)MP);
    expect_shape(&s1, 4, (int64_t)MB, (int64_t)MH, (int64_t)MP, (int64_t)MN);
    assert_memory_equal(y1.v, y2.v, y1.count * sizeof(double));

    /* the library on the same values, in f64 */
    size_t len;
    const char *why;
    char *src = read_file(example("mamba2"), &len, &why);
    ssmc_ctx *ctx = ssmc_ctx_new();
    ssmc_dim dims[] = {{"H", MH}, {"P", MP}, {"N", MN}};
    ssmc_options o = {.dims = dims, .ndims = 3};
    ssmc_model *mod = NULL;
    assert_int_equal(ssmc_compile(ctx, "m.ssm", src, len, &o, &mod), SSMC_OK);
    static double y[MB][MT][MH][MP], S[MB][MH][MP][MN];
    ssmc_arg args[] = {{"x", SSMC_F64, m.x, 0},         {"dt", SSMC_F64, m.dt, 0}, {"B", SSMC_F64, m.Bm, 0},
                       {"C", SSMC_F64, m.C, 0},         {"A_log", SSMC_F64, m.A_log, 0}, {"D", SSMC_F64, m.D, 0},
                       {"dt_bias", SSMC_F64, m.dt_bias, 0}, {"y", SSMC_F64, y, 0}, {"S", SSMC_F64, S, 0}};
    assert_int_equal(ssmc_run(mod, MB, MT, args, 9), SSMC_OK);
    double ey = rel_err(y1.v, &y[0][0][0][0], y1.count), es = rel_err(s1.v, &S[0][0][0][0], s1.count);
    if (!(ey < 1e-6 && es < 1e-6)) fail_msg("CLI vs library: y %.3e, S %.3e", ey, es);
    ssmc_model_free(mod);
    ssmc_ctx_free(ctx);
    free(src);
    free(y1.v), free(y2.v), free(s1.v);
}

static void test_seed(void **state)
{
    (void)state;
    char *a = tmp("a"), *b = tmp("b"), *c = tmp("c");
    const char *f = example("mamba2");
    expect_ok(ssmc("run", f, "-D", "H=2", "--seqlen", "6", "--seed", "7", "--out", a));
    expect_ok(ssmc("run", f, "-D", "H=2", "--seqlen", "6", "--seed", "7", "--out", b));
    expect_ok(ssmc("run", f, "-D", "H=2", "--seqlen", "6", "--seed", "8", "--out", c));
    arr ya = load(fmt("%s/y.npy", a), SSMC_F32), yb = load(fmt("%s/y.npy", b), SSMC_F32),
        yc = load(fmt("%s/y.npy", c), SSMC_F32);
    assert_memory_equal(ya.v, yb.v, ya.count * sizeof(double));
    assert_true(rel_err(yc.v, ya.v, ya.count) > 1e-3);
    free(ya.v), free(yb.v), free(yc.v);
}

/* T=10 at once == 4 steps, save S, then 6 steps from it */
static void continue_from_state(const char *device)
{
    static m2 m;
    m2_fill(&m, 23);
    char *all[M2_NINS], *first[M2_NINS], *last[M2_NINS];
    m2_write(&m, 0, MT, "all", all);
    m2_write(&m, 0, 4, "first", first);
    m2_write(&m, 4, MT - 4, "last", last);
    char *full = tmp(fmt("full_%s", device)), *p1 = tmp(fmt("p1_%s", device)), *p2 = tmp(fmt("p2_%s", device));
    expect_ok(m2_run(all, M2_NINS, "--device", device, "--out", full, NULL));
    expect_ok(m2_run(first, M2_NINS, "--device", device, "--out", p1, NULL));
    expect_ok(m2_run(last, M2_NINS, "--device", device, "--out", p2, "--init-state",
                     fmt("S=%s/S.npy", p1), NULL));
    arr yf = load(fmt("%s/y.npy", full), SSMC_F32), sf = load(fmt("%s/S.npy", full), SSMC_F32);
    arr y2 = load(fmt("%s/y.npy", p2), SSMC_F32), s2 = load(fmt("%s/S.npy", p2), SSMC_F32);
    expect_shape(&y2, 4, (int64_t)MB, (int64_t)(MT - 4), (int64_t)MH, (int64_t)MP);
    /* the last 6 steps of the full run, per batch */
    size_t step = MH * MP, n = (size_t)(MT - 4) * step;
    double *tail = malloc(MB * n * sizeof *tail);
    for (int b = 0; b < MB; b++) memcpy(tail + (size_t)b * n, yf.v + ((size_t)b * MT + 4) * step, n * sizeof *tail);
    double ey = rel_err(y2.v, tail, MB * n), es = rel_err(s2.v, sf.v, sf.count);
    if (!(ey <= 1e-6 && es <= 1e-6)) fail_msg("%s: continued run differs: y %.3e, S %.3e", device, ey, es);
    /* and the state is not trivially the same as not continuing */
    char *p3 = tmp(fmt("p3_%s", device));
    expect_ok(m2_run(last, M2_NINS, "--device", device, "--out", p3, NULL));
    arr y3 = load(fmt("%s/y.npy", p3), SSMC_F32);
    assert_true(rel_err(y3.v, tail, MB * n) > 1e-4);
    free(tail);
    free(yf.v), free(sf.v), free(y2.v), free(s2.v), free(y3.v);
}

static void test_init_state_interp(void **state)
{
    (void)state;
    continue_from_state("interp");
}

static void test_init_state_cpu(void **state)
{
    (void)state;
    if (!cpu_available()) {
        print_message("the cpu backend is not in this build\n");
        skip();
    }
    continue_from_state("cpu");
}

/* A file rewritten with a new shape of the same size, in f32 (the m2 values are exact there). */
static void reshape(const char *from, const char *to, int rank, const int64_t *shape)
{
    rt_npy a;
    strbuf err = {0};
    if (rt_npy_read(from, 0, &a, &err) != SSMC_OK) fail_msg("%s", sb_cstr(&err));
    sb_free(&err);
    double *v = malloc(a.count * sizeof *v);
    assert_non_null(v);
    rt_npy_to_f64(&a, v);
    write_f32(to, v, rank, shape);
    rt_npy_free(&a);
    free(v);
}

/* --cu-seqlens: a batch of B sequences of length T is the packed batch of one
 * [1, B*T, ...] with offsets 0, T, 2T (the same bytes), so the packed run must
 * give the batched run's outputs and final states; unequal lengths verify
 * against the interpreter; the offsets' and shapes' errors are located. */
static void cu_seqlens_on(const char *device)
{
    static m2 m;
    m2_fill(&m, 31);
    char *all[M2_NINS], *packed[M2_NINS];
    m2_write(&m, 0, MT, "cu", all);
    const char *names[] = {"x", "dt", "B", "C"};
    const int64_t inner[4][2] = {{MH, MP}, {MH, 0}, {MN, 0}, {MN, 0}};
    for (int i = 0; i < M2_NINS; i++) packed[i] = all[i];
    for (int i = 0; i < 4; i++) {
        char *from = tmp(fmt("cu_%s.npy", names[i])), *to = tmp(fmt("cup_%s.npy", names[i]));
        int64_t shape[4] = {1, MB * MT, inner[i][0], inner[i][1]};
        reshape(from, to, inner[i][1] ? 4 : 3, shape);
        packed[2 * i + 1] = fmt("%s=%s", names[i], to);
    }
    double s0[MB * MH * MP * MN];
    uint64_t seed = 5;
    for (size_t k = 0; k < sizeof s0 / sizeof *s0; k++) s0[k] = grid(&seed);
    char *sfile = tmp("cu_S0.npy");
    write_f32(sfile, s0, 4, (int64_t[]){MB, MH, MP, MN});
    int32_t even[3] = {0, MT, 2 * MT};
    char *cu_even = tmp("cu_even.npy"), *cu_uneven = tmp("cu_uneven.npy");
    write_raw(cu_even, "<i4", 1, (int64_t[]){3}, even, sizeof even);
    int64_t uneven8[4] = {0, 3, 4, 2 * MT};
    write_raw(cu_uneven, "<i8", 1, (int64_t[]){4}, uneven8, sizeof uneven8);

    char *db = tmp(fmt("cub_%s", device)), *dp = tmp(fmt("cup_%s", device)), *du = tmp(fmt("cuu_%s", device));
    expect_ok(m2_run(all, M2_NINS, "--device", device, "--init-state", fmt("S=%s", sfile), "--out", db, NULL));
    proc p = m2_run(packed, M2_NINS, "--device", device, "--init-state", fmt("S=%s", sfile), "--cu-seqlens", cu_even,
                    "--verify", "--out", dp, NULL);
    expect_ok(p);
    if (!strstr(p.out, "sequences 2")) fail_msg("no 'sequences 2' in: %s", p.out);
    arr yb = load(fmt("%s/y.npy", db), SSMC_F32), sb = load(fmt("%s/S.npy", db), SSMC_F32);
    arr yp = load(fmt("%s/y.npy", dp), SSMC_F32), sp = load(fmt("%s/S.npy", dp), SSMC_F32);
    expect_shape(&yp, 4, (int64_t)1, (int64_t)(MB * MT), (int64_t)MH, (int64_t)MP);
    expect_shape(&sp, 4, (int64_t)MB, (int64_t)MH, (int64_t)MP, (int64_t)MN);
    double ey = rel_err(yp.v, yb.v, yb.count), es = rel_err(sp.v, sb.v, sb.count);
    if (!(ey <= 1e-6 && es <= 1e-6)) fail_msg("%s: packed run differs from the batched one: y %.3e, S %.3e", device, ey, es);

    /* three sequences of 3, 1 and 16 steps, each from its own row of S */
    double s3[3 * MH * MP * MN];
    for (size_t k = 0; k < sizeof s3 / sizeof *s3; k++) s3[k] = grid(&seed);
    char *s3file = tmp("cu_S3.npy");
    write_f32(s3file, s3, 4, (int64_t[]){3, MH, MP, MN});
    p = m2_run(packed, M2_NINS, "--device", device, "--init-state", fmt("S=%s", s3file), "--cu-seqlens", cu_uneven,
               "--verify", "--out", du, NULL);
    expect_ok(p);
    arr yu = load(fmt("%s/y.npy", du), SSMC_F32), su = load(fmt("%s/S.npy", du), SSMC_F32);
    expect_shape(&su, 4, (int64_t)3, (int64_t)MH, (int64_t)MP, (int64_t)MN);
    assert_true(rel_err(yu.v, yb.v, yb.count) > 1e-4); /* the boundaries moved: not the batched run */
    free(yb.v), free(sb.v), free(yp.v), free(sp.v), free(yu.v), free(su.v);

    /* errors */
    expect_error(m2_run(packed, M2_NINS, "--device", device, "--init-state", fmt("S=%s", sfile), "--cu-seqlens",
                        cu_uneven, NULL),
                 "'S' must have shape [3, 2, 4, 8] (a row per sequence of --cu-seqlens)", NULL);
    expect_error(m2_run(all, M2_NINS, "--device", device, "--cu-seqlens", cu_even, NULL), "'x' must have shape [1, 20",
                 NULL);
    int64_t empty[4] = {0, 3, 3, 2 * MT}, late[3] = {1, 3, 2 * MT};
    char *cu_empty = tmp("cu_empty.npy"), *cu_late = tmp("cu_late.npy"), *cu_float = tmp("cu_float.npy");
    write_raw(cu_empty, "<i8", 1, (int64_t[]){4}, empty, sizeof empty);
    write_raw(cu_late, "<i8", 1, (int64_t[]){3}, late, sizeof late);
    write_f64(cu_float, (double[]){0, 20}, 1, (int64_t[]){2});
    expect_error(m2_run(packed, M2_NINS, "--device", device, "--cu-seqlens", cu_empty, NULL), "sequence 1 is empty",
                 NULL);
    expect_error(m2_run(packed, M2_NINS, "--device", device, "--cu-seqlens", cu_late, NULL), "must run from 0 to T",
                 NULL);
    expect_error(m2_run(packed, M2_NINS, "--cu-seqlens", cu_float, NULL), "--cu-seqlens", "floating-point", NULL);
    expect_error(m2_run(packed, M2_NINS, "--cu-seqlens", cu_even, "--batch", "2", NULL), "batch of one", NULL);
    expect_error(m2_run(packed, M2_NINS, "--cu-seqlens", cu_even, "--seqlen", "7", NULL), "does not end at --seqlen",
                 NULL);
    /* gradients: the packed batch's are the batched run's (the same cotangents, drawn in the same order) */
    char *gb = tmp(fmt("cugb_%s", device)), *gpk = tmp(fmt("cugp_%s", device));
    expect_ok(m2_run(all, M2_NINS, "--device", device, "--init-state", fmt("S=%s", sfile), "--grad", "--out", gb, NULL));
    p = m2_run(packed, M2_NINS, "--device", device, "--init-state", fmt("S=%s", sfile), "--cu-seqlens", cu_even,
               "--grad", "--verify", "--out", gpk, NULL);
    expect_ok(p);
    if (!strstr(p.out, "verify grad   S")) fail_msg("no gradient verified: %s", p.out);
    const char *gnames[] = {"x", "dt", "B", "C", "A_log", "D", "dt_bias", "S"};
    for (int i = 0; i < 8; i++) {
        arr a = load(fmt("%s/grad_%s.npy", gb, gnames[i]), SSMC_F32), b = load(fmt("%s/grad_%s.npy", gpk, gnames[i]), SSMC_F32);
        assert_int_equal(a.count, b.count);
        double e = rel_err(b.v, a.v, a.count);
        if (!(e <= 1e-6)) fail_msg("%s: packed grad_%s differs from the batched one by %.3e", device, gnames[i], e);
        if (i == 0) expect_shape(&b, 4, (int64_t)1, (int64_t)(MB * MT), (int64_t)MH, (int64_t)MP);
        if (i == 7) expect_shape(&b, 4, (int64_t)MB, (int64_t)MH, (int64_t)MP, (int64_t)MN);
        free(a.v), free(b.v);
    }
    expect_ok(m2_run(packed, M2_NINS, "--device", device, "--init-state", fmt("S=%s", s3file), "--cu-seqlens",
                     cu_uneven, "--grad", "--verify", NULL));
    expect_error(m2_run(packed, M2_NINS, "--cu-seqlens", tmp("nope.npy"), NULL), "--cu-seqlens", "nope.npy", NULL);
    expect_usage(ssmc("run", example("mamba2"), "--cu-seqlens"));
}

static void test_cu_seqlens_interp(void **state)
{
    (void)state;
    cu_seqlens_on("interp");
}

static void test_cu_seqlens_cpu(void **state)
{
    (void)state;
    if (!cpu_available()) {
        print_message("the cpu backend is not in this build\n");
        skip();
    }
    cu_seqlens_on("cpu");
}

/* --dtype bf16 with a `<u2` file: the same as f32 with the same values, to bf16 rounding */
static void test_dtype_bf16(void **state)
{
    (void)state;
    static m2 m;
    m2_fill(&m, 31);
    char *ins[M2_NINS];
    m2_write(&m, 0, MT, "all", ins);
    uint16_t bits[MB * MT * MH * MP];
    const double *x = &m.x[0][0][0][0];
    for (size_t i = 0; i < sizeof bits / sizeof *bits; i++) bits[i] = f32_to_bf16((float)x[i]);
    char *xb = tmp("x_bf16.npy");
    write_raw(xb, "<u2", 4, (int64_t[]){MB, MT, MH, MP}, bits, sizeof bits);
    ins[1] = fmt("x=%s", xb);
    char *ob = tmp("ob"), *of = tmp("of");
    expect_ok(m2_run(ins, M2_NINS, "--dtype", "bf16", "--out", ob, NULL));
    expect_error(m2_run(ins, M2_NINS, "--dtype", "f32", NULL), "x_bf16.npy", "--dtype bf16", NULL); /* <u2 only with bf16 */
    ins[1] = fmt("x=%s", tmp("all_x.npy"));
    expect_ok(m2_run(ins, M2_NINS, "--dtype", "f32", "--out", of, NULL));
    arr yb = load(fmt("%s/y.npy", ob), SSMC_F32), yf = load(fmt("%s/y.npy", of), SSMC_F32);
    double e = rel_err(yb.v, yf.v, yf.count);
    if (!(e < 3e-2)) fail_msg("bf16 vs f32: %.3e", e);
    free(yb.v), free(yf.v);
}

static int count_lines(const char *s, const char *prefix)
{
    int n = 0;
    for (const char *p = s; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        n += strncmp(p, prefix, strlen(prefix)) == 0;
    return n;
}

static void test_verify(void **state)
{
    (void)state;
    bool cpu = cpu_available();
    const char *devs[] = {"interp", "cpu"};
    for (int d = 0; d < 1 + cpu; d++) {
        proc p = ssmc("run", example("lstm"), "-D", "E=8", "-D", "H=8", "--seqlen", "9", "--verify", "--device", devs[d]);
        expect_ok(p);
        assert_int_equal(count_lines(p.out, "verify "), 3); /* y, h, c */
        assert_int_equal(count_lines(p.out, "verify output"), 1);
        assert_int_equal(count_lines(p.out, "verify state"), 2);
        assert_null(strstr(p.out, "FAIL"));
        p = ssmc("run", example("mamba2"), "-D", "H=2", "--seqlen", "9", "--verify", "--device", devs[d]);
        expect_ok(p);
        assert_int_equal(count_lines(p.out, "verify "), 2);
    }
    /* a running sum of 1,000 steps whose final value cancels (seed 30: 1.2
     * from partial sums near 20): f32 is 1.06e-5 off, past the old fixed 1e-5,
     * inside the model's tolerance (numerics.md); tolerances are printed as
     * they are computed */
    char *sum = tmp("runsum.ssm");
    FILE *f = fopen(sum, "w");
    fputs("model runsum {\n  input x[T];\n  state s;\n  output y[T];\n  s = s + x[t];\n  y[t] = s;\n}\n", f);
    fclose(f);
    for (int d = 0; d < 1 + cpu; d++) {
        proc p = ssmc("run", sum, "--seqlen", "1000", "--seed", "30", "--verify", "--device", devs[d]);
        expect_ok(p);
        assert_non_null(strstr(p.out, "tol 4.1e-05"));
        assert_null(strstr(p.out, "FAIL"));
    }
}

/* bench (SPEC §5): a table with the median, and a line saying what was
 * timed; on the host devices ssmc_run converts tensors not in its working
 * dtype inside the timed span, and the line says so. --verify and --out
 * apply to the last run. */
static void test_bench(void **state)
{
    (void)state;
    const char *devs[] = {"interp", "cpu"};
    for (int d = 0; d < 1 + cpu_available(); d++) {
        proc p = ssmc("bench", example("gla"), "-D", "H=2", "--seqlen", "5", "--iters", "3", "--device", devs[d],
                      "--verify", "--out", tmp(devs[d]));
        expect_ok(p);
        assert_non_null(strstr(p.out, "median_ms"));
        assert_int_equal(count_lines(p.out, "timed: "), 1);
        assert_int_equal(count_lines(p.out, "verify "), 2);
        assert_null(strstr(p.out, "FAIL"));
        arr y = load(fmt("%s/y.npy", tmp(devs[d])), SSMC_F32);
        expect_shape(&y, 4, (int64_t)1, (int64_t)5, (int64_t)2, (int64_t)32);
        free(y.v);
        if (d == 0) assert_non_null(strstr(p.out, "conversion to and from f64 included"));
        else assert_non_null(strstr(p.out, "f32, used in place"));
        p = ssmc("bench", example("gla"), "-D", "H=2", "--seqlen", "5", "--iters", "2", "--device", devs[d], "--dtype", "bf16");
        expect_ok(p);
        assert_non_null(strstr(p.out, d == 0 ? "conversion to and from f64 included" : "conversion to and from f32 included"));
    }
    expect_usage(ssmc("bench", example("gla"), "--iters", "0"));
}

/* ================= check, emit, usage ================= */

static void test_check(void **state)
{
    (void)state;
    for (size_t e = 0; e < NEX; e++) {
        proc p = ssmc("check", example(examples[e]));
        if (p.rc != 0) fail_msg("check %s: exit %d: %s", examples[e], p.rc, p.err);
    }
    char *bad = tmp("bad.ssm");
    FILE *f = fopen(bad, "w");
    fputs("model m {\n  input x[T];\n  output y[T];\n  y[t] = x[t] +* 2;\n}\n", f);
    fclose(f);
    proc p = ssmc("check", bad);
    assert_int_equal(p.rc, 1);
    regex_t re;
    assert_int_equal(regcomp(&re, "^/tmp/ssmc-cli-[A-Za-z0-9]+/bad\\.ssm:[0-9]+:[0-9]+: error: ", REG_EXTENDED | REG_NEWLINE), 0);
    if (regexec(&re, p.err, 0, NULL, 0) != 0) fail_msg("no file:line:col: error: in '%s'", p.err);
    regfree(&re);
    assert_non_null(strstr(p.err, "bad.ssm:4:"));
    expect_error(ssmc("check", tmp("absent.ssm")), "absent.ssm", NULL);
}

static void test_emit(void **state)
{
    (void)state;
    const char *kinds[] = {"--emit=ir", "--emit=ast", "--emit=analysis"};
    for (int k = 0; k < 3; k++) {
        proc p = ssmc("emit", example("mamba2"), kinds[k], "-D", "H=16");
        expect_ok(p);
        assert_true(strlen(p.out) > 20);
    }
    proc p = ssmc("emit", example("gla"), "--emit", "analysis");
    expect_ok(p);
    assert_non_null(strstr(p.out, "diagonal"));
    /* every stage of SPEC §5, with -D and --algo as the synopsis has them; each
     * text says what it is; llvm needs the CPU backend, ptx NVRTC (else an
     * error that says so) */
    static const struct {
        const char *stage, *mark;
    } stages[] = {{"ast", "(model mamba2"},        {"ir", "dim H = 16"},
                  {"analysis", "state S[H,P,N]: scalar"}, {"grad", "model mamba2__adjoint"},
                  {"plan", "plan mamba2: target cpu"},    {"llvm", "; ssmc: model mamba2"},
                  {"cuda", "ssmc_mamba2.cu"},           {"ptx", ".entry"}};
    bool cpu = cpu_available();
    for (size_t k = 0; k < sizeof stages / sizeof *stages; k++) {
        p = ssmc("emit", example("mamba2"), fmt("--emit=%s", stages[k].stage), "-D", "H=16", "--algo", "recurrent");
        if ((strcmp(stages[k].stage, "llvm") == 0 && !cpu) || (strcmp(stages[k].stage, "ptx") == 0 && p.rc == 1)) {
            expect_error(p, NULL);
            continue;
        }
        expect_ok(p);
        if (!strstr(p.out, stages[k].mark)) fail_msg("--emit=%s lacks '%s'", stages[k].stage, stages[k].mark);
    }
    /* the gradients' plans: the training forward's and the adjoint's (the CUDA plan needs no GPU);
     * simple GLA's adjoint on cuda splits V with its sums over the tiles finished after the kernel */
    p = ssmc("emit", fmt("%s/bench/gpu/simple_gla.ssm", getenv("SSMC_SOURCE_DIR")), "--emit=plan", "--grad", "--device", "cuda",
             "-D", "H=16", "-D", "K=128", "-D", "V=128");
    expect_ok(p);
    const char *adj = strstr(p.out, "plan simple_gla__adjoint: target cuda");
    if (!strstr(p.out, "plan simple_gla: target cuda") || !adj || !strstr(adj, "items = batch x V x H") ||
        !strstr(adj, "summed after the kernel"))
        fail_msg("--emit=plan --grad:\n%s", p.out);
    p = ssmc("emit", fmt("%s/bench/gpu/simple_gla.ssm", getenv("SSMC_SOURCE_DIR")), "--emit=cuda", "--grad", "-D", "H=2");
    expect_ok(p);
    if (!strstr(p.out, "ssmc_simple_gla.cu") || !strstr(p.out, "__global__ void __launch_bounds__(128) ssmc_simple_gla__adjoint("))
        fail_msg("--emit=cuda --grad:\n%.2000s", p.out);
    p = ssmc("emit", example("ttt_linear"), "--emit=plan", "--grad");
    expect_ok(p);
    assert_non_null(strstr(p.out, "plan ttt_linear__init__adjoint: target cpu"));
    expect_usage(ssmc("emit", example("gla"), "--emit=ir", "--grad"));
    expect_error(ssmc("emit", example("gla"), "--emit=plan", "--grad", "--algo", "chunked"), "does not print yet", NULL);
}

/* --help and --version: to stdout, exit 0, nothing on stderr; each command's
 * help names the command and its options; help wins over anything else on the
 * line; an unknown command's help is a usage error. */
static void test_help_version(void **state)
{
    (void)state;
    static const char *const cmds[] = {"check", "emit", "run", "build", "bench"};
    proc p = ssmc("--help");
    expect_ok(p);
    assert_string_equal(p.err, "");
    for (size_t i = 0; i < sizeof cmds / sizeof *cmds; i++) assert_non_null(strstr(p.out, fmt("ssmc %s", cmds[i])));
    assert_non_null(strstr(p.out, "--version"));
    expect_ok(ssmc("-h"));
    p = ssmc("--version");
    expect_ok(p);
    assert_string_equal(p.err, "");
    assert_int_equal(strncmp(p.out, "ssmc " SSMC_VERSION, strlen("ssmc " SSMC_VERSION)), 0);
    for (size_t i = 0; i < sizeof cmds / sizeof *cmds; i++) {
        p = ssmc(cmds[i], "--help");
        expect_ok(p);
        assert_string_equal(p.err, "");
        if (!strstr(p.out, fmt("ssmc %s", cmds[i])) || !strstr(p.out, "FILE")) fail_msg("%s --help: %s", cmds[i], p.out);
        expect_ok(ssmc("--help", cmds[i]));
    }
    p = ssmc("run", "--help");
    assert_non_null(strstr(p.out, "--verify"));
    assert_non_null(strstr(p.out, "--algo auto|recurrent|chunked|scan"));
    expect_ok(ssmc("run", example("gla"), "--bogus", "--help")); /* help first */
    expect_ok(ssmc("build", "-h"));
    expect_usage(ssmc("frobnicate", "--help"));
}

static void test_bad_flags(void **state)
{
    (void)state;
    const char *f = example("mamba2");
    expect_usage(ssmc("run", f, "--bogus"));
    expect_usage(ssmc("run", f, "--batch", "0"));
    expect_usage(ssmc("run", f, "--batch", "two"));
    expect_usage(ssmc("run", f, "--seqlen", "-3"));
    expect_usage(ssmc("run", f, "--seqlen"));
    expect_usage(ssmc("run", f, "--device", "tpu"));
    expect_usage(ssmc("run", f, "--dtype", "f8"));
    expect_usage(ssmc("run", f, "--seed", "x"));
    expect_usage(ssmc("run", f, "--in", "x"));
    expect_usage(ssmc("run", f, "--in", "=a.npy"));
    expect_usage(ssmc("run", f, "--init-state", "S"));
    expect_usage(ssmc("run", f, "-D", "H"));
    expect_usage(ssmc("run", f, "-D", "H=x"));
    expect_usage(ssmc("run"));
    expect_usage(ssmc("frobnicate", f));
    expect_usage(ssmc("emit", f));
    expect_usage(ssmc("emit", f, "--emit=bogus"));
    expect_usage(ssmc("run", f, f));
    expect_usage(ssmc_lim(NULL, (char *)NULL));
    /* an option of another command is a usage error that names both, never ignored */
    proc p = ssmc("check", f, "--seqlen", "4");
    expect_usage(p);
    if (!strstr(p.err, "--seqlen is not an option of 'check'")) fail_msg("%s", p.err);
    expect_usage(ssmc("check", f, "--device", "cpu"));
    expect_usage(ssmc("emit", f, "--emit=ir", "--batch", "2"));
    expect_usage(ssmc("emit", f, "--emit=ir", "--in=x=a.npy"));
    expect_usage(ssmc("build", f, "-o", tmp("b"), "--verify"));
    expect_usage(ssmc("run", f, "--iters", "3"));
    expect_usage(ssmc("run", f, "--target", "cpu"));
    expect_usage(ssmc("run", f, "--emit=ir"));
    /* and every option of a command's synopsis is taken by it */
    expect_ok(ssmc("check", f, "-D", "H=2", "--model", "mamba2"));
    expect_ok(ssmc("emit", f, "--emit=plan", "-D", "H=2", "--model", "mamba2", "--arch", "sm_90", "--threads", "1",
                   "--device", "cpu", "--algo", "recurrent", "--chunk", "16"));
    expect_ok(ssmc("bench", f, "-D", "H=2", "--iters", "1", "--batch", "1", "--seqlen", "2", "--seed", "1",
                   "--threads", "1", "--algo", "auto", "--chunk", "16", "--verify", "--check-finite", "--dtype", "f32"));
}

/* --algo: one rule for run, bench, build and emit on every device: auto and
 * recurrent run; chunked and scan are refused (not implemented yet; the
 * interpreter used to ignore them and build to accept them); an unknown
 * name is a usage error. */
static void test_algo(void **state)
{
    (void)state;
    const char *f = example("gla"), *lstm = example("lstm");
    static const char *const good[] = {"auto", "recurrent", "chunked"};
    const char *devices[] = {"interp", "cpu"};
    int ndev = cpu_available() ? 2 : 1;
    for (int d = 0; d < ndev; d++) {
        for (int i = 0; i < 3; i++) expect_ok(ssmc("run", f, "--device", devices[d], "--algo", good[i], "--seqlen", "3"));
        /* the same rule on every device: scan is not generated; chunked needs a chunk form for every state */
        expect_error(ssmc("run", f, "--device", devices[d], "--algo=scan", "--seqlen", "3"), "--algo=scan", "not implemented yet",
                     NULL);
        expect_error(ssmc("bench", f, "--device", devices[d], "--algo", "scan", "--seqlen", "3"), "not implemented yet", NULL);
        expect_error(ssmc("run", lstm, "--device", devices[d], "--algo=chunked", "--seqlen", "3"), "lstm.ssm:",
                     "--algo=chunked: state 'h' has no chunk form: the update is not affine in the state", NULL);
        expect_usage(ssmc("run", f, "--device", devices[d], "--algo", "fast"));
        expect_usage(ssmc("run", f, "--device", devices[d], "--chunk", "0"));
    }
    expect_usage(ssmc("run", f, "--algo"));
    expect_usage(ssmc("build", f, "-o", tmp("b"), "--algo", "fast"));
    expect_error(ssmc("build", f, "-o", tmp("b"), "--algo", "scan"), "not implemented yet", NULL);
    if (ndev == 2) {
        expect_error(ssmc("build", f, "-o", tmp("b"), "--algo", "chunked"), "bundles hold the recurrent algorithm only", NULL);
        expect_error(ssmc("emit", f, "--emit=llvm", "--algo", "scan"), "not implemented yet", NULL);
        expect_ok(ssmc("emit", f, "--emit=llvm", "--algo", "recurrent"));
        expect_ok(ssmc("run", f, "--device", "cpu", "--algo", "chunked", "--chunk", "4", "--seqlen", "9", "--verify"));
    }
}

/* ================= error boundaries ================= */

static void test_malformed_npy(void **state)
{
    (void)state;
    char *p = tmp("junk.npy");
    FILE *f = fopen(p, "wb");
    fputs("this is not a numpy file at all, just text\n", f);
    fclose(f);
    expect_error(ssmc("run", example("mamba2"), "--in", fmt("x=%s", p)), "junk.npy", NULL);
    /* a header that is not a dict */
    write_raw(p, "<f4', 'shape': ((((", 1, (int64_t[]){2}, "abcdefgh", 8);
    expect_error(ssmc("run", example("mamba2"), "--in", fmt("D=%s", p)), "junk.npy", NULL);
}

static void test_truncated_npy(void **state)
{
    (void)state;
    double v[MB * MT * MH * MP];
    for (size_t i = 0; i < sizeof v / sizeof *v; i++) v[i] = 0.25;
    char *p = tmp("x.npy");
    write_f32(p, v, 4, (int64_t[]){MB, MT, MH, MP});
    struct stat st;
    assert_int_equal(stat(p, &st), 0);
    expect_ok(m2_run(NULL, 0, "--in", fmt("x=%s", p), NULL));
    assert_int_equal(truncate(p, st.st_size - 5), 0);
    expect_error(m2_run(NULL, 0, "--in", fmt("x=%s", p), NULL), "x.npy", NULL);
    assert_int_equal(truncate(p, 40), 0); /* inside the header */
    expect_error(m2_run(NULL, 0, "--in", fmt("x=%s", p), NULL), "x.npy", NULL);
    assert_int_equal(truncate(p, 0), 0);
    expect_error(m2_run(NULL, 0, "--in", fmt("x=%s", p), NULL), "x.npy", NULL);
}

static void test_wrong_shape(void **state)
{
    (void)state;
    double v[2 * 6 * 3 * 4] = {0};
    char *p = tmp("x.npy");
    write_f32(p, v, 4, (int64_t[]){2, 6, 3, 4});
    proc r = m2_run(NULL, 0, "--in", fmt("x=%s", p), NULL);
    expect_error(r, "'x'", "[B, T, 2, 4]", "[2, 6, 3, 4]", NULL);
    /* a param of the wrong rank */
    write_f32(p, v, 2, (int64_t[]){2, 1});
    expect_error(m2_run(NULL, 0, "--in", fmt("D=%s", p), NULL), "'D'", "[2]", "[2, 1]", NULL);
    /* inputs that disagree on B or on T */
    char *q = tmp("dt.npy");
    write_f32(p, v, 4, (int64_t[]){2, 6, 2, 4});
    write_f32(q, v, 3, (int64_t[]){2, 5, 2});
    expect_error(m2_run(NULL, 0, "--in", fmt("x=%s", p), "--in", fmt("dt=%s", q), NULL), "'dt'", "[2, 6, 2]", "[2, 5, 2]", NULL);
    /* an empty batch or sequence axis is not "B and T not given" */
    write_f32(p, v, 4, (int64_t[]){0, 6, 2, 4});
    expect_error(m2_run(NULL, 0, "--in", fmt("x=%s", p), NULL), "'x'", "batch", NULL);
    write_f32(p, v, 4, (int64_t[]){2, 0, 2, 4});
    expect_error(m2_run(NULL, 0, "--in", fmt("x=%s", p), NULL), "'x'", "sequence", NULL);
    write_f32(p, v, 4, (int64_t[]){0, 2, 4, 8});
    expect_error(m2_run(NULL, 0, "--init-state", fmt("S=%s", p), NULL), "'S'", "batch", NULL);
    /* --seqlen given and a file that disagrees */
    write_f32(p, v, 4, (int64_t[]){2, 6, 2, 4});
    expect_error(m2_run(NULL, 0, "--seqlen", "7", "--in", fmt("x=%s", p), NULL), "'x'", "[2, 7, 2, 4]", "[2, 6, 2, 4]", NULL);
}

static void test_wrong_dtype(void **state)
{
    (void)state;
    int32_t v[MH] = {1, 2};
    char *p = tmp("D.npy");
    write_raw(p, "<i4", 1, (int64_t[]){MH}, v, sizeof v);
    expect_error(m2_run(NULL, 0, "--in", fmt("D=%s", p), NULL), "D.npy", NULL);
    write_raw(p, ">f4", 1, (int64_t[]){MH}, v, sizeof v);
    expect_error(m2_run(NULL, 0, "--in", fmt("D=%s", p), NULL), "D.npy", NULL);
}

static void test_missing_file_and_names(void **state)
{
    (void)state;
    expect_error(m2_run(NULL, 0, "--in", fmt("x=%s", tmp("nowhere.npy")), NULL), "nowhere.npy", NULL);
    expect_error(ssmc("run", tmp("nowhere.ssm")), "nowhere.ssm", NULL);
    double v[MH] = {1, 2};
    char *p = tmp("D.npy");
    write_f32(p, v, 1, (int64_t[]){MH});
    expect_error(m2_run(NULL, 0, "--in", fmt("zebra=%s", p), NULL), "zebra", NULL);
    expect_error(m2_run(NULL, 0, "--in", fmt("y=%s", p), NULL), "'y'", NULL);          /* an output */
    expect_error(m2_run(NULL, 0, "--in", fmt("S=%s", p), NULL), "'S'", NULL);          /* a state via --in */
    expect_error(m2_run(NULL, 0, "--init-state", fmt("D=%s", p), NULL), "'D'", "not a state", NULL);
    expect_error(m2_run(NULL, 0, "--init-state", fmt("zebra=%s", p), NULL), "zebra", NULL);
    expect_error(m2_run(NULL, 0, "--in", fmt("D=%s", p), "--in", fmt("D=%s", p), NULL), "'D'", NULL);
}

static void test_check_finite(void **state)
{
    (void)state;
    double v[MB * MT * MH * MP];
    for (size_t i = 0; i < sizeof v / sizeof *v; i++) v[i] = 0.5;
    char *p = tmp("x.npy");
    v[17] = NAN;
    write_f32(p, v, 4, (int64_t[]){MB, MT, MH, MP});
    expect_error(m2_run(NULL, 0, "--check-finite", "--in", fmt("x=%s", p), NULL), "'x'", NULL);
    v[17] = INFINITY;
    write_f64(p, v, 4, (int64_t[]){MB, MT, MH, MP});
    expect_error(m2_run(NULL, 0, "--check-finite", "--in", fmt("x=%s", p), NULL), "'x'", NULL);
    double d[MH] = {1, -INFINITY};
    char *q = tmp("D.npy");
    write_f32(q, d, 1, (int64_t[]){MH});
    expect_error(m2_run(NULL, 0, "--check-finite", "--in", fmt("D=%s", q), NULL), "'D'", NULL);
    if (cpu_available())
        expect_error(m2_run(NULL, 0, "--device", "cpu", "--check-finite", "--in", fmt("D=%s", q), NULL), "'D'", NULL);
    /* a finite input that overflows in f32 inside the model: the result is caught */
    char *src = tmp("exp.ssm");
    FILE *f = fopen(src, "w");
    fputs("model e {\n  input x[T];\n  output y[T];\n  y[t] = exp(x[t]);\n}\n", f);
    fclose(f);
    double x[3] = {1, 100, 2};
    write_f32(p, x, 2, (int64_t[]){1, 3});
    expect_ok(ssmc("run", src, "--in", fmt("x=%s", p)));
    expect_error(ssmc("run", src, "--check-finite", "--in", fmt("x=%s", p)), "'y'", "non-finite", NULL);
}

static void test_absurd_dims(void **state)
{
    (void)state;
    const char *f = example("mamba2");
    expect_error(ssmc("run", f, "-D", "H=0"), "H", NULL);
    expect_error(ssmc("run", f, "-D", "H=-5"), "H", NULL);
    expect_error(ssmc("run", f, "-D", "H=99999999999"), "H", NULL);
    expect_error(ssmc("run", f, "-D", "H=9223372036854775807"), "H", NULL);
    expect_error(ssmc("run", f, "-D", "Q=4"), "Q", NULL);
    /* each dim legal, their product not */
    expect_error(ssmc("run", f, "-D", "H=2000000", "-D", "P=2000000", "-D", "N=2000000", "--seqlen", "1"), NULL);
    expect_error(ssmc("emit", f, "--emit=ir", "-D", "H=0"), "H", NULL);
    /* B*T*... too large to hold */
    expect_error(ssmc("run", f, "--batch", "2147483648", "--seqlen", "1099511627776"), NULL);
}

/* Inputs without an end or of the wrong kind (issue 18): a source from
 * /dev/zero is refused once it passes the 64 MiB limit, in bounded memory and
 * time; a regular file past the limit is refused by its size; a directory
 * says it is one; a .npy from /dev/zero, a directory, or whose header claims
 * a header of 4 GiB or data of 4 TiB is refused before anything that size is
 * read. The child's address space is capped, so an unbounded read fails here. */
static void test_unbounded_inputs(void **state)
{
    (void)state;
    limits as = {512u << 20, 512};
    expect_error(ssmc_lim(&as, "check", "/dev/zero", (char *)NULL), "/dev/zero", "size limit", "64 MiB", NULL);
    char *big = tmp("big.ssm");
    FILE *f = fopen(big, "w");
    fputs("model m { input x[T]; output y[T]; y[t] = x[t]; }\n", f);
    fclose(f);
    assert_int_equal(truncate(big, (64 << 20) + 1), 0); /* sparse: no disk used */
    expect_error(ssmc_lim(&as, "check", big, (char *)NULL), "big.ssm", "size limit", NULL);
    expect_error(ssmc("check", g_dir), g_dir, "is a directory", NULL);
    expect_error(ssmc("run", g_dir), "is a directory", NULL);
    const char *gla = example("gla");
    expect_error(ssmc_lim(&as, "run", gla, "--in", "q=/dev/zero", (char *)NULL), "/dev/zero", "not a .npy file", NULL);
    expect_error(ssmc("run", gla, "--in", fmt("q=%s", g_dir)), "is a directory", NULL);
    char *hdr = tmp("huge_header.npy");
    f = fopen(hdr, "wb");
    fwrite("\x93NUMPY\x02\x00\xff\xff\xff\xff{'descr'", 1, 20, f);
    fclose(f);
    expect_error(ssmc_lim(&as, "run", gla, "--in", fmt("q=%s", hdr), (char *)NULL), "huge_header.npy", "claims", NULL);
    char *shape = tmp("huge_shape.npy");
    write_raw(shape, "<f4", 4, (int64_t[]){1, (int64_t)1 << 40, 4, 32}, NULL, 0);
    expect_error(ssmc_lim(&as, "run", gla, "--in", fmt("q=%s", shape), (char *)NULL), "huge_shape.npy", "limit", NULL);
}

/* The CLI under a small address space: an error, not a crash or a hang. */
static void test_cli_out_of_memory(void **state)
{
    (void)state;
    const char *f = example("mamba2");
    /* its own buffers do not fit (x alone is 2 GB) */
    limits small_as = {256u << 20, 256};
    proc p = ssmc_lim(&small_as, "run", f, "-D", "H=2", "-D", "P=4", "-D", "N=8", "--batch", "64", "--seqlen",
                      "1000000", (char *)NULL);
    expect_error(p, "memory", NULL);
    if (cpu_available()) {
        p = ssmc_lim(&small_as, "run", f, "-D", "H=2", "-D", "P=4", "-D", "N=8", "--batch", "64", "--seqlen",
                     "1000000", "--device", "cpu", (char *)NULL);
        expect_error(p, NULL);
    }
    /* its buffers fit (about 550 MB of f32) but the interpreter's f64 copies do not */
    limits mid_as = {900u << 20, 200};
    p = ssmc_lim(&mid_as, "run", f, "-D", "H=2", "-D", "P=4", "-D", "N=8", "--batch", "4", "--seqlen", "1000000",
                 (char *)NULL);
    expect_error(p, "memory", NULL);
    /* a state too big for the interpreter (dims legal, 8 GB in f64) */
    p = ssmc_lim(&small_as, "run", f, "-D", "H=16", "-D", "P=4096", "-D", "N=16384", "--seqlen", "1", (char *)NULL);
    expect_error(p, NULL);
}

/* The library in a child whose address space is capped a little above what
 * it holds: ssmc_run must return, with NOMEM (or ARG), and a message. */
static size_t vm_size(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long pages = 0;
    if (f) {
        if (fscanf(f, "%lu", &pages) != 1) pages = 0;
        fclose(f);
    }
    return (size_t)pages * (size_t)sysconf(_SC_PAGESIZE);
}

enum { CHILD_OK = 10, CHILD_NOMEM, CHILD_ARG, CHILD_OTHER, CHILD_NO_MESSAGE, CHILD_SETUP };

static int oom_child(int64_t H, int64_t P, int64_t N, int64_t batch, int64_t T, size_t headroom)
{
    size_t len;
    const char *why;
    char *src = read_file(example("mamba2"), &len, &why);
    ssmc_ctx *ctx = ssmc_ctx_new();
    ssmc_dim dims[] = {{"H", H}, {"P", P}, {"N", N}};
    ssmc_options o = {.dims = dims, .ndims = 3};
    ssmc_model *m = NULL;
    if (!src || !ctx || ssmc_compile(ctx, "m.ssm", src, len, &o, &m) != SSMC_OK) return CHILD_SETUP;
    int n = ssmc_model_num_tensors(m);
    ssmc_arg args[16];
    for (int i = 0; i < n; i++) {
        ssmc_tensor_info ti;
        ssmc_model_tensor(m, i, &ti);
        size_t c = ti.role == SSMC_PARAM ? 1 : (size_t)batch * (ti.per_step ? (size_t)T : 1);
        for (int j = 0; j < ti.rank; j++) c *= (size_t)ti.shape[j];
        float *d = malloc(c * sizeof *d);
        if (!d) return CHILD_SETUP;
        for (size_t k = 0; k < c; k++) d[k] = 0.25f; /* touched: really ours */
        args[i] = (ssmc_arg){ti.name, SSMC_F32, d, 0};
    }
    struct rlimit as = {vm_size() + headroom, vm_size() + headroom};
    if (setrlimit(RLIMIT_AS, &as) != 0) return CHILD_SETUP;
    ssmc_status s = ssmc_run(m, batch, T, args, n);
    if (s != SSMC_OK && !*ssmc_ctx_error(ctx)) return CHILD_NO_MESSAGE;
    return s == SSMC_OK ? CHILD_OK : s == SSMC_ERR_NOMEM ? CHILD_NOMEM : s == SSMC_ERR_ARG ? CHILD_ARG : CHILD_OTHER;
}

static int in_child(int64_t H, int64_t P, int64_t N, int64_t batch, int64_t T, size_t headroom)
{
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct rlimit cpu = {120, 120};
        setrlimit(RLIMIT_CPU, &cpu);
        _exit(oom_child(H, P, N, batch, T, headroom));
    }
    int st;
    assert_true(waitpid(pid, &st, 0) == pid);
    if (!WIFEXITED(st)) fail_msg("the child died of signal %d", WTERMSIG(st));
    return WEXITSTATUS(st);
}

static void test_library_out_of_memory(void **state)
{
    (void)state;
    /* the f32 tensors (about 550 MB) are in place; the f64 copies do not fit */
    int rc = in_child(2, 4, 8, 4, 1000000, 64u << 20);
    if (rc != CHILD_NOMEM && rc != CHILD_ARG) fail_msg("big batch: child exit %d", rc);
    /* small tensors, a state the interpreter cannot allocate */
    rc = in_child(64, 4096, 4096, 1, 1, 1200u << 20);
    if (rc != CHILD_NOMEM && rc != CHILD_ARG) fail_msg("big state: child exit %d", rc);
    /* the same small model with room to spare runs: the cap itself is not the failure */
    rc = in_child(2, 4, 8, 2, 100, 256u << 20);
    assert_int_equal(rc, CHILD_OK);
}

/* ================= run --grad ================= */

/* The gradients of the small Mamba-2 from the library (interpreter, f64), for
 * the values of m and the cotangents dy and dS (NULL: zero); every input,
 * param and state's gradient into g[name index] of {x, dt, B, C, A_log, D, dt_bias, S}. */
static void m2_library_grads(const m2 *v, const double *dy, const double *dS, double **g)
{
    const char *src;
    size_t len;
    const char *why;
    src = read_file(example("mamba2"), &len, &why);
    assert_non_null(src);
    ssmc_ctx *ctx = ssmc_ctx_new();
    ssmc_dim dims[] = {{"H", MH}, {"P", MP}, {"N", MN}};
    ssmc_options o = {.device = SSMC_DEVICE_INTERP, .dims = dims, .ndims = 3};
    ssmc_model *m = NULL;
    assert_int_equal(ssmc_compile(ctx, "mamba2.ssm", src, len, &o, &m), SSMC_OK);
    static double y[MB * MT * MH * MP], S[MB * MH * MP * MN];
    m2 c = *v;
    ssmc_arg args[] = {{"x", SSMC_F64, c.x, 0},         {"dt", SSMC_F64, c.dt, 0},   {"B", SSMC_F64, c.Bm, 0},
                       {"C", SSMC_F64, c.C, 0},         {"A_log", SSMC_F64, c.A_log, 0}, {"D", SSMC_F64, c.D, 0},
                       {"dt_bias", SSMC_F64, c.dt_bias, 0}, {"y", SSMC_F64, y, 0},   {"S", SSMC_F64, S, 0}};
    ssmc_tape *tape = NULL;
    memset(S, 0, sizeof S);
    assert_int_equal(ssmc_forward_train(m, MB, MT, args, 9, &tape), SSMC_OK);
    ssmc_arg douts[2];
    int nd = 0;
    if (dy) douts[nd++] = (ssmc_arg){"y", SSMC_F64, (void *)dy, 0};
    if (dS) douts[nd++] = (ssmc_arg){"S", SSMC_F64, (void *)dS, 0};
    const char *gn[] = {"x", "dt", "B", "C", "A_log", "D", "dt_bias", "S"};
    ssmc_arg grads[8];
    for (int i = 0; i < 8; i++) grads[i] = (ssmc_arg){gn[i], SSMC_F64, g[i], 0};
    if (ssmc_backward(m, tape, args, 7, douts, nd, grads, 8) != SSMC_OK) fail_msg("%s", ssmc_ctx_error(ctx));
    ssmc_tape_free(tape);
    ssmc_model_free(m);
    ssmc_ctx_free(ctx);
    free((void *)src);
}

static void test_grad_out(void **state)
{
    (void)state;
    m2 v;
    m2_fill(&v, 21);
    char *ins[M2_NINS];
    m2_write(&v, 0, MT, "a", ins);
    /* cotangents: y from a file (f64), S from a file (f32) */
    static double dy[MB * MT * MH * MP], dS[MB * MH * MP * MN];
    uint64_t seed = 5;
    for (size_t i = 0; i < sizeof dy / sizeof *dy; i++) dy[i] = grid(&seed);
    for (size_t i = 0; i < sizeof dS / sizeof *dS; i++) dS[i] = grid(&seed);
    write_f64(tmp("dy.npy"), dy, 4, (int64_t[]){MB, MT, MH, MP});
    write_f32(tmp("dS.npy"), dS, 4, (int64_t[]){MB, MH, MP, MN});
    char *dir = tmp("g");
    proc p = m2_run(ins, M2_NINS, "--grad", "--dout", fmt("y=%s", tmp("dy.npy")), "--dout",
                    fmt("S=%s", tmp("dS.npy")), "--out", dir, NULL);
    expect_ok(p);
    assert_non_null(strstr(p.out, "backward"));
    assert_int_equal(count_lines(p.out, "  grad   "), 8);
    /* one file per input, param and state, as <f4 in their shapes, equal to the library's gradients */
    const char *gn[] = {"x", "dt", "B", "C", "A_log", "D", "dt_bias", "S"};
    const int64_t shapes[8][5] = {{4, MB, MT, MH, MP}, {3, MB, MT, MH}, {3, MB, MT, MN}, {3, MB, MT, MN},
                                  {1, MH},             {1, MH},         {1, MH},         {4, MB, MH, MP, MN}};
    double *g[8];
    for (int i = 0; i < 8; i++) g[i] = calloc(MB * MT * MH * MP * MN, sizeof(double));
    m2_library_grads(&v, dy, dS, g);
    for (int i = 0; i < 8; i++) {
        arr a = load(fmt("%s/grad_%s.npy", dir, gn[i]), SSMC_F32);
        assert_int_equal(a.rank, (int)shapes[i][0]);
        for (int j = 0; j < a.rank; j++) assert_int_equal(a.shape[j], shapes[i][1 + j]);
        double e = rel_err(a.v, g[i], a.count);
        if (!(e <= 1e-6)) fail_msg("grad_%s.npy: rel err %g against the library", gn[i], e);
        free(a.v);
    }
    assert_int_equal(access(fmt("%s/y.npy", dir), F_OK), 0);
    assert_int_not_equal(access(fmt("%s/grad_y.npy", dir), F_OK), 0); /* no gradient of an output */
    /* without --dout: the outputs' cotangents are drawn (seeded), the states' are zero */
    char *d1 = tmp("g1"), *d2 = tmp("g2");
    expect_ok(m2_run(ins, M2_NINS, "--grad", "--seed", "4", "--out", d1, NULL));
    expect_ok(m2_run(ins, M2_NINS, "--grad", "--seed", "4", "--out", d2, NULL));
    arr a1 = load(fmt("%s/grad_x.npy", d1), SSMC_F32), a2 = load(fmt("%s/grad_x.npy", d2), SSMC_F32);
    assert_true(rel_err(a1.v, a2.v, a1.count) == 0);
    double amax = 0;
    for (size_t k = 0; k < a1.count; k++) amax = fmax(amax, fabs(a1.v[k]));
    assert_true(amax > 0);
    free(a1.v);
    free(a2.v);
    for (int i = 0; i < 8; i++) free(g[i]);
}

static void test_grad_verify(void **state)
{
    (void)state;
    proc p = ssmc("run", example("mamba2"), "-D", "H=2", "-D", "P=4", "-D", "N=8", "--seqlen", "9", "--grad",
                  "--verify");
    expect_ok(p);
    assert_int_equal(count_lines(p.out, "verify grad"), 8);
    assert_null(strstr(p.out, "FAIL"));
    p = ssmc("run", example("gla"), "-D", "K=4", "-D", "V=4", "--batch", "2", "--seqlen", "5", "--grad", "--verify",
             "--dtype", "bf16");
    expect_ok(p);
    assert_int_equal(count_lines(p.out, "verify grad"), 5); /* q k v gk S */
    if (cpu_available()) { /* the adjoint through the CPU backend's plan, against the interpreter's */
        p = ssmc("run", example("lstm"), "-D", "E=8", "-D", "H=8", "--batch", "2", "--seqlen", "30", "--grad",
                 "--verify", "--device", "cpu");
        expect_ok(p);
        assert_int_equal(count_lines(p.out, "verify grad"), 6); /* x W U bias h c */
        assert_null(strstr(p.out, "FAIL"));
        /* the chunked backward (docs/chunked.md, "Gradients") against the interpreter's; its files */
        const char *dir = tmp("chunked_grads");
        p = ssmc("run", example("gated_deltanet"), "-D", "H=3", "-D", "K=5", "-D", "V=3", "--batch", "2", "--seqlen", "21",
                 "--device", "cpu", "--algo", "chunked", "--chunk", "4", "--grad", "--verify", "--out", dir);
        expect_ok(p);
        assert_int_equal(count_lines(p.out, "verify grad"), 8); /* q k v a b A_log dt_bias S */
        assert_null(strstr(p.out, "FAIL"));
        assert_int_equal(access(fmt("%s/grad_A_log.npy", dir), F_OK), 0);
        assert_int_equal(access(fmt("%s/grad_S.npy", dir), F_OK), 0);
    }
}

static void test_grad_errors(void **state)
{
    (void)state;
    char *f = tmp("dx.npy");
    double z[MB * MT * MH * MP] = {0};
    write_f64(f, z, 4, (int64_t[]){MB, MT, MH, MP});
    expect_error(ssmc("run", example("mamba2"), "-D", "H=2", "-D", "P=4", "--batch", "2", "--seqlen", "10", "--grad",
                      "--dout", fmt("x=%s", f)),
                 "--dout", "'x'", "not an output or a state", NULL);
    expect_error(ssmc("run", example("mamba2"), "--grad", "--dout", fmt("y=%s", f)), "'y' must have shape", NULL);
    expect_error(ssmc("run", example("mamba2"), "--grad", "--dout", fmt("nope=%s", f)), "no tensor named 'nope'",
                 NULL);
    expect_usage(ssmc("run", example("mamba2"), "--dout", fmt("y=%s", f)));
    expect_usage(ssmc("bench", example("mamba2"), "--grad"));
    expect_usage(ssmc("run", example("mamba2"), "--grad", "--dout"));
    /* a model the pass cannot differentiate yet: exit 1, the place named */
    char *m = tmp("groups.ssm");
    FILE *fp = fopen(m, "w");
    fputs("model m {\n  dim H = 6, A = 3, B = 2;\n  input x[T,H], p[T,A], q[T,B];\n  output y[T,H];\n"
          "  y[t,h] = x[t,h] * p[t, h / 2] * q[t, h / 3];\n}\n", fp);
    fclose(fp);
    expect_error(ssmc("run", m, "--grad"), "groups.ssm:5:", "cannot differentiate this yet", NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_out_every_output_and_state, setup, teardown),
        cmocka_unit_test_setup_teardown(test_in_files_are_used, setup, teardown),
        cmocka_unit_test_setup_teardown(test_seed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_init_state_interp, setup, teardown),
        cmocka_unit_test_setup_teardown(test_init_state_cpu, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cu_seqlens_interp, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cu_seqlens_cpu, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dtype_bf16, setup, teardown),
        cmocka_unit_test_setup_teardown(test_verify, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bench, setup, teardown),
        cmocka_unit_test_setup_teardown(test_grad_out, setup, teardown),
        cmocka_unit_test_setup_teardown(test_grad_verify, setup, teardown),
        cmocka_unit_test_setup_teardown(test_grad_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_check, setup, teardown),
        cmocka_unit_test_setup_teardown(test_emit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_help_version, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_flags, setup, teardown),
        cmocka_unit_test_setup_teardown(test_algo, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed_npy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_truncated_npy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wrong_shape, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wrong_dtype, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_file_and_names, setup, teardown),
        cmocka_unit_test_setup_teardown(test_check_finite, setup, teardown),
        cmocka_unit_test_setup_teardown(test_absurd_dims, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unbounded_inputs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cli_out_of_memory, setup, teardown),
        cmocka_unit_test_setup_teardown(test_library_out_of_memory, setup, teardown),
    };
    return cmocka_run_group_tests_name("cli", tests, NULL, NULL);
}
