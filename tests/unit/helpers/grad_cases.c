/* grad_cases.c: see grad_cases.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "files.h"
#include "grad_cases.h"
#include "runtime/cuda_driver.h"
#include "ssmc.h"
#include "support/dtype.h"

#define MAXT 32


static double uniform(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(*s >> 11) * 0x1.0p-53 * 2.0 - 1.0;
}

typedef struct run {
    ssmc_ctx *ctx;
    ssmc_model *m;
    int n;
    ssmc_tensor_info info[MAXT];
    size_t count[MAXT];
} run;

static bool run_open(run *r, const gcase *c, ssmc_device dev, const char *src, size_t len, char *msg, size_t cap)
{
    memset(r, 0, sizeof *r);
    r->ctx = ssmc_ctx_new();
    ssmc_options o = {.device = dev, .model = c->model, .dims = c->dims.dims, .ndims = c->dims.ndims,
                      .grad_chunk = c->C};
    if (c->chunk > 0 && dev == SSMC_DEVICE_CUDA) {
        o.algo = SSMC_ALGO_CHUNKED;
        o.chunk = c->chunk;
    }
    if (ssmc_compile(r->ctx, c->file, src, len, &o, &r->m) != SSMC_OK) {
        snprintf(msg, cap, "compile: %s", ssmc_ctx_error(r->ctx));
        return false;
    }
    r->n = ssmc_model_num_tensors(r->m);
    for (int i = 0; i < r->n && i < MAXT; i++) {
        ssmc_model_tensor(r->m, i, &r->info[i]);
        size_t k = r->info[i].role == SSMC_PARAM ? 1 : (size_t)c->B;
        if (r->info[i].per_step) k *= (size_t)c->T;
        for (int j = 0; j < r->info[i].rank; j++) k *= (size_t)r->info[i].shape[j];
        r->count[i] = k;
    }
    return r->n <= MAXT;
}

static void run_close(run *r)
{
    ssmc_model_free(r->m);
    ssmc_ctx_free(r->ctx);
}

/* Device copies of host buffers (runtime/cuda_driver.h: the GPU's, or the
 * emulated driver's); one handle per process. */
static rt_cuda *gpu;

static void *to_device(const void *host, size_t bytes)
{
    strbuf err = {0};
    CUdeviceptr p = 0;
    if ((!gpu && rt_cuda_open(&gpu, &err) != SSMC_OK) || rt_cuda_alloc(gpu, bytes ? bytes : 1, &p, &err) != SSMC_OK ||
        rt_cuda_htod(gpu, p, host, bytes, &err) != SSMC_OK)
        fail_msg("device buffers: %s", sb_cstr(&err));
    sb_free(&err);
    return (void *)(uintptr_t)p;
}

static void from_device(void *host, void *dev, size_t bytes)
{
    strbuf err = {0};
    if (rt_cuda_dtoh(gpu, host, (CUdeviceptr)(uintptr_t)dev, bytes, &err) != SSMC_OK ||
        rt_cuda_free(gpu, (CUdeviceptr)(uintptr_t)dev, &err) != SSMC_OK)
        fail_msg("device buffers: %s", sb_cstr(&err));
    sb_free(&err);
}

/* The copies between host and device memory so far, where the driver is the
 * emulated one (tests/gpu/emu/fake_cuda.cpp counts them); -1 on a GPU. */
static long host_copies(void)
{
    const char *lib = getenv("SSMC_CUDA_DRIVER");
    void *h = lib ? dlopen(lib, RTLD_LAZY | RTLD_NOLOAD) : NULL;
    long (*count)(void) = NULL;
    if (h) *(void **)&count = dlsym(h, "emu_host_copies"); /* POSIX's way to a function from dlsym */
    long n = count ? count() : -1;
    if (h) dlclose(h);
    return n;
}

/* One training step on `r` with tensors of dtype dt made from the f64 values
 * val (inputs, params, initial states) and cot (cotangents): the outputs and
 * final states into res, the gradients into grad (f64 copies). device: the
 * device entry points, on device copies (outputs and gradients NaN). */
