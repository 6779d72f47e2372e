/* cpu_harness.c: see cpu_harness.h. */
#include "cpu_harness.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "support/dtype.h"
#include "support/support.h"

char *harness_read_source(const char *rel, size_t *len)
{
    const char *root = getenv("SSMC_SOURCE_DIR"); /* set by ctest */
    if (!root) root = ".";
    size_t n = strlen(root) + strlen(rel) + 2;
    char *path = malloc(n);
    if (!path) return NULL;
    snprintf(path, n, "%s/%s", root, rel);
    const char *why;
    char *text = read_file(path, len, &why);
    free(path);
    return text;
}

ssmc_status harness_compile_model(ssmc_ctx *ctx, const char *name, const char *source, size_t len, const char *model,
                                  const ssmc_dim *dims, int ndims, ssmc_device device, int threads, ssmc_model **out)
{
    ssmc_options o = {0};
    o.model = model;
    o.dims = dims;
    o.ndims = ndims;
    o.device = device;
    o.threads = threads;
    return ssmc_compile(ctx, name, source, len, &o, out);
}

ssmc_status harness_compile(ssmc_ctx *ctx, const char *name, const char *source, size_t len, const ssmc_dim *dims,
                            int ndims, ssmc_device device, int threads, ssmc_model **out)
{
    return harness_compile_model(ctx, name, source, len, NULL, dims, ndims, device, threads, out);
}

bool harness_cpu_available(void)
{
    static const char src[] = "model probe { dim N = 1; input x[T,N]; output y[T,N]; y[t,n] = x[t,n]; }";
    ssmc_ctx *ctx = ssmc_ctx_new();
    ssmc_model *m = NULL;
    ssmc_status s = harness_compile(ctx, "probe.ssm", src, sizeof src - 1, NULL, 0, SSMC_DEVICE_CPU, 1, &m);
    ssmc_model_free(m);
    ssmc_ctx_free(ctx);
    return s != SSMC_ERR_UNSUPPORTED;
}

uint64_t harness_seed(void)
{
    const char *env = getenv("SSMC_TEST_SEED");
    return env && *env ? strtoull(env, NULL, 0) : (uint64_t)time(NULL);
}

