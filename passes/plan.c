/* plan.c: the kernel plan (see plan.h for its vocabulary), one planner for
 * every target.
 *
 * Takes a verified IR model, its schedule (passes/schedule.c: index classes,
 * which may split across items, which state updates run in place) and a target
 * description, and decides, in this order (plan_make reads top to bottom):
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

#include "passes/plan.h"

/* lanes */
#define MAX_DIST_SLOTS 64       /* slots of a distributed reduction or a pattern (unrolled) */
#define MIN_BLOCKS_PER_SEQ 16   /* smaller column tiles below this many items per sequence */
#define FLAT_MIN_THREADS 128    /* block size when some statement runs flat */
#define TEMP_MAX 32             /* flat non-in-place updates: temporaries per thread */
#define MAX_FLAT_SLOTS 8        /* flat statements with at most this many elements per thread
                                   prefetch their loads */
/* loops */
#define PREFETCH_MAX_LINES 32

const char *const plan_place_names[] = {"-", "registers", "block-local memory", "global workspace", "its tensor"};

static int pow2floor(int64_t x)
{
    int p = 1;
    while ((int64_t)p * 2 <= x && p < (1 << 30)) p *= 2;
    return p;
}

static int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

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

static bool dom_equal(plan_dom a, plan_dom b)
{
    return a.cls == b.cls && a.n == b.n && a.slots == b.slots && a.spread == b.spread;
}

/* A buffer of len floats in mem, aligned to the target's vector width; its id. */
static int add_buf(pass_plan *p, plan_place mem, int64_t len)
{
    int64_t *top = mem == PLAN_PLACE_LOCAL ? &p->local_floats : &p->global_floats;
    int64_t align = p->target.vector_floats > 1 ? p->target.vector_floats : 1;
    p->bufs[p->nbufs] = (plan_buf){.mem = mem, .off = *top, .len = len};
    *top += ceil_div(len, align) * align;
    return p->nbufs++;
}

/* =============================================================== 2. layout (lanes) */

/* ---- statistics that choose the layout ---- */

typedef struct stats {
    int *eligible;   /* [ncls] reductions over the class in statements that leave it free */
    bool *reduced;   /* [ncls] some reduction runs over it */
    bool *of_state;  /* [ncls] an axis of a state */
    bool *inner;     /* [ncls] the innermost axis of a state or an output */
} stats;

static void count_reductions(const pass_plan *p, const ir_stmt *s, ir_ref r, stats *st)
{
    const ir_model *m = p->m;
    if (r == IR_NONE) return;
    const ir_inst *in = &m->insts[r];
    if (in->op == IR_SUM || in->op == IR_RMAX) {
        for (uint32_t k = 0; k < in->red.nvars; k++) {
            int c = p->sched.var_class[m->red_vars[in->red.vars + k]];
            if (c < 0) continue;
            st->reduced[c] = true;
            bool free_in_lhs = true;
            for (int i = 0; i < m->tensors[s->tensor].rank; i++)
                if (p->sched.var_class[s->vars[i]] == c) free_in_lhs = false;
            if (free_in_lhs && in->red.nvars == 1) st->eligible[c]++;
        }
    }
    if (in->op != IR_CONST && in->op != IR_LOAD) {
        count_reductions(p, s, in->a, st);
        count_reductions(p, s, in->b, st);
    }
}

/* Steps 1 and 2: the lane class, the column class, every class's threads,
 * slots and tile. */
static void choose_layout(pass_plan *p, const stats *st, plan_tune tune)
{
    int R = -1, C = -1;
    /* R: a local class, preferring states' classes, then reductions that can be
     * distributed over it, then size */
    for (int c = 0; c < p->ncls; c++) {
        if (p->cls[c].split || p->cls[c].n < 2) continue;
        if (R < 0) {
            R = c;
            continue;
        }
        int64_t key_c[3] = {st->of_state[c], st->eligible[c] > 0, p->cls[c].n};
        int64_t key_r[3] = {st->of_state[R], st->eligible[R] > 0, p->cls[R].n};
        for (int k = 0; k < 3; k++) {
            if (key_c[k] != key_r[k]) {
                if (key_c[k] > key_r[k]) R = c;
                break;
            }
        }
    }
    if (R >= 0 && !st->of_state[R] && st->eligible[R] == 0) R = -1;
    /* C: the largest state class that no reduction runs over; on a tie, the
     * innermost axis of a state or output (contiguous loads), then a splittable one */
    for (int c = 0; c < p->ncls; c++) {
        if (c == R || !st->of_state[c] || st->reduced[c] || p->cls[c].n < 2) continue;
        if (C < 0) {
            C = c;
            continue;
        }
        int64_t key_c[3] = {p->cls[c].n, st->inner[c], p->cls[c].split};
        int64_t key_r[3] = {p->cls[C].n, st->inner[C], p->cls[C].split};
        for (int k = 0; k < 3; k++) {
            if (key_c[k] != key_r[k]) {
                if (key_c[k] > key_r[k]) C = c;
                break;
            }
        }
    }
    for (int c = 0; c < p->ncls; c++) {
        plan_class *k = &p->cls[c];
        k->threads = 1;
        k->tile = k->split ? 1 : k->n;
        k->slots = (int)(k->split ? 1 : k->n);
        k->lane = true;
        k->stride = 1;
    }
    int W = p->target.lanes, lanes = W, rR = 1;
    if (R >= 0) {
        plan_class *k = &p->cls[R];
        int64_t q = k->n / tune.lane_slots;
        k->threads = pow2floor(q < 1 ? 1 : q > W ? W : q);
        k->slots = (int)ceil_div(k->n, k->threads);
        k->stride = 1;
        lanes = W / k->threads;
        rR = k->slots;
    }
    if (C >= 0) {
        plan_class *k = &p->cls[C];
        int r = tune.state_slots / rR;
        r = r < 1 ? 1 : pow2floor(r);
        int w;
        if (k->split) {
            w = (int)ceil_div(k->n, (int64_t)lanes * r);
            w = w > tune.warps ? tune.warps : pow2floor(w);
            /* small columns: fewer slots, then fewer lanes, rather than idle threads */
            while (r > 1 && (int64_t)lanes * w * r >= 2 * k->n) r /= 2;
            while (lanes > 1 && (int64_t)lanes * w * r >= 2 * k->n) lanes /= 2;
            /* few blocks per sequence: smaller tiles (fewer warps, then fewer slots) */
            int64_t others = 1;
            for (int c = 0; c < p->ncls; c++)
                if (c != C && p->cls[c].split) others *= p->cls[c].n;
            while (others * ceil_div(k->n, (int64_t)lanes * w * r) < MIN_BLOCKS_PER_SEQ && (w > 1 || r > 1)) {
                if (w > 1) w /= 2;
                else r /= 2;
            }
            k->threads = lanes * w;
            k->slots = r;
            k->tile = (int64_t)k->threads * r;
        } else {
            while (r > 1 && (int64_t)lanes * r >= 2 * k->n) r /= 2;
            while (lanes > 1 && (int64_t)lanes * r >= 2 * k->n) lanes /= 2;
            int64_t wn = ceil_div(k->n, (int64_t)lanes * r);
            if (wn > 8) {
                r = (int)ceil_div(k->n, (int64_t)lanes * 8);
                wn = ceil_div(k->n, (int64_t)lanes * r);
            }
            w = wn <= 1 ? 1 : wn <= 2 ? 2 : wn <= 4 ? 4 : 8;
            k->threads = lanes * w;
            k->slots = (int)ceil_div(k->n, k->threads);
            k->tile = k->n;
        }
        k->stride = R >= 0 ? p->cls[R].threads : 1;
        k->lane = k->stride * k->threads <= W;
    }
    for (int c = 0; c < p->ncls; c++) p->cls[c].ntiles = ceil_div(p->cls[c].n, p->cls[c].tile);
    p->lane_cls = R;
    p->col_cls = C;
    p->layout_threads = (R >= 0 ? p->cls[R].threads : 1) * (C >= 0 ? p->cls[C].threads : 1);
}

