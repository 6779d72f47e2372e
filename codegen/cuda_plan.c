/* cuda_plan.c: how a model's recurrent kernel maps onto a GPU (see
 * cuda_plan.h for the layout's vocabulary).
 *
 * Takes a verified IR model and its schedule (passes/schedule.c: the index
 * classes, which split across blocks, which state updates run in place) and
 * decides, in this order:
 *   1. the lane class R: a class that stays in the block and that reductions
 *      run over (readouts y = sum(i: q[i] * S[i, j])); it goes on the lanes of
 *      a warp so those reductions are warp shuffles;
 *   2. the column class C: the largest other state class, spread over the
 *      remaining lanes and a few warps (and tiled on the grid when splittable);
 *      every other class has one thread and tile 1 (split) or all its values
 *      in slots (local);
 *   3. how each statement runs: following the layout (each thread computes the
 *      elements it owns, reductions over a free class distributed over its
 *      threads) or flat (the statement's domain spread evenly over the block);
 *   4. where each state and let lives: registers when every read of it is by
 *      the thread that owns the element read (so no other thread needs it),
 *      else shared memory, or a global per-block workspace when shared memory
 *      would overflow;
 *   5. which input and param loads become per-thread register patterns
 *      (inputs prefetched one step ahead, params loaded once).
 * Guarantees: a plan for every verified model (a state that defeats every
 * fast path still runs, in shared or global memory, one statement at a time);
 * the choices depend on the IR only, never on the machine, so the emitted
 * source is the same with or without a GPU. */
#include <stdlib.h>
#include <string.h>

#include "codegen/cuda_plan.h"

#define LANE_SLOTS 16           /* slots per thread of the lane class */
#define TARGET_STATE_SLOTS 32   /* state elements per thread the layout aims at */
#define COLUMN_WARPS 4          /* most warps along a split column class */
#define MIN_BLOCKS_PER_SEQ 16   /* smaller column tiles below this many blocks per sequence */
#define MAX_REG_SLOTS 80        /* registers per thread for states and lets together */
#define MAX_DIST_SLOTS 64       /* slots of a distributed reduction or a pattern (unrolled) */
#define SHARED_BUDGET_FLOATS (96 * 1024 / 4) /* leaves room for two blocks per SM */
#define FLAT_MIN_THREADS 128    /* block size when some statement runs flat */
#define TEMP_MAX 32             /* flat non-in-place updates: temporaries per thread */
#define MAX_FLAT_SLOTS 8        /* flat statements with at most this many elements per thread
                                   prefetch their loads */

static int pow2floor(int64_t x)
{
    int p = 1;
    while ((int64_t)p * 2 <= x && p < (1 << 30)) p *= 2;
    return p;
}

static int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

static bool tracked(const ir_tensor *t) { return t->kind == IR_STATE || t->kind == IR_LET; }

static int axis_class(const cuda_plan *p, int tensor, int axis)
{
    return p->sched.axis_class[tensor * IR_MAX_RANK + axis];
}

int64_t cuda_reg_slots(const cuda_plan *p, int tensor)
{
    const ir_tensor *t = &p->m->tensors[tensor];
    int64_t n = 1;
    for (int i = 0; i < t->rank; i++) n *= p->cls[axis_class(p, tensor, i)].slots;
    return n;
}

int64_t cuda_local_elems(const cuda_plan *p, int tensor)
{
    const ir_tensor *t = &p->m->tensors[tensor];
    int64_t n = 1;
    for (int i = 0; i < t->rank; i++) n *= p->cls[axis_class(p, tensor, i)].tile;
    return n;
}

cuda_place cuda_plan_place(const cuda_plan *p, int tensor)
{
    return tensor >= 0 && (uint32_t)tensor < p->m->ntensors ? p->place[tensor] : CUDA_PLACE_NONE;
}

static cuda_dom class_dom(const cuda_plan *p, int c)
{
    return (cuda_dom){.cls = c, .n = p->cls[c].tile, .slots = p->cls[c].slots, .spread = false};
}

static bool dom_equal(cuda_dom a, cuda_dom b)
{
    return a.cls == b.cls && a.n == b.n && a.slots == b.slots && a.spread == b.spread;
}

