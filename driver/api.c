/* api.c: the public API (include/ssmc.h). Compiling runs the pipeline
 * (driver/pipeline.c: parse, check, lower, verify, analysis, schedule,
 * algorithm, plan) for the device's target; the device's backend (backend.h,
 * the table in backends.c) takes the verified IR and its plan from there.
 * Everything allocated for a model lives in its arena. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "codegen/backend.h"
#include "support/dtype.h"
#include "bundle.h"
#include "grad.h"
#include "frontend/ast.h"
#include "ir/ir.h"
#include "passes/passes.h"
#include "pipeline.h"

struct ssmc_ctx {
    diag diag;
};

struct ssmc_model {
    ssmc_ctx *ctx;
    arena arena;
    ir_model *ir;
    ssmc_options opts;
    const backend *be;
    void *be_state;
    const pass_plan *plan; /* its plan (NULL on a backend without a target) */
    grad_state *grad; /* made by the first gradient call (driver/grad.c) */
    grad_chunked *gradc; /* ... of a chunked plan (driver/grad_chunked.c) */
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

static const ssmc_options default_options;

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
    if (!device_title(o->device)) {
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

/* The plan target of a device's backend, or NULL (the interpreter plans nothing). */
static const plan_target *target_of(const backend *be, const ssmc_options *o, plan_target *buf)
{
    if (!be || !be->target) return NULL;
    *buf = be->target(o);
    return buf;
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
    m->be = backend_for(o->device);
    if (!m->be) {
        const char *title = device_title(o->device);
        if (title)
            diag_error(&ctx->diag, "the %s backend is not available in this build", title);
        else
            diag_error(&ctx->diag, "unknown device %d", (int)o->device);
        ssmc_model_free(m);
        return title ? SSMC_ERR_UNSUPPORTED : SSMC_ERR_ARG;
    }
    plan_target tg;
    pipeline pl = {.a = &m->arena, .d = &ctx->diag, .o = o, .target = target_of(m->be, o, &tg)};
    ssmc_status s = pipeline_run(&pl, filename, source, len, PIPE_PLAN);
    m->ir = pl.ir;
    m->plan = pl.plan;
    if (s == SSMC_OK) s = m->be->compile(m->ir, pl.plan, &m->opts, &ctx->diag, &m->be_state);
    if (s != SSMC_OK) {
        ssmc_model_free(m);
        return s;
    }
    *out = m;
    return SSMC_OK;
}

void ssmc_model_free(ssmc_model *m)
{
    if (!m) return;
    grad_state_free(m->grad);
    grad_chunked_free(m->gradc);
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
    pipeline pl = {.a = &a, .d = &ctx->diag, .o = &o};
    ssmc_status s = pipeline_run(&pl, filename, source, len, PIPE_AST);
    /* one parse for the file (each model's check annotates its own part of
     * the tree, once); each model's IR and analysis in an arena of its own */
    for (int i = 0; s == SSMC_OK && i < pl.ast->nmodels; i++) {
        if (opts && opts->model && strcmp(opts->model, pl.ast->models[i].name) != 0) continue;
        arena ma;
        arena_init(&ma);
        pipeline mp = {.a = &ma, .d = &ctx->diag, .o = &o, .file = pl.file, .ast = pl.ast};
        ssmc_status ms = pipeline_run_model(&mp, &pl.ast->models[i], &a, PIPE_ANALYSIS);
        if (ms != SSMC_OK) s = ms == SSMC_ERR_NOMEM || a.failed ? SSMC_ERR_NOMEM : SSMC_ERR_SOURCE;
        arena_free(&ma);
    }
    if (s == SSMC_OK && opts && opts->model) {
        bool found = false;
        for (int i = 0; i < pl.ast->nmodels; i++) found |= strcmp(opts->model, pl.ast->models[i].name) == 0;
        if (!found) {
            strbuf names = {0};
            for (int i = 0; i < pl.ast->nmodels; i++) sb_printf(&names, "%s%s", i ? ", " : "", pl.ast->models[i].name);
            diag_error(&ctx->diag, "no model named '%s' (the file has: %s)", opts->model, sb_cstr(&names));
            sb_free(&names);
            s = SSMC_ERR_SOURCE;
        }
    }
    arena_free(&a);
    return s;
}

/* The device whose generated code an emit kind shows; for the plan, the
 * device asked for (the interpreter has none: the CPU's). */
static ssmc_device emit_device(ssmc_emit_kind kind, ssmc_device asked)
{
    switch (kind) {
    case SSMC_EMIT_LLVM: return SSMC_DEVICE_CPU;
    case SSMC_EMIT_CUDA:
    case SSMC_EMIT_PTX: return SSMC_DEVICE_CUDA;
    default: return asked == SSMC_DEVICE_INTERP ? SSMC_DEVICE_CPU : asked;
    }
}

/* A stage (plan, or a backend's code) of the models a model's gradients
 * run, as driver/grad.c compiles them: the training forward and the adjoint
 * (and an init's), each a model of its own through the stages after the IR,
 * the recurrent algorithm, for `target`. */
static ssmc_status emit_grad_models(arena *a, const ir_model *m, const ssmc_options *o, const plan_target *target,
                                    const backend *be, ssmc_emit_kind kind, strbuf *out, diag *d)
{
    pass_grad pg;
    if (!pass_grad_build(a, m, &pg, d)) return a->failed ? SSMC_ERR_NOMEM : SSMC_ERR_UNSUPPORTED;
    ir_model *models[4] = {pg.forward, pg.adjoint, pg.init ? pg.init->forward : NULL, pg.init ? pg.init->adjoint : NULL};
    ssmc_options ro = *o;
    ro.algo = SSMC_ALGO_RECURRENT;
    for (int i = 0; i < 4; i++) {
        if (!models[i]) continue;
        pipeline pl = {.a = a, .d = d, .o = &ro, .target = target};
        ssmc_status s = pipeline_run_ir(&pl, models[i], PIPE_PLAN);
        if (s == SSMC_OK && kind == SSMC_EMIT_PLAN) plan_print(out, pl.plan);
        else if (s == SSMC_OK) s = be->emit(pl.plan, &ro, kind, out, d);
        if (s != SSMC_OK) return s;
    }
    return SSMC_OK;
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
    bool for_grad = (kind & SSMC_EMIT_FOR_GRAD) != 0;
    kind = (ssmc_emit_kind)(kind & ~SSMC_EMIT_FOR_GRAD);
    if ((unsigned)kind > SSMC_EMIT_GRAD) {
        diag_error(&ctx->diag, "ssmc_emit: unknown emit kind %d", (int)kind);
        return SSMC_ERR_ARG;
    }
    if (for_grad && kind != SSMC_EMIT_PLAN && kind != SSMC_EMIT_LLVM && kind != SSMC_EMIT_CUDA && kind != SSMC_EMIT_PTX) {
        diag_error(&ctx->diag, "ssmc_emit: SSMC_EMIT_FOR_GRAD goes with the plan, llvm, cuda or ptx stage");
        return SSMC_ERR_ARG;
    }
    arena a;
    arena_init(&a);
    strbuf out = {0};
    static const pipe_stage stage_of[] = {[SSMC_EMIT_AST] = PIPE_AST,   [SSMC_EMIT_IR] = PIPE_IR,
                                          [SSMC_EMIT_ANALYSIS] = PIPE_ANALYSIS, [SSMC_EMIT_PLAN] = PIPE_PLAN,
                                          [SSMC_EMIT_LLVM] = PIPE_PLAN, [SSMC_EMIT_CUDA] = PIPE_PLAN,
                                          [SSMC_EMIT_PTX] = PIPE_PLAN, [SSMC_EMIT_GRAD] = PIPE_IR};
    ssmc_status s = SSMC_OK;
    ssmc_device dev = emit_device(kind, o->device);
    const backend *be = backend_for(dev);
    bool code = kind == SSMC_EMIT_LLVM || kind == SSMC_EMIT_CUDA || kind == SSMC_EMIT_PTX;
    if (s == SSMC_OK && code && (!be || !be->emit)) {
        diag_error(&ctx->diag, "--emit=%s needs the %s backend, which this build lacks",
                   kind == SSMC_EMIT_LLVM ? "llvm" : kind == SSMC_EMIT_CUDA ? "cuda" : "ptx", device_title(dev));
        s = SSMC_ERR_UNSUPPORTED;
    }
    plan_target tg;
    const plan_target *target = NULL;
    if (s == SSMC_OK && for_grad && o->algo == SSMC_ALGO_CHUNKED) {
        diag_error(&ctx->diag, "--grad prints the recurrent algorithm's gradient models; a chunked model's "
                               "gradients run its parts' adjoints around the core's backward (docs/chunked.md), "
                               "which it does not print yet: leave --algo out");
        s = SSMC_ERR_UNSUPPORTED;
    }
    if (s == SSMC_OK && stage_of[kind] == PIPE_PLAN) {
        if (be && be->target) {
            target = target_of(be, o, &tg);
        } else if (dev == SSMC_DEVICE_CPU) { /* a plan needs no LLVM */
            tg = plan_target_cpu(o->threads);
            target = &tg;
        }
    }
    pipeline pl = {.a = &a, .d = &ctx->diag, .o = o, .target = target};
    if (s == SSMC_OK) s = pipeline_run(&pl, filename, source, len, for_grad ? PIPE_IR : stage_of[kind]);
    if (s == SSMC_OK && for_grad) {
        s = emit_grad_models(&a, pl.ir, o, target, be, kind, &out, &ctx->diag);
    } else if (s == SSMC_OK) {
        switch (kind) {
        case SSMC_EMIT_AST: ast_print(&out, pl.ast); break;
        case SSMC_EMIT_IR: ir_print(&out, pl.ir); break;
        case SSMC_EMIT_ANALYSIS:
            pass_analysis_print(&out, pl.ir, &pl.an);
            pass_chunk_print(&out, pl.ir, &pl.chunks);
            break;
        case SSMC_EMIT_PLAN: plan_print(&out, pl.plan); break;
        case SSMC_EMIT_GRAD: {
            pass_grad pg;
            if (pass_grad_build(&a, pl.ir, &pg, &ctx->diag))
                ir_print(&out, pg.adjoint);
            else
                s = a.failed ? SSMC_ERR_NOMEM : SSMC_ERR_UNSUPPORTED;
            break;
        }
        default: s = be->emit(pl.plan, o, kind, &out, &ctx->diag); break;
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
/* Lets and the hidden states of passes/lag.c are internal. */
bool api_tensor_public(const ir_tensor *t) { return t->kind != IR_LET && !t->hidden; }
#define is_public api_tensor_public

arena *api_model_arena(ssmc_model *m) { return &m->arena; }
const backend *api_model_backend(const ssmc_model *m) { return m->be; }
const ssmc_options *api_model_options(const ssmc_model *m) { return &m->opts; }
diag *api_model_diag(ssmc_model *m) { return &m->ctx->diag; }
grad_state **api_model_grad(ssmc_model *m) { return &m->grad; }
grad_chunked **api_model_grad_chunked(ssmc_model *m) { return &m->gradc; }
const pass_plan *api_model_plan(const ssmc_model *m) { return m->plan; }
void *api_model_state(const ssmc_model *m) { return m->be_state; }
int ssmc_model_num_tensors(const ssmc_model *m)
{
    if (!m) return 0;
    int n = 0;
    for (uint32_t i = 0; i < m->ir->ntensors; i++) n += is_public(&m->ir->tensors[i]);
    return n;
}

/* Public tensor i is the i-th public IR tensor. */
static int public_to_ir(const ssmc_model *m, int i)
{
    for (uint32_t k = 0; k < m->ir->ntensors; k++)
        if (is_public(&m->ir->tensors[k]) && i-- == 0) return (int)k;
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
ssmc_dtype ssmc_model_arith_dtype(const ssmc_model *m, ssmc_dtype dtype)
{
    /* a chunked run's matrix products take the backend's operand precision */
    static const int mantissa[] = {[SSMC_F32] = 23, [SSMC_F16] = 10, [SSMC_BF16] = 7, [SSMC_F64] = 52};
    if ((unsigned)dtype > SSMC_F64 || !m) return dtype;
    ssmc_dtype op = m->be ? m->be->chunk_operands : SSMC_F32;
    return m->plan && m->plan->algo == PLAN_ALGO_CHUNKED && mantissa[op] < mantissa[dtype] ? op : dtype;
}

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
        dtype = ssmc_model_arith_dtype(m, dtype);
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

/* The checks of a decode's rows before anything runs (host: the indices are
 * readable). */
static ssmc_status check_rows(const ssmc_model *m, int64_t batch, const ssmc_rows *rows, bool on_device, diag *d)
{
    const char *fn = on_device ? "ssmc_decode_device" : "ssmc_decode";
    if (!rows || !rows->index || rows->rows < 1) {
        diag_error(d, "%s needs rows: an index per sequence and a pool of at least one row", fn);
        return SSMC_ERR_ARG;
    }
    if (on_device ? !(m->be && m->be->decode && m->be->run_device) : !(m->be && m->be->decode && !m->be->run_device)) {
        diag_error(d, on_device ? "%s needs a model compiled for the cuda device"
                                : "%s runs on the interp and cpu devices (on cuda: ssmc_decode_device)", fn);
        return SSMC_ERR_UNSUPPORTED;
    }
    const src_loc *lag = ir_first_lagged_read(m->ir);
    if (lag) {
        diag_at(d, m->ir->file, *lag,
                "%s: model '%s' reads a value at an earlier step (t - k: here, or a let that reads this at t - k), "
                "and the window of earlier values does not carry over from one call to the next in this version: "
                "a decode cannot continue its sequences",
                fn, m->ir->name);
        return SSMC_ERR_UNSUPPORTED;
    }
    for (int64_t i = 0; !on_device && i < batch; i++)
        if (rows->index[i] >= rows->rows) {
            diag_error(d, "%s: sequence %lld's row %d is past the pool's %lld rows", fn, (long long)i,
                       (int)rows->index[i], (long long)rows->rows);
            return SSMC_ERR_ARG;
        }
    return SSMC_OK;
}

/* ssmc_run, ssmc_run_device, ssmc_decode and ssmc_decode_device (rows): the
 * arguments checked once, then the device (or the interpreter) runs. Device
 * tensors cannot be checked for finiteness. */
static ssmc_status run_common(ssmc_model *m, int64_t batch, int64_t T, const ssmc_arg *args, int nargs, bool on_device,
                              void *stream, const ssmc_rows *rows)
{
    if (!m) return SSMC_ERR_ARG;
    diag *d = &m->ctx->diag;
    diag_reset(d);
    if (nargs < 0 || (nargs > 0 && !args)) {
        diag_error(d, "args is %s but nargs is %d", args ? "given" : "NULL", nargs);
        return SSMC_ERR_ARG;
    }
    const ir_model *ir = m->ir;
    if (!rows && on_device && !(m->be && m->be->run_device)) {
        diag_error(d, "ssmc_run_device needs a model compiled for the cuda device");
        return SSMC_ERR_UNSUPPORTED;
    }
    if (batch < 1 || T < 1) {
        diag_error(d, "batch and T must be at least 1 (got batch %lld, T %lld)", (long long)batch, (long long)T);
        return SSMC_ERR_ARG;
    }
    if (rows) {
        ssmc_status rs = check_rows(m, batch, rows, on_device, d);
        if (rs != SSMC_OK) return rs;
    }
    backend_tensor *bt = calloc(ir->ntensors ? ir->ntensors : 1, sizeof *bt);
    if (!bt) {
        diag_error(d, "out of memory");
        return SSMC_ERR_NOMEM;
    }
    ssmc_status s = SSMC_OK;
    for (int i = 0; s == SSMC_OK && i < nargs; i++) {
        int k = args[i].name ? ir_find_tensor(ir, args[i].name) : -1;
        if (k < 0 || !is_public(&ir->tensors[k])) {
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
        } else if ((args[i].flags & ~SSMC_ARG_FINAL_ONLY) ||
                   (args[i].flags && ir->tensors[k].kind != IR_STATE)) {
            diag_error(d, "tensor '%s': flags 0x%x are not known%s", args[i].name, args[i].flags,
                       ir->tensors[k].kind != IR_STATE ? " (SSMC_ARG_FINAL_ONLY is for states)" : "");
            s = SSMC_ERR_ARG;
        } else {
            bt[k] = (backend_tensor){args[i].data, args[i].dtype, args[i].flags & SSMC_ARG_FINAL_ONLY};
        }
    }
    for (uint32_t i = 0; s == SSMC_OK && i < ir->ntensors; i++) {
        const ir_tensor *t = &ir->tensors[i];
        size_t n;
        /* a state's pool has rows->rows rows */
        if (!run_elems(ir, t, rows && t->kind == IR_STATE ? rows->rows : batch, T, &n) || n > ((size_t)1 << 46)) {
            diag_error(d, "%s '%s' would have too many elements for batch %lld, T %lld", ir_kind_names[t->kind],
                       t->name, (long long)batch, (long long)T);
            s = SSMC_ERR_ARG;
        } else if ((t->kind == IR_INPUT || t->kind == IR_PARAM) && !bt[i].data) {
            diag_error(d, "missing %s '%s'", ir_kind_names[t->kind], t->name);
            s = SSMC_ERR_ARG;
        } else if (rows && t->kind == IR_STATE && !t->hidden && !bt[i].data) {
            diag_error(d, "missing state '%s': a decode takes every state, as its pool of %lld rows", t->name,
                       (long long)rows->rows);
            s = SSMC_ERR_ARG;
        } else if (!rows && !on_device && m->opts.check_finite && bt[i].data && t->kind != IR_OUTPUT && !bt[i].fresh &&
                   !check_finite(ir, t, &bt[i], batch, T, d, "")) {
            s = SSMC_ERR_NUMERIC;
        }
    }
    if (s == SSMC_OK && rows)
        s = m->be->decode(m->be_state, batch, T, bt, rows, on_device, stream, d);
    else if (s == SSMC_OK && on_device)
        s = m->be->run_device(m->be_state, batch, T, bt, stream, d);
    else if (s == SSMC_OK)
        s = m->be->run(m->be_state, batch, T, bt, d);
    for (uint32_t i = 0; s == SSMC_OK && !rows && !on_device && m->opts.check_finite && i < ir->ntensors; i++) {
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
    return run_common(m, batch, T, args, nargs, false, NULL, NULL);
}

ssmc_status ssmc_run_device(ssmc_model *m, int64_t batch, int64_t T, const ssmc_arg *args, int nargs, void *stream)
{
    return run_common(m, batch, T, args, nargs, true, stream, NULL);
}

ssmc_status ssmc_decode(ssmc_model *m, int64_t batch, int64_t T, const ssmc_arg *args, int nargs,
                        const ssmc_rows *rows)
{
    static const ssmc_rows none = {0};
    return run_common(m, batch, T, args, nargs, false, NULL, rows ? rows : &none);
}

ssmc_status ssmc_decode_device(ssmc_model *m, int64_t batch, int64_t T, const ssmc_arg *args, int nargs,
                               const ssmc_rows *rows, void *stream)
{
    static const ssmc_rows none = {0};
    return run_common(m, batch, T, args, nargs, true, stream, rows ? rows : &none);
}
