/* layout.c: the planner's steps for targets with lanes (a GPU): step 2, the
 * layout inside a block (the lane class R, that reductions run over, on the
 * lanes of a warp so those reductions are shuffles; the column class C, the
 * largest other state class, over the remaining lanes and a few warps; every
 * other class one thread with its values in slots), and steps 6 and 7: how
 * each statement runs (following the layout, or flat over the block), where
 * each state and let lives (registers when only the element's owner reads it
 * and the register budget allows, else block-local memory, past the budget the
 * global workspace), which costly lets are computed once per block, every
 * reduction's mode and the loads that become per-thread register patterns
 * (inputs a step ahead, params once). See plan.h for the vocabulary. */
#include <stdlib.h>
#include <string.h>

#include "passes/plan_steps.h"

#define MAX_DIST_SLOTS 64       /* slots of a distributed reduction or a pattern (unrolled) */
#define MIN_BLOCKS_PER_SEQ 16   /* smaller column tiles below this many items per sequence */
#define FLAT_MIN_THREADS 128    /* block size when some statement runs flat */
#define TEMP_MAX 32             /* flat non-in-place updates: temporaries per thread */
#define MAX_FLAT_SLOTS 8        /* flat statements with at most this many elements per thread
                                   prefetch their loads */
#define STATELESS_ITEM (FLAT_MIN_THREADS * MAX_FLAT_SLOTS) /* most values an item of a
                                   model without states gathers */
#define GROUP_MAX 32            /* lanes per element of a flat statement: one warp at most */
#define LONG_SUM 256            /* a thread's values past which a replicated let's sums are shared (6e) */

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
        size_t si = (size_t)(s - m->stmts);
        for (uint32_t k = 0; k < in->red.nvars; k++) {
            int c = p->sched.var_class[m->red_vars[in->red.vars + k]];
            if (c < 0) continue;
            /* a root sum that may be partial does not keep a class off the columns */
            if (!p->sched.partial_over || !p->sched.partial_over[si * (size_t)p->ncls + (size_t)c]) st->reduced[c] = true;
            bool free_in_lhs = true;
            for (int i = 0; i < m->tensors[s->tensor].rank; i++)
                if (p->sched.var_class[s->vars[i]] == c) free_in_lhs = false;
            if (free_in_lhs && in->red.nvars == 1) st->eligible[c]++;
        }
    }
    if (in->op != IR_CONST && in->op != IR_LOAD) {
        count_reductions(p, s, in->a, st);
        count_reductions(p, s, in->b, st);
        count_reductions(p, s, in->c, st);
    }
}

/* A model without states carries nothing from one step to the next, so a
 * split class buys an item nothing but its launch: left on the grid at tiles
 * of one value, a block of FLAT_MIN_THREADS threads computes one value per
 * step (the chunked algorithm's epilogue at H = 16, V = 128 and its batch x
 * time folded into one-step sequences: 2048 blocks per step). Its splittable
 * classes go into the item instead, those of an output's innermost axis first,
 * then the last first, while the item holds at most STATELESS_ITEM values. */
static void gather_stateless(pass_plan *p, const stats *st)
{
    const ir_model *m = p->m;
    for (uint32_t ti = 0; ti < m->ntensors; ti++)
        if (m->tensors[ti].kind == IR_STATE) return;
    int64_t elems = 1;
    for (int c = 0; c < p->ncls; c++)
        if (!p->cls[c].split) elems *= p->cls[c].n;
    for (int inner = 1; inner >= 0; inner--)
        for (int c = p->ncls - 1; c >= 0; c--) {
            plan_class *k = &p->cls[c];
            if (!k->split || st->inner[c] != (inner == 1) || elems * k->n > STATELESS_ITEM) continue;
            k->split = false;
            elems *= k->n;
        }
}

/* The most elements of a state over its classes that are neither split nor
 * the lane class R or the column class C (those a thread holds whole). */
static int64_t max_other_state(const pass_plan *p, int R, int C)
{
    const ir_model *m = p->m;
    int64_t most = 1;
    for (uint32_t ti = 0; ti < m->ntensors; ti++) {
        const ir_tensor *t = &m->tensors[ti];
        if (t->kind != IR_STATE) continue;
        int64_t e = 1;
        for (int i = 0; i < t->rank; i++) {
            int c = plan_axis_class(p, (int)ti, i);
            if (c >= 0 && c != R && c != C && !p->cls[c].split) e *= p->cls[c].n;
        }
        if (e > most) most = e;
    }
    return most;
}

/* Steps 1 and 2: the lane class, the column class, every class's threads,
 * slots and tile. */
