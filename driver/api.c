/* api.c: the public API (include/ssmc.h). The compile pipeline reads top to
 * bottom in compile_ir: parse, pick the model, check with the -D overrides,
 * lower to IR, verify. Backends (backend.h) take the verified IR from there.
 * Everything allocated for a model lives in its arena. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "support/dtype.h"
#include "build.h"
#include "frontend/ast.h"
#include "ir/ir.h"
#include "passes/passes.h"

struct ssmc_ctx {
    diag diag;
};

struct ssmc_model {
    ssmc_ctx *ctx;
    arena arena;
    src_file file;
    ir_model *ir;
    ssmc_options opts;
    const backend *be;
    void *be_state;
};

ssmc_ctx *ssmc_ctx_new(void) { return calloc(1, sizeof(ssmc_ctx)); }

void ssmc_ctx_free(ssmc_ctx *ctx)
{
    if (!ctx) return;
    diag_free(&ctx->diag);
    free(ctx);
}

const char *ssmc_ctx_error(const ssmc_ctx *ctx) { return ctx && ctx->diag.text.data ? ctx->diag.text.data : ""; }

void ssmc_ctx_set_diag_callback(ssmc_ctx *ctx, void (*fn)(void *ud, const char *msg), void *ud)
{
    if (!ctx) return;
    ctx->diag.callback = fn;
    ctx->diag.ud = ud;
}

const char *ssmc_status_name(ssmc_status s)
{
    static const char *names[] = {"ok", "source error", "bad argument", "i/o error", "out of memory",
                                  "unsupported", "backend error", "non-finite value"};
    return (unsigned)s < sizeof names / sizeof *names ? names[s] : "unknown status";
}

/* Parses the source into a; returns the file's tree or NULL. */
static ast_file *parse(arena *a, diag *d, src_file *f, const char *filename, const char *source, size_t len)
{
    if (len > SSMC_MAX_SOURCE_BYTES) {
        diag_error(d, "%s: the source is %zu bytes, more than the limit of %zu (64 MiB)", filename ? filename : "<input>",
                   len, SSMC_MAX_SOURCE_BYTES);
        return NULL;
    }
    char *text = arena_alloc(a, len + 1);
    if (!text) {
        diag_error(d, "out of memory");
        return NULL;
    }
    if (len) memcpy(text, source, len);
    f->name = arena_strdup(a, filename ? filename : "<input>");
    f->text = text;
    f->len = len;
    return parse_file(a, d, f);
}

static ast_model *pick_model(diag *d, ast_file *af, const char *name)
{
    if (!name) return &af->models[0];
    for (int i = 0; i < af->nmodels; i++)
        if (strcmp(af->models[i].name, name) == 0) return &af->models[i];
    strbuf names = {0};
    for (int i = 0; i < af->nmodels; i++) sb_printf(&names, "%s%s", i ? ", " : "", af->models[i].name);
    diag_error(d, "no model named '%s' (the file has: %s)", name, sb_cstr(&names));
    sb_free(&names);
    return NULL;
}

/* One model of a parsed file to verified IR: checked with the -D overrides
 * (annotating the tree, in the tree's arena ta), lowered and verified in a. */
static ir_model *model_ir(arena *ta, arena *a, diag *d, const src_file *f, ast_model *am, const ssmc_options *o)
{
    ast_dim_override *over = arena_array(a, (size_t)(o->ndims > 0 ? o->ndims : 1), sizeof *over);
    if (!over) return NULL;
    for (int i = 0; i < o->ndims; i++) over[i] = (ast_dim_override){o->dims[i].name, o->dims[i].value};
    if (!check_model(ta, d, f, am, over, o->ndims)) return NULL;
    ir_model *m = ir_lower(a, d, f, am);
    if (!m || !ir_verify(m, d)) return NULL;
    return m;
}

/* The front half of the pipeline: source to verified IR. */
static ir_model *compile_ir(arena *a, diag *d, src_file *f, const char *filename, const char *source, size_t len,
                            const ssmc_options *o)
{
    ast_file *af = parse(a, d, f, filename, source, len);
    if (!af) return NULL;
    ast_model *am = pick_model(d, af, o->model);
    if (!am) return NULL;
    return model_ir(a, a, d, f, am, o);
}

