/* test_cuda_ptx.c: the CUDA backend without a GPU. Every example (and the
 * edge-case models of tests/gpu/edge.ssm), at its own dims and at odd dims,
 * is emitted as CUDA C and compiled by NVRTC to PTX for sm_90, for the f32
 * signature of `ssmc emit` and for bf16, f16 and mixed signatures with states
 * absent and vector loads off, and as the decode kernels by pool row (for T
 * and for one step), each taking the parameters a launch passes. The emitted
 * source names every statement's
 * DSL line; an NVRTC failure names the generated program; the plans of the
 * benchmark shapes keep their states in registers. The NVRTC cases skip()
 * where NVRTC cannot be loaded. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "codegen/cuda.h"
#include "codegen/cuda_chunk.h"
#include "driver/pipeline.h"
#include "frontend/ast.h"
#include "ir/ir.h"
#include "passes/passes.h"
#include "runtime/cuda_driver.h"
#include "ssmc.h"
#include "tests/unit/helpers/files.h"
#include "tests/unit/helpers/grad_dims.h"

/* The kernel plan for the CUDA target (tune may be NULL). */
static ssmc_status cuda_plan_of(arena *a, const ir_model *m, const plan_tune *tune, pass_plan **p, diag *d)
{
    plan_target tg = plan_target_cuda(tune);
    return plan_make(a, m, NULL, NULL, PLAN_ALGO_RECURRENT, &tg, p, d);
}

static rt_nvrtc *nvrtc; /* NULL: NVRTC cases skip */
static char nvrtc_why[1024];


/* Every dim of the model made odd (d -> d + 1 when even), as -D options. */
static int odd_dims(const ir_model *m, ssmc_dim *out)
{
    for (uint32_t i = 0; i < m->ndims; i++) out[i] = (ssmc_dim){m->dims[i].name, m->dims[i].value | 1};
    return (int)m->ndims;
}

typedef struct compiled {
    arena a;
    diag d;
    src_file f;
    ir_model *m;
} compiled;

/* Source to verified IR, as the driver does it. */
static void compile_ir(compiled *c, const char *name, const char *text, size_t len, const char *model,
                       const ssmc_dim *dims, int ndims)
{
    arena_init(&c->a);
    memset(&c->d, 0, sizeof c->d);
    c->f = (src_file){name, text, len};
    ast_file *af = parse_file(&c->a, &c->d, &c->f);
    if (!af) fail_msg("%s", sb_cstr(&c->d.text));
    ast_model *am = &af->models[0];
    for (int i = 0; model && i < af->nmodels; i++)
        if (strcmp(af->models[i].name, model) == 0) am = &af->models[i];
    ast_dim_override over[16];
    for (int i = 0; i < ndims; i++) over[i] = (ast_dim_override){dims[i].name, dims[i].value};
    if (!check_model(&c->a, &c->d, &c->f, am, over, ndims)) fail_msg("%s", sb_cstr(&c->d.text));
    c->m = ir_lower(&c->a, &c->d, &c->f, am);
    if (!c->m || !ir_verify(c->m, &c->d)) fail_msg("%s", sb_cstr(&c->d.text));
    if (!pass_lag(&c->a, &c->m, &c->d) || !ir_verify(c->m, &c->d)) fail_msg("%s", sb_cstr(&c->d.text));
}

static void compiled_free(compiled *c)
{
    diag_free(&c->d);
    arena_free(&c->a);
}

/* Emits one signature and compiles it to PTX for sm_90; rows: the kernel by
 * pool row (cuda_sig.rows; every state given), one_step: for T = 1. */
#define PTX_MAX_BYTES (1 << 21)

