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
 * caret lines up and garbage input prints as something readable. */
static void quote_line(strbuf *m, const src_file *f, src_loc loc)
{
    size_t pos = 0;
    uint32_t line = 1;
    while (pos < f->len && line < loc.line) {
        if (f->text[pos] == '\n') line++;
        pos++;
    }
    if (line != loc.line) return;
    size_t end = pos;
    while (end < f->len && f->text[end] != '\n' && end - pos < 240) end++;
    sb_puts(m, "    ");
    for (size_t i = pos; i < end; i++) {
        unsigned char c = (unsigned char)f->text[i];
        sb_putc(m, (c < 0x20 || c >= 0x7f) ? ' ' : (char)c);
    }
    sb_puts(m, "\n    ");
    for (uint32_t c = 1; c < loc.col && c <= 240; c++) sb_putc(m, ' ');
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
