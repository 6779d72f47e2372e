/* plan.c: the kernel plan (see plan.h for its vocabulary), one planner for
 * every target.
 *
 * Takes a verified IR model, its schedule (passes/schedule.c: index classes,
 * which may split across items, which state updates run in place) and a target
 * description, and decides, in this order (plan_make reads top to bottom; the
 * steps for lanes are in layout.c, those for loops in loops.c):
 *   1. the classes' extents;
 *   2. the layout inside an item (targets with lanes): a lane class R that
 *      reductions run over (readouts y = sum(i: q[i] * S[i, j])) goes on the
 *      lanes of a warp so those reductions are shuffles; a column class C, the
 *      largest other state class, spreads over the remaining lanes and a few
 *      warps; every other class has one thread and its values in slots;
 *   3. the grid: which splittable classes are cut into items, in tiles of what
 *      size (with lanes: every splittable class, at the layout's tile; with
 *      loops: as few classes as give max(min_items, workers, state / cache)
 *      items, outer state axes first, a contiguous axis only when nothing else
 *      splits);
 *   4. strides over the full tensors and over an item's slice;
 *   5. loop transforms (targets with loops): interchanged reductions, fusion of
 *      a state update with its readout, hoisting of costly subexpressions;
 *   6. placement (targets with lanes): how each statement runs (following the
 *      layout or flat over the block), where each state and let lives
 *      (registers when only the element's owner reads it and the register
 *      budget allows, else block-local memory), which lets are computed once
 *      per block, every reduction's mode and the loads that become per-thread
 *      register patterns (inputs a step ahead, params once); with loops: lets in
 *      block-local scratch, states in their own tensors (through a copy when
 *      the update is not in place);
 *   7. memory: every block-local and workspace buffer, aligned to the vector
 *      width, past the target's local budget into the global workspace;
 *   8. cache-line prefetch (targets with loops) of the per-step slices an item
 *      reads and writes one step ahead.
 * Guarantees: a plan for every verified model (a state that defeats every fast
 * path still runs, in memory, one statement at a time); the plan depends on the
 * IR and the target description only, never on the machine it runs on, so the
 * emitted code is the same with or without the device. */
#include <stdlib.h>
#include <string.h>

#include "passes/plan_steps.h"

const char *const plan_place_names[] = {"-", "registers", "block-local memory", "global workspace", "its tensor"};

bool plan_tracked(const ir_tensor *t) { return t->kind == IR_STATE || t->kind == IR_LET; }

int plan_axis_class(const pass_plan *p, int tensor, int axis) { return p->sched.axis_class[tensor * IR_MAX_RANK + axis]; }

bool plan_var_fixed(const pass_plan *p, int v)
{
    int k = p->sched.var_class[v];
    return k >= 0 && p->cls[k].tile == 1;
}

int64_t plan_var_extent(const pass_plan *p, int v)
{
    int k = p->sched.var_class[v];
    return k >= 0 ? p->cls[k].tile : p->m->dims[p->m->vars[v].dim].value;
}

int64_t plan_reg_slots(const pass_plan *p, int tensor)
{
    const ir_tensor *t = &p->m->tensors[tensor];
    int64_t n = 1;
    for (int i = 0; i < t->rank; i++) n *= p->cls[plan_axis_class(p, tensor, i)].slots;
    return n;
}

int64_t plan_local_elems(const pass_plan *p, int tensor)
{
    const ir_tensor *t = &p->m->tensors[tensor];
    int64_t n = 1;
    for (int i = 0; i < t->rank; i++) n *= p->cls[plan_axis_class(p, tensor, i)].tile;
    return n;
}

plan_dom plan_class_dom(const pass_plan *p, int c)
{
    return (plan_dom){.cls = c, .n = p->cls[c].tile, .slots = p->cls[c].slots, .spread = false};
}

