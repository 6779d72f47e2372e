/* target.c: the target descriptions a plan is made for (plan.h). Each fact
 * here is one a planning step reads; a renderer reads none of them to decide
 * loops or placement. */
#include <unistd.h>

#include "passes/plan.h"

/* An item's state should stay in the L1 data cache (32 KiB or more on current
 * x86 and Arm cores) from one step to the next: more items when it would not. */
#define CPU_L1_FLOATS (32 * 1024 / 4)

plan_target plan_target_cpu(int threads)
{
    if (threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        threads = n > 0 ? (int)n : 1;
    }
    return (plan_target){
        .name = "cpu",
        .lanes = 1,
        .vector_floats = 16, /* one AVX-512 vector; a multiple of every narrower one */
        .workers = threads,
        .min_items = 8,
        .item_state_floats = CPU_L1_FLOATS,
        .local_floats = 0,
        .max_reg_slots = 0,
        .hoist_cost = OPC_DIV,
        .share_cost = OPC_TRANS,
    };
}

plan_target plan_target_cuda(const plan_tune *tune)
{
    plan_tune tn = tune ? *tune : (plan_tune){0};
    if (tn.lane_slots <= 0) tn.lane_slots = 16;
    if (tn.state_slots <= 0) tn.state_slots = 32;
    if (tn.warps <= 0) tn.warps = 4;
    if (tn.share_lets <= 0) tn.share_lets = 1;
    int w = 1;
    while (w * 2 <= tn.warps) w *= 2;
    tn.warps = w;
    return (plan_target){
        .name = "cuda",
        .lanes = 32,
        .vector_floats = 1,
        .workers = 0,
        .min_items = 1,
        .item_state_floats = 0,
        .local_floats = 96 * 1024 / 4, /* shared memory per block: leaves room for two blocks per SM */
        .max_reg_slots = 80,
        .hoist_cost = OPC_DIV,
        .share_cost = OPC_TRANS,
        .partial_sums = true,
        .tune = tn,
    };
}
