/* test_env.c: the environment is read in one place (support/env.h): its
 * accessors, no getenv anywhere else in the library's sources, every row read
 * where the table says, and every row documented in docs/api.md
 * ("Environment"). */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "support/env.h"
#include "helpers/files.h"

static void test_accessors(void **state)
{
    (void)state;
    setenv("SSMC_SPIN_US", "250", 1);
    assert_string_equal(env_get(ENV_SSMC_SPIN_US), "250");
    assert_int_equal(env_long(ENV_SSMC_SPIN_US, 0, 1000, 7), 250);
    assert_int_equal(env_long(ENV_SSMC_SPIN_US, 0, 100, 7), 7); /* out of range */
    setenv("SSMC_SPIN_US", "25x", 1);
    assert_int_equal(env_long(ENV_SSMC_SPIN_US, 0, 1000, 7), 7); /* not a number */
    setenv("SSMC_SPIN_US", "", 1);
    assert_null(env_get(ENV_SSMC_SPIN_US)); /* empty is unset */
    assert_int_equal(env_long(ENV_SSMC_SPIN_US, 0, 1000, 7), 7);
    unsetenv("SSMC_SPIN_US");
    assert_null(env_get(ENV_SSMC_SPIN_US));
    assert_null(env_get(ENV_COUNT));
    for (int i = 0; i < ENV_COUNT; i++) {
        assert_non_null(env_name((env_var)i));
        for (int j = 0; j < i; j++) assert_string_not_equal(env_name((env_var)i), env_name((env_var)j));
    }
}

static const char *const dirs[] = {"codegen", "driver", "frontend", "include", "ir", "passes", "runtime", "support"};

/* Every .c and .h file of the library: calls `fn` with its path and text. */
static void each_source(void (*fn)(const char *rel, const char *text, void *ctx), void *ctx)
{
    for (size_t k = 0; k < sizeof dirs / sizeof dirs[0]; k++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", test_src_dir(), dirs[k]);
        DIR *dir = opendir(path);
        if (!dir) fail_msg("cannot open %s", path);
        struct dirent *e;
        while ((e = readdir(dir))) {
            size_t n = strlen(e->d_name);
            if (n < 3 || (strcmp(e->d_name + n - 2, ".c") != 0 && strcmp(e->d_name + n - 2, ".h") != 0)) continue;
            char rel[512];
            snprintf(rel, sizeof rel, "%s/%s", dirs[k], e->d_name);
            size_t len;
            char *text = test_slurp(rel, &len);
            fn(rel, text, ctx);
            free(text);
        }
        closedir(dir);
    }
}

static void no_getenv(const char *rel, const char *text, void *ctx)
{
    int *found = ctx;
    if (strcmp(rel, "support/env.c") == 0) return;
    for (const char *p = strstr(text, "getenv("); p; p = strstr(p + 1, "getenv(")) {
        int line = 1;
        for (const char *q = text; q < p; q++) line += *q == '\n';
        printf("# %s:%d calls getenv: read the variable through support/env.h\n", rel, line);
        (*found)++;
    }
}

static void test_one_place(void **state)
{
    (void)state;
    int found = 0;
    each_source(no_getenv, &found);
    assert_int_equal(found, 0);
    /* and each row is read where the table says */
    for (int i = 0; i < ENV_COUNT; i++) {
        size_t len;
        char *text = test_slurp(env_where((env_var)i), &len), key[64];
        snprintf(key, sizeof key, "ENV_%s", env_name((env_var)i));
        if (!strstr(text, key)) fail_msg("%s does not read %s", env_where((env_var)i), key);
        free(text);
    }
}

static void test_documented(void **state)
{
    (void)state;
    size_t len;
    char *doc = test_slurp("docs/api.md", &len);
    char *sec = strstr(doc, "\n## Environment");
    if (!sec) fail_msg("docs/api.md has no '## Environment' section");
    char *end = strstr(sec + 1, "\n## ");
    if (end) *end = 0;
    for (int i = 0; i < ENV_COUNT; i++) {
        char key[64];
        snprintf(key, sizeof key, "`%s`", env_name((env_var)i));
        if (!strstr(sec, key)) fail_msg("docs/api.md, Environment, does not list %s", key);
    }
    free(doc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accessors),
        cmocka_unit_test(test_one_place),
        cmocka_unit_test(test_documented),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
