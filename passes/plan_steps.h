/* plan_steps.h: what the planner's files share (passes/plan.c runs the steps
 * in order; layout.c places work on lanes, loops.c transforms loop nests,
 * plan_print.c describes a plan). Nothing outside passes/ includes it. */
#ifndef SSMC_PASSES_PLAN_STEPS_H
#define SSMC_PASSES_PLAN_STEPS_H

#include "passes/plan.h"

static inline int pow2floor(int64_t x)
{
    int p = 1;
    while ((int64_t)p * 2 <= x && p < (1 << 30)) p *= 2;
    return p;
}

static inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

static inline bool dom_equal(plan_dom a, plan_dom b)
{
    return a.cls == b.cls && a.n == b.n && a.slots == b.slots && a.spread == b.spread;
}

/* plan.c: a buffer of len floats in mem (LOCAL or GLOBAL), aligned to the
 * target's vector width; its id. */
int plan_add_buf(pass_plan *p, plan_place mem, int64_t len);

/* layout.c (targets with lanes): step 2, the lane and column classes and every
 * class's threads, slots and tile; steps 6 and 7, placement and memory. */
bool plan_lane_layout(arena *a, pass_plan *p);
bool plan_lane_placement(arena *a, pass_plan *p);

/* loops.c (targets with loops): step 5, interchanged reductions, fusion and
 * hoisting; step 8, the prefetch list. */
void plan_loop_transforms(arena *a, pass_plan *p);
void plan_prefetch_list(pass_plan *p);

#endif
