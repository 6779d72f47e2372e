/* interp_backend.c: the interpreter as a device backend (codegen/backend.h) for
 * SSMC_DEVICE_INTERP. It converts the tensors given to f64, runs the reference
 * interpreter (ir/interp.c) and converts the results back to their dtypes.
 * Nothing is compiled: the state is the verified IR itself. */
#include <stdlib.h>

#include "codegen/backend.h"
#include "support/dtype.h"

static ssmc_status interp_compile(const ir_model *m, const pass_plan *p, const ssmc_options *o, diag *d, void **state)
{
    *state = (void *)m;
    return SSMC_OK;
}

/* Elements of tensor t for a run (the driver checked that they do not overflow). */
static size_t run_elems(const ir_model *m, const ir_tensor *t, int64_t batch, int64_t T)
{
    size_t n = (size_t)ir_tensor_elems(m, t);
    if (t->kind == IR_PARAM) return n;
    return n * (size_t)batch * (t->per_step ? (size_t)T : 1);
}

/* rows: NULL, or a decode against state pools (their rows->rows rows are
 * converted whole; the interpreter reads and writes the rows it is given). */
static ssmc_status interp_rows(const ir_model *ir, int64_t batch, int64_t T, const backend_tensor *bt,
                               const ssmc_rows *rows, diag *d)
{
    double **data = calloc(ir->ntensors ? ir->ntensors : 1, sizeof *data);
    unsigned char *fresh = calloc(ir->ntensors ? ir->ntensors : 1, 1);
    ssmc_status s = data && fresh ? SSMC_OK : SSMC_ERR_NOMEM;
    for (uint32_t i = 0; s == SSMC_OK && i < ir->ntensors; i++) {
        const ir_tensor *t = &ir->tensors[i];
        if (!bt[i].data) continue;
        size_t n = run_elems(ir, t, rows && t->kind == IR_STATE ? rows->rows : batch, T);
        data[i] = malloc((n ? n : 1) * sizeof(double));
        if (!data[i]) {
            s = SSMC_ERR_NOMEM;
            break;
        }
        fresh[i] = bt[i].fresh;
        if (t->kind != IR_OUTPUT && !bt[i].fresh)
            for (size_t k = 0; k < n; k++) data[i][k] = dtype_get(bt[i].data, bt[i].dtype, k);
    }
    if (s == SSMC_OK) {
        ir_interp_args args = {.batch = batch, .T = T, .data = data, .fresh = fresh,
                               .rows = rows ? rows->index : NULL, .has_state = rows ? rows->has_state : NULL};
        if (!ir_interp(ir, &args, d)) s = SSMC_ERR_NOMEM;
    }
    for (uint32_t i = 0; s == SSMC_OK && i < ir->ntensors; i++) {
        const ir_tensor *t = &ir->tensors[i];
        if (!bt[i].data || (t->kind != IR_OUTPUT && t->kind != IR_STATE)) continue;
        size_t n = run_elems(ir, t, rows && t->kind == IR_STATE ? rows->rows : batch, T);
        for (size_t k = 0; k < n; k++) {
            /* the outputs of padding slots are left as they were */
            if (rows && t->kind == IR_OUTPUT && rows->index[k / (n / (size_t)batch)] < 0) continue;
            dtype_set(bt[i].data, bt[i].dtype, k, data[i][k]);
        }
    }
    if (s == SSMC_ERR_NOMEM && d->nerrors == 0) diag_error(d, "out of memory");
    for (uint32_t i = 0; data && i < ir->ntensors; i++) free(data[i]);
    free(data);
    free(fresh);
    return s;
}

static ssmc_status interp_run(void *state, int64_t batch, int64_t T, const backend_tensor *bt, diag *d)
{
    return interp_rows(state, batch, T, bt, NULL, d);
}

static ssmc_status interp_decode(void *state, int64_t batch, int64_t T, const backend_tensor *bt, const ssmc_rows *rows,
                                 bool device, void *stream, diag *d)
{
    return interp_rows(state, batch, T, bt, rows, d);
}

static void interp_free(void *state) {}

const backend interp_backend = {
    .name = "interp",
    .compile = interp_compile,
    .run = interp_run,
    .free = interp_free,
    .decode = interp_decode,
    .reverse = true,
};