static void ptx_of_rows(const ir_model *m, const pass_plan *p, ssmc_dtype io, ssmc_dtype params, bool states, bool vec,
                        bool rows, bool one_step)
{
    ssmc_dtype dt[64];
    bool present[64];
    assert_true(m->ntensors <= 64);
    for (uint32_t i = 0; i < m->ntensors; i++) {
        const ir_tensor *t = &m->tensors[i];
        dt[i] = t->kind == IR_PARAM ? params : io;
        present[i] = t->kind != IR_LET && (t->kind != IR_STATE || states);
    }
    cuda_sig sig = {.dtype = dt, .present = present, .vec = vec, .rows = rows, .one_step = one_step};
    strbuf src = {0}, name = {0}, log = {0}, entry = {0};
    diag d = {0};
    if (cuda_emit(&src, p, &sig, &d) != SSMC_OK) fail_msg("%s", sb_cstr(&d.text));
    cuda_program_name(&name, m);
    char *ptx = NULL;
    size_t len;
    if (rt_nvrtc_compile(nvrtc, sb_cstr(&src), sb_cstr(&name), "sm_90", false, NULL, 0, &ptx, &len, &log) != SSMC_OK)
        fail_msg("%s (io %d, params %d, states %d, vec %d):\n%s", m->name, io, params, states, vec, sb_cstr(&log));
    cuda_kernel_name(&entry, m);
    assert_non_null(strstr(ptx, sb_cstr(&entry)));
    assert_non_null(strstr(ptx, ".target sm_90"));
    /* no plan unrolls a kernel past PTX_MAX_BYTES (mamba3's training forward once held 512 state
     * values a thread on 4 threads: 4.2 MB of PTX, 36 s in NVRTC) */
    if (len > PTX_MAX_BYTES) fail_msg("%s: %zu bytes of PTX (at most %d)", m->name, len, PTX_MAX_BYTES);
    if (getenv("SSMC_PTX_SIZES")) printf("# ptx %-32s %zu bytes\n", m->name, len);
    /* the parameters a launch passes: B, T, ws, [rows, has,] one per tensor but lets */
    int want = rows ? 5 : 3, got = 0;
    for (uint32_t i = 0; i < m->ntensors; i++) want += m->tensors[i].kind != IR_LET;
    for (const char *q = strstr(ptx, ".entry"); q && *q && *q != ')'; q++) got += strncmp(q, ".param", 6) == 0;
    if (got != want) fail_msg("%s: the kernel takes %d parameters, a launch passes %d", m->name, got, want);
    free(ptx);
    sb_free(&src);
    sb_free(&name);
    sb_free(&log);
    sb_free(&entry);
    diag_free(&d);
}

static void ptx_of(const ir_model *m, const pass_plan *p, ssmc_dtype io, ssmc_dtype params, bool states, bool vec)
{
    ptx_of_rows(m, p, io, params, states, vec, false, false);
}

/* odd: the dims to use at odd sizes (NULL: every dim made odd) */
static void check_model_ptx(const char *rel, const char *model, const ssmc_dim *odd_given, int nodd)
{
    size_t len;
    char *text = test_slurp(rel, &len);
    for (int odd = 0; odd < 2; odd++) {
        compiled c;
        ssmc_dim dims[16];
        int nd = 0;
        if (odd && odd_given) {
            nd = nodd;
            for (int i = 0; i < nd; i++) dims[i] = (ssmc_dim){strdup(odd_given[i].name), odd_given[i].value};
        } else if (odd) { /* the dims of the first compile, made odd */
            compiled c0;
            compile_ir(&c0, rel, text, len, model, NULL, 0);
            nd = odd_dims(c0.m, dims);
            for (int i = 0; i < nd; i++) dims[i].name = strdup(dims[i].name);
            compiled_free(&c0);
        }
        compile_ir(&c, rel, text, len, model, dims, nd);
        pass_plan *p;
        diag d = {0};
        if (cuda_plan_of(&c.a, c.m, NULL, &p, &d) != SSMC_OK) fail_msg("%s", sb_cstr(&d.text));
        diag_free(&d);
        ptx_of(c.m, p, SSMC_BF16, SSMC_F32, true, true);
        ptx_of(c.m, p, SSMC_BF16, SSMC_BF16, false, false);
        ptx_of(c.m, p, SSMC_F16, SSMC_F32, true, true);
        if (!odd) ptx_of(c.m, p, SSMC_F64, SSMC_F32, true, true);
        /* the decode kernels by pool row, for T and for one step */
        ptx_of_rows(c.m, p, SSMC_BF16, SSMC_F32, true, !odd, true, false);
        ptx_of_rows(c.m, p, SSMC_F32, SSMC_F32, true, true, true, true);

        /* the public path: ssmc emit --emit=ptx --arch sm_90 (f32) */
        ssmc_ctx *ctx = ssmc_ctx_new();
        ssmc_options o = {.model = model, .dims = dims, .ndims = nd, .cuda_arch = "sm_90"};
        char *ptx = NULL;
        if (ssmc_emit(ctx, rel, text, len, &o, SSMC_EMIT_PTX, &ptx) != SSMC_OK)
            fail_msg("%s%s: %s", rel, odd ? " (odd dims)" : "", ssmc_ctx_error(ctx));
        strbuf entry = {0};
        cuda_kernel_name(&entry, c.m);
        assert_non_null(strstr(ptx, sb_cstr(&entry)));
        assert_non_null(strstr(ptx, ".target sm_90"));
        sb_free(&entry);
        free(ptx);
        ssmc_ctx_free(ctx);
        for (int i = 0; odd && i < nd; i++) free((char *)dims[i].name);
        compiled_free(&c);
    }
    free(text);
}

