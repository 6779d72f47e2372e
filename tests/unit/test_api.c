/* test_api.c: the public API around running a model on the interpreter.
 *
 * Introspection: tensor count (lets excluded), roles, per-step flags and
 * shapes after -D, lookup by name. ssmc_run argument errors: an unknown name
 * (or a let's), a tensor given twice, a missing input or param, batch or T
 * below 1, NULL data, a NULL name, an unknown dtype: each SSMC_ERR_ARG with a
 * message naming the problem, and outputs left untouched. Dtypes: the same run
 * with every tensor in f64, f32, f16 and bf16 (and mixed per tensor) agrees
 * with the f64 run to the rounding of each dtype, inputs chosen exactly
 * representable in all of them so that only the results' rounding differs.
 * Final states come back, states not given start at zero, batches are
 * independent. check_finite: a NaN or Inf in an input, a param or an initial
 * state gives SSMC_ERR_NUMERIC before running, a non-finite result after.
 * Every public function with NULL pointers and out-of-range counts and enums:
 * SSMC_ERR_ARG or its documented neutral value, never a crash; a source past
 * SSMC_MAX_SOURCE_BYTES. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ssmc.h"
#include "support/dtype.h"
#include "support/support.h"

static const char *src = "model d {\n"
                         "  dim N = 3, K = 2;\n"
                         "  input x[T,N], g[T];\n"
                         "  param w[N,K], b;\n"
                         "  state S[N,K];\n"
                         "  output y[T,K], z[T,N];\n"
                         "  let a[t] = sigmoid(g[t]);\n"
                         "  S[n,k] = a[t] * S[n,k] + x[t,n] * w[n,k];\n"
                         "  y[t,k] = sum(n: S[n,k]) + b;\n"
                         "  z[t,n] = log(x[t,n] + 2) * b;\n"
                         "}\n";

#define B 2
#define TT 5
enum { X, G, W, BIAS, S, Y, Z, NT };
static const char *names[NT] = {"x", "g", "w", "b", "S", "y", "z"};
static const size_t counts[NT] = {B * TT * 3, B * TT, 3 * 2, 1, B * 3 * 2, B * TT * 2, B * TT * 3};

static ssmc_model *compile(ssmc_ctx *ctx, const ssmc_options *o)
{
    ssmc_model *m = NULL;
    if (ssmc_compile(ctx, "d.ssm", src, strlen(src), o, &m) != SSMC_OK) fail_msg("%s", ssmc_ctx_error(ctx));
    return m;
}

/* ---- values in any dtype ---- */

/* unit roundoff of each dtype (round to nearest) */
static double roundoff(ssmc_dtype dt)
{
    return dt == SSMC_F64 ? 0x1p-53 : dt == SSMC_F32 ? 0x1p-24 : dt == SSMC_F16 ? 0x1p-11 : 0x1p-8;
}

/* splitmix64; values k/32 with |k| <= 32: exact in bf16, f16, f32 and f64 */
static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static double exact_value(uint64_t *s) { return (double)((int)(rng_next(s) % 65) - 32) / 32.0; }

typedef struct run_set {
    ssmc_dtype dt[NT];
    void *data[NT];
    ssmc_arg args[NT];
} run_set;

/* Tensors in the given dtypes holding the values of ref (f64); outputs poisoned. */
static void make_set(run_set *r, const ssmc_dtype *dt, double *const *ref)
{
    for (int i = 0; i < NT; i++) {
        r->dt[i] = dt[i];
        r->data[i] = malloc(counts[i] * dtype_size(dt[i]));
        assert_non_null(r->data[i]);
        for (size_t k = 0; k < counts[i]; k++) dtype_set(r->data[i], dt[i], k, i >= Y ? NAN : ref[i][k]);
        r->args[i] = (ssmc_arg){names[i], dt[i], r->data[i], 0};
    }
}

static void free_set(run_set *r)
{
    for (int i = 0; i < NT; i++) free(r->data[i]);
}

static void fill_inputs(double **ref, uint64_t seed)
{
    for (int i = 0; i < NT; i++)
        for (size_t k = 0; k < counts[i]; k++) ref[i][k] = i >= Y ? NAN : exact_value(&seed);
}