static const ssmc_options default_options;

/* The arguments every entry point that takes a source shares, and every field
 * of the options that the library would otherwise trust: SSMC_ERR_ARG with a
 * message rather than a crash (the pointers) or a wrong message later (an
 * enum out of range). */
ssmc_status api_check_call(diag *d, const char *source, size_t len, const ssmc_options *o)
{
    if (!source && len) {
        diag_error(d, "the source is NULL but its length is %zu", len);
        return SSMC_ERR_ARG;
    }
    if (o->ndims < 0 || (o->ndims > 0 && !o->dims)) {
        diag_error(d, "options: dims is %s but ndims is %d", o->dims ? "given" : "NULL", o->ndims);
        return SSMC_ERR_ARG;
    }
    for (int i = 0; i < o->ndims; i++)
        if (!o->dims[i].name) {
            diag_error(d, "options: dim %d has no name (NULL)", i);
            return SSMC_ERR_ARG;
        }
    if ((unsigned)o->device > SSMC_DEVICE_CUDA) {
        diag_error(d, "options: unknown device %d (expected SSMC_DEVICE_INTERP, SSMC_DEVICE_CPU or SSMC_DEVICE_CUDA)",
                   (int)o->device);
        return SSMC_ERR_ARG;
    }
    if ((unsigned)o->algo > SSMC_ALGO_SCAN) {
        diag_error(d, "options: unknown algorithm %d (expected auto, recurrent, chunked or scan)", (int)o->algo);
        return SSMC_ERR_ARG;
    }
    if (o->threads < 0) {
        diag_error(d, "options: threads is %d (0 means one per core)", o->threads);
        return SSMC_ERR_ARG;
    }
    return SSMC_OK;
}

/* The algorithm override (SPEC §3), one rule for every device and for
 * ssmc_compile, ssmc_emit and ssmc_build alike: this version generates the
 * recurrent algorithm only, so chunked and scan are refused (never a silent
 * fallback), whatever the device. */
static ssmc_status check_algo(diag *d, ssmc_algo algo)
{
    if (algo != SSMC_ALGO_CHUNKED && algo != SSMC_ALGO_SCAN) return SSMC_OK; /* auto, recurrent */
    diag_error(d, "--algo=%s is not implemented yet: every device runs the recurrent algorithm "
               "(use --algo=recurrent or auto, or leave --algo out)",
               algo == SSMC_ALGO_CHUNKED ? "chunked" : "scan");
    return SSMC_ERR_UNSUPPORTED;
}

ssmc_status ssmc_compile(ssmc_ctx *ctx, const char *filename, const char *source, size_t len,
                         const ssmc_options *opts, ssmc_model **out)
{
    if (out) *out = NULL;
    if (!ctx) return SSMC_ERR_ARG;
    diag_reset(&ctx->diag);
    if (!out) {
        diag_error(&ctx->diag, "ssmc_compile: out is NULL");
        return SSMC_ERR_ARG;
    }
    const ssmc_options *o = opts ? opts : &default_options;
    ssmc_status cs = api_check_call(&ctx->diag, source, len, o);
    if (cs != SSMC_OK) return cs;
    ssmc_model *m = calloc(1, sizeof *m);
    if (!m) {
        diag_error(&ctx->diag, "out of memory");
        return SSMC_ERR_NOMEM;
    }
    m->ctx = ctx;
    arena_init(&m->arena);
    m->opts = *o;
    m->opts.dims = NULL;
    m->opts.ndims = 0;
    if (o->model) m->opts.model = arena_strdup(&m->arena, o->model);
    if (o->cuda_arch) m->opts.cuda_arch = arena_strdup(&m->arena, o->cuda_arch);
    m->ir = compile_ir(&m->arena, &ctx->diag, &m->file, filename, source, len, o);
    if (!m->ir) {
        ssmc_status s = m->arena.failed ? SSMC_ERR_NOMEM : SSMC_ERR_SOURCE;
        ssmc_model_free(m);
        return s;
    }
    if ((cs = check_algo(&ctx->diag, o->algo)) != SSMC_OK) {
        ssmc_model_free(m);
        return cs;
    }
    if (o->device != SSMC_DEVICE_INTERP) {
        m->be = backend_for(o->device);
        if (!m->be) {
            diag_error(&ctx->diag, "the %s backend is not available in this build",
                       o->device == SSMC_DEVICE_CPU ? "cpu (LLVM)" : "cuda");
            ssmc_model_free(m);
            return SSMC_ERR_UNSUPPORTED;
        }
        ssmc_status s = m->be->compile(m->ir, &m->opts, &ctx->diag, &m->be_state);
        if (s != SSMC_OK) {
            ssmc_model_free(m);
            return s;
        }
    }
    *out = m;
    return SSMC_OK;
}

