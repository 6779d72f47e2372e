/* bench_decode.c: ssmc's side of the decode benchmark (issue 17 item 4), run
 * by bench/gpu/decode.sh on the device machine.
 *
 *   bench_decode --repo R --bundle DIR/lib<model>.so --model M --dims H=..,P=..,N=..
 *                --sig K --dtypes IO/P/S (--load bundle|jit | --decode) [--iters N]
 *
 * --load bundle: in this fresh process, the driver initialised first
 *   (cuInit and the primary context: `cuinit_ms`, which every path pays),
 *   then the bundle's .so evicted from the page cache (posix_fadvise) and
 *   timed: dlopen (`load_ms`), <model>_cuda_open (`open_ms`), the first
 *   decode step with its module load (`first_call_ms`), a second one
 *   (`warm_call_ms`); `cold_ms` = load + open + first call.
 * --load jit: the same through the library: ssmc_compile for the cuda device
 *   (`compile_ms`), the first ssmc_decode_device (NVRTC, or the kernel
 *   cache: decode.sh runs it with an empty and then a filled
 *   SSMC_CACHE_DIR), a second one.
 * --decode: a decode step (T = 1) at batch 1, 16, 64 and 256, through the
 *   bundle's <model>_cuda_decode_step and the library's ssmc_decode_device,
 *   on the same device tensors: sequences on rows of a pool of 2 x batch rows
 *   (a fixed permutation), every step preceded by an L2 flush (a 256 MiB
 *   memset, outside the timed span), each step timed by a pair of CUDA events
 *   on one stream; the median of --iters steps. The memory floor of a row is
 *   the bytes a step must move (each state row read and written, the step's
 *   inputs read and outputs written, the params and the row indices read)
 *   over 4.8 TB/s, the H200's HBM3e peak; `pct` is floor / time.
 *
 * Prints one `BENCH side=ours case=... impl=... key=value ...` line per
 * measurement (the format of bench/gpu/run_all.sh and decode_ref.py), or a
 * `BENCHERR side=ours case=... err=...` line. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "runtime/cuda_driver.h"
#include "ssmc.h"
#include "support/support.h"

#define PEAK_BPS 4.8e12
#define FLUSH_BYTES ((size_t)256 << 20)
#define MAXT 16

typedef int (*open_fn)(int, void **);
typedef const char *(*error_fn)(const void *);
typedef void (*close_fn)(void *);
typedef int (*step_fn)(void *, int, int64_t, void *const *, const int32_t *, const uint8_t *, void *);

typedef struct opts {
    const char *repo, *bundle, *model, *dims, *dtypes, *mode;
    int sig, iters;
} opts;

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static size_t dsize(ssmc_dtype t) { return t == SSMC_F64 ? 8 : t == SSMC_F32 ? 4 : 2; }

static bool dtype_of(const char *s, size_t n, ssmc_dtype *out)
{
    static const char *const names[] = {"f32", "f16", "bf16", "f64"};
    for (int i = 0; i < 4; i++)
        if (strlen(names[i]) == n && strncmp(s, names[i], n) == 0) {
            *out = (ssmc_dtype)i;
            return true;
        }
    return false;
}

/* "bf16/f32/f32" -> io, params, states */
static bool parse_dtypes(const char *s, ssmc_dtype d[3])
{
    for (int i = 0; i < 3; i++) {
        size_t n = strcspn(s, "/");
        if (!dtype_of(s, n, &d[i])) return false;
        s += n;
        if (i < 2 && *s++ != '/') return false;
    }
    return *s == 0;
}

static void fail(const opts *o, const char *what, const char *msg)
{
    printf("BENCHERR side=ours case=%s_%s err=%s: ", o->model, o->mode, what);
    for (const char *p = msg; *p; p++) putchar(*p == '\n' || *p == ' ' ? '_' : *p);
    putchar('\n');
    exit(1);
}

/* The model compiled for cuda, and one call's device tensors (T = 1). */
typedef struct setup {
    ssmc_ctx *ctx;
    ssmc_model *m;
    rt_cuda *gpu;
    ssmc_dtype sig[3];
    int n;
    ssmc_tensor_info info[MAXT];
    CUdeviceptr dev[MAXT];
    size_t bytes[MAXT];
    CUdeviceptr idx;
    size_t moved; /* bytes a step moves at least */
} setup;

