/* pipeline.c: the compile pipeline, one function that reads top to bottom.
 * Each stage takes what the ones before made and keeps what it makes in the
 * pipeline, so that `ssmc emit --emit=STAGE` prints any stage's result. A
 * pass that rewrites the IR is followed by ir_verify. */
#include <string.h>

#include "pipeline.h"

/* The source copied into the arena (diagnostics quote it). */
static bool take_source(pipeline *pl, const char *filename, const char *source, size_t len)
{
    char *text = arena_alloc(pl->a, len + 1);
    pl->file = arena_alloc(pl->a, sizeof *pl->file);
    if (!text || !pl->file) return false;
    if (len) memcpy(text, source, len);
    pl->file->name = arena_strdup(pl->a, filename ? filename : "<input>");
    pl->file->text = text;
    pl->file->len = len;
    return pl->file->name != NULL;
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

static ssmc_status failed(pipeline *pl, ssmc_status s) { return pl->a->failed ? SSMC_ERR_NOMEM : s; }

ssmc_status pipeline_run(pipeline *pl, const char *filename, const char *source, size_t len, pipe_stage last)
{
    const ssmc_options *o = pl->o;
    if (len > SSMC_MAX_SOURCE_BYTES) {
        diag_error(pl->d, "%s: the source is %zu bytes, more than the limit of %zu (64 MiB)",
                   filename ? filename : "<input>", len, (size_t)SSMC_MAX_SOURCE_BYTES);
        return SSMC_ERR_SOURCE;
    }
    if (!take_source(pl, filename, source, len)) {
        diag_error(pl->d, "out of memory");
        return SSMC_ERR_NOMEM;
    }
    /* parse: the whole file, every model */
    pl->ast = parse_file(pl->a, pl->d, pl->file);
    if (!pl->ast) return failed(pl, SSMC_ERR_SOURCE);
    if (last == PIPE_AST) return SSMC_OK;

    ast_model *am = pick_model(pl->d, pl->ast, o->model);
    if (!am) return SSMC_ERR_SOURCE;
    return pipeline_run_model(pl, am, pl->a, last);
}

ssmc_status pipeline_run_model(pipeline *pl, ast_model *am, arena *tree, pipe_stage last)
{
    const ssmc_options *o = pl->o;
    /* one model: checked with the -D overrides (after which every dim is a
     * number; the checker annotates the tree, in its arena), lowered to IR,
     * verified; then every read of a let at an earlier step rewritten
     * (recomputed lets, hidden states: passes/lag.c), so that what follows
     * sees time lags on inputs only */
    ast_dim_override *over = arena_array(pl->a, (size_t)(o->ndims > 0 ? o->ndims : 1), sizeof *over);
    if (!over) return failed(pl, SSMC_ERR_NOMEM);
    for (int i = 0; i < o->ndims; i++) over[i] = (ast_dim_override){o->dims[i].name, o->dims[i].value};
    if (!check_model(tree, pl->d, pl->file, am, over, o->ndims)) return failed(pl, SSMC_ERR_SOURCE);
    pl->ir = ir_lower(pl->a, pl->d, pl->file, am);
    if (!pl->ir || !ir_verify(pl->ir, pl->d)) return failed(pl, SSMC_ERR_SOURCE);
    if (!pass_lag(pl->a, &pl->ir, pl->d)) return failed(pl, SSMC_ERR_SOURCE);
    if (!ir_verify(pl->ir, pl->d)) return failed(pl, SSMC_ERR_SOURCE);
    return pipeline_run_ir(pl, pl->ir, last);
}

ssmc_status pipeline_run_ir(pipeline *pl, ir_model *m, pipe_stage last)
{
    const ssmc_options *o = pl->o;
    pl->ir = m;
    if (last == PIPE_IR) return SSMC_OK;

    /* analysis: how every state's update acts on it; the algorithm choice
     * and the plan read it */
    if (!pass_analyze(pl->a, pl->ir, &pl->an, pl->d)) return failed(pl, SSMC_ERR_SOURCE);
    /* chunk forms: what the chunked algorithm needs of each state, or why not */
    if (!pass_chunk_forms(pl->a, pl->ir, &pl->an, &pl->chunks, pl->d)) return failed(pl, SSMC_ERR_NOMEM);
    if (last == PIPE_ANALYSIS) return SSMC_OK;

    /* schedule: index classes, which may split across work items, which
     * updates run in place */
    if (!pass_schedule(pl->a, pl->ir, &pl->sched, pl->d)) return failed(pl, SSMC_ERR_NOMEM);
    if (last == PIPE_SCHEDULE) return SSMC_OK;

    /* algorithm: the one --algo names when the analysis allows it, else the
     * cost model's; the same decision for every device */
    if (!pass_algo_choose(pl->ir, &pl->an, &pl->chunks, o->algo, &pl->algo, pl->d))
        return (unsigned)o->algo > SSMC_ALGO_SCAN ? SSMC_ERR_ARG : SSMC_ERR_UNSUPPORTED;
    if (last == PIPE_ALGO || !pl->target) return SSMC_OK;

    /* plan: the kernels for the device's target, every loop, placement and
     * memory decision; a backend renders it */
    if (pl->algo == PLAN_ALGO_CHUNKED)
        return plan_make_chunked(pl->a, pl->ir, &pl->an, &pl->chunks, o->chunk, pl->target, &pl->plan, pl->d);
    return plan_make(pl->a, pl->ir, &pl->an, &pl->sched, pl->algo, pl->target, &pl->plan, pl->d);
}