static void test_dtypes_agree(void **state)
{
    (void)state;
    ssmc_ctx *ctx = ssmc_ctx_new();
    ssmc_model *m = compile(ctx, NULL);
    double *ref[NT];
    for (int i = 0; i < NT; i++) ref[i] = malloc(counts[i] * sizeof(double));
    fill_inputs(ref, 12345);
    double *inputs[NT];
    for (int i = 0; i < NT; i++) {
        inputs[i] = malloc(counts[i] * sizeof(double));
        memcpy(inputs[i], ref[i], counts[i] * sizeof(double));
    }
    /* the f64 run is the reference */
    ssmc_arg args[NT];
    for (int i = 0; i < NT; i++) args[i] = (ssmc_arg){names[i], SSMC_F64, ref[i], 0};
    assert_int_equal(ssmc_run(m, B, TT, args, NT), SSMC_OK);
    double maxref = 0;
    for (int i = Y; i < NT; i++)
        for (size_t k = 0; k < counts[i]; k++) {
            if (!isfinite(ref[i][k])) fail_msg("%s[%zu] = %g in the f64 run", names[i], k, ref[i][k]);
            maxref = fmax(maxref, fabs(ref[i][k]));
        }
    assert_true(maxref > 0.1); /* not all zeros */

    static const ssmc_dtype uniform_dt[] = {SSMC_F64, SSMC_F32, SSMC_F16, SSMC_BF16};
    ssmc_dtype mixed[NT] = {SSMC_F16, SSMC_BF16, SSMC_F64, SSMC_F32, SSMC_F16, SSMC_BF16, SSMC_F32};
    for (int c = 0; c < 5; c++) {
        ssmc_dtype dt[NT];
        for (int i = 0; i < NT; i++) dt[i] = c < 4 ? uniform_dt[c] : mixed[i];
        run_set r;
        make_set(&r, dt, inputs);
        /* the initial state (in S) is an input here too: exact in every dtype */
        assert_int_equal(ssmc_run(m, B, TT, r.args, NT), SSMC_OK);
        for (int i = S; i < NT; i++) {
            for (size_t k = 0; k < counts[i]; k++) {
                double got = dtype_get(r.data[i], dt[i], k), want = ref[i][k];
                /* the interpreter computes in f64 and rounds once into the tensor's dtype */
                double tol = roundoff(dt[i]) * fabs(want) + (dt[i] == SSMC_F16 ? 0x1p-25 : 0);
                if (!(fabs(got - want) <= tol))
                    fail_msg("case %d: %s[%zu] = %.9g in dtype %d, f64 gives %.9g (tol %.3g)", c, names[i], k, got,
                             (int)dt[i], want, tol);
            }
        }
        free_set(&r);
    }
    for (int i = 0; i < NT; i++) {
        free(ref[i]);
        free(inputs[i]);
    }
    ssmc_model_free(m);
    ssmc_ctx_free(ctx);
}

/* y at step 0 is sum over n of x[0,n] * w[n,k] + b when S starts at zero; the
 * final state comes back only when S is given. Batches do not mix. */
static void test_states_and_batches(void **state)
{
    (void)state;
    ssmc_ctx *ctx = ssmc_ctx_new();
    ssmc_model *m = compile(ctx, NULL);
    double x[B * 1 * 3] = {1, 2, 3, -1, 0.5, 0}, g[B] = {0, 0}, w[6] = {1, 0, 0, 1, 1, -1}, b = 0.25;
    double y[B * 2], z[B * 3];
    ssmc_arg args[] = {{"x", SSMC_F64, x, 0}, {"g", SSMC_F64, g, 0}, {"w", SSMC_F64, w, 0},
                       {"b", SSMC_F64, &b, 0}, {"y", SSMC_F64, y, 0}, {"z", SSMC_F64, z, 0}};
    for (int i = 0; i < B * 2; i++) y[i] = NAN;
    assert_int_equal(ssmc_run(m, B, 1, args, 6), SSMC_OK);
    /* batch 0: S[n,k] = x[n] w[n,k]: y[k] = (1*1 + 2*0 + 3*1, 1*0 + 2*1 + 3*-1) + b */
    assert_true(y[0] == 4.25 && y[1] == -0.75);
    /* batch 1: (-1*1 + 0.5*0 + 0, -1*0 + 0.5*1 - 0) + b */
    assert_true(y[2] == -0.75 && y[3] == 0.75);
    assert_true(fabs(z[1] - log(4.0) * 0.25) < 1e-15);

    /* with an initial state: a = sigmoid(0) = 0.5 halves it before adding */
    double s[B * 6];
    for (int i = 0; i < B * 6; i++) s[i] = i;
    ssmc_arg with_state[7];
    memcpy(with_state, args, sizeof args);
    with_state[6] = (ssmc_arg){"S", SSMC_F64, s, 0};
    assert_int_equal(ssmc_run(m, B, 1, with_state, 7), SSMC_OK);
    /* batch 1, n = 2, k = 1: 0.5 * 11 + x[1,2] * w[2,1] = 5.5 + 0 */
    assert_true(s[11] == 5.5);
    /* batch 0, n = 0, k = 0: 0.5 * 0 + 1 * 1 */
    assert_true(s[0] == 1);
    /* y of batch 0: sum over n of S[n,0] = (1) + (0.5*2 + 0) + (0.5*4 + 3) + b */
    assert_true(y[0] == 1 + 1 + 5 + 0.25);
    ssmc_model_free(m);
    ssmc_ctx_free(ctx);
}

