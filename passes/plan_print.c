/* plan_print.c: a plan as text: `ssmc emit --emit=plan` (plan_print), and the
 * same text as comment lines at the head of the code a renderer emits. */
#include <string.h>

#include "passes/plan_steps.h"

static const char *const red_mode_names[] = {"a loop over its values", "over the threads' slots, then across threads",
                                             "over the lanes of its element's group, then across them"};

/* si: the statement r is in (-1: an init); a sum over a class the statement is partial over
 * is a term of its linear root (passes/schedule.c). */
static void print_reductions(strbuf *out, const pass_plan *p, ir_ref r, int si)
{
    if (r == IR_NONE) return;
    const ir_inst *in = &p->m->insts[r];
    if (in->op == IR_SUM || in->op == IR_RMAX) {
        sb_printf(out, "\n      %s(", in->op == IR_SUM ? "sum" : "max");
        for (uint32_t i = 0; i < in->red.nvars; i++)
            sb_printf(out, "%s%s", i ? "," : "", p->m->vars[p->m->red_vars[in->red.vars + i]].name);
        sb_puts(out, "): ");
        if (p->xchg_var[r] >= 0)
            sb_printf(out, "interchanged: accumulated into a buffer along %s", p->m->vars[p->xchg_var[r]].name);
        else
            sb_puts(out, red_mode_names[p->red_mode[r]]);
        if (p->red_mode[r] == PLAN_RED_DIST) {
            plan_dom d = p->red_dom[r];
            sb_printf(out, " (class %s, %d slot%s%s)", p->m->dims[p->sched.class_dim[d.cls]].name, d.slots,
                      d.slots == 1 ? "" : "s", d.spread ? ", spread" : "");
        }
        bool part = false;
        for (int k = 0; si >= 0 && k < p->ncls; k++) {
            bool over = false;
            for (uint32_t i = 0; i < in->red.nvars; i++) over |= p->sched.var_class[p->m->red_vars[in->red.vars + i]] == k;
            if (!over || !p->partial[(size_t)si * (size_t)p->ncls + (size_t)k]) continue;
            sb_printf(out, "; partial over the item's tile of class %s", p->m->dims[p->sched.class_dim[k]].name);
            part = true;
        }
        int64_t tiles = si >= 0 ? p->part_tiles[p->m->stmts[si].tensor] : 0;
        if (part && tiles)
            sb_printf(out, ", %lld tiles, %s after the kernel", (long long)tiles,
                      p->m->tensors[p->m->stmts[si].tensor].kind == IR_STATE ? "added to the state" : "summed");
    }
    if (in->op == IR_LOAD || in->op == IR_CONST) return;
    print_reductions(out, p, in->a, si);
    print_reductions(out, p, in->b, si);
    print_reductions(out, p, in->c, si);
}

static void print_hoists(strbuf *out, const pass_plan *p, ir_ref r)
{
    if (r == IR_NONE) return;
    const ir_inst *in = &p->m->insts[r];
    if (p->hoist_var[r] >= 0) {
        sb_puts(out, "\n      hoisted: ");
        ir_print_expr(out, p->m, r);
        sb_printf(out, ", for every %s before the loops", p->m->vars[p->hoist_var[r]].name);
        return;
    }
    if (in->op == IR_LOAD || in->op == IR_CONST || in->op == IR_SUM || in->op == IR_RMAX) return;
    print_hoists(out, p, in->a);
    print_hoists(out, p, in->b);
    print_hoists(out, p, in->c);
}

/* The largest lag at which per-step tensor ti is read: its window of past
 * steps (0 when read at t only; -1 when never read). */
static int64_t read_window(const pass_plan *p, int ti)
{
    const ir_model *m = p->m;
    int64_t w = -1;
    for (uint32_t r = 0; r < m->ninsts; r++) {
        const ir_inst *in = &m->insts[r];
        if (in->op != IR_LOAD || in->load.tensor != ti) continue;
        int64_t lag = in->load.lag + (in->load.lag_var >= 0 ? m->dims[m->vars[in->load.lag_var].dim].value - 1 : 0);
        if (lag > w) w = lag;
    }
    return w;
}

static void print_buf(strbuf *out, const pass_plan *p, int b)
{
    const plan_buf *f = &p->bufs[b];
    sb_printf(out, "%s [%lld, %lld)", f->mem == PLAN_PLACE_LOCAL ? "local" : "global", (long long)f->off,
              (long long)(f->off + f->len));
}

static const char *const decay_kinds[] = {"none", "one per head", "one per key"};

