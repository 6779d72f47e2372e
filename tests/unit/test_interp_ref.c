/* test_interp_ref.c: the f64 interpreter against hand-written references.
 *
 * For every example that tests/ref/ref_models.c covers: compile
 * examples/<model>.ssm for the interpreter with small odd dims, draw fresh random
 * inputs and params (gates and steps in ranges where nothing overflows), run the
 * interpreter in f64 and the reference on copies, from a zero and from a random
 * initial state (and, for a model with an init, from none: the init's value),
 * for T = 7 and T = 1, and require every output and every final state to agree
 * to 1e-12 relative to the largest reference value. Outputs are poisoned with
 * NaN before each run, and a NaN anywhere fails.
 *
 * The seed comes from the clock; SSMC_TEST_SEED=<n> repeats a run. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ssmc.h"
#include "tests/ref/ref_models.h"

#define TOLERANCE 1e-12
#define BATCH 2
#define MAX_CASE_DIMS 8
#define MAX_CASE_RANGES 8

/* Values of a tensor are drawn uniformly from [lo, hi]; tensors not listed
 * (initial states included) use [-1, 1]. */
typedef struct tensor_range {
    const char *name;
    double lo, hi;
} tensor_range;

typedef struct ref_case {
    const char *model;
    ssmc_dim dims[MAX_CASE_DIMS]; /* every dim of the model, ends at a NULL name */
    tensor_range ranges[MAX_CASE_RANGES]; /* ends at a NULL name */
} ref_case;

static const ref_case cases[] = {
    {"mamba2", {{"H", 3}, {"P", 5}, {"N", 7}},
     {{"dt", -3, 1}, {"A_log", -1, 1.5}}},
    {"mamba2_conv", {{"H", 6}, {"P", 5}, {"N", 7}, {"G", 2}, {"R", 3}, {"W", 3}},
     {{"dt", -3, 1}, {"A_log", -1, 1.5}}},
    {"mamba", {{"E", 5}, {"N", 3}},
     {{"dt", -3, 1}, {"A_log", -1, 1.5}}},
    {"gla", {{"H", 3}, {"K", 5}, {"V", 7}},
     {{"gk", -4, 4}}},
    {"deltanet", {{"H", 3}, {"K", 5}, {"V", 7}},
     {{"b", -3, 3}}},
    {"gated_deltanet", {{"H", 3}, {"K", 5}, {"V", 7}},
     {{"a", -3, 3}, {"b", -3, 3}, {"A_log", -1, 1.5}}},
    {"rwkv6", {{"H", 3}, {"K", 5}, {"V", 7}},
     {{"wlog", -3, 1.5}}},
    {"linear_attn", {{"H", 3}, {"K", 5}, {"V", 7}},
     {{"q", -2, 2}, {"k", -2, 2}, {"z", 0.1, 1}}}, /* z > 0 keeps the normaliser away from 0 */
    {"retnet", {{"H", 3}, {"K", 5}, {"V", 7}},
     {{"scale", 0, 3}}},
    {"lstm", {{"G", 4}, {"E", 5}, {"H", 3}},
     {{"W", -0.7, 0.7}, {"U", -0.7, 0.7}}},
    {"mamba3", {{"H", 3}, {"P", 5}, {"N", 7}, {"R", 2}},
     {{"dt", -3, 1}, {"A_log", -1, 1.5}, {"theta", -3, 3}}},
    {"mom", {{"M", 5}, {"TOPK", 2}, {"E", 3}, {"K", 5}, {"V", 7}},
     {{"Wr", -1, 1}}},
    {"ttt_linear", {{"H", 3}, {"K", 5}, {"V", 7}, {"L", 3}},
     {{"base_lr", 0, 1}}},
};
#define NCASES (sizeof cases / sizeof cases[0])

/* Models with an init: also run without initial states (the init gives them). */
static int has_init(const char *model) { return strcmp(model, "ttt_linear") == 0; }

/* ---- a small generator: splitmix64 ---- */
static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double rng_uniform(uint64_t *s, double lo, double hi)
{
    return lo + (hi - lo) * (double)(rng_next(s) >> 11) * 0x1.0p-53;
}

static uint64_t base_seed(void)
{
    const char *env = getenv("SSMC_TEST_SEED");
    if (env && *env)
        return strtoull(env, NULL, 0);
    return (uint64_t)time(NULL);
}