static void test_introspection(void **state)
{
    (void)state;
    ssmc_ctx *ctx = ssmc_ctx_new();
    ssmc_dim over[] = {{"N", 5}};
    ssmc_options o = {.dims = over, .ndims = 1};
    ssmc_model *m = compile(ctx, &o);
    assert_string_equal(ssmc_model_name(m), "d");
    assert_int_equal(ssmc_model_num_tensors(m), NT); /* the let is not public */
    static const struct {
        const char *name;
        ssmc_role role;
        int per_step, rank;
        int64_t shape[2];
    } want[NT] = {
        {"x", SSMC_INPUT, 1, 1, {5}},      {"g", SSMC_INPUT, 1, 0, {0}},  {"w", SSMC_PARAM, 0, 2, {5, 2}},
        {"b", SSMC_PARAM, 0, 0, {0}},      {"S", SSMC_STATE, 0, 2, {5, 2}}, {"y", SSMC_OUTPUT, 1, 1, {2}},
        {"z", SSMC_OUTPUT, 1, 1, {5}},
    };
    for (int i = 0; i < NT; i++) {
        ssmc_tensor_info info;
        int k = ssmc_model_find(m, want[i].name);
        assert_true(k >= 0);
        assert_int_equal(ssmc_model_tensor(m, k, &info), SSMC_OK);
        assert_string_equal(info.name, want[i].name);
        assert_int_equal(info.role, want[i].role);
        assert_int_equal(info.per_step, want[i].per_step);
        assert_int_equal(info.rank, want[i].rank);
        for (int j = 0; j < info.rank; j++) assert_int_equal(info.shape[j], want[i].shape[j]);
    }
    ssmc_tensor_info info;
    assert_int_equal(ssmc_model_tensor(m, NT, &info), SSMC_ERR_ARG);
    assert_int_equal(ssmc_model_tensor(m, -1, &info), SSMC_ERR_ARG);
    assert_int_equal(ssmc_model_find(m, "a"), -1); /* a let */
    assert_int_equal(ssmc_model_find(m, "nope"), -1);
    assert_int_equal(ssmc_model_find(m, "N"), -1); /* a dim */
    ssmc_model_free(m);
    ssmc_ctx_free(ctx);
}

/* ---- argument errors ---- */

typedef struct arg_fixture {
    ssmc_ctx *ctx;
    ssmc_model *m;
    double x[B * TT * 3], g[B * TT], w[6], b, s[B * 6], y[B * TT * 2], z[B * TT * 3];
    ssmc_arg args[NT];
} arg_fixture;

static arg_fixture *fixture(void)
{
    arg_fixture *f = calloc(1, sizeof *f);
    f->ctx = ssmc_ctx_new();
    f->m = compile(f->ctx, NULL);
    void *data[NT] = {f->x, f->g, f->w, &f->b, f->s, f->y, f->z};
    for (int i = 0; i < NT; i++) f->args[i] = (ssmc_arg){names[i], SSMC_F64, data[i], 0};
    for (size_t k = 0; k < counts[Y]; k++) f->y[k] = 12345;
    return f;
}