/* A buffer of len floats in mem, aligned to the target's vector width; its id. */
int plan_add_buf(pass_plan *p, plan_place mem, int64_t len)
{
    int64_t *top = mem == PLAN_PLACE_LOCAL ? &p->local_floats : &p->global_floats;
    int64_t align = p->target.vector_floats > 1 ? p->target.vector_floats : 1;
    p->bufs[p->nbufs] = (plan_buf){.mem = mem, .off = *top, .len = len};
    *top += ceil_div(len, align) * align;
    return p->nbufs++;
}

/* =============================================================== 3. the grid */

/* With lanes, every splittable class is on the grid at the tile the layout
 * gave it (one value, or the column class's threads x slots), the first class
 * varying fastest. With loops, as few classes as give
 * max(min_items, workers, state / item_state_floats) items per sequence:
 * classes on outer state axes first (outermost first), then classes that hold
 * a state's contiguous last axis, then the rest; a state's contiguous axis is
 * cut only when nothing else splits (a model whose state is a vector) and then
 * in multiples of the vector width: measured on GLA (bench/RESULTS.md), tiles
 * of it cost more than the parallelism they buy (shorter inner loops, per-step
 * work repeated per tile, rows shared between threads). */
static bool plan_grid(arena *a, pass_plan *p)
{
    const ir_model *m = p->m;
    int nc = p->ncls;
    p->items_per_seq = 1;
    if (p->target.lanes > 1) {
        for (int k = nc - 1; k >= 0; k--) {
            if (!p->cls[k].split) continue;
            p->grid[p->ngrid++] = k;
            p->items_per_seq *= p->cls[k].ntiles;
        }
        return true;
    }
    int *order = arena_array(a, (size_t)nc + 1, sizeof *order);
    int *key = arena_array(a, (size_t)nc + 1, sizeof *key);
    int *pos = arena_array(a, (size_t)nc + 1, sizeof *pos);
    bool *inner = arena_array(a, (size_t)nc + 1, sizeof *inner);
    if (a->failed) return false;
    for (int k = 0; k < nc; k++) {
        plan_class *c = &p->cls[k];
        c->tile = c->n;
        c->ntiles = 1;
        c->split = false;
        c->threads = 1;
        c->stride = 1;
        c->lane = true;
        pos[k] = IR_MAX_RANK;
        inner[k] = false;
    }
    for (uint32_t ti = 0; ti < m->ntensors; ti++) {
        const ir_tensor *t = &m->tensors[ti];
        for (int ax = 0; t->kind == IR_STATE && ax < t->rank; ax++) {
            int k = plan_axis_class(p, (int)ti, ax);
            if (k < 0) continue;
            if (ax < pos[k]) pos[k] = ax;
            if (ax == t->rank - 1) inner[k] = true;
        }
    }
    for (int k = 0; k < nc; k++) key[k] = (pos[k] == IR_MAX_RANK ? 2 : inner[k] ? 1 : 0) * IR_MAX_RANK + pos[k];
    int ncand = 0;
    for (int k = 0; k < nc; k++)
        if (p->sched.splittable[k] && p->cls[k].n > 1) order[ncand++] = k;
    for (int i = 1; i < ncand; i++) /* insertion sort by key, stable */
        for (int j = i; j > 0 && key[order[j - 1]] > key[order[j]]; j--) {
            int tmp = order[j];
            order[j] = order[j - 1];
            order[j - 1] = tmp;
        }
    int64_t want = p->target.workers, state = 0;
    if (want < p->target.min_items) want = p->target.min_items;
    for (uint32_t ti = 0; ti < m->ntensors; ti++)
        if (m->tensors[ti].kind == IR_STATE) state += ir_tensor_elems(m, &m->tensors[ti]);
    if (p->target.item_state_floats > 0 && want < ceil_div(state, p->target.item_state_floats))
        want = ceil_div(state, p->target.item_state_floats);
    int64_t g = 1, vec = p->target.vector_floats > 1 ? p->target.vector_floats : 1;
    for (int i = 0; i < ncand && g < want; i++) {
        int k = order[i];
        if (inner[k] && g > 1) break;
        int64_t dim = p->cls[k].n, need = ceil_div(want, g);
        int64_t tile = ceil_div(dim, need);
        if (inner[k]) tile = ceil_div(tile, vec) * vec;
        if (tile >= dim) continue;
        p->cls[k].tile = tile;
        p->cls[k].ntiles = ceil_div(dim, tile);
        p->cls[k].split = true;
        g *= p->cls[k].ntiles;
        p->grid[p->ngrid++] = k;
    }
    for (int k = 0; k < nc; k++) p->cls[k].slots = (int)p->cls[k].tile;
    p->items_per_seq = g;
    return true;
}