static void test_examples_to_ptx(void **state)
{
    if (!nvrtc) skip();
    char names[64][128];
    int n = test_list_examples(names, 64);
    assert_true(n >= 9);
    for (int i = 0; i < n; i++) check_model_ptx(names[i], NULL, NULL, 0);
}

static void test_edge_models_to_ptx(void **state)
{
    if (!nvrtc) skip();
    static const ssmc_dim dense[] = {{"N", 13}, {"D", 3}};
    static const ssmc_dim mix[] = {{"H", 9}, {"G", 3}, {"HG", 3}, {"K", 5}, {"V", 7}, {"W", 3}, {"E", 9}};
    static const ssmc_dim big[] = {{"N", 161}};
    check_model_ptx("tests/gpu/edge.ssm", "dense", dense, 2);
    check_model_ptx("tests/gpu/edge.ssm", "mix", mix, 7);
    check_model_ptx("tests/gpu/edge.ssm", "big", big, 1);
    static const ssmc_dim v2_ops[] = {{"N", 7}, {"W", 3}}, v2_lag[] = {{"N", 7}, {"W", 3}}, v2_init[] = {{"K", 5}};
    check_model_ptx("tests/gpu/edge.ssm", "v2_ops", v2_ops, 2);
    check_model_ptx("tests/gpu/edge.ssm", "v2_lag", v2_lag, 2);
    check_model_ptx("tests/gpu/edge.ssm", "v2_init", v2_init, 1);
}

/* The gradients' kernels (passes/grad.c: the training forward, the adjoint,
 * a reverse model, and the init statements' pair) of every example (at
 * test_grad's small dims: mamba3's training forward at its declared dims takes
 * NVRTC two minutes) and edge model (declared dims), planned for CUDA, to PTX for sm_90 in the
 * signature the gradient driver runs them with (bf16 tensors, f32 params);
 * and the helper kernels of its device buffers. */
static void grad_ptx(const char *rel, const char *model, const example_dims *e)
{
    size_t len;
    char *text = test_slurp(rel, &len);
    compiled c;
    compile_ir(&c, rel, text, len, model, e ? e->dims : NULL, e ? e->ndims : 0);
    pass_grad pg;
    if (!pass_grad_build(&c.a, c.m, &pg, &c.d)) fail_msg("%s: %s", rel, sb_cstr(&c.d.text));
    ir_model *parts[4] = {pg.forward, pg.adjoint, pg.init ? pg.init->forward : NULL, pg.init ? pg.init->adjoint : NULL};
    for (int k = 0; k < 4; k++) {
        if (!parts[k]) continue;
        pass_plan *p;
        diag d = {0};
        if (cuda_plan_of(&c.a, parts[k], NULL, &p, &d) != SSMC_OK) fail_msg("%s %s: %s", rel, parts[k]->name, sb_cstr(&d.text));
        diag_free(&d);
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        ptx_of(parts[k], p, SSMC_BF16, SSMC_F32, true, true);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        printf("# %-34s %-24s %.2f s\n", rel, parts[k]->name, (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec));
    }
    assert_true(pg.adjoint->reverse);
    compiled_free(&c);
    free(text);
}

