/* grad_dims.c: see grad_dims.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grad_dims.h"


static const example_dims examples[] = {
    {"examples/deltanet.ssm", {{"H", 2}, {"K", 3}, {"V", 2}}, 3},
    {"examples/gated_deltanet.ssm", {{"H", 2}, {"K", 3}, {"V", 2}}, 3},
    {"examples/gla.ssm", {{"H", 2}, {"K", 3}, {"V", 2}}, 3},
    {"examples/linear_attn.ssm", {{"H", 2}, {"K", 3}, {"V", 2}}, 3},
    {"examples/lstm.ssm", {{"E", 3}, {"H", 2}}, 2},
    {"examples/mamba.ssm", {{"E", 3}, {"N", 2}}, 2},
    {"examples/mamba2.ssm", {{"H", 2}, {"P", 2}, {"N", 3}}, 3},
    {"examples/mamba2_conv.ssm", {{"H", 4}, {"P", 2}, {"N", 2}, {"G", 2}, {"R", 2}, {"W", 3}}, 6},
    {"examples/mamba3.ssm", {{"H", 2}, {"P", 2}, {"N", 2}}, 3},
    {"examples/mom.ssm", {{"M", 3}, {"E", 2}, {"K", 2}, {"V", 2}}, 4},
    {"examples/ttt_linear.ssm", {{"H", 2}, {"K", 3}, {"V", 2}, {"L", 2}}, 4},
    {"examples/retnet.ssm", {{"H", 2}, {"K", 3}, {"V", 2}}, 3},
    {"examples/rwkv6.ssm", {{"H", 2}, {"K", 3}, {"V", 2}}, 3},
    {"examples/fla_delta_rule.ssm", {{"H", 2}, {"K", 3}, {"V", 2}}, 3},
    {"examples/fla_gated_delta_rule.ssm", {{"H", 1}, {"HV", 2}, {"R", 2}, {"K", 3}, {"V", 2}}, 5},
    {"examples/fla_gla.ssm", {{"H", 2}, {"K", 3}, {"V", 2}}, 3},
    {"examples/fla_gla_kv.ssm", {{"H", 2}, {"K", 3}, {"V", 2}}, 3},
    {"examples/fla_linear_attn.ssm", {{"H", 2}, {"K", 3}, {"V", 2}}, 3},
    {"examples/fla_retention.ssm", {{"H", 2}, {"K", 3}, {"V", 2}}, 3},
    {"examples/fla_simple_gla.ssm", {{"H", 2}, {"K", 3}, {"V", 2}}, 3},
    {"examples/mamba2_ssd.ssm", {{"H", 2}, {"P", 2}, {"G", 1}, {"R", 2}, {"N", 3}}, 5},
    {"examples/mamba2_ssd_z.ssm", {{"H", 2}, {"P", 2}, {"G", 1}, {"R", 2}, {"N", 3}}, 5},
    {"examples/mamba_ssu.ssm", {{"H", 2}, {"P", 2}, {"G", 1}, {"R", 2}, {"N", 3}}, 5},
    {"examples/mamba_ssu_z.ssm", {{"H", 2}, {"P", 2}, {"G", 1}, {"R", 2}, {"N", 3}}, 5},
};

/* Small dims for an example the table does not list: every dim at most 3 when
 * the model still checks with that (a group H = G * R may not), else its own.
 * The dims are read from its IR (`  dim NAME = VALUE` lines). */
static void small_dims(const char *file, const char *src, size_t len, example_dims *e)
{
    static char names[8][64];
    memset(e, 0, sizeof *e);
    e->file = file;
    ssmc_ctx *ctx = ssmc_ctx_new();
    char *ir = NULL;
    if (ssmc_emit(ctx, file, src, len, NULL, SSMC_EMIT_IR, &ir) != SSMC_OK) fail_msg("%s: %s", file, ssmc_ctx_error(ctx));
    for (const char *p = strstr(ir, "\n  dim "); p && e->ndims < 8; p = strstr(p + 1, "\n  dim ")) {
        long long v;
        if (sscanf(p, "\n  dim %63s = %lld", names[e->ndims], &v) != 2) break;
        e->dims[e->ndims] = (ssmc_dim){names[e->ndims], v < 3 ? v : 3};
        e->ndims++;
    }
    free(ir);
    ssmc_model *m = NULL;
    ssmc_options o = {.device = SSMC_DEVICE_INTERP, .dims = e->dims, .ndims = e->ndims};
    if (ssmc_compile(ctx, file, src, len, &o, &m) != SSMC_OK) e->ndims = 0; /* its own dims */
    ssmc_model_free(m);
    ssmc_ctx_free(ctx);
}

const example_dims *grad_example_dims(const char *file, const char *src, size_t len, example_dims *own)
{
    for (size_t k = 0; k < sizeof examples / sizeof *examples; k++)
        if (strcmp(examples[k].file, file) == 0) return &examples[k];
    small_dims(file, src, len, own);
    return own;
}
