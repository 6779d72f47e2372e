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