/* =============================================================== 6. placement (lanes) */

typedef struct walker {
    pass_plan *p;
    const ir_stmt *s;
    bool layout, per_step, collect;
    bool *bound;      /* [nvars] */
    plan_dom *dom;    /* [nvars] */
    bool *busy;       /* [ncls] a class whose coordinate is taken in this context */
    bool *unaligned;  /* [ntensors] some read is not by the element's owner */
    bool *reads_reg;  /* set when a register-placed tensor is read */
    plan_pat *pats;
    size_t npats, cpats;
    bool oom;
} walker;

/* The pattern with this key, added when new. Returns -1 when it would take too
 * many registers. */
static int pattern_of(walker *w, const ir_inst *in)
{
    const pass_plan *p = w->p;
    const ir_model *m = p->m;
    const ir_tensor *t = &m->tensors[in->load.tensor];
    plan_pat k = {.tensor = in->load.tensor, .lag = in->load.lag};
    int64_t regs = 1;
    /* the innermost axis's domain goes last, so vector loads fill consecutive slots */
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < t->rank; i++) {
            const ir_index *ix = &m->ix[in->load.ix + (uint32_t)i];
            bool inner = i == t->rank - 1;
            if (pass == 0) {
                k.kind[i] = ix->kind;
                k.k[i] = ix->k;
                k.dom_of[i] = -1;
                k.pos[i] = -1;
            }
            if (ix->kind == IR_IX_CONST || (pass == 0) == inner) continue;
            plan_dom d = w->dom[ix->var];
            if (d.cls < 0)
                for (int j = 0; j < m->tensors[w->s->tensor].rank; j++)
                    if (w->s->vars[j] == ix->var) k.pos[i] = j;
            int found = -1;
            for (int j = 0; j < k.ndoms; j++)
                if (dom_equal(k.doms[j], d)) found = j;
            if (found < 0) {
                found = k.ndoms;
                k.doms[k.ndoms++] = d;
                regs *= d.slots;
            }
            k.dom_of[i] = found;
        }
    }
    if (regs > MAX_DIST_SLOTS) return -1;
    for (size_t i = 0; i < w->npats; i++) {
        const plan_pat *q = &w->pats[i];
        if (q->tensor != k.tensor || q->lag != k.lag || q->ndoms != k.ndoms) continue;
        bool same = true;
        for (int j = 0; same && j < t->rank; j++)
            same = q->kind[j] == k.kind[j] && q->k[j] == k.k[j] && q->pos[j] == k.pos[j] &&
                   (q->dom_of[j] < 0 ? k.dom_of[j] < 0
                                     : k.dom_of[j] >= 0 && dom_equal(q->doms[q->dom_of[j]], k.doms[k.dom_of[j]]));
        if (same) return (int)i;
    }
    if (!VEC_PUSH(w->pats, w->npats, w->cpats, k)) {
        w->oom = true;
        return -1;
    }
    return (int)w->npats - 1;
}

static void walk(walker *w, ir_ref r);

static void walk_load(walker *w, ir_ref r)
{
    pass_plan *p = w->p;
    const ir_model *m = p->m;
    const ir_inst *in = &m->insts[r];
    const ir_tensor *t = &m->tensors[in->load.tensor];
    if (plan_tracked(t)) {
        bool aligned = w->layout;
        for (int i = 0; aligned && i < t->rank; i++) {
            const ir_index *ix = &m->ix[in->load.ix + (uint32_t)i];
            aligned = ix->kind == IR_IX_VAR && w->bound[ix->var] && !w->dom[ix->var].spread &&
                      w->dom[ix->var].cls == plan_axis_class(p, in->load.tensor, i);
        }
        if (!aligned) w->unaligned[in->load.tensor] = true;
        if (p->place[in->load.tensor] == PLAN_PLACE_REG) *w->reads_reg = true;
        return;
    }
    p->ld_kind[r] = PLAN_LD_INLINE;
    if (!w->collect || !w->per_step || in->load.lag_var >= 0) return;
    for (int i = 0; i < t->rank; i++) {
        const ir_index *ix = &m->ix[in->load.ix + (uint32_t)i];
        if (ix->kind != IR_IX_CONST && !w->bound[ix->var]) return;
    }
    int id = pattern_of(w, in);
    if (id >= 0) {
        p->ld_kind[r] = PLAN_LD_PAT;
        p->ld_pat[r] = id;
    }
}

