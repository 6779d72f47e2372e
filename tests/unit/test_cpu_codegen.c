/* test_cpu_codegen.c: the CPU backend on models written to reach the corners
 * of its lowering, against the f64 interpreter (relative error at most 1e-5 for
 * f32 tensors):
 *  - a state update that reads its state at other indices (the delta rule
 *    written inline), which must go through a scratch copy;
 *  - reads at t - k (a literal and a reduction variable: causal convolution,
 *    token shift) that read 0 before the sequence starts;
 *  - grouped heads (h / 2) on inputs; scalar lets; a max reduction; a scalar
 *    output; every function of the language;
 *  - a model whose only parallel axis is its state's contiguous one, cut into
 *    unequal tiles (and its state copied to aligned memory when misaligned);
 * and the run-time paths: f16 and f64 tensors, states not given (start at
 * zero), outputs not given (must stay untouched), 1, 2 and 5 threads over
 * batch 7 (uneven ranges), `--emit=llvm` text, the kernel cache (a miss
 * that stores an entry, then a hit that loads it; an entry LLVM cannot load
 * is a miss, and nothing is printed), the scratch layout (each worker's in
 * whole pages of its own, for every example), and long programs (thousands of
 * lets: right results, compile time near-linear). Exits 77 (skipped) when
 * this build has no CPU backend. SSMC_TEST_SEED=<n> repeats a run. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "codegen/llvm.h"
#include "frontend/ast.h"
#include "ir/ir.h"
#include "passes/passes.h"
#include "runtime/cache.h"
#include "ssmc.h"
#include "support/diag.h"
#include "support/support.h"
#include "tests/unit/helpers/cpu_harness.h"

static const char source[] =
    "model conv {\n"
    "  dim C = 6, W = 4;\n"
    "  input x[T,C];\n"
    "  param w[C,W];\n"
    "  state s[C];\n"
    "  output y[T,C], z[T,C];\n"
    "  let half = 0.5;\n"
    "  y[t,c] = sum(k: w[c,k] * x[t-k,c]);\n"
    "  z[t,c] = x[t-1,c] - x[t,c] + s[c];\n"
    "  s[c] = s[c] * half + x[t-2,c];\n"
    "}\n"
    "model mathy {\n"
    "  dim N = 9;\n"
    "  input x[T,N];\n"
    "  param p[N];\n"
    "  state s[N];\n"
    "  output y[T,N], m[T];\n"
    "  y[t,n] = exp(x[t,n]) + log(abs(x[t,n]) + 0.1) + log1p(abs(x[t,n])) + sqrt(abs(x[t,n]))\n"
    "         + rsqrt(abs(x[t,n]) + 0.5) + tanh(3 * x[t,n]) + sigmoid(x[t,n]) + softplus(4 * x[t,n])\n"
    "         + silu(x[t,n]) + relu(x[t,n]) + pow(abs(x[t,n]) + 0.5, p[n]) + min(x[t,n], p[n])\n"
    "         + max(x[t,n], 0.2) - x[t,n] / (p[n] + 2);\n"
    "  m[t] = max(n: x[t,n] * s[n]);\n"
    "  s[n] = tanh(s[n] + x[t,n]);\n"
    "}\n"
    "model gqa {\n"
    "  dim H = 4, G = 2, K = 5, V = 6;\n"
    "  input q[T,H,K], k[T,G,K], v[T,G,V];\n"
    "  state S[H,K,V];\n"
    "  output y[T,H,V];\n"
    "  S[h,i,j] = 0.9 * S[h,i,j] + k[t,h/2,i] * v[t,h/2,j];\n"
    "  y[t,h,j] = sum(i: q[t,h,i] * S[h,i,j]);\n"
    "}\n"
    "model inline_delta {\n"
    "  dim H = 3, K = 5, V = 7;\n"
    "  input k[T,H,K], v[T,H,V], b[T,H];\n"
    "  state S[H,K,V];\n"
    "  output y[T,H,V];\n"
    "  S[h,i,j] = S[h,i,j] + sigmoid(b[t,h]) * k[t,h,i] * (v[t,h,j] - sum(a: k[t,h,a] * S[h,a,j]));\n"
    "  y[t,h,j] = sum(i: k[t,h,i] * S[h,i,j]);\n"
    "}\n"
    /* a vector state: nothing but its contiguous axis splits, in tiles of 16, 16, 16, 2 */
    "model tiles {\n"
    "  dim E = 50;\n"
    "  input x[T,E], g[T,E];\n"
    "  state s[E];\n"
    "  output y[T,E];\n"
    "  let decay[t,e] = sigmoid(g[t,e]);\n"
    "  s[e] = decay[t,e] * s[e] + x[t,e];\n"
    "  y[t,e] = s[e] * x[t,e] + s[e];\n"
    "}\n"
    /* two heads, a wide value axis that stays inside the item */
    "model wide {\n"
    "  dim H = 2, K = 3, V = 50;\n"
    "  input k[T,H,K], v[T,H,V], g[T,H];\n"
    "  state S[H,K,V];\n"
    "  output y[T,H,V], o[T,H,K];\n"
    "  let decay[t,h] = sigmoid(g[t,h]);\n"
    "  S[h,i,j] = decay[t,h] * S[h,i,j] + k[t,h,i] * v[t,h,j];\n"
    "  y[t,h,j] = sum(i: k[t,h,i] * S[h,i,j]);\n"
    "  o[t,h,i] = k[t,h,i] * decay[t,h];\n"
    "}\n";

