/* test_pool.c: the thread pool (runtime/pool.h): every index covered exactly
 * once, small and empty ranges, many consecutive runs, pools used from
 * several threads at once, and where the workers run (pinning). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "runtime/pool.h"

typedef struct sum_job {
    int64_t (*partial)[8];   /* one cache line per worker */
    unsigned char *hits;     /* hits[i]: times index i was visited */
    atomic_int calls;
    int size;
    atomic_int bad;          /* a range or worker index out of bounds */
} sum_job;

static void sum_range(void *arg, int64_t begin, int64_t end, int worker)
{
    sum_job *j = arg;
    atomic_fetch_add(&j->calls, 1);
    if (begin >= end || worker < 0 || worker >= j->size) {
        atomic_store(&j->bad, 1);
        return;
    }
    int64_t s = 0;
    for (int64_t i = begin; i < end; i++) {
        s += i;
        if (j->hits) j->hits[i]++;
    }
    j->partial[worker][0] += s;
}

/* Runs a sum of 0..n-1 on p; true when the total, the number of calls and (if
 * tracked) the coverage are right. Asserts nothing, so threads may call it. */
static bool sum_ok(rt_pool *p, int64_t n, bool track)
{
    sum_job j = {0};
    j.size = rt_pool_size(p);
    j.partial = calloc((size_t)j.size, sizeof *j.partial);
    if (track) j.hits = calloc((size_t)(n > 0 ? n : 1), 1);
    rt_pool_run(p, n, sum_range, &j);
    int64_t total = 0;
    for (int w = 0; w < j.size; w++) total += j.partial[w][0];
    /* pool.h: k = min(size, n) workers; one call when k is 1, else at least one
     * per worker and at most one per value */
    int64_t k = n < j.size ? n : j.size, calls = atomic_load(&j.calls);
    bool calls_ok = n <= 0 ? calls == 0 : k == 1 ? calls == 1 : calls >= 1 && calls <= n;
    bool ok = !atomic_load(&j.bad) && total == (n > 0 ? n * (n - 1) / 2 : 0) && calls_ok;
    for (int64_t i = 0; track && i < n; i++) ok = ok && j.hits[i] == 1;
    free(j.hits);
    free(j.partial);
    return ok;
}

static void check_sum(rt_pool *p, int64_t n, bool track)
{
    if (!sum_ok(p, n, track)) fail_msg("sum over %lld with %d workers is wrong", (long long)n, rt_pool_size(p));
}

static void test_sums(void **state)
{
    strbuf err = {0};
    rt_pool *p = rt_pool_new(4, &err);
    assert_non_null(p);
    assert_int_equal(rt_pool_size(p), 4);
    check_sum(p, 1000003, true);
    check_sum(p, 4, true);
    check_sum(p, 5, true);
    rt_pool_free(p);
    sb_free(&err);
}

static void test_all_cores(void **state)
{
    strbuf err = {0};
    rt_pool *p = rt_pool_new(0, &err);
    assert_non_null(p);
    assert_true(rt_pool_size(p) >= 1);
    check_sum(p, 100000, true);
    rt_pool_free(p);
    rt_pool_free(NULL);
    assert_null(rt_pool_new(-1, &err));
    assert_true(err.len > 0);
    sb_free(&err);
}

static void test_small_n(void **state)
{
    strbuf err = {0};
    rt_pool *p = rt_pool_new(8, &err);
    for (int64_t n = 1; n <= 9; n++) check_sum(p, n, true);
    rt_pool_free(p);
    p = rt_pool_new(1, &err);
    check_sum(p, 1000, true);
    rt_pool_free(p);
    sb_free(&err);
}

static void test_empty(void **state)
{
    strbuf err = {0};
    rt_pool *p = rt_pool_new(3, &err);
    check_sum(p, 0, false);
    check_sum(p, -5, false);
    rt_pool_free(p);
    sb_free(&err);
}

static void test_many_runs(void **state)
{
    strbuf err = {0};
    rt_pool *p = rt_pool_new(4, &err);
    for (int r = 0; r < 20000; r++) check_sum(p, 1 + r % 13, false);
    rt_pool_free(p);
    /* creating and freeing pools in a loop leaks nothing and never hangs */
    for (int r = 0; r < 50; r++) {
        p = rt_pool_new(3, &err);
        if (r % 2) check_sum(p, 100, false);
        rt_pool_free(p);
    }
    sb_free(&err);
}