static void test_grad_kernels_to_ptx(void **state)
{
    if (!nvrtc) skip();
    char names[64][128];
    int n = test_list_examples(names, 64);
    for (int i = 0; i < n; i++) {
        size_t len;
        char *text = test_slurp(names[i], &len);
        example_dims own;
        grad_ptx(names[i], NULL, grad_example_dims(names[i], text, len, &own));
        free(text);
    }
    static const char *const edge[] = {"dense", "mix", "big", "v2_ops", "v2_lag", "v2_init"};
    for (size_t i = 0; i < sizeof edge / sizeof *edge; i++) grad_ptx("tests/gpu/edge.ssm", edge[i], NULL);
    strbuf src = {0}, log = {0};
    char *ptx = NULL;
    size_t len;
    cuda_emit_helpers(&src);
    if (rt_nvrtc_compile(nvrtc, sb_cstr(&src), CUDA_HELPERS_PROGRAM, "sm_90", false, NULL, 0, &ptx, &len, &log) != SSMC_OK)
        fail_msg("%s", sb_cstr(&log));
    strbuf name = {0};
    cuda_helper_name(&name, true, SSMC_BF16, SSMC_F32);
    assert_non_null(strstr(ptx, sb_cstr(&name)));
    name.len = 0;
    cuda_helper_name(&name, false, SSMC_F16, SSMC_F64);
    assert_non_null(strstr(ptx, sb_cstr(&name)));
    free(ptx);
    sb_free(&src);
    sb_free(&log);
    sb_free(&name);
}

/* Every statement's comment names its line, with the left side and the
 * expression as the IR printer writes it. */
static void test_emit_names_lines(void **state)
{
    size_t len;
    char *text = test_slurp("examples/mamba2.ssm", &len);
    ssmc_ctx *ctx = ssmc_ctx_new();
    char *cu = NULL;
    ssmc_options o = {0};
    if (ssmc_emit(ctx, "mamba2.ssm", text, len, &o, SSMC_EMIT_CUDA, &cu) != SSMC_OK) fail_msg("%s", ssmc_ctx_error(ctx));
    assert_non_null(strstr(cu, "// line 15: A[h] = -exp(A_log[h])"));
    assert_non_null(strstr(cu, "// line 16: delta[t,h] = softplus(dt[t, h] + dt_bias[h])"));
    assert_non_null(strstr(cu, "// line 17: S[h,p,n] = exp(delta[t, h] * A[h]) * S@old[h, p, n]"));
    assert_non_null(strstr(cu, "// line 18: y[t,h,p] = sum(n: S@new[h, p, n] * C[t, n])"));
    assert_non_null(strstr(cu, "extern \"C\" __global__"));
    assert_non_null(strstr(cu, "ssmc_mamba2.cu"));
    free(cu);
    ssmc_ctx_free(ctx);
    free(text);
}

/* A kernel NVRTC rejects: the message names the generated program. */
static void test_nvrtc_failure_names_program(void **state)
{
    if (!nvrtc) skip();
    size_t len;
    char *text = test_slurp("examples/gla.ssm", &len);
    ssmc_ctx *ctx = ssmc_ctx_new();
    char *out = NULL;
    ssmc_options o = {.cuda_arch = "sm_10"}; /* well-formed, but no NVRTC targets it */
    assert_int_equal(ssmc_emit(ctx, "gla.ssm", text, len, &o, SSMC_EMIT_PTX, &out), SSMC_ERR_BACKEND);
    assert_null(out);
    assert_non_null(strstr(ssmc_ctx_error(ctx), "ssmc_gla.cu"));

    /* a syntax error in the generated source: NVRTC's log points into ssmc_gla.cu */
    compiled c;
    compile_ir(&c, "gla.ssm", text, len, NULL, NULL, 0);
    pass_plan *p;
    diag d = {0};
    assert_int_equal(cuda_plan_of(&c.a, c.m, NULL, &p, &d), SSMC_OK);
    ssmc_dtype dt[16] = {0};
    bool present[16];
    for (uint32_t i = 0; i < c.m->ntensors; i++) present[i] = c.m->tensors[i].kind != IR_LET;
    cuda_sig sig = {.dtype = dt, .present = present, .vec = true};
    strbuf src = {0}, bad = {0}, name = {0}, log = {0};
    assert_int_equal(cuda_emit(&src, p, &sig, &d), SSMC_OK);
    const char *nl = strchr(sb_cstr(&src), '\n');
    sb_putn(&bad, sb_cstr(&src), (size_t)(nl - sb_cstr(&src)) + 1);
    sb_puts(&bad, "this is not CUDA;\n");
    sb_puts(&bad, nl + 1);
    cuda_program_name(&name, c.m);
    char *ptx = NULL;
    assert_int_equal(rt_nvrtc_compile(nvrtc, sb_cstr(&bad), sb_cstr(&name), "sm_90", false, NULL, 0, &ptx, &len, &log),
                     SSMC_ERR_BACKEND);
    assert_non_null(strstr(sb_cstr(&log), "ssmc_gla.cu(2)"));
    sb_free(&src);
    sb_free(&bad);
    sb_free(&name);
    sb_free(&log);
    diag_free(&d);
    compiled_free(&c);
    ssmc_ctx_free(ctx);
    free(text);
}

