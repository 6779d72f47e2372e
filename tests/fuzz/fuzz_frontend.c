/* fuzz_frontend.c: a libFuzzer target for the whole front end, through the
 * public API. Each input is a source file; it goes through
 *   ssmc_emit AST, IR and analysis, then ssmc_compile for the interpreter,
 * and, when it compiles and is small enough, ssmc_run on batch 1, T 3 with
 * deterministic random inputs (seeded from the input's bytes), twice with
 * outputs poisoned differently: both runs must write every output element and
 * agree bit for bit. A mixed f16/bf16 run and a check_finite run follow.
 *
 * Then the same with every dim overridden (-D) to a small value drawn from the
 * input, with an override of a dim the model does not have, and with one dim
 * given twice (an error naming both). ssmc_check goes over every model of the
 * file (one parse: a file of many models is linear) and agrees with emitting
 * the IR of the first; every output and state of a compiled model has a
 * --verify tolerance at or above its floor.
 *
 * Beyond "no crash, no leak, no sanitizer report", it checks what the API
 * promises about errors: a failed call leaves a message, a source error names
 * file:line:col, quotes the line and puts a caret under it, and the status of
 * compiling agrees with the status of emitting the IR.
 *
 * "Small enough": every public tensor of at most MAX_TENSOR elements, and the
 * interpreter's work (estimated from the lowered IR, which this harness
 * builds again with the internal front end since the public model is opaque)
 * at most MAX_WORK. Anything else is skipped, not run.
 *
 * Built with -fsanitize=fuzzer by tests/fuzz/run.sh; replay.c drives the same
 * entry point over files in ordinary builds (the fuzz_regressions test). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frontend/ast.h"
#include "ir/ir.h"
#include "passes/passes.h"
#include "ssmc.h"
#include "support/support.h"

#define MAX_TENSOR 4096
#define MAX_WORK 2e6
#define BATCH 1
#define STEPS 3
#define MAX_OVERRIDES 16

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char sentinel; /* an out-parameter's value before a call that must overwrite it */

/* A broken promise of the API is a finding: report it and crash so that
 * libFuzzer keeps the input. */
static _Noreturn void violated(const char *what, const char *detail)
{
    fprintf(stderr, "fuzz_frontend: %s\n%s\n", what, detail ? detail : "");
    abort();
}

/* The end of the line that starts at pos: the first LF or CR from there. */
static size_t line_end(const char *text, size_t size, size_t pos)
{
    while (pos < size && text[pos] != '\n' && text[pos] != '\r') pos++;
    return pos;
}

/* Length of line `line` (1-based) of the source, or -1 when there is no such
 * line. A line ends at LF, CR or CR LF, as the language says. */
static long line_length(const char *text, size_t size, unsigned line)
{
    size_t pos = 0;
    for (unsigned l = 1; l < line; l++) {
        size_t e = line_end(text, size, pos);
        if (e >= size) return -1;
        pos = e + (text[e] == '\r' && e + 1 < size && text[e + 1] == '\n' ? 2 : 1);
    }
    return (long)(line_end(text, size, pos) - pos);
}

/* Every diagnostic of a source error is "fuzz.ssm:L:C: error: ..." followed by
 * the quoted line and a caret line, or "error: ..." alone. L:C lies in the
 * source: on one of its lines, at most one column past the line's end. */
static void check_diagnostics(const char *msg, const char *text, size_t size)
{
    if (!*msg) violated("a failed call left no message", NULL);
    const char *p = msg;
    while (*p) {
        const char *eol = strchr(p, '\n');
        if (!eol) violated("a diagnostic does not end in a newline", msg);
        if (strncmp(p, "error: ", 7) == 0) {
            p = eol + 1;
            continue;
        }
        unsigned line, col;
        int n = 0;
        if (strncmp(p, "fuzz.ssm:", 9) != 0 || sscanf(p + 9, "%u:%u: error: %n", &line, &col, &n) != 2 || n == 0)
            violated("a diagnostic is neither 'fuzz.ssm:L:C: error: ...' nor 'error: ...'", msg);
        if (line == 0 || col == 0) violated("a diagnostic has line or column 0", msg);
        long len = line_length(text, size, line);
        if (len < 0 || (long)col > len + 1) violated("a diagnostic points outside the source", msg);
        if (eol[-1] == '.') violated("a diagnostic ends in a period", msg);
        /* the quoted line, then the caret line: spaces and one '^' */
        const char *quote = eol + 1;
        const char *qend = strchr(quote, '\n');
        if (!qend || strncmp(quote, "    ", 4) != 0) violated("a located diagnostic quotes no line", msg);
        const char *caret = qend + 1;
        const char *cend = strchr(caret, '\n');
        if (!cend) violated("a located diagnostic has no caret line", msg);
        for (const char *c = caret; c < cend - 1; c++)
            if (*c != ' ') violated("the caret line holds more than spaces and a caret", msg);
        if (cend == caret || cend[-1] != '^') violated("the caret line ends in no caret", msg);
        p = cend + 1;
    }
}