void ssmc_model_free(ssmc_model *m)
{
    if (!m) return;
    if (m->be && m->be_state) m->be->free(m->be_state);
    arena_free(&m->arena);
    free(m);
}

ssmc_status ssmc_check(ssmc_ctx *ctx, const char *filename, const char *source, size_t len,
                       const ssmc_options *opts)
{
    if (!ctx) return SSMC_ERR_ARG;
    diag_reset(&ctx->diag);
    ssmc_options o = opts ? *opts : default_options;
    ssmc_status cs = api_check_call(&ctx->diag, source, len, &o);
    if (cs != SSMC_OK) return cs;
    arena a;
    arena_init(&a);
    src_file f;
    ast_file *af = parse(&a, &ctx->diag, &f, filename, source, len);
    ssmc_status s = af ? SSMC_OK : SSMC_ERR_SOURCE;
    /* one parse for the file (each model's check annotates its own part of
     * the tree, once); each model's IR and analysis in an arena of its own */
    for (int i = 0; af && i < af->nmodels; i++) {
        if (opts && opts->model && strcmp(opts->model, af->models[i].name) != 0) continue;
        arena ma;
        arena_init(&ma);
        pass_analysis an;
        ir_model *m = model_ir(&a, &ma, &ctx->diag, &f, &af->models[i], &o);
        if (!m || !pass_analyze(&ma, m, &an, &ctx->diag))
            s = ma.failed || a.failed ? SSMC_ERR_NOMEM : SSMC_ERR_SOURCE;
        arena_free(&ma);
    }
    if (af && opts && opts->model && !pick_model(&ctx->diag, af, opts->model)) s = SSMC_ERR_SOURCE;
    arena_free(&a);
    return s;
}

ssmc_status ssmc_emit(ssmc_ctx *ctx, const char *filename, const char *source, size_t len,
                      const ssmc_options *opts, ssmc_emit_kind kind, char **text)
{
    if (text) *text = NULL;
    if (!ctx) return SSMC_ERR_ARG;
    diag_reset(&ctx->diag);
    if (!text) {
        diag_error(&ctx->diag, "ssmc_emit: text is NULL");
        return SSMC_ERR_ARG;
    }
    const ssmc_options *o = opts ? opts : &default_options;
    ssmc_status cs = api_check_call(&ctx->diag, source, len, o);
    if (cs != SSMC_OK) return cs;
    if ((unsigned)kind > SSMC_EMIT_PTX) {
        diag_error(&ctx->diag, "ssmc_emit: unknown emit kind %d", (int)kind);
        return SSMC_ERR_ARG;
    }
    arena a;
    arena_init(&a);
    src_file f;
    strbuf out = {0};
    ssmc_status s = SSMC_OK;
    if (kind == SSMC_EMIT_AST) {
        ast_file *af = parse(&a, &ctx->diag, &f, filename, source, len);
        if (af)
            ast_print(&out, af);
        else
            s = SSMC_ERR_SOURCE;
    } else {
        ir_model *m = compile_ir(&a, &ctx->diag, &f, filename, source, len, o);
        if (!m) {
            s = SSMC_ERR_SOURCE;
        } else if (kind == SSMC_EMIT_IR) {
            ir_print(&out, m);
        } else if (kind == SSMC_EMIT_ANALYSIS) {
            pass_analysis an;
            if (pass_analyze(&a, m, &an, &ctx->diag))
                pass_analysis_print(&out, m, &an);
            else
                s = SSMC_ERR_SOURCE;
        } else {
            ssmc_device dev = kind == SSMC_EMIT_LLVM ? SSMC_DEVICE_CPU : SSMC_DEVICE_CUDA;
            const backend *be = backend_for(dev);
            if ((s = check_algo(&ctx->diag, o->algo)) != SSMC_OK) {
                /* generated code is the algorithm's: the same rule as compiling */
            } else if (!be) {
                diag_error(&ctx->diag, "--emit=%s needs the %s backend, which this build lacks",
                           kind == SSMC_EMIT_LLVM ? "llvm" : kind == SSMC_EMIT_CUDA ? "cuda" : "ptx",
                           dev == SSMC_DEVICE_CPU ? "cpu (LLVM)" : "cuda");
                s = SSMC_ERR_UNSUPPORTED;
            } else {
                s = be->emit(m, o, kind, &out, &ctx->diag);
            }
        }
    }
    if (a.failed || out.failed) {
        diag_error(&ctx->diag, "out of memory");
        s = SSMC_ERR_NOMEM;
    }
    if (s == SSMC_OK) *text = sb_take(&out);
    sb_free(&out);
    arena_free(&a);
    return s;
}