static void walk_reduction(walker *w, ir_ref r)
{
    pass_plan *p = w->p;
    const ir_model *m = p->m;
    const ir_inst *in = &m->insts[r];
    p->red_mode[r] = PLAN_RED_SEQ;
    plan_dom d = {0};
    int v = (int)m->red_vars[in->red.vars];
    if (w->layout && in->red.nvars == 1) {
        int c = p->sched.var_class[v];
        int R = p->lane_cls;
        if (c >= 0 && !w->busy[c] && p->cls[c].lane && p->cls[c].slots <= MAX_DIST_SLOTS) {
            d = plan_class_dom(p, c);
            p->red_mode[r] = PLAN_RED_DIST;
        } else if (c < 0 && R >= 0 && !w->busy[R] && p->cls[R].lane) {
            int64_t n = m->dims[m->vars[v].dim].value;
            d = n == p->cls[R].tile ? plan_class_dom(p, R)
                                    : (plan_dom){.cls = R, .n = n, .slots = (int)ceil_div(n, p->cls[R].threads), .spread = true};
            if (d.slots <= MAX_DIST_SLOTS) p->red_mode[r] = PLAN_RED_DIST;
        }
    }
    if (p->red_mode[r] != PLAN_RED_DIST) {
        walk(w, in->a);
        return;
    }
    p->red_dom[r] = d;
    w->bound[v] = true;
    w->dom[v] = d;
    w->busy[d.cls] = true;
    walk(w, in->a);
    w->busy[d.cls] = false;
    w->bound[v] = false;
}

static void walk(walker *w, ir_ref r)
{
    if (r == IR_NONE) return;
    const ir_inst *in = &w->p->m->insts[r];
    switch (in->op) {
    case IR_CONST: return;
    case IR_LOAD: walk_load(w, r); return;
    case IR_SUM:
    case IR_RMAX: walk_reduction(w, r); return;
    default:
        walk(w, in->a);
        walk(w, in->b);
    }
}

/* Walks statement si; returns whether it reads a register-placed tensor. */
static bool walk_stmt(walker *w, uint32_t si)
{
    pass_plan *p = w->p;
    const ir_model *m = p->m;
    const ir_stmt *s = &m->stmts[si];
    const ir_tensor *t = &m->tensors[s->tensor];
    bool reads_reg = false;
    w->s = s;
    w->layout = p->layout[si];
    w->per_step = s->per_step;
    w->reads_reg = &reads_reg;
    memset(w->bound, 0, m->nvars * sizeof *w->bound);
    memset(w->busy, 0, (size_t)p->ncls * sizeof *w->busy);
    if (w->layout) {
        for (int i = 0; i < t->rank; i++) {
            int c = plan_axis_class(p, s->tensor, i);
            w->bound[s->vars[i]] = true;
            w->dom[s->vars[i]] = plan_class_dom(p, c);
            w->busy[c] = true;
        }
    } else if (w->collect && s->per_step) {
        /* flat: thread tid's m-th element is tid + m * nthreads; its loads
         * that depend on the element only can be prefetched too */
        int64_t n = plan_local_elems(p, s->tensor), per = ceil_div(n, p->nthreads);
        plan_dom d = {.cls = PLAN_FLAT_DOM(si), .n = n, .slots = (int)per};
        for (int i = 0; per <= MAX_FLAT_SLOTS && i < t->rank; i++) {
            w->bound[s->vars[i]] = true;
            w->dom[s->vars[i]] = d;
        }
    }
    walk(w, s->root);
    return reads_reg;
}

/* Some thread coordinate the tensor's elements do not depend on. */
static bool replicated(const pass_plan *p, int tensor)
{
    const ir_tensor *t = &p->m->tensors[tensor];
    for (int c = 0; c < p->ncls; c++) {
        if (p->cls[c].threads == 1) continue;
        bool has = false;
        for (int i = 0; i < t->rank; i++) has |= plan_axis_class(p, tensor, i) == c;
        if (!has) return true;
    }
    return false;
}

/* Runs an operation of at least cost `at` (op table) and no reduction (which
 * would leave a flat statement one thread's sequential loop). */
static bool costly_walk(const ir_model *m, ir_ref r, op_cost at, bool *fn)
{
    if (r == IR_NONE) return true;
    const ir_inst *in = &m->insts[r];
    switch (in->op) {
    case IR_SUM:
    case IR_RMAX: return false;
    default: *fn |= op_table[in->op].cost >= at; break;
    }
    if (in->op == IR_CONST || in->op == IR_LOAD) return true;
    return costly_walk(m, in->a, at, fn) && costly_walk(m, in->b, at, fn);
}

static bool costly(const ir_model *m, ir_ref r, op_cost at)
{
    bool fn = false;
    return costly_walk(m, r, at, &fn) && fn;
}

static bool distinct_classes(const pass_plan *p, int tensor)
{
    const ir_tensor *t = &p->m->tensors[tensor];
    for (int i = 0; i < t->rank; i++)
        for (int j = 0; j < i; j++)
            if (plan_axis_class(p, tensor, i) == plan_axis_class(p, tensor, j)) return false;
    return true;
}

/* =============================================================== 5. loop transforms (loops) */

/* Largest element count of a tensor read in the tree of r whose last index is
 * variable v (or, with `red`, one of the reduction's own variables). */
static int64_t weight_last(const pass_plan *p, ir_ref r, int v, const ir_inst *red)
{
    const ir_model *m = p->m;
    if (r == IR_NONE) return 0;
    const ir_inst *in = &m->insts[r];
    if (in->op == IR_LOAD) {
        const ir_tensor *t = &m->tensors[in->load.tensor];
        if (t->rank < 2) return 0;
        const ir_index *ix = &m->ix[in->load.ix + (uint32_t)t->rank - 1];
        if (ix->kind != IR_IX_VAR) return 0;
        bool hit = false;
        if (red) {
            for (uint32_t i = 0; i < red->red.nvars; i++) hit |= (int)m->red_vars[red->red.vars + i] == ix->var;
        } else {
            hit = ix->var == v;
        }
        return hit ? p->elems[in->load.tensor] : 0;
    }
    int64_t a = weight_last(p, in->a, v, red), b = weight_last(p, in->b, v, red);
    return a > b ? a : b;
}

/* Marks the SUMs of statement s that are not inside another reduction and
 * whose big operand is contiguous along s's last variable v. */
