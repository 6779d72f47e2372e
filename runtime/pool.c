/* pool.c: the thread pool declared in pool.h.
 *
 * One mutex and two condition variables per pool. A run publishes the job and
 * bumps a generation counter; each worker compares the generation with the last
 * one it saw, then runs its share and steals from the others (pool.h) until
 * nothing is left, and counts down `pending`; the caller waits for zero.
 * Contiguous shares keep the items that run at the same time far apart in
 * memory: with one counter handing out items in order, two threads worked on
 * neighbouring heads whose input and output rows share cache pages, and GLA,
 * batch 1, ran 1.44x-1.64x faster on 2 threads than on 1; with shares,
 * 1.85x-1.99x (bench/RESULTS.md, fourth round). Stealing keeps every core
 * busy to the end when cores run at different speeds (a shared or virtual
 * machine; other load on one core), and halving the victim's rest makes the
 * last pieces short. A range is one 64-bit word (lo | hi << 32), changed by
 * compare-and-swap only: the owner moves lo up, a thief moves hi down and
 * stores the part it took into its own range, which is empty by then. Runs of
 * more than 2^31 values go in units of several values. A worker beyond
 * min(size, n) only notes the generation, so a run never waits for threads it
 * did not need. Guarantees: when rt_pool_run
 * returns, every fn call has returned and its writes are visible to the caller
 * (the release/acquire on `pending`, and the mutex).
 *
 * Placement: cpu[i] is the CPU worker i is pinned to, cpu[0] the one left to
 * the caller (pool.h says why). A run that starts on a worker's CPU trades the
 * two: one sched_setaffinity call, and only after the caller has moved. */
#include "runtime/pool.h"
#include "support/env.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Worker w's share of a run, in units (one value each unless the run has more
 * than 2^31 values): [lo, hi) packed as lo | hi << 32, one cache line each. */
typedef struct pool_range {
    _Atomic uint64_t r;
    char pad[64 - sizeof(uint64_t)];
} pool_range;

typedef struct pool_worker {
    rt_pool *pool;
    int index;
    pthread_t thread;
} pool_worker;

struct rt_pool {
    int size;               /* workers, the caller included */
    pool_worker *workers;   /* workers[1..size); workers[0] is the caller */
    int *cpu;               /* cpu[0..size), or NULL when not pinning */
    pthread_mutex_t run_lock; /* serialises runs from different threads */
    pthread_mutex_t lock;   /* guards everything below */
    pthread_cond_t work_cv, done_cv;
    int64_t spin_ns;        /* how long idle threads poll; 0 with more threads than cores */
    /* written under lock; read without it only to end a spin */
    atomic_uint_least64_t generation;
    atomic_bool stop;
    atomic_int pending;     /* workers 1..nworkers-1 not finished yet */
    rt_pool_fn *fn;
    void *arg;
    int64_t n, unit;        /* values, and values per unit */
    pool_range *ranges;     /* [size] */
    int nworkers;           /* workers in this run: min(size, n) */
};

/* How long an idle thread polls before it sleeps, unless SSMC_SPIN_US says:
 * back-to-back runs (a model's steps, a decode loop) then find their workers
 * awake on their own CPUs, without the 20-50 us of a wake-up (milliseconds,
 * now and then, when the machine is a virtual one whose idle CPU the host has
 * descheduled). */
enum { SPIN_US = 100 };

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline void relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* One step of polling: false once spin_ns have passed since the first step
 * (i and until start at 0). */
static bool poll_more(const rt_pool *p, uint32_t *i, int64_t *until)
{
    if (p->spin_ns <= 0) return false;
    relax();
    if ((*i)++ % 64 == 0) {
        int64_t t = now_ns();
        if (!*until) *until = t + p->spin_ns;
        else if (t > *until) return false;
    }
    return true;
}

static uint64_t pack(uint32_t lo, uint32_t hi) { return (uint64_t)hi << 32 | lo; }

/* Takes the front of worker w's own range, max(1, left / 4) units, into
 * [*lo, *hi); false when it is empty. */
static bool take(rt_pool *p, int w, uint32_t *lo, uint32_t *hi)
{
    uint64_t r = atomic_load_explicit(&p->ranges[w].r, memory_order_relaxed);
    for (;;) {
        uint32_t a = (uint32_t)r, b = (uint32_t)(r >> 32);
        if (a >= b) return false;
        uint32_t size = (b - a) / 4 > 1 ? (b - a) / 4 : 1;
        if (atomic_compare_exchange_weak(&p->ranges[w].r, &r, pack(a + size, b))) {
            *lo = a;
            *hi = a + size;
            return true;
        }
    }
}

/* Moves the back half of the fullest range of workers [0, k) other than w
 * into w's own range, which is empty; false when every range is empty. A
 * range only ever shrinks or (its owner's, once empty) is replaced by units
 * taken from another, so a stale value never matches again. */
