/* test_cuda_emu.c: the CUDA backend's generated kernels, run without a GPU.
 * Each kernel is compiled as C++ against tests/gpu/emu/cuda_emu.h (CUDA's
 * builtins on CPU threads: real barriers, real warp exchanges) and run over
 * the same grid and block as on a GPU, then compared with the interpreter:
 * every example and every model of tests/gpu/edge.ssm in f32 from an initial
 * state (the final state of a random 5-step prefix) and in bf16 at odd dims
 * without one, plus the benchmark models under other layouts (plan_tune).
 * Tolerances: max|got - ref| / max|ref| <= 1e-5 (f32), 2e-2 (bf16). Outputs
 * and shared memory start as NaN. Needs a C++ compiler ($CXX, else c++):
 * skip() without one. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "codegen/cuda.h"
#include "codegen/chunked_run.h"
#include "codegen/cuda_chunk.h"
#include "driver/pipeline.h"
#include "tests/unit/helpers/chunk_ref.h"
#include "frontend/ast.h"
#include "ir/ir.h"
#include "passes/passes.h"
#include "tests/unit/helpers/files.h"
#include "support/dtype.h"

static bool have_cxx;
static char workdir[64];
static uint64_t rng = 0x243f6a8885a308d3ull;

static double uniform(void)
{
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(rng >> 11) * 0x1.0p-53 * 2.0 - 1.0;
}


static const char *cxx(void)
{
    const char *c = getenv("CXX");
    return c && *c ? c : "c++";
}


typedef struct model {
    arena a;
    diag d;
    src_file f;
    char *text;
    ir_model *m;
} model;

/* Source to verified IR, as the driver does it; odd: every dim made odd
 * (d | 1) unless `dims` gives them. */
static void model_open(model *md, const char *rel, const char *name, const ssmc_dim *dims, int nd, bool odd)
{
    memset(md, 0, sizeof *md);
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", test_src_dir(), rel);
    size_t len;
    const char *why;
    md->text = read_file(path, &len, &why);
    if (!md->text) fail_msg("cannot read %s: %s", path, why);
    arena_init(&md->a);
    md->f = (src_file){rel, md->text, len};
    ast_file *af = parse_file(&md->a, &md->d, &md->f);
    if (!af) fail_msg("%s", sb_cstr(&md->d.text));
    ast_model *am = &af->models[0];
    for (int i = 0; name && i < af->nmodels; i++)
        if (strcmp(af->models[i].name, name) == 0) am = &af->models[i];
    ast_dim_override over[16];
    int n = 0;
    for (int i = 0; i < nd; i++) over[n++] = (ast_dim_override){dims[i].name, dims[i].value};
    for (int i = 0; odd && !nd && i < am->ndecls && n < 16; i++)
        if (am->decls[i].kind == AST_DIM) over[n++] = (ast_dim_override){am->decls[i].name, am->decls[i].value | 1};
    if (!check_model(&md->a, &md->d, &md->f, am, over, n)) fail_msg("%s", sb_cstr(&md->d.text));
    md->m = ir_lower(&md->a, &md->d, &md->f, am);
    if (!md->m || !ir_verify(md->m, &md->d)) fail_msg("%s", sb_cstr(&md->d.text));
    if (!pass_lag(&md->a, &md->m, &md->d) || !ir_verify(md->m, &md->d)) fail_msg("%s", sb_cstr(&md->d.text));
}

static void model_close(model *md)
{
    diag_free(&md->d);
    arena_free(&md->a);
    free(md->text);
}

/* blocks, threads, dynamic shared bytes, then the kernel's B, T, workspace and parameters */
typedef int (*launch_fn)(long long, int, unsigned, long long, long long, float *, void **);

/* Compiles the kernel with the emulation header; returns the library. */
/* The kernel plan for the CUDA target (tune may be NULL). */
static ssmc_status cuda_plan_of(arena *a, const ir_model *m, const plan_tune *tune, pass_plan **p, diag *d)
{
    plan_target tg = plan_target_cuda(tune);
    return plan_make(a, m, NULL, NULL, PLAN_ALGO_RECURRENT, &tg, p, d);
}

/* Kernels already compiled (by a hash of their source and name), so that a
 * kernel two cases share is compiled once. */
static struct {
    uint64_t hash;
    char so[96];
} built[512];
static int nbuilt, nso;

static uint64_t fnv1a(uint64_t h, const char *s)
{
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
    return h;
}

/* Compiles the n (1 to 3) kernels of the source named `kernel` (the same
 * parameters) with the emulation header; returns the library, launch[i] the
 * i-th kernel's launcher. */
static void *buildn(const char *src, const char *const *kernel, int n, launch_fn *launch)
{
    char cpp[128], so[96], cmd[1024];
    uint64_t hash = fnv1a(0xcbf29ce484222325ull, src);
    for (int i = 0; i < n; i++) hash = fnv1a(fnv1a(hash, kernel[i]), "\n");
    const char *path = NULL;
    for (int i = 0; i < nbuilt && !path; i++)
        if (built[i].hash == hash) path = built[i].so;
    if (!path) {
        snprintf(cpp, sizeof cpp, "%s/k.cpp", workdir);
        snprintf(so, sizeof so, "%s/k%d.so", workdir, nso++);
        FILE *f = fopen(cpp, "w");
        assert_non_null(f);
        fprintf(f, "#include \"%s/tests/gpu/emu/cuda_emu.h\"\n%s\n#define EMU_KERNEL %s\n", test_src_dir(), src, kernel[0]);
        for (int i = 1; i < n; i++) fprintf(f, "#define EMU_KERNEL%d %s\n", i + 1, kernel[i]);
        fprintf(f, "#define EMU_TAIL\n#include \"%s/tests/gpu/emu/cuda_emu.h\"\n", test_src_dir());
        fclose(f);
        snprintf(cmd, sizeof cmd, "%s -std=c++17 -O1 -shared -fPIC -w -o %s %s -lpthread", cxx(), so, cpp);
        if (system(cmd) != 0) fail_msg("%s failed on the generated kernel %s", cxx(), kernel[0]);
        path = so;
    }
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) fail_msg("%s", dlerror());
    static const char *const entry[] = {"emu_launch", "emu_launch2", "emu_launch3"};
    for (int i = 0; i < n; i++) {
        launch[i] = (launch_fn)(uintptr_t)dlsym(h, entry[i]);
        assert_non_null(launch[i]);
    }
    if (path == so) {
        if (nbuilt < (int)(sizeof built / sizeof *built)) {
            built[nbuilt].hash = hash;
            snprintf(built[nbuilt++].so, sizeof built[0].so, "%s", so);
        } else {
            unlink(so);
        }
    }
    return h;
}

static void *build(const char *src, const char *kernel, launch_fn *launch) { return buildn(src, &kernel, 1, launch); }

/* A chunked core's two passes (codegen/cuda_chunk.h) over ptrs (its
 * parameters after B, T and the workspace), with a workspace of
 * cuda_chunk_ws_bytes poisoned with NaN. */
static void run_chunk_core(const char *src, const ir_model *m, const plan_chunk_core *c, int64_t B, int64_t T, void **ptrs)
{
    strbuf n0 = {0}, n1 = {0};
    cuda_chunk_kernel_name(&n0, m, c, 0);
    cuda_chunk_kernel_name(&n1, m, c, 1);
    launch_fn pass[CUDA_CHUNK_PASSES];
    const char *names[] = {sb_cstr(&n0), sb_cstr(&n1)};
    void *lib = buildn(src, names, 2, pass);
    size_t wsb = cuda_chunk_ws_bytes(c, B, T);
    float *ws = malloc(wsb);
    assert_non_null(ws);
    memset(ws, 0xff, wsb); /* NaN in f32 and bf16 */
    for (int p = 0; p < CUDA_CHUNK_PASSES; p++) {
        cuda_launch l = cuda_chunk_launch(c, B, T, p);
        assert_int_equal(pass[p](l.blocks, (int)l.threads, l.shared_bytes, B, T, ws, ptrs), 0);
    }
    free(ws);
    dlclose(lib);
    sb_free(&n0);
    sb_free(&n1);
}

/* A decode against state pools (cuda_sig.rows): pools of `rows` rows, the
 * row of each sequence (negative: padding), which sequences have a state. */
typedef struct emu_rows {
    int64_t rows;
    const int32_t *index;
    const uint8_t *has; /* NULL: every sequence has */
    bool one_step;      /* the T = 1 kernel */
} emu_rows;

/* One emulated run against the interpreter; with `final_only` the states are
 * given to receive the final state only (their buffers NaN): they start as
 * states not given do (their init, or zero). r: NULL, or a decode by pool
 * row (init is then implied: the pools hold the final states of a random
 * 5-step prefix of `rows` sequences). */
/* The workspace of a launch (every block's, then the partial sums' scratch),
 * poisoned. */
static float *emu_workspace_of(const pass_plan *plan, int64_t B, int64_t T)
{
    cuda_launch l = cuda_launch_of(plan, B);
    int64_t n = cuda_ws_floats(&l, B, T);
    if (!n) return NULL;
    float *ws = malloc((size_t)n * sizeof(float));
    assert_non_null(ws);
    for (int64_t k = 0; k < n; k++) ws[k] = NAN;
    return ws;
}

/* The finishing step of split reductions (plan.h), as the backend's helpers
 * (ssmc_sum_rows, ssmc_add_rows) do it: each partial output gets the sum of
 * its slices, in order, and each partial accumulator state its tiles past the
 * first added to what tile 0 left in place (by pool row when rows are given);
 * a padding slot (rows: a negative row) keeps its values. */
