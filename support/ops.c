/* ops.c: the op table's rows as data (see ops.h). */
#include "ops.h"

const op_info op_table[] = {
#define X(id, arity, name, kind, cost, grad) {name, arity, kind, cost},
    SSMC_OPS(X)
#undef X
    {0}, /* end of the table */
};