static void compile_model(setup *s, const opts *o)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/examples/%s.ssm", o->repo, o->model);
    size_t len;
    const char *why;
    char *src = read_file(path, &len, &why);
    if (!src) fail(o, "source", why);
    ssmc_dim dims[8];
    int nd = 0;
    static char buf[256];
    snprintf(buf, sizeof buf, "%s", o->dims);
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t && nd < 8; t = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(t, '=');
        if (!eq) fail(o, "dims", t);
        *eq = 0;
        dims[nd++] = (ssmc_dim){t, atoll(eq + 1)};
    }
    ssmc_options so = {.dims = dims, .ndims = nd, .device = SSMC_DEVICE_CUDA};
    s->ctx = ssmc_ctx_new();
    if (ssmc_compile(s->ctx, path, src, len, &so, &s->m) != SSMC_OK) fail(o, "compile", ssmc_ctx_error(s->ctx));
    free(src);
}

static ssmc_dtype dt_of(const setup *s, ssmc_role r) { return s->sig[r == SSMC_PARAM ? 1 : r == SSMC_STATE ? 2 : 0]; }

/* Device tensors for a decode step at `batch` from a pool of `rows` rows. */
static void alloc_tensors(setup *s, const opts *o, int64_t batch, int64_t rows)
{
    strbuf err = {0};
    s->n = ssmc_model_num_tensors(s->m);
    s->moved = 0;
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    for (int i = 0; i < s->n; i++) {
        ssmc_model_tensor(s->m, i, &s->info[i]);
        size_t e = 1;
        for (int k = 0; k < s->info[i].rank; k++) e *= (size_t)s->info[i].shape[k];
        ssmc_role r = s->info[i].role;
        size_t es = dsize(dt_of(s, r));
        size_t total = e * (r == SSMC_PARAM ? 1 : r == SSMC_STATE ? (size_t)rows : (size_t)batch);
        s->moved += e * es * (r == SSMC_PARAM ? 1 : r == SSMC_STATE ? 2 * (size_t)batch : (size_t)batch);
        s->bytes[i] = total * es;
        if (rt_cuda_alloc(s->gpu, s->bytes[i], &s->dev[i], &err)) fail(o, "alloc", sb_cstr(&err));
        /* small values of either dtype: 0x3c00 (f16 1.0) or bf16 0.0078, f32 ~1e-2 */
        unsigned char *h = malloc(s->bytes[i]);
        for (size_t k = 0; k < s->bytes[i]; k++) {
            seed = seed * 6364136223846793005ull + 1442695040888963407ull;
            h[k] = (k % es == es - 1) ? 0x3c : (unsigned char)(seed >> 56);
        }
        if (rt_cuda_htod(s->gpu, s->dev[i], h, s->bytes[i], &err)) fail(o, "htod", sb_cstr(&err));
        free(h);
    }
    int32_t *ix = malloc((size_t)batch * sizeof *ix);
    for (int64_t b = 0; b < batch; b++) ix[b] = (int32_t)((b * 2 + 1) % rows); /* spread over the pool */
    s->moved += (size_t)batch * 4;
    if (rt_cuda_alloc(s->gpu, (size_t)batch * 4, &s->idx, &err) || rt_cuda_htod(s->gpu, s->idx, ix, (size_t)batch * 4, &err))
        fail(o, "idx", sb_cstr(&err));
    free(ix);
    sb_free(&err);
}

static void free_tensors(setup *s)
{
    strbuf err = {0};
    for (int i = 0; i < s->n; i++) rt_cuda_free(s->gpu, s->dev[i], &err);
    rt_cuda_free(s->gpu, s->idx, &err);
    sb_free(&err);
}

static void *pointers(const setup *s, void **p)
{
    for (int i = 0; i < s->n; i++) p[i] = (void *)(uintptr_t)s->dev[i];
    return p;
}

static ssmc_status jit_step(setup *s, int64_t batch, int64_t rows, void *stream)
{
    ssmc_arg a[MAXT];
    for (int i = 0; i < s->n; i++) a[i] = (ssmc_arg){s->info[i].name, dt_of(s, s->info[i].role), (void *)(uintptr_t)s->dev[i]};
    ssmc_rows r = {(const int32_t *)(uintptr_t)s->idx, NULL, rows};
    return ssmc_decode_device(s->m, batch, 1, a, s->n, &r, stream);
}

typedef struct bundle {
    void *lib, *g;
    open_fn open;
    error_fn error;
    close_fn close;
    step_fn step;
} bundle;

static void *sym(const opts *o, void *lib, const char *suffix)
{
    char name[256];
    snprintf(name, sizeof name, "%s_%s", o->model, suffix);
    void *p = dlsym(lib, name);
    if (!p) fail(o, "dlsym", name);
    return p;
}