/* ---- statistics that choose the layout ---- */

typedef struct stats {
    int *eligible;   /* [ncls] reductions over the class in statements that leave it free */
    bool *reduced;   /* [ncls] some reduction runs over it */
    bool *of_state;  /* [ncls] an axis of a state */
    bool *inner;     /* [ncls] the innermost axis of a state or an output */
} stats;

static void count_reductions(const cuda_plan *p, const ir_stmt *s, ir_ref r, stats *st)
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
static void choose_layout(cuda_plan *p, const stats *st, cuda_tune tune)
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
        cuda_cls *k = &p->cls[c];
        k->threads = 1;
        k->tile = k->split ? 1 : k->n;
        k->slots = (int)(k->split ? 1 : k->n);
        k->lane = true;
        k->stride = 1;
    }
    int lanes = 32, rR = 1;
    if (R >= 0) {
        cuda_cls *k = &p->cls[R];
        int64_t q = k->n / tune.lane_slots;
        k->threads = pow2floor(q < 1 ? 1 : q > 32 ? 32 : q);
        k->slots = (int)ceil_div(k->n, k->threads);
        k->stride = 1;
        lanes = 32 / k->threads;
        rR = k->slots;
    }
    if (C >= 0) {
        cuda_cls *k = &p->cls[C];
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
        k->lane = k->stride * k->threads <= 32;
    }
    for (int c = 0; c < p->ncls; c++) p->cls[c].ntiles = ceil_div(p->cls[c].n, p->cls[c].tile);
    p->lane_cls = R;
    p->col_cls = C;
    p->layout_threads = (R >= 0 ? p->cls[R].threads : 1) * (C >= 0 ? p->cls[C].threads : 1);
}

/* ---- steps 3 to 5: a walk over each statement's expression ---- */

typedef struct walker {
    cuda_plan *p;
    const ir_stmt *s;
    bool layout, per_step, collect;
    bool *bound;      /* [nvars] */
    cuda_dom *dom;    /* [nvars] */
    bool *busy;       /* [ncls] a class whose coordinate is taken in this context */
    bool *unaligned;  /* [ntensors] some read is not by the element's owner */
    bool *reads_reg;  /* set when a register-placed tensor is read */
    cuda_pat *pats;
    size_t npats, cpats;
    bool oom;
} walker;

/* The pattern with this key, added when new. Returns -1 when it would take too
 * many registers. */
static int pattern_of(walker *w, const ir_inst *in)
{
    const cuda_plan *p = w->p;
    const ir_model *m = p->m;
    const ir_tensor *t = &m->tensors[in->load.tensor];
    cuda_pat k = {.tensor = in->load.tensor, .lag = in->load.lag};
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
            cuda_dom d = w->dom[ix->var];
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
        const cuda_pat *q = &w->pats[i];
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
    cuda_plan *p = w->p;
    const ir_model *m = p->m;
    const ir_inst *in = &m->insts[r];
    const ir_tensor *t = &m->tensors[in->load.tensor];
    if (tracked(t)) {
        bool aligned = w->layout;
        for (int i = 0; aligned && i < t->rank; i++) {
            const ir_index *ix = &m->ix[in->load.ix + (uint32_t)i];
            aligned = ix->kind == IR_IX_VAR && w->bound[ix->var] && !w->dom[ix->var].spread &&
                      w->dom[ix->var].cls == axis_class(p, in->load.tensor, i);
        }
        if (!aligned) w->unaligned[in->load.tensor] = true;
        if (p->place[in->load.tensor] == CUDA_PLACE_REG) *w->reads_reg = true;
        return;
    }
    p->ld_kind[r] = CUDA_LD_INLINE;
    if (!w->collect || !w->per_step || in->load.lag_var >= 0) return;
    for (int i = 0; i < t->rank; i++) {
        const ir_index *ix = &m->ix[in->load.ix + (uint32_t)i];
        if (ix->kind != IR_IX_CONST && !w->bound[ix->var]) return;
    }
    int id = pattern_of(w, in);
    if (id >= 0) {
        p->ld_kind[r] = CUDA_LD_PAT;
        p->ld_pat[r] = id;
    }
}