typedef struct model_case {
    const char *model;
    harness_range ranges[4];
} model_case;

static const model_case cases[] = {
    {"conv", {{NULL, 0, 0}}},
    {"mathy", {{"p", -1.5, 1.5}, {"x", -2, 2}}},
    {"gqa", {{NULL, 0, 0}}},
    {"inline_delta", {{"k", -0.5, 0.5}}},
    {"tiles", {{NULL, 0, 0}}},
    {"wide", {{NULL, 0, 0}}},
};

static uint64_t seed0;

static void compile_pair(const char *model, int threads, ssmc_ctx *ctx, ssmc_model **cpu, ssmc_model **ref)
{
    ssmc_options o = {.model = model, .device = SSMC_DEVICE_CPU, .threads = threads};
    ssmc_status s = ssmc_compile(ctx, "test_cpu_codegen.ssm", source, sizeof source - 1, &o, cpu);
    if (s == SSMC_ERR_UNSUPPORTED) skip();
    if (s != SSMC_OK) fail_msg("%s: cpu compile failed: %s", model, ssmc_ctx_error(ctx));
    o.device = SSMC_DEVICE_INTERP;
    s = ssmc_compile(ctx, "test_cpu_codegen.ssm", source, sizeof source - 1, &o, ref);
    if (s != SSMC_OK) fail_msg("%s: interpreter compile failed: %s", model, ssmc_ctx_error(ctx));
}

static void expect(const char *model, const char *what, const harness_run *r, const harness_result *res, double tol,
                   int min_checked)
{
    if (!res->ok) fail_msg("%s (%s): %s (SSMC_TEST_SEED=%" PRIu64 ")", model, what, res->why, seed0);
    if (!(res->worst <= tol) || res->checked < min_checked)
        fail_msg("%s (%s, T=%" PRId64 ", batch %" PRId64 "): '%s' rel error %.3e > %.0e, %d checked "
                 "(SSMC_TEST_SEED=%" PRIu64 ")",
                 model, what, r->T, r->batch, res->worst_name ? res->worst_name : "?", res->worst, tol, res->checked,
                 seed0);
}

/* Every model, f32, several T, batch 7 over 1, 2 and 5 threads. */
static void test_models(void **state)
{
    (void)state;
    uint64_t seed = seed0;
    for (size_t ci = 0; ci < sizeof cases / sizeof *cases; ci++) {
        static const int threads[] = {1, 2, 5};
        for (int ti = 0; ti < 3; ti++) {
            ssmc_ctx *ctx = ssmc_ctx_new();
            ssmc_model *cpu, *ref;
            compile_pair(cases[ci].model, threads[ti], ctx, &cpu, &ref);
            static const int64_t Ts[] = {1, 2, 3, 17};
            for (int k = 0; k < 4; k++) {
                harness_run r = {.batch = 7, .T = Ts[k], .dtype = SSMC_F32, .random_state = k % 2,
                                 .ranges = cases[ci].ranges, .seed = seed++};
                harness_result res;
                harness_compare(cpu, ref, &r, &res);
                expect(cases[ci].model, "f32", &r, &res, 1e-5, 2);
            }
            ssmc_model_free(cpu);
            ssmc_model_free(ref);
            ssmc_ctx_free(ctx);
        }
    }
}

