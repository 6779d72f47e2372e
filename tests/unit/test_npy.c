/* test_npy.c: the .npy reader and writer (runtime/npy.h): round trips at
 * several ranks, f16 and bf16 input, every header version, and malformed files
 * that must each be rejected with a message, never crash; reading from disk
 * stays bounded (devices, pipes, headers that claim gigabytes) and agrees
 * with parsing the same bytes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "runtime/npy.h"

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif

static char tmpdir[64];

static int setup(void **state)
{
    strcpy(tmpdir, "/tmp/ssmc_npy_XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* A .npy image with the given version, header dictionary and data; the header
 * is padded as numpy pads it. header_len_delta makes the length field lie. */
static void make_npy(strbuf *out, int major, const char *dict, const void *data, size_t nbytes, long header_len_delta)
{
    size_t pre = major == 1 ? 10 : 12;
    strbuf h = {0};
    sb_puts(&h, dict);
    while ((pre + h.len + 1) % 64) sb_putc(&h, ' ');
    sb_putc(&h, '\n');
    size_t hl = (size_t)((long)h.len + header_len_delta);
    sb_putn(out, "\x93NUMPY", 6);
    sb_putc(out, (char)major);
    sb_putc(out, 0);
    for (size_t i = 0; i < pre - 8; i++) sb_putc(out, (char)(hl >> (8 * i)));
    sb_putn(out, h.data, h.len);
    if (nbytes) sb_putn(out, data, nbytes);
    sb_free(&h);
}

static void check_round_trip_f32(int rank, const int64_t *shape)
{
    size_t count = 1;
    for (int i = 0; i < rank; i++) count *= (size_t)shape[i];
    float *x = malloc((count ? count : 1) * sizeof *x);
    for (size_t i = 0; i < count; i++) x[i] = (float)i * 0.37f - 5.5f;
    char path[128];
    snprintf(path, sizeof path, "%s/r%d.npy", tmpdir, rank);
    strbuf err = {0};
    assert_int_equal(rt_npy_write_f32(path, x, rank, shape, &err), SSMC_OK);

    rt_npy a;
    ssmc_status st = rt_npy_read(path, 0, &a, &err);
    if (st != SSMC_OK) fail_msg("%s", sb_cstr(&err));
    assert_int_equal(a.rank, rank);
    assert_int_equal(a.dtype, SSMC_F32);
    assert_int_equal(a.count, count);
    for (int i = 0; i < rank; i++) assert_int_equal(a.shape[i], shape[i]);
    if (count) assert_memory_equal(a.data, x, count * sizeof *x);
    double *d = malloc((count ? count : 1) * sizeof *d);
    rt_npy_to_f64(&a, d);
    for (size_t i = 0; i < count; i++) assert_true(d[i] == (double)x[i]);
    free(d);
    rt_npy_free(&a);
    free(x);
    sb_free(&err);

    /* numpy's layout: the data starts at a multiple of 64 */
    size_t len;
    const char *why;
    char *buf = read_file(path, &len, &why);
    assert_non_null(buf);
    size_t hlen = (unsigned char)buf[8] | (size_t)(unsigned char)buf[9] << 8;
    assert_int_equal((10 + hlen) % 64, 0);
    assert_int_equal(buf[10 + hlen - 1], '\n');
    free(buf);
}

static void test_round_trip_ranks(void **state)
{
    int64_t s1[] = {7}, s2[] = {3, 5}, s3[] = {2, 3, 4}, s8[] = {2, 1, 2, 1, 3, 1, 2, 2};
    check_round_trip_f32(0, NULL);
    check_round_trip_f32(1, s1);
    check_round_trip_f32(2, s2);
    check_round_trip_f32(3, s3);
    check_round_trip_f32(8, s8);
}

static void test_zero_size_axis(void **state)
{
    int64_t s[] = {2, 0, 3};
    check_round_trip_f32(3, s);
}

static void test_round_trip_f64(void **state)
{
    double x[6] = {1.0 / 3, -2.5e-300, 1e300, 0.0, -0.0, 12345.678};
    int64_t shape[] = {2, 3};
    char path[128];
    snprintf(path, sizeof path, "%s/d.npy", tmpdir);
    strbuf err = {0};
    assert_int_equal(rt_npy_write_f64(path, x, 2, shape, &err), SSMC_OK);
    rt_npy a;
    assert_int_equal(rt_npy_read(path, 0, &a, &err), SSMC_OK);
    assert_int_equal(a.dtype, SSMC_F64);
    assert_memory_equal(a.data, x, sizeof x);
    float f[6];
    rt_npy_to_f32(&a, f);
    for (int i = 0; i < 6; i++) assert_true(f[i] == (float)x[i]);
    rt_npy_free(&a);
    sb_free(&err);
}