static void emu_finish_partials(const pass_plan *plan, int64_t B, int64_t T, const float *ws, void *const *out,
                                ssmc_dtype dt, const int *rows)
{
    const ir_model *m = plan->m;
    cuda_launch l = cuda_launch_of(plan, B);
    for (uint32_t i = 0; i < m->ntensors; i++) {
        if (!plan->part_tiles[i] || !out[i]) continue;
        int64_t per = plan->elems[i];
        if (m->tensors[i].kind == IR_STATE) {
            int64_t n = B * per;
            const float *src = ws + l.blocks * l.ws_floats + B * T * plan->part_floats + B * plan->part_off[i];
            for (int64_t e = 0; e < n; e++) {
                int64_t o = e;
                if (rows) {
                    if (rows[e / per] < 0) continue;
                    o = (int64_t)rows[e / per] * per + e % per;
                }
                float acc = (float)dtype_get(out[i], dt, (size_t)o);
                for (int64_t r = 0; r < plan->part_tiles[i] - 1; r++) acc += src[r * n + e];
                dtype_set(out[i], dt, (size_t)o, acc);
            }
            continue;
        }
        int64_t n = B * T * per;
        const float *src = ws + l.blocks * l.ws_floats + B * T * plan->part_off[i];
        for (int64_t e = 0; e < n; e++) {
            if (rows && rows[e / (T * per)] < 0) continue;
            float acc = 0.f;
            for (int64_t r = 0; r < plan->part_tiles[i]; r++) acc += src[r * n + e];
            dtype_set(out[i], dt, (size_t)e, acc);
        }
    }
}

static void emu_case_full(const model *md, const plan_tune *tune, ssmc_dtype dt, int64_t B, int64_t T, bool init,
                          bool final_only, const emu_rows *r, const char *what)
{
    const ir_model *m = md->m;
    arena a;
    arena_init(&a);
    diag d = {0};
    pass_plan *plan;
    if (cuda_plan_of(&a, m, tune, &plan, &d) != SSMC_OK) fail_msg("%s: %s", what, sb_cstr(&d.text));
    uint32_t nt = m->ntensors;
    ssmc_dtype *dts = calloc(nt, sizeof *dts);
    bool *present = calloc(nt, sizeof *present), *fresh = calloc(nt, sizeof *fresh);
    unsigned char *ifresh = calloc(nt, 1);
    void **buf = calloc(nt, sizeof *buf), **ptrs = calloc(nt, sizeof *ptrs);
    double **ref = calloc(nt, sizeof *ref), **data = calloc(nt, sizeof *data);
    size_t *count = calloc(nt, sizeof *count);
    assert_true(dts && present && fresh && ifresh && buf && ptrs && ref && data && count);
    for (uint32_t i = 0; i < nt; i++) {
        dts[i] = dt;
        present[i] = m->tensors[i].kind != IR_LET && (m->tensors[i].kind != IR_STATE || init || final_only);
        fresh[i] = final_only && m->tensors[i].kind == IR_STATE;
        ifresh[i] = fresh[i];
    }
    if (r) {
        init = true;
        for (uint32_t i = 0; i < nt; i++) present[i] = m->tensors[i].kind != IR_LET && (m->tensors[i].kind != IR_STATE || init);
    }
    cuda_sig sig = {.dtype = dts, .present = present, .vec = true, .fresh = fresh, .rows = r != NULL, .one_step = r && r->one_step};
    strbuf src = {0}, kname = {0};
    if (cuda_emit(&src, plan, &sig, &d) != SSMC_OK) fail_msg("%s: %s", what, sb_cstr(&d.text));
    cuda_kernel_name(&kname, m);
    launch_fn launch;
    void *lib = build(sb_cstr(&src), sb_cstr(&kname), &launch);

    int np = 0;
    if (r) { /* the kernel's rows and has pointers come first */
        ptrs = realloc(ptrs, (nt + 2) * sizeof *ptrs);
        assert_non_null(ptrs);
        ptrs[np++] = (void *)r->index;
        ptrs[np++] = (void *)r->has;
    }
    int64_t SB = r ? r->rows : B; /* the states' batch: pools of rows */
    for (uint32_t i = 0; i < nt; i++) {
        const ir_tensor *t = &m->tensors[i];
        if (t->kind == IR_LET) continue;
        size_t n = (size_t)ir_tensor_elems(m, t) * (t->kind == IR_PARAM ? 1 : t->kind == IR_STATE ? (size_t)SB : (size_t)B) *
                   (t->per_step ? (size_t)T : 1);
        count[i] = n;
        ref[i] = calloc(n ? n : 1, sizeof(double));
        buf[i] = aligned_alloc(64, ((n ? n : 1) * dtype_size(dt) + 63) / 64 * 64);
        assert_true(ref[i] && buf[i]);
        for (size_t k = 0; k < n; k++) {
            dtype_set(buf[i], dt, k, t->kind == IR_OUTPUT || fresh[i] ? NAN : t->kind == IR_STATE ? 0.0 : uniform());
            ref[i][k] = dtype_get(buf[i], dt, k);
        }
        ptrs[np++] = present[i] ? buf[i] : NULL;
    }
    if (init) { /* the final state of a random 5-step prefix */
        double **pd = calloc(nt, sizeof *pd);
        for (uint32_t i = 0; i < nt; i++) {
            const ir_tensor *t = &m->tensors[i];
            if (t->kind == IR_LET || t->kind == IR_OUTPUT) continue;
            size_t n = (size_t)ir_tensor_elems(m, t) * (t->kind == IR_PARAM ? 1 : (size_t)SB) * (t->per_step ? 5 : 1);
            pd[i] = calloc(n ? n : 1, sizeof(double));
            if (t->kind == IR_PARAM) memcpy(pd[i], ref[i], n * sizeof(double));
            if (t->kind == IR_INPUT)
                for (size_t k = 0; k < n; k++) pd[i][k] = uniform();
        }
        ir_interp_args pa = {.batch = SB, .T = 5, .data = pd};
        assert_true(ir_interp(m, &pa, &d));
        for (uint32_t i = 0; i < nt; i++) {
            if (m->tensors[i].kind == IR_STATE)
                for (size_t k = 0; k < count[i]; k++) {
                    dtype_set(buf[i], dt, k, pd[i][k]);
                    ref[i][k] = dtype_get(buf[i], dt, k);
                }
            free(pd[i]);
        }
        free(pd);
    }
    cuda_launch l = cuda_launch_of(plan, B);
    float *ws = emu_workspace_of(plan, B, T);
    launch(l.blocks, (int)l.threads, l.shared_bytes, B, T, ws, ptrs);
    emu_finish_partials(plan, B, T, ws, buf, dt, r ? r->index : NULL);
    for (uint32_t i = 0; i < nt; i++)
        data[i] = m->tensors[i].kind == IR_LET || (m->tensors[i].kind == IR_STATE && !init && !final_only) ? NULL : ref[i];
    ir_interp_args ia = {.batch = B, .T = T, .data = data, .fresh = ifresh, .rows = r ? r->index : NULL,
                         .has_state = r ? r->has : NULL};
    assert_true(ir_interp(m, &ia, &d));
    double tol = dt == SSMC_F32 ? 1e-5 : 2e-2;
    for (uint32_t i = 0; i < nt; i++) {
        const ir_tensor *t = &m->tensors[i];
        if (t->kind != IR_OUTPUT && !(t->kind == IR_STATE && (init || final_only))) continue;
        double mref = 0, mdiff = 0;
        for (size_t k = 0; k < count[i]; k++) {
            double g = dtype_get(buf[i], dt, k), rv = ref[i][k];
            /* a padding slot's outputs stay as poisoned; rows no sequence has stay as they were,
             * exactly (the reference leaves both alone too) */
            if (isnan(rv) && isnan(g)) continue;
            if (!isfinite(g)) fail_msg("%s: %s[%zu] = %g (reference %g)", what, t->name, k, g, rv);
            if (isnan(rv)) fail_msg("%s: %s[%zu] = %g was written (a padding slot's)", what, t->name, k, g);
            if (fabs(rv) > mref) mref = fabs(rv);
            if (fabs(g - rv) > mdiff) mdiff = fabs(g - rv);
        }
        double rel = mref > 0 ? mdiff / mref : mdiff;
        if (rel > tol) fail_msg("%s: %s: relative error %.3e > %.0e", what, t->name, rel, tol);
        printf("# %-58s %-6s rel %.2e\n", what, t->name, rel);
    }
    dlclose(lib);
    for (uint32_t i = 0; i < nt; i++) {
        free(buf[i]);
        free(ref[i]);
    }
    free(ws);
    free(dts);
    free(present);
    free(fresh);
    free(ifresh);
    free(buf);
    free(ptrs);
    free(ref);
    free(data);
    free(count);
    sb_free(&src);
    sb_free(&kname);
    diag_free(&d);
    arena_free(&a);
}

static void emu_case(const model *md, const plan_tune *tune, ssmc_dtype dt, int64_t B, int64_t T, bool init,
                     const char *what)
{
    emu_case_full(md, tune, dt, B, T, init, false, NULL, what);
}

/* f32 from a state at the declared dims; bf16 without one at odd dims. */
static void two_cases(const char *rel, const char *name, const ssmc_dim *odd, int nodd)
{
    char what[256];
    model md;
    model_open(&md, rel, name, NULL, 0, false);
    snprintf(what, sizeof what, "%s %s f32 B=2 T=6 from a state", rel, name ? name : "");
    emu_case(&md, NULL, SSMC_F32, 2, 6, true, what);
    model_close(&md);
    model_open(&md, rel, name, odd, nodd, true);
    snprintf(what, sizeof what, "%s %s bf16 B=3 T=3 odd dims", rel, name ? name : "");
    emu_case(&md, NULL, SSMC_BF16, 3, 3, false, what);
    model_close(&md);
}

static void test_examples(void **state)
{
    if (!have_cxx) skip();
    char names[64][128];
    int n = test_list_examples(names, 64);
    assert_true(n >= 9);
    for (int i = 0; i < n; i++) two_cases(names[i], NULL, NULL, 0);
}

