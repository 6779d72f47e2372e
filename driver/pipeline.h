/* pipeline.h: the compile pipeline (driver/pipeline.c): source text to a
 * kernel plan, one stage after another, each stage's result kept so that
 * `ssmc emit --emit=STAGE` can print any of them. */
#ifndef SSMC_PIPELINE_H
#define SSMC_PIPELINE_H

#include "ssmc.h"
#include "frontend/ast.h"
#include "ir/ir.h"
#include "passes/plan.h"
#include "support/support.h"

typedef enum pipe_stage {
    PIPE_AST,      /* the file parsed */
    PIPE_IR,       /* one model checked, lowered, verified */
    PIPE_ANALYSIS, /* its recurrences classified (SPEC §2), and their chunk forms */
    PIPE_SCHEDULE, /* index classes, what may split, in-place updates */
    PIPE_ALGO,     /* the algorithm chosen (SPEC §3) */
    PIPE_PLAN      /* the kernel plan for the target */
} pipe_stage;

typedef struct pipeline {
    /* in */
    arena *a;                  /* everything the stages make lives here */
    diag *d;
    const ssmc_options *o;     /* model, dims, algo */
    const plan_target *target; /* for PIPE_PLAN; NULL: the pipeline stops at PIPE_ALGO */
    /* out: each set by its stage */
    src_file *file;            /* in the arena: the IR points at it */
    ast_file *ast;
    ir_model *ir;
    pass_analysis an;
    pass_chunks chunks;
    pass_sched sched;
    plan_algo algo;
    pass_plan *plan;
} pipeline;

/* Runs the stages up to `last` (or until there is no target). SSMC_ERR_SOURCE
 * for a source error, else the failing stage's status, with diagnostics in d. */
ssmc_status pipeline_run(pipeline *pl, const char *filename, const char *source, size_t len, pipe_stage last);

/* The stages from PIPE_IR on, for one model of a file parsed already
 * (pl->file and pl->ast set, as pipeline_run(..., PIPE_AST) leaves them): the
 * checker annotates am in `tree` (the arena the tree lives in), once per model,
 * so that every model of a file is checked after one parse. */
ssmc_status pipeline_run_model(pipeline *pl, ast_model *am, arena *tree, pipe_stage last);

/* The stages after PIPE_IR, from a verified model a pass made (the training
 * forward and the adjoint of passes/grad.c): pl->ir = m, then analysis up to
 * `last`. */
ssmc_status pipeline_run_ir(pipeline *pl, ir_model *m, pipe_stage last);

#endif