static bool train(run *r, const gcase *c, ssmc_dtype dt, bool device, double *const *val, double *const *cot,
                  double **res, double **grad, char *msg, size_t cap)
{
    void *buf[MAXT], *cb[MAXT], *gb[MAXT], *db[MAXT], *dc[MAXT], *dg[MAXT];
    ssmc_arg args[MAXT], vals[MAXT], douts[MAXT], grads[MAXT];
    int na = 0, nv = 0, nd = 0, ng = 0;
    size_t es = dtype_size(dt);
    for (int i = 0; i < r->n; i++) {
        size_t k = r->count[i];
        ssmc_role role = r->info[i].role;
        buf[i] = aligned_alloc(64, (k * es + 63) / 64 * 64);
        cb[i] = aligned_alloc(64, (k * es + 63) / 64 * 64);
        gb[i] = aligned_alloc(64, (k * es + 63) / 64 * 64);
        for (size_t e = 0; e < k; e++) {
            dtype_set(buf[i], dt, e, role == SSMC_OUTPUT ? NAN : val[i][e]);
            dtype_set(cb[i], dt, e, cot[i][e]);
            dtype_set(gb[i], dt, e, NAN);
        }
        db[i] = device ? to_device(buf[i], k * es) : buf[i];
        dc[i] = device ? to_device(cb[i], k * es) : cb[i];
        dg[i] = device ? to_device(gb[i], k * es) : gb[i];
        const char *nm = r->info[i].name;
        bool given = role != SSMC_STATE || c->states;
        if (given) args[na++] = (ssmc_arg){nm, dt, db[i], 0};
        if (role == SSMC_INPUT || role == SSMC_PARAM) vals[nv++] = (ssmc_arg){nm, dt, db[i], 0};
        if (role == SSMC_OUTPUT || (role == SSMC_STATE && c->states)) douts[nd++] = (ssmc_arg){nm, dt, dc[i], 0};
        if (role != SSMC_OUTPUT) grads[ng++] = (ssmc_arg){nm, dt, dg[i], 0};
    }
    ssmc_tape *tape = NULL;
    CUstream stream = NULL;
    strbuf err = {0};
    if (device && c->stream && rt_cuda_stream_new(gpu, &stream, &err) != SSMC_OK) fail_msg("stream: %s", sb_cstr(&err));
    long copies = device ? host_copies() : -1;
    ssmc_status s = device ? ssmc_forward_train_device(r->m, c->B, c->T, args, na, &tape, stream)
                           : ssmc_forward_train(r->m, c->B, c->T, args, na, &tape);
    if (s == SSMC_OK)
        s = device ? ssmc_backward_device(r->m, tape, vals, nv, douts, nd, grads, ng, stream)
                   : ssmc_backward(r->m, tape, vals, nv, douts, nd, grads, ng);
    if (stream && rt_cuda_stream_free(gpu, stream, &err) != SSMC_OK) fail_msg("stream: %s", sb_cstr(&err));
    sb_free(&err);
    if (s != SSMC_OK) snprintf(msg, cap, "%s", ssmc_ctx_error(r->ctx));
    /* the device entry points keep everything on the device */
    long more = copies >= 0 ? host_copies() - copies : 0;
    if (s == SSMC_OK && more != 0) {
        snprintf(msg, cap, "the device entry points made %ld copies between host and device memory", more);
        s = SSMC_ERR_BACKEND;
    }
    ssmc_tape_free(tape);
    for (int i = 0; i < r->n; i++) {
        if (device) {
            size_t bytes = r->count[i] * es;
            from_device(buf[i], db[i], bytes);
            from_device(cb[i], dc[i], bytes);
            from_device(gb[i], dg[i], bytes);
        }
        for (size_t e = 0; e < r->count[i]; e++) {
            res[i][e] = dtype_get(buf[i], dt, e);
            grad[i][e] = dtype_get(gb[i], dt, e);
        }
        free(buf[i]);
        free(cb[i]);
        free(gb[i]);
    }
    return s == SSMC_OK;
}