/* Split reductions (tests/gpu/partial.ssm): outputs whose root sum (or linear
 * root, through a partial let too) runs over V, and accumulator states summing over V (and H), which the
 * plan splits only so, in tiles that overhang V; against the interpreter from
 * a state (f32: tile 0 of an accumulator starts from it, the others from zero)
 * and without (bf16, a smaller V, odd), and the plan's facts: V on the grid
 * with partial outputs or accumulators, the schedule alone keeping it whole;
 * an output that adds a value outside its sum keeps V whole. */
static void test_partial_sums(void **state)
{
    (void)state;
    static const char *const models[] = {"partial_sums", "partial_lanes", "partial_linear", "partial_accum", "partial_let"};
    for (size_t k = 0; k < sizeof models / sizeof *models; k++) {
        model md;
        model_open(&md, "tests/gpu/partial.ssm", models[k], NULL, 0, false);
        arena a;
        arena_init(&a);
        diag d = {0};
        pass_plan *p;
        if (cuda_plan_of(&a, md.m, NULL, &p, &d) != SSMC_OK) fail_msg("%s", sb_cstr(&d.text));
        int V = -1;
        for (int c = 0; c < p->ncls; c++)
            if (strcmp(md.m->dims[p->sched.class_dim[c]].name, "V") == 0) V = c;
        assert_true(V >= 0 && p->cls[V].split && p->cls[V].ntiles == 3 && p->cls[V].n % p->cls[V].tile != 0);
        if (strcmp(models[k], "partial_accum") == 0)
            assert_true(p->part_floats == 0 && p->part_state_floats > 0);
        else
            assert_true(p->part_floats > 0 && p->part_state_floats == 0);
        pass_sched plain;
        assert_true(pass_schedule(&a, md.m, &plain, &d));
        for (int c = 0; c < plain.nclasses; c++)
            if (strcmp(md.m->dims[plain.class_dim[c]].name, "V") == 0) assert_false(plain.splittable[c]);
        arena_free(&a);
        diag_free(&d);
        if (!have_cxx) {
            model_close(&md);
            continue;
        }
        char what[128];
        snprintf(what, sizeof what, "partial.ssm %s f32 B=2 T=6 from a state", models[k]);
        emu_case(&md, NULL, SSMC_F32, 2, 6, true, what);
        model_close(&md);
        ssmc_dim odd[] = {{"H", 2}, {"K", 33}, {"V", 21}};
        model_open(&md, "tests/gpu/partial.ssm", models[k], odd, 3, false);
        snprintf(what, sizeof what, "partial.ssm %s bf16 B=3 T=3 H=2 K=33 V=21", models[k]);
        emu_case(&md, NULL, SSMC_BF16, 3, 3, false, what);
        model_close(&md);
    }
    model md;
    model_open(&md, "tests/gpu/partial.ssm", "partial_affine", NULL, 0, false);
    arena a;
    arena_init(&a);
    diag d = {0};
    pass_plan *p;
    if (cuda_plan_of(&a, md.m, NULL, &p, &d) != SSMC_OK) fail_msg("%s", sb_cstr(&d.text));
    for (int c = 0; c < p->ncls; c++)
        if (strcmp(md.m->dims[p->sched.class_dim[c]].name, "V") == 0) assert_false(p->cls[c].split);
    assert_true(p->part_floats == 0 && p->part_state_floats == 0);
    arena_free(&a);
    diag_free(&d);
    if (have_cxx) emu_case(&md, NULL, SSMC_F32, 2, 6, true, "partial.ssm partial_affine f32 B=2 T=6 from a state");
    model_close(&md);
    if (!have_cxx) skip();
}

/* Lanes per element (tests/gpu/group.ssm): flat statements with too few
 * elements for the block get groups of lanes for their outer reductions
 * (PLAN_RED_GROUP), one element per item (y, m: 32 lanes) or several passes
 * over the elements, the last one overhanging (u: 8 lanes, 16 per pass, 41
 * elements); against the interpreter in f32 from a state and in bf16 at odd
 * dims. */
static void test_group_reductions(void **state)
{
    (void)state;
    static const struct {
        const char *model, *out;
        int group;
    } cases[] = {{"group_whole", "y", 32}, {"group_whole", "m", 32}, {"group_passes", "u", 8}};
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        model md;
        model_open(&md, "tests/gpu/group.ssm", cases[k].model, NULL, 0, false);
        arena a;
        arena_init(&a);
        diag d = {0};
        pass_plan *p;
        if (cuda_plan_of(&a, md.m, NULL, &p, &d) != SSMC_OK) fail_msg("%s", sb_cstr(&d.text));
        bool found = false;
        for (uint32_t si = 0; si < md.m->nstmts; si++) {
            const ir_stmt *s = &md.m->stmts[si];
            if (strcmp(md.m->tensors[s->tensor].name, cases[k].out) != 0) continue;
            found = true;
            assert_false(p->layout[si]);
            assert_int_equal(p->group[si], cases[k].group);
            ir_ref r = s->root;
            while (md.m->insts[r].op != IR_SUM && md.m->insts[r].op != IR_RMAX) r = md.m->insts[r].a;
            assert_int_equal(p->red_mode[r], PLAN_RED_GROUP);
        }
        assert_true(found);
        arena_free(&a);
        diag_free(&d);
        model_close(&md);
    }
    if (!have_cxx) skip();
    static const char *const models[] = {"group_whole", "group_passes"};
    for (size_t k = 0; k < sizeof models / sizeof *models; k++) {
        model md;
        char what[128];
        model_open(&md, "tests/gpu/group.ssm", models[k], NULL, 0, false);
        snprintf(what, sizeof what, "group.ssm %s f32 B=2 T=5 from a state", models[k]);
        emu_case(&md, NULL, SSMC_F32, 2, 5, true, what);
        model_close(&md);
        ssmc_dim odd[] = {{"K", 19}, {"V", 45}};
        model_open(&md, "tests/gpu/group.ssm", models[k], odd, 2, false);
        snprintf(what, sizeof what, "group.ssm %s bf16 B=3 T=3 K=19 V=45", models[k]);
        emu_case(&md, NULL, SSMC_BF16, 3, 3, false, what);
        model_close(&md);
    }
}

/* The class of dim `dim` in a plan, -1 when none. */
static int class_named(const pass_plan *p, const char *dim)
{
    for (int c = 0; c < p->ncls; c++)
        if (strcmp(p->m->dims[p->sched.class_dim[c]].name, dim) == 0) return c;
    return -1;
}

/* The simple GLA adjoint at H = 16, K = V = 128 on the cuda target (the
 * recurrent backward measured ~700x its forward without split reductions):
 * items like the forward's (V in 4 tiles of 32 on the grid, K on the lanes,
 * the dS state in registers), dq, dk and dg partial over V, dv whole. */
static void test_partial_adjoint(void **state)
{
    (void)state;
    char path[4096];
    snprintf(path, sizeof path, "%s/bench/gpu/simple_gla.ssm", test_src_dir());
    size_t len;
    const char *why;
    char *src = read_file(path, &len, &why);
    if (!src) fail_msg("cannot read %s: %s", path, why);
    ssmc_dim dims[] = {{"H", 16}, {"K", 128}, {"V", 128}};
    ssmc_options o = {.dims = dims, .ndims = 3, .device = SSMC_DEVICE_CUDA, .algo = SSMC_ALGO_RECURRENT};
    arena a;
    arena_init(&a);
    diag d = {0};
    plan_target tg = plan_target_cuda(NULL);
    pipeline pl = {.a = &a, .d = &d, .o = &o, .target = &tg};
    if (pipeline_run(&pl, path, src, len, PIPE_IR) != SSMC_OK) fail_msg("%s", sb_cstr(&d.text));
    pass_grad pg;
    assert_true(pass_grad_build(&a, pl.ir, &pg, &d));
    pipeline pa = {.a = &a, .d = &d, .o = &o, .target = &tg};
    if (pipeline_run_ir(&pa, pg.adjoint, PIPE_PLAN) != SSMC_OK) fail_msg("%s", sb_cstr(&d.text));
    const pass_plan *p = pa.plan;
    const ir_model *m = p->m;
    int K = class_named(p, "K"), V = class_named(p, "V"), H = class_named(p, "H");
    assert_true(K >= 0 && V >= 0 && H >= 0);
    assert_int_equal(p->lane_cls, K);
    assert_false(p->cls[K].split);
    assert_true(p->cls[V].split);
    assert_int_equal(p->cls[V].tile, 32);
    assert_int_equal(p->cls[V].ntiles, 4);
    assert_int_equal(p->items_per_seq, 64);
    for (uint32_t ti = 0; ti < m->ntensors; ti++) {
        const ir_tensor *t = &m->tensors[ti];
        if (strcmp(t->name, "dS") == 0) assert_int_equal(p->place[ti], PLAN_PLACE_REG);
        if (t->kind != IR_OUTPUT) continue;
        bool want = strcmp(t->name, "dv") != 0;
        assert_int_equal(p->partial[(size_t)t->def * (size_t)p->ncls + (size_t)V], want);
        assert_int_equal(p->part_tiles[ti], want ? 4 : 0);
        /* dg (one element per item) and dv (32) share their sums over groups of lanes */
        if (strcmp(t->name, "dg") == 0 || strcmp(t->name, "dv") == 0) {
            const ir_stmt *s = &m->stmts[t->def];
            assert_false(p->layout[t->def]);
            assert_int_equal(p->group[t->def], strcmp(t->name, "dg") == 0 ? 32 : 4);
            assert_true(m->insts[s->root].op == IR_SUM);
            assert_int_equal(p->red_mode[s->root], PLAN_RED_GROUP);
        }
    }
    /* the CPU plan of the same adjoint has none */
    plan_target cpu = plan_target_cpu(8);
    pipeline pc = {.a = &a, .d = &d, .o = &o, .target = &cpu};
    o.device = SSMC_DEVICE_CPU;
    if (pipeline_run_ir(&pc, pg.adjoint, PIPE_PLAN) != SSMC_OK) fail_msg("%s", sb_cstr(&d.text));
    assert_int_equal(pc.plan->part_floats, 0);
    free(src);
    diag_free(&d);
    arena_free(&a);
}