static void test_header_text(void **state)
{
    float x[6] = {0};
    int64_t shape[] = {2, 3};
    char path[128];
    snprintf(path, sizeof path, "%s/h.npy", tmpdir);
    strbuf err = {0};
    assert_int_equal(rt_npy_write_f32(path, x, 2, shape, &err), SSMC_OK);
    size_t len;
    const char *why;
    char *buf = read_file(path, &len, &why);
    const char *want = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
    assert_int_equal(len, 128 + sizeof x);
    assert_memory_equal(buf, "\x93NUMPY\x01\x00\x76\x00", 10);
    assert_memory_equal(buf + 10, want, strlen(want));
    free(buf);
    sb_free(&err);
}

static void test_f16_input(void **state)
{
    /* 1, -2, 0.5, 65504 (max half), smallest subnormal, -inf */
    uint16_t h[6] = {0x3c00, 0xc000, 0x3800, 0x7bff, 0x0001, 0xfc00};
    unsigned char le[12];
    for (int i = 0; i < 6; i++) {
        le[2 * i] = (unsigned char)(h[i] & 0xff);
        le[2 * i + 1] = (unsigned char)(h[i] >> 8);
    }
    strbuf buf = {0}, err = {0};
    make_npy(&buf, 1, "{'descr': '<f2', 'fortran_order': False, 'shape': (6,), }", le, sizeof le, 0);
    rt_npy a;
    assert_int_equal(rt_npy_parse(buf.data, buf.len, 0, &a, &err), SSMC_OK);
    assert_int_equal(a.dtype, SSMC_F16);
    assert_int_equal(a.rank, 1);
    double d[6];
    rt_npy_to_f64(&a, d);
    assert_true(d[0] == 1.0 && d[1] == -2.0 && d[2] == 0.5 && d[3] == 65504.0);
    assert_true(d[4] == 0x1p-24);
    assert_true(isinf(d[5]) && d[5] < 0);
    uint16_t back[6];
    rt_npy_convert(&a, SSMC_F16, back);
    assert_memory_equal(back, h, sizeof h);
    uint16_t bf[6];
    rt_npy_convert(&a, SSMC_BF16, bf);
    assert_int_equal(bf[0], 0x3f80);
    assert_int_equal(bf[1], 0xc000);
    rt_npy_free(&a);
    sb_free(&buf);
    sb_free(&err);
}

static void test_bf16_input(void **state)
{
    unsigned char le[4] = {0x80, 0x3f, 0x40, 0xc0}; /* 1.0, -3.0 */
    strbuf buf = {0}, err = {0};
    make_npy(&buf, 1, "{'descr': '<u2', 'fortran_order': False, 'shape': (2,), }", le, sizeof le, 0);
    rt_npy a;
    assert_int_equal(rt_npy_parse(buf.data, buf.len, 0, &a, &err), SSMC_ERR_IO);
    assert_non_null(strstr(sb_cstr(&err), "bf16"));
    assert_null(a.data);
    assert_int_equal(rt_npy_parse(buf.data, buf.len, RT_NPY_ALLOW_BF16, &a, &err), SSMC_OK);
    assert_int_equal(a.dtype, SSMC_BF16);
    float f[2];
    rt_npy_to_f32(&a, f);
    assert_true(f[0] == 1.0f && f[1] == -3.0f);
    rt_npy_free(&a);
    sb_free(&buf);
    sb_free(&err);
}

/* Offsets (cu_seqlens): `<i4` and `<i8` only with RT_NPY_ALLOW_INDEX, read as
 * int64 whatever the file's width (negative values sign-extended), through
 * both the parser and the file reader (which decodes in place); a float file
 * is still a float array; truncated data names the integer dtype. */