/* f16 and f64 tensors; states not given; outputs not given. */
static void test_run_paths(void **state)
{
    (void)state;
    uint64_t seed = seed0 + 7777;
    for (size_t ci = 0; ci < sizeof cases / sizeof *cases; ci++) {
        ssmc_ctx *ctx = ssmc_ctx_new();
        ssmc_model *cpu, *ref;
        compile_pair(cases[ci].model, 2, ctx, &cpu, &ref);
        harness_result res;
        harness_run r = {.batch = 2, .T = 11, .dtype = SSMC_F64, .random_state = true, .ranges = cases[ci].ranges,
                         .seed = seed++};
        harness_compare(cpu, ref, &r, &res);
        expect(cases[ci].model, "f64 tensors", &r, &res, 1e-5, 2);
        r.dtype = SSMC_F16;
        r.seed = seed++;
        harness_compare(cpu, ref, &r, &res);
        expect(cases[ci].model, "f16 tensors", &r, &res, 1e-2, 2);
        r.dtype = SSMC_F32;
        r.no_state = true;
        r.seed = seed++;
        harness_compare(cpu, ref, &r, &res);
        expect(cases[ci].model, "no state given", &r, &res, 1e-5, 1);
        r.no_state = false;
        r.skip_outputs = true;
        r.seed = seed++;
        harness_compare(cpu, ref, &r, &res);
        expect(cases[ci].model, "some outputs not given", &r, &res, 1e-5, 1);
        ssmc_model_free(cpu);
        ssmc_model_free(ref);
        ssmc_ctx_free(ctx);
    }
}

/* --emit=llvm: the plan's comment lines, then an optimised, vectorised module. */
/* `--emit=llvm` text of examples/<name>.ssm under o; NULL when this build has
 * no CPU backend. */
static char *emit_llvm(ssmc_ctx *ctx, const char *name, const ssmc_options *o)
{
    char path[64], *text = NULL;
    size_t len;
    snprintf(path, sizeof path, "examples/%s", name);
    char *src = harness_read_source(path, &len);
    assert_non_null(src);
    ssmc_status s = ssmc_emit(ctx, name, src, len, o, SSMC_EMIT_LLVM, &text);
    free(src);
    if (s == SSMC_ERR_UNSUPPORTED) return NULL;
    if (s != SSMC_OK) fail_msg("emit of %s failed: %s", name, ssmc_ctx_error(ctx));
    return text;
}