static void mark_xchg(pass_plan *p, uint32_t si, ir_ref r, int v)
{
    const ir_model *m = p->m;
    if (r == IR_NONE) return;
    const ir_inst *in = &m->insts[r];
    if (in->op == IR_RMAX) return;
    if (in->op == IR_SUM) {
        if (weight_last(p, in->a, v, NULL) > weight_last(p, in->a, v, in)) {
            p->xchg_var[r] = v;
            p->stmt_xchg[si] = true;
        }
        return;
    }
    mark_xchg(p, si, in->a, v);
    mark_xchg(p, si, in->b, v);
}

/* ---- fusion of a state update U with an adjacent readout R (before or after it)
 * that reduces over the rest of U's loop nest: mamba2's y[p] = sum(n: S[p,n] C[n])
 * after S[p,n] = ..., or o[j] = sum(i: q[i] S[i,j]) accumulated along j. R's
 * loops (its free loops, then the reduction's, or with an interchanged sum the
 * reduction's before its last free loop) must pair up, class by class, with U's
 * loops, and R may read U's state only inside that reduction and only at the
 * element U is at; U must be in place, without reductions, and not read R. */

static int nreductions(const ir_model *m, ir_ref r, ir_ref *last)
{
    if (r == IR_NONE) return 0;
    const ir_inst *in = &m->insts[r];
    if (in->op == IR_SUM || in->op == IR_RMAX) {
        *last = r;
        return 1 + nreductions(m, in->a, last);
    }
    if (in->op == IR_LOAD || in->op == IR_CONST) return 0;
    return nreductions(m, in->a, last) + nreductions(m, in->b, last);
}

static bool reads_tensor(const ir_model *m, ir_ref r, int ti)
{
    if (r == IR_NONE) return false;
    const ir_inst *in = &m->insts[r];
    if (in->op == IR_LOAD) return in->load.tensor == ti;
    if (in->op == IR_CONST) return false;
    return reads_tensor(m, in->a, ti) || reads_tensor(m, in->b, ti);
}

/* Every read of U's state in the tree of r is at U's current element, given
 * map (R's variable -> U's variable); none at all outside `sum`. */
static bool reads_at_element(const pass_plan *p, ir_ref r, const ir_stmt *u, const int *map, ir_ref sum, bool inside)
{
    const ir_model *m = p->m;
    if (r == IR_NONE) return true;
    const ir_inst *in = &m->insts[r];
    if (in->op == IR_CONST) return true;
    if (in->op != IR_LOAD)
        return reads_at_element(p, in->a, u, map, sum, inside || r == sum) &&
               reads_at_element(p, in->b, u, map, sum, inside || r == sum);
    if (in->load.tensor != u->tensor) return true;
    if (!inside) return false;
    const ir_tensor *t = &m->tensors[u->tensor];
    for (int i = 0; i < t->rank; i++) {
        const ir_index *ix = &m->ix[in->load.ix + (uint32_t)i];
        if (ix->kind != IR_IX_VAR) return false;
        int uv = u->vars[i];
        if (plan_var_fixed(p, ix->var) ? !plan_var_fixed(p, uv) || p->sched.var_class[ix->var] != p->sched.var_class[uv]
                                  : map[ix->var] != uv)
            return false;
    }
    return true;
}

/* The loop variables of R in emission order; returns their number. */
int plan_readout_loops(const pass_plan *p, const ir_stmt *r, ir_ref sum, bool xchg, int *out)
{
    const ir_model *m = p->m;
    const ir_tensor *t = &m->tensors[r->tensor];
    int n = 0, last = -1;
    for (int i = 0; i < t->rank; i++) {
        if (plan_var_fixed(p, r->vars[i])) continue;
        if (xchg && i == t->rank - 1)
            last = r->vars[i];
        else
            out[n++] = r->vars[i];
    }
    const ir_inst *in = &m->insts[sum];
    for (uint32_t i = 0; i < in->red.nvars && n < 2 * IR_MAX_RANK; i++) out[n++] = (int)m->red_vars[in->red.vars + i];
    if (last >= 0 && n < 2 * IR_MAX_RANK) out[n++] = last;
    return n;
}

static bool try_fuse(pass_plan *p, arena *a, uint32_t ui, uint32_t ri)
{
    const ir_model *m = p->m;
    const ir_stmt *u = &m->stmts[ui], *r = &m->stmts[ri];
    const ir_tensor *rt = &m->tensors[r->tensor];
    if (!r->per_step || (rt->kind != IR_OUTPUT && rt->kind != IR_LET) || p->fuse[ri] != -1) return false;
    if (reads_tensor(m, u->root, r->tensor)) return false;
    ir_ref sum = IR_NONE;
    if (nreductions(m, r->root, &sum) != 1 || m->insts[sum].op != IR_SUM) return false;
    int rl[2 * IR_MAX_RANK], ul[IR_MAX_RANK];
    int nr = plan_readout_loops(p, r, sum, p->xchg_var[sum] >= 0, rl), nu = 0;
    for (int i = 0; i < m->tensors[u->tensor].rank; i++)
        if (!plan_var_fixed(p, u->vars[i])) ul[nu++] = u->vars[i];
    if (nr != nu || nu == 0) return false;
    int *map = arena_array(a, m->nvars + 1, sizeof *map);
    if (!map) return false;
    for (uint32_t v = 0; v < m->nvars; v++) map[v] = -1;
    for (int i = 0; i < nu; i++) {
        int k = p->sched.var_class[rl[i]];
        if (k < 0 || k != p->sched.var_class[ul[i]]) return false;
        map[rl[i]] = ul[i];
    }
    if (!reads_at_element(p, r->root, u, map, sum, false)) return false;
    p->fuse[ui] = (int)ri;
    p->fuse[ri] = -2;
    p->fuse_sum[ui] = sum;
    return true;
}

static void plan_fusion(pass_plan *p, arena *a)
{
    const ir_model *m = p->m;
    for (uint32_t si = 0; si < m->nstmts; si++) p->fuse[si] = -1;
    for (uint32_t si = 0; si < m->nstmts; si++) {
        const ir_stmt *u = &m->stmts[si];
        ir_ref none;
        if (!u->per_step || m->tensors[u->tensor].kind != IR_STATE || !p->sched.inplace[si] || p->fuse[si] != -1 ||
            nreductions(m, u->root, &none) != 0)
            continue;
        if (si + 1 < m->nstmts && try_fuse(p, a, si, si + 1)) continue;
        if (si > 0) try_fuse(p, a, si, si - 1);
    }
}