/* ---- the interpreter's work, from the lowered IR ---- */

static double inst_work(const ir_model *m, ir_ref r, int depth)
{
    if (r == IR_NONE || r >= m->ninsts || depth > 100000) return 1e30;
    const ir_inst *in = &m->insts[r];
    if (in->op == IR_SUM || in->op == IR_RMAX) {
        double n = 1;
        for (uint32_t i = 0; i < in->red.nvars; i++) n *= (double)m->dims[m->vars[m->red_vars[in->red.vars + i]].dim].value;
        return 1 + n * inst_work(m, in->a, depth + 1);
    }
    double w = 1;
    if (in->a != IR_NONE) w += inst_work(m, in->a, depth + 1);
    if (in->b != IR_NONE) w += inst_work(m, in->b, depth + 1);
    if (in->c != IR_NONE) w += inst_work(m, in->c, depth + 1);
    return w;
}

/* Work of one run (every element of every statement, T steps, of the IR the
 * interpreter runs: lagged lets rewritten), or a huge number when the model
 * does not lower. */
static double run_work(const char *text, size_t len, const ast_dim_override *over, int nover)
{
    arena a;
    arena_init(&a);
    diag d = {0};
    char *copy = arena_alloc(&a, len + 1);
    double work = 1e30;
    if (copy) {
        memcpy(copy, text, len);
        src_file f = {"fuzz.ssm", copy, len};
        ast_file *af = parse_file(&a, &d, &f);
        ir_model *m = af && check_model(&a, &d, &f, &af->models[0], over, nover) ? ir_lower(&a, &d, &f, &af->models[0]) : NULL;
        if (m && !pass_lag(&a, &m, &d)) m = NULL;
        if (m) {
            work = 0;
            for (uint32_t ii = 0; ii < m->ninits; ii++)
                work += (double)ir_tensor_elems(m, &m->tensors[m->inits[ii].tensor]) * inst_work(m, m->inits[ii].root, 0);
            for (uint32_t si = 0; si < m->nstmts; si++) {
                const ir_stmt *s = &m->stmts[si];
                double w = (double)ir_tensor_elems(m, &m->tensors[s->tensor]) * inst_work(m, s->root, 0);
                work += s->per_step ? w * STEPS : w;
            }
        }
    }
    diag_free(&d);
    arena_free(&a);
    return work * BATCH;
}

/* ---- running ---- */

typedef struct fuzz_tensor {
    ssmc_tensor_info info;
    size_t count;
    float *a, *b; /* two copies (f32) */
    uint16_t *h;  /* a half-precision copy */
} fuzz_tensor;

static size_t elems(const ssmc_tensor_info *info)
{
    size_t n = info->role == SSMC_PARAM ? 1 : BATCH;
    if (info->per_step) n *= STEPS;
    for (int j = 0; j < info->rank; j++) n *= (size_t)info->shape[j];
    return n;
}

