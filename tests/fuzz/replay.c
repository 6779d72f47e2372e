/* replay.c: runs the fuzz target's entry point (fuzz_frontend.c) over files,
 * without libFuzzer, so that saved findings stay regression tests in every
 * build. Each argument is a file or a directory (its files, not recursively,
 * in name order). Exits 0 when every file ran, 1 when one could not be read or
 * none was found; a finding itself aborts, as under the fuzzer. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "support/support.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int replay_file(const char *path)
{
    size_t len;
    const char *why;
    char *text = read_file(path, &len, &why);
    if (!text) {
        fprintf(stderr, "replay: cannot read %s: %s\n", path, why);
        return -1;
    }
    LLVMFuzzerTestOneInput((const uint8_t *)text, len);
    free(text);
    return 1;
}

static int by_name(const struct dirent **a, const struct dirent **b) { return strcmp((*a)->d_name, (*b)->d_name); }

int main(int argc, char **argv)
{
    int count = 0;
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) != 0) {
            fprintf(stderr, "replay: no such file or directory: %s\n", argv[i]);
            return 1;
        }
        if (!S_ISDIR(st.st_mode)) {
            if (replay_file(argv[i]) < 0) return 1;
            count++;
            continue;
        }
        struct dirent **names;
        int n = scandir(argv[i], &names, NULL, by_name);
        if (n < 0) {
            fprintf(stderr, "replay: cannot list %s\n", argv[i]);
            return 1;
        }
        int bad = 0;
        for (int k = 0; k < n; k++) {
            char path[4096];
            snprintf(path, sizeof path, "%s/%s", argv[i], names[k]->d_name);
            if (!bad && stat(path, &st) == 0 && S_ISREG(st.st_mode) && names[k]->d_name[0] != '.') {
                if (replay_file(path) < 0) bad = 1;
                count++;
            }
            free(names[k]);
        }
        free(names);
        if (bad) return 1;
    }
    printf("replay: %d files, no finding\n", count);
    return count > 0 ? 0 : 1;
}