static void test_emit(void **state)
{
    (void)state;
    ssmc_ctx *ctx = ssmc_ctx_new();
    ssmc_options o = {.threads = 2}; /* the grid aims at max(8, threads) items */
    char *text = emit_llvm(ctx, "mamba2.ssm", &o);
    if (!text) {
        ssmc_ctx_free(ctx);
        skip();
    }
    /* the plan heads the module */
    assert_non_null(strstr(text, "; kernel 1: recurrent, items = batch x H x P (8 per sequence)"));
    assert_non_null(strstr(text, ";   P = 32: grid, tiles of 16 (2 per sequence)"));
    assert_non_null(strstr(text, ";   per step: S[h,p,n]: loops p(16) n(64); fused with y; in place"));
    assert_non_null(strstr(text, "define void @ssmc_mamba2(ptr"));
    assert_non_null(strstr(text, "x float>")); /* the loop vectoriser ran */
    assert_null(strstr(text, "@expf"));         /* exp is inline, not a libm call */
    free(text);
    /* A state of 16 x 64 x 128 floats (512 KiB) is cut into items whose state
     * fits a 32 KiB L1 cache: one head each, more than the 8 the threads ask for. */
    static const ssmc_dim big[] = {{"H", 16}, {"P", 64}, {"N", 128}};
    o.dims = big;
    o.ndims = 3;
    text = emit_llvm(ctx, "mamba2.ssm", &o);
    assert_non_null(strstr(text, "; kernel 1: recurrent, items = batch x H (16 per sequence)"));
    assert_non_null(strstr(text, "@llvm.prefetch")); /* the next step's inputs and outputs */
    /* every per-step tensor's slice of one head, inputs included (a whole row of
     * x would be 64 lines; an input follows the class of the variables it is read at) */
    static const char *const mamba2_hints[] = {
        "input x[H,P]: prefetched a step ahead (5 cache lines)", "input dt[H]: prefetched a step ahead (2 cache lines)",
        "input B[N]: prefetched a step ahead (9 cache lines)", "input C[N]: prefetched a step ahead (9 cache lines)",
        "output y[H*,P]: prefetched a step ahead (5 cache lines)"};
    for (size_t i = 0; i < sizeof mamba2_hints / sizeof *mamba2_hints; i++) assert_non_null(strstr(text, mamba2_hints[i]));
    free(text);
    static const ssmc_dim gla_dims[] = {{"H", 8}, {"K", 64}, {"V", 64}};
    o.dims = gla_dims;
    text = emit_llvm(ctx, "gla.ssm", &o);
    static const char *const gla_hints[] = {"input q[H,K]: prefetched a step ahead (5 cache lines)",
                                            "input k[H,K]: prefetched a step ahead (5 cache lines)",
                                            "input v[H,V]: prefetched a step ahead (5 cache lines)",
                                            "input gk[H,K]: prefetched a step ahead (5 cache lines)",
                                            "output y[H*,V]: prefetched a step ahead (5 cache lines)"};
    for (size_t i = 0; i < sizeof gla_hints / sizeof *gla_hints; i++) assert_non_null(strstr(text, gla_hints[i]));
    /* on an AVX-512 host y's four vector accumulators stay in registers across
     * the rows of i (loop phis), not in scratch (unroll_accumulators) */
    if (strstr(text, "\"prefer-vector-width\"=\"512\"")) {
        int phis = 0;
        for (const char *at = text; (at = strstr(at, "phi <16 x float>")); at++) phis++;
        assert_int_equal(phis, 4);
    }
    free(text);
    ssmc_ctx_free(ctx);
}

/* Every example's kernel gives each worker's scratch whole 4 KiB pages
 * (llvm.h, scratch_stride): two workers' scratch in one page made one core's
 * prefetcher pull in the lines the other writes at every step. */
static void test_scratch_pages(void **state)
{
    (void)state;
    static const char *const names[] = {"deltanet.ssm", "gated_deltanet.ssm", "gla.ssm", "linear_attn.ssm",
                                        "lstm.ssm", "mamba.ssm", "mamba2.ssm", "mamba2_conv.ssm",
                                        "retnet.ssm", "rwkv6.ssm"};
    int with_scratch = 0;
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        char path[64];
        size_t len;
        snprintf(path, sizeof path, "examples/%s", names[i]);
        char *src = harness_read_source(path, &len);
        assert_non_null(src);
        arena a;
        arena_init(&a);
        diag d = {0};
        src_file f = {names[i], src, len};
        ast_file *af = parse_file(&a, &d, &f);
        assert_non_null(af);
        assert_true(check_model(&a, &d, &f, &af->models[0], NULL, 0));
        ir_model *m = ir_lower(&a, &d, &f, &af->models[0]);
        assert_non_null(m);
        assert_true(pass_lag(&a, &m, &d));
        plan_target tg = plan_target_cpu(2);
        pass_plan *plan = NULL;
        llvm_jit *jit = NULL;
        llvm_kernel_shape shape = {0};
        ssmc_status s = plan_make(&a, m, NULL, NULL, PLAN_ALGO_RECURRENT, &tg, &plan, &d);
        if (s == SSMC_OK) s = llvm_jit_compile(plan, &d, &jit, &shape);
        if (s == SSMC_ERR_UNSUPPORTED) {
            arena_free(&a);
            diag_free(&d);
            free(src);
            skip();
        }
        if (s != SSMC_OK) fail_msg("%s: %s", names[i], sb_cstr(&d.text));
        assert_true(shape.scratch_stride > 0);
        assert_int_equal(shape.scratch_stride % SCRATCH_PAGE_FLOATS, 0);
        assert_true(shape.scratch_stride >= shape.scratch_floats);
        /* no more pages than the scratch needs */
        assert_true(shape.scratch_stride - shape.scratch_floats < SCRATCH_PAGE_FLOATS);
        with_scratch += shape.scratch_floats > 0;
        llvm_jit_free(jit);
        arena_free(&a);
        diag_free(&d);
        free(src);
    }
    assert_true(with_scratch >= 5); /* the GLA family, Mamba-2, ... use scratch at all */
}

