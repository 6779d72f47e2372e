/* analysis.c: placeholder until the recurrence analysis lands: lists states. */
#include "passes.h"

bool pass_analyze(arena *a, const ir_model *m, pass_analysis *out, diag *d)
{
    (void)d;
    out->nstates = 0;
    out->nreadouts = 0;
    out->readouts = NULL;
    out->states = arena_array(a, m->ntensors ? m->ntensors : 1, sizeof *out->states);
    if (!out->states) return false;
    for (uint32_t i = 0; i < m->ntensors; i++)
        if (m->tensors[i].kind == IR_STATE) out->states[out->nstates++] = (pass_state){.tensor = (int)i};
    return true;
}

void pass_analysis_print(strbuf *out, const ir_model *m, const pass_analysis *an)
{
    sb_printf(out, "model %s\n", m->name);
    for (int i = 0; i < an->nstates; i++) sb_printf(out, "  state %s: unanalysed\n", m->tensors[an->states[i].tensor].name);
    pass_sched s;
    arena a;
    arena_init(&a);
    diag d = {0};
    if (pass_schedule(&a, m, &s, &d)) pass_schedule_print(out, m, &s);
    diag_free(&d);
    arena_free(&a);
}