const char *ssmc_model_name(const ssmc_model *m) { return m ? m->ir->name : ""; }
const ir_model *api_model_ir(const ssmc_model *m) { return m->ir; }
diag *api_ctx_diag(ssmc_ctx *ctx) { return &ctx->diag; }
int ssmc_model_num_tensors(const ssmc_model *m)
{
    if (!m) return 0;
    int n = 0;
    for (uint32_t i = 0; i < m->ir->ntensors; i++) n += m->ir->tensors[i].kind != IR_LET;
    return n;
}

/* Public tensor i is the i-th IR tensor that is not a let. */
static int public_to_ir(const ssmc_model *m, int i)
{
    for (uint32_t k = 0; k < m->ir->ntensors; k++)
        if (m->ir->tensors[k].kind != IR_LET && i-- == 0) return (int)k;
    return -1;
}

ssmc_status ssmc_model_tensor(const ssmc_model *m, int i, ssmc_tensor_info *info)
{
    int k = m && info && i >= 0 ? public_to_ir(m, i) : -1;
    if (k < 0) return SSMC_ERR_ARG;
    const ir_tensor *t = &m->ir->tensors[k];
    static const ssmc_role roles[] = {[IR_INPUT] = SSMC_INPUT, [IR_PARAM] = SSMC_PARAM, [IR_STATE] = SSMC_STATE,
                                      [IR_OUTPUT] = SSMC_OUTPUT};
    memset(info, 0, sizeof *info);
    info->name = t->name;
    info->role = roles[t->kind];
    info->per_step = t->per_step;
    info->rank = t->rank;
    for (int j = 0; j < t->rank; j++) info->shape[j] = m->ir->dims[t->dims[j]].value;
    return SSMC_OK;
}

int ssmc_model_find(const ssmc_model *m, const char *name)
{
    if (!m || !name) return -1;
    for (int i = 0; i < ssmc_model_num_tensors(m); i++)
        if (strcmp(m->ir->tensors[public_to_ir(m, i)].name, name) == 0) return i;
    return -1;
}

/* floor(dtype) + 4 u L (u = 2^-24; L: the tensor's rounding length, in which
 * a state whose update is the identity plus a term, a running sum over the
 * whole run, carries 2 sqrt(T) more at each of rounding.c's two walks: its
 * rounding errors add up as a random walk, and a final value that cancels
 * makes them larger relative to it). The floor: the earlier fixed
 * tolerances, which held every example; f16 and bf16 for the rounding of the
 * tensors themselves. */
double ssmc_model_tolerance(const ssmc_model *m, int i, ssmc_dtype dtype, int64_t T)
{
    int k = m && i >= 0 ? public_to_ir(m, i) : -1;
    if (k < 0 || (unsigned)dtype > SSMC_F64 || T < 1) return -1;
    const ir_model *ir = m->ir;
    if (ir->tensors[k].kind != IR_OUTPUT && ir->tensors[k].kind != IR_STATE) return -1;
    double *len = calloc(ir->ntensors, sizeof *len), *carried = calloc(ir->ntensors, sizeof *carried);
    arena a;
    arena_init(&a);
    diag d = {0};
    pass_analysis an;
    double tol = -1;
    if (len && carried) {
        if (pass_analyze(&a, ir, &an, &d))
            for (int s = 0; s < an.nstates; s++)
                if (an.states[s].cls == PASS_CLASS_IDENTITY) carried[an.states[s].tensor] = 2 * sqrt((double)T);
        pass_rounding(ir, carried, len);
        double floor = dtype == SSMC_F16 ? 1e-2 : dtype == SSMC_BF16 ? 2e-2 : 1e-5;
        tol = floor + 4 * 0x1p-24 * len[k];
    }
    diag_free(&d);
    arena_free(&a);
    free(len);
    free(carried);
    return tol;
}