static void run_model(ssmc_model *m, ssmc_ctx *ctx, const uint8_t *data, size_t size)
{
    int n = ssmc_model_num_tensors(m);
    if (n <= 0 || n > 4096) return;
    fuzz_tensor *ts = calloc((size_t)n, sizeof *ts);
    ssmc_arg *args = calloc((size_t)n, sizeof *args);
    if (!ts || !args) goto done;
    for (int i = 0; i < n; i++) {
        if (ssmc_model_tensor(m, i, &ts[i].info) != SSMC_OK) violated("ssmc_model_tensor failed on a valid index", NULL);
        double tol = ssmc_model_tolerance(m, i, SSMC_F32, STEPS);
        bool result = ts[i].info.role == SSMC_OUTPUT || ts[i].info.role == SSMC_STATE;
        if (result ? !(tol >= 1e-5 && tol < 1e30) : tol != -1)
            violated("a tolerance is out of place (below the floor, not finite, or given for an input)", ts[i].info.name);
        for (int j = 0; j < ts[i].info.rank; j++)
            if (ts[i].info.shape[j] < 1 || ts[i].info.shape[j] > MAX_TENSOR) goto done;
        size_t c = 1;
        for (int j = 0; j < ts[i].info.rank; j++) c *= (size_t)ts[i].info.shape[j];
        if (c > MAX_TENSOR) goto done;
        if (ssmc_model_find(m, ts[i].info.name) != i) violated("ssmc_model_find disagrees with ssmc_model_tensor", ts[i].info.name);
    }
    uint64_t seed = hash64(data, size, HASH64_SEED);
    for (int i = 0; i < n; i++) {
        fuzz_tensor *t = &ts[i];
        t->count = elems(&t->info);
        t->a = malloc(t->count * sizeof *t->a);
        t->b = malloc(t->count * sizeof *t->b);
        t->h = malloc(t->count * sizeof *t->h);
        if (!t->a || !t->b || !t->h) goto done;
        for (size_t k = 0; k < t->count; k++) {
            float v = (float)uniform_pm1(&seed);
            bool out = t->info.role == SSMC_OUTPUT;
            t->a[k] = out ? 1e30f : v;
            t->b[k] = out ? -1e30f : v;
            t->h[k] = out ? 0x7c00 : f32_to_bf16(v);
        }
    }
    /* twice in f32, outputs poisoned differently: identical results, every element written */
    for (int i = 0; i < n; i++) args[i] = (ssmc_arg){ts[i].info.name, SSMC_F32, ts[i].a, 0};
    ssmc_status s1 = ssmc_run(m, BATCH, STEPS, args, n);
    for (int i = 0; i < n; i++) args[i].data = ts[i].b;
    ssmc_status s2 = ssmc_run(m, BATCH, STEPS, args, n);
    if (s1 != s2) violated("two identical runs returned different statuses", ssmc_ctx_error(ctx));
    if (s1 != SSMC_OK) {
        if (s1 != SSMC_ERR_NOMEM) violated("a run with every tensor given failed", ssmc_ctx_error(ctx));
        goto done;
    }
    for (int i = 0; i < n; i++) {
        if (ts[i].info.role != SSMC_OUTPUT && ts[i].info.role != SSMC_STATE) continue;
        if (memcmp(ts[i].a, ts[i].b, ts[i].count * sizeof(float)) != 0)
            violated("two identical runs differ (an output element left unwritten, or nondeterminism)", ts[i].info.name);
    }
    /* half precision, states and outputs alternating between f16 and bf16 */
    for (int i = 0; i < n; i++) args[i] = (ssmc_arg){ts[i].info.name, i % 2 ? SSMC_F16 : SSMC_BF16, ts[i].h, 0};
    ssmc_status s3 = ssmc_run(m, BATCH, STEPS, args, n);
    if (s3 != SSMC_OK && s3 != SSMC_ERR_NOMEM) violated("a half-precision run failed", ssmc_ctx_error(ctx));
    /* only the inputs: states and outputs are optional */
    int given = 0;
    for (int i = 0; i < n; i++)
        if (ts[i].info.role == SSMC_INPUT || ts[i].info.role == SSMC_PARAM)
            args[given++] = (ssmc_arg){ts[i].info.name, SSMC_F32, ts[i].a, 0};
    ssmc_status s4 = ssmc_run(m, BATCH, STEPS, args, given);
    if (s4 != SSMC_OK && s4 != SSMC_ERR_NOMEM) violated("a run with only the inputs failed", ssmc_ctx_error(ctx));
done:
    for (int i = 0; ts && i < n; i++) {
        free(ts[i].a);
        free(ts[i].b);
        free(ts[i].h);
    }
    free(ts);
    free(args);
}

/* Checks what ssmc_emit promises; returns its status. *out is the text (the
 * caller frees it) or NULL. */
static ssmc_status emit(ssmc_ctx *ctx, const char *text, size_t size, const ssmc_options *o, ssmc_emit_kind kind,
                        char **out)
{
    *out = &sentinel; /* must be replaced: NULL on failure */
    ssmc_status s = ssmc_emit(ctx, "fuzz.ssm", text, size, o, kind, out);
    if (s == SSMC_OK) {
        if (!*out) violated("ssmc_emit succeeded without text", NULL);
        if (*ssmc_ctx_error(ctx)) violated("ssmc_emit succeeded with a message", ssmc_ctx_error(ctx));
    } else {
        if (*out) violated("ssmc_emit failed but left text", NULL);
        if (s == SSMC_ERR_SOURCE)
            check_diagnostics(ssmc_ctx_error(ctx), text, size);
        else if (s != SSMC_ERR_NOMEM)
            violated("ssmc_emit failed with a status other than source error", ssmc_status_name(s));
    }
    return s;
}

/* Compiles for the interpreter with options o and runs the model when it is
 * small; compiling must succeed exactly when emitting the IR does. */