/* A stateful model (the chunked algorithm's stateless parts gain nothing) with
 * a class splittable only through partial sums. */
static bool partial_gain(const ir_model *m, const pass_sched *ps)
{
    bool state = false;
    for (uint32_t ti = 0; ti < m->ntensors; ti++) state |= m->tensors[ti].kind == IR_STATE;
    for (int k = 0; state && k < ps->nclasses; k++)
        if (ps->splittable[k] && ps->class_partial[k]) return true;
    return false;
}

/* 3b: the statements whose linear root's terms run over a split class, and the
 * scratch of their outputs and accumulator states (plan.h). */
static bool plan_partials(arena *a, pass_plan *p)
{
    const ir_model *m = p->m;
    size_t nc = p->ncls ? (size_t)p->ncls : 1;
    p->partial = arena_array(a, (m->nstmts ? m->nstmts : 1) * nc, sizeof *p->partial);
    if (!p->partial) return false;
    if (!p->sched.partial_over) return true;
    for (uint32_t si = 0; si < m->nstmts; si++) {
        int o = m->stmts[si].tensor;
        int64_t tiles = 1;
        bool any = false;
        for (int k = 0; k < p->ncls; k++) {
            if (!p->sched.partial_over[si * nc + (size_t)k] || !p->cls[k].split) continue;
            p->partial[si * nc + (size_t)k] = true;
            tiles *= p->cls[k].ntiles;
            any = true;
        }
        if (!any || m->tensors[o].kind == IR_LET) continue; /* a partial let: its readers' sums finish it */
        p->part_tiles[o] = tiles;
        if (m->tensors[o].kind == IR_STATE) { /* an accumulator: the tiles past the first */
            p->part_off[o] = p->part_state_floats;
            p->part_state_floats += (tiles - 1) * ir_tensor_elems(m, &m->tensors[o]);
            continue;
        }
        p->part_off[o] = p->part_floats;
        p->part_floats += tiles * ir_tensor_elems(m, &m->tensors[o]);
    }
    return true;
}

/* =============================================================== 4. strides */

static void plan_strides(pass_plan *p)
{
    const ir_model *m = p->m;
    for (uint32_t ti = 0; ti < m->ntensors; ti++) {
        const ir_tensor *t = &m->tensors[ti];
        int64_t s = 1, ls = 1;
        for (int ax = t->rank - 1; ax >= 0; ax--) {
            p->fstride[ti * IR_MAX_RANK + (uint32_t)ax] = s;
            s *= m->dims[t->dims[ax]].value;
            int k = plan_axis_class(p, (int)ti, ax);
            int64_t ext = k >= 0 ? p->cls[k].tile : m->dims[t->dims[ax]].value;
            p->lstride[ti * IR_MAX_RANK + (uint32_t)ax] = ext == 1 ? 0 : ls;
            ls *= ext;
        }
        p->elems[ti] = s;
        p->lelems[ti] = ls;
    }
}

/* =============================================================== 6 and 7 for loops */

/* Lets live in block-local scratch over the item's slice, states in their own
 * tensors (a state whose update is not in place also gets a local copy for the
 * new value); interchanged sums and hoisted subtrees get a buffer over their
 * variable's values. */