/* ---- running ---- */

/* Elements of tensor t for a run: [B, T, ...] for per-step, [B, ...] for
 * states, [...] for params. False when the count overflows. */
static bool run_elems(const ir_model *m, const ir_tensor *t, int64_t batch, int64_t T, size_t *out)
{
    size_t n = (size_t)ir_tensor_elems(m, t);
    if (t->kind == IR_PARAM) {
        *out = n;
        return true;
    }
    if (mul_overflows(n, (size_t)batch, &n)) return false;
    if (t->per_step && mul_overflows(n, (size_t)T, &n)) return false;
    *out = n;
    return true;
}

static ssmc_status run_interp(ssmc_model *m, int64_t batch, int64_t T, const backend_tensor *bt)
{
    const ir_model *ir = m->ir;
    diag *d = &m->ctx->diag;
    double **data = calloc(ir->ntensors ? ir->ntensors : 1, sizeof *data);
    ssmc_status s = data ? SSMC_OK : SSMC_ERR_NOMEM;
    for (uint32_t i = 0; s == SSMC_OK && i < ir->ntensors; i++) {
        const ir_tensor *t = &ir->tensors[i];
        if (!bt[i].data) continue;
        size_t n = 0; /* ssmc_run checked that the sizes do not overflow */
        run_elems(ir, t, batch, T, &n);
        data[i] = malloc((n ? n : 1) * sizeof(double));
        if (!data[i]) {
            s = SSMC_ERR_NOMEM;
            break;
        }
        if (t->kind != IR_OUTPUT)
            for (size_t k = 0; k < n; k++) data[i][k] = dtype_get(bt[i].data, bt[i].dtype, k);
    }
    if (s == SSMC_OK) {
        ir_interp_args args = {.batch = batch, .T = T, .data = data};
        if (!ir_interp(ir, &args, d)) s = SSMC_ERR_NOMEM;
    }
    for (uint32_t i = 0; s == SSMC_OK && i < ir->ntensors; i++) {
        const ir_tensor *t = &ir->tensors[i];
        if (!bt[i].data || (t->kind != IR_OUTPUT && t->kind != IR_STATE)) continue;
        size_t n = 0; /* ssmc_run checked that the sizes do not overflow */
        run_elems(ir, t, batch, T, &n);
        for (size_t k = 0; k < n; k++) dtype_set(bt[i].data, bt[i].dtype, k, data[i][k]);
    }
    if (s == SSMC_ERR_NOMEM && d->nerrors == 0) diag_error(d, "out of memory");
    for (uint32_t i = 0; data && i < ir->ntensors; i++) free(data[i]);
    free(data);
    return s;
}

/* when: "" for the tensors handed in, " after the run" for the results */
static bool check_finite(const ir_model *ir, const ir_tensor *t, const backend_tensor *bt, int64_t batch, int64_t T,
                         diag *d, const char *when)
{
    size_t n = 0;
    run_elems(ir, t, batch, T, &n);
    for (size_t k = 0; k < n; k++) {
        double v = dtype_get(bt->data, bt->dtype, k);
        if (!isfinite(v)) {
            diag_error(d, "%s '%s' holds a non-finite value (%g) at flat index %zu%s", ir_kind_names[t->kind], t->name,
                       v, k, when);
            return false;
        }
    }
    return true;
}

/* ssmc_run and ssmc_run_device: the arguments checked once, then the device
 * (or the interpreter) runs. Device tensors cannot be checked for finiteness. */