/* A fresh kernel cache: the first compile misses and stores one entry, the
 * second loads it; both kernels give the interpreter's results. */
static void test_kernel_cache(void **state)
{
    (void)state;
    char dir[] = "/tmp/ssmc-cpu-cache-XXXXXX";
    assert_non_null(mkdtemp(dir));
    const char *old = getenv("SSMC_CACHE_DIR");
    char *saved = old ? strdup(old) : NULL;
    setenv("SSMC_CACHE_DIR", dir, 1);
    for (int round = 0; round < 2; round++) {
        ssmc_ctx *ctx = ssmc_ctx_new();
        ssmc_model *cpu, *ref;
        compile_pair("tiles", 2, ctx, &cpu, &ref);
        int entries = 0;
        DIR *d = opendir(dir);
        assert_non_null(d);
        for (struct dirent *de; (de = readdir(d));) entries += de->d_name[0] != '.';
        closedir(d);
        assert_int_equal(entries, 1);
        harness_run r = {.batch = 3, .T = 20, .dtype = SSMC_F32, .random_state = true, .seed = seed0 + 99 + round};
        harness_result res;
        harness_compare(cpu, ref, &r, &res);
        expect("tiles", round ? "cache hit" : "cache miss", &r, &res, 1e-5, 2);
        ssmc_model_free(cpu);
        ssmc_model_free(ref);
        ssmc_ctx_free(ctx);
    }
    if (saved)
        setenv("SSMC_CACHE_DIR", saved, 1);
    else
        unsetenv("SSMC_CACHE_DIR");
    free(saved);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

static void compile_source_pair(const char *src, int threads, ssmc_ctx *ctx, ssmc_model **cpu, ssmc_model **ref);

/* The --verify tolerance (ssmc_model_tolerance) on a 1,000-term sum holds the
 * CPU kernel's result, and still catches a wrong one: one element off by
 * 0.1% of the largest value, or the sum of 999 terms instead of 1,000. */
static double rel_err(const float *got, const double *ref, size_t n)
{
    double md = 0, mr = 0;
    for (size_t i = 0; i < n; i++) {
        md = fmax(md, fabs((double)got[i] - ref[i]));
        mr = fmax(mr, fabs(ref[i]));
    }
    return md / mr;
}

static void test_verify_tolerance(void **state)
{
    (void)state;
    static const char text[] = "model bigsum { dim I = 1000; input x[T,I]; output y[T]; y[t] = sum(i: x[t,i]); }";
    enum { B = 2, T = 8, I = 1000 };
    ssmc_ctx *ctx = ssmc_ctx_new();
    ssmc_model *cpu, *ref;
    compile_source_pair(text, 2, ctx, &cpu, &ref);
    static float x[B * T * I], y[B * T];
    static double xd[B * T * I], yd[B * T], wrong[B * T];
    uint64_t rng = seed0 + 5;
    for (size_t i = 0; i < B * T * I; i++) xd[i] = x[i] = (float)uniform_pm1(&rng);
    ssmc_arg a[] = {{"x", SSMC_F32, x}, {"y", SSMC_F32, y}}, ad[] = {{"x", SSMC_F64, xd}, {"y", SSMC_F64, yd}};
    assert_int_equal(ssmc_run(cpu, B, T, a, 2), SSMC_OK);
    assert_int_equal(ssmc_run(ref, B, T, ad, 2), SSMC_OK);
    double tol = ssmc_model_tolerance(cpu, ssmc_model_find(cpu, "y"), SSMC_F32, T), mr = 0;
    for (size_t i = 0; i < B * T; i++) mr = fmax(mr, fabs(yd[i]));
    double ok = rel_err(y, yd, B * T);
    if (!(ok <= tol)) fail_msg("the right result: rel error %.3e > tol %.3e", ok, tol);
    for (size_t i = 0; i < B * T; i++) wrong[i] = yd[i] - xd[i * I + I - 1];
    double missing = rel_err(y, wrong, B * T);
    y[3] += (float)(1e-3 * mr);
    double corrupt = rel_err(y, yd, B * T);
    printf("test_verify_tolerance: tol %.2e; right %.2e, one term missing %.2e, one element off %.2e\n", tol, ok,
           missing, corrupt);
    if (!(missing > tol)) fail_msg("a missing term (rel error %.3e) passes tol %.3e", missing, tol);
    if (!(corrupt > tol)) fail_msg("a corrupted element (rel error %.3e) passes tol %.3e", corrupt, tol);
    ssmc_model_free(cpu);
    ssmc_model_free(ref);
    ssmc_ctx_free(ctx);
}

/* The one entry of cache directory dir: its key (from its name) and path. */
static rt_cache_key only_entry(const char *dir, char path[512])
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int entries = 0;
    rt_cache_key key = {0, 0};
    for (struct dirent *de; (de = readdir(d));) {
        if (de->d_name[0] == '.') continue;
        entries++;
        assert_int_equal(strlen(de->d_name), 32);
        char hi[17] = {0}, lo[17] = {0};
        memcpy(hi, de->d_name, 16);
        memcpy(lo, de->d_name + 16, 16);
        key.hi = strtoull(hi, NULL, 16);
        key.lo = strtoull(lo, NULL, 16);
        snprintf(path, 512, "%s/%s", dir, de->d_name);
    }
    closedir(d);
    assert_int_equal(entries, 1);
    return key;
}

