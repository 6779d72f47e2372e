/* pool.h: a small thread pool for the CPU backend's parallel loops.
 *
 * A pool holds nthreads - 1 persistent worker threads; the thread that calls
 * rt_pool_run is worker 0 and works too. rt_pool_run has k = min(nthreads, n)
 * workers run fn over [0, n): with k = 1, one call over all of it; else
 * worker w owns the contiguous share [n w / k, n (w + 1) / k) and calls fn on
 * pieces from its front (a quarter of what is left of it, at least 1 value);
 * a worker whose share is done takes the back half of the largest share left
 * and goes on with that, until no value is left. Every value is passed to fn
 * exactly once; the number of calls varies from run to run. It returns when
 * every call has returned. Idle workers sleep on a condition variable after polling a while
 * (below). Pools are independent of each other; one pool may be run from
 * several threads (runs on one pool are serialised), but fn must not call
 * rt_pool_run on the pool that is running it.
 *
 * Placement (Linux): when the pool has exactly as many threads as the process
 * may use CPUs (the default, nthreads 0), each worker 1..size-1 is pinned to a
 * CPU of its own and the CPU the caller runs on is kept free of workers: when
 * a run starts on a CPU that a worker holds, that worker moves to the CPU the
 * caller left. Without this a woken worker may be placed on the caller's busy
 * CPU and share it for milliseconds (seen on KVM guests, where an idle virtual
 * CPU does not count as idle to the waker). With fewer threads than CPUs the
 * scheduler places them (two processes pinning into the same CPUs would
 * collide). The caller's own affinity is never changed. SSMC_PIN=0 in the
 * environment turns pinning off.
 *
 * Polling: idle workers, and the caller waiting for them, poll for
 * SSMC_SPIN_US microseconds (default 100; 0: never) before they sleep, unless
 * the pool has more threads than CPUs. */
#ifndef RT_POOL_H
#define RT_POOL_H

#include <stdint.h>

#include "support/support.h"

typedef struct rt_pool rt_pool;

/* fn(arg, begin, end, worker): handles [begin, end), begin < end; worker is in
 * [0, rt_pool_size). */
typedef void rt_pool_fn(void *arg, int64_t begin, int64_t end, int worker);

/* nthreads: total workers including the caller; 0 means one per available core.
 * Returns NULL with a message in err when threads cannot be created. */
rt_pool *rt_pool_new(int nthreads, strbuf *err);
void rt_pool_free(rt_pool *p); /* joins the workers; NULL is allowed */
int rt_pool_size(const rt_pool *p);
/* The CPU worker i is pinned to, or -1 when the pool does not pin (i = 0: the
 * CPU kept for the caller). */
int rt_pool_cpu(const rt_pool *p, int i);
/* Does nothing when n <= 0. */
void rt_pool_run(rt_pool *p, int64_t n, rt_pool_fn *fn, void *arg);

#endif
