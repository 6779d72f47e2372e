/* varlen.c (driver): variable-length batches (SPEC §3): nseq sequences packed
 * along T of a batch of one, sequence i being steps [cu[i], cu[i+1]).
 *
 * Each sequence runs as a batch of one of its own length, through the public
 * calls (ssmc_run, ssmc_run_device, ssmc_forward_train, ssmc_backward) on
 * views of the caller's tensors: a per-step tensor from step cu[i], a state
 * (initial, final, its gradient or its cotangent) from row i, a param whole.
 * So nothing crosses a boundary whatever the model reads (the hidden history
 * states of reads at t - k start fresh per call, chunks and windows stop at a
 * call's end), and every backend and algorithm takes packed batches with no
 * code of its own. The cost is a run (a launch, or one per phase) per
 * sequence. Gradients: one tape per sequence; a param's gradient is summed
 * over the sequences here, in f64. */
#include <stdlib.h>
#include <string.h>

#include "grad.h"
#include "ir/ir.h"
#include "support/dtype.h"

struct varlen_tape {
    int64_t nseq, T;
    int64_t *cu;
    ssmc_tape **seq;
};

void varlen_tape_free(varlen_tape *v)
{
    if (!v) return;
    for (int64_t i = 0; v->seq && i < v->nseq; i++) ssmc_tape_free(v->seq[i]);
    free(v->seq);
    free(v->cu);
    free(v);
}

/* The offsets: from 0 to T, strictly rising (an empty sequence is refused:
 * its final state would be its initial one, which the caller can copy). */
static ssmc_status check_offsets(diag *d, int64_t T, const int64_t *cu, int64_t nseq)
{
    if (!cu || nseq < 1) {
        diag_error(d, "cu_seqlens must hold at least two offsets (one sequence); got %s with %lld sequences",
                   cu ? "offsets" : "NULL", (long long)nseq);
        return SSMC_ERR_ARG;
    }
    if (cu[0] != 0 || cu[nseq] != T) {
        diag_error(d, "cu_seqlens must run from 0 to T = %lld, but it runs from %lld to %lld", (long long)T,
                   (long long)cu[0], (long long)cu[nseq]);
        return SSMC_ERR_ARG;
    }
    for (int64_t i = 0; i < nseq; i++)
        if (cu[i + 1] <= cu[i]) {
            diag_error(d, "cu_seqlens[%lld] = %lld and cu_seqlens[%lld] = %lld: sequence %lld is %s; every "
                          "sequence needs at least one step",
                       (long long)i, (long long)cu[i], (long long)(i + 1), (long long)cu[i + 1], (long long)i,
                       cu[i + 1] < cu[i] ? "of negative length (the offsets must rise)" : "empty");
            return SSMC_ERR_ARG;
        }
    return SSMC_OK;
}

/* The tensor an argument names, or NULL (an unknown name, a missing buffer:
 * the call on the view reports it). */
static const ir_tensor *named(const ir_model *ir, const ssmc_arg *a)
{
    int k = a->name && a->data && (unsigned)a->dtype <= SSMC_F64 ? ir_find_tensor(ir, a->name) : -1;
    return k >= 0 && api_tensor_public(&ir->tensors[k]) ? &ir->tensors[k] : NULL;
}

/* The views of args for sequence i into out[0..n). */
static void views(const ir_model *ir, const ssmc_arg *args, int n, const int64_t *cu, int64_t i, ssmc_arg *out)
{
    for (int a = 0; a < n; a++) {
        out[a] = args[a];
        const ir_tensor *t = named(ir, &args[a]);
        if (!t) continue;
        size_t row = (size_t)ir_tensor_elems(ir, t) * dtype_size(args[a].dtype);
        size_t off = t->kind == IR_STATE ? (size_t)i * row : t->per_step ? (size_t)cu[i] * row : 0;
        out[a].data = (char *)args[a].data + off;
    }
}