static double load_bundle(bundle *b, const opts *o)
{
    double t0 = now_ms();
    b->lib = dlopen(o->bundle, RTLD_NOW | RTLD_LOCAL);
    if (!b->lib) fail(o, "dlopen", dlerror());
    void *p;
    p = sym(o, b->lib, "cuda_open");
    memcpy(&b->open, &p, sizeof p);
    p = sym(o, b->lib, "cuda_error");
    memcpy(&b->error, &p, sizeof p);
    p = sym(o, b->lib, "cuda_close");
    memcpy(&b->close, &p, sizeof p);
    p = sym(o, b->lib, "cuda_decode_step");
    memcpy(&b->step, &p, sizeof p);
    return now_ms() - t0;
}

static void evict(const char *path)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0) return;
    fdatasync(fd);
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    close(fd);
}

static void do_load(const opts *o, bool jit)
{
    setup s = {0};
    strbuf err = {0};
    if (!parse_dtypes(o->dtypes, s.sig)) fail(o, "dtypes", o->dtypes);
    double t0 = now_ms();
    if (rt_cuda_open(&s.gpu, &err) != SSMC_OK) fail(o, "gpu", sb_cstr(&err));
    double cuinit = now_ms() - t0;
    const char *signame = o->dtypes;
    if (!jit) {
        bundle b = {0};
        evict(o->bundle);
        double load = load_bundle(&b, o);
        t0 = now_ms();
        if (b.open(0, &b.g) != 0) fail(o, "open", b.error(b.g));
        double open_ms = now_ms() - t0;
        compile_model(&s, o); /* for the tensors' shapes only (not timed) */
        alloc_tensors(&s, o, 1, 2);
        void *p[MAXT];
        double call[2];
        for (int k = 0; k < 2; k++) {
            t0 = now_ms();
            if (b.step(b.g, o->sig, 1, pointers(&s, p), (const int32_t *)(uintptr_t)s.idx, NULL, NULL) != 0)
                fail(o, "decode_step", b.error(b.g));
            if (rt_cuda_sync(s.gpu, &err)) fail(o, "sync", sb_cstr(&err));
            call[k] = now_ms() - t0;
        }
        printf("BENCH side=ours case=%s_load impl=bundle sig=%s cuinit_ms=%.3f load_ms=%.3f open_ms=%.3f "
               "first_call_ms=%.3f warm_call_ms=%.3f cold_ms=%.3f\n",
               o->model, signame, cuinit, load, open_ms, call[0], call[1], load + open_ms + call[0]);
        b.close(b.g);
    } else {
        const char *cache = getenv("SSMC_CACHE_DIR");
        t0 = now_ms();
        compile_model(&s, o);
        double compile = now_ms() - t0;
        alloc_tensors(&s, o, 1, 2);
        double call[2];
        for (int k = 0; k < 2; k++) {
            t0 = now_ms();
            if (jit_step(&s, 1, 2, NULL) != SSMC_OK) fail(o, "decode", ssmc_ctx_error(s.ctx));
            if (rt_cuda_sync(s.gpu, &err)) fail(o, "sync", sb_cstr(&err));
            call[k] = now_ms() - t0;
        }
        printf("BENCH side=ours case=%s_load impl=jit sig=%s cache=%s cuinit_ms=%.3f compile_ms=%.3f "
               "first_call_ms=%.3f warm_call_ms=%.3f cold_ms=%.3f\n",
               o->model, signame, cache ? cache : "default", cuinit, compile, call[0], call[1], compile + call[0]);
    }
    free_tensors(&s);
    ssmc_model_free(s.m);
    ssmc_ctx_free(s.ctx);
    rt_cuda_close(s.gpu);
    sb_free(&err);
}

/* The median of `iters` steps, each after an L2 flush, each timed by events. */
static double time_steps(setup *s, const opts *o, bundle *b, int64_t batch, int64_t rows, CUstream st,
                         CUdeviceptr flush)
{
    strbuf err = {0};
    int n = o->iters;
    CUevent *ev = calloc((size_t)n * 2, sizeof *ev);
    double *ms = calloc((size_t)n, sizeof *ms);
    for (int i = 0; i < 2 * n; i++)
        if (rt_cuda_event_new(s->gpu, &ev[i], &err)) fail(o, "event", sb_cstr(&err));
    void *p[MAXT];
    for (int i = -5; i < n; i++) { /* 5 warm-up steps */
        rt_cuda_memset_async(s->gpu, flush, (unsigned char)i, FLUSH_BYTES, st, &err);
        if (i >= 0) rt_cuda_event_record(s->gpu, ev[2 * i], st, &err);
        int rc = b ? b->step(b->g, o->sig, batch, pointers(s, p), (const int32_t *)(uintptr_t)s->idx, NULL, st)
                   : (int)jit_step(s, batch, rows, st);
        if (rc != 0) fail(o, "decode", b ? b->error(b->g) : ssmc_ctx_error(s->ctx));
        if (i >= 0) rt_cuda_event_record(s->gpu, ev[2 * i + 1], st, &err);
    }
    if (rt_cuda_stream_sync(s->gpu, st, &err)) fail(o, "sync", sb_cstr(&err));
    for (int i = 0; i < n; i++) {
        float f = 0;
        rt_cuda_event_elapsed(s->gpu, ev[2 * i], ev[2 * i + 1], &f, &err);
        ms[i] = f;
    }
    qsort(ms, (size_t)n, sizeof *ms, cmp_double);
    double med = n % 2 ? ms[n / 2] : 0.5 * (ms[n / 2 - 1] + ms[n / 2]);
    for (int i = 0; i < 2 * n; i++) rt_cuda_event_free(s->gpu, ev[i], &err);
    free(ev);
    free(ms);
    sb_free(&err);
    return med;
}