/* max|got - ref| against tol * max|ref|; false (with the message) past it. */
static bool close_to(const char *what, const char *name, const double *got, const double *ref, size_t n, double tol,
                     char *msg, size_t cap)
{
    double md = 0, mr = 0;
    for (size_t e = 0; e < n; e++) {
        if (!isfinite(got[e])) {
            snprintf(msg, cap, "%s %s[%zu] = %g (reference %g)", what, name, e, got[e], ref[e]);
            return false;
        }
        md = fmax(md, fabs(got[e] - ref[e]));
        mr = fmax(mr, fabs(ref[e]));
    }
    if (md <= tol * mr + 1e-7) return true;
    snprintf(msg, cap, "%s %s: max difference %.3g, max |reference| %.3g (relative %.2e > %.0e)", what, name, md, mr,
             mr > 0 ? md / mr : md, tol);
    return false;
}

/* One case against the interpreter; false with the message on a failure. */
bool grad_case(const gcase *c, char *msg, size_t cap)
{
    size_t len;
    char *src = test_slurp(c->file, &len);
    run ri, rc;
    bool ok = run_open(&ri, c, SSMC_DEVICE_INTERP, src, len, msg, cap) &&
              run_open(&rc, c, SSMC_DEVICE_CUDA, src, len, msg, cap);
    double *val[MAXT] = {0}, *cot[MAXT] = {0}, *res[2][MAXT] = {{0}}, *grad[2][MAXT] = {{0}};
    uint64_t rng = 0x9e3779b97f4a7c15ull ^ (uint64_t)len;
    for (int i = 0; ok && i < ri.n; i++) {
        size_t k = ri.count[i];
        val[i] = malloc((k + 1) * sizeof(double));
        cot[i] = malloc((k + 1) * sizeof(double));
        for (int v = 0; v < 2; v++) {
            res[v][i] = malloc((k + 1) * sizeof(double));
            grad[v][i] = malloc((k + 1) * sizeof(double));
        }
        for (size_t e = 0; e < k; e++) {
            /* exactly representable in the case's dtype, so both sides start from the same values */
            float f = (float)(0.5 * uniform(&rng)), g = (float)uniform(&rng);
            char b[8];
            dtype_set(b, c->dt, 0, f);
            val[i][e] = dtype_get(b, c->dt, 0);
            dtype_set(b, c->dt, 0, g);
            cot[i][e] = dtype_get(b, c->dt, 0);
        }
    }
    ok = ok && train(&ri, c, SSMC_F64, false, val, cot, res[0], grad[0], msg, cap) &&
         train(&rc, c, c->dt, !c->host, val, cot, res[1], grad[1], msg, cap);
    double tol = c->dt == SSMC_F32 && c->chunk <= 0 ? 1e-5 : 2e-2;
    for (int i = 0; ok && i < ri.n; i++) {
        ssmc_role role = ri.info[i].role;
        if (role == SSMC_OUTPUT || (role == SSMC_STATE && c->states))
            ok = close_to("forward", ri.info[i].name, res[1][i], res[0][i], ri.count[i], tol, msg, cap);
        if (ok && role != SSMC_OUTPUT)
            ok = close_to("gradient of", ri.info[i].name, grad[1][i], grad[0][i], ri.count[i], tol, msg, cap);
    }
    for (int i = 0; i < MAXT; i++) {
        free(val[i]);
        free(cot[i]);
        for (int v = 0; v < 2; v++) {
            free(res[v][i]);
            free(grad[v][i]);
        }
    }
    if (ri.ctx) run_close(&ri);
    if (rc.ctx) run_close(&rc);
    free(src);
    return ok;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Runs the cases in child processes, as many at once as there are cores;
 * each failure is reported with its case. */
void grad_run_cases(const gcase *cases, int n, bool fork_them)
{
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    bool serial = !fork_them || getenv("SSMC_TEST_SERIAL");
    int par = cores < 1 || serial ? 1 : cores > 16 ? 16 : (int)cores, running = 0, failed = 0;
    pid_t *pid = calloc((size_t)n, sizeof *pid);
    assert_non_null(pid);
    fflush(stdout);
    for (int next = 0, done = 0; done < n;) {
        const char *only = getenv("SSMC_TEST_ONLY"); /* a substring of the file names to run */
        if (next < n && only && !strstr(cases[next].file, only)) {
            next++;
            done++;
            continue;
        }
        if (next < n && running < par) {
            fflush(stdout);
            pid[next] = serial ? 0 : fork(); /* serial: in this process (a GPU's context does not survive a fork) */
            assert_true(pid[next] >= 0);
            if (pid[next] == 0) {
                char msg[2048] = "";
                const gcase *c = &cases[next];
                double t0 = now();
                bool ok = grad_case(c, msg, sizeof msg);
                printf("# %s %-34s %-8s %s B=%lld T=%lld C=%lld %s%s%s (%.1f s)\n", ok ? "ok  " : "FAIL", c->file,
                       c->model ? c->model : "", c->dt == SSMC_F32 ? "f32 " : "bf16", (long long)c->B, (long long)c->T,
                       (long long)c->C, c->states ? "from states" : c->chunk > 0 ? "from zero" : "from inits",
                       c->chunk > 0 ? ", chunked" : "", c->host ? ", host API" : c->stream ? ", a stream" : "",
                       now() - t0);
                if (!ok) printf("#      %s\n", msg);
                fflush(stdout);
                if (serial) {
                    failed += !ok;
                    next++;
                    done++;
                    continue;
                }
                _exit(ok ? 0 : 1);
            }
            next++;
            running++;
            continue;
        }
        int st;
        pid_t w = wait(&st);
        assert_true(w > 0);
        running--;
        done++;
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            for (int i = 0; i < n; i++)
                if (pid[i] == w) printf("# case %s %s failed (status 0x%x)\n", cases[i].file, cases[i].model ? cases[i].model : "", st);
            failed++;
        }
    }
    free(pid);
    if (failed) fail_msg("%d of %d gradient cases failed", failed, n);
}

