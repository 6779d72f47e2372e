/* test_lexer.c: the re2c scanner (frontend/lex.re) on its own.
 *
 * Token kinds for keywords, identifiers and punctuation; the values and kinds
 * of numeric literals; comments skipped; 1-based line/column locations (tabs
 * and comments included); every lexical error (unexpected character, '.5',
 * '1.', an unterminated comment, a NUL byte, over-long or out-of-range
 * numbers, over-long identifiers) reported as TOK_ERROR with a message at the
 * right place; and the end of file returned again and again once reached. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frontend/lex.h"

#define MAX_TOKS 64

/* Scans text (of length len, NUL-terminated at text[len]) into toks, up to and
 * including the first EOF or ERROR. Returns the token count. An error's
 * message may live in the lexer, so the caller's lexer outlives the tokens. */
static int scan_with(lexer *lx, const char *text, size_t len, token *toks)
{
    lex_init(lx, text, len);
    int n = 0;
    while (n < MAX_TOKS) {
        toks[n] = lex_next(lx);
        if (toks[n].kind == TOK_EOF || toks[n].kind == TOK_ERROR) return n + 1;
        n++;
    }
    fail_msg("more than %d tokens", MAX_TOKS);
    return n;
}

static int scan(const char *text, token *toks)
{
    lexer lx;
    return scan_with(&lx, text, strlen(text), toks);
}

static void assert_kinds(const char *text, const tok_kind *kinds, int n)
{
    token toks[MAX_TOKS];
    int got = scan(text, toks);
    assert_int_equal(got, n);
    for (int i = 0; i < n; i++) {
        if (toks[i].kind != kinds[i])
            fail_msg("%s: token %d is %s, expected %s", text, i, tok_names[toks[i].kind], tok_names[kinds[i]]);
    }
}

/* The single error token of text: its message must contain want, at line:col. */
static void assert_error_n(const char *text, size_t len, const char *want, uint32_t line, uint32_t col)
{
    token toks[MAX_TOKS];
    lexer lx;
    int n = scan_with(&lx, text, len, toks);
    const token *e = &toks[n - 1];
    if (e->kind != TOK_ERROR) fail_msg("'%s': no error token (last is %s)", text, tok_names[e->kind]);
    assert_non_null(e->error);
    if (!strstr(e->error, want)) fail_msg("'%s': error '%s' lacks '%s'", text, e->error, want);
    assert_int_equal(e->loc.line, line);
    assert_int_equal(e->loc.col, col);
}

static void assert_error(const char *text, const char *want, uint32_t line, uint32_t col)
{
    assert_error_n(text, strlen(text), want, line, col);
}

static void test_keywords_and_identifiers(void **state)
{
    (void)state;
    static const tok_kind kinds[] = {TOK_MODEL, TOK_DIM,   TOK_INPUT, TOK_PARAM, TOK_STATE, TOK_OUTPUT,
                                     TOK_LET,   TOK_SUM,   TOK_MAX,   TOK_T,     TOK_BIG_T, TOK_IDENT,
                                     TOK_IDENT, TOK_IDENT, TOK_IDENT, TOK_IDENT, TOK_IDENT, TOK_EOF};
    assert_kinds("model dim input param state output let sum max t T tt T1 _x models Sum x_9", kinds,
                 sizeof kinds / sizeof *kinds);
    token toks[MAX_TOKS];
    scan("  models_9 ", toks);
    assert_int_equal(toks[0].kind, TOK_IDENT);
    assert_int_equal(toks[0].len, 8);
    assert_memory_equal(toks[0].start, "models_9", 8);
}

static void test_punctuation(void **state)
{
    (void)state;
    static const tok_kind kinds[] = {TOK_LBRACE, TOK_RBRACE, TOK_LBRACK, TOK_RBRACK, TOK_LPAREN, TOK_RPAREN,
                                     TOK_COMMA,  TOK_SEMI,   TOK_ASSIGN, TOK_PLUS,   TOK_MINUS,  TOK_STAR,
                                     TOK_SLASH,  TOK_COLON,  TOK_EOF};
    assert_kinds("{}[](),;=+-*/:", kinds, sizeof kinds / sizeof *kinds);
    /* `t - 1` and `h / R` as index pieces, with and without spaces */
    static const tok_kind ix[] = {TOK_IDENT, TOK_LBRACK, TOK_T,     TOK_MINUS, TOK_INT,   TOK_COMMA,
                                  TOK_IDENT, TOK_SLASH,  TOK_IDENT, TOK_RBRACK, TOK_EOF};
    assert_kinds("x[t-1,h/R]", ix, sizeof ix / sizeof *ix);
}