/* At the benchmark shapes every state stays in registers (lets may be shared
 * on purpose: GLA's gate is computed once per block), nothing goes to the
 * global workspace, and a sequence spreads over enough blocks. The LSTM's
 * hidden state, read at every index by every gate, lives in shared memory. */
static void test_plans_keep_states_in_registers(void **state)
{
    static const struct {
        const char *file;
        ssmc_dim dims[3];
        int nd;
    } cases[] = {
        {"examples/gla.ssm", {{"H", 16}, {"K", 128}, {"V", 128}}, 3},
        {"examples/gated_deltanet.ssm", {{"H", 16}, {"K", 128}, {"V", 128}}, 3},
        {"examples/deltanet.ssm", {{"H", 16}, {"K", 128}, {"V", 128}}, 3},
        {"examples/mamba2.ssm", {{"H", 64}, {"P", 64}, {"N", 128}}, 3},
        {"examples/retnet.ssm", {{"H", 16}, {"K", 128}, {"V", 128}}, 3},
        {"examples/rwkv6.ssm", {{"H", 16}, {"K", 128}, {"V", 128}}, 3},
        {"examples/linear_attn.ssm", {{"H", 16}, {"K", 128}, {"V", 128}}, 3},
        {"examples/mamba.ssm", {{"E", 1024}, {"N", 16}}, 2},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        size_t len;
        char *text = test_slurp(cases[k].file, &len);
        compiled c;
        compile_ir(&c, cases[k].file, text, len, NULL, cases[k].dims, cases[k].nd);
        pass_plan *p;
        diag d = {0};
        assert_int_equal(cuda_plan_of(&c.a, c.m, NULL, &p, &d), SSMC_OK);
        for (uint32_t i = 0; i < c.m->ntensors; i++) {
            ir_kind kind = c.m->tensors[i].kind;
            if (kind == IR_STATE && p->place[i] != PLAN_PLACE_REG)
                fail_msg("%s: state %s is not in registers", cases[k].file, c.m->tensors[i].name);
            if (kind == IR_LET && p->place[i] == PLAN_PLACE_GLOBAL)
                fail_msg("%s: let %s is in global memory", cases[k].file, c.m->tensors[i].name);
        }
        cuda_launch l = cuda_launch_of(p, 4);
        assert_true(l.shared_bytes <= 4096);
        assert_int_equal(l.ws_floats, 0);
        assert_true(l.threads >= 32 && l.threads <= 256);
        assert_true(l.blocks >= 4 * 16); /* at least batch x heads */
        diag_free(&d);
        compiled_free(&c);
        free(text);
    }
    size_t len;
    char *text = test_slurp("examples/lstm.ssm", &len);
    compiled c;
    compile_ir(&c, "lstm.ssm", text, len, NULL, NULL, 0);
    pass_plan *p;
    diag d = {0};
    assert_int_equal(cuda_plan_of(&c.a, c.m, NULL, &p, &d), SSMC_OK);
    assert_int_equal(p->place[ir_find_tensor(c.m, "h")], PLAN_PLACE_LOCAL);
    assert_int_equal(p->place[ir_find_tensor(c.m, "c")], PLAN_PLACE_REG);
    diag_free(&d);
    compiled_free(&c);
    free(text);
}

/* The chunked cores (codegen/cuda_chunk.c) of every example with a chunked
 * plan, at its dims, to PTX for sm_90, each taking the parameters a launch
 * passes (B, T, ws, every readout's q, k, v, g, beta, every readout's R, the
 * state). */
static int chunk_plan(arena *a, diag *d, const char *rel, const char *text, size_t len, const ssmc_dim *dims, int nd, int C,
                      pipeline *pl)
{
    static ssmc_options o;
    static plan_target tg;
    o = (ssmc_options){.dims = dims, .ndims = nd, .algo = SSMC_ALGO_CHUNKED, .chunk = C};
    tg = plan_target_cuda(NULL);
    *pl = (pipeline){.a = a, .d = d, .o = &o, .target = &tg};
    return pipeline_run(pl, rel, text, len, PIPE_PLAN) == SSMC_OK;
}

