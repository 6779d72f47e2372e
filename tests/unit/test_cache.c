/* test_cache.c: the on-disk kernel cache (runtime/cache.h): round trips,
 * misses, damaged entries read as misses and removed, entries removed on
 * request, unusable directories
 * reported as errors, and the directory chosen from the environment. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "runtime/cache.h"

static char tmpdir[64];

static int setup(void **state)
{
    strcpy(tmpdir, "/tmp/ssmc_cache_XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static void sub(char *out, size_t n, const char *name) { snprintf(out, n, "%s/%s", tmpdir, name); }

static rt_cache_key key_of(const char *src, const char *arch)
{
    const char *parts[] = {src, "-O3 --fmad=true", "nvrtc 13.0", arch};
    return rt_cache_key_make(parts, 4);
}

static bool exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static void entry_path(const char *dir, rt_cache_key k, char *out, size_t n)
{
    strbuf p = {0}, err = {0};
    assert_int_equal(rt_cache_entry_path(dir, k, &p, &err), SSMC_OK);
    snprintf(out, n, "%s", sb_cstr(&p));
    sb_free(&p);
    sb_free(&err);
}

/* Looks k up in dir and expects a miss. */
static void expect_miss(const char *dir, rt_cache_key k)
{
    strbuf err = {0};
    void *data = (void *)1;
    size_t len = 7;
    bool hit = true;
    assert_int_equal(rt_cache_get(dir, k, &data, &len, &hit, &err), SSMC_OK);
    assert_false(hit);
    assert_null(data);
    assert_int_equal(len, 0);
    sb_free(&err);
}

static void test_keys(void **state)
{
    const char *ab_c[] = {"ab", "c"}, *a_bc[] = {"a", "bc"}, *ab_c2[] = {"ab", "c"}, *abc[] = {"abc"};
    rt_cache_key k1 = rt_cache_key_make(ab_c, 2), k2 = rt_cache_key_make(a_bc, 2), k3 = rt_cache_key_make(ab_c2, 2),
                 k4 = rt_cache_key_make(abc, 1);
    assert_true(k1.hi == k3.hi && k1.lo == k3.lo);
    assert_false(k1.hi == k2.hi && k1.lo == k2.lo);
    assert_false(k1.hi == k4.hi && k1.lo == k4.lo);
    rt_cache_key sm90 = key_of("src", "sm_90"), sm80 = key_of("src", "sm_80");
    assert_false(sm90.hi == sm80.hi && sm90.lo == sm80.lo);
    char hex[33];
    rt_cache_key_hex((rt_cache_key){0x0123456789abcdefull, 0xfedcba9876543210ull}, hex);
    assert_string_equal(hex, "0123456789abcdeffedcba9876543210");
}

static void test_round_trip(void **state)
{
    char dir[128];
    sub(dir, sizeof dir, "rt");
    const char payload[] = "// PTX\n.version 8.0\n.target sm_90\n.entry k() { ret; }\n";
    rt_cache_key k = key_of("kernel source", "sm_90");
    strbuf err = {0};
    assert_int_equal(rt_cache_put(dir, k, payload, sizeof payload - 1, &err), SSMC_OK);

    void *data;
    size_t len;
    bool hit;
    assert_int_equal(rt_cache_get(dir, k, &data, &len, &hit, &err), SSMC_OK);
    assert_true(hit);
    assert_int_equal(len, sizeof payload - 1);
    assert_memory_equal(data, payload, len);
    assert_int_equal(((char *)data)[len], 0);
    free(data);

    /* another key misses; a replaced entry returns the new payload */
    expect_miss(dir, key_of("kernel source", "sm_80"));
    assert_int_equal(rt_cache_put(dir, k, "xyz", 3, &err), SSMC_OK);
    assert_int_equal(rt_cache_get(dir, k, &data, &len, &hit, &err), SSMC_OK);
    assert_true(hit);
    assert_int_equal(len, 3);
    assert_memory_equal(data, "xyz", 3);
    free(data);

    /* an empty payload is a hit, not a miss */
    rt_cache_key e = key_of("", "sm_90");
    assert_int_equal(rt_cache_put(dir, e, NULL, 0, &err), SSMC_OK);
    assert_int_equal(rt_cache_get(dir, e, &data, &len, &hit, &err), SSMC_OK);
    assert_true(hit);
    assert_int_equal(len, 0);
    free(data);

    /* no temporary files are left behind */
    DIR *d = opendir(dir);
    struct dirent *ent;
    int files = 0;
    while ((ent = readdir(d))) {
        if (!strcmp(ent->d_name, ".") || !strcmp(ent->d_name, "..")) continue;
        assert_int_not_equal(ent->d_name[0], '.');
        assert_int_equal(strlen(ent->d_name), 32);
        files++;
    }
    closedir(d);
    assert_int_equal(files, 2);
    sb_free(&err);
}