static void print_chunked(strbuf *out, const pass_plan *p)
{
    const ir_model *m = p->m;
    const plan_chunked *ch = p->chunked;
    sb_printf(out, "plan %s: target %s, algorithm chunked\n", m->name, p->target.name);
    sb_printf(out, "part 1: the prologue (%s), the canonical operands%s\n", ch->parts.prologue->name,
              ch->fold_prologue ? "; batch and time folded" : "");
    for (int i = 0; i < ch->ncores; i++) {
        const plan_chunk_core *c = &ch->cores[i];
        sb_printf(out, "part %d: the core of state %s: chunks of %d steps, %d heads, K = %d, V = %d, decay %s%s\n", 2 + i,
                  m->tensors[c->state].name, c->C, c->nheads, c->K, c->V, decay_kinds[c->decay],
                  c->delta ? ", delta rule (UT transform)" : "");
        for (int r = 0; r < c->nreadouts; r++)
            sb_printf(out, "  readout %d: S(%s)\n", r, c->prev[r] ? "t-1" : "t");
    }
    sb_printf(out, "part %d: the epilogue (%s), the outputs%s\n", 2 + ch->ncores, ch->parts.epilogue->name,
              ch->fold_epilogue ? "; batch and time folded" : "");
    plan_print(out, ch->prologue);
    plan_print(out, ch->epilogue);
}

