/* pool.c: the thread pool declared in pool.h.
 *
 * One mutex and two condition variables per pool. A run publishes the job and
 * bumps a generation counter; each worker compares the generation with the last
 * one it saw, then claims chunks of [0, n) from an atomic counter until none is
 * left, and counts down `pending`; the caller waits for zero. Claiming rather
 * than a fixed range per worker keeps every core busy to the end when cores run
 * at different speeds (a shared or hybrid machine; other load on one core): a
 * run's items are few and long (a whole sequence each), so the atomic costs
 * nothing. A worker beyond min(size, n) only notes the generation, so a run
 * never waits for threads it did not need. Guarantees: when rt_pool_run
 * returns, every fn call has returned and its writes are visible to the caller
 * (the mutex orders them). */
#include "runtime/pool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct pool_worker {
    rt_pool *pool;
    int index;
    pthread_t thread;
} pool_worker;

struct rt_pool {
    int size;               /* workers, the caller included */
    pool_worker *workers;   /* workers[1..size); workers[0] is the caller */
    pthread_mutex_t run_lock; /* serialises runs from different threads */
    pthread_mutex_t lock;   /* guards everything below */
    pthread_cond_t work_cv, done_cv;
    uint64_t generation;
    bool stop;
    rt_pool_fn *fn;
    void *arg;
    int64_t n, chunk;
    atomic_int_least64_t next; /* the first value not claimed yet */
    int nworkers;           /* workers in this run: min(size, n) */
    int pending;            /* workers 1..nworkers-1 not finished yet */
};

/* Claims and runs chunks of the current job until none is left. */
static void drain(rt_pool *p, rt_pool_fn *fn, void *arg, int64_t n, int64_t chunk, int worker)
{
    for (;;) {
        int64_t begin = atomic_fetch_add(&p->next, chunk);
        if (begin >= n) return;
        fn(arg, begin, begin + chunk < n ? begin + chunk : n, worker);
    }
}

static void *worker_main(void *p_)
{
    pool_worker *w = p_;
    rt_pool *p = w->pool;
    /* Not p->generation: a first run may already have started before this
     * thread got here, and it counts on this worker. */
    uint64_t seen = 0;
    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (p->generation == seen && !p->stop) pthread_cond_wait(&p->work_cv, &p->lock);
        if (p->stop) break;
        seen = p->generation;
        if (w->index >= p->nworkers) continue;
        rt_pool_fn *fn = p->fn;
        void *arg = p->arg;
        int64_t n = p->n, chunk = p->chunk;
        pthread_mutex_unlock(&p->lock);
        drain(p, fn, arg, n, chunk, w->index);
        pthread_mutex_lock(&p->lock);
        if (--p->pending == 0) pthread_cond_signal(&p->done_cv);
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

rt_pool *rt_pool_new(int nthreads, strbuf *err)
{
    if (nthreads < 0) {
        sb_printf(err, "thread pool: %d threads requested", nthreads);
        return NULL;
    }
    if (nthreads == 0) nthreads = available_cores();
    rt_pool *p = calloc(1, sizeof *p);
    pool_worker *ws = calloc((size_t)nthreads, sizeof *ws);
    if (!p || !ws) {
        free(p);
        free(ws);
        sb_puts(err, "thread pool: out of memory");
        return NULL;
    }
    p->size = nthreads;
    p->workers = ws;
    pthread_mutex_init(&p->run_lock, NULL);
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->work_cv, NULL);
    pthread_cond_init(&p->done_cv, NULL);
    for (int i = 1; i < nthreads; i++) {
        ws[i].pool = p;
        ws[i].index = i;
        int rc = pthread_create(&ws[i].thread, NULL, worker_main, &ws[i]);
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
    p->stop = true;
    pthread_cond_broadcast(&p->work_cv);
    pthread_mutex_unlock(&p->lock);
    for (int i = 1; i < p->size; i++) pthread_join(p->workers[i].thread, NULL);
    pthread_cond_destroy(&p->work_cv);
    pthread_cond_destroy(&p->done_cv);
    pthread_mutex_destroy(&p->lock);
    pthread_mutex_destroy(&p->run_lock);
    free(p->workers);
    free(p);
}

int rt_pool_size(const rt_pool *p) { return p->size; }

void rt_pool_run(rt_pool *p, int64_t n, rt_pool_fn *fn, void *arg)
{
    if (n <= 0) return;
    int k = (int64_t)p->size < n ? p->size : (int)n;
    if (k == 1) { /* no hand-off: the common small case costs one call */
        fn(arg, 0, n, 0);
        return;
    }
    pthread_mutex_lock(&p->run_lock);
    pthread_mutex_lock(&p->lock);
    p->fn = fn;
    p->arg = arg;
    p->n = n;
    p->chunk = n / ((int64_t)k * 4) > 1 ? n / ((int64_t)k * 4) : 1; /* about 4 chunks per worker */
    atomic_store(&p->next, 0);
    p->nworkers = k;
    p->pending = k - 1;
    p->generation++;
    pthread_cond_broadcast(&p->work_cv);
    pthread_mutex_unlock(&p->lock);

    drain(p, fn, arg, n, p->chunk, 0);

    pthread_mutex_lock(&p->lock);
    while (p->pending > 0) pthread_cond_wait(&p->done_cv, &p->lock);
    pthread_mutex_unlock(&p->lock);
    pthread_mutex_unlock(&p->run_lock);
}