static void compile_and_run(ssmc_ctx *ctx, const uint8_t *data, size_t size, const ssmc_options *o)
{
    const char *text = (const char *)data;
    char *ir;
    ssmc_status emitted = emit(ctx, text, size, o, SSMC_EMIT_IR, &ir);
    free(ir);
    ssmc_model *m = (ssmc_model *)(void *)&sentinel;
    ssmc_status s = ssmc_compile(ctx, "fuzz.ssm", text, size, o, &m);
    if (s == SSMC_OK) {
        if (!m) violated("ssmc_compile succeeded without a model", NULL);
        if (emitted != SSMC_OK) violated("the model compiled but its IR could not be emitted", NULL);
        ast_dim_override over[MAX_OVERRIDES];
        for (int i = 0; i < o->ndims; i++) over[i] = (ast_dim_override){o->dims[i].name, o->dims[i].value};
        if (run_work(text, size, over, o->ndims) <= MAX_WORK) run_model(m, ctx, data, size);
        ssmc_model_free(m);
    } else {
        if (m) violated("ssmc_compile failed but left a model", NULL);
        if (s == SSMC_ERR_SOURCE) check_diagnostics(ssmc_ctx_error(ctx), text, size);
        if (emitted == SSMC_OK && s != SSMC_ERR_NOMEM)
            violated("the IR was emitted but the model did not compile", ssmc_ctx_error(ctx));
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    ssmc_ctx *ctx = ssmc_ctx_new();
    if (!ctx) return 0;
    char *ast, *ir, *analysis;
    ssmc_status s_ast = emit(ctx, text, size, NULL, SSMC_EMIT_AST, &ast);
    ssmc_status s_ir = emit(ctx, text, size, NULL, SSMC_EMIT_IR, &ir);
    emit(ctx, text, size, NULL, SSMC_EMIT_ANALYSIS, &analysis);
    if (s_ir == SSMC_OK && s_ast != SSMC_OK) violated("the IR was emitted but not the AST", NULL);
    free(ast);
    free(analysis);

    ssmc_options o = {.device = SSMC_DEVICE_INTERP};
    compile_and_run(ctx, data, size, &o);
    ssmc_status s_check = ssmc_check(ctx, "fuzz.ssm", text, size, NULL);
    if (s_check != SSMC_OK && s_check != SSMC_ERR_NOMEM) {
        if (s_check != SSMC_ERR_SOURCE) violated("ssmc_check failed with a status other than source error", NULL);
        check_diagnostics(ssmc_ctx_error(ctx), text, size);
    }
    /* every model checks when the file does; the first one lowers then too */
    if (s_check == SSMC_OK && s_ir != SSMC_OK && s_ir != SSMC_ERR_NOMEM)
        violated("ssmc_check passed a file whose first model does not lower", ssmc_ctx_error(ctx));

    if (s_ir == SSMC_OK) {
        /* -D overrides: every dim the IR lists ("  dim NAME = VALUE") set to a
         * small value drawn from the input, which may break grouped indices */
        ssmc_dim dims[MAX_OVERRIDES];
        char *names[MAX_OVERRIDES];
        int n = 0;
        uint64_t seed = hash64(data, size, 7);
        for (const char *p = ir; n < MAX_OVERRIDES && (p = strstr(p, "\n  dim ")); p++) {
            /* the whole name, however long (a fixed-width scan would cut it
             * and ask for a different dim) */
            const char *name = p + strlen("\n  dim ");
            size_t len = strcspn(name, " \n");
            if (len == 0 || strncmp(name + len, " = ", 3) != 0) violated("an IR dim line does not parse", p);
            names[n] = strndup(name, len);
            if (!names[n]) break;
            dims[n] = (ssmc_dim){names[n], 1 + (int64_t)(splitmix64(&seed) % 6)};
            n++;
        }
        o.dims = dims;
        o.ndims = n;
        compile_and_run(ctx, data, size, &o);
        /* a dim the model does not have is an error without a location */
        ssmc_dim bogus = {"no_such_dim", 2};
        o.dims = &bogus;
        o.ndims = 1;
        ssmc_model *m = NULL;
        if (ssmc_compile(ctx, "fuzz.ssm", text, size, &o, &m) != SSMC_ERR_SOURCE || m ||
            strncmp(ssmc_ctx_error(ctx), "error: -D no_such_dim: ", 23) != 0)
            violated("an unknown -D name was not reported", ssmc_ctx_error(ctx));
        /* a dim given twice is an error, whatever the values */
        if (n > 0) {
            ssmc_dim twice[2] = {dims[0], {dims[0].name, dims[0].value + 1}};
            o.dims = twice;
            o.ndims = 2;
            if (ssmc_compile(ctx, "fuzz.ssm", text, size, &o, &m) != SSMC_ERR_SOURCE || m ||
                !strstr(ssmc_ctx_error(ctx), "is already given"))
                violated("a dim given twice was not reported", ssmc_ctx_error(ctx));
        }
        for (int i = 0; i < n; i++) free(names[i]);
    }
    free(ir);
    ssmc_ctx_free(ctx);
    return 0;
}