/* ---- hoisting: exp(lg[t,h,i]) in S[h,i,j] = exp(lg[t,h,i]) * S[h,i,j] + ...
 * would be computed, scalar, once per i inside the i loop; computed before the
 * nest for every i into a small buffer, it vectorises along i. A subtree is
 * hoisted when it holds an expensive operation, no reduction, and reads the
 * statement's loop variables through exactly one of them, not the innermost. */

#define HOIST_OTHER (1u << IR_MAX_RANK)      /* a variable that is not the statement's */
#define HOIST_COSTLY (1u << (IR_MAX_RANK + 1)) /* an expensive operation */
#define HOIST_NEVER (1u << (IR_MAX_RANK + 2))  /* a reduction */

/* Variables the item fixes are constants here. */
static unsigned var_bit(const pass_plan *p, const ir_stmt *s, int rank, int v)
{
    if (plan_var_fixed(p, v)) return 0;
    for (int i = 0; i < rank; i++)
        if (s->vars[i] == v) return 1u << i;
    return HOIST_OTHER;
}

/* Bit i: the tree reads statement variable vars[i]; then the flags above. */
static unsigned hoist_scan(const pass_plan *p, const ir_stmt *s, ir_ref r)
{
    const ir_model *m = p->m;
    if (r == IR_NONE) return 0;
    const ir_inst *in = &m->insts[r];
    int rank = m->tensors[s->tensor].rank;
    switch ((ir_op)in->op) {
    case IR_CONST: return 0;
    case IR_LOAD: {
        unsigned f = in->load.lag_var >= 0 ? var_bit(p, s, rank, in->load.lag_var) : 0;
        const ir_tensor *t = &m->tensors[in->load.tensor];
        for (int i = 0; i < t->rank; i++) {
            const ir_index *ix = &m->ix[in->load.ix + (uint32_t)i];
            if (ix->kind != IR_IX_CONST) f |= var_bit(p, s, rank, ix->var);
        }
        return f;
    }
    case IR_SUM:
    case IR_RMAX: return HOIST_NEVER;
    default:
        return (op_table[in->op].cost >= p->target.hoist_cost ? HOIST_COSTLY : 0) | hoist_scan(p, s, in->a) | hoist_scan(p, s, in->b);
    }
}

static void mark_hoists(pass_plan *p, const ir_stmt *s, ir_ref r, int innermost, bool parent)
{
    const ir_model *m = p->m;
    if (r == IR_NONE) return;
    const ir_inst *in = &m->insts[r];
    if (in->op == IR_SUM || in->op == IR_RMAX || in->op == IR_LOAD || in->op == IR_CONST) return;
    unsigned f = hoist_scan(p, s, r), vars = f & ((1u << IR_MAX_RANK) - 1);
    bool one = vars && !(vars & (vars - 1));
    int pos = one ? __builtin_ctz(vars) : -1;
    bool ok = (f & HOIST_COSTLY) && !(f & (HOIST_OTHER | HOIST_NEVER)) && one && pos != innermost;
    if (ok && !parent) p->hoist_var[r] = s->vars[pos];
    mark_hoists(p, s, in->a, innermost, ok || parent);
    mark_hoists(p, s, in->b, innermost, ok || parent);
}

static void plan_hoists(pass_plan *p)
{
    const ir_model *m = p->m;
    for (uint32_t r = 0; r < m->ninsts; r++) p->hoist_var[r] = -1;
    for (uint32_t si = 0; si < m->nstmts; si++) {
        const ir_stmt *s = &m->stmts[si];
        const ir_tensor *t = &m->tensors[s->tensor];
        if (!s->per_step || p->fuse[si] == -2 || p->stmt_xchg[si]) continue;
        int innermost = -1;
        for (int i = 0; i < t->rank; i++)
            if (!plan_var_fixed(p, s->vars[i])) innermost = i;
        if (innermost > 0) mark_hoists(p, s, s->root, innermost, false);
    }
}

/* =============================================================== 8. prefetch (loops) */

/* The index class that axis ax of input ti follows in every read of it (so an
 * item reads only its tile of that axis), or -1 (the whole axis). */
static int input_axis_class(const pass_plan *p, int ti, int ax)
{
    const ir_model *m = p->m;
    int k = -2;
    for (uint32_t r = 0; r < m->ninsts; r++) {
        const ir_inst *in = &m->insts[r];
        if (in->op != IR_LOAD || in->load.tensor != ti) continue;
        const ir_index *ix = &m->ix[in->load.ix + (uint32_t)ax];
        int kr = ix->kind == IR_IX_VAR ? p->sched.var_class[ix->var] : -1;
        if (k != -2 && kr != k) return -1;
        k = kr;
    }
    return k < 0 ? -1 : k;
}

/* Whether per-step input or output ti gets hints: its slice in an item (cls[i]:
 * the tiled class axis i follows, or -1 for the whole axis) spans *span + 1
 * floats, at most PREFETCH_MAX_LINES lines. A full tile's extent is assumed:
 * the last tile of a class that does not divide evenly is shorter, and hints
 * past it would touch the next item's lines, which for an output (a write
 * hint) another thread may own; so such an output gets none. */
static bool prefetched(const pass_plan *p, int ti, int cls[IR_MAX_RANK], int64_t *span)
{
    const ir_model *m = p->m;
    const ir_tensor *t = &m->tensors[ti];
    if (!t->per_step || (t->kind != IR_INPUT && t->kind != IR_OUTPUT)) return false;
    bool uneven = false;
    *span = 0;
    for (int i = 0; i < t->rank; i++) {
        int k = t->kind == IR_INPUT ? input_axis_class(p, ti, i) : plan_axis_class(p, ti, i);
        cls[i] = k >= 0 && p->cls[k].ntiles > 1 ? k : -1;
        int64_t dim = m->dims[t->dims[i]].value;
        *span += ((cls[i] >= 0 ? p->cls[k].tile : dim) - 1) * p->fstride[ti * IR_MAX_RANK + i];
        uneven |= cls[i] >= 0 && dim % p->cls[k].tile != 0;
    }
    return *span / PLAN_LINE_FLOATS + 2 <= PREFETCH_MAX_LINES && !(t->kind == IR_OUTPUT && uneven);
}