static void test_index_input(void **state)
{
    (void)state;
    const int32_t v4[5] = {0, 3, -7, 2147483647, -2147483647 - 1};
    const int64_t v8[3] = {0, 5, (int64_t)1 << 40};
    unsigned char le4[20], le8[24];
    for (int i = 0; i < 5; i++)
        for (int b = 0; b < 4; b++) le4[4 * i + b] = (unsigned char)((uint32_t)v4[i] >> (8 * b));
    for (int i = 0; i < 3; i++)
        for (int b = 0; b < 8; b++) le8[8 * i + b] = (unsigned char)((uint64_t)v8[i] >> (8 * b));
    strbuf b4 = {0}, b8 = {0}, err = {0};
    make_npy(&b4, 1, "{'descr': '<i4', 'fortran_order': False, 'shape': (5,), }", le4, sizeof le4, 0);
    make_npy(&b8, 1, "{'descr': '<i8', 'fortran_order': False, 'shape': (3,), }", le8, sizeof le8, 0);
    rt_npy a;
    assert_int_equal(rt_npy_parse(b4.data, b4.len, 0, &a, &err), SSMC_ERR_IO);
    assert_non_null(strstr(sb_cstr(&err), "unsupported dtype '<i4'"));
    err.len = 0;
    char path[128];
    for (int w = 0; w < 2; w++) {
        strbuf *b = w ? &b8 : &b4;
        size_t n = w ? 3 : 5;
        for (int via_file = 0; via_file < 2; via_file++) {
            if (via_file) {
                snprintf(path, sizeof path, "%s/cu%d.npy", tmpdir, w);
                FILE *f = fopen(path, "wb");
                assert_non_null(f);
                assert_int_equal(fwrite(b->data, 1, b->len, f), b->len);
                fclose(f);
                assert_int_equal(rt_npy_read(path, RT_NPY_ALLOW_INDEX, &a, &err), SSMC_OK);
            } else {
                assert_int_equal(rt_npy_parse(b->data, b->len, RT_NPY_ALLOW_INDEX, &a, &err), SSMC_OK);
            }
            assert_int_equal(a.index, w ? 8 : 4);
            assert_int_equal(a.count, n);
            for (size_t i = 0; i < n; i++)
                assert_true(((int64_t *)a.data)[i] == (w ? v8[i] : (int64_t)v4[i]));
            rt_npy_free(&a);
        }
    }
    /* a float array is not read as offsets */
    float one = 1.0f;
    strbuf bf = {0};
    make_npy(&bf, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", &one, 4, 0);
    assert_int_equal(rt_npy_parse(bf.data, bf.len, RT_NPY_ALLOW_INDEX, &a, &err), SSMC_OK);
    assert_int_equal(a.index, 0);
    assert_int_equal(a.dtype, SSMC_F32);
    rt_npy_free(&a);
    /* truncated: the message names <i4 */
    assert_int_equal(rt_npy_parse(b4.data, b4.len - 2, RT_NPY_ALLOW_INDEX, &a, &err), SSMC_ERR_IO);
    assert_non_null(strstr(sb_cstr(&err), "of <i4 needs 20 bytes"));
    sb_free(&b4);
    sb_free(&b8);
    sb_free(&bf);
    sb_free(&err);
}

static void test_versions(void **state)
{
    float x[3] = {1.5f, -2.0f, 3.25f};
    for (int major = 1; major <= 3; major++) {
        strbuf buf = {0}, err = {0};
        make_npy(&buf, major, "{\"descr\": \"<f4\", \"fortran_order\": False, \"shape\": (3,)}", x, sizeof x, 0);
        rt_npy a;
        ssmc_status st = rt_npy_parse(buf.data, buf.len, 0, &a, &err);
        if (st != SSMC_OK) fail_msg("version %d: %s", major, sb_cstr(&err));
        assert_int_equal(a.count, 3);
        assert_memory_equal(a.data, x, sizeof x);
        rt_npy_free(&a);
        sb_free(&buf);
        sb_free(&err);
    }
}

/* ---- malformed files ---- */

typedef struct bad_case {
    const char *name;
    int major;
    const char *dict;
    size_t data_bytes;
    long header_len_delta;
    const char *expect; /* a piece of the message */
} bad_case;

static void expect_bad(const void *buf, size_t len, unsigned flags, const char *name, const char *expect)
{
    strbuf err = {0};
    rt_npy a;
    ssmc_status st = rt_npy_parse(buf, len, flags, &a, &err);
    if (st == SSMC_OK) fail_msg("%s: accepted", name);
    assert_null(a.data);
    if (!strstr(sb_cstr(&err), expect)) fail_msg("%s: message '%s' lacks '%s'", name, sb_cstr(&err), expect);
    sb_free(&err);
}

static void test_malformed(void **state)
{
    static const bad_case cases[] = {
        {"fortran order", 1, "{'descr': '<f4', 'fortran_order': True, 'shape': (2,), }", 8, 0, "fortran_order"},
        {"big endian", 1, "{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }", 8, 0, "big-endian"},
        {"int dtype", 1, "{'descr': '<i4', 'fortran_order': False, 'shape': (2,), }", 8, 0, "unsupported dtype"},
        {"structured", 1, "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,), }", 8, 0,
         "structured"},
        {"overflowing shape", 1,
         "{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904, 4611686018427387904), }", 0, 0,
         "too large"},
        {"overflowing bytes", 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (4611686018427387904,), }", 0,
         0, "too large"},
        {"dimension beyond 64 bits", 1,
         "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,), }", 0, 0, "64 bits"},
        {"negative dimension", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (-2,), }", 0, 0, "negative"},
        {"short data", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 20, 0, "truncated data"},
        {"trailing data", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", 12, 0, "trailing"},
        {"header length too short", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", 8, -40,
         "header length"},
        {"header length too long", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", 16, 4,
         "header length"},
        {"bytes after the dictionary", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), } 7", 4, 0,
         "after the dictionary"},
        {"header length beyond the file", 2, "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", 4,
         100000, "truncated"},
        {"missing shape", 1, "{'descr': '<f4', 'fortran_order': False, }", 4, 0, "missing key 'shape'"},
        {"unknown key", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'x': 1}", 4, 0,
         "unexpected key"},
        {"duplicate key", 1, "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (1,)}", 4, 0,
         "twice"},
        {"rank 9", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1,1,1), }", 4, 0,
         "more than 8 axes"},
        {"not a tuple", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (3), }", 12, 0, "not a tuple"},
        {"unterminated string", 1, "{'descr': '<f4}", 4, 0, "end of a string"},
        {"not a dict", 1, "['descr', '<f4']", 4, 0, "'{'"},
        {"bad boolean", 1, "{'descr': '<f4', 'fortran_order': 0, 'shape': (1,)}", 4, 0, "True or False"},
        {"empty header", 1, "", 4, 0, "header"},
    };
    unsigned char zeros[64] = {0};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        strbuf buf = {0};
        make_npy(&buf, cases[i].major, cases[i].dict, zeros, cases[i].data_bytes, cases[i].header_len_delta);
        expect_bad(buf.data, buf.len, 0, cases[i].name, cases[i].expect);
        sb_free(&buf);
    }
    expect_bad("", 0, 0, "empty file", "truncated");
    expect_bad("\x93NUMPY", 6, 0, "preamble only", "truncated");
    expect_bad("\x93NUMPY\x02\x00\x10\x00", 10, 0, "v2 preamble cut", "truncated");
    expect_bad("PK\x03\x04 this is a zip file", 24, 0, "bad magic", "bad magic");
    expect_bad("\x93NUMPY\x04\x00\x10\x00\x00\x00", 12, 0, "version 4.0", "version 4.0");
    expect_bad("\x93NUMPY\x01\x01\x10\x00\x00\x00", 12, 0, "version 1.1", "version 1.1");
}