/* rt_cache_remove: the entry is gone (a miss), removing a missing one is no error. */
static void test_remove(void **state)
{
    char dir[128], path[256];
    sub(dir, sizeof dir, "rm");
    rt_cache_key k = key_of("removed", "sm_90");
    strbuf err = {0};
    assert_int_equal(rt_cache_put(dir, k, "abc", 3, &err), SSMC_OK);
    entry_path(dir, k, path, sizeof path);
    assert_true(exists(path));
    assert_int_equal(rt_cache_remove(dir, k, &err), SSMC_OK);
    assert_false(exists(path));
    expect_miss(dir, k);
    assert_int_equal(rt_cache_remove(dir, k, &err), SSMC_OK);
    sb_free(&err);
}

static void test_large_payload(void **state)
{
    char dir[128];
    sub(dir, sizeof dir, "large");
    size_t n = 3u << 20;
    unsigned char *big = malloc(n);
    for (size_t i = 0; i < n; i++) big[i] = (unsigned char)(i * 2654435761u >> 13);
    rt_cache_key k = key_of("big", "sm_90");
    strbuf err = {0};
    assert_int_equal(rt_cache_put(dir, k, big, n, &err), SSMC_OK);
    void *data;
    size_t len;
    bool hit;
    assert_int_equal(rt_cache_get(dir, k, &data, &len, &hit, &err), SSMC_OK);
    assert_true(hit);
    assert_int_equal(len, n);
    assert_memory_equal(data, big, n);
    free(data);
    free(big);
    sb_free(&err);
}

/* Rewrites byte `at` of the file (negative: from the end) with its complement. */
static void flip_byte(const char *path, long at)
{
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    fseek(f, at, at < 0 ? SEEK_END : SEEK_SET);
    long pos = ftell(f);
    int c = fgetc(f);
    fseek(f, pos, SEEK_SET);
    fputc(~c & 0xff, f);
    fclose(f);
}

static void test_corruption(void **state)
{
    char dir[128], path[256];
    sub(dir, sizeof dir, "corrupt");
    const char payload[] = "some cubin bytes \x7f" "ELF and more";
    strbuf err = {0};
    /* a damaged payload byte, length field, key, magic and header checksum */
    long offsets[] = {-3, 32, 20, 0, 50, 8};
    for (size_t i = 0; i < sizeof offsets / sizeof offsets[0]; i++) {
        rt_cache_key k = key_of("corrupt", i % 2 ? "sm_90" : "sm_89");
        assert_int_equal(rt_cache_put(dir, k, payload, sizeof payload, &err), SSMC_OK);
        entry_path(dir, k, path, sizeof path);
        flip_byte(path, offsets[i]);
        expect_miss(dir, k);
        if (offsets[i] != 8) assert_false(exists(path)); /* removed; a foreign format version is left alone */
    }
    sb_free(&err);
}

static void test_truncated(void **state)
{
    char dir[128], path[256];
    sub(dir, sizeof dir, "trunc");
    const char payload[] = "0123456789abcdefghijklmnopqrstuvwxyz";
    strbuf err = {0};
    off_t sizes[] = {0, 20, 56, 56 + 10};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        rt_cache_key k = key_of("trunc", "sm_90");
        assert_int_equal(rt_cache_put(dir, k, payload, sizeof payload - 1, &err), SSMC_OK);
        entry_path(dir, k, path, sizeof path);
        assert_int_equal(truncate(path, sizes[i]), 0);
        expect_miss(dir, k);
        assert_false(exists(path));
    }
    /* a longer file (bytes appended) is damaged too */
    rt_cache_key k = key_of("append", "sm_90");
    assert_int_equal(rt_cache_put(dir, k, payload, sizeof payload - 1, &err), SSMC_OK);
    entry_path(dir, k, path, sizeof path);
    FILE *f = fopen(path, "ab");
    fputs("junk", f);
    fclose(f);
    expect_miss(dir, k);
    sb_free(&err);
}