static void plan_prefetch_list(pass_plan *p)
{
    const ir_model *m = p->m;
    for (uint32_t ti = 0; ti < m->ntensors; ti++) {
        plan_prefetch *f = &p->prefetch[p->nprefetch];
        if (!prefetched(p, (int)ti, f->cls, &f->span)) continue;
        f->tensor = (int)ti;
        p->nprefetch++;
    }
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
        if (t->kind == IR_LET || copy) p->buf_tensor[ti] = add_buf(p, PLAN_PLACE_LOCAL, p->lelems[ti]);
    }
    for (uint32_t r = 0; r < m->ninsts; r++) {
        if (p->xchg_var[r] >= 0) p->buf_inst[r] = add_buf(p, PLAN_PLACE_LOCAL, plan_var_extent(p, p->xchg_var[r]));
        if (p->hoist_var[r] >= 0) p->buf_inst[r] = add_buf(p, PLAN_PLACE_LOCAL, plan_var_extent(p, p->hoist_var[r]));
    }
}

/* =============================================================== 6 and 7 for lanes */

static bool plan_lane_placement(arena *a, pass_plan *p, walker *w)
{
    const ir_model *m = p->m;
    plan_tune tn = p->target.tune;
    /* 6a: every statement follows the layout unless its left side has two axes
     * of one class (no thread owns such an element) */
    for (uint32_t si = 0; si < m->nstmts; si++) p->layout[si] = distinct_classes(p, m->stmts[si].tensor);
    /* 6b: registers unless something forbids them */
    for (uint32_t ti = 0; ti < m->ntensors; ti++) p->place[ti] = plan_tracked(&m->tensors[ti]) ? PLAN_PLACE_REG : PLAN_PLACE_NONE;
    for (uint32_t si = 0; si < m->nstmts; si++) walk_stmt(w, si);
    for (uint32_t ti = 0; ti < m->ntensors; ti++) {
        const ir_tensor *t = &m->tensors[ti];
        if (p->place[ti] != PLAN_PLACE_REG) continue;
        bool reg = !w->unaligned[ti] && distinct_classes(p, (int)ti) && (t->def < 0 || p->layout[t->def]) &&
                   (t->kind != IR_STATE || t->def < 0 || p->sched.inplace[t->def]);
        if (!reg) p->place[ti] = PLAN_PLACE_LOCAL;
    }
    for (;;) { /* over budget: the largest let leaves the registers, then the largest state */
        int64_t total = 0, most = 0;
        int worst = -1;
        bool worst_state = true;
        for (uint32_t ti = 0; ti < m->ntensors; ti++) {
            if (p->place[ti] != PLAN_PLACE_REG) continue;
            int64_t n = plan_reg_slots(p, (int)ti);
            bool state = m->tensors[ti].kind == IR_STATE;
            total += n;
            if (worst < 0 || (worst_state && !state) || (state == worst_state && n > most)) {
                most = n;
                worst = (int)ti;
                worst_state = state;
            }
        }
        if (total <= p->target.max_reg_slots || worst < 0) break;
        p->place[worst] = PLAN_PLACE_LOCAL;
    }
    /* 6c: a per-step let that costs transcendental functions and that several
     * threads would each compute (it lacks a class they differ in) is computed
     * once by the whole block into block-local memory instead: each thread
     * evaluates fewer elements, and one barrier per step (two buffers) hands
     * them over */
    for (uint32_t si = 0; tn.share_lets == 1 && si < m->nstmts; si++) {
        const ir_stmt *s = &m->stmts[si];
        int ti = s->tensor;
        if (!s->per_step || m->tensors[ti].kind != IR_LET || p->place[ti] != PLAN_PLACE_REG) continue;
        if (plan_reg_slots(p, ti) < 2 || !replicated(p, ti) || !costly(m, s->root, p->target.share_cost) ||
            walk_stmt(w, si))
            continue;
        p->place[ti] = PLAN_PLACE_LOCAL;
        p->dbuf[ti] = true;
    }
    /* 6a again: a statement that neither reads nor writes registers runs flat,
     * with every thread of the block on its own domain */
    bool any_flat = false;
    for (uint32_t si = 0; si < m->nstmts; si++) {
        const ir_stmt *s = &m->stmts[si];
        if (p->layout[si] && p->place[s->tensor] != PLAN_PLACE_REG && !walk_stmt(w, si)) p->layout[si] = false;
        any_flat |= !p->layout[si];
    }
    /* threads: at least a warp; enough for flat statements and memory loops */
    bool any_mem = false;
    for (uint32_t ti = 0; ti < m->ntensors; ti++) any_mem |= p->place[ti] == PLAN_PLACE_LOCAL;
    int want = any_flat || any_mem ? FLAT_MIN_THREADS : p->target.lanes;
    p->nthreads = p->layout_threads;
    while (p->nthreads < want) p->nthreads *= 2;

    /* 6d: the final walk fixes every reduction's mode and the load patterns */
    w->collect = true;
    for (uint32_t si = 0; si < m->nstmts; si++) walk_stmt(w, si);
    if (w->oom) return false;
    p->npats = (int)w->npats;
    p->pats = arena_array(a, w->npats ? w->npats : 1, sizeof *p->pats);
    if (!p->pats) return false;
    if (w->npats) memcpy(p->pats, w->pats, w->npats * sizeof *p->pats);

    /* 7: block-local memory first, the global workspace past the budget; then
     * one scratch area shared by the flat non-in-place updates */
    for (uint32_t ti = 0; ti < m->ntensors; ti++) {
        if (p->place[ti] != PLAN_PLACE_LOCAL) continue;
        int64_t n = plan_local_elems(p, (int)ti) * (p->dbuf[ti] ? 2 : 1);
        if (p->local_floats + n > p->target.local_floats) p->place[ti] = PLAN_PLACE_GLOBAL;
        p->buf_tensor[ti] = add_buf(p, p->place[ti], n);
    }
    int64_t scratch = 0;
    for (uint32_t si = 0; si < m->nstmts; si++) {
        const ir_stmt *s = &m->stmts[si];
        if (p->layout[si] || m->tensors[s->tensor].kind != IR_STATE || p->sched.inplace[si]) continue;
        int64_t n = plan_local_elems(p, s->tensor);
        if (ceil_div(n, p->nthreads) > TEMP_MAX) {
            p->buf_stmt[si] = -2;
            if (n > scratch) scratch = n;
        }
    }
    if (scratch) {
        int b = add_buf(p, p->local_floats + scratch <= p->target.local_floats ? PLAN_PLACE_LOCAL : PLAN_PLACE_GLOBAL,
                        scratch);
        for (uint32_t si = 0; si < m->nstmts; si++)
            if (p->buf_stmt[si] == -2) p->buf_stmt[si] = b;
    }
    return true;
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
    p->ncls = p->sched.nclasses;
    size_t nt = m->ntensors ? m->ntensors : 1, ns = m->nstmts ? m->nstmts : 1, ni = m->ninsts ? m->ninsts : 1;
    size_t nc = p->ncls ? (size_t)p->ncls : 1, nv = m->nvars ? m->nvars : 1;
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
    if (a->failed) goto oom;
    for (uint32_t i = 0; i < m->ntensors; i++) p->buf_tensor[i] = -1;
    for (uint32_t i = 0; i < m->nstmts; i++) p->fuse[i] = p->buf_stmt[i] = -1, p->fuse_sum[i] = IR_NONE;
    for (uint32_t i = 0; i < m->ninsts; i++) p->xchg_var[i] = p->hoist_var[i] = p->buf_inst[i] = -1;
    p->lane_cls = p->col_cls = -1;

    /* 1: the classes */
    for (int c = 0; c < p->ncls; c++) {
        p->cls[c].n = m->dims[p->sched.class_dim[c]].value;
        p->cls[c].split = p->sched.splittable[c];
    }
    if (p->target.lanes > 1) {
        /* 2: the layout inside a block */
        stats st = {arena_array(a, nc, sizeof(int)), arena_array(a, nc, sizeof(bool)), arena_array(a, nc, sizeof(bool)),
                    arena_array(a, nc, sizeof(bool))};
        walker w = {.p = p,
                    .bound = arena_array(a, nv, sizeof(bool)),
                    .dom = arena_array(a, nv, sizeof(plan_dom)),
                    .busy = arena_array(a, nc, sizeof(bool)),
                    .unaligned = arena_array(a, nt, sizeof(bool))};
        if (a->failed) goto oom;
        for (uint32_t ti = 0; ti < m->ntensors; ti++) {
            const ir_tensor *t = &m->tensors[ti];
            if (t->kind != IR_STATE && t->kind != IR_OUTPUT) continue;
            for (int i = 0; i < t->rank; i++) {
                if (t->kind == IR_STATE) st.of_state[plan_axis_class(p, (int)ti, i)] = true;
                st.inner[plan_axis_class(p, (int)ti, i)] |= i == t->rank - 1;
            }
        }
        for (uint32_t si = 0; si < m->nstmts; si++) count_reductions(p, &m->stmts[si], m->stmts[si].root, &st);
        choose_layout(p, &st, p->target.tune);
        /* 3, 4 */
        if (!plan_grid(a, p)) goto oom;
        plan_strides(p);
        /* 6, 7 */
        bool ok = plan_lane_placement(a, p, &w);
        free(w.pats);
        if (!ok) goto oom;
    } else {
        p->nthreads = p->layout_threads = 1;
        /* 3, 4 */
        if (!plan_grid(a, p)) goto oom;
        plan_strides(p);
        /* 5: interchanged reductions, fusion, hoisting */
        for (uint32_t si = 0; si < m->nstmts; si++) {
            const ir_stmt *s = &m->stmts[si];
            const ir_tensor *t = &m->tensors[s->tensor];
            if (t->rank == 0) continue;
            int v = s->vars[t->rank - 1];
            if (plan_var_fixed(p, v) || plan_var_extent(p, v) < 2) continue;
            mark_xchg(p, si, s->root, v);
        }
        plan_fusion(p, a);
        plan_hoists(p);
        /* 6, 7 */
        plan_loop_memory(p);
        /* 8 */
        plan_prefetch_list(p);
    }
    if (a->failed) goto oom;
    *out = p;
    return SSMC_OK;
oom:
    diag_error(d, "out of memory while planning the %s kernel", target->name);
    return SSMC_ERR_NOMEM;
}