static void test_edge_models(void **state)
{
    if (!have_cxx) skip();
    static const ssmc_dim dense[] = {{"N", 13}, {"D", 3}};
    static const ssmc_dim mix[] = {{"H", 9}, {"G", 3}, {"HG", 3}, {"K", 5}, {"V", 7}, {"W", 3}, {"E", 9}};
    static const ssmc_dim big[] = {{"N", 37}};
    two_cases("tests/gpu/edge.ssm", "dense", dense, 2);
    two_cases("tests/gpu/edge.ssm", "mix", mix, 7);
    two_cases("tests/gpu/edge.ssm", "big", big, 1);
    /* the version 2 constructs; v2_init's bf16 run (no initial state) takes the inits */
    static const ssmc_dim v2_ops[] = {{"N", 7}, {"W", 3}}, v2_lag[] = {{"N", 7}, {"W", 3}}, v2_init[] = {{"K", 5}};
    two_cases("tests/gpu/edge.ssm", "v2_ops", v2_ops, 2);
    two_cases("tests/gpu/edge.ssm", "v2_lag", v2_lag, 2);
    two_cases("tests/gpu/edge.ssm", "v2_init", v2_init, 1);
    /* final states asked for, initial ones not: the inits, then the states written */
    model md;
    model_open(&md, "tests/gpu/edge.ssm", "v2_init", NULL, 0, false);
    emu_case_full(&md, NULL, SSMC_F32, 2, 6, false, true, NULL, "tests/gpu/edge.ssm v2_init f32 B=2 T=6 final states only");
    model_close(&md);
    model_open(&md, "examples/ttt_linear.ssm", NULL, NULL, 0, true);
    emu_case_full(&md, NULL, SSMC_BF16, 3, 3, false, true, NULL, "examples/ttt_linear.ssm bf16 B=3 T=3 odd final states only");
    model_close(&md);
}

/* The benchmark models under layouts other than the default. */
static void test_layouts(void **state)
{
    if (!have_cxx) skip();
    static const plan_tune tunes[] = {
        {.share_lets = 2},
        {.lane_slots = 16, .state_slots = 32},
        {.lane_slots = 8, .state_slots = 64, .warps = 2},
    };
    static const struct {
        const char *file;
        ssmc_dim dims[3];
    } cases[] = {
        {"examples/gla.ssm", {{"H", 2}, {"K", 64}, {"V", 48}}},
        {"examples/gated_deltanet.ssm", {{"H", 2}, {"K", 64}, {"V", 48}}},
        {"examples/mamba2.ssm", {{"H", 2}, {"P", 48}, {"N", 64}}},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++)
        for (size_t v = 0; v < sizeof tunes / sizeof tunes[0]; v++) {
            model md;
            model_open(&md, cases[k].file, NULL, cases[k].dims, 3, false);
            char what[256];
            snprintf(what, sizeof what, "%s layout %zu f32 B=2 T=4 from a state", cases[k].file, v);
            emu_case(&md, &tunes[v], SSMC_F32, 2, 4, true, what);
            model_close(&md);
        }
}

/* Decoding against state pools: sequences on rows out of order, a padding
 * slot, a sequence that starts from the model's initial state (ttt_linear's
 * is its init, W0), one step (the T = 1 kernel) and several, f32 and bf16,
 * declared and odd dims. Rows no sequence has must come out unchanged. */
static void test_decode_rows(void **state)
{
    if (!have_cxx) skip();
    /* partial_sums: outputs summed over V's tiles after the kernel, padding slots included;
     * partial_accum: accumulators added by pool row, from the model's zero (has_state 0) too */
    static const char *const files[] = {"examples/mamba2.ssm", "examples/gated_deltanet.ssm", "examples/gla.ssm",
                                        "examples/ttt_linear.ssm", "tests/gpu/edge.ssm", "tests/gpu/partial.ssm",
                                        "tests/gpu/partial.ssm"};
    static const char *const names[] = {NULL, NULL, NULL, NULL, "big", "partial_sums", "partial_accum"};
    static const int32_t index[] = {5, 0, -1, 3};
    static const uint8_t has[] = {1, 0, 1, 1};
    for (size_t f = 0; f < sizeof files / sizeof *files; f++)
        for (int v = 0; v < 4; v++) {
            model md;
            bool odd = v & 1;
            model_open(&md, files[f], names[f], NULL, 0, odd);
            emu_rows r = {.rows = 7, .index = index, .has = v == 1 || v == 2 ? has : NULL, .one_step = !(v & 2)};
            int64_t T = r.one_step ? 1 : 3;
            char what[256];
            snprintf(what, sizeof what, "%s %s rows T=%lld%s%s", files[f], odd ? "bf16 odd" : "f32", (long long)T,
                     r.has ? " has_state" : "", r.one_step ? " one step" : "");
            emu_case_full(&md, NULL, odd ? SSMC_BF16 : SSMC_F32, 4, T, true, false, &r, what);
            model_close(&md);
        }
}

/* ---- the chunked cores (codegen/cuda_chunk.c): tensor-core mma emulated,
 * against the f64 reference core on the prologue's canonical operands ---- */

static double max_rel(const float *got, const double *ref, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - ref[i]);
        if (isnan(e)) return NAN; /* a non-finite value fails whatever follows it */
        if (e > num) num = e;
        if (fabs(ref[i]) > den) den = fabs(ref[i]);
    }
    return den > 0 ? num / den : num;
}

static size_t part_elems(const ir_model *m, const ir_tensor *t, int64_t B, int64_t T)
{
    size_t n = (size_t)ir_tensor_elems(m, t);
    return t->kind == IR_PARAM ? n : n * (size_t)B * (t->per_step ? (size_t)T : 1);
}

/* strong: a decay per key drawn with log-decays in (-5, 0] at odd keys (and
 * (-0.05, 0] at even ones, which carry the sequence across sub-chunks and
 * chunks): over a chunk of 64 a key's b_t reaches about -160, so a kernel that
 * formed exp(b_t) and exp(-b_s) apart would overflow to inf and NaN. */