/* Every prefix of a valid file fails cleanly; every single-byte change either
 * parses or fails cleanly (the sanitizer build catches any bad access). */
static void test_truncations_and_flips(void **state)
{
    float x[5] = {1, 2, 3, 4, 5};
    strbuf buf = {0};
    make_npy(&buf, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (5,), }", x, sizeof x, 0);
    for (size_t n = 0; n < buf.len; n++) {
        char *copy = malloc(n ? n : 1); /* exact size, so an over-read is caught */
        memcpy(copy, buf.data, n);
        strbuf err = {0};
        rt_npy a;
        if (rt_npy_parse(copy, n, 0, &a, &err) == SSMC_OK) fail_msg("prefix of %zu bytes accepted", n);
        assert_true(err.len > 0);
        sb_free(&err);
        free(copy);
    }
    unsigned char vals[] = {0, 0xff, '(', ')', ',', '\'', '}', '9', ' ', 'L'};
    for (size_t i = 0; i < buf.len; i++) {
        for (size_t v = 0; v < sizeof vals; v++) {
            char *copy = malloc(buf.len);
            memcpy(copy, buf.data, buf.len);
            copy[i] = (char)vals[v];
            strbuf err = {0};
            rt_npy a;
            if (rt_npy_parse(copy, buf.len, RT_NPY_ALLOW_BF16, &a, &err) == SSMC_OK)
                rt_npy_free(&a);
            else
                assert_true(err.len > 0);
            sb_free(&err);
            free(copy);
        }
    }
    sb_free(&buf);
}