static void test_numbers(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        tok_kind kind;
        double value;
    } cases[] = {
        {"0", TOK_INT, 0},         {"42", TOK_INT, 42},           {"007", TOK_INT, 7},
        {"1.5", TOK_FLOAT, 1.5},   {"0.25", TOK_FLOAT, 0.25},     {"1e-6", TOK_FLOAT, 1e-6},
        {"2.5E+3", TOK_FLOAT, 2500}, {"7e2", TOK_FLOAT, 700},     {"3.0e0", TOK_FLOAT, 3},
        {"9007199254740992", TOK_INT, 9007199254740992.0}, /* 2^53: still exact */
        {"1e308", TOK_FLOAT, 1e308},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        token toks[MAX_TOKS];
        int n = scan(cases[i].text, toks);
        if (n != 2 || toks[0].kind != cases[i].kind)
            fail_msg("'%s': %d tokens, first %s", cases[i].text, n, tok_names[toks[0].kind]);
        if (toks[0].num != cases[i].value) fail_msg("'%s' = %.17g", cases[i].text, toks[0].num);
        assert_int_equal(toks[0].len, strlen(cases[i].text));
    }
    /* a sign is an operator, not part of the literal */
    static const tok_kind neg[] = {TOK_MINUS, TOK_INT, TOK_PLUS, TOK_FLOAT, TOK_EOF};
    assert_kinds("-3 +0.5", neg, sizeof neg / sizeof *neg);
    /* an exponent without digits is a number followed by an identifier */
    static const tok_kind e[] = {TOK_INT, TOK_IDENT, TOK_EOF};
    assert_kinds("1e", e, sizeof e / sizeof *e);
}

static void test_comments(void **state)
{
    (void)state;
    static const tok_kind kinds[] = {TOK_MODEL, TOK_IDENT, TOK_LBRACE, TOK_RBRACE, TOK_EOF};
    assert_kinds("// leading comment\nmodel /* inline */ m // trailing\n{ /* multi\nline\n*/ }// at eof", kinds,
                 sizeof kinds / sizeof *kinds);
    /* comment delimiters do not nest, and a '/' alone is division */
    static const tok_kind k2[] = {TOK_IDENT, TOK_STAR, TOK_SLASH, TOK_IDENT, TOK_EOF};
    assert_kinds("a /* x /* y */ * / b", k2, sizeof k2 / sizeof *k2);
    /* an empty block comment and a block comment ending the file */
    static const tok_kind k3[] = {TOK_INT, TOK_EOF};
    assert_kinds("/**/1/* end */", k3, sizeof k3 / sizeof *k3);
}

static void test_locations(void **state)
{
    (void)state;
    const char *text = "model m {\n\tdim N = 4;\n  /* one\n two */ x\r\n\n   y";
    token toks[MAX_TOKS];
    int n = scan(text, toks);
    assert_int_equal(n, 11);
    static const uint32_t where[][2] = {
        {1, 1}, {1, 7}, {1, 9},                  /* model m { */
        {2, 2}, {2, 6}, {2, 8}, {2, 10}, {2, 11}, /* dim N = 4 ; after a tab (one byte, one column) */
        {4, 9},                                  /* x after a two-line comment */
        {6, 4},                                  /* y after \r\n and an empty line */
        {6, 5},                                  /* end of file */
    };
    for (int i = 0; i < n; i++) {
        if (toks[i].loc.line != where[i][0] || toks[i].loc.col != where[i][1])
            fail_msg("token %d (%s) at %u:%u, expected %u:%u", i, tok_names[toks[i].kind], toks[i].loc.line,
                     toks[i].loc.col, where[i][0], where[i][1]);
    }
    assert_int_equal(toks[10].kind, TOK_EOF);
}

/* The same text with LF, CR and CR LF line ends: the same tokens at the same
 * lines and columns, a line comment ending at any of them (a CR-only file
 * was one comment to its end), block comments counting them, and an error
 * after them located right. A CR LF is one line end, LF CR two. */
