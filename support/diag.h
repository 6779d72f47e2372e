/* diag.h: diagnostics. The library never prints: every error is formatted into
 * a diag sink (and handed to the host's callback, if any); the CLI prints what
 * the sink collected. Source errors read
 *   file:line:col: error: message
 *       the source line
 *       ^ (under the offending token)
 */
#ifndef SSMC_DIAG_H
#define SSMC_DIAG_H

#include <stdint.h>
#include "support.h"

typedef struct src_loc {
    uint32_t line, col; /* 1-based; 0 for "no location" */
} src_loc;

typedef struct src_file {
    const char *name;
    const char *text;
    size_t len;
} src_file;

typedef struct diag {
    strbuf text; /* every message of the current call, each ending in '\n' */
    int nerrors;
    void (*callback)(void *ud, const char *msg);
    void *ud;
} diag;

void diag_reset(diag *d);
void diag_free(diag *d);
/* An error at a source location: the message, the quoted line, a caret. */
void diag_at(diag *d, const src_file *f, src_loc loc, const char *fmt, ...);
/* An error without a location: "error: message". */
void diag_error(diag *d, const char *fmt, ...);

#endif