/* A cache entry whose checksums hold but whose object LLVM cannot load (not
 * an object at all; an object whose kernel calls a function nothing defines,
 * which fails only when the JIT links it) is a miss: the compile succeeds with
 * a rebuilt kernel, the entry is replaced by a good one, and nothing is
 * printed (LLVM's JIT session prints its errors to stderr unless told not to). */
static void test_kernel_cache_unloadable(void **state)
{
    (void)state;
    char dir[] = "/tmp/ssmc-cpu-badcache-XXXXXX";
    assert_non_null(mkdtemp(dir));
    const char *old = getenv("SSMC_CACHE_DIR");
    char *saved = old ? strdup(old) : NULL;
    setenv("SSMC_CACHE_DIR", dir, 1);
    ssmc_ctx *ctx = ssmc_ctx_new();
    ssmc_model *cpu, *ref;
    compile_pair("tiles", 2, ctx, &cpu, &ref);
    ssmc_model_free(cpu);
    ssmc_model_free(ref);
    char entry[512], obj[600], cmd[1400];
    rt_cache_key key = only_entry(dir, entry);
    size_t good_len;
    char *good = read_file(entry, &good_len, &(const char *){NULL});
    assert_non_null(good);
    /* an object that defines the kernel's symbol and calls an undefined function */
    snprintf(obj, sizeof obj, "%s/forged.o", dir);
    snprintf(cmd, sizeof cmd,
             "printf 'void ssmc_no_such_function(void);\\nvoid ssmc_tiles(void) { ssmc_no_such_function(); }\\n' "
             "| ${CC:-cc} -x c -c -fPIC -o '%s' - 2>/dev/null", obj);
    size_t forged_len = 0;
    char *forged = system(cmd) == 0 ? read_file(obj, &forged_len, &(const char *){NULL}) : NULL;
    if (!forged) printf("test_kernel_cache_unloadable: no C compiler: the linking case is not run\n");
    remove(obj);
    static const char garbage[] = "checksums fine, but this is no object file";
    for (int round = 0; round < 2; round++) {
        const char *bytes = round ? forged : garbage;
        size_t len = round ? forged_len : sizeof garbage;
        if (!bytes) continue;
        strbuf err = {0};
        assert_int_equal(rt_cache_put(dir, key, bytes, len, &err), SSMC_OK);
        sb_free(&err);
        /* stderr to a file around the compile: the library must print nothing */
        char errpath[600];
        snprintf(errpath, sizeof errpath, "%s/stderr.txt", dir);
        fflush(stderr);
        int saved_fd = dup(2);
        FILE *ef = fopen(errpath, "w");
        assert_non_null(ef);
        dup2(fileno(ef), 2);
        ssmc_options o = {.model = "tiles", .device = SSMC_DEVICE_CPU, .threads = 2};
        ssmc_status s = ssmc_compile(ctx, "test_cpu_codegen.ssm", source, sizeof source - 1, &o, &cpu);
        fflush(stderr);
        dup2(saved_fd, 2);
        close(saved_fd);
        fclose(ef);
        size_t printed = 0;
        char *text = read_file(errpath, &printed, &(const char *){NULL});
        remove(errpath);
        if (s != SSMC_OK) fail_msg("round %d: compile failed: %s", round, ssmc_ctx_error(ctx));
        if (printed) fail_msg("round %d: the library printed: %s", round, text);
        free(text);
        o.device = SSMC_DEVICE_INTERP;
        assert_int_equal(ssmc_compile(ctx, "test_cpu_codegen.ssm", source, sizeof source - 1, &o, &ref), SSMC_OK);
        harness_run r = {.batch = 2, .T = 9, .dtype = SSMC_F32, .random_state = true, .seed = seed0 + 31 + round};
        harness_result res;
        harness_compare(cpu, ref, &r, &res);
        expect("tiles", "after an unloadable cache entry", &r, &res, 1e-5, 2);
        ssmc_model_free(cpu);
        ssmc_model_free(ref);
        /* the entry holds the rebuilt kernel again */
        size_t now_len;
        char *now = read_file(entry, &now_len, &(const char *){NULL});
        assert_non_null(now);
        assert_int_equal(now_len, good_len);
        assert_memory_equal(now, good, good_len);
        free(now);
    }
    free(forged);
    free(good);
    ssmc_ctx_free(ctx);
    if (saved)
        setenv("SSMC_CACHE_DIR", saved, 1);
    else
        unsetenv("SSMC_CACHE_DIR");
    free(saved);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

/* ---- long programs (issue 18, item 3): a chain of `nlets` per-step lets
 * after `ninv` time-invariant ones, reading `ninputs` inputs. Compile time was
 * quadratic in the number of lets: every let's scratch buffer a noalias
 * pointer of its own (inlined, each memory access listed every other one's
 * scope) and every loop nest in one function (LLVM's loop passes walk the
 * whole function from every loop). */
static char *chain_source(int ninv, int nlets, int ninputs)
{
    strbuf sb = {0};
    sb_puts(&sb, "model chain {\n  dim D = 16;\n  input ");
    for (int i = 0; i < ninputs; i++) sb_printf(&sb, "%sx%d[T,D]", i ? ", " : "", i);
    sb_puts(&sb, ";\n  param w[D];\n  output y[T,D];\n");
    for (int i = 0; i < ninv; i++) {
        if (i == 0) sb_puts(&sb, "  let c0[d] = w[d] * 0.5;\n");
        else sb_printf(&sb, "  let c%d[d] = c%d[d] * 0.999 + 0.001;\n", i, i - 1);
    }
    sb_puts(&sb, "  let a0[t,d] = x0[t,d]");
    for (int i = 1; i < ninputs; i++) sb_printf(&sb, " + x%d[t,d]", i);
    if (ninv) sb_printf(&sb, " + c%d[d]", ninv - 1);
    sb_puts(&sb, ";\n");
    for (int i = 1; i < nlets; i++) sb_printf(&sb, "  let a%d[t,d] = a%d[t,d] * 0.999 + 0.001 * x0[t,d];\n", i, i - 1);
    sb_printf(&sb, "  y[t,d] = a%d[t,d];\n}\n", nlets - 1);
    assert_false(sb.failed);
    return sb_take(&sb);
}

/* The longest metadata tuple (`!{!1, !2, ...}`) of an LLVM module's text. */
static int longest_tuple(const char *text)
{
    int best = 0;
    for (const char *at = text; (at = strstr(at, "= !{")); at++) {
        int n = 1;
        for (const char *q = at + 4; *q && *q != '}' && *q != '\n'; q++) n += *q == ',';
        if (n > best) best = n;
    }
    return best;
}

static void compile_source_pair(const char *src, int threads, ssmc_ctx *ctx, ssmc_model **cpu, ssmc_model **ref)
{
    ssmc_options o = {.device = SSMC_DEVICE_CPU, .threads = threads};
    ssmc_status s = ssmc_compile(ctx, "chain.ssm", src, strlen(src), &o, cpu);
    if (s == SSMC_ERR_UNSUPPORTED) skip();
    if (s != SSMC_OK) fail_msg("chain: cpu compile failed: %s", ssmc_ctx_error(ctx));
    o.device = SSMC_DEVICE_INTERP;
    s = ssmc_compile(ctx, "chain.ssm", src, strlen(src), &o, ref);
    if (s != SSMC_OK) fail_msg("chain: interpreter compile failed: %s", ssmc_ctx_error(ctx));
}

/* Each way a long program is laid out gives the interpreter's results: many
 * lets in both phases (the statements in groups of functions of their own, the
 * scratch one pointer), many statements but few pointers (groups only), many
 * inputs (one scratch pointer, no groups); the module of many lets has no
 * metadata list that grows with them. */
static void test_long_programs(void **state)
{
    (void)state;
    static const struct {
        int ninv, nlets, ninputs;
    } shapes[] = {{40, 300, 1}, {0, 20, 1}, {3, 2, 70}};
    uint64_t seed = seed0 + 4242;
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) {
        char *src = chain_source(shapes[i].ninv, shapes[i].nlets, shapes[i].ninputs);
        ssmc_ctx *ctx = ssmc_ctx_new();
        ssmc_model *cpu, *ref;
        compile_source_pair(src, 3, ctx, &cpu, &ref);
        for (int64_t T = 1; T <= 5; T += 4) {
            harness_run r = {.batch = 2, .T = T, .dtype = SSMC_F32, .seed = seed++};
            harness_result res;
            harness_compare(cpu, ref, &r, &res);
            expect("chain", "a long program", &r, &res, 1e-5, 1);
        }
        ssmc_model_free(cpu);
        ssmc_model_free(ref);
        if (i == 0) {
            ssmc_options o = {.threads = 3};
            char *text = NULL;
            assert_int_equal(ssmc_emit(ctx, "chain.ssm", src, strlen(src), &o, SSMC_EMIT_LLVM, &text), SSMC_OK);
            assert_non_null(strstr(text, "void @ssmc_chain.items.group"));
            int longest = longest_tuple(text);
            if (longest > 8) fail_msg("a metadata list of %d entries for 340 lets", longest);
            free(text);
        }
        ssmc_ctx_free(ctx);
        free(src);
    }
}