static void where(diag *d, int64_t nseq, const int64_t *cu, int64_t i)
{
    if (nseq > 1)
        diag_error(d, "(the error above is in sequence %lld of cu_seqlens, steps %lld to %lld)", (long long)i,
                   (long long)cu[i], (long long)cu[i + 1]);
}

static ssmc_status run_varlen(ssmc_model *m, int64_t T, const int64_t *cu, int64_t nseq, const ssmc_arg *args,
                              int nargs, bool on_device, void *stream)
{
    if (!m) return SSMC_ERR_ARG;
    diag *d = api_model_diag(m);
    diag_reset(d);
    if (nargs < 0 || (nargs > 0 && !args)) {
        diag_error(d, "args is %s but nargs is %d", args ? "given" : "NULL", nargs);
        return SSMC_ERR_ARG;
    }
    ssmc_status s = check_offsets(d, T, cu, nseq);
    ssmc_arg *piece = s == SSMC_OK ? calloc(nargs ? (size_t)nargs : 1, sizeof *piece) : NULL;
    if (s == SSMC_OK && !piece) {
        diag_error(d, "out of memory");
        s = SSMC_ERR_NOMEM;
    }
    for (int64_t i = 0; s == SSMC_OK && i < nseq; i++) {
        views(api_model_ir(m), args, nargs, cu, i, piece);
        int64_t L = cu[i + 1] - cu[i];
        s = on_device ? ssmc_run_device(m, 1, L, piece, nargs, stream) : ssmc_run(m, 1, L, piece, nargs);
        if (s != SSMC_OK) where(d, nseq, cu, i);
    }
    free(piece);
    return s;
}

ssmc_status ssmc_run_varlen(ssmc_model *m, int64_t T, const int64_t *cu_seqlens, int64_t nseq, const ssmc_arg *args,
                            int nargs)
{
    return run_varlen(m, T, cu_seqlens, nseq, args, nargs, false, NULL);
}

ssmc_status ssmc_run_varlen_device(ssmc_model *m, int64_t T, const int64_t *cu_seqlens, int64_t nseq,
                                   const ssmc_arg *args, int nargs, void *stream)
{
    return run_varlen(m, T, cu_seqlens, nseq, args, nargs, true, stream);
}

ssmc_status ssmc_forward_train_varlen(ssmc_model *m, int64_t T, const int64_t *cu_seqlens, int64_t nseq,
                                      const ssmc_arg *args, int nargs, ssmc_tape **tape)
{
    if (!m) return SSMC_ERR_ARG;
    diag *d = api_model_diag(m);
    diag_reset(d);
    if (!tape) {
        diag_error(d, "ssmc_forward_train_varlen needs somewhere to put the tape");
        return SSMC_ERR_ARG;
    }
    *tape = NULL;
    if (nargs < 0 || (nargs > 0 && !args)) {
        diag_error(d, "args is %s but nargs is %d", args ? "given" : "NULL", nargs);
        return SSMC_ERR_ARG;
    }
    ssmc_status s = check_offsets(d, T, cu_seqlens, nseq);
    if (s != SSMC_OK) return s;
    varlen_tape *v = calloc(1, sizeof *v);
    ssmc_arg *piece = calloc(nargs ? (size_t)nargs : 1, sizeof *piece);
    if (v) {
        v->nseq = nseq, v->T = T;
        v->cu = malloc((size_t)(nseq + 1) * sizeof *v->cu);
        v->seq = calloc((size_t)nseq, sizeof *v->seq);
    }
    if (!v || !piece || !v->cu || !v->seq) {
        diag_error(d, "out of memory");
        s = SSMC_ERR_NOMEM;
    } else {
        memcpy(v->cu, cu_seqlens, (size_t)(nseq + 1) * sizeof *v->cu);
    }
    size_t bytes = 0;
    for (int64_t i = 0; s == SSMC_OK && i < nseq; i++) {
        views(api_model_ir(m), args, nargs, cu_seqlens, i, piece);
        s = ssmc_forward_train(m, 1, cu_seqlens[i + 1] - cu_seqlens[i], piece, nargs, &v->seq[i]);
        if (s != SSMC_OK) where(d, nseq, cu_seqlens, i);
        else bytes += ssmc_tape_bytes(v->seq[i]);
    }
    free(piece);
    if (s == SSMC_OK && !(*tape = grad_tape_of_varlen(m, v, bytes))) {
        diag_error(d, "out of memory");
        s = SSMC_ERR_NOMEM;
    }
    if (s != SSMC_OK) varlen_tape_free(v);
    return s;
}