static void choose_layout(pass_plan *p, const stats *st, plan_tune tune)
{
    int R = -1, C = -1;
    gather_stateless(p, st);
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
    /* split reductions: every class splittable only through partial sums goes
     * on the grid, except the lane class, whose sums stay whole (shuffles) */
    for (int c = 0; p->sched.class_partial && c < p->ncls; c++)
        if (c != R && p->sched.splittable[c] && p->sched.class_partial[c] && p->cls[c].n > 1) p->cls[c].split = true;
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
        /* a state's classes other than R and C stay whole in each thread's slots: where R and C
         * together would leave most of a warp idle and a thread with many of them (mamba3's training
         * forward: S[H,P,N,R], one item per sequence, 4 threads of 512 values each), R takes more
         * lanes, so that a thread's share of the state stays within state_slots. (Applied to every
         * layout, it slowed mamba2's adjoint, whose layout fills a warp, from 886 to 1097 ms.) */
        int64_t cmax = C >= 0 ? p->cls[C].n : 1, q_state = ceil_div(k->n * max_other_state(p, R, C), tune.state_slots);
        if ((q < 1 ? 1 : q) * cmax < W && q_state > q) q = q_state;
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

/* ---- steps 6 and 7: a walk over each statement's expression ---- */

typedef struct walker {
    pass_plan *p;
    const ir_stmt *s;
    bool layout, per_step, collect;
    int group;        /* the statement's lanes per element (pass_plan.group) */
    int depth;        /* reductions around the current instruction */
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
    /* a pattern follows one variable per axis; an affine index (var * k + var2,
     * the gradients' gather over grouped reads) is loaded inline */
    for (int i = 0; i < t->rank; i++) {
        const ir_index *ix = &m->ix[in->load.ix + (uint32_t)i];
        if (ix->kind == IR_IX_AFFINE || (ix->kind != IR_IX_CONST && !w->bound[ix->var])) return;
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
    if (!w->layout && w->group > 1 && w->depth == 0) {
        p->red_mode[r] = PLAN_RED_GROUP;
        w->depth++;
        walk(w, in->a);
        w->depth--;
        return;
    }
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
    w->depth++;
    if (p->red_mode[r] != PLAN_RED_DIST) {
        walk(w, in->a);
        w->depth--;
        return;
    }
    p->red_dom[r] = d;
    w->bound[v] = true;
    w->dom[v] = d;
    w->busy[d.cls] = true;
    walk(w, in->a);
    w->depth--;
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
        walk(w, in->c);
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
    w->group = p->group[si];
    w->depth = 0;
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
    } else if (w->collect && s->per_step && w->group == 1) {
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

/* The values of reduction r in an item: a split class's variable runs over
 * the item's tile (a partial sum), any other over its dim. */
static int64_t reduction_values(const pass_plan *p, const ir_inst *in)
{
    const ir_model *m = p->m;
    int64_t n = 1;
    for (uint32_t k = 0; k < in->red.nvars; k++) {
        int v = (int)m->red_vars[in->red.vars + k];
        int c = p->sched.var_class[v];
        n *= c >= 0 && p->cls[c].split ? p->cls[c].tile : m->dims[m->vars[v].dim].value;
    }
    return n;
}

/* The cost, in sequential steps per element, of the reductions that no other
 * reduction encloses when G lanes share each: ceil(values / G) adds, then
 * log2 G shuffles. Returns 0 when r holds none. */
static int64_t outer_reduction_cost(const pass_plan *p, ir_ref r, int G)
{
    if (r == IR_NONE) return 0;
    const ir_inst *in = &p->m->insts[r];
    if (in->op == IR_SUM || in->op == IR_RMAX) {
        int64_t steps = 0;
        for (int g = G; g > 1; g >>= 1) steps++;
        return ceil_div(reduction_values(p, in), G) + steps;
    }
    if (in->op == IR_CONST || in->op == IR_LOAD) return 0;
    return outer_reduction_cost(p, in->a, G) + outer_reduction_cost(p, in->b, G) + outer_reduction_cost(p, in->c, G);
}

/* Lanes per element of flat statement si (pass_plan.group): of G = 1, 2, ..,
 * GROUP_MAX, the one that makes a thread's sequential work least, passes over
 * the elements (ceil(E * G / nthreads)) times the outer reductions' steps (ties
 * to the smaller G). Only a per-step statement that writes its elements directly
 * (not through temporaries: a non-in-place state) qualifies. */
static int flat_group(const pass_plan *p, uint32_t si)
{
    const ir_model *m = p->m;
    const ir_stmt *s = &m->stmts[si];
    if (p->layout[si] || !s->per_step || (m->tensors[s->tensor].kind == IR_STATE && !p->sched.inplace[si])) return 1;
    int64_t E = plan_local_elems(p, s->tensor), N = p->nthreads;
    int best = 1;
    int64_t best_cost = ceil_div(E, N) * outer_reduction_cost(p, s->root, 1);
    if (best_cost == 0) return 1;
    for (int G = 2; G <= GROUP_MAX && G <= N; G *= 2) {
        int64_t cost = ceil_div(E * G, N) * outer_reduction_cost(p, s->root, G);
        if (cost < best_cost) best = G, best_cost = cost;
    }
    return best;
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

/* Every element of the tensor is one thread's (rank 0 included): the block,
 * at least a warp, holds a copy in each of its threads. */
static bool every_thread(const pass_plan *p, int tensor)
{
    const ir_tensor *t = &p->m->tensors[tensor];
    for (int i = 0; i < t->rank; i++)
        if (p->cls[plan_axis_class(p, tensor, i)].threads > 1) return false;
    return true;
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
    return costly_walk(m, in->a, at, fn) && costly_walk(m, in->b, at, fn) && costly_walk(m, in->c, at, fn);
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

bool plan_lane_placement(arena *a, pass_plan *p)
{
    const ir_model *m = p->m;
    size_t nt = m->ntensors ? m->ntensors : 1, nc = p->ncls ? (size_t)p->ncls : 1, nv = m->nvars ? m->nvars : 1;
    walker wk = {.p = p,
                 .bound = arena_array(a, nv, sizeof(bool)),
                 .dom = arena_array(a, nv, sizeof(plan_dom)),
                 .busy = arena_array(a, nc, sizeof(bool)),
                 .unaligned = arena_array(a, nt, sizeof(bool))},
           *w = &wk;
    if (a->failed) return false;
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
    /* 6e: a per-step let in registers that several threads would each compute
     * and whose reductions are long (more than LONG_SUM values a thread: the
     * adjoint's da = sum(i, j: dS * S) of one head) is computed once by the
     * block into block-local memory instead: its statement runs flat, and 6d
     * gives its elements groups of lanes that share those reductions. So is an
     * accumulator state updated in place (a param's adjoint, dp = dp + sum(..):
     * one copy a thread, each summing every value) */
    for (uint32_t si = 0; si < m->nstmts; si++) {
        const ir_stmt *s = &m->stmts[si];
        int ti = s->tensor;
        bool let = m->tensors[ti].kind == IR_LET, acc = m->tensors[ti].kind == IR_STATE && p->sched.inplace[si];
        if (!s->per_step || !(let || acc) || p->place[ti] != PLAN_PLACE_REG) continue;
        if (!(replicated(p, ti) || (acc && every_thread(p, ti))) || outer_reduction_cost(p, s->root, 1) <= LONG_SUM)
            continue;
        p->place[ti] = PLAN_PLACE_LOCAL; /* (the accumulator reads itself: from there) */
        if (walk_stmt(w, si)) {
            p->place[ti] = PLAN_PLACE_REG; /* it reads registers: it stays on the layout */
            continue;
        }
        p->dbuf[ti] = let;
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

    /* 6d: a flat statement with too few elements for the block gives each a
     * group of lanes, which share its outer reductions; then the final walk
     * fixes every reduction's mode and the load patterns */
    for (uint32_t si = 0; si < m->nstmts; si++) p->group[si] = flat_group(p, si);
    w->collect = true;
    for (uint32_t si = 0; si < m->nstmts; si++) walk_stmt(w, si);
    p->npats = (int)w->npats;
    p->pats = w->oom ? NULL : arena_array(a, w->npats ? w->npats : 1, sizeof *p->pats);
    if (p->pats && w->npats) memcpy(p->pats, w->pats, w->npats * sizeof *p->pats);
    free(w->pats);
    if (!p->pats) return false;

    /* 7: block-local memory first, the global workspace past the budget; then
     * one scratch area shared by the flat non-in-place updates */
    for (uint32_t ti = 0; ti < m->ntensors; ti++) {
        if (p->place[ti] != PLAN_PLACE_LOCAL) continue;
        int64_t n = plan_local_elems(p, (int)ti) * (p->dbuf[ti] ? 2 : 1);
        if (p->local_floats + n > p->target.local_floats) p->place[ti] = PLAN_PLACE_GLOBAL;
        p->buf_tensor[ti] = plan_add_buf(p, p->place[ti], n);
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
        int b = plan_add_buf(p, p->local_floats + scratch <= p->target.local_floats ? PLAN_PLACE_LOCAL : PLAN_PLACE_GLOBAL,
                        scratch);
        for (uint32_t si = 0; si < m->nstmts; si++)
            if (p->buf_stmt[si] == -2) p->buf_stmt[si] = b;
    }
    return true;
}

/* Step 2: the statistics that choose the layout, then the layout. */
bool plan_lane_layout(arena *a, pass_plan *p)
{
    const ir_model *m = p->m;
    size_t nc = p->ncls ? (size_t)p->ncls : 1;
    stats st = {arena_array(a, nc, sizeof(int)), arena_array(a, nc, sizeof(bool)), arena_array(a, nc, sizeof(bool)),
                arena_array(a, nc, sizeof(bool))};
    if (a->failed) return false;
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
    return true;
}