typedef struct thread_arg {
    rt_pool *shared; /* NULL: make a pool of one's own */
    int runs;
    atomic_int failures;
} thread_arg;

static void *pool_user(void *a_)
{
    thread_arg *a = a_;
    strbuf err = {0};
    rt_pool *p = a->shared ? a->shared : rt_pool_new(3, &err);
    for (int r = 0; r < a->runs; r++)
        if (!p || !sum_ok(p, 1000 + r, r % 50 == 0)) atomic_fetch_add(&a->failures, 1);
    if (!a->shared) rt_pool_free(p);
    sb_free(&err);
    return NULL;
}

static void test_two_pools_two_threads(void **state)
{
    pthread_t t[2];
    thread_arg a = {NULL, 2000, 0};
    for (int i = 0; i < 2; i++) assert_int_equal(pthread_create(&t[i], NULL, pool_user, &a), 0);
    for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    assert_int_equal(atomic_load(&a.failures), 0);
}

static void test_one_pool_two_threads(void **state)
{
    strbuf err = {0};
    rt_pool *p = rt_pool_new(4, &err);
    pthread_t t[2];
    thread_arg a = {p, 2000, 0};
    for (int i = 0; i < 2; i++) assert_int_equal(pthread_create(&t[i], NULL, pool_user, &a), 0);
    for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    assert_int_equal(atomic_load(&a.failures), 0);
    rt_pool_free(p);
    sb_free(&err);
}

/* Records, for every call, the CPU that worker ran on. Every call but worker
 * 1's waits (up to 10 s) until worker 1 has run, so worker 1 always gets a
 * chunk however late it wakes. */
typedef struct where_job {
    int cpu_of[64];          /* last CPU seen per worker, -1 none */
    atomic_int strays;       /* calls of worker w on a CPU other than want[w] */
    atomic_int one_ran;
    const int *want;         /* want[w], or NULL to record only */
} where_job;

static void where(void *arg, int64_t begin, int64_t end, int worker)
{
    where_job *j = arg;
    (void)begin, (void)end;
    if (worker == 1) {
        atomic_store(&j->one_ran, 1);
    } else {
        struct timespec t0, t;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        do {
            sched_yield();
            clock_gettime(CLOCK_MONOTONIC, &t);
        } while (!atomic_load(&j->one_ran) && t.tv_sec - t0.tv_sec < 10);
    }
    int c = sched_getcpu();
    j->cpu_of[worker] = c;
    if (j->want && worker > 0 && c != j->want[worker]) atomic_fetch_add(&j->strays, 1);
}

static int allowed_cpus(cpu_set_t *set)
{
    assert_int_equal(sched_getaffinity(0, sizeof *set, set), 0);
    return CPU_COUNT(set);
}

static void test_pinning(void **state)
{
    cpu_set_t mine;
    int ncpu = allowed_cpus(&mine);
    if (ncpu < 2) skip(); /* one CPU: nothing to place */
    unsetenv("SSMC_PIN");
    strbuf err = {0};
    /* a pool pins when it has as many threads as the CPUs it may use: give
     * this thread (whose mask the pool reads and its workers inherit) 2-4 */
    int size = ncpu < 4 ? ncpu : 4;
    cpu_set_t some;
    CPU_ZERO(&some);
    for (int c = 0, k = 0; c < CPU_SETSIZE && k < size; c++)
        if (CPU_ISSET(c, &mine)) CPU_SET(c, &some), k++;
    assert_int_equal(sched_setaffinity(0, sizeof some, &some), 0);
    rt_pool *p = rt_pool_new(size, &err);
    assert_non_null(p);
    /* every thread, the caller's slot included, has a CPU of its own, from the allowed set */
    int want[4];
    for (int i = 0; i < size; i++) {
        want[i] = rt_pool_cpu(p, i);
        assert_true(want[i] >= 0 && CPU_ISSET(want[i], &some));
        for (int k = 0; k < i; k++) assert_int_not_equal(want[i], want[k]);
    }
    assert_int_equal(rt_pool_cpu(p, size), -1);
    where_job j = {.want = want};
    rt_pool_run(p, 64, where, &j);
    assert_int_equal(atomic_load(&j.one_ran), 1);
    assert_int_equal(atomic_load(&j.strays), 0);

    /* the caller moves onto worker 1's CPU: that worker moves to the CPU the caller left */
    int taken = want[1], left = want[0];
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(taken, &one);
    assert_int_equal(sched_setaffinity(0, sizeof one, &one), 0);
    where_job j2 = {0};
    rt_pool_run(p, 64, where, &j2);
    assert_int_equal(sched_setaffinity(0, sizeof some, &some), 0);
    assert_int_equal(atomic_load(&j2.one_ran), 1);
    assert_int_equal(rt_pool_cpu(p, 0), taken);
    assert_int_equal(rt_pool_cpu(p, 1), left);
    assert_int_equal(j2.cpu_of[0], taken);
    assert_int_equal(j2.cpu_of[1], left);
    check_sum(p, 100000, true);
    rt_pool_free(p);
    assert_int_equal(sched_setaffinity(0, sizeof mine, &mine), 0);
    sb_free(&err);
}