/* The backward over the sequences, from the last (any order would do: each
 * is its own run): inputs' and states' gradients land in their views; a
 * param's gradient goes to a buffer of its own per sequence and is summed. */
ssmc_status varlen_backward(ssmc_model *m, const varlen_tape *v, const ssmc_arg *args, int nargs,
                            const ssmc_arg *douts, int ndouts, const ssmc_arg *grads, int ngrads)
{
    diag *d = api_model_diag(m);
    const ir_model *ir = api_model_ir(m);
    if (nargs < 0 || ndouts < 0 || ngrads < 0 || (nargs && !args) || (ndouts && !douts) || (ngrads && !grads)) {
        diag_reset(d);
        diag_error(d, "ssmc_backward: an argument array is NULL or its count negative");
        return SSMC_ERR_ARG;
    }
    ssmc_arg *va = calloc((size_t)nargs + 1, sizeof *va), *da = calloc((size_t)ndouts + 1, sizeof *da);
    ssmc_arg *ga = calloc((size_t)ngrads + 1, sizeof *ga);
    double **acc = calloc((size_t)ngrads + 1, sizeof *acc);
    void **tmp = calloc((size_t)ngrads + 1, sizeof *tmp);
    ssmc_status s = va && da && ga && acc && tmp ? SSMC_OK : SSMC_ERR_NOMEM;
    /* a param's gradient: a buffer per call, summed in f64 */
    for (int g = 0; s == SSMC_OK && g < ngrads; g++) {
        const ir_tensor *t = named(ir, &grads[g]);
        if (!t || t->kind != IR_PARAM) continue;
        size_t n = (size_t)ir_tensor_elems(ir, t);
        acc[g] = calloc(n ? n : 1, sizeof **acc);
        tmp[g] = malloc((n ? n : 1) * dtype_size(grads[g].dtype));
        if (!acc[g] || !tmp[g]) s = SSMC_ERR_NOMEM;
    }
    if (s == SSMC_ERR_NOMEM) {
        diag_reset(d);
        diag_error(d, "out of memory");
    }
    for (int64_t i = v->nseq - 1; s == SSMC_OK && i >= 0; i--) {
        views(ir, args, nargs, v->cu, i, va);
        views(ir, douts, ndouts, v->cu, i, da);
        views(ir, grads, ngrads, v->cu, i, ga);
        for (int g = 0; g < ngrads; g++)
            if (tmp[g]) ga[g].data = tmp[g];
        s = ssmc_backward(m, v->seq[i], va, nargs, da, ndouts, ga, ngrads);
        if (s != SSMC_OK) {
            where(d, v->nseq, v->cu, i);
            break;
        }
        for (int g = 0; g < ngrads; g++) {
            if (!acc[g]) continue;
            size_t n = (size_t)ir_tensor_elems(ir, named(ir, &grads[g]));
            for (size_t k = 0; k < n; k++) acc[g][k] += dtype_get(tmp[g], grads[g].dtype, k);
        }
    }
    for (int g = 0; s == SSMC_OK && g < ngrads; g++) {
        if (!acc[g]) continue;
        size_t n = (size_t)ir_tensor_elems(ir, named(ir, &grads[g]));
        for (size_t k = 0; k < n; k++) dtype_set(grads[g].data, grads[g].dtype, k, acc[g][k]);
    }
    for (int g = 0; acc && tmp && g < ngrads; g++) {
        free(acc[g]);
        free(tmp[g]);
    }
    free(acc);
    free(tmp);
    free(va);
    free(da);
    free(ga);
    return s;
}
