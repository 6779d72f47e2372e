/* ir.c: the IR's tables and small queries (see ir.h). */
#include "ir.h"

#include <stdlib.h>
#include <string.h>

#include "support/support.h"

const char *const ir_kind_names[] = {"input", "param", "state", "output", "let"};

int64_t ir_tensor_elems(const ir_model *m, const ir_tensor *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->rank; i++) n *= m->dims[t->dims[i]].value;
    return n;
}

int ir_find_tensor(const ir_model *m, const char *name)
{
    for (uint32_t i = 0; i < m->ntensors; i++)
        if (strcmp(m->tensors[i].name, name) == 0) return (int)i;
    return -1;
}

ir_ref ir_operand(const ir_inst *in, int i) { return i == 0 ? in->a : i == 1 ? in->b : i == 2 ? in->c : IR_NONE; }

bool ir_reads(const ir_model *m, ir_ref r, int tensor)
{
    if (r == IR_NONE) return false;
    const ir_inst *in = &m->insts[r];
    if (in->op == IR_LOAD) return in->load.tensor == tensor;
    return ir_reads(m, in->a, tensor) || ir_reads(m, in->b, tensor) || ir_reads(m, in->c, tensor);
}

const ir_stmt *ir_find_init(const ir_model *m, int tensor)
{
    for (uint32_t i = 0; i < m->ninits; i++)
        if (m->inits[i].tensor == tensor) return &m->inits[i];
    return NULL;
}

const ir_origin *ir_find_origin(const ir_model *m, int tensor)
{
    for (uint32_t i = 0; i < m->norigins; i++)
        if (m->origins[i].tensor == tensor) return &m->origins[i];
    return NULL;
}

const src_loc *ir_first_lagged_read(const ir_model *m)
{
    for (uint32_t i = 0; i < m->ninsts; i++) {
        const ir_inst *in = &m->insts[i];
        if (in->op == IR_LOAD && m->tensors[in->load.tensor].per_step && (in->load.lag || in->load.lag_var >= 0))
            return &in->loc;
    }
    for (uint32_t i = 0; i < m->ntensors; i++)
        if (m->tensors[i].hidden) return &m->tensors[i].loc;
    return NULL;
}

/* ---- builder ---- */

#define BUILD_PUSH(b, arr, x) \
    (VEC_PUSH((b)->arr, (b)->n##arr, (b)->c##arr, (x)) ? true : ((b)->oom = true, false))

#define BUILD_COPY(b, arr, src, n)                                      \
    do {                                                                \
        for (uint32_t i_ = 0; i_ < (n); i_++) BUILD_PUSH(b, arr, (src)[i_]); \
    } while (0)

void ir_build_init(ir_builder *b, const ir_model *m)
{
    memset(b, 0, sizeof *b);
    if (!m) return;
    BUILD_COPY(b, dims, m->dims, m->ndims);
    BUILD_COPY(b, tensors, m->tensors, m->ntensors);
    BUILD_COPY(b, vars, m->vars, m->nvars);
    BUILD_COPY(b, insts, m->insts, m->ninsts);
    BUILD_COPY(b, ix, m->ix, m->nix);
    BUILD_COPY(b, red_vars, m->red_vars, m->nred_vars);
    BUILD_COPY(b, stmts, m->stmts, m->nstmts);
    BUILD_COPY(b, inits, m->inits, m->ninits);
    BUILD_COPY(b, origins, m->origins, m->norigins);
}

int ir_build_dim(ir_builder *b, const char *name, int64_t value)
{
    ir_dim d = {.name = name, .value = value};
    return BUILD_PUSH(b, dims, d) ? (int)b->ndims - 1 : -1;
}

int ir_build_tensor(ir_builder *b, ir_tensor t) { return BUILD_PUSH(b, tensors, t) ? (int)b->ntensors - 1 : -1; }

int ir_build_var(ir_builder *b, const char *name, int dim)
{
    ir_var v = {.name = name, .dim = dim};
    return BUILD_PUSH(b, vars, v) ? (int)b->nvars - 1 : -1;
}

ir_ref ir_build_inst(ir_builder *b, ir_inst in)
{
    if (b->ninsts >= UINT32_MAX - 1) b->oom = true;
    return !b->oom && BUILD_PUSH(b, insts, in) ? (ir_ref)(b->ninsts - 1) : IR_NONE;
}

uint32_t ir_build_index(ir_builder *b, ir_index ix) { return BUILD_PUSH(b, ix, ix) ? (uint32_t)b->nix - 1 : 0; }

uint32_t ir_build_red_var(ir_builder *b, uint32_t var)
{
    return BUILD_PUSH(b, red_vars, var) ? (uint32_t)b->nred_vars - 1 : 0;
}

int ir_build_stmt(ir_builder *b, ir_stmt s) { return BUILD_PUSH(b, stmts, s) ? (int)b->nstmts - 1 : -1; }

void ir_build_free(ir_builder *b)
{
    free(b->dims);
    free(b->tensors);
    free(b->vars);
    free(b->insts);
    free(b->ix);
    free(b->red_vars);
    free(b->stmts);
    free(b->inits);
    free(b->origins);
    memset(b, 0, sizeof *b);
}

#define FREEZE(dst, cnt, src, n)                                                  \
    do {                                                                          \
        (dst) = arena_array(a, (n) ? (n) : 1, sizeof *(src));                     \
        if (!(dst)) goto fail;                                                    \
        if (n) memcpy((dst), (src), (n) * sizeof *(src));                         \
        (cnt) = (uint32_t)(n);                                                    \
    } while (0)

ir_model *ir_finish(ir_builder *b, arena *a, const char *name, const ir_model *like, bool reverse)
{
    ir_model *m = b->oom ? NULL : arena_alloc(a, sizeof *m);
    if (!m) goto fail;
    m->name = name;
    if (like) {
        m->loc = like->loc;
        m->file = like->file;
    }
    m->reverse = reverse;
    FREEZE(m->dims, m->ndims, b->dims, b->ndims);
    FREEZE(m->tensors, m->ntensors, b->tensors, b->ntensors);
    FREEZE(m->vars, m->nvars, b->vars, b->nvars);
    FREEZE(m->insts, m->ninsts, b->insts, b->ninsts);
    FREEZE(m->ix, m->nix, b->ix, b->nix);
    FREEZE(m->red_vars, m->nred_vars, b->red_vars, b->nred_vars);
    FREEZE(m->stmts, m->nstmts, b->stmts, b->nstmts);
    FREEZE(m->inits, m->ninits, b->inits, b->ninits);
    FREEZE(m->origins, m->norigins, b->origins, b->norigins);
    ir_build_free(b);
    return m;
fail:
    ir_build_free(b);
    return NULL;
}