/* ---- per-test resources, freed by the teardown whether the test passed or not ---- */
typedef struct fixture {
    const ref_case *c;
    uint64_t base_seed; /* SSMC_TEST_SEED that repeats this run */
    uint64_t seed;      /* this model's: base_seed + its index */
    char *source;
    ssmc_ctx *ctx;
    ssmc_model *model;
    int n;
    ssmc_tensor_info *info;
    size_t *count;       /* elements of each tensor */
    double **got, **ref; /* the interpreter's buffers and the reference's copies */
    ssmc_arg *args;
    ref_tensor *rt;
} fixture;

static fixture fixtures[NCASES];

static void free_buffers(fixture *f)
{
    for (int i = 0; i < f->n; i++) {
        if (f->got)
            free(f->got[i]);
        if (f->ref)
            free(f->ref[i]);
    }
    free(f->got), free(f->ref), free(f->count), free(f->info), free(f->args), free(f->rt);
    f->got = f->ref = NULL;
    f->args = NULL;
    f->rt = NULL;
    f->count = NULL;
    f->info = NULL;
    f->n = 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    free_buffers(f);
    ssmc_model_free(f->model);
    ssmc_ctx_free(f->ctx);
    free(f->source);
    f->model = NULL;
    f->ctx = NULL;
    f->source = NULL;
    return 0;
}

static char *slurp(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return NULL;
    char *buf = NULL;
    if (fseek(fp, 0, SEEK_END) == 0) {
        long n = ftell(fp);
        if (n >= 0 && fseek(fp, 0, SEEK_SET) == 0 && (buf = malloc((size_t)n + 1))) {
            *len = fread(buf, 1, (size_t)n, fp);
            buf[*len] = '\0';
        }
    }
    fclose(fp);
    return buf;
}

static const tensor_range *find_range(const ref_case *c, const char *name)
{
    for (int i = 0; i < MAX_CASE_RANGES && c->ranges[i].name; i++)
        if (strcmp(c->ranges[i].name, name) == 0)
            return &c->ranges[i];
    return NULL;
}

static int case_ndims(const ref_case *c)
{
    int n = 0;
    while (n < MAX_CASE_DIMS && c->dims[n].name)
        n++;
    return n;
}

/* Largest |got - ref| over the largest |ref|; NAN when either holds a non-finite value. */
static double rel_error(const double *got, const double *ref, size_t n)
{
    double maxref = 0, maxdiff = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(got[i]) || !isfinite(ref[i]))
            return NAN;
        maxref = fmax(maxref, fabs(ref[i]));
        maxdiff = fmax(maxdiff, fabs(got[i] - ref[i]));
    }
    return maxref > 0 ? maxdiff / maxref : maxdiff;
}

/* One run of interpreter and reference on the same random data; states from
 * zero (random_init 0), random values (1) or not given at all (2: the init). */