static void chunk_core_case(const char *rel, const ssmc_dim *dims, int nd, int64_t B, int64_t T, int C, bool state,
                            bool strong)
{
    size_t len;
    char *src = test_slurp(rel, &len);
    arena a;
    arena_init(&a);
    diag d = {0};
    ssmc_options o = {.dims = dims, .ndims = nd, .algo = SSMC_ALGO_CHUNKED, .chunk = C};
    plan_target tg = plan_target_cuda(NULL);
    pipeline pl = {.a = &a, .d = &d, .o = &o, .target = &tg};
    if (pipeline_run(&pl, rel, src, len, PIPE_PLAN) != SSMC_OK) fail_msg("%s: %s", rel, sb_cstr(&d.text));
    const plan_chunked *ch = pl.plan->chunked;
    const ir_model *pro = ch->parts.prologue, *epi = ch->parts.epilogue;
    /* the canonical operands drawn as a model would make them: q, v in [-1, 1);
     * keys of norm below 1 (so the delta rule's I - beta k k^T contracts);
     * log-decays in (-0.5, 0]; beta in [0, 1) */
    double **pd = calloc(pro->ntensors + 1, sizeof *pd), **ed = calloc(epi->ntensors + 1, sizeof *ed);
    for (uint32_t i = 0; i < pro->ntensors; i++) {
        const ir_tensor *t = &pro->tensors[i];
        if (t->kind != IR_OUTPUT) continue;
        size_t n = part_elems(pro, t, B, T);
        pd[i] = malloc((n ? n : 1) * sizeof(double));
        for (size_t k = 0; k < n; k++) pd[i][k] = uniform();
    }
    for (uint32_t i = 0; i < epi->ntensors; i++) {
        const ir_tensor *t = &epi->tensors[i];
        if (t->kind == IR_INPUT) ed[i] = calloc(part_elems(epi, t, B, T) + 1, sizeof(double));
    }
    for (int ci = 0; ci < ch->ncores; ci++) {
        const plan_chunk_core *c = &ch->cores[ci];
        size_t rows = (size_t)(B * T * c->nheads);
        if (c->ops.g >= 0)
            for (size_t k = 0; k < rows * (c->decay == PASS_DECAY_KEY ? (size_t)c->K : 1); k++) {
                bool odd_key = c->decay == PASS_DECAY_KEY && (k % (size_t)c->K) % 2;
                double lo = !strong ? -0.5 : odd_key ? -5 : -0.05;
                pd[c->ops.g][k] = lo * 0.5 * (1 + pd[c->ops.g][k]);
            }
        if (c->ops.beta >= 0)
            for (size_t k = 0; k < rows; k++) pd[c->ops.beta][k] = 0.5 * (1 + pd[c->ops.beta][k]);
        int keys[2] = {c->ops.k, c->ops.w};
        for (int kk = 0; kk < 2; kk++)
            for (size_t r = 0; keys[kk] >= 0 && r < rows; r++) {
                double *x = pd[keys[kk]] + r * (size_t)c->K, nrm = 0;
                for (int i = 0; i < c->K; i++) nrm += x[i] * x[i];
                for (int i = 0; i < c->K; i++) x[i] /= sqrt(nrm) + 1e-3;
            }
        if (c->delta) memcpy(pd[c->ops.w], pd[c->ops.k], rows * (size_t)c->K * sizeof(double));
    }
    for (int ci = 0; ci < ch->ncores; ci++) {
        const plan_chunk_core *c = &ch->cores[ci];
        if (!cuda_chunk_supported(c, NULL)) continue;
        size_t se = (size_t)B * (size_t)c->state_elems;
        double *s0 = malloc(se * sizeof *s0), *s1 = malloc(se * sizeof *s1);
        for (size_t k = 0; k < se; k++) s0[k] = state ? uniform() : 0;
        chunk_ref_core(c, pd, ed, state ? s0 : NULL, s1, B, T);
        /* f32 copies for the kernel: q.., k, v, g, beta, R.. (poisoned), the state */
        void *ptrs[2 * PASS_MAX_READOUTS + 8];
        float *buf[2 * PASS_MAX_READOUTS + 8] = {0};
        int np = 0;
        int ins[PASS_MAX_READOUTS + 4], nin = 0;
        for (int r = 0; r < c->nreadouts; r++) ins[nin++] = c->ops.q[r];
        ins[nin++] = c->ops.k;
        ins[nin++] = c->ops.v;
        ins[nin++] = c->ops.g;
        ins[nin++] = c->ops.beta;
        for (int i = 0; i < nin; i++) {
            int t = ins[i];
            if (t < 0) {
                ptrs[np++] = NULL;
                continue;
            }
            size_t n = part_elems(pro, &pro->tensors[t], B, T);
            buf[np] = malloc(n * sizeof(float));
            for (size_t k = 0; k < n; k++) buf[np][k] = (float)pd[t][k];
            ptrs[np] = buf[np];
            np++;
        }
        int r0 = np;
        for (int r = 0; r < c->nreadouts; r++) {
            size_t n = part_elems(epi, &epi->tensors[c->ops.r[r]], B, T);
            buf[np] = malloc(n * sizeof(float));
            for (size_t k = 0; k < n; k++) buf[np][k] = NAN;
            ptrs[np] = buf[np];
            np++;
        }
        float *st = malloc(se * sizeof *st);
        for (size_t k = 0; k < se; k++) st[k] = (float)s0[k];
        ptrs[np++] = state ? st : NULL;
        strbuf cu = {0};
        if (cuda_chunk_emit(&cu, pl.ir, c, state, SSMC_F32, &d) != SSMC_OK) fail_msg("%s: %s", rel, sb_cstr(&d.text));
        run_chunk_core(sb_cstr(&cu), pl.ir, c, B, T, ptrs);
        for (int r = 0; r < c->nreadouts; r++) {
            int t = c->ops.r[r];
            double e = max_rel(buf[r0 + r], ed[t], part_elems(epi, &epi->tensors[t], B, T));
            if (!(e <= 2e-2)) fail_msg("%s core %d (C=%d T=%lld): readout %d rel err %g", rel, ci, C, (long long)T, r, e);
            printf("# %s core %d C=%d T=%lld%s%s readout %d rel %.2e\n", rel, ci, C, (long long)T, state ? " from a state" : "",
                   strong ? " strong decays" : "", r, e);
        }
        if (state) {
            double e = max_rel(st, s1, se);
            if (!(e <= 2e-2)) fail_msg("%s core %d (C=%d T=%lld): final state rel err %g", rel, ci, C, (long long)T, e);
            printf("# %s core %d C=%d T=%lld final state rel %.2e\n", rel, ci, C, (long long)T, e);
        }
        sb_free(&cu);
        for (int i = 0; i < np; i++) free(buf[i]);
        free(st);
        free(s0);
        free(s1);
    }
    for (uint32_t i = 0; i < pro->ntensors; i++) free(pd[i]);
    for (uint32_t i = 0; i < epi->ntensors; i++) free(ed[i]);
    free(pd);
    free(ed);
    free(src);
    arena_free(&a);
    diag_free(&d);
}

static void test_chunk_cores(void **state)
{
    (void)state;
    if (!have_cxx) skip();
    static const ssmc_dim small[] = {{"H", 2}, {"K", 24}, {"V", 20}};
    /* a scalar decay, none, and the delta rule (plain and gated); odd K and V (padding); T past a
     * chunk and not a multiple of it; from a state and from zero; C = 16 and 64 */
    chunk_core_case("examples/fla_simple_gla.ssm", small, 3, 2, 37, 16, true, false);
    chunk_core_case("examples/fla_simple_gla.ssm", small, 3, 1, 70, 64, false, false);
    chunk_core_case("examples/fla_linear_attn.ssm", small, 3, 2, 21, 16, true, false);
    chunk_core_case("examples/fla_delta_rule.ssm", small, 3, 2, 37, 16, true, false);
    chunk_core_case("examples/gated_deltanet.ssm", (ssmc_dim[]){{"H", 1}, {"K", 32}, {"V", 16}}, 3, 2, 70, 64, true, false);
    chunk_core_case("examples/linear_attn.ssm", (ssmc_dim[]){{"H", 2}, {"K", 16}, {"V", 8}}, 3, 1, 19, 16, true, false);
    chunk_core_case("examples/mamba2.ssm", (ssmc_dim[]){{"H", 2}, {"P", 8}, {"N", 16}}, 3, 2, 33, 16, true, false);
    /* K = 128: the state pass in two key tiles of 64; V = 72: a full value tile and a partial one */
    chunk_core_case("examples/fla_simple_gla.ssm", (ssmc_dim[]){{"H", 1}, {"K", 128}, {"V", 72}}, 3, 2, 70, 32, true, false);
}

/* A decay per key (GLA, RWKV-6, Mamba): the sub-chunks of 16, their
 * reference points and the diagonal blocks, at padded K and V, C = 16, 32 and
 * 64, readouts of S(t) and S(t-1), from a state and from zero, with strong
 * decays (where exp(b_t) exp(-b_s) apart overflows) and mild ones. */
static void test_chunk_cores_per_key(void **state)
{
    (void)state;
    if (!have_cxx) skip();
    static const ssmc_dim small[] = {{"H", 2}, {"K", 24}, {"V", 20}};
    chunk_core_case("examples/fla_gla.ssm", small, 3, 2, 37, 16, true, true);
    chunk_core_case("examples/gla.ssm", small, 3, 1, 150, 64, false, true);
    chunk_core_case("examples/gla.ssm", (ssmc_dim[]){{"H", 1}, {"K", 40}, {"V", 12}}, 3, 2, 70, 64, true, false);
    chunk_core_case("examples/rwkv6.ssm", small, 3, 1, 101, 64, true, true);
    chunk_core_case("examples/rwkv6.ssm", (ssmc_dim[]){{"H", 1}, {"K", 16}, {"V", 8}}, 3, 2, 45, 32, false, true);
    chunk_core_case("examples/fla_gla_kv.ssm", (ssmc_dim[]){{"H", 2}, {"K", 20}, {"V", 3}}, 3, 2, 40, 32, true, true);
    chunk_core_case("examples/mamba.ssm", (ssmc_dim[]){{"E", 3}, {"N", 12}}, 2, 2, 70, 64, true, true);
    /* two key tiles in the state pass, each scaling by its own keys' decays */
    chunk_core_case("examples/fla_gla.ssm", (ssmc_dim[]){{"H", 1}, {"K", 128}, {"V", 72}}, 3, 1, 70, 32, true, true);
}

/* ---- the chunked cores' backward (codegen/cuda_chunk_bwd.c), emulated,
 * against the f64 reference's reverse-mode backward of the recurrence
 * (tests/unit/helpers/chunk_ref.c): the gradients of every operand and of the
 * initial state, for readout cotangents and a final-state cotangent drawn in
 * [-1, 1) ---- */