/* 4,000 chained lets compile in seconds (before: 21 s and growing with the
 * square; 10,000 took 244 s and 4.4 GB) and run right. The kernel cache is a
 * fresh directory, so the compile is a real one. CPU time, not wall time: the
 * machine may be shared. */
static void test_many_lets_compile_time(void **state)
{
    (void)state;
    char dir[] = "/tmp/ssmc-cpu-lets-XXXXXX";
    assert_non_null(mkdtemp(dir));
    const char *old = getenv("SSMC_CACHE_DIR");
    char *saved = old ? strdup(old) : NULL;
    setenv("SSMC_CACHE_DIR", dir, 1);
    char *src = chain_source(0, 4000, 1);
    ssmc_ctx *ctx = ssmc_ctx_new();
    ssmc_model *cpu, *ref;
    clock_t c0 = clock();
    compile_source_pair(src, 2, ctx, &cpu, &ref);
    double cpu_s = (double)(clock() - c0) / CLOCKS_PER_SEC;
    printf("test_many_lets_compile_time: 4000 lets compiled in %.2f s of CPU time\n", cpu_s);
    if (cpu_s > 15) fail_msg("4000 lets took %.1f s of CPU time to compile", cpu_s);
    harness_run r = {.batch = 1, .T = 3, .dtype = SSMC_F32, .seed = seed0 + 17};
    harness_result res;
    harness_compare(cpu, ref, &r, &res);
    expect("chain", "4000 lets", &r, &res, 1e-4, 1);
    ssmc_model_free(cpu);
    ssmc_model_free(ref);
    ssmc_ctx_free(ctx);
    free(src);
    if (saved)
        setenv("SSMC_CACHE_DIR", saved, 1);
    else
        unsetenv("SSMC_CACHE_DIR");
    free(saved);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    if (!harness_cpu_available()) return 77; /* no LLVM in this build: skipped */
    seed0 = harness_seed();
    printf("test_cpu_codegen: SSMC_TEST_SEED=%" PRIu64 "\n", seed0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_models),
        cmocka_unit_test(test_run_paths),
        cmocka_unit_test(test_emit),
        cmocka_unit_test(test_kernel_cache),
        cmocka_unit_test(test_kernel_cache_unloadable),
        cmocka_unit_test(test_scratch_pages),
        cmocka_unit_test(test_verify_tolerance),
        cmocka_unit_test(test_long_programs),
        cmocka_unit_test(test_many_lets_compile_time),
    };
    return cmocka_run_group_tests_name("cpu codegen", tests, NULL, NULL);
}