static void fixture_free(arg_fixture *f)
{
    ssmc_model_free(f->m);
    ssmc_ctx_free(f->ctx);
    free(f);
}

static void expect_arg_error(arg_fixture *f, int64_t batch, int64_t T, const ssmc_arg *args, int n, const char *want)
{
    ssmc_status s = ssmc_run(f->m, batch, T, args, n);
    if (s != SSMC_ERR_ARG) fail_msg("status %s, expected bad argument (%s)", ssmc_status_name(s), want);
    const char *msg = ssmc_ctx_error(f->ctx);
    if (strncmp(msg, "error: ", 7) != 0 || !strstr(msg, want)) fail_msg("got '%s', expected '%s'", msg, want);
    /* nothing ran: the output is untouched */
    for (size_t k = 0; k < counts[Y]; k++) assert_true(f->y[k] == 12345);
}

static void test_run_argument_errors(void **state)
{
    (void)state;
    arg_fixture *f = fixture();
    ssmc_arg a[NT + 1];

    memcpy(a, f->args, sizeof f->args);
    a[NT] = (ssmc_arg){"q", SSMC_F64, f->x, 0};
    expect_arg_error(f, B, TT, a, NT + 1, "model 'd' has no input, param, state or output named 'q'");
    a[NT] = (ssmc_arg){"a", SSMC_F64, f->x, 0};
    expect_arg_error(f, B, TT, a, NT + 1, "no input, param, state or output named 'a'");
    a[NT] = (ssmc_arg){"N", SSMC_F64, f->x, 0};
    expect_arg_error(f, B, TT, a, NT + 1, "named 'N'");
    a[NT] = (ssmc_arg){NULL, SSMC_F64, f->x, 0};
    expect_arg_error(f, B, TT, a, NT + 1, "named '(null)'");
    a[NT] = (ssmc_arg){"w", SSMC_F64, f->w, 0};
    expect_arg_error(f, B, TT, a, NT + 1, "tensor 'w' is given twice");

    memcpy(a, f->args, sizeof f->args);
    a[X].data = NULL;
    expect_arg_error(f, B, TT, a, NT, "tensor 'x' has no data");
    memcpy(a, f->args, sizeof f->args);
    a[Y].data = NULL;
    expect_arg_error(f, B, TT, a, NT, "tensor 'y' has no data");
    memcpy(a, f->args, sizeof f->args);
    a[G].dtype = (ssmc_dtype)17;
    expect_arg_error(f, B, TT, a, NT, "tensor 'g' has an unknown dtype");

    /* missing tensors: x (first in the list), then a param */
    expect_arg_error(f, B, TT, f->args + 1, NT - 1, "missing input 'x'");
    memcpy(a, f->args, sizeof f->args);
    a[BIAS] = a[NT - 1];
    expect_arg_error(f, B, TT, a, NT - 1, "missing param 'b'");
    expect_arg_error(f, B, TT, NULL, 0, "missing input 'x'");

    expect_arg_error(f, 0, TT, f->args, NT, "batch and T must be at least 1 (got batch 0, T 5)");
    expect_arg_error(f, -3, TT, f->args, NT, "batch and T must be at least 1 (got batch -3, T 5)");
    expect_arg_error(f, B, 0, f->args, NT, "batch and T must be at least 1 (got batch 2, T 0)");
    expect_arg_error(f, INT64_MAX, INT64_MAX, f->args, NT, "too many elements");

    /* after all that, a good call runs, and clears the message */
    assert_int_equal(ssmc_run(f->m, B, TT, f->args, NT), SSMC_OK);
    assert_string_equal(ssmc_ctx_error(f->ctx), "");
    /* the state and outputs are optional */
    assert_int_equal(ssmc_run(f->m, B, TT, f->args, BIAS + 1), SSMC_OK);
    fixture_free(f);
}