static void chunk_bwd_case(const char *what, const char *src, size_t len, const ssmc_dim *dims, int nd, int64_t B,
                           int64_t T, int C, bool state, bool strong)
{
    arena a;
    arena_init(&a);
    diag d = {0};
    ssmc_options o = {.dims = dims, .ndims = nd, .algo = SSMC_ALGO_CHUNKED, .chunk = C};
    plan_target tg = plan_target_cuda(NULL);
    pipeline pl = {.a = &a, .d = &d, .o = &o, .target = &tg};
    if (pipeline_run(&pl, what, src, len, PIPE_PLAN) != SSMC_OK) fail_msg("%s: %s", what, sb_cstr(&d.text));
    const plan_chunked *ch = pl.plan->chunked;
    const ir_model *pro = ch->parts.prologue, *epi = ch->parts.epilogue;
    double **pd = calloc(pro->ntensors + 1, sizeof *pd), **dpd = calloc(pro->ntensors + 1, sizeof *dpd),
           **ed = calloc(epi->ntensors + 1, sizeof *ed);
    for (uint32_t i = 0; i < pro->ntensors; i++) {
        const ir_tensor *t = &pro->tensors[i];
        if (t->kind != IR_OUTPUT) continue;
        size_t n = part_elems(pro, t, B, T);
        pd[i] = malloc((n ? n : 1) * sizeof(double));
        dpd[i] = calloc(n ? n : 1, sizeof(double));
        for (size_t k = 0; k < n; k++) pd[i][k] = uniform();
    }
    for (uint32_t i = 0; i < epi->ntensors; i++) {
        const ir_tensor *t = &epi->tensors[i];
        if (t->kind != IR_INPUT) continue;
        size_t n = part_elems(epi, t, B, T);
        ed[i] = malloc((n ? n : 1) * sizeof(double));
        for (size_t k = 0; k < n; k++) ed[i][k] = uniform(); /* the readouts' cotangents */
    }
    int checked = 0;
    for (int ci = 0; ci < ch->ncores; ci++) {
        const plan_chunk_core *c = &ch->cores[ci];
        if (!cuda_chunk_bwd_supported(c, NULL)) continue;
        size_t rows = (size_t)(B * T * c->nheads), se = (size_t)B * (size_t)c->state_elems;
        if (c->ops.g >= 0)
            for (size_t k = 0; k < rows * (c->decay == PASS_DECAY_KEY ? (size_t)c->K : 1); k++) {
                /* (-0.5, 0]; strong (a decay per key): (-5, 0] at odd keys, (-0.05, 0] at even ones, as for the
                 * forward (test_chunk_cores_per_key: exp(b_t) exp(-b_s) apart would overflow) */
                bool odd_key = c->decay == PASS_DECAY_KEY && (k % (size_t)c->K) % 2;
                double lo = !strong ? -0.5 : odd_key ? -5 : -0.05;
                pd[c->ops.g][k] = lo * 0.5 * (1 + pd[c->ops.g][k]);
            }
        for (size_t r = 0; r < rows; r++) {
            double *x = pd[c->ops.k] + r * (size_t)c->K, nrm = 0;
            for (int i = 0; i < c->K; i++) nrm += x[i] * x[i];
            for (int i = 0; i < c->K; i++) x[i] /= sqrt(nrm) + 1e-3;
        }
        if (c->delta) {
            for (size_t k = 0; k < rows; k++) pd[c->ops.beta][k] = 0.5 * (1 + pd[c->ops.beta][k]); /* [0, 1) */
            memcpy(pd[c->ops.w], pd[c->ops.k], rows * (size_t)c->K * sizeof(double));
        }
        double *s0 = malloc(se * sizeof *s0), *ds1 = malloc(se * sizeof *ds1), *ds0 = malloc(se * sizeof *ds0);
        for (size_t k = 0; k < se; k++) s0[k] = state ? uniform() : 0, ds1[k] = uniform();
        chunk_ref_core_backward(c, pd, state ? s0 : NULL, ed, ds1, dpd, ds0, B, T);
        /* k and w are one vector: the gradient along it is the sum (the kernel's is all in dk) */
        if (c->delta)
            for (size_t k = 0; k < rows * (size_t)c->K; k++) dpd[c->ops.k][k] += dpd[c->ops.w][k], dpd[c->ops.w][k] = 0;
        /* f32 copies: q.., k, v, g, dR.., the state, its cotangent, then dq.., dk, dv, dg (poisoned) */
        void *ptrs[3 * PASS_MAX_READOUTS + 12] = {0};
        float *buf[3 * PASS_MAX_READOUTS + 12] = {0};
        int np = 0, ids[3 * PASS_MAX_READOUTS + 12], isout[3 * PASS_MAX_READOUTS + 12] = {0};
        const ir_model *of[3 * PASS_MAX_READOUTS + 12];
        for (int r = 0; r < c->nreadouts; r++) ids[np] = c->ops.q[r], of[np++] = pro;
        ids[np] = c->ops.k, of[np++] = pro;
        ids[np] = c->ops.v, of[np++] = pro;
        ids[np] = c->ops.g, of[np++] = pro;
        ids[np] = c->ops.beta, of[np++] = pro;
        for (int r = 0; r < c->nreadouts; r++) ids[np] = c->ops.r[r], of[np++] = epi;
        int nin = np;
        for (int i = 0; i < nin; i++) {
            if (ids[i] < 0) continue;
            size_t n = part_elems(of[i], &of[i]->tensors[ids[i]], B, T);
            const double *x = of[i] == pro ? pd[ids[i]] : ed[ids[i]];
            buf[i] = malloc(n * sizeof(float));
            for (size_t k = 0; k < n; k++) buf[i][k] = (float)x[k];
            ptrs[i] = buf[i];
        }
        float *st = malloc(se * sizeof *st), *dst = malloc(se * sizeof *dst);
        for (size_t k = 0; k < se; k++) st[k] = (float)s0[k], dst[k] = (float)ds1[k];
        ptrs[np++] = state ? st : NULL;
        ptrs[np++] = dst;
        int o0 = np;
        for (int r = 0; r < c->nreadouts; r++) ids[np++] = c->ops.q[r];
        ids[np++] = c->ops.k;
        ids[np++] = c->ops.v;
        ids[np++] = c->ops.g;
        ids[np++] = c->ops.beta;
        ids[np++] = c->ops.w;
        for (int i = o0; i < np; i++) {
            if (ids[i] < 0) continue;
            size_t n = part_elems(pro, &pro->tensors[ids[i]], B, T);
            buf[i] = malloc(n * sizeof(float));
            for (size_t k = 0; k < n; k++) buf[i][k] = NAN;
            ptrs[i] = buf[i];
            isout[i] = 1;
        }
        size_t wsb = cuda_chunk_bwd_ws_bytes(c, B, T);
        float *ws = malloc(wsb);
        for (size_t k = 0; k < wsb / sizeof *ws; k++) ws[k] = NAN; /* the kernel pads and clears what it reads */
        strbuf cu = {0}, name[CUDA_CHUNK_BWD_MAX_PASSES] = {{0}};
        if (cuda_chunk_bwd_emit(&cu, pl.ir, c, &d) != SSMC_OK) fail_msg("%s: %s", what, sb_cstr(&d.text));
        const int npass = cuda_chunk_bwd_passes(c);
        const char *names[CUDA_CHUNK_BWD_MAX_PASSES];
        for (int p = 0; p < npass; p++) {
            cuda_chunk_bwd_kernel_name(&name[p], pl.ir, c, p);
            names[p] = sb_cstr(&name[p]);
        }
        launch_fn launch[CUDA_CHUNK_BWD_MAX_PASSES];
        void *h = buildn(sb_cstr(&cu), names, npass, launch);
        for (int p = 0; p < npass; p++) {
            cuda_launch l = cuda_chunk_bwd_launch(c, B, T, p);
            assert_int_equal(launch[p](l.blocks, (int)l.threads, l.shared_bytes, B, T, ws, ptrs), 0);
        }
        printf("# backward %s core %d: %d pass%s\n", what, ci, npass, npass > 1 ? "es" : "");
        static const char *const onames[] = {"dq0", "dq1", "dq2", "dq3"};
        for (int i = o0; i < np; i++) {
            if (!isout[i]) continue;
            static const char *const rest[] = {"dk", "dv", "dg", "dbeta", "dw"};
            const char *nm = i - o0 < c->nreadouts ? onames[(i - o0) & 3] : rest[i - o0 - c->nreadouts];
            double e = max_rel(buf[i], dpd[ids[i]], part_elems(pro, &pro->tensors[ids[i]], B, T));
            if (!(e <= 2e-2)) fail_msg("%s core %d (C=%d T=%lld): %s rel err %g", what, ci, C, (long long)T, nm, e);
            printf("# backward %s core %d C=%d T=%lld%s%s %s rel %.2e\n", what, ci, C, (long long)T,
                   state ? " from a state" : "", strong ? " strong decays" : "", nm, e);
        }
        double e = max_rel(dst, ds0, se);
        if (!(e <= 2e-2)) fail_msg("%s core %d (C=%d T=%lld): d(initial state) rel err %g", what, ci, C, (long long)T, e);
        printf("# backward %s core %d C=%d T=%lld d(initial state) rel %.2e\n", what, ci, C, (long long)T, e);
        checked++;
        dlclose(h);
        sb_free(&cu);
        for (int p = 0; p < npass; p++) sb_free(&name[p]);
        for (int i = 0; i < np; i++) free(buf[i]);
        free(ws);
        free(st);
        free(dst);
        free(s0);
        free(ds1);
        free(ds0);
    }
    if (!checked) fail_msg("%s: no core whose backward the cuda backend renders", what);
    for (uint32_t i = 0; i < pro->ntensors; i++) free(pd[i]), free(dpd[i]);
    for (uint32_t i = 0; i < epi->ntensors; i++) free(ed[i]);
    free(pd);
    free(dpd);
    free(ed);
    arena_free(&a);
    diag_free(&d);
}

static void chunk_bwd_file(const char *rel, const ssmc_dim *dims, int nd, int64_t B, int64_t T, int C, bool state,
                           bool strong)
{
    size_t len;
    char *src = test_slurp(rel, &len);
    chunk_bwd_case(rel, src, len, dims, nd, B, T, C, state, strong);
    free(src);
}

/* No decay, a decay per head and per key (three passes), the delta rule plain
 * and gated and a wide key dim (one kernel); readouts of S(t) and S(t-1); K
 * and V not multiples of 16 (padding); T past a chunk and not a multiple of
 * it; from a state and from zero; C = 16, 32 and 64; strong decays. */
