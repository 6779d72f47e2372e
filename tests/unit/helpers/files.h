/* files.h: source files for tests: the checkout's root (SSMC_SOURCE_DIR, set
 * by ctest), whole files relative to it, and the example list. Failures end
 * the running CMocka test with a message. */
#ifndef SSMC_TEST_FILES_H
#define SSMC_TEST_FILES_H

#include <stddef.h>

const char *test_src_dir(void);
/* Reads SSMC_SOURCE_DIR/rel (NUL-terminated, malloc'd). */
char *test_slurp(const char *rel, size_t *len);
/* The example files, sorted, as "examples/NAME.ssm"; returns how many. */
int test_list_examples(char names[][128], int max);

#endif
