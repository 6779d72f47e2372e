/* test_cpu_math.c: the CPU backend's math functions element by element.
 *
 * exp, log, log1p and tanh are inline polynomials in the generated code (so
 * that loops calling them vectorise), and sigmoid, softplus and silu are built
 * on them. One model applies each function to every element of an input of
 * about 40000 f32 values: magnitudes spread log-uniformly from 1e-40 to 1e39
 * of both signs, a dense sweep of [-20, 20], and the special values (zeros,
 * infinities, NaN, subnormals, the overflow and underflow edges). Each result
 * is compared with the function evaluated in double on the same f32 input (as
 * the interpreter does) and must be within a few units in the last place of
 * the f32 result (a result below 2^-100: within 2^-140), with infinities and NaN
 * exactly where the reference has them. sin and cos (Cephes' reduction by pi/4)
 * are held to an absolute error instead, 3e-7 for |x| up to 8192 (past it a
 * value in [-1, 1], NaN for infinities and NaN); erf to 8 ulp (its rational
 * approximation reaches 3.3e-7 near +-3.9, 5.6 ulp of a value just below 1).
 * Exits 77 without a CPU backend. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ssmc.h"
#include "tests/unit/helpers/cpu_harness.h"

static const char source[] =
    "model fns {\n"
    "  dim N = 1;\n"
    "  input x[T,N];\n"
    "  output e[T,N], l[T,N], l1[T,N], th[T,N], sg[T,N], sp[T,N], sl[T,N], sq[T,N], rs[T,N], ef[T,N],\n"
    "         sn[T,N], cs[T,N];\n"
    "  e[t,n] = exp(x[t,n]);\n"
    "  l[t,n] = log(x[t,n]);\n"
    "  l1[t,n] = log1p(x[t,n]);\n"
    "  th[t,n] = tanh(x[t,n]);\n"
    "  sg[t,n] = sigmoid(x[t,n]);\n"
    "  sp[t,n] = softplus(x[t,n]);\n"
    "  sl[t,n] = silu(x[t,n]);\n"
    "  sq[t,n] = sqrt(x[t,n]);\n"
    "  rs[t,n] = rsqrt(x[t,n]);\n"
    "  ef[t,n] = erf(x[t,n]);\n"
    "  sn[t,n] = sin(x[t,n]);\n"
    "  cs[t,n] = cos(x[t,n]);\n"
    "}\n";

static double sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }
static double softplus(double x) { return x > 0 ? x + log1p(exp(-x)) : log1p(exp(x)); }
static double silu(double x) { return x * sigmoid(x); }
static double rsqrt(double x) { return 1.0 / sqrt(x); }

typedef struct fn {
    const char *name;
    double (*ref)(double);
    double max_ulp;
    double max_abs; /* > 0: an absolute error bound instead, for |x| <= 8192 */
} fn;

static const fn fns[] = {
    {"e", exp, 2, 0},       {"l", log, 2, 0},   {"l1", log1p, 3, 0}, {"th", tanh, 3, 0},   {"sg", sigmoid, 3, 0},
    {"sp", softplus, 4, 0}, {"sl", silu, 4, 0}, {"sq", sqrt, 1, 0},  {"rs", rsqrt, 2, 0},  {"ef", erf, 8, 0},
    {"sn", sin, 0, 3e-7},   {"cs", cos, 0, 3e-7},
};
#define NFNS (sizeof fns / sizeof *fns)