static void plan_loop_memory(pass_plan *p)
{
    const ir_model *m = p->m;
    for (uint32_t ti = 0; ti < m->ntensors; ti++) {
        const ir_tensor *t = &m->tensors[ti];
        bool copy = t->kind == IR_STATE && t->def >= 0 && !p->sched.inplace[t->def];
        p->place[ti] = t->kind == IR_LET ? PLAN_PLACE_LOCAL : t->kind == IR_STATE ? PLAN_PLACE_TENSOR : PLAN_PLACE_NONE;
        if (t->kind == IR_LET || copy) p->buf_tensor[ti] = plan_add_buf(p, PLAN_PLACE_LOCAL, p->lelems[ti]);
    }
    for (uint32_t r = 0; r < m->ninsts; r++) {
        if (p->xchg_var[r] >= 0) p->buf_inst[r] = plan_add_buf(p, PLAN_PLACE_LOCAL, plan_var_extent(p, p->xchg_var[r]));
        if (p->hoist_var[r] >= 0) p->buf_inst[r] = plan_add_buf(p, PLAN_PLACE_LOCAL, plan_var_extent(p, p->hoist_var[r]));
    }
}

/* Every size the target indexes with 32-bit ints must fit. */
static bool sizes_fit(const pass_plan *p, diag *d)
{
    const ir_model *m = p->m;
    if (p->target.lanes == 1) return true;
    for (uint32_t i = 0; i < m->ntensors; i++) {
        int64_t n = ir_tensor_elems(m, &m->tensors[i]);
        if (n >= ((int64_t)1 << 31)) {
            diag_error(d, "%s: %s '%s' has %lld elements per step or per sequence; the %s backend indexes "
                       "them with 32-bit integers (at most 2^31 - 1)",
                       p->target.name, ir_kind_names[m->tensors[i].kind], m->tensors[i].name, (long long)n,
                       p->target.name);
            return false;
        }
    }
    return true;
}

/* =============================================================== the planner */

