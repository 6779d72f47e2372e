/* ir.c: the IR's tables and small queries (see ir.h). */
#include "ir.h"

#include <string.h>

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