static void test_io_errors(void **state)
{
    strbuf err = {0};
    rt_npy a;
    char path[128];
    snprintf(path, sizeof path, "%s/missing.npy", tmpdir);
    assert_int_equal(rt_npy_read(path, 0, &a, &err), SSMC_ERR_IO);
    assert_non_null(strstr(sb_cstr(&err), path));
    err.len = 0;

    float x[1] = {0};
    int64_t shape[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
    snprintf(path, sizeof path, "%s/no/such/dir/x.npy", tmpdir);
    assert_int_equal(rt_npy_write_f32(path, x, 1, shape, &err), SSMC_ERR_IO);
    assert_non_null(strstr(sb_cstr(&err), "cannot open"));
    err.len = 0;
    snprintf(path, sizeof path, "%s/rank9.npy", tmpdir);
    assert_int_equal(rt_npy_write_f32(path, x, 9, shape, &err), SSMC_ERR_ARG);
    int64_t neg[1] = {-1};
    assert_int_equal(rt_npy_write_f32(path, x, 1, neg, &err), SSMC_ERR_ARG);

    /* a bad file read from disk names the path */
    snprintf(path, sizeof path, "%s/bad.npy", tmpdir);
    FILE *f = fopen(path, "wb");
    fputs("hello", f);
    fclose(f);
    err.len = 0;
    assert_int_equal(rt_npy_read(path, 0, &a, &err), SSMC_ERR_IO);
    assert_non_null(strstr(sb_cstr(&err), path));
    sb_free(&err);
}

/* Writes len bytes of data to path, a FIFO, from a child process (the reader
 * may stop early: the child ignores SIGPIPE's end). */
static pid_t feed_fifo(const char *path, const void *data, size_t len)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        signal(SIGPIPE, SIG_IGN);
        FILE *f = fopen(path, "wb");
        if (f) {
            fwrite(data, 1, len, f);
            fclose(f);
        }
        _exit(0);
    }
    return pid;
}

/* rt_npy_read reads no more than a header and its shape take, whatever the
 * file: /dev/zero, a directory, a header or a shape that claims gigabytes
 * (refused before anything that size is allocated or read), and a pipe, whose
 * size is not known beforehand (right data accepted, short or long refused). */