/* The model (the file's first when NULL) has an init statement. */
static bool has_init(const char *file, const char *model)
{
    size_t len;
    char *src = test_slurp(file, &len);
    char key[96];
    snprintf(key, sizeof key, "\nmodel %s {", model ? model : "");
    const char *p = model ? strstr(src, key) : strstr(src, "model ");
    const char *end = p ? strstr(p + 1, "\nmodel ") : NULL;
    const char *in = p ? strstr(p, "\n  init ") : NULL;
    bool yes = in && (!end || in < end);
    free(src);
    return yes;
}

/* A copy of s that lives as long as the process: the cases share their
 * strings (several cases per example), so they are kept here, reachable,
 * rather than freed case by case. */
static const char *keep(const char *s)
{
    static char *kept[4096];
    static int nkept;
    char *c = strdup(s);
    if (c && nkept < (int)(sizeof kept / sizeof *kept)) kept[nkept++] = c;
    return c;
}

int grad_example_cases(gcase *cases, int max)
{
    char names[64][128];
    int n = test_list_examples(names, 64), nc = 0;
    for (int i = 0; i < n && nc + 4 <= max; i++) {
        size_t len;
        char *src = test_slurp(names[i], &len);
        example_dims own;
        const example_dims *e = grad_example_dims(names[i], src, len, &own);
        free(src);
        gcase c = {.file = keep(names[i]), .dims = *e, .B = 2, .T = 7, .C = 3, .dt = SSMC_F32, .states = true};
        for (int d = 0; d < c.dims.ndims; d++) c.dims.dims[d].name = keep(e->dims[d].name);
        cases[nc++] = c;
        if (has_init(names[i], NULL)) {
            c.states = false;
            cases[nc++] = c;
        }
        /* bf16 tensors and the host API for a few */
        if (strstr(names[i], "gated_deltanet") || strstr(names[i], "mamba2.ssm") || strstr(names[i], "lstm")) {
            c.states = true;
            c.dt = SSMC_BF16;
            c.B = 3;
            c.T = 5;
            c.C = 2;
            cases[nc++] = c;
            c.dt = SSMC_F32;
            c.host = true;
            cases[nc++] = c;
        }
    }
    return nc;
}

int grad_edge_cases(gcase *cases, int max)
{
    static const char *const models[] = {"dense", "mix", "big", "v2_ops", "v2_lag", "v2_init"};
    int nc = 0;
    for (size_t i = 0; i < sizeof models / sizeof *models && nc + 3 <= max; i++) {
        gcase c = {.file = "tests/gpu/edge.ssm", .model = models[i], .B = 2, .T = 6, .C = 4, .dt = SSMC_F32,
                   .states = true};
        cases[nc++] = c;
        if (has_init(c.file, models[i])) {
            c.states = false;
            cases[nc++] = c;
        }
    }
    /* one sequence: the chunks' slices taken in place */
    cases[nc++] = (gcase){.file = "tests/gpu/edge.ssm", .model = "mix", .B = 1, .T = 9, .C = 2, .dt = SSMC_F32,
                          .states = true};
    return nc;
}

