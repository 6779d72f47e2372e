/* files.c: see files.h. */
#include "files.h"

#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "support/support.h"

const char *test_src_dir(void)
{
    const char *d = getenv("SSMC_SOURCE_DIR");
    return d ? d : ".";
}

char *test_slurp(const char *rel, size_t *len)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", test_src_dir(), rel);
    const char *why;
    char *s = read_file(path, len, &why);
    if (!s) fail_msg("cannot read %s: %s", path, why);
    return s;
}

static int by_name(const void *a, const void *b) { return strcmp(a, b); }

int test_list_examples(char names[][128], int max)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/examples", test_src_dir());
    DIR *d = opendir(dir);
    if (!d) fail_msg("cannot open %s", dir);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < max) {
        size_t l = strlen(e->d_name);
        if (l > 4 && strcmp(e->d_name + l - 4, ".ssm") == 0) snprintf(names[n++], 128, "examples/%s", e->d_name);
    }
    closedir(d);
    qsort(names, (size_t)n, sizeof names[0], by_name);
    return n;
}