static void test_no_pinning(void **state)
{
    cpu_set_t mine;
    int ncpu = allowed_cpus(&mine);
    strbuf err = {0};
    /* more threads than CPUs, or fewer: the scheduler places them */
    rt_pool *p = rt_pool_new(ncpu + 1, &err);
    assert_non_null(p);
    for (int i = 0; i <= ncpu; i++) assert_int_equal(rt_pool_cpu(p, i), -1);
    check_sum(p, 100000, true);
    rt_pool_free(p);
    if (ncpu >= 3) {
        p = rt_pool_new(2, &err);
        assert_int_equal(rt_pool_cpu(p, 1), -1);
        check_sum(p, 1000, true);
        rt_pool_free(p);
    }
    /* SSMC_PIN=0 turns it off; one thread never pins */
    setenv("SSMC_PIN", "0", 1);
    p = rt_pool_new(2, &err);
    assert_int_equal(rt_pool_cpu(p, 0), -1);
    assert_int_equal(rt_pool_cpu(p, 1), -1);
    check_sum(p, 1000, true);
    rt_pool_free(p);
    unsetenv("SSMC_PIN");
    p = rt_pool_new(1, &err);
    assert_int_equal(rt_pool_cpu(p, 0), -1);
    rt_pool_free(p);
    sb_free(&err);
}

/* Every worker's first call, while all of them wait for each other in it: with
 * no worker free to steal, each one starts at the front of its own share. */
typedef struct first_job {
    int k;
    atomic_int arrived;
    int64_t first[8];
    atomic_int timed_out;
} first_job;

static void first_calls(void *arg, int64_t begin, int64_t end, int worker)
{
    first_job *j = arg;
    (void)end;
    if (j->first[worker] >= 0) return;
    j->first[worker] = begin;
    atomic_fetch_add(&j->arrived, 1);
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do {
        sched_yield();
        clock_gettime(CLOCK_MONOTONIC, &t);
    } while (atomic_load(&j->arrived) < j->k && t.tv_sec - t0.tv_sec < 10);
    if (atomic_load(&j->arrived) < j->k) atomic_store(&j->timed_out, 1);
}

static void test_contiguous_shares(void **state)
{
    strbuf err = {0};
    for (int k = 2; k <= 4; k++) {
        rt_pool *p = rt_pool_new(k, &err);
        assert_non_null(p);
        for (int64_t n = k; n <= 40; n += 9) {
            first_job j = {.k = k};
            for (int w = 0; w < 8; w++) j.first[w] = -1;
            rt_pool_run(p, n, first_calls, &j);
            assert_int_equal(atomic_load(&j.timed_out), 0);
            for (int w = 0; w < k; w++) assert_int_equal(j.first[w], n * w / k); /* pool.h: [n w / k, n (w + 1) / k) */
        }
        rt_pool_free(p);
    }
    sb_free(&err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sums),
        cmocka_unit_test(test_all_cores),
        cmocka_unit_test(test_small_n),
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_many_runs),
        cmocka_unit_test(test_two_pools_two_threads),
        cmocka_unit_test(test_one_pool_two_threads),
        cmocka_unit_test(test_contiguous_shares),
        cmocka_unit_test(test_pinning),
        cmocka_unit_test(test_no_pinning),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