static void test_check_finite(void **state)
{
    (void)state;
    ssmc_ctx *ctx = ssmc_ctx_new();
    ssmc_options o = {.check_finite = 1};
    ssmc_model *m = compile(ctx, &o);
    ssmc_model *plain = compile(ctx, NULL);
    double *ref[NT];
    for (int i = 0; i < NT; i++) ref[i] = malloc(counts[i] * sizeof(double));
    static const ssmc_dtype dts[] = {SSMC_F64, SSMC_F32, SSMC_F16, SSMC_BF16};
    static const struct {
        int tensor;
        size_t index;
        double value;
        const char *want;
    } cases[] = {
        {X, 4, NAN, "input 'x' holds a non-finite value (nan) at flat index 4"},
        {G, 0, INFINITY, "input 'g' holds a non-finite value (inf) at flat index 0"},
        {W, 5, -INFINITY, "param 'w' holds a non-finite value (-inf) at flat index 5"},
        {BIAS, 0, NAN, "param 'b' holds a non-finite value"},
        {S, 11, NAN, "state 'S' holds a non-finite value (nan) at flat index 11"},
    };
    for (size_t d = 0; d < 4; d++) {
        for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
            fill_inputs(ref, 99);
            ref[cases[c].tensor][cases[c].index] = cases[c].value;
            ssmc_dtype dt[NT];
            for (int i = 0; i < NT; i++) dt[i] = dts[d];
            run_set r;
            make_set(&r, dt, ref);
            for (size_t k = 0; k < counts[Y]; k++) dtype_set(r.data[Y], dt[Y], k, 7);
            assert_int_equal(ssmc_run(m, B, TT, r.args, NT), SSMC_ERR_NUMERIC);
            const char *msg = ssmc_ctx_error(ctx);
            if (!strstr(msg, cases[c].want)) fail_msg("dtype %zu: got '%s', expected '%s'", d, msg, cases[c].want);
            assert_null(strstr(msg, "after the run"));
            for (size_t k = 0; k < counts[Y]; k++) assert_true(dtype_get(r.data[Y], dt[Y], k) == 7); /* did not run */
            /* without the option the run goes ahead */
            assert_int_equal(ssmc_run(plain, B, TT, r.args, NT), SSMC_OK);
            free_set(&r);
        }
    }
    /* finite inputs, non-finite result: log(x + 2) of x = -2 */
    fill_inputs(ref, 5);
    ref[X][3] = -2;
    ref[BIAS][0] = 0.5;
    ssmc_dtype dt[NT];
    for (int i = 0; i < NT; i++) dt[i] = SSMC_F32;
    run_set r;
    make_set(&r, dt, ref);
    assert_int_equal(ssmc_run(m, B, TT, r.args, NT), SSMC_ERR_NUMERIC);
    const char *msg = ssmc_ctx_error(ctx);
    if (!strstr(msg, "output 'z' holds a non-finite value (-inf) at flat index 3 after the run"))
        fail_msg("got '%s'", msg);
    assert_int_equal(ssmc_run(plain, B, TT, r.args, NT), SSMC_OK);
    assert_true(isinf(dtype_get(r.data[Z], SSMC_F32, 3)));
    /* and a clean run passes the check */
    ref[X][3] = 0.5;
    free_set(&r);
    make_set(&r, dt, ref);
    assert_int_equal(ssmc_run(m, B, TT, r.args, NT), SSMC_OK);
    free_set(&r);
    for (int i = 0; i < NT; i++) free(ref[i]);
    ssmc_model_free(plain);
    ssmc_model_free(m);
    ssmc_ctx_free(ctx);
}

/* The status was `want` and the context's message holds `msg` (NULL: no check). */
static void expect_status(ssmc_ctx *ctx, ssmc_status got, ssmc_status want, const char *msg)
{
    if (got != want)
        fail_msg("status %s, expected %s (%s)", ssmc_status_name(got), ssmc_status_name(want), ssmc_ctx_error(ctx));
    if (msg && !strstr(ssmc_ctx_error(ctx), msg)) fail_msg("message '%s' lacks '%s'", ssmc_ctx_error(ctx), msg);
}

/* Every public function given NULL where it takes a pointer, or a count or an
 * enum out of range: SSMC_ERR_ARG, with a message where there is a context
 * to hold one, or the documented neutral value; never a crash. */