static void test_read_bounded(void **state)
{
    strbuf err = {0};
    rt_npy a;
    /* in a child with a cap on its address space and time: an unbounded read
     * ends there instead of taking the machine's memory */
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
#if !UNDER_ASAN /* ASan's shadow memory does not fit under RLIMIT_AS */
        struct rlimit as = {1u << 30, 1u << 30};
        setrlimit(RLIMIT_AS, &as);
#endif
        alarm(20);
        _exit(rt_npy_read("/dev/zero", 0, &a, &err) == SSMC_ERR_IO && strstr(sb_cstr(&err), "not a .npy file") ? 0 : 1);
    }
    int ws;
    assert_true(waitpid(pid, &ws, 0) == pid);
    if (!WIFEXITED(ws) || WEXITSTATUS(ws) != 0) fail_msg("reading /dev/zero: %s", WIFEXITED(ws) ? "no error" : "killed");
    assert_int_equal(rt_npy_read(tmpdir, 0, &a, &err), SSMC_ERR_IO);
    assert_non_null(strstr(sb_cstr(&err), "is a directory"));
    err.len = 0;

    char path[128];
    snprintf(path, sizeof path, "%s/huge_header.npy", tmpdir);
    FILE *f = fopen(path, "wb");
    fwrite("\x93NUMPY\x02\x00\xff\xff\xff\xff{", 1, 13, f);
    fclose(f);
    assert_int_equal(rt_npy_read(path, 0, &a, &err), SSMC_ERR_IO);
    assert_non_null(strstr(sb_cstr(&err), "claims 4294967295 bytes"));
    err.len = 0;

    strbuf buf = {0};
    make_npy(&buf, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776, 4), }", NULL, 0, 0);
    snprintf(path, sizeof path, "%s/huge_shape.npy", tmpdir);
    f = fopen(path, "wb");
    fwrite(buf.data, 1, buf.len, f);
    fclose(f);
    sb_free(&buf);
    assert_int_equal(rt_npy_read(path, 0, &a, &err), SSMC_ERR_IO);
    assert_non_null(strstr(sb_cstr(&err), "more than the limit"));
    err.len = 0;

    /* through a pipe */
    float x[6] = {1, 2, 3, 4, 5, 6};
    make_npy(&buf, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", x, sizeof x, 0);
    snprintf(path, sizeof path, "%s/fifo", tmpdir);
    assert_int_equal(mkfifo(path, 0600), 0);
    static const struct {
        long cut; /* bytes of the file left out (< 0: that many more at the end) */
        const char *error;
    } cases[] = {{0, NULL}, {4, "truncated data"}, {-1, "trailing data"}, {-100000, "trailing data"},
                 {(long)sizeof x + 3, "truncated file"}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        strbuf img = {0};
        sb_putn(&img, buf.data, buf.len);
        for (long k = 0; k < -cases[i].cut; k++) sb_putc(&img, 'z');
        size_t len = cases[i].cut > 0 ? img.len - (size_t)cases[i].cut : img.len;
        pid = feed_fifo(path, img.data, len);
        ssmc_status st = rt_npy_read(path, 0, &a, &err);
        waitpid(pid, &ws, 0);
        if (!cases[i].error) {
            if (st != SSMC_OK) fail_msg("case %zu: %s", i, sb_cstr(&err));
            assert_int_equal(a.count, 6);
            assert_memory_equal(a.data, x, sizeof x);
            rt_npy_free(&a);
        } else {
            assert_int_equal(st, SSMC_ERR_IO);
            if (!strstr(sb_cstr(&err), cases[i].error)) fail_msg("case %zu: %s", i, sb_cstr(&err));
        }
        err.len = 0;
        sb_free(&img);
    }
    sb_free(&buf);
    sb_free(&err);
}

/* A file on disk is accepted or refused by rt_npy_read exactly as its bytes
 * are by rt_npy_parse: every prefix of a valid file, and the file with bytes
 * added at the end. */
static void test_read_agrees_with_parse(void **state)
{
    uint16_t h[5] = {0x3c00, 0x4000, 0xc000, 0x0001, 0x7bff};
    strbuf buf = {0};
    make_npy(&buf, 3, "{'descr': '<f2', 'fortran_order': False, 'shape': (5,), }", h, sizeof h, 0);
    sb_putn(&buf, "tail", 4);
    char path[128];
    snprintf(path, sizeof path, "%s/agree.npy", tmpdir);
    for (size_t n = 0; n <= buf.len; n++) {
        FILE *f = fopen(path, "wb");
        fwrite(buf.data, 1, n, f);
        fclose(f);
        strbuf e1 = {0}, e2 = {0};
        rt_npy a, b;
        ssmc_status s1 = rt_npy_parse(buf.data, n, 0, &a, &e1), s2 = rt_npy_read(path, 0, &b, &e2);
        if (s1 != s2) fail_msg("%zu bytes: parse %d (%s), read %d (%s)", n, s1, sb_cstr(&e1), s2, sb_cstr(&e2));
        if (s1 == SSMC_OK) {
            assert_int_equal(a.count, b.count);
            assert_memory_equal(a.data, b.data, a.count * 2);
            rt_npy_free(&a);
            rt_npy_free(&b);
        }
        sb_free(&e1);
        sb_free(&e2);
    }
    sb_free(&buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_ranks),
        cmocka_unit_test(test_zero_size_axis),
        cmocka_unit_test(test_round_trip_f64),
        cmocka_unit_test(test_header_text),
        cmocka_unit_test(test_f16_input),
        cmocka_unit_test(test_bf16_input),
        cmocka_unit_test(test_index_input),
        cmocka_unit_test(test_versions),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_truncations_and_flips),
        cmocka_unit_test(test_io_errors),
        cmocka_unit_test(test_read_bounded),
        cmocka_unit_test(test_read_agrees_with_parse),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