/* =============================================================== descriptions */

static void describe_sums(strbuf *out, const pass_plan *p, ir_ref r)
{
    if (r == IR_NONE) return;
    const ir_inst *in = &p->m->insts[r];
    if (in->op == IR_SUM || in->op == IR_RMAX) {
        sb_printf(out, "; %s(", in->op == IR_SUM ? "sum" : "max");
        for (uint32_t i = 0; i < in->red.nvars; i++)
            sb_printf(out, "%s%s", i ? "," : "", p->m->vars[p->m->red_vars[in->red.vars + i]].name);
        if (p->xchg_var[r] >= 0)
            sb_printf(out, ") accumulated into a vector along %s", p->m->vars[p->xchg_var[r]].name);
        else
            sb_puts(out, ") an inner loop");
    }
    if (in->op != IR_LOAD && in->op != IR_CONST) {
        describe_sums(out, p, in->a);
        describe_sums(out, p, in->b);
    }
}

static void describe_hoists(strbuf *out, const pass_plan *p, ir_ref r)
{
    if (r == IR_NONE) return;
    const ir_inst *in = &p->m->insts[r];
    if (p->hoist_var[r] >= 0) {
        sb_puts(out, "; ");
        ir_print_expr(out, p->m, r);
        sb_printf(out, " computed for all %s before the loops", p->m->vars[p->hoist_var[r]].name);
        return;
    }
    if (in->op == IR_LOAD || in->op == IR_CONST || in->op == IR_SUM || in->op == IR_RMAX) return;
    describe_hoists(out, p, in->a);
    describe_hoists(out, p, in->b);
}

/* The loops of a plan (targets with loops), as comment lines: the grid and
 * each statement's loops (they head --emit=llvm). */
