/* lex.re: the scanner, generated into lex.c by
 *   re2c -W -i --no-generation-date --no-version -o frontend/lex.c frontend/lex.re
 * The input is NUL-terminated; a NUL before the end is an invalid byte. Line and
 * column are 1-based byte positions; a line ends at LF, CR or CR LF (files
 * from Unix, classic Mac OS and Windows), also inside comments. */
#include "frontend/lex.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const tok_names[] = {
#define X(name, text) text,
    TOKENS(X)
#undef X
};

void lex_init(lexer *lx, const char *text, size_t len)
{
    lx->cur = text;
    lx->end = text + len;
    lx->line_start = text;
    lx->line = 1;
}

static token make(lexer *lx, tok_kind k, const char *start)
{
    token t = {0};
    t.kind = k;
    t.start = start;
    t.len = (uint32_t)(lx->cur - start);
    t.loc.line = lx->line;
    t.loc.col = (uint32_t)(start - lx->line_start) + 1;
    return t;
}

static token error(lexer *lx, const char *start, const char *msg)
{
    token t = make(lx, TOK_ERROR, start);
    t.error = msg;
    return t;
}

static token number(lexer *lx, const char *start, bool integer)
{
    char buf[64];
    size_t n = (size_t)(lx->cur - start);
    if (n >= sizeof buf) return error(lx, start, "numeric literal is too long");
    memcpy(buf, start, n);
    buf[n] = 0;
    token t = make(lx, integer ? TOK_INT : TOK_FLOAT, start);
    errno = 0;
    if (integer) {
        long long v = strtoll(buf, NULL, 10);
        /* 2^53 keeps every integer exact in the double the token carries */
        if (errno == ERANGE || v > (1ll << 53)) return error(lx, start, "integer literal is too large");
        t.num = (double)v;
    } else {
        t.num = strtod(buf, NULL);
        if (!isfinite(t.num)) return error(lx, start, "numeric literal is out of range");
    }
    return t;
}

token lex_next(lexer *lx)
{
    const char *YYMARKER;
    for (;;) {
        const char *start = lx->cur;
        /*!re2c
        re2c:define:YYCTYPE = "unsigned char";
        re2c:define:YYCURSOR = "lx->cur";
        re2c:yyfill:enable = 0;
        re2c:flags:utf-8 = 0;

        digits = [0-9]+;
        exp    = [eE] [+-]? digits;

        "\x00" {
            if (start >= lx->end) { lx->cur = start; return make(lx, TOK_EOF, start); }
            return error(lx, start, "invalid byte 0x00");
        }
        "\r\n" | "\n" | "\r" { lx->line++; lx->line_start = lx->cur; continue; }
        [ \t\v\f]+        { continue; }
        "//" [^\n\r\x00]*  { continue; }
        "/*" {
            /* the error points at the opening delimiter, not where the text ran out */
            uint32_t open_line = lx->line;
            const char *open_line_start = lx->line_start;
            for (;;) {
                if (lx->cur >= lx->end) {
                    lx->line = open_line;
                    lx->line_start = open_line_start;
                    lx->cur = start + 2;
                    return error(lx, start, "unterminated comment");
                }
                if (lx->cur[0] == '*' && lx->cur + 1 < lx->end && lx->cur[1] == '/') { lx->cur += 2; break; }
                if (lx->cur[0] == '\n' || lx->cur[0] == '\r') {
                    if (lx->cur[0] == '\r' && lx->cur + 1 < lx->end && lx->cur[1] == '\n') lx->cur++;
                    lx->line++;
                    lx->line_start = lx->cur + 1;
                }
                lx->cur++;
            }
            continue;
        }

        "model"  { return make(lx, TOK_MODEL, start); }
        "dim"    { return make(lx, TOK_DIM, start); }
        "input"  { return make(lx, TOK_INPUT, start); }
        "param"  { return make(lx, TOK_PARAM, start); }
        "state"  { return make(lx, TOK_STATE, start); }
        "output" { return make(lx, TOK_OUTPUT, start); }
        "let"    { return make(lx, TOK_LET, start); }
        "sum"    { return make(lx, TOK_SUM, start); }
        "max"    { return make(lx, TOK_MAX, start); }
        "t"      { return make(lx, TOK_T, start); }
        "T"      { return make(lx, TOK_BIG_T, start); }
        [A-Za-z_][A-Za-z0-9_]* {
            if (lx->cur - start > 255) return error(lx, start, "identifier is too long");
            return make(lx, TOK_IDENT, start);
        }

        digits                       { return number(lx, start, true); }
        digits "." digits exp?       { return number(lx, start, false); }
        digits exp                   { return number(lx, start, false); }
        digits "." / [^0-9]          { return error(lx, start, "a digit must follow the decimal point"); }
        "." digits                   { return error(lx, start, "a number must start with a digit ('.5' is written '0.5')"); }

        "{" { return make(lx, TOK_LBRACE, start); }
        "}" { return make(lx, TOK_RBRACE, start); }
        "[" { return make(lx, TOK_LBRACK, start); }
        "]" { return make(lx, TOK_RBRACK, start); }
        "(" { return make(lx, TOK_LPAREN, start); }
        ")" { return make(lx, TOK_RPAREN, start); }
        "," { return make(lx, TOK_COMMA, start); }
        ";" { return make(lx, TOK_SEMI, start); }
        "=" { return make(lx, TOK_ASSIGN, start); }
        "+" { return make(lx, TOK_PLUS, start); }
        "-" { return make(lx, TOK_MINUS, start); }
        "*" { return make(lx, TOK_STAR, start); }
        "/" { return make(lx, TOK_SLASH, start); }
        ":" { return make(lx, TOK_COLON, start); }
        "<"  { return make(lx, TOK_LT, start); }
        "<=" { return make(lx, TOK_LE, start); }
        ">"  { return make(lx, TOK_GT, start); }
        ">=" { return make(lx, TOK_GE, start); }
        "==" { return make(lx, TOK_EQ, start); }
        "!=" { return make(lx, TOK_NE, start); }

        * {
            unsigned char c = (unsigned char)*start;
            if (c >= 0x20 && c < 0x7f)
                snprintf(lx->errbuf, sizeof lx->errbuf, "unexpected character '%c'", c);
            else
                snprintf(lx->errbuf, sizeof lx->errbuf, "invalid byte 0x%02x", c);
            return error(lx, start, lx->errbuf);
        }
        */
    }
}