int grad_chunked_cases(gcase *cases, int max)
{
    /* no decay, a decay per head and per key, the delta rule plain and gated; T past a chunk and not a multiple of it; segments of one chunk (grad_chunk =
     * C) and of several (grad_chunk = 0: ceil(sqrt(n)) chunks); from states and from zero */
    static const gcase all[] = {
        {.file = "examples/fla_simple_gla.ssm", .dims = {.ndims = 3, .dims = {{"H", 2}, {"K", 20}, {"V", 12}}}, .B = 2,
         .T = 37, .C = 0, .dt = SSMC_F32, .states = true, .host = true, .chunk = 16},
        {.file = "examples/fla_simple_gla.ssm", .dims = {.ndims = 3, .dims = {{"H", 2}, {"K", 20}, {"V", 12}}}, .B = 2,
         .T = 70, .C = 16, .dt = SSMC_F32, .states = true, .host = true, .chunk = 16},
        {.file = "examples/mamba2.ssm", .dims = {.ndims = 3, .dims = {{"H", 2}, {"P", 8}, {"N", 16}}}, .B = 1,
         .T = 45, .C = 0, .dt = SSMC_F32, .states = false, .host = true, .chunk = 16},
        {.file = "examples/fla_linear_attn.ssm", .dims = {.ndims = 3, .dims = {{"H", 2}, {"K", 8}, {"V", 6}}}, .B = 2,
         .T = 21, .C = 0, .dt = SSMC_F32, .states = true, .host = true, .chunk = 16},
        {.file = "examples/fla_delta_rule.ssm", .dims = {.ndims = 3, .dims = {{"H", 2}, {"K", 8}, {"V", 6}}}, .B = 2,
         .T = 37, .C = 0, .dt = SSMC_F32, .states = true, .host = true, .chunk = 16},
        {.file = "examples/gated_deltanet.ssm", .dims = {.ndims = 3, .dims = {{"H", 2}, {"K", 8}, {"V", 6}}}, .B = 2,
         .T = 40, .C = 16, .dt = SSMC_F32, .states = true, .host = true, .chunk = 16},
        {.file = "examples/gla.ssm", .dims = {.ndims = 3, .dims = {{"H", 2}, {"K", 8}, {"V", 6}}}, .B = 2, .T = 37,
         .C = 0, .dt = SSMC_F32, .states = true, .host = true, .chunk = 16},
        {.file = "examples/rwkv6.ssm", .dims = {.ndims = 3, .dims = {{"H", 2}, {"K", 8}, {"V", 6}}}, .B = 2, .T = 40,
         .C = 16, .dt = SSMC_F32, .states = true, .host = true, .chunk = 16},
    };
    int n = 0;
    /* each through the host API and through the device entry points (the tape, the work and the segments'
     * slices on the device) */
    for (size_t i = 0; i < sizeof all / sizeof *all && n + 2 <= max; i++) {
        cases[n++] = all[i];
        cases[n] = all[i];
        cases[n++].host = false;
    }
    /* the device entry points on a stream of their own, with several sequences, T not a multiple of C,
     * several segments: from zero with no final-state cotangent (mamba2), and bf16 tensors, converted to and
     * from the driver's f32 on the device (gated_deltanet) */
    static const gcase more[] = {
        {.file = "examples/mamba2.ssm", .dims = {.ndims = 3, .dims = {{"H", 2}, {"P", 8}, {"N", 16}}}, .B = 2,
         .T = 45, .C = 16, .dt = SSMC_F32, .states = false, .chunk = 16, .stream = true},
        {.file = "examples/gated_deltanet.ssm", .dims = {.ndims = 3, .dims = {{"H", 2}, {"K", 8}, {"V", 6}}}, .B = 2,
         .T = 37, .C = 0, .dt = SSMC_BF16, .states = true, .chunk = 16, .stream = true},
    };
    for (size_t i = 0; i < sizeof more / sizeof *more && n < max; i++) cases[n++] = more[i];
    return n;
}