static void test_chunk_cores_backward(void **state)
{
    (void)state;
    if (!have_cxx) skip();
    static const ssmc_dim small[] = {{"H", 2}, {"K", 24}, {"V", 20}};
    chunk_bwd_file("examples/fla_simple_gla.ssm", small, 3, 2, 37, 16, true, false);
    chunk_bwd_file("examples/fla_simple_gla.ssm", small, 3, 1, 70, 64, false, false);
    chunk_bwd_file("examples/fla_linear_attn.ssm", small, 3, 2, 21, 16, true, false);
    chunk_bwd_file("examples/mamba2.ssm", (ssmc_dim[]){{"H", 2}, {"P", 8}, {"N", 16}}, 3, 2, 33, 16, true, false);
    static const char prev_model[] =
        "model sp { dim H = 2, K = 20, V = 12; input q[T,H,K], p[T,H,K], k[T,H,K], v[T,H,V], g[T,H]; state S[H,K,V];"
        " output y[T,H,V], z[T,H,V]; z[t,h,j] = sum(i: p[t,h,i] * S[h,i,j]);"
        " S[h,i,j] = exp(-softplus(g[t,h])) * S[h,i,j] + k[t,h,i] * v[t,h,j]; y[t,h,j] = sum(i: q[t,h,i] * S[h,i,j]); }";
    chunk_bwd_case("prev.ssm", prev_model, sizeof prev_model - 1, NULL, 0, 2, 37, 16, true, false);
    chunk_bwd_case("prev.ssm", prev_model, sizeof prev_model - 1, NULL, 0, 1, 70, 64, false, false);
    /* the delta rule, plain and gated */
    chunk_bwd_file("examples/fla_delta_rule.ssm", small, 3, 2, 37, 16, true, false);
    chunk_bwd_file("examples/gated_deltanet.ssm", (ssmc_dim[]){{"H", 1}, {"K", 32}, {"V", 16}}, 3, 2, 70, 64, true, false);
    chunk_bwd_file("examples/gated_deltanet.ssm", (ssmc_dim[]){{"H", 2}, {"K", 12}, {"V", 10}}, 3, 1, 45, 16, false, false);
    /* a decay per key (GLA, RWKV-6 with its S(t-1), Mamba) */
    chunk_bwd_file("examples/fla_gla.ssm", small, 3, 2, 37, 16, true, false);
    chunk_bwd_file("examples/gla.ssm", (ssmc_dim[]){{"H", 1}, {"K", 40}, {"V", 12}}, 3, 2, 70, 64, true, false);
    chunk_bwd_file("examples/rwkv6.ssm", small, 3, 1, 45, 16, false, false);
    chunk_bwd_file("examples/mamba.ssm", (ssmc_dim[]){{"E", 3}, {"N", 12}}, 2, 2, 70, 64, true, false);
    chunk_bwd_file("examples/gla.ssm", small, 3, 1, 150, 64, false, true); /* strong decays */
    chunk_bwd_file("examples/rwkv6.ssm", (ssmc_dim[]){{"H", 1}, {"K", 16}, {"V", 8}}, 3, 2, 45, 32, true, true);
    /* a long run, T = 65,536 at tiny dims (1,024 chunks): the reverse pass carries dH over all of them;
     * finite and within tolerance, with a decay per head and per key (strong decays) */
    chunk_bwd_file("examples/fla_simple_gla.ssm", (ssmc_dim[]){{"H", 1}, {"K", 8}, {"V", 8}}, 3, 1, 65536, 64, true,
                   false);
    chunk_bwd_file("examples/gla.ssm", (ssmc_dim[]){{"H", 1}, {"K", 8}, {"V", 8}}, 3, 1, 65536, 64, true, true);
    /* K = 256 at C = 64: the three-pass form's gradient block would pass an SM's shared memory, so the one
     * kernel runs (as with the delta rule above) */
    chunk_bwd_file("examples/gla.ssm", (ssmc_dim[]){{"H", 1}, {"K", 256}, {"V", 8}}, 3, 1, 70, 64, true, false);
    plan_chunk_core wide = {.decay = PASS_DECAY_KEY, .C = 64, .K = 256, .V = 8, .nreadouts = 1},
                    bench = {.decay = PASS_DECAY_KEY, .C = 64, .K = 128, .V = 128, .nreadouts = 1},
                    delta = {.decay = PASS_DECAY_SCALAR, .delta = true, .C = 64, .K = 128, .V = 128, .nreadouts = 1};
    assert_int_equal(cuda_chunk_bwd_passes(&wide), 1);
    assert_int_equal(cuda_chunk_bwd_passes(&bench), 3);
    assert_int_equal(cuda_chunk_bwd_passes(&delta), 1);
    /* refused, with a message */
    diag d = {0};
    plan_chunk_core key = {.decay = PASS_DECAY_KEY, .delta = true, .C = 16, .K = 16, .V = 16};
    assert_false(cuda_chunk_bwd_supported(&key, &d));
    assert_non_null(strstr(sb_cstr(&d.text), "the delta rule with a decay per key"));
    diag_free(&d);
}

/* ---- the chunked algorithm end to end: codegen/chunked_run.c's runner over
 * an emulated CUDA backend (the prologue's and epilogue's kernels of
 * codegen/cuda.c and the cores of codegen/cuda_chunk.c, each compiled with
 * the emulation header and run over its real grid) on host memory ---- */

typedef struct emu_part {
    const ir_model *m;
    const pass_plan *p;
} emu_part;

static ssmc_status emu_part_compile(const ir_model *m, const pass_plan *p, const ssmc_options *o, diag *d, void **state)
{
    (void)o, (void)d;
    emu_part *e = malloc(sizeof *e);
    assert_non_null(e);
    *e = (emu_part){m, p};
    *state = e;
    return SSMC_OK;
}

static ssmc_status emu_part_run(void *state, int64_t batch, int64_t T, const backend_tensor *bt, diag *d)
{
    const emu_part *e = state;
    const ir_model *m = e->m;
    uint32_t nt = m->ntensors;
    ssmc_dtype *dts = calloc(nt, sizeof *dts);
    bool *present = calloc(nt, sizeof *present), *fresh = calloc(nt, sizeof *fresh);
    void **ptrs = calloc(nt + 1, sizeof *ptrs);
    assert_true(dts && present && fresh && ptrs);
    int np = 0;
    for (uint32_t i = 0; i < nt; i++) {
        dts[i] = bt[i].dtype;
        present[i] = bt[i].data != NULL;
        fresh[i] = bt[i].fresh;
        if (m->tensors[i].kind != IR_LET) ptrs[np++] = bt[i].data;
    }
    cuda_sig sig = {.dtype = dts, .present = present, .vec = true, .fresh = fresh};
    strbuf src = {0}, name = {0};
    if (cuda_emit(&src, e->p, &sig, d) != SSMC_OK) fail_msg("%s: %s", m->name, sb_cstr(&d->text));
    cuda_kernel_name(&name, m);
    launch_fn launch;
    void *lib = build(sb_cstr(&src), sb_cstr(&name), &launch);
    cuda_launch l = cuda_launch_of(e->p, batch);
    float *ws = emu_workspace_of(e->p, batch, T);
    assert_int_equal(e->p->part_floats, 0); /* the chunked parts have no states: no split reductions */
    assert_int_equal(launch(l.blocks, (int)l.threads, l.shared_bytes, batch, T, ws, ptrs), 0);
    dlclose(lib);
    free(ws);
    sb_free(&src);
    sb_free(&name);
    free(dts);
    free(present);
    free(fresh);
    free(ptrs);
    return SSMC_OK;
}

static void emu_part_free(void *state) { free(state); }

static const backend emu_backend = {
    .name = "cuda (emulated)", .compile = emu_part_compile, .run = emu_part_run, .free = emu_part_free};

typedef struct emu_chunked {
    const ir_model *m; /* the source model (names) */
    void *ws;
    size_t ws_bytes;
} emu_chunked;

static void *emu_workspace(void *ctx, size_t bytes, diag *d)
{
    (void)d;
    emu_chunked *x = ctx;
    if (bytes > x->ws_bytes) {
        free(x->ws);
        x->ws = aligned_alloc(256, (bytes + 255) / 256 * 256);
        x->ws_bytes = bytes;
    }
    float *f = x->ws; /* garbage, as device memory is */
    for (size_t k = 0; k < bytes / sizeof(float); k++) f[k] = NAN;
    return x->ws;
}

static ssmc_status emu_zero(void *ctx, void *ptr, size_t bytes, void *stream, diag *d)
{
    (void)ctx, (void)stream, (void)d;
    memset(ptr, 0, bytes);
    return SSMC_OK;
}

static ssmc_status emu_core_compile(void *ctx, const plan_chunk_core *c, const ssmc_options *o, diag *d, void **core)
{
    (void)ctx, (void)o;
    *core = (void *)c;
    return cuda_chunk_supported(c, d) ? SSMC_OK : SSMC_ERR_UNSUPPORTED;
}

static ssmc_status emu_core_run(void *ctx, void *core, int64_t batch, int64_t T, const chunk_core_io *io, void *stream,
                                diag *d)
{
    (void)stream;
    const emu_chunked *x = ctx;
    const plan_chunk_core *c = core;
    void *ptrs[2 * PASS_MAX_READOUTS + 8];
    int np = 0;
    for (int r = 0; r < c->nreadouts; r++) ptrs[np++] = (void *)io->q[r];
    ptrs[np++] = (void *)io->k;
    ptrs[np++] = (void *)io->v;
    ptrs[np++] = (void *)io->g;
    ptrs[np++] = (void *)io->beta;
    for (int r = 0; r < c->nreadouts; r++) ptrs[np++] = io->r[r];
    ptrs[np++] = io->state;
    strbuf src = {0};
    if (cuda_chunk_emit(&src, x->m, c, io->state != NULL, io->state_dtype, d) != SSMC_OK) return SSMC_ERR_UNSUPPORTED;
    run_chunk_core(sb_cstr(&src), x->m, c, batch, T, ptrs);
    sb_free(&src);
    return SSMC_OK;
}

static void emu_core_free(void *ctx, void *core) { (void)ctx, (void)core; }

static const chunk_hooks emu_chunk_hooks = {
    .be = &emu_backend,
    .workspace = emu_workspace,
    .zero = emu_zero,
    .core_compile = emu_core_compile,
    .core_run = emu_core_run,
    .core_free = emu_core_free,
};

/* One model through --algo=chunked on the emulated CUDA backend against the
 * interpreter, on fresh random inputs, params and states (uniform in [-1, 1),
 * stored as dt): outputs and final states within 2e-2 of max |ref| (the
 * cores' operands are bf16). state: 0 none given, 1 given, 2 given to receive
 * the final state only (SSMC_ARG_FINAL_ONLY: the runner zeroes it). Returns
 * whether some core has a decay per key. */