static void walk_reduction(walker *w, ir_ref r)
{
    cuda_plan *p = w->p;
    const ir_model *m = p->m;
    const ir_inst *in = &m->insts[r];
    p->red_mode[r] = CUDA_RED_SEQ;
    cuda_dom d = {0};
    int v = (int)m->red_vars[in->red.vars];
    if (w->layout && in->red.nvars == 1) {
        int c = p->sched.var_class[v];
        int R = p->lane_cls;
        if (c >= 0 && !w->busy[c] && p->cls[c].lane && p->cls[c].slots <= MAX_DIST_SLOTS) {
            d = class_dom(p, c);
            p->red_mode[r] = CUDA_RED_DIST;
        } else if (c < 0 && R >= 0 && !w->busy[R] && p->cls[R].lane) {
            int64_t n = m->dims[m->vars[v].dim].value;
            d = n == p->cls[R].tile ? class_dom(p, R)
                                    : (cuda_dom){.cls = R, .n = n, .slots = (int)ceil_div(n, p->cls[R].threads), .spread = true};
            if (d.slots <= MAX_DIST_SLOTS) p->red_mode[r] = CUDA_RED_DIST;
        }
    }
    if (p->red_mode[r] != CUDA_RED_DIST) {
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
    cuda_plan *p = w->p;
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
            int c = axis_class(p, s->tensor, i);
            w->bound[s->vars[i]] = true;
            w->dom[s->vars[i]] = class_dom(p, c);
            w->busy[c] = true;
        }
    } else if (w->collect && s->per_step) {
        /* flat: thread tid's m-th element is tid + m * nthreads; its loads
         * that depend on the element only can be prefetched too */
        int64_t n = cuda_local_elems(p, s->tensor), per = ceil_div(n, p->nthreads);
        cuda_dom d = {.cls = CUDA_FLAT_DOM(si), .n = n, .slots = (int)per};
        for (int i = 0; per <= MAX_FLAT_SLOTS && i < t->rank; i++) {
            w->bound[s->vars[i]] = true;
            w->dom[s->vars[i]] = d;
        }
    }
    walk(w, s->root);
    return reads_reg;
}

/* Some thread coordinate the tensor's elements do not depend on. */
static bool replicated(const cuda_plan *p, int tensor)
{
    const ir_tensor *t = &p->m->tensors[tensor];
    for (int c = 0; c < p->ncls; c++) {
        if (p->cls[c].threads == 1) continue;
        bool has = false;
        for (int i = 0; i < t->rank; i++) has |= axis_class(p, tensor, i) == c;
        if (!has) return true;
    }
    return false;
}

/* Calls a transcendental function and runs no reduction (which would leave a
 * flat statement one thread's sequential loop). */
static bool costly_walk(const ir_model *m, ir_ref r, bool *fn)
{
    if (r == IR_NONE) return true;
    const ir_inst *in = &m->insts[r];
    switch (in->op) {
    case IR_SUM:
    case IR_RMAX: return false;
    default: *fn |= op_table[in->op].cost == OPC_TRANS; break;
    }
    if (in->op == IR_CONST || in->op == IR_LOAD) return true;
    return costly_walk(m, in->a, fn) && costly_walk(m, in->b, fn);
}

static bool costly(const ir_model *m, ir_ref r)
{
    bool fn = false;
    return costly_walk(m, r, &fn) && fn;
}

static bool distinct_classes(const cuda_plan *p, int tensor)
{
    const ir_tensor *t = &p->m->tensors[tensor];
    for (int i = 0; i < t->rank; i++)
        for (int j = 0; j < i; j++)
            if (axis_class(p, tensor, i) == axis_class(p, tensor, j)) return false;
    return true;
}

/* Every size the kernel indexes with 32-bit ints must fit. */
static bool sizes_fit(const ir_model *m, diag *d)
{
    for (uint32_t i = 0; i < m->ntensors; i++) {
        int64_t n = ir_tensor_elems(m, &m->tensors[i]);
        if (n >= ((int64_t)1 << 31)) {
            diag_error(d, "cuda: %s '%s' has %lld elements per step or per sequence; the CUDA backend indexes "
                       "them with 32-bit integers (at most 2^31 - 1)",
                       ir_kind_names[m->tensors[i].kind], m->tensors[i].name, (long long)n);
            return false;
        }
    }
    return true;
}

