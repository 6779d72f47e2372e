/* diag.c: formatting of diagnostics (see diag.h). */
#include "diag.h"

#include <stdio.h>

void diag_reset(diag *d)
{
    sb_free(&d->text);
    d->nerrors = 0;
}

void diag_free(diag *d) { sb_free(&d->text); }

static void emit(diag *d, strbuf *msg)
{
    d->nerrors++;
    if (msg->failed) {
        sb_free(msg);
        sb_puts(msg, "error: out of memory while reporting an error\n");
    }
    sb_puts(&d->text, sb_cstr(msg));
    if (d->callback) d->callback(d->ud, sb_cstr(msg));
    sb_free(msg);
}

/* Copies the source line, turning tabs and control bytes into spaces so the
 * caret lines up and garbage input prints as something readable. A long line
 * is quoted as a window around the column, its cut ends marked with "...". */
#define QUOTE_WIDTH 160
static void quote_line(strbuf *m, const src_file *f, src_loc loc)
{
    /* lines end at LF, CR or CR LF, as the lexer counts them */
    size_t pos = 0;
    uint32_t line = 1;
    while (pos < f->len && line < loc.line) {
        char c = f->text[pos++];
        if (c == '\r' && pos < f->len && f->text[pos] == '\n') pos++;
        if (c == '\n' || c == '\r') line++;
    }
    if (line != loc.line) return;
    size_t eol = pos;
    while (eol < f->len && f->text[eol] != '\n' && f->text[eol] != '\r') eol++;
    size_t col = loc.col ? loc.col - 1 : 0; /* 0-based byte offset of the caret */
    size_t skip = col + 40 > QUOTE_WIDTH ? col - QUOTE_WIDTH / 2 : 0;
    if (skip > eol - pos) skip = eol - pos;
    size_t start = pos + skip;
    size_t end = eol - start > QUOTE_WIDTH ? start + QUOTE_WIDTH : eol;
    sb_puts(m, skip ? "    ..." : "    ");
    for (size_t i = start; i < end; i++) {
        unsigned char c = (unsigned char)f->text[i];
        sb_putc(m, (c < 0x20 || c >= 0x7f) ? ' ' : (char)c);
    }
    if (end < eol) sb_puts(m, "...");
    sb_puts(m, skip ? "\n       " : "\n    ");
    for (size_t c = skip; c < col && c < skip + QUOTE_WIDTH; c++) sb_putc(m, ' ');
    sb_puts(m, "^\n");
}

void diag_at(diag *d, const src_file *f, src_loc loc, const char *fmt, ...)
{
    strbuf m = {0};
    sb_printf(&m, "%s:%u:%u: error: ", f->name, loc.line, loc.col);
    va_list ap;
    va_start(ap, fmt);
    sb_vprintf(&m, fmt, ap);
    va_end(ap);
    sb_putc(&m, '\n');
    if (loc.line) quote_line(&m, f, loc);
    emit(d, &m);
}

void diag_error(diag *d, const char *fmt, ...)
{
    strbuf m = {0};
    sb_puts(&m, "error: ");
    va_list ap;
    va_start(ap, fmt);
    sb_vprintf(&m, fmt, ap);
    va_end(ap);
    sb_putc(&m, '\n');
    emit(d, &m);
}