static uint64_t next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void harness_compare(ssmc_model *cpu, ssmc_model *ref, const harness_run *r, harness_result *res)
{
    memset(res, 0, sizeof *res);
    int n = ssmc_model_num_tensors(cpu);
    ssmc_tensor_info *info = calloc((size_t)(n > 0 ? n : 1), sizeof *info);
    size_t *count = calloc((size_t)(n > 0 ? n : 1), sizeof *count);
    void **data = calloc((size_t)(n > 0 ? n : 1), sizeof *data);
    char **raw = calloc((size_t)(n > 0 ? n : 1), sizeof *raw); /* what data[i] points into */
    double **rdata = calloc((size_t)(n > 0 ? n : 1), sizeof *rdata);
    ssmc_arg *args = calloc((size_t)(n > 0 ? n : 1), sizeof *args), *rargs = calloc((size_t)(n > 0 ? n : 1), sizeof *rargs);
    uint64_t rng = r->seed;
    int na = 0, nra = 0;
    bool skipped = false;
    bool ok = info && count && data && raw && rdata && args && rargs;
    if (!ok) snprintf(res->why, sizeof res->why, "out of memory in the test");
    for (int i = 0; ok && i < n; i++) {
        ssmc_model_tensor(cpu, i, &info[i]);
        size_t c = 1;
        for (int j = 0; j < info[i].rank; j++) c *= (size_t)info[i].shape[j];
        if (info[i].role != SSMC_PARAM) c *= (size_t)r->batch;
        if (info[i].per_step) c *= (size_t)r->T;
        count[i] = c;
        raw[i] = malloc((c ? c : 1) * dtype_size(r->dtype) + 128);
        data[i] = raw[i] ? raw[i] + (64 - (uintptr_t)raw[i] % 64) % 64 + (r->misalign ? 8 : 0) : NULL;
        rdata[i] = malloc((c ? c : 1) * sizeof(double));
        if (!data[i] || !rdata[i]) {
            ok = false;
            snprintf(res->why, sizeof res->why, "out of memory in the test");
            break;
        }
        double lo = -1, hi = 1;
        for (const harness_range *g = r->ranges; g && g->name; g++)
            if (strcmp(g->name, info[i].name) == 0) lo = g->lo, hi = g->hi;
        bool is_state = info[i].role == SSMC_STATE;
        for (size_t k = 0; k < c; k++) {
            double v;
            if (info[i].role == SSMC_OUTPUT || (is_state && r->final_only))
                v = NAN; /* poison: outputs, and states only written */
            else if (is_state && !r->random_state)
                v = 0;
            else
                v = lo + (hi - lo) * (double)(next(&rng) >> 11) * 0x1.0p-53;
            dtype_set(data[i], r->dtype, k, v);
            rdata[i][k] = info[i].role == SSMC_OUTPUT ? NAN : dtype_get(data[i], r->dtype, k);
        }
        bool give = !(is_state && r->no_state);
        if (info[i].role == SSMC_OUTPUT && r->skip_outputs && !skipped) give = false, skipped = true;
        unsigned flags = is_state && r->final_only ? SSMC_ARG_FINAL_ONLY : 0;
        if (give) args[na++] = (ssmc_arg){info[i].name, r->dtype, data[i], flags};
        if (give || info[i].role == SSMC_OUTPUT) rargs[nra++] = (ssmc_arg){info[i].name, SSMC_F64, rdata[i], flags};
    }
    if (ok && ssmc_run(cpu, r->batch, r->T, args, na) != SSMC_OK) {
        ok = false;
        snprintf(res->why, sizeof res->why, "the run failed");
    }
    if (ok && ssmc_run(ref, r->batch, r->T, rargs, nra) != SSMC_OK) {
        ok = false;
        snprintf(res->why, sizeof res->why, "the reference run failed");
    }
    for (int i = 0; ok && i < n; i++) {
        bool given = false;
        for (int k = 0; k < na; k++) given |= args[k].data == data[i];
        if (info[i].role == SSMC_OUTPUT && !given) {
            /* not asked for: the poison must still be there */
            for (size_t k = 0; k < count[i]; k++)
                if (!isnan(dtype_get(data[i], r->dtype, k))) {
                    ok = false;
                    snprintf(res->why, sizeof res->why, "output '%s' was not asked for but was written",
                             info[i].name);
                    break;
                }
            continue;
        }
        if ((info[i].role != SSMC_OUTPUT && info[i].role != SSMC_STATE) || !given) continue;
        double maxref = 0, maxdiff = 0;
        for (size_t k = 0; k < count[i]; k++) {
            double g = dtype_get(data[i], r->dtype, k), f = rdata[i][k];
            if (!isfinite(g) || !isfinite(f)) {
                ok = false;
                snprintf(res->why, sizeof res->why, "%s '%s' holds a non-finite value at %zu: got %g, reference %g",
                         info[i].role == SSMC_OUTPUT ? "output" : "final state", info[i].name, k, g, f);
                break;
            }
            maxref = fmax(maxref, fabs(f));
            maxdiff = fmax(maxdiff, fabs(g - f));
        }
        if (!ok) break;
        double rel = maxref > 0 ? maxdiff / maxref : maxdiff;
        res->checked++;
        if (rel >= res->worst) {
            res->worst = rel;
            res->worst_name = info[i].name;
        }
    }
    res->ok = ok;
    for (int i = 0; i < n; i++) {
        if (raw) free(raw[i]);
        if (rdata) free(rdata[i]);
    }
    free(info);
    free(count);
    free(data);
    free(raw);
    free(rdata);
    free(args);
    free(rargs);
}