static char *chunk_ptx(const ir_model *m, const plan_chunk_core *c, bool state, ssmc_dtype sdt, bool cubin, strbuf *log)
{
    strbuf src = {0}, name = {0};
    diag d = {0};
    if (cuda_chunk_emit(&src, m, c, state, sdt, &d) != SSMC_OK) fail_msg("%s: %s", m->name, sb_cstr(&d.text));
    cuda_program_name(&name, m);
    static const char *const verbose[] = {"--ptxas-options=-v"};
    char *out = NULL;
    size_t len;
    if (rt_nvrtc_compile(nvrtc, sb_cstr(&src), sb_cstr(&name), "sm_90", cubin, cubin ? verbose : NULL, cubin ? 1 : 0,
                         &out, &len, log) != SSMC_OK)
        fail_msg("%s (chunked core of %s, state %d):\n%s", m->name, m->tensors[c->state].name, state, sb_cstr(log));
    if (!cubin) {
        assert_non_null(strstr(out, ".target sm_90"));
        for (int pass = 0; pass < CUDA_CHUNK_PASSES; pass++) { /* both passes, with the parameters a launch passes */
            strbuf entry = {0};
            cuda_chunk_kernel_name(&entry, m, c, pass);
            sb_puts(&entry, "(");
            const char *at = strstr(out, sb_cstr(&entry));
            if (!at) fail_msg("%s: no entry %s in the chunked core's PTX", m->name, sb_cstr(&entry));
            int want = 3 + 2 * c->nreadouts + 4 + 1, got = 0;
            for (const char *q = at; *q && *q != ')'; q++) got += strncmp(q, ".param", 6) == 0;
            if (got != want)
                fail_msg("%s: the chunked kernel's pass %d takes %d parameters, a launch passes %d", m->name, pass, got, want);
            sb_free(&entry);
        }
    }
    sb_free(&src);
    sb_free(&name);
    diag_free(&d);
    return out;
}

static void test_chunk_cores_to_ptx(void **state)
{
    (void)state;
    if (!nvrtc) skip();
    char names[64][128];
    int n = test_list_examples(names, 64), cores = 0, per_key = 0;
    for (int i = 0; i < n; i++) {
        size_t len;
        char *text = test_slurp(names[i], &len);
        for (int C = 64; C >= 16; C -= 48) {
            arena a;
            arena_init(&a);
            diag d = {0};
            pipeline pl;
            if (chunk_plan(&a, &d, names[i], text, len, NULL, 0, C, &pl)) {
                const plan_chunked *ch = pl.plan->chunked;
                for (int c = 0; c < ch->ncores; c++) {
                    /* every core at C = 64 with an f32 state; those with a decay per key also without a state,
                     * and at C = 16 with a bf16 one */
                    bool key = ch->cores[c].decay == PASS_DECAY_KEY;
                    strbuf log = {0};
                    if (C == 64) free(chunk_ptx(pl.ir, &ch->cores[c], true, SSMC_F32, false, &log));
                    if (C == 64 && key) free(chunk_ptx(pl.ir, &ch->cores[c], false, SSMC_F32, false, &log));
                    if (C == 16 && key) free(chunk_ptx(pl.ir, &ch->cores[c], true, SSMC_BF16, false, &log));
                    sb_free(&log);
                    cores += C == 64;
                    per_key += key && C == 16;
                }
            }
            diag_free(&d);
            arena_free(&a);
        }
        free(text);
    }
    /* 16 examples with a chunked plan (linear_attn has two cores), 7 of them with a decay per key */
    assert_true(cores >= 17);
    assert_true(per_key >= 7);
}

/* The number that ends just before p in ptxas's report (NVRTC's log), or -1. */
static int number_before(const char *log, const char *p)
{
    if (!p) return -1;
    while (p > log && p[-1] == ' ') p--;
    while (p > log && p[-1] >= '0' && p[-1] <= '9') p--;
    return *p >= '0' && *p <= '9' ? atoi(p) : -1;
}

/* The largest of ptxas's numbers `what` over every kernel of the log (-1: none). */
static int ptxas_max(const char *log, const char *what)
{
    int best = -1;
    for (const char *p = strstr(log, what); p; p = strstr(p + 1, what)) {
        int x = number_before(log, p);
        if (x > best) best = x;
    }
    return best;
}