static int env_int(const char *name, int lo, int hi)
{
    const char *s = getenv(name);
    char *end;
    long v = s ? strtol(s, &end, 10) : 0;
    return s && *s && !*end && v >= lo && v <= hi ? (int)v : 0;
}

cuda_tune cuda_tune_from_env(void)
{
    return (cuda_tune){.lane_slots = env_int("SSMC_CUDA_LANE_SLOTS", 1, 64),
                       .state_slots = env_int("SSMC_CUDA_STATE_SLOTS", 1, 64),
                       .warps = env_int("SSMC_CUDA_WARPS", 1, 8),
                       .share_lets = env_int("SSMC_CUDA_SHARE_LETS", 1, 2)};
}

ssmc_status cuda_plan_make(arena *a, const ir_model *m, const cuda_tune *tune, cuda_plan **out, diag *d)
{
    *out = NULL;
    cuda_tune tn = tune ? *tune : (cuda_tune){0};
    if (tn.lane_slots <= 0) tn.lane_slots = LANE_SLOTS;
    if (tn.state_slots <= 0) tn.state_slots = TARGET_STATE_SLOTS;
    if (tn.warps <= 0) tn.warps = COLUMN_WARPS;
    if (tn.share_lets <= 0) tn.share_lets = 1;
    tn.warps = pow2floor(tn.warps);
    if (!sizes_fit(m, d)) return SSMC_ERR_UNSUPPORTED;
    cuda_plan *p = arena_alloc(a, sizeof *p);
    if (!p) goto oom;
    p->m = m;
    if (!pass_schedule(a, m, &p->sched, d)) return SSMC_ERR_NOMEM;
    p->ncls = p->sched.nclasses;
    size_t nt = m->ntensors ? m->ntensors : 1, ns = m->nstmts ? m->nstmts : 1, ni = m->ninsts ? m->ninsts : 1;
    size_t nc = p->ncls ? (size_t)p->ncls : 1, nv = m->nvars ? m->nvars : 1;
    p->cls = arena_array(a, nc, sizeof *p->cls);
    p->place = arena_array(a, nt, sizeof *p->place);
    p->dbuf = arena_array(a, nt, sizeof *p->dbuf);
    p->off = arena_array(a, nt, sizeof *p->off);
    p->layout = arena_array(a, ns, sizeof *p->layout);
    p->scratch = arena_array(a, ns, sizeof *p->scratch);
    p->red_mode = arena_array(a, ni, sizeof *p->red_mode);
    p->red_dom = arena_array(a, ni, sizeof *p->red_dom);
    p->ld_kind = arena_array(a, ni, sizeof *p->ld_kind);
    p->ld_pat = arena_array(a, ni, sizeof *p->ld_pat);
    stats st = {arena_array(a, nc, sizeof(int)), arena_array(a, nc, sizeof(bool)), arena_array(a, nc, sizeof(bool)),
                arena_array(a, nc, sizeof(bool))};
    walker w = {.p = p,
                .bound = arena_array(a, nv, sizeof(bool)),
                .dom = arena_array(a, nv, sizeof(cuda_dom)),
                .busy = arena_array(a, nc, sizeof(bool)),
                .unaligned = arena_array(a, nt, sizeof(bool))};
    if (!p->cls || !p->place || !p->dbuf || !p->off || !p->layout || !p->scratch || !p->red_mode || !p->red_dom ||
        !p->ld_kind || !p->ld_pat || !st.eligible || !st.reduced || !st.of_state || !st.inner || !w.bound || !w.dom ||
        !w.busy || !w.unaligned)
        goto oom;

    for (int c = 0; c < p->ncls; c++) {
        p->cls[c].n = m->dims[p->sched.class_dim[c]].value;
        p->cls[c].split = p->sched.splittable[c];
    }
    for (uint32_t ti = 0; ti < m->ntensors; ti++) {
        const ir_tensor *t = &m->tensors[ti];
        if (t->kind != IR_STATE && t->kind != IR_OUTPUT) continue;
        for (int i = 0; i < t->rank; i++) {
            if (t->kind == IR_STATE) st.of_state[axis_class(p, (int)ti, i)] = true;
            st.inner[axis_class(p, (int)ti, i)] |= i == t->rank - 1;
        }
    }
    for (uint32_t si = 0; si < m->nstmts; si++) count_reductions(p, &m->stmts[si], m->stmts[si].root, &st);
    choose_layout(p, &st, tn);

    /* 3: every statement follows the layout unless its left side has two axes
     * of one class (no thread owns such an element) */
    for (uint32_t si = 0; si < m->nstmts; si++) p->layout[si] = distinct_classes(p, m->stmts[si].tensor);
    /* 4: registers unless something forbids them */
    for (uint32_t ti = 0; ti < m->ntensors; ti++) p->place[ti] = tracked(&m->tensors[ti]) ? CUDA_PLACE_REG : CUDA_PLACE_NONE;
    for (uint32_t si = 0; si < m->nstmts; si++) walk_stmt(&w, si);
    for (uint32_t ti = 0; ti < m->ntensors; ti++) {
        const ir_tensor *t = &m->tensors[ti];
        if (p->place[ti] != CUDA_PLACE_REG) continue;
        bool reg = !w.unaligned[ti] && distinct_classes(p, (int)ti) && (t->def < 0 || p->layout[t->def]) &&
                   (t->kind != IR_STATE || t->def < 0 || p->sched.inplace[t->def]);
        if (!reg) p->place[ti] = CUDA_PLACE_SHARED;
    }
    for (;;) { /* over budget: the largest let leaves the registers, then the largest state */
        int64_t total = 0, most = 0;
        int worst = -1;
        bool worst_state = true;
        for (uint32_t ti = 0; ti < m->ntensors; ti++) {
            if (p->place[ti] != CUDA_PLACE_REG) continue;
            int64_t n = cuda_reg_slots(p, (int)ti);
            bool state = m->tensors[ti].kind == IR_STATE;
            total += n;
            if (worst < 0 || (worst_state && !state) || (state == worst_state && n > most)) {
                most = n;
                worst = (int)ti;
                worst_state = state;
            }
        }
        if (total <= MAX_REG_SLOTS || worst < 0) break;
        p->place[worst] = CUDA_PLACE_SHARED;
    }
    /* 4 again: a per-step let that costs transcendental functions and that
     * several threads would each compute (it lacks a class they differ in)
     * is computed once by the whole block into shared memory instead: each
     * thread evaluates fewer elements, and one barrier per step (two buffers)
     * hands them over */
    for (uint32_t si = 0; tn.share_lets == 1 && si < m->nstmts; si++) {
        const ir_stmt *s = &m->stmts[si];
        int ti = s->tensor;
        if (!s->per_step || m->tensors[ti].kind != IR_LET || p->place[ti] != CUDA_PLACE_REG) continue;
        if (cuda_reg_slots(p, ti) < 2 || !replicated(p, ti) || !costly(m, s->root) || walk_stmt(&w, si)) continue;
        p->place[ti] = CUDA_PLACE_SHARED;
        p->dbuf[ti] = true;
    }
    /* 3 again: a statement that neither reads nor writes registers runs flat,
     * with every thread of the block on its own domain */
    bool any_flat = false;
    for (uint32_t si = 0; si < m->nstmts; si++) {
        const ir_stmt *s = &m->stmts[si];
        if (p->layout[si] && p->place[s->tensor] != CUDA_PLACE_REG && !walk_stmt(&w, si)) p->layout[si] = false;
        any_flat |= !p->layout[si];
    }
    /* threads: at least a warp; enough for flat statements and memory loops */
    bool any_mem = false;
    for (uint32_t ti = 0; ti < m->ntensors; ti++) any_mem |= p->place[ti] == CUDA_PLACE_SHARED;
    int want = any_flat || any_mem ? FLAT_MIN_THREADS : 32;
    p->nthreads = p->layout_threads;
    while (p->nthreads < want) p->nthreads *= 2;

    /* 5: the final walk fixes every reduction's mode and the load patterns */
    w.collect = true;
    for (uint32_t si = 0; si < m->nstmts; si++) walk_stmt(&w, si);
    if (w.oom) goto oom;
    p->npats = (int)w.npats;
    p->pats = arena_array(a, w.npats ? w.npats : 1, sizeof *p->pats);
    if (!p->pats) goto oom;
    if (w.npats) memcpy(p->pats, w.pats, w.npats * sizeof *p->pats);
    free(w.pats);
    w.pats = NULL;

    /* memory: shared first, the global workspace past the budget */
    int64_t sh = 0, ws = 0;
    for (uint32_t ti = 0; ti < m->ntensors; ti++) {
        if (p->place[ti] != CUDA_PLACE_SHARED) continue;
        int64_t n = cuda_local_elems(p, (int)ti) * (p->dbuf[ti] ? 2 : 1);
        if (sh + n <= SHARED_BUDGET_FLOATS) {
            p->off[ti] = sh;
            sh += n;
        } else {
            p->place[ti] = CUDA_PLACE_GLOBAL;
            p->off[ti] = ws;
            ws += n;
        }
    }
    int64_t scratch = 0;
    for (uint32_t si = 0; si < m->nstmts; si++) {
        const ir_stmt *s = &m->stmts[si];
        p->scratch[si] = -1;
        if (p->layout[si] || m->tensors[s->tensor].kind != IR_STATE || p->sched.inplace[si]) continue;
        int64_t n = cuda_local_elems(p, s->tensor);
        if (ceil_div(n, p->nthreads) > TEMP_MAX) {
            p->scratch[si] = 0;
            if (n > scratch) scratch = n;
        }
    }
    if (scratch) {
        p->scratch_place = sh + scratch <= SHARED_BUDGET_FLOATS ? CUDA_PLACE_SHARED : CUDA_PLACE_GLOBAL;
        int64_t *top = p->scratch_place == CUDA_PLACE_SHARED ? &sh : &ws;
        for (uint32_t si = 0; si < m->nstmts; si++)
            if (p->scratch[si] == 0) p->scratch[si] = (int)*top;
        *top += scratch;
    }
    p->shared_floats = sh;
    p->ws_floats = ws;
    *out = p;
    return SSMC_OK;
oom:
    free(w.pats);
    diag_error(d, "out of memory while planning the CUDA kernel");
    return SSMC_ERR_NOMEM;
}