static void test_bad_pointers_and_values(void **state)
{
    (void)state;
    ssmc_ctx *ctx = ssmc_ctx_new();
    ssmc_model *m = compile(ctx, NULL), *out = (ssmc_model *)1;
    size_t len = strlen(src);
    char *text = (char *)1;

    /* contexts */
    assert_string_equal(ssmc_ctx_error(NULL), "");
    ssmc_ctx_set_diag_callback(NULL, NULL, NULL);
    ssmc_ctx_free(NULL);
    ssmc_model_free(NULL);

    /* compiling, checking, emitting, building */
    assert_int_equal(ssmc_compile(NULL, "d.ssm", src, len, NULL, &out), SSMC_ERR_ARG);
    assert_null(out);
    expect_status(ctx, ssmc_compile(ctx, "d.ssm", src, len, NULL, NULL), SSMC_ERR_ARG, "out is NULL");
    out = (ssmc_model *)1;
    expect_status(ctx, ssmc_compile(ctx, "d.ssm", NULL, 10, NULL, &out), SSMC_ERR_ARG, "source is NULL");
    assert_null(out);
    /* no text at all is a file without a model; a NULL file name reads <input> */
    expect_status(ctx, ssmc_compile(ctx, NULL, NULL, 0, NULL, &out), SSMC_ERR_SOURCE, "<input>:1:1: error:");
    static const ssmc_dim nameless[] = {{NULL, 3}};
    static const struct {
        ssmc_options o;
        const char *msg;
    } bad[] = {
        {{.ndims = 2}, "dims is NULL but ndims is 2"},
        {{.dims = nameless, .ndims = 1}, "dim 0 has no name"},
        {{.dims = nameless, .ndims = -1}, "ndims is -1"},
        {{.device = (ssmc_device)99}, "unknown device 99"},
        {{.device = (ssmc_device)-1}, "unknown device -1"},
        {{.algo = (ssmc_algo)42}, "unknown algorithm 42"},
        {{.threads = -2}, "threads is -2"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        out = (ssmc_model *)1;
        expect_status(ctx, ssmc_compile(ctx, "d.ssm", src, len, &bad[i].o, &out), SSMC_ERR_ARG, bad[i].msg);
        assert_null(out);
        expect_status(ctx, ssmc_check(ctx, "d.ssm", src, len, &bad[i].o), SSMC_ERR_ARG, bad[i].msg);
        expect_status(ctx, ssmc_emit(ctx, "d.ssm", src, len, &bad[i].o, SSMC_EMIT_IR, &text), SSMC_ERR_ARG, bad[i].msg);
        assert_null(text);
        expect_status(ctx, ssmc_build(ctx, "d.ssm", src, len, &bad[i].o, NULL, NULL, "/nonexistent/never"), SSMC_ERR_ARG,
                      bad[i].msg);
    }
    assert_int_equal(ssmc_check(NULL, "d.ssm", src, len, NULL), SSMC_ERR_ARG);
    expect_status(ctx, ssmc_check(ctx, "d.ssm", NULL, 1, NULL), SSMC_ERR_ARG, "source is NULL");
    assert_int_equal(ssmc_emit(NULL, "d.ssm", src, len, NULL, SSMC_EMIT_IR, &text), SSMC_ERR_ARG);
    expect_status(ctx, ssmc_emit(ctx, "d.ssm", src, len, NULL, SSMC_EMIT_IR, NULL), SSMC_ERR_ARG, "text is NULL");
    expect_status(ctx, ssmc_emit(ctx, "d.ssm", NULL, 5, NULL, SSMC_EMIT_IR, &text), SSMC_ERR_ARG, "source is NULL");
    expect_status(ctx, ssmc_emit(ctx, "d.ssm", src, len, NULL, (ssmc_emit_kind)77, &text), SSMC_ERR_ARG,
                  "unknown emit kind 77");
    assert_int_equal(ssmc_build(NULL, "d.ssm", src, len, NULL, NULL, NULL, "/tmp"), SSMC_ERR_ARG);
    expect_status(ctx, ssmc_build(ctx, "d.ssm", NULL, 3, NULL, NULL, NULL, "/tmp"), SSMC_ERR_ARG, "source is NULL");
    expect_status(ctx, ssmc_build(ctx, "d.ssm", src, len, NULL, NULL, NULL, NULL), SSMC_ERR_ARG, "no output directory");

    /* introspection */
    assert_string_equal(ssmc_model_name(NULL), "");
    assert_int_equal(ssmc_model_num_tensors(NULL), 0);
    ssmc_tensor_info info;
    assert_int_equal(ssmc_model_tensor(NULL, 0, &info), SSMC_ERR_ARG);
    assert_int_equal(ssmc_model_tensor(m, 0, NULL), SSMC_ERR_ARG);
    assert_int_equal(ssmc_model_find(NULL, "x"), -1);
    assert_int_equal(ssmc_model_find(m, NULL), -1);

    /* running */
    ssmc_arg one = {"x", SSMC_F32, &info, 0};
    assert_int_equal(ssmc_run(NULL, B, TT, &one, 1), SSMC_ERR_ARG);
    assert_int_equal(ssmc_run_device(NULL, B, TT, &one, 1, NULL), SSMC_ERR_ARG);
    expect_status(ctx, ssmc_run(m, B, TT, NULL, 3), SSMC_ERR_ARG, "args is NULL but nargs is 3");
    expect_status(ctx, ssmc_run(m, B, TT, &one, -1), SSMC_ERR_ARG, "nargs is -1");
    expect_status(ctx, ssmc_run_device(m, B, TT, NULL, 2, NULL), SSMC_ERR_ARG, "args is NULL but nargs is 2");
    ssmc_model_free(m);
    ssmc_ctx_free(ctx);
}

/* A source past SSMC_MAX_SOURCE_BYTES is refused before it is read. */
static void test_source_limit(void **state)
{
    (void)state;
    size_t n = SSMC_MAX_SOURCE_BYTES + 1;
    char *big = malloc(n);
    assert_non_null(big);
    memset(big, ' ', n);
    ssmc_ctx *ctx = ssmc_ctx_new();
    ssmc_model *m = NULL;
    expect_status(ctx, ssmc_compile(ctx, "big.ssm", big, n, NULL, &m), SSMC_ERR_SOURCE, "more than the limit");
    expect_status(ctx, ssmc_check(ctx, "big.ssm", big, n, NULL), SSMC_ERR_SOURCE, "big.ssm: the source is");
    free(big);
    ssmc_ctx_free(ctx);
}

/* ssmc_model_tolerance on models whose rounding length is known by hand
 * (docs/numerics.md): a 1,000-term sum, a function of an input, an undamped
 * running sum over T steps; f16 and bf16 floors; bad arguments. */
static void near(double got, double want, double eps)
{
    if (!(fabs(got - want) <= eps)) fail_msg("got %.9g, expected %.9g", got, want);
}

static void test_tolerance(void **state)
{
    (void)state;
    const double u = 0x1p-24;
    const char *text = "model tol {\n"
                       "  dim I = 1000;\n"
                       "  input x[T,I], g[T];\n"
                       "  state s;\n"
                       "  output y[T], z[T], m[T];\n"
                       "  y[t] = sum(i: x[t,i]);\n"  /* 1000 */
                       "  z[t] = exp(g[t]) * g[t];\n" /* 4 + 1 */
                       "  s = s + g[t];\n"            /* identity: 1 + 2 sqrt(T), twice */
                       "  m[t] = max(i: abs(x[t,i])) + s;\n"
                       "}\n";
    ssmc_ctx *ctx = ssmc_ctx_new();
    ssmc_model *m = NULL;
    assert_int_equal(ssmc_compile(ctx, "tol.ssm", text, strlen(text), NULL, &m), SSMC_OK);
    int y = ssmc_model_find(m, "y"), z = ssmc_model_find(m, "z"), st = ssmc_model_find(m, "s"),
        mx = ssmc_model_find(m, "m");
    double s_len = (1 + 2 * 10.0) + 1 + 2 * 10.0; /* T = 100 */
    near(ssmc_model_tolerance(m, y, SSMC_F32, 100), 1e-5 + 4 * u * 1000, 1e-12);
    near(ssmc_model_tolerance(m, z, SSMC_F32, 100), 1e-5 + 4 * u * 5, 1e-12);
    near(ssmc_model_tolerance(m, st, SSMC_F32, 100), 1e-5 + 4 * u * s_len, 1e-12);
    near(ssmc_model_tolerance(m, mx, SSMC_F32, 100), 1e-5 + 4 * u * (s_len + 1), 1e-12);
    near(ssmc_model_tolerance(m, z, SSMC_F16, 100), 1e-2 + 4 * u * 5, 1e-12);
    near(ssmc_model_tolerance(m, z, SSMC_BF16, 100), 2e-2 + 4 * u * 5, 1e-12);
    /* only what depends on time grows with it */
    assert_true(ssmc_model_tolerance(m, st, SSMC_F32, 10000) > ssmc_model_tolerance(m, st, SSMC_F32, 100));
    near(ssmc_model_tolerance(m, y, SSMC_F32, 10000), ssmc_model_tolerance(m, y, SSMC_F32, 1), 0);
    assert_true(ssmc_model_tolerance(NULL, y, SSMC_F32, 1) < 0);
    assert_true(ssmc_model_tolerance(m, ssmc_model_find(m, "x"), SSMC_F32, 1) < 0); /* an input */
    assert_true(ssmc_model_tolerance(m, 99, SSMC_F32, 1) < 0);
    assert_true(ssmc_model_tolerance(m, y, (ssmc_dtype)9, 1) < 0);
    assert_true(ssmc_model_tolerance(m, y, SSMC_F32, 0) < 0);
    ssmc_model_free(m);
    ssmc_ctx_free(ctx);
}

static void test_status_names(void **state)
{
    (void)state;
    assert_string_equal(ssmc_status_name(SSMC_OK), "ok");
    assert_string_equal(ssmc_status_name(SSMC_ERR_NUMERIC), "non-finite value");
    assert_string_equal(ssmc_status_name((ssmc_status)99), "unknown status");
    assert_string_equal(ssmc_status_name((ssmc_status)-1), "unknown status");
}

/* SSMC_ARG_FINAL_ONLY: a state only written, starting from the model's init;
 * the flag on anything else, or unknown flags, are refused. */
static void test_final_only(void **state)
{
    (void)state;
    static const char text[] = "model f { dim N = 2; input x[T,N]; param p[N]; state S[N]; output y[T,N];\n"
                               "  init S[n] = p[n] + 10 * n; S[n] = S[n] + x[t,n]; y[t,n] = S[n]; }";
    ssmc_ctx *ctx = ssmc_ctx_new();
    ssmc_options o = {.device = SSMC_DEVICE_INTERP};
    ssmc_model *m = NULL;
    assert_int_equal(ssmc_compile(ctx, "f.ssm", text, sizeof text - 1, &o, &m), SSMC_OK);
    double x[2 * 3 * 2] = {1, 2, 3, 4, 5, 6, -1, -2, -3, -4, -5, -6}, p[2] = {0.5, -0.5}, y[2 * 3 * 2], S[2 * 2];
    for (int i = 0; i < 4; i++) S[i] = NAN; /* never read */
    ssmc_arg args[] = {{"x", SSMC_F64, x, 0}, {"p", SSMC_F64, p, 0}, {"y", SSMC_F64, y, 0},
                       {"S", SSMC_F64, S, SSMC_ARG_FINAL_ONLY}};
    assert_int_equal(ssmc_run(m, 2, 3, args, 4), SSMC_OK);
    /* S starts at (0.5, 9.5) in both sequences */
    static const double want_s[] = {0.5 + 9, 9.5 + 12, 0.5 - 9, 9.5 - 12};
    for (int i = 0; i < 4; i++) assert_true(S[i] == want_s[i]);
    assert_true(y[0] == 1.5 && y[1] == 11.5);
    args[0].flags = SSMC_ARG_FINAL_ONLY;
    assert_int_equal(ssmc_run(m, 2, 3, args, 4), SSMC_ERR_ARG);
    assert_non_null(strstr(ssmc_ctx_error(ctx), "SSMC_ARG_FINAL_ONLY is for states"));
    args[0].flags = 0;
    args[3].flags = 6;
    assert_int_equal(ssmc_run(m, 2, 3, args, 4), SSMC_ERR_ARG);
    assert_non_null(strstr(ssmc_ctx_error(ctx), "flags 0x6 are not known"));
    ssmc_model_free(m);
    ssmc_ctx_free(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_introspection),       cmocka_unit_test(test_run_argument_errors),
        cmocka_unit_test(test_dtypes_agree),        cmocka_unit_test(test_states_and_batches),
        cmocka_unit_test(test_check_finite),        cmocka_unit_test(test_status_names),
        cmocka_unit_test(test_final_only),
        cmocka_unit_test(test_bad_pointers_and_values), cmocka_unit_test(test_source_limit),
        cmocka_unit_test(test_tolerance),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