static void test_line_ends(void **state)
{
    (void)state;
    static const char *const ends[] = {"\n", "\r", "\r\n"};
    for (int e = 0; e < 3; e++) {
        const char *nl = ends[e];
        char text[256];
        snprintf(text, sizeof text, "// first%smodel m {%s/* two%slines */ x%s%s  // more%s   y", nl, nl, nl, nl, nl, nl);
        token toks[MAX_TOKS];
        int n = scan(text, toks);
        static const tok_kind kinds[] = {TOK_MODEL, TOK_IDENT, TOK_LBRACE, TOK_IDENT, TOK_IDENT, TOK_EOF};
        static const uint32_t where[][2] = {{2, 1}, {2, 7}, {2, 9}, {4, 10}, {7, 4}, {7, 5}};
        if (n != 6) fail_msg("line end %d: %d tokens, expected 6", e, n);
        for (int i = 0; i < n; i++)
            if (toks[i].kind != kinds[i] || toks[i].loc.line != where[i][0] || toks[i].loc.col != where[i][1])
                fail_msg("line end %d: token %d (%s) at %u:%u, expected %s at %u:%u", e, i, tok_names[toks[i].kind],
                         toks[i].loc.line, toks[i].loc.col, tok_names[kinds[i]], where[i][0], where[i][1]);
        snprintf(text, sizeof text, "a%s%s  @", nl, nl);
        assert_error(text, "unexpected character '@'", 3, 3);
    }
    token toks[MAX_TOKS];
    assert_int_equal(scan("a\n\rb", toks), 3);
    assert_int_equal(toks[1].loc.line, 3);
    assert_int_equal(scan("a\r\n\r\nb", toks), 3);
    assert_int_equal(toks[1].loc.line, 3);
}

static void test_eof_is_sticky(void **state)
{
    (void)state;
    lexer lx;
    const char *text = "x";
    lex_init(&lx, text, 1);
    assert_int_equal(lex_next(&lx).kind, TOK_IDENT);
    for (int i = 0; i < 3; i++) {
        token t = lex_next(&lx);
        assert_int_equal(t.kind, TOK_EOF);
        assert_int_equal(t.loc.col, 2);
    }
    lex_init(&lx, "", 0);
    assert_int_equal(lex_next(&lx).kind, TOK_EOF);
}

static void test_errors(void **state)
{
    (void)state;
    assert_error("a # b", "unexpected character '#'", 1, 3);
    assert_error("x = 1;\n  @", "unexpected character '@'", 2, 3);
    assert_error("y = .5;", "'.5' is written '0.5'", 1, 5);
    assert_error("y = x.5;", "must start with a digit", 1, 6);
    assert_error("y = 1.;", "a digit must follow the decimal point", 1, 5);
    assert_error("y = 1.e5;", "a digit must follow the decimal point", 1, 5);
    assert_error("y = 2..3", "a digit must follow the decimal point", 1, 5);
    /* at the opening delimiter, even when the text runs out lines later */
    assert_error("a\n  b /* never\nclosed\n\n", "unterminated comment", 2, 5);
    assert_error("/*", "unterminated comment", 1, 1);
    assert_error("/* almost *", "unterminated comment", 1, 1);
    assert_error("9007199254740993", "integer literal is too large", 1, 1);
    assert_error("x * 123456789012345678901234567890", "too large", 1, 5);
    assert_error("1e999", "out of range", 1, 1);
    /* a '\xff' byte and a high-bit identifier lookalike */
    assert_error("ab\xff", "invalid byte 0xff", 1, 3);
    assert_error("x\x01", "invalid byte 0x01", 1, 2);
    assert_error("y = \"s\"", "unexpected character '\"'", 1, 5);
    char nul[] = "x \0 y";
    assert_error_n(nul, 5, "invalid byte 0x00", 1, 3);

    char digits[200];
    memset(digits, '1', sizeof digits - 1);
    digits[sizeof digits - 1] = 0;
    assert_error(digits, "numeric literal is too long", 1, 1);
    char frac[200];
    memcpy(frac, "0.", 2);
    memset(frac + 2, '5', sizeof frac - 3);
    frac[sizeof frac - 1] = 0;
    assert_error(frac, "numeric literal is too long", 1, 1);

    char ident[300];
    memset(ident, 'a', sizeof ident - 1);
    ident[sizeof ident - 1] = 0;
    assert_error(ident, "identifier is too long", 1, 1);
    ident[255] = 0; /* 255 characters are fine */
    token toks[MAX_TOKS];
    assert_int_equal(scan(ident, toks), 2);
    assert_int_equal(toks[0].kind, TOK_IDENT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keywords_and_identifiers),
        cmocka_unit_test(test_punctuation),
        cmocka_unit_test(test_numbers),
        cmocka_unit_test(test_comments),
        cmocka_unit_test(test_locations),
        cmocka_unit_test(test_line_ends),
        cmocka_unit_test(test_eof_is_sticky),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