/* At the benchmark shape (H = 16, K = V = 128, C = 64) the cores with a decay
 * per key keep their state tile and operands in registers: ptxas reports at
 * most 16 bytes of stack frame and spills (their carry's loop once put the
 * state tile in local memory); the others' numbers are printed. */
static void test_chunk_cores_registers(void **state)
{
    (void)state;
    if (!nvrtc) skip();
    static const char *const files[] = {"examples/gla.ssm", "examples/rwkv6.ssm", "examples/fla_simple_gla.ssm",
                                        "examples/gated_deltanet.ssm"};
    static const ssmc_dim dims[] = {{"H", 16}, {"K", 128}, {"V", 128}};
    for (size_t f = 0; f < sizeof files / sizeof *files; f++) {
        size_t len;
        char *text = test_slurp(files[f], &len);
        arena a;
        arena_init(&a);
        diag d = {0};
        pipeline pl;
        if (!chunk_plan(&a, &d, files[f], text, len, dims, 3, 64, &pl)) fail_msg("%s: %s", files[f], sb_cstr(&d.text));
        const plan_chunk_core *c = &pl.plan->chunked->cores[0];
        strbuf log = {0};
        free(chunk_ptx(pl.ir, c, true, SSMC_BF16, true, &log));
        const char *r = sb_cstr(&log);
        /* the worst of the core's two passes */
        int regs = ptxas_max(r, "registers"), frame = ptxas_max(r, "bytes stack frame"),
            spills = ptxas_max(r, "bytes spill stores");
        if (regs < 0 || frame < 0 || spills < 0) fail_msg("%s: no ptxas report in NVRTC's log:\n%s", files[f], r);
        printf("# %s chunked core at K = V = 128, C = 64 (the worse pass): %d registers, %d bytes stack frame, %d bytes "
               "spilled\n",
               files[f], regs, frame, spills);
        /* the state pass runs two blocks an SM (128 registers): a scalar or two may spill, never the state
         * tile (256 bytes a thread at K = V = 128) */
        if (c->decay == PASS_DECAY_KEY && (frame > 16 || spills > 16))
            fail_msg("%s: the core uses local memory:\n%s", files[f], r);
        sb_free(&log);
        diag_free(&d);
        arena_free(&a);
        free(text);
    }
}

/* The chunked cores' backward (codegen/cuda_chunk_bwd.c) of every example
 * whose core it renders, at its dims and C = 16 and 64, to PTX for sm_90,
 * each taking the parameters core_backward passes (B, T, ws, every readout's
 * q, k, v, g, beta, every readout's dR, the state, dstate, every readout's
 * dq, dk, dv, dg, dbeta, dw); at the benchmark shape (K = V = 128, C = 64) to a cubin, ptxas's
 * numbers printed. */