static bool chunk_e2e_case(const char *rel, const ssmc_dim *dims, int nd, ssmc_dtype dt, int64_t B, int64_t T, int C,
                           int state)
{
    size_t len;
    char *text = test_slurp(rel, &len);
    arena a;
    arena_init(&a);
    diag d = {0};
    ssmc_options o = {.dims = dims, .ndims = nd, .algo = SSMC_ALGO_CHUNKED, .chunk = C};
    plan_target tg = plan_target_cuda(NULL);
    pipeline pl = {.a = &a, .d = &d, .o = &o, .target = &tg};
    if (pipeline_run(&pl, rel, text, len, PIPE_PLAN) != SSMC_OK) fail_msg("%s: %s", rel, sb_cstr(&d.text));
    const ir_model *m = pl.ir;
    const plan_chunked *ch = pl.plan->chunked;
    assert_non_null(ch);
    bool per_key = false;
    for (int i = 0; i < ch->ncores; i++) per_key |= ch->cores[i].decay == PASS_DECAY_KEY;
    uint32_t nt = m->ntensors;
    backend_tensor *bt = calloc(nt + 1, sizeof *bt);
    double **ref = calloc(nt + 1, sizeof *ref);
    size_t *count = calloc(nt + 1, sizeof *count);
    assert_true(bt && ref && count);
    for (uint32_t i = 0; i < nt; i++) {
        const ir_tensor *t = &m->tensors[i];
        if (t->kind == IR_LET || t->hidden || (t->kind == IR_STATE && !state)) continue;
        size_t n = part_elems(m, t, B, T);
        count[i] = n;
        bt[i] = (backend_tensor){aligned_alloc(64, ((n ? n : 1) * dtype_size(dt) + 63) / 64 * 64), dt,
                                 t->kind == IR_STATE && state == 2};
        ref[i] = calloc(n ? n : 1, sizeof(double));
        assert_true(bt[i].data && ref[i]);
        for (size_t k = 0; k < n; k++) {
            bool poison = t->kind == IR_OUTPUT || bt[i].fresh;
            dtype_set(bt[i].data, dt, k, poison ? NAN : uniform());
            ref[i][k] = t->kind == IR_STATE && state == 2 ? 0 : dtype_get(bt[i].data, dt, k);
        }
    }
    ir_interp_args ia = {.batch = B, .T = T, .data = ref};
    if (!ir_interp(m, &ia, &d)) fail_msg("%s: %s", rel, sb_cstr(&d.text));
    emu_chunked x = {.m = m};
    chunked_state *cs;
    if (chunked_compile(&emu_chunk_hooks, &x, m, pl.plan, &o, &d, &cs) != SSMC_OK) fail_msg("%s: %s", rel, sb_cstr(&d.text));
    if (chunked_run(cs, B, T, bt, false, NULL, &d) != SSMC_OK) fail_msg("%s: %s", rel, sb_cstr(&d.text));
    chunked_free(cs);
    for (uint32_t i = 0; i < nt; i++) {
        const ir_tensor *t = &m->tensors[i];
        if (!bt[i].data || (t->kind != IR_OUTPUT && t->kind != IR_STATE)) continue;
        double num = 0, den = 0;
        for (size_t k = 0; k < count[i]; k++) {
            double g = dtype_get(bt[i].data, dt, k), e = fabs(g - ref[i][k]);
            if (!isfinite(g)) fail_msg("%s: %s[%zu] = %g (reference %g)", rel, t->name, k, g, ref[i][k]);
            if (e > num) num = e;
            if (fabs(ref[i][k]) > den) den = fabs(ref[i][k]);
        }
        double rel_err = den > 0 ? num / den : num;
        if (rel_err > 2e-2)
            fail_msg("%s (C=%d B=%lld T=%lld): %s relative error %.3e > 2e-2", rel, C, (long long)B, (long long)T, t->name, rel_err);
        printf("# %-34s chunked C=%-2d %-4s B=%lld T=%-3lld %-16s %-6s rel %.2e\n", rel, C, dt == SSMC_F32 ? "f32" : "bf16",
               (long long)B, (long long)T, state == 0 ? "from zero" : state == 1 ? "from a state" : "final state only",
               t->name, rel_err);
    }
    free(x.ws);
    for (uint32_t i = 0; i < nt; i++) {
        free(bt[i].data);
        free(ref[i]);
    }
    free(bt);
    free(ref);
    free(count);
    free(text);
    diag_free(&d);
    arena_free(&a);
    return per_key;
}

/* Every example whose chunked plan has a core with a decay per key (GLA,
 * fla's GLA with both gates, RWKV-6, Mamba and mamba_ssm's selective state
 * update) through prologue, core and epilogue, at its declared dims: from a
 * state with C = 16 (T past two chunks), from zero in bf16 with C = 64, and
 * given its state to receive the final one only. */
static void test_chunked_per_key_examples(void **state)
{
    (void)state;
    if (!have_cxx) skip();
    char names[64][128];
    int n = test_list_examples(names, 64), seen = 0;
    for (int i = 0; i < n; i++) {
        size_t len;
        char *text = test_slurp(names[i], &len);
        arena a;
        arena_init(&a);
        diag d = {0};
        ssmc_options o = {.algo = SSMC_ALGO_CHUNKED};
        plan_target tg = plan_target_cuda(NULL);
        pipeline pl = {.a = &a, .d = &d, .o = &o, .target = &tg};
        bool key = false;
        if (pipeline_run(&pl, names[i], text, len, PIPE_PLAN) == SSMC_OK)
            for (int c = 0; c < pl.plan->chunked->ncores; c++) key |= pl.plan->chunked->cores[c].decay == PASS_DECAY_KEY;
        free(text);
        diag_free(&d);
        arena_free(&a);
        if (!key) continue;
        seen++;
        assert_true(chunk_e2e_case(names[i], NULL, 0, SSMC_F32, 2, 37, 16, 1));
        chunk_e2e_case(names[i], NULL, 0, SSMC_BF16, 1, 70, 64, 0);
        chunk_e2e_case(names[i], NULL, 0, SSMC_F32, 1, 20, 16, 2);
    }
    /* gla, fla_gla, fla_gla_kv, rwkv6, mamba, mamba_ssu, mamba_ssu_z */
    assert_true(seen >= 7);
}

/* The chunked algorithm's prologue and epilogue (models of their own, without
 * states, planned for CUDA as any model is) at the declared dims and at the
 * benchmark's shape, run as the chunked runner runs them (batch and time
 * folded into one-step sequences) and over a few steps. */
static void test_chunk_parts(void **state)
{
    (void)state;
    if (!have_cxx) skip();
    static const struct {
        const char *rel;
        ssmc_dim dims[5];
        int nd;
    } cases[] = {
        {"examples/fla_simple_gla.ssm", {{0}}, 0},
        {"examples/fla_simple_gla.ssm", {{"H", 16}, {"K", 128}, {"V", 128}}, 3},
        {"examples/fla_gated_delta_rule.ssm", {{0}}, 0},
        {"examples/fla_gated_delta_rule.ssm", {{"H", 3}, {"HV", 6}, {"R", 2}, {"K", 40}, {"V", 24}}, 5},
        {"examples/mamba2_ssd.ssm", {{0}}, 0},
        {"examples/gla.ssm", {{0}}, 0},
        {"examples/linear_attn.ssm", {{0}}, 0},
        {"examples/deltanet.ssm", {{"H", 5}, {"K", 12}, {"V", 9}}, 3},
    };
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        size_t len;
        char *src = test_slurp(cases[ci].rel, &len);
        arena a;
        arena_init(&a);
        diag d = {0};
        ssmc_options o = {.dims = cases[ci].dims, .ndims = cases[ci].nd, .algo = SSMC_ALGO_CHUNKED};
        plan_target tg = plan_target_cuda(NULL);
        pipeline pl = {.a = &a, .d = &d, .o = &o, .target = &tg};
        if (pipeline_run(&pl, cases[ci].rel, src, len, PIPE_PLAN) != SSMC_OK)
            fail_msg("%s: %s", cases[ci].rel, sb_cstr(&d.text));
        const pass_chunk_parts *parts = &pl.plan->chunked->parts;
        const ir_model *part[2] = {parts->prologue, parts->epilogue};
        for (int k = 0; k < 2; k++) {
            model md = {.m = (ir_model *)part[k]};
            char what[256];
            snprintf(what, sizeof what, "%s %s (%d dims) f32 B*T=12 folded", cases[ci].rel, part[k]->name, cases[ci].nd);
            emu_case(&md, NULL, SSMC_F32, 12, 1, false, what);
            snprintf(what, sizeof what, "%s %s (%d dims) bf16 B=2 T=3", cases[ci].rel, part[k]->name, cases[ci].nd);
            emu_case(&md, NULL, SSMC_BF16, 2, 3, false, what);
        }
        free(src);
        diag_free(&d);
        arena_free(&a);
    }
}

static int setup(void **state)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "%s --version >/dev/null 2>&1", cxx());
    have_cxx = system(cmd) == 0;
    if (!have_cxx) printf("# no C++ compiler (%s): emulated kernels skipped\n", cxx());
    strcpy(workdir, "/tmp/ssmc-emu-XXXXXX");
    return mkdtemp(workdir) ? 0 : -1;
}

static int teardown(void **state)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", workdir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_examples),
        cmocka_unit_test(test_edge_models),
        cmocka_unit_test(test_partial_sums),
        cmocka_unit_test(test_group_reductions),
        cmocka_unit_test(test_partial_adjoint),
        cmocka_unit_test(test_layouts),
        cmocka_unit_test(test_decode_rows),
        cmocka_unit_test(test_chunk_cores),
        cmocka_unit_test(test_chunk_cores_per_key),
        cmocka_unit_test(test_chunk_cores_backward),
        cmocka_unit_test(test_chunk_parts),
        cmocka_unit_test(test_chunked_per_key_examples),
    };
    const char *only = getenv("SSMC_EMU_FILTER"); /* e.g. test_chunk_*: the tests to run, when one is being worked on */
    if (only && *only) cmocka_set_test_filter(only);
    return cmocka_run_group_tests(tests, setup, teardown);
}