static bool steal(rt_pool *p, int w, int k)
{
    for (;;) {
        int v = -1;
        uint64_t rv = 0;
        uint32_t most = 0;
        for (int i = 0; i < k; i++) {
            uint64_t r = atomic_load_explicit(&p->ranges[i].r, memory_order_relaxed);
            uint32_t left = (uint32_t)(r >> 32) - (uint32_t)r;
            if (i != w && left > most) {
                most = left;
                v = i;
                rv = r;
            }
        }
        if (v < 0) return false;
        uint32_t a = (uint32_t)rv, b = (uint32_t)(rv >> 32), half = (b - a + 1) / 2;
        if (atomic_compare_exchange_strong(&p->ranges[v].r, &rv, pack(a, b - half))) {
            atomic_store_explicit(&p->ranges[w].r, pack(b - half, b), memory_order_relaxed);
            return true;
        }
    }
}

/* Runs worker w's share of the current job, then what it can steal, until no
 * value is left unclaimed. */
static void drain(rt_pool *p, rt_pool_fn *fn, void *arg, int64_t n, int64_t unit, int w, int k)
{
    do {
        uint32_t lo, hi;
        while (take(p, w, &lo, &hi)) {
            int64_t b = (int64_t)lo * unit, e = (int64_t)hi * unit;
            fn(arg, b, e < n ? e : n, w);
        }
    } while (steal(p, w, k));
}