static void test_chunk_backward_to_ptx(void **state)
{
    (void)state;
    if (!nvrtc) skip();
    char names[64][128];
    int n = test_list_examples(names, 64), cores = 0;
    static const ssmc_dim big[] = {{"H", 16}, {"K", 128}, {"V", 128}};
    static const char *const bench[] = {"examples/fla_simple_gla.ssm", "examples/gated_deltanet.ssm", "examples/gla.ssm"};
    for (int i = 0; i < n + 3; i++) {
        const char *file = i < n ? names[i] : bench[i - n];
        size_t len;
        char *text = test_slurp(file, &len);
        for (int C = 64; C >= 16; C -= 48) {
            if (i >= n && C == 16) break;
            arena a;
            arena_init(&a);
            diag d = {0};
            pipeline pl;
            if (chunk_plan(&a, &d, file, text, len, i < n ? NULL : big, i < n ? 0 : 3, C, &pl)) {
                const plan_chunked *ch = pl.plan->chunked;
                for (int ci = 0; ci < ch->ncores; ci++) {
                    const plan_chunk_core *c = &ch->cores[ci];
                    if (!cuda_chunk_bwd_supported(c, NULL)) continue;
                    strbuf src = {0}, name = {0}, log = {0}, entry = {0};
                    if (cuda_chunk_bwd_emit(&src, pl.ir, c, &d) != SSMC_OK) fail_msg("%s: %s", file, sb_cstr(&d.text));
                    cuda_program_name(&name, pl.ir);
                    static const char *const verbose[] = {"--ptxas-options=-v"};
                    bool cubin = i >= n;
                    char *out = NULL;
                    size_t olen;
                    if (rt_nvrtc_compile(nvrtc, sb_cstr(&src), sb_cstr(&name), "sm_90", cubin, cubin ? verbose : NULL,
                                         cubin ? 1 : 0, &out, &olen, &log) != SSMC_OK)
                        fail_msg("%s (chunked core backward of %s, C = %d):\n%s", file, pl.ir->tensors[c->state].name, C,
                                 sb_cstr(&log));
                    if (cubin) {
                        const char *dump = getenv("SSMC_PTX_DUMP"); /* a folder: the sources, for nvcc -v by hand */
                        if (dump) {
                            char path[512];
                            snprintf(path, sizeof path, "%s/%s_bwd.cu", dump, pl.ir->name);
                            FILE *f = fopen(path, "w");
                            if (f) fputs(sb_cstr(&src), f), fclose(f);
                            snprintf(path, sizeof path, "%s/%s_bwd.log", dump, pl.ir->name);
                            if ((f = fopen(path, "w"))) fputs(sb_cstr(&log), f), fclose(f);
                        }
                        printf("# %s chunked core backward at K = V = 128, C = 64 (%d passes, the most of any): %d "
                               "registers, %d bytes stack frame, %d bytes spilled\n",
                               file, cuda_chunk_bwd_passes(c), ptxas_max(sb_cstr(&log), "registers"),
                               ptxas_max(sb_cstr(&log), "bytes stack frame"),
                               ptxas_max(sb_cstr(&log), "bytes spill stores"));
                        assert_int_equal(ptxas_max(sb_cstr(&log), "bytes spill stores"), 0);
                    } else {
                        assert_non_null(strstr(out, "mma.sync.aligned.m16n8k16"));
                        for (int p = 0; p < cuda_chunk_bwd_passes(c); p++) {
                            sb_free(&entry);
                            cuda_chunk_bwd_kernel_name(&entry, pl.ir, c, p);
                            /* the pass's entry, and every pass takes the parameters core_backward passes */
                            const char *e = strstr(out, sb_cstr(&entry));
                            assert_non_null(e);
                            int want = 3 + 3 * c->nreadouts + 4 + 2 + 5, got = 0;
                            for (const char *q = e; *q && *q != ')'; q++) got += strncmp(q, ".param", 6) == 0;
                            if (got != want)
                                fail_msg("%s: pass %d of the chunked backward takes %d parameters, core_backward passes %d",
                                         file, p, got, want);
                        }
                        cores++;
                    }
                    free(out);
                    sb_free(&src);
                    sb_free(&name);
                    sb_free(&log);
                    sb_free(&entry);
                }
            }
            diag_free(&d);
            arena_free(&a);
        }
        free(text);
    }
    /* no decay or a decay per head: fla_simple_gla, fla_linear_attn, linear_attn (two cores), mamba2, ... at both C */
    printf("# %d chunked core backwards to PTX\n", cores);
    assert_true(cores >= 8);
}

static int setup(void **state)
{
    strbuf err = {0};
    if (rt_nvrtc_load(&nvrtc, &err) != SSMC_OK) {
        snprintf(nvrtc_why, sizeof nvrtc_why, "%s", sb_cstr(&err));
        printf("# NVRTC cases skipped: %s\n", nvrtc_why);
        nvrtc = NULL;
    }
    sb_free(&err);
    return 0;
}

static int teardown(void **state)
{
    rt_nvrtc_free(nvrtc);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_examples_to_ptx),
        cmocka_unit_test(test_edge_models_to_ptx),
        cmocka_unit_test(test_grad_kernels_to_ptx),
        cmocka_unit_test(test_emit_names_lines),
        cmocka_unit_test(test_nvrtc_failure_names_program),
        cmocka_unit_test(test_plans_keep_states_in_registers),
        cmocka_unit_test(test_chunk_cores_to_ptx),
        cmocka_unit_test(test_chunk_cores_registers),
        cmocka_unit_test(test_chunk_backward_to_ptx),
    };
    const char *only = getenv("SSMC_PTX_FILTER"); /* e.g. test_chunk_*: the tests to run, when one is being worked on */
    if (only && *only) cmocka_set_test_filter(only);
    return cmocka_run_group_tests(tests, setup, teardown);
}