static uint64_t rng(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Units in the last place of the f32 nearest to v (2^-149 for subnormals). */
static double ulp_of(double v)
{
    double a = fabs(v);
    if (a < FLT_MIN) return ldexp(1.0, -149);
    int e;
    frexp(a, &e);
    return ldexp(1.0, e - 24);
}

static void test_functions(void **state)
{
    (void)state;
    enum { NSPECIAL = 24, NLOG = 30000, NSWEEP = 8001 };
    const int64_t n = NSPECIAL + NLOG + NSWEEP;
    float *x = malloc((size_t)n * sizeof *x);
    assert_non_null(x);
    const float special[NSPECIAL] = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, 1e-45f, -1e-45f, 1e-39f, FLT_MIN,
                                     FLT_MAX, -FLT_MAX, 88.72f, 88.73f, -87.33f, -103.9f, -104.5f, 1.0f, -1.0f,
                                     -0.999999f, 1e-8f, -1e-8f, 0.625f, -0.625f, 9.5f};
    memcpy(x, special, sizeof special);
    uint64_t s = 12345;
    for (int i = 0; i < NLOG; i++) {
        double mag = pow(10.0, -40.0 + 79.0 * (double)(rng(&s) >> 11) * 0x1.0p-53);
        x[NSPECIAL + i] = (float)((rng(&s) & 1) ? mag : -mag);
    }
    for (int i = 0; i < NSWEEP; i++) x[NSPECIAL + NLOG + i] = (float)(-20.0 + 40.0 * i / (NSWEEP - 1));

    ssmc_ctx *ctx = ssmc_ctx_new();
    ssmc_dim dim = {"N", n};
    ssmc_options o = {.dims = &dim, .ndims = 1, .device = SSMC_DEVICE_CPU, .threads = 2};
    ssmc_model *m = NULL;
    ssmc_status st = ssmc_compile(ctx, "fns.ssm", source, sizeof source - 1, &o, &m);
    if (st == SSMC_ERR_UNSUPPORTED) {
        free(x);
        ssmc_ctx_free(ctx);
        skip();
    }
    if (st != SSMC_OK) fail_msg("compile failed: %s", ssmc_ctx_error(ctx));
    float *out[NFNS];
    ssmc_arg args[NFNS + 1];
    args[0] = (ssmc_arg){"x", SSMC_F32, x, 0};
    for (size_t f = 0; f < NFNS; f++) {
        out[f] = malloc((size_t)n * sizeof(float));
        assert_non_null(out[f]);
        for (int64_t i = 0; i < n; i++) out[f][i] = NAN;
        args[f + 1] = (ssmc_arg){fns[f].name, SSMC_F32, out[f], 0};
    }
    if (ssmc_run(m, 1, 1, args, (int)NFNS + 1) != SSMC_OK) fail_msg("run failed: %s", ssmc_ctx_error(ctx));
    for (size_t f = 0; f < NFNS; f++) {
        double worst = 0;
        int64_t at = 0;
        for (int64_t i = 0; i < n; i++) {
            double want = fns[f].ref((double)x[i]), got = out[f][i];
            float wantf = (float)want;
            if (isnan(want) || isinf(wantf)) {
                if (isnan(want) ? !isnan(got) : got != (double)wantf)
                    fail_msg("%s(%.9g): got %.9g, want %.9g", fns[f].name, (double)x[i], got, (double)wantf);
                continue;
            }
            if (!isfinite(got)) fail_msg("%s(%.9g): got %.9g, want %.9g", fns[f].name, (double)x[i], got, want);
            if (fns[f].max_abs > 0) {
                double err = fabs(got - want);
                if (fabs(x[i]) > 8192 ? fabs(got) > 1 : err > fns[f].max_abs)
                    fail_msg("%s(%.9g): got %.9g, want %.9g (error %.3g, at most %.1g)", fns[f].name, (double)x[i], got,
                             want, err, fns[f].max_abs);
                if (fabs(x[i]) <= 8192 && err / fns[f].max_abs > worst) worst = err / fns[f].max_abs, at = i;
                continue;
            }
            /* a result below 2^-100 need only be within 2^-140: composites go
             * through subnormal intermediates there (silu(-91) multiplies by
             * exp(-91), a subnormal with a few significant bits) */
            if (fabs(want) < 0x1p-100 && fabs(got - want) <= 0x1p-140) continue;
            double u = fabs(got - want) / ulp_of(want);
            if (u > worst) worst = u, at = i;
        }
        printf("  %-3s worst %.2f %s at x = %.9g\n", fns[f].name, worst, fns[f].max_abs > 0 ? "of the bound" : "ulp",
               (double)x[at]);
        if (fns[f].max_abs == 0 && worst > fns[f].max_ulp)
            fail_msg("%s: %.2f ulp at x = %.9g (got %.9g, want %.9g); at most %.0f allowed", fns[f].name, worst,
                     (double)x[at], (double)out[f][at], fns[f].ref((double)x[at]), fns[f].max_ulp);
        free(out[f]);
    }
    free(x);
    ssmc_model_free(m);
    ssmc_ctx_free(ctx);
}

int main(void)
{
    if (!harness_cpu_available()) return 77; /* no LLVM in this build: skipped */
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_functions)};
    return cmocka_run_group_tests_name("cpu math", tests, NULL, NULL);
}