static void test_unwritable(void **state)
{
    char file[128], dir[160];
    sub(file, sizeof file, "plainfile");
    FILE *f = fopen(file, "w");
    fputs("x", f);
    fclose(f);
    rt_cache_key k = key_of("u", "sm_90");
    strbuf err = {0};

    /* a path through a regular file can never be created, even by root */
    snprintf(dir, sizeof dir, "%s/sub", file);
    assert_int_equal(rt_cache_put(dir, k, "abc", 3, &err), SSMC_ERR_IO);
    assert_non_null(strstr(sb_cstr(&err), "plainfile"));
    err.len = 0;
    void *data;
    size_t len;
    bool hit;
    assert_int_equal(rt_cache_get(dir, k, &data, &len, &hit, &err), SSMC_ERR_IO);
    assert_false(hit);
    assert_null(data);
    err.len = 0;
    assert_int_equal(rt_cache_put(file, k, "abc", 3, &err), SSMC_ERR_IO);
    assert_non_null(strstr(sb_cstr(&err), "not a directory"));

    /* a read-only directory (meaningless for root, who may write anyway) */
    if (geteuid() != 0) {
        sub(dir, sizeof dir, "readonly");
        assert_int_equal(mkdir(dir, 0500), 0);
        err.len = 0;
        assert_int_equal(rt_cache_put(dir, k, "abc", 3, &err), SSMC_ERR_IO);
        assert_non_null(strstr(sb_cstr(&err), "readonly"));
        chmod(dir, 0700);
    }
    sb_free(&err);
}

static void restore_env(const char *name, const char *saved)
{
    if (saved)
        setenv(name, saved, 1);
    else
        unsetenv(name);
}

static void test_environment(void **state)
{
    char *saved_cache = getenv("SSMC_CACHE_DIR") ? strdup(getenv("SSMC_CACHE_DIR")) : NULL;
    char *saved_xdg = getenv("XDG_CACHE_HOME") ? strdup(getenv("XDG_CACHE_HOME")) : NULL;
    char *saved_home = getenv("HOME") ? strdup(getenv("HOME")) : NULL;
    char dir[128], want[256], hex[33];
    rt_cache_key k = key_of("env", "sm_90");
    rt_cache_key_hex(k, hex);
    strbuf err = {0};

    sub(dir, sizeof dir, "from_env/nested");
    setenv("SSMC_CACHE_DIR", dir, 1);
    assert_int_equal(rt_cache_put(NULL, k, "e", 1, &err), SSMC_OK);
    snprintf(want, sizeof want, "%s/%s", dir, hex);
    assert_true(exists(want));

    unsetenv("SSMC_CACHE_DIR");
    sub(dir, sizeof dir, "xdg");
    setenv("XDG_CACHE_HOME", dir, 1);
    assert_int_equal(rt_cache_put(NULL, k, "x", 1, &err), SSMC_OK);
    snprintf(want, sizeof want, "%s/ssmc/%s", dir, hex);
    assert_true(exists(want));

    unsetenv("XDG_CACHE_HOME");
    sub(dir, sizeof dir, "home");
    setenv("HOME", dir, 1);
    assert_int_equal(rt_cache_put(NULL, k, "h", 1, &err), SSMC_OK);
    snprintf(want, sizeof want, "%s/.cache/ssmc/%s", dir, hex);
    assert_true(exists(want));
    strbuf path = {0};
    assert_int_equal(rt_cache_dir(NULL, &path, &err), SSMC_OK);
    snprintf(want, sizeof want, "%s/.cache/ssmc", dir);
    assert_string_equal(sb_cstr(&path), want);
    sb_free(&path);

    unsetenv("HOME");
    err.len = 0;
    assert_int_equal(rt_cache_put(NULL, k, "h", 1, &err), SSMC_ERR_IO);
    assert_non_null(strstr(sb_cstr(&err), "SSMC_CACHE_DIR"));

    restore_env("SSMC_CACHE_DIR", saved_cache);
    restore_env("XDG_CACHE_HOME", saved_xdg);
    restore_env("HOME", saved_home);
    free(saved_cache);
    free(saved_xdg);
    free(saved_home);
    sb_free(&err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keys),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_remove),
        cmocka_unit_test(test_large_payload),
        cmocka_unit_test(test_corruption),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_unwritable),
        cmocka_unit_test(test_environment),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