void plan_describe_loops(strbuf *out, const pass_plan *p)
{
    const ir_model *m = p->m;
    sb_puts(out, "; items: batch");
    for (int i = 0; i < p->ngrid; i++) {
        int k = p->grid[i];
        sb_printf(out, " x %s", m->dims[p->sched.class_dim[k]].name);
        if (p->cls[k].tile > 1) sb_printf(out, "(tiles of %lld)", (long long)p->cls[k].tile);
    }
    sb_printf(out, " = %lld per sequence; scratch %lld floats per worker\n", (long long)p->items_per_seq,
              (long long)p->local_floats);
    for (uint32_t si = 0; si < m->nstmts; si++) {
        const ir_stmt *s = &m->stmts[si];
        const ir_tensor *t = &m->tensors[s->tensor];
        sb_printf(out, "; %s %s", s->per_step ? "per step:" : "once:    ", t->name);
        for (int i = 0; i < t->rank; i++) sb_printf(out, "%s%s", i ? "," : "[", m->vars[s->vars[i]].name);
        sb_puts(out, t->rank ? "]: loops" : ": loops");
        int nloops = 0;
        for (int i = 0; i < t->rank; i++) {
            int v = s->vars[i];
            if (plan_var_fixed(p, v)) continue;
            sb_printf(out, " %s(%lld)", m->vars[v].name, (long long)plan_var_extent(p, v));
            nloops++;
        }
        if (!nloops) sb_puts(out, " none");
        describe_sums(out, p, s->root);
        describe_hoists(out, p, s->root);
        if (t->kind == IR_STATE)
            sb_puts(out, p->sched.inplace[si] ? "; updated in place" : "; updated through a scratch copy");
        if (p->fuse[si] >= 0) sb_printf(out, "; fused with %s", m->tensors[m->stmts[p->fuse[si]].tensor].name);
        if (p->fuse[si] == -2) sb_puts(out, "; runs inside the state update's loops");
        sb_putc(out, '\n');
    }
    sb_puts(out, "; prefetched a step ahead:");
    int n = 0;
    for (int i = 0; i < p->nprefetch; i++)
        sb_printf(out, "%s %s (%lld hints)", n++ ? "," : "", m->tensors[p->prefetch[i].tensor].name,
                  (long long)(p->prefetch[i].span / PLAN_LINE_FLOATS + 2));
    sb_puts(out, n ? "\n" : " none\n");
}

/* The name of a class: its dim, and the variables of the first tensor axis in it. */
static const char *class_name(const pass_plan *p, int c) { return p->m->dims[p->sched.class_dim[c]].name; }

static const char *const lane_place_names[] = {"-", "registers", "shared memory", "global workspace", "its tensor"};

/* The layout of a plan (targets with lanes), as comment lines (they head
 * the CUDA source). */
void plan_describe_lanes(strbuf *out, const pass_plan *p)
{
    const ir_model *m = p->m;
    sb_printf(out, "// plan: one block per (batch");
    for (int c = 0; c < p->ncls; c++)
        if (p->cls[c].split) sb_printf(out, ", %s tile", class_name(p, c));
    sb_printf(out, "), %d threads per block, %lld floats of shared memory", p->nthreads, (long long)p->local_floats);
    if (p->global_floats) sb_printf(out, ", %lld floats of global workspace", (long long)p->global_floats);
    sb_puts(out, "\n");
    for (int c = 0; c < p->ncls; c++) {
        const plan_class *k = &p->cls[c];
        sb_printf(out, "//   class %s = %lld: ", class_name(p, c), (long long)k->n);
        if (k->split) sb_printf(out, "split, tiles of %lld (%lld per sequence); ", (long long)k->tile, (long long)k->ntiles);
        else sb_puts(out, "in the block; ");
        sb_printf(out, "%d thread%s x %d slot%s", k->threads, k->threads == 1 ? "" : "s", k->slots,
                  k->slots == 1 ? "" : "s");
        if (c == p->lane_cls) sb_puts(out, " (lanes: reductions over it are warp shuffles)");
        if (c == p->col_cls) sb_puts(out, " (columns)");
        sb_puts(out, "\n");
    }
    if (p->nthreads > p->layout_threads)
        sb_printf(out, "//   %d copies of the %d-thread layout (for flat statements)\n", p->nthreads / p->layout_threads,
                  p->layout_threads);
    for (uint32_t ti = 0; ti < m->ntensors; ti++) {
        if (!plan_tracked(&m->tensors[ti])) continue;
        sb_printf(out, "//   %s %s: %s", ir_kind_names[m->tensors[ti].kind], m->tensors[ti].name, lane_place_names[p->place[ti]]);
        if (p->place[ti] == PLAN_PLACE_REG) sb_printf(out, " (%lld per thread)", (long long)plan_reg_slots(p, (int)ti));
        sb_puts(out, "\n");
    }
}

/* =============================================================== --emit=plan */

static const char *const red_mode_names[] = {"a loop over its values", "over the threads' slots, then across threads"};

static void print_reductions(strbuf *out, const pass_plan *p, ir_ref r)
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
    }
    if (in->op == IR_LOAD || in->op == IR_CONST) return;
    print_reductions(out, p, in->a);
    print_reductions(out, p, in->b);
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
        int64_t lag = in->load.lag_var >= 0 ? m->dims[m->vars[in->load.lag_var].dim].value - 1 : in->load.lag;
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

void plan_print(strbuf *out, const pass_plan *p)
{
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
    for (uint32_t si = 0; si < m->nstmts; si++) {
        const ir_stmt *s = &m->stmts[si];
        const ir_tensor *t = &m->tensors[s->tensor];
        sb_printf(out, "  %s %s", s->per_step ? "per step:" : "once:    ", t->name);
        for (int i = 0; i < t->rank; i++) sb_printf(out, "%s%s", i ? "," : "[", m->vars[s->vars[i]].name);
        sb_puts(out, t->rank ? "]" : "");
        if (tg->lanes > 1) {
            sb_puts(out, p->layout[si] ? ": threads follow the layout" : ": flat over the block");
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
        print_reductions(out, p, s->root);
        print_hoists(out, p, s->root);
        sb_putc(out, '\n');
    }
    sb_printf(out, "memory per item: %lld floats local, %lld floats global\n", (long long)p->local_floats,
              (long long)p->global_floats);
}