static void check_run(fixture *f, int64_t T, int random_init, uint64_t *rng)
{
    const ref_case *c = f->c;
    int n = ssmc_model_num_tensors(f->model);
    assert_true(n > 0);
    f->n = n;
    f->info = calloc((size_t)n, sizeof *f->info);
    f->count = calloc((size_t)n, sizeof *f->count);
    f->got = calloc((size_t)n, sizeof *f->got);
    f->ref = calloc((size_t)n, sizeof *f->ref);
    ssmc_arg *args = f->args = calloc((size_t)n, sizeof *args);
    ref_tensor *rt = f->rt = calloc((size_t)n, sizeof *rt);
    assert_non_null(f->info), assert_non_null(f->count), assert_non_null(f->got);
    assert_non_null(f->ref), assert_non_null(args), assert_non_null(rt);

    for (int i = 0; i < n; i++) {
        ssmc_tensor_info *ti = &f->info[i];
        assert_int_equal(ssmc_model_tensor(f->model, i, ti), SSMC_OK);
        size_t count = 1;
        for (int a = 0; a < ti->rank; a++)
            count *= (size_t)ti->shape[a];
        if (ti->per_step)
            count *= (size_t)(BATCH * T);
        else if (ti->role == SSMC_STATE)
            count *= BATCH;
        f->count[i] = count;
        f->got[i] = malloc(count * sizeof(double));
        f->ref[i] = malloc(count * sizeof(double));
        assert_non_null(f->got[i]), assert_non_null(f->ref[i]);
        const tensor_range *r = find_range(c, ti->name);
        double lo = r ? r->lo : -1.0, hi = r ? r->hi : 1.0;
        for (size_t e = 0; e < count; e++) {
            double v;
            if (ti->role == SSMC_OUTPUT)
                v = NAN;
            else if (ti->role == SSMC_STATE && !random_init)
                v = 0.0;
            else
                v = rng_uniform(rng, lo, hi);
            f->got[i][e] = f->ref[i][e] = v;
        }
        args[i] = (ssmc_arg){ti->name, SSMC_F64, f->got[i], 0};
        rt[i] = (ref_tensor){ti->name, f->ref[i]};
    }
    /* without initial states: the states are not passed (nor compared) */
    int nargs = 0;
    for (int i = 0; i < n; i++) {
        int absent = random_init == 2 && f->info[i].role == SSMC_STATE;
        if (absent) rt[i].data = NULL;
        if (!absent) args[nargs++] = args[i];
    }

    ssmc_status st = ssmc_run(f->model, BATCH, T, args, nargs);
    if (st != SSMC_OK)
        fail_msg("%s: ssmc_run: %s: %s", c->model, ssmc_status_name(st), ssmc_ctx_error(f->ctx));

    const char *dim_names[MAX_CASE_DIMS];
    int64_t dim_values[MAX_CASE_DIMS];
    int nd = case_ndims(c);
    for (int d = 0; d < nd; d++)
        dim_names[d] = c->dims[d].name, dim_values[d] = c->dims[d].value;
    ref_io io = {BATCH, T, rt, n, dim_names, dim_values, nd};
    int rc = ref_run(c->model, &io);
    if (rc != 0)
        fail_msg("%s: ref_run returned %d", c->model, rc);

    for (int i = 0; i < n; i++) {
        const ssmc_tensor_info *ti = &f->info[i];
        if (ti->role != SSMC_OUTPUT && (ti->role != SSMC_STATE || random_init == 2))
            continue;
        static const char *const modes[] = {"zero-init", "random-init", "model-init"};
        double err = rel_error(f->got[i], f->ref[i], f->count[i]);
        print_message("  %-15s T=%" PRId64 " %-11s %-6s %-5s rel err %.3g\n", c->model, T, modes[random_init],
                      ti->role == SSMC_OUTPUT ? "output" : "state", ti->name, err);
        if (!(err <= TOLERANCE))
            fail_msg("%s T=%" PRId64 " %s: %s `%s`: relative error %.3g (tolerance %g; NaN means a "
                     "non-finite value); repeat with SSMC_TEST_SEED=%" PRIu64,
                     c->model, T,
                     random_init == 2 ? "the init's initial state" : random_init ? "random initial state" : "zero initial state",
                     ti->role == SSMC_OUTPUT ? "output" : "final state", ti->name, err, TOLERANCE,
                     f->base_seed);
    }
    free_buffers(f);
}

static void test_model(void **state)
{
    fixture *f = *state;
    const ref_case *c = f->c;
    const char *dir = getenv("SSMC_SOURCE_DIR");
    if (!dir || !*dir) {
        print_message("SSMC_SOURCE_DIR is not set: run through ctest\n");
        skip();
    }
    assert_true(ref_has(c->model));

    char path[4096];
    snprintf(path, sizeof path, "%s/examples/%s.ssm", dir, c->model);
    size_t len = 0;
    f->source = slurp(path, &len);
    if (!f->source)
        fail_msg("cannot read %s", path);

    f->ctx = ssmc_ctx_new();
    assert_non_null(f->ctx);
    ssmc_options opts = {0};
    opts.dims = c->dims;
    opts.ndims = case_ndims(c);
    opts.device = SSMC_DEVICE_INTERP;
    ssmc_status st = ssmc_compile(f->ctx, path, f->source, len, &opts, &f->model);
    if (st != SSMC_OK)
        fail_msg("%s: ssmc_compile: %s: %s", c->model, ssmc_status_name(st), ssmc_ctx_error(f->ctx));
    assert_string_equal(ssmc_model_name(f->model), c->model);

    print_message("%s: SSMC_TEST_SEED=%" PRIu64 "\n", c->model, f->base_seed);
    uint64_t rng = f->seed;
    static const int64_t lengths[] = {7, 1};
    for (size_t l = 0; l < sizeof lengths / sizeof lengths[0]; l++)
        for (int random_init = 0; random_init <= (has_init(c->model) ? 2 : 1); random_init++)
            check_run(f, lengths[l], random_init, &rng);
}

int main(void)
{
    struct CMUnitTest tests[NCASES];
    uint64_t seed = base_seed();
    for (size_t i = 0; i < NCASES; i++) {
        fixtures[i] = (fixture){.c = &cases[i], .base_seed = seed, .seed = seed + i};
        tests[i] = (struct CMUnitTest){cases[i].model, test_model, NULL, teardown, &fixtures[i]};
    }
    return cmocka_run_group_tests_name("interp_ref", tests, NULL, NULL);
}