static ssmc_status run_common(ssmc_model *m, int64_t batch, int64_t T, const ssmc_arg *args, int nargs, bool on_device,
                              void *stream)
{
    if (!m) return SSMC_ERR_ARG;
    diag *d = &m->ctx->diag;
    diag_reset(d);
    if (nargs < 0 || (nargs > 0 && !args)) {
        diag_error(d, "args is %s but nargs is %d", args ? "given" : "NULL", nargs);
        return SSMC_ERR_ARG;
    }
    const ir_model *ir = m->ir;
    if (on_device && !(m->be && m->be->run_device)) {
        diag_error(d, "ssmc_run_device needs a model compiled for the cuda device");
        return SSMC_ERR_UNSUPPORTED;
    }
    if (batch < 1 || T < 1) {
        diag_error(d, "batch and T must be at least 1 (got batch %lld, T %lld)", (long long)batch, (long long)T);
        return SSMC_ERR_ARG;
    }
    backend_tensor *bt = calloc(ir->ntensors ? ir->ntensors : 1, sizeof *bt);
    if (!bt) {
        diag_error(d, "out of memory");
        return SSMC_ERR_NOMEM;
    }
    ssmc_status s = SSMC_OK;
    for (int i = 0; s == SSMC_OK && i < nargs; i++) {
        int k = args[i].name ? ir_find_tensor(ir, args[i].name) : -1;
        if (k < 0 || ir->tensors[k].kind == IR_LET) {
            diag_error(d, "model '%s' has no input, param, state or output named '%s'", ir->name,
                       args[i].name ? args[i].name : "(null)");
            s = SSMC_ERR_ARG;
        } else if (bt[k].data) {
            diag_error(d, "tensor '%s' is given twice", args[i].name);
            s = SSMC_ERR_ARG;
        } else if (!args[i].data) {
            diag_error(d, "tensor '%s' has no data", args[i].name);
            s = SSMC_ERR_ARG;
        } else if ((unsigned)args[i].dtype > SSMC_F64) {
            diag_error(d, "tensor '%s' has an unknown dtype", args[i].name);
            s = SSMC_ERR_ARG;
        } else {
            bt[k] = (backend_tensor){args[i].data, args[i].dtype};
        }
    }
    for (uint32_t i = 0; s == SSMC_OK && i < ir->ntensors; i++) {
        const ir_tensor *t = &ir->tensors[i];
        size_t n;
        if (!run_elems(ir, t, batch, T, &n) || n > ((size_t)1 << 46)) {
            diag_error(d, "%s '%s' would have too many elements for batch %lld, T %lld", ir_kind_names[t->kind],
                       t->name, (long long)batch, (long long)T);
            s = SSMC_ERR_ARG;
        } else if ((t->kind == IR_INPUT || t->kind == IR_PARAM) && !bt[i].data) {
            diag_error(d, "missing %s '%s'", ir_kind_names[t->kind], t->name);
            s = SSMC_ERR_ARG;
        } else if (!on_device && m->opts.check_finite && bt[i].data && t->kind != IR_OUTPUT &&
                   !check_finite(ir, t, &bt[i], batch, T, d, "")) {
            s = SSMC_ERR_NUMERIC;
        }
    }
    if (s == SSMC_OK && on_device)
        s = m->be->run_device(m->be_state, batch, T, bt, stream, d);
    else if (s == SSMC_OK)
        s = m->be ? m->be->run(m->be_state, batch, T, bt, d) : run_interp(m, batch, T, bt);
    for (uint32_t i = 0; s == SSMC_OK && !on_device && m->opts.check_finite && i < ir->ntensors; i++) {
        const ir_tensor *t = &ir->tensors[i];
        if (bt[i].data && (t->kind == IR_OUTPUT || t->kind == IR_STATE) &&
            !check_finite(ir, t, &bt[i], batch, T, d, " after the run"))
            s = SSMC_ERR_NUMERIC;
    }
    free(bt);
    return s;
}

ssmc_status ssmc_run(ssmc_model *m, int64_t batch, int64_t T, const ssmc_arg *args, int nargs)
{
    return run_common(m, batch, T, args, nargs, false, NULL);
}

ssmc_status ssmc_run_device(ssmc_model *m, int64_t batch, int64_t T, const ssmc_arg *args, int nargs, void *stream)
{
    return run_common(m, batch, T, args, nargs, true, stream);
}