static void *worker_main(void *p_)
{
    pool_worker *w = p_;
    rt_pool *p = w->pool;
    /* Not p->generation: a first run may already have started before this
     * thread got here, and it counts on this worker. */
    uint64_t seen = 0;
    for (;;) {
        uint32_t i = 0;
        int64_t until = 0;
        while (atomic_load_explicit(&p->generation, memory_order_relaxed) == seen &&
               !atomic_load_explicit(&p->stop, memory_order_relaxed) && poll_more(p, &i, &until)) {
        }
        pthread_mutex_lock(&p->lock);
        while (atomic_load(&p->generation) == seen && !atomic_load(&p->stop)) pthread_cond_wait(&p->work_cv, &p->lock);
        if (atomic_load(&p->stop)) break;
        seen = atomic_load(&p->generation);
        if (w->index >= p->nworkers) {
            pthread_mutex_unlock(&p->lock);
            continue;
        }
        rt_pool_fn *fn = p->fn;
        void *arg = p->arg;
        int64_t n = p->n, unit = p->unit;
        int k = p->nworkers;
        pthread_mutex_unlock(&p->lock);
        drain(p, fn, arg, n, unit, w->index, k);
        /* the caller may be polling pending rather than waiting on done_cv;
         * taking the lock to signal closes the gap between its check and its wait */
        if (atomic_fetch_sub(&p->pending, 1) == 1) {
            pthread_mutex_lock(&p->lock);
            pthread_cond_signal(&p->done_cv);
            pthread_mutex_unlock(&p->lock);
        }
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

static int available_cores(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        int n = CPU_COUNT(&set);
        if (n > 0) return n;
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

/* Fills p->cpu when the pool pins (see pool.h): when it has exactly as many
 * threads as the process may use CPUs, the caller keeps the CPU it runs on and
 * the workers take the others, in CPU-number order. */
static void plan_cpus(rt_pool *p)
{
    const char *env = env_get(ENV_SSMC_PIN);
    cpu_set_t set;
    if (p->size < 2 || (env && strcmp(env, "0") == 0) || sched_getaffinity(0, sizeof set, &set) != 0 ||
        CPU_COUNT(&set) != p->size || !(p->cpu = malloc((size_t)p->size * sizeof *p->cpu)))
        return;
    int here = sched_getcpu(), k = 1;
    p->cpu[0] = here >= 0 && here < CPU_SETSIZE && CPU_ISSET(here, &set) ? here : -1;
    for (int c = 0; c < CPU_SETSIZE && k < p->size; c++)
        if (CPU_ISSET(c, &set) && c != p->cpu[0]) p->cpu[k++] = c;
    if (p->cpu[0] < 0) /* the caller runs outside the set: leave it the last CPU */
        for (int c = CPU_SETSIZE - 1; c >= 0 && p->cpu[0] < 0; c--)
            if (CPU_ISSET(c, &set)) p->cpu[0] = c;
}

static cpu_set_t only(int c)
{
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(c, &one);
    return one;
}

static bool pin(pthread_t t, int c)
{
    cpu_set_t one = only(c);
    return pthread_setaffinity_np(t, sizeof one, &one) == 0;
}

/* Keeps the caller's CPU free of workers: a worker pinned where the caller now
 * runs moves to the CPU the caller left. */
static void follow_caller(rt_pool *p)
{
    int here = sched_getcpu();
    if (!p->cpu || here < 0 || here == p->cpu[0]) return;
    for (int i = 1; i < p->size; i++) {
        if (p->cpu[i] != here) continue;
        if (pin(p->workers[i].thread, p->cpu[0])) {
            p->cpu[i] = p->cpu[0];
            p->cpu[0] = here;
        }
        return;
    }
}

rt_pool *rt_pool_new(int nthreads, strbuf *err)
{
    if (nthreads < 0) {
        sb_printf(err, "thread pool: %d threads requested", nthreads);
        return NULL;
    }
    if (nthreads == 0) nthreads = available_cores();
    rt_pool *p = calloc(1, sizeof *p);
    pool_worker *ws = calloc((size_t)nthreads, sizeof *ws);
    pool_range *ranges = aligned_alloc(64, (size_t)nthreads * sizeof *ranges);
    if (!p || !ws || !ranges) {
        free(p);
        free(ws);
        free(ranges);
        sb_puts(err, "thread pool: out of memory");
        return NULL;
    }
    p->size = nthreads;
    p->workers = ws;
    p->ranges = ranges;
    for (int i = 0; i < nthreads; i++) atomic_init(&ranges[i].r, 0);
    pthread_mutex_init(&p->run_lock, NULL);
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->work_cv, NULL);
    pthread_cond_init(&p->done_cv, NULL);
    long spin_us = env_long(ENV_SSMC_SPIN_US, 0, 1000000, SPIN_US);
    p->spin_ns = nthreads <= available_cores() ? (int64_t)spin_us * 1000 : 0;
    plan_cpus(p);
    for (int i = 1; i < nthreads; i++) {
        ws[i].pool = p;
        ws[i].index = i;
        /* pinned from the start, so that it never runs where the caller does */
        pthread_attr_t attr;
        bool with_attr = false;
        if (p->cpu && pthread_attr_init(&attr) == 0) {
            cpu_set_t one = only(p->cpu[i]);
            with_attr = pthread_attr_setaffinity_np(&attr, sizeof one, &one) == 0;
            if (!with_attr) pthread_attr_destroy(&attr);
        }
        int rc = pthread_create(&ws[i].thread, with_attr ? &attr : NULL, worker_main, &ws[i]);
        if (with_attr) {
            pthread_attr_destroy(&attr);
            if (rc != 0) { /* that CPU went away: run this one unpinned */
                p->cpu[i] = -1;
                rc = pthread_create(&ws[i].thread, NULL, worker_main, &ws[i]);
            }
        }
        if (rc != 0) {
            sb_printf(err, "thread pool: cannot create thread %d of %d: %s", i, nthreads, strerror(rc));
            p->size = i; /* rt_pool_free joins only the threads that exist */
            rt_pool_free(p);
            return NULL;
        }
    }
    return p;
}

void rt_pool_free(rt_pool *p)
{
    if (!p) return;
    pthread_mutex_lock(&p->lock);
    atomic_store(&p->stop, true);
    pthread_cond_broadcast(&p->work_cv);
    pthread_mutex_unlock(&p->lock);
    for (int i = 1; i < p->size; i++) pthread_join(p->workers[i].thread, NULL);
    pthread_cond_destroy(&p->work_cv);
    pthread_cond_destroy(&p->done_cv);
    pthread_mutex_destroy(&p->lock);
    pthread_mutex_destroy(&p->run_lock);
    free(p->workers);
    free(p->ranges);
    free(p->cpu);
    free(p);
}

int rt_pool_size(const rt_pool *p) { return p->size; }

int rt_pool_cpu(const rt_pool *p, int i) { return p->cpu && i >= 0 && i < p->size ? p->cpu[i] : -1; }

void rt_pool_run(rt_pool *p, int64_t n, rt_pool_fn *fn, void *arg)
{
    if (n <= 0) return;
    int k = (int64_t)p->size < n ? p->size : (int)n;
    if (k == 1) { /* no hand-off: the common small case costs one call */
        fn(arg, 0, n, 0);
        return;
    }
    pthread_mutex_lock(&p->run_lock);
    follow_caller(p);
    pthread_mutex_lock(&p->lock);
    p->fn = fn;
    p->arg = arg;
    p->n = n;
    p->unit = n > INT32_MAX ? (n + INT32_MAX - 1) / INT32_MAX : 1;
    int64_t units = (n + p->unit - 1) / p->unit;
    for (int w = 0; w < p->size; w++) /* contiguous shares: what runs at once lies far apart */
        atomic_store(&p->ranges[w].r, w < k ? pack((uint32_t)(units * w / k), (uint32_t)(units * (w + 1) / k)) : 0);
    p->nworkers = k;
    atomic_store(&p->pending, k - 1);
    atomic_fetch_add(&p->generation, 1);
    pthread_cond_broadcast(&p->work_cv);
    int64_t unit = p->unit;
    pthread_mutex_unlock(&p->lock);

    drain(p, fn, arg, n, unit, 0, k);

    uint32_t i = 0;
    int64_t until = 0;
    while (atomic_load_explicit(&p->pending, memory_order_relaxed) > 0 && poll_more(p, &i, &until)) {
    }
    pthread_mutex_lock(&p->lock);
    while (atomic_load(&p->pending) > 0) pthread_cond_wait(&p->done_cv, &p->lock);
    pthread_mutex_unlock(&p->lock);
    pthread_mutex_unlock(&p->run_lock);
}