cuda_launch cuda_launch_of(const cuda_plan *p, int64_t batch)
{
    cuda_launch l = {.blocks = batch, .threads = (unsigned)p->nthreads, .ws_floats = p->ws_floats};
    for (int c = 0; c < p->ncls; c++)
        if (p->cls[c].split) l.blocks *= p->cls[c].ntiles;
    l.shared_bytes = (unsigned)(p->shared_floats * 4);
    return l;
}

void cuda_program_name(strbuf *out, const ir_model *m) { sb_printf(out, "ssmc_%s.cu", m->name); }
void cuda_kernel_name(strbuf *out, const ir_model *m) { sb_printf(out, "ssmc_%s", m->name); }

/* The name of a class: its dim, and the variables of the first tensor axis in it. */
static const char *class_name(const cuda_plan *p, int c) { return p->m->dims[p->sched.class_dim[c]].name; }

static const char *const place_names[] = {"-", "registers", "shared memory", "global workspace"};

void cuda_plan_describe(strbuf *out, const cuda_plan *p)
{
    const ir_model *m = p->m;
    sb_printf(out, "// plan: one block per (batch");
    for (int c = 0; c < p->ncls; c++)
        if (p->cls[c].split) sb_printf(out, ", %s tile", class_name(p, c));
    sb_printf(out, "), %d threads per block, %lld floats of shared memory", p->nthreads, (long long)p->shared_floats);
    if (p->ws_floats) sb_printf(out, ", %lld floats of global workspace", (long long)p->ws_floats);
    sb_puts(out, "\n");
    for (int c = 0; c < p->ncls; c++) {
        const cuda_cls *k = &p->cls[c];
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
        if (!tracked(&m->tensors[ti])) continue;
        sb_printf(out, "//   %s %s: %s", ir_kind_names[m->tensors[ti].kind], m->tensors[ti].name, place_names[p->place[ti]]);
        if (p->place[ti] == CUDA_PLACE_REG) sb_printf(out, " (%lld per thread)", (long long)cuda_reg_slots(p, (int)ti));
        sb_puts(out, "\n");
    }
}