static void do_decode(const opts *o)
{
    setup s = {0};
    strbuf err = {0};
    if (!parse_dtypes(o->dtypes, s.sig)) fail(o, "dtypes", o->dtypes);
    if (rt_cuda_open(&s.gpu, &err) != SSMC_OK) fail(o, "gpu", sb_cstr(&err));
    bundle b = {0};
    load_bundle(&b, o);
    if (b.open(0, &b.g) != 0) fail(o, "open", b.error(b.g));
    compile_model(&s, o);
    CUstream st;
    CUdeviceptr flush;
    if (rt_cuda_stream_new(s.gpu, &st, &err) || rt_cuda_alloc(s.gpu, FLUSH_BYTES, &flush, &err))
        fail(o, "stream", sb_cstr(&err));
    static const int64_t batches[] = {1, 16, 64, 256};
    for (int k = 0; k < 4; k++) {
        int64_t batch = batches[k], rows = 2 * batch;
        alloc_tensors(&s, o, batch, rows);
        for (int which = 0; which < 2; which++) {
            double ms = time_steps(&s, o, which ? NULL : &b, batch, rows, st, flush);
            double floor_ms = (double)s.moved / PEAK_BPS * 1e3;
            printf("BENCH side=ours case=%s_decode_b%lld impl=%s sig=%s batch=%lld rows=%lld bytes=%zu ms=%.5f "
                   "floor_ms=%.5f gbps=%.1f pct=%.1f\n",
                   o->model, (long long)batch, which ? "jit" : "bundle", o->dtypes, (long long)batch, (long long)rows,
                   s.moved, ms, floor_ms, (double)s.moved / (ms * 1e-3) / 1e9, 100 * floor_ms / ms);
            fflush(stdout);
        }
        free_tensors(&s);
    }
    rt_cuda_free(s.gpu, flush, &err);
    rt_cuda_stream_free(s.gpu, st, &err);
    b.close(b.g);
    ssmc_model_free(s.m);
    ssmc_ctx_free(s.ctx);
    rt_cuda_close(s.gpu);
    sb_free(&err);
}

int main(int argc, char **argv)
{
    opts o = {.repo = ".", .iters = 100, .mode = "decode", .dtypes = "bf16/f32/f32"};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v && strcmp(a, "--decode")) {
            fprintf(stderr, "bench_decode: %s takes a value\n", a);
            return 2;
        }
        if (!strcmp(a, "--repo")) o.repo = v, i++;
        else if (!strcmp(a, "--bundle")) o.bundle = v, i++;
        else if (!strcmp(a, "--model")) o.model = v, i++;
        else if (!strcmp(a, "--dims")) o.dims = v, i++;
        else if (!strcmp(a, "--dtypes")) o.dtypes = v, i++;
        else if (!strcmp(a, "--sig")) o.sig = atoi(v), i++;
        else if (!strcmp(a, "--iters")) o.iters = atoi(v), i++;
        else if (!strcmp(a, "--load")) o.mode = v, i++;
        else if (!strcmp(a, "--decode")) o.mode = "decode";
        else {
            fprintf(stderr, "bench_decode: unknown argument %s\n", a);
            return 2;
        }
    }
    if (!o.bundle || !o.model || !o.dims || o.iters < 1) {
        fprintf(stderr, "usage: bench_decode --repo R --bundle LIB.so --model M --dims H=..,.. --sig K --dtypes IO/P/S "
                        "(--load bundle|jit | --decode) [--iters N]\n");
        return 2;
    }
    if (!strcmp(o.mode, "decode")) do_decode(&o);
    else do_load(&o, !strcmp(o.mode, "jit"));
    return 0;
}