void plan_print(strbuf *out, const pass_plan *p)
{
    if (p->chunked) {
        print_chunked(out, p);
        return;
    }
    const ir_model *m = p->m;
    const plan_target *tg = &p->target;
    sb_printf(out, "plan %s: target %s, algorithm recurrent\n", m->name, tg->name);
    if (tg->lanes > 1)
        sb_printf(out, "  target: %d lanes a warp, %lld floats of block-local memory, %d registers for states and lets\n",
                  tg->lanes, (long long)tg->local_floats, tg->max_reg_slots);
    else
        sb_printf(out, "  target: loops, vectors of %d floats, %d workers, %lld floats of state per item\n",
                  tg->vector_floats, tg->workers, (long long)tg->item_state_floats);
    sb_puts(out, "kernel 1: recurrent, items = batch");
    for (int i = 0; i < p->ngrid; i++) sb_printf(out, " x %s", m->dims[p->sched.class_dim[p->grid[i]]].name);
    sb_printf(out, " (%lld per sequence), %d thread%s per item\n", (long long)p->items_per_seq, p->nthreads,
              p->nthreads == 1 ? "" : "s");
    sb_puts(out, "  loop nest: item -> once: time-invariant lets -> for t in 0..T-1: per-step statements\n");
    sb_puts(out, "classes:\n");
    for (int c = 0; c < p->ncls; c++) {
        const plan_class *k = &p->cls[c];
        sb_printf(out, "  %s = %lld: ", m->dims[p->sched.class_dim[c]].name, (long long)k->n);
        if (k->split)
            sb_printf(out, "grid, tiles of %lld (%lld per sequence)", (long long)k->tile, (long long)k->ntiles);
        else
            sb_puts(out, "inside the item");
        if (tg->lanes > 1) {
            sb_printf(out, "; %d thread%s x %d slot%s", k->threads, k->threads == 1 ? "" : "s", k->slots,
                      k->slots == 1 ? "" : "s");
            if (c == p->lane_cls) sb_puts(out, "; lanes (reductions over it are shuffles)");
            if (c == p->col_cls) sb_puts(out, "; columns");
        } else if (k->tile > 1) {
            sb_printf(out, "; a loop of %lld", (long long)k->tile);
        }
        sb_putc(out, '\n');
    }
    sb_puts(out, "tensors:\n");
    for (uint32_t ti = 0; ti < m->ntensors; ti++) {
        const ir_tensor *t = &m->tensors[ti];
        sb_printf(out, "  %s %s", ir_kind_names[t->kind], t->name);
        for (int i = 0; i < t->rank; i++) {
            int k = plan_axis_class(p, (int)ti, i);
            sb_printf(out, "%s%s", i ? "," : "[", m->dims[t->dims[i]].name);
            if (k >= 0 && p->cls[k].split && p->cls[k].ntiles > 1) sb_puts(out, "*");
        }
        sb_puts(out, t->rank ? "]" : "");
        if (plan_tracked(t)) {
            sb_printf(out, ": %s", plan_place_names[p->place[ti]]);
            if (p->place[ti] == PLAN_PLACE_REG) sb_printf(out, " (%lld per thread)", (long long)plan_reg_slots(p, (int)ti));
            if (p->buf_tensor[ti] >= 0) {
                sb_puts(out, p->place[ti] == PLAN_PLACE_TENSOR ? ", new values in " : ", ");
                print_buf(out, p, p->buf_tensor[ti]);
            }
            if (p->dbuf[ti]) sb_puts(out, ", two buffers by the parity of t");
        }
        if (t->per_step && t->kind == IR_INPUT) {
            int64_t w = read_window(p, (int)ti);
            if (w > 0) sb_printf(out, ": read up to t - %lld (before the sequence start: 0)", (long long)w);
        }
        for (int i = 0; i < p->nprefetch; i++)
            if (p->prefetch[i].tensor == (int)ti)
                sb_printf(out, ": prefetched a step ahead (%lld cache lines)",
                          (long long)(p->prefetch[i].span / PLAN_LINE_FLOATS + 2));
        for (int i = 0; i < p->npats; i++)
            if (p->pats[i].tensor == (int)ti)
                sb_printf(out, ": register pattern %d (%s)", i, t->kind == IR_PARAM ? "loaded once" : "a step ahead");
        sb_putc(out, '\n');
    }
    sb_puts(out, "statements:\n");
    for (uint32_t ii = 0; ii < m->ninits; ii++) { /* over the state as it is held */
        const ir_stmt *s = &m->inits[ii];
        const ir_tensor *t = &m->tensors[s->tensor];
        sb_printf(out, "  init:     %s", t->name);
        for (int i = 0; i < t->rank; i++) sb_printf(out, "%s%s", i ? "," : "[", m->vars[s->vars[i]].name);
        sb_printf(out, "%s: before the first step when no initial state is given", t->rank ? "]" : "");
        print_reductions(out, p, s->root, -1);
        sb_putc(out, '\n');
    }
    for (uint32_t si = 0; si < m->nstmts; si++) {
        const ir_stmt *s = &m->stmts[si];
        const ir_tensor *t = &m->tensors[s->tensor];
        sb_printf(out, "  %s %s", s->per_step ? "per step:" : "once:    ", t->name);
        for (int i = 0; i < t->rank; i++) sb_printf(out, "%s%s", i ? "," : "[", m->vars[s->vars[i]].name);
        sb_puts(out, t->rank ? "]" : "");
        if (tg->lanes > 1) {
            sb_puts(out, p->layout[si] ? ": threads follow the layout" : ": flat over the block");
            if (p->group[si] > 1) sb_printf(out, ", a group of %d lanes per element", p->group[si]);
            if (p->buf_stmt[si] >= 0) {
                sb_puts(out, ", new values in ");
                print_buf(out, p, p->buf_stmt[si]);
            }
        } else {
            sb_puts(out, ": loops");
            int nloops = 0;
            for (int i = 0; i < t->rank; i++) {
                int v = s->vars[i];
                if (plan_var_fixed(p, v)) continue;
                sb_printf(out, " %s(%lld)", m->vars[v].name, (long long)plan_var_extent(p, v));
                nloops++;
            }
            if (!nloops) sb_puts(out, " none");
            if (p->fuse[si] >= 0) sb_printf(out, "; fused with %s", m->tensors[m->stmts[p->fuse[si]].tensor].name);
            if (p->fuse[si] == -2) sb_puts(out, "; inside the state update's loops");
        }
        if (t->kind == IR_STATE) sb_puts(out, p->sched.inplace[si] ? "; in place" : "; simultaneous: through new values");
        print_reductions(out, p, s->root, (int)si);
        print_hoists(out, p, s->root);
        sb_putc(out, '\n');
    }
    sb_printf(out, "memory per item: %lld floats local, %lld floats global\n", (long long)p->local_floats,
              (long long)p->global_floats);
    if (p->part_floats) {
        sb_printf(out, "partial sums: %lld floats per sequence and step, f32, past every item's workspace:",
                  (long long)p->part_floats);
        for (uint32_t ti = 0; ti < m->ntensors; ti++)
            if (p->part_tiles[ti] && m->tensors[ti].kind != IR_STATE)
                sb_printf(out, " %s [%lld tiles][batch][T][%lld] at %lld x batch x T;", m->tensors[ti].name,
                          (long long)p->part_tiles[ti], (long long)p->elems[ti], (long long)p->part_off[ti]);
        sb_putc(out, '\n');
    }
    if (p->part_state_floats) {
        sb_printf(out, "partial accumulators: %lld floats per sequence, f32, past the partial sums:",
                  (long long)p->part_state_floats);
        for (uint32_t ti = 0; ti < m->ntensors; ti++)
            if (p->part_tiles[ti] && m->tensors[ti].kind == IR_STATE)
                sb_printf(out, " %s: tile 0 in place, tiles 1-%lld [batch][%lld] at %lld x batch;", m->tensors[ti].name,
                          (long long)p->part_tiles[ti] - 1, (long long)p->elems[ti], (long long)p->part_off[ti]);
        sb_putc(out, '\n');
    }
}

void plan_print_comment(strbuf *out, const pass_plan *p, const char *prefix)
{
    strbuf text = {0};
    plan_print(&text, p);
    const char *at = sb_cstr(&text);
    while (*at) {
        const char *nl = strchr(at, '\n');
        size_t n = nl ? (size_t)(nl - at) : strlen(at);
        sb_printf(out, "%s%.*s\n", prefix, (int)n, at);
        at += n + (nl ? 1 : 0);
    }
    if (text.failed) out->failed = true;
    sb_free(&text);
}