ssmc_status plan_make(arena *a, const ir_model *m, const pass_analysis *an, const pass_sched *sched, plan_algo algo,
                      const plan_target *target, pass_plan **out, diag *d)
{
    *out = NULL;
    /* lets read at earlier steps are rewritten before planning (passes/lag.c) */
    for (uint32_t r = 0; r < m->ninsts; r++) {
        const ir_inst *in = &m->insts[r];
        if (in->op == IR_LOAD && m->tensors[in->load.tensor].kind == IR_LET && (in->load.lag || in->load.lag_var >= 0)) {
            diag_error(d, "internal error: plan: model %s reads let '%s' at an earlier step: pass_lag has not run",
                       m->name, m->tensors[in->load.tensor].name);
            return SSMC_ERR_BACKEND;
        }
    }
    pass_plan *p = arena_alloc(a, sizeof *p);
    if (!p) goto oom;
    memset(p, 0, sizeof *p);
    p->m = m;
    p->target = *target;
    p->an = an;
    p->algo = algo;
    if (!sizes_fit(p, d)) return SSMC_ERR_UNSUPPORTED;
    if (sched)
        p->sched = *sched;
    else if (!pass_schedule(a, m, &p->sched, d))
        return SSMC_ERR_NOMEM;
    bool lanes = p->target.lanes > 1;
    /* split reductions: with lanes, when some class is splittable only so */
    if (lanes && p->target.partial_sums && p->sched.partial && partial_gain(m, p->sched.partial)) p->sched = *p->sched.partial;
    p->ncls = p->sched.nclasses;
    size_t nt = m->ntensors ? m->ntensors : 1, ns = m->nstmts ? m->nstmts : 1, ni = m->ninsts ? m->ninsts : 1;
    size_t nc = p->ncls ? (size_t)p->ncls : 1;
    p->cls = arena_array(a, nc, sizeof *p->cls);
    p->grid = arena_array(a, nc, sizeof *p->grid);
    p->fstride = arena_array(a, nt * IR_MAX_RANK, sizeof *p->fstride);
    p->lstride = arena_array(a, nt * IR_MAX_RANK, sizeof *p->lstride);
    p->elems = arena_array(a, nt, sizeof *p->elems);
    p->lelems = arena_array(a, nt, sizeof *p->lelems);
    p->place = arena_array(a, nt, sizeof *p->place);
    p->dbuf = arena_array(a, nt, sizeof *p->dbuf);
    p->buf_tensor = arena_array(a, nt, sizeof *p->buf_tensor);
    p->layout = arena_array(a, ns, sizeof *p->layout);
    p->group = arena_array(a, ns, sizeof *p->group);
    p->buf_stmt = arena_array(a, ns, sizeof *p->buf_stmt);
    p->stmt_xchg = arena_array(a, ns, sizeof *p->stmt_xchg);
    p->fuse = arena_array(a, ns, sizeof *p->fuse);
    p->fuse_sum = arena_array(a, ns, sizeof *p->fuse_sum);
    p->red_mode = arena_array(a, ni, sizeof *p->red_mode);
    p->red_dom = arena_array(a, ni, sizeof *p->red_dom);
    p->xchg_var = arena_array(a, ni, sizeof *p->xchg_var);
    p->hoist_var = arena_array(a, ni, sizeof *p->hoist_var);
    p->buf_inst = arena_array(a, ni, sizeof *p->buf_inst);
    p->ld_kind = arena_array(a, ni, sizeof *p->ld_kind);
    p->ld_pat = arena_array(a, ni, sizeof *p->ld_pat);
    p->prefetch = arena_array(a, nt, sizeof *p->prefetch);
    p->bufs = arena_array(a, nt + ns + ni, sizeof *p->bufs);
    p->part_tiles = arena_array(a, nt, sizeof *p->part_tiles);
    p->part_off = arena_array(a, nt, sizeof *p->part_off);
    if (a->failed) goto oom;
    for (uint32_t i = 0; i < m->ntensors; i++) p->buf_tensor[i] = -1;
    for (uint32_t i = 0; i < m->nstmts; i++) p->fuse[i] = p->buf_stmt[i] = -1, p->fuse_sum[i] = IR_NONE, p->group[i] = 1;
    for (uint32_t i = 0; i < m->ninsts; i++) p->xchg_var[i] = p->hoist_var[i] = p->buf_inst[i] = -1;
    p->lane_cls = p->col_cls = -1;

    /* 1: the classes */
    for (int c = 0; c < p->ncls; c++) {
        p->cls[c].n = m->dims[p->sched.class_dim[c]].value;
        /* a class splittable only with partial sums: the layout decides */
        p->cls[c].split = p->sched.splittable[c] && !(p->sched.class_partial && p->sched.class_partial[c]);
    }
    /* 2: with lanes, the layout inside a block (it fixes the column class's tile) */
    if (lanes && !plan_lane_layout(a, p)) goto oom;
    if (!lanes) p->nthreads = p->layout_threads = 1;
    /* 3, 4: the grid, the strides */
    if (!plan_grid(a, p)) goto oom;
    if (!plan_partials(a, p)) goto oom;
    plan_strides(p);
    if (lanes) {
        /* 6, 7: placement and memory */
        if (!plan_lane_placement(a, p)) goto oom;
    } else {
        /* 5: interchanged reductions, fusion, hoisting; 6, 7: memory; 8: prefetch */
        plan_loop_transforms(a, p);
        plan_loop_memory(p);
        plan_prefetch_list(p);
    }
    if (a->failed) goto oom;
    *out = p;
    return SSMC_OK;
oom:
    diag_error(d, "out of memory while planning the %s kernel", target->name);
    return SSMC_ERR_NOMEM;
}

