/* npy.c: the .npy reader and writer declared in npy.h.
 *
 * Assumes nothing of its input: every length is checked against the bytes
 * actually present before it is used, sizes are computed with overflow checks,
 * and the header dictionary is parsed by hand (it is a Python literal, and only
 * the three keys numpy writes are accepted). Guarantees: on success the array is
 * complete and its element count matches the shape; on failure nothing is
 * allocated and the message says which rule the file broke. */
#include "runtime/npy.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const unsigned char npy_magic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};


static uint16_t load_le16(const unsigned char *p) { return (uint16_t)(p[0] | p[1] << 8); }

static uint32_t load_le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t load_le64(const unsigned char *p) { return load_le32(p) | (uint64_t)load_le32(p + 4) << 32; }

static void store_le32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> 8 * i);
}

static void store_le64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> 8 * i);
}

/* ---- the header dictionary ---- */

typedef struct hdr_parser {
    const char *start, *p, *end;
    strbuf *err;
} hdr_parser;

static void hp_ws(hdr_parser *h)
{
    while (h->p < h->end && (*h->p == ' ' || *h->p == '\t' || *h->p == '\n' || *h->p == '\r')) h->p++;
}

static bool hp_fail(hdr_parser *h, const char *what)
{
    if (h->p >= h->end)
        sb_printf(h->err, "header ends early: expected %s (the header length may be wrong)", what);
    else
        sb_printf(h->err, "bad header: expected %s at offset %td of the header", what, h->p - h->start);
    return false;
}

static bool hp_char(hdr_parser *h, char c, const char *what)
{
    hp_ws(h);
    if (h->p < h->end && *h->p == c) {
        h->p++;
        return true;
    }
    return hp_fail(h, what);
}

/* A Python string literal without escapes, as numpy writes keys and descrs. */
static bool hp_string(hdr_parser *h, const char **s, size_t *n)
{
    hp_ws(h);
    if (h->p >= h->end || (*h->p != '\'' && *h->p != '"')) return hp_fail(h, "a quoted string");
    char q = *h->p++;
    const char *start = h->p;
    while (h->p < h->end && *h->p != q) h->p++;
    if (h->p >= h->end) return hp_fail(h, "the end of a string");
    *s = start;
    *n = (size_t)(h->p - start);
    h->p++;
    return true;
}

static bool hp_word(hdr_parser *h, const char *w)
{
    size_t n = strlen(w);
    if ((size_t)(h->end - h->p) >= n && memcmp(h->p, w, n) == 0) {
        h->p += n;
        return true;
    }
    return false;
}

static bool hp_int(hdr_parser *h, int64_t *v)
{
    hp_ws(h);
    if (h->p < h->end && *h->p == '-') {
        sb_puts(h->err, "bad header: negative dimension in the shape");
        return false;
    }
    if (h->p >= h->end || *h->p < '0' || *h->p > '9') return hp_fail(h, "a dimension");
    int64_t x = 0;
    while (h->p < h->end && *h->p >= '0' && *h->p <= '9') {
        int d = *h->p++ - '0';
        if (x > (INT64_MAX - d) / 10) {
            sb_puts(h->err, "bad header: a dimension of the shape does not fit in 64 bits");
            return false;
        }
        x = x * 10 + d;
    }
    if (h->p < h->end && *h->p == 'L') h->p++; /* Python 2 long, as old numpy wrote */
    *v = x;
    return true;
}

static bool hp_shape(hdr_parser *h, rt_npy *out)
{
    if (!hp_char(h, '(', "'(' opening the shape")) return false;
    out->rank = 0;
    bool comma = false;
    for (;;) {
        hp_ws(h);
        if (h->p < h->end && *h->p == ')') break;
        if (out->rank == RT_NPY_MAX_RANK) {
            sb_printf(h->err, "the shape has more than %d axes", RT_NPY_MAX_RANK);
            return false;
        }
        if (!hp_int(h, &out->shape[out->rank])) return false;
        out->rank++;
        hp_ws(h);
        comma = h->p < h->end && *h->p == ',';
        if (comma)
            h->p++;
        else if (h->p >= h->end || *h->p != ')')
            return hp_fail(h, "',' or ')' in the shape");
    }
    h->p++;
    if (out->rank == 1 && !comma) {
        sb_printf(h->err, "bad header: shape (%" PRId64 ") is not a tuple; numpy writes (%" PRId64 ",)",
                  out->shape[0], out->shape[0]);
        return false;
    }
    return true;
}

static bool parse_descr(hdr_parser *h, unsigned flags, rt_npy *out)
{
    hp_ws(h);
    if (h->p < h->end && *h->p == '[') {
        sb_puts(h->err, "structured dtypes are not supported (descr is a list)");
        return false;
    }
    const char *s;
    size_t n;
    if (!hp_string(h, &s, &n)) return false;
    if ((flags & RT_NPY_ALLOW_INDEX) && n == 3 && (!memcmp(s, "<i4", 3) || !memcmp(s, "<i8", 3))) {
        out->index = s[2] == '4' ? 4 : 8;
        return true;
    }
    for (int i = 0; i < SSMC_NDTYPES; i++) {
        ssmc_dtype dt = (ssmc_dtype)i;
        if (n == 3 && memcmp(s, dtype_descr(dt), 3) == 0) {
            if (dt == SSMC_BF16 && !(flags & RT_NPY_ALLOW_BF16)) {
                sb_puts(h->err, "dtype '<u2' is taken as bf16 bit patterns only where bf16 is asked for (ssmc run --dtype bf16)");
                return false;
            }
            out->dtype = dt;
            return true;
        }
    }
    if (n >= 1 && s[0] == '>')
        sb_printf(h->err, "big-endian dtype '%.*s' is not supported: save the array as little-endian", (int)n, s);
    else
        sb_printf(h->err, "unsupported dtype '%.*s' (expected %s)", (int)n > 40 ? 40 : (int)n, s,
                  flags & RT_NPY_ALLOW_INDEX ? "<i4 or <i8" : "<f4, <f2, <f8 or <u2 for bf16");
    return false;
}

/* Parses {'descr': ..., 'fortran_order': ..., 'shape': (...), } and nothing else. */
static bool parse_header(const char *text, size_t len, unsigned flags, rt_npy *out, strbuf *err)
{
    hdr_parser h = {text, text, text + len, err};
    enum { K_DESCR = 1, K_FORTRAN = 2, K_SHAPE = 4 };
    unsigned seen = 0;
    if (!hp_char(&h, '{', "'{' opening the header dictionary")) return false;
    for (;;) {
        hp_ws(&h);
        if (h.p < h.end && *h.p == '}') break;
        const char *key;
        size_t n;
        if (!hp_string(&h, &key, &n)) return false;
        if (!hp_char(&h, ':', "':' after a key")) return false;
        unsigned k = n == 5 && !memcmp(key, "descr", 5)           ? K_DESCR
                     : n == 13 && !memcmp(key, "fortran_order", 13) ? K_FORTRAN
                     : n == 5 && !memcmp(key, "shape", 5)           ? K_SHAPE
                                                                    : 0;
        if (!k) {
            sb_printf(err, "bad header: unexpected key '%.*s'", (int)n > 40 ? 40 : (int)n, key);
            return false;
        }
        if (seen & k) {
            sb_printf(err, "bad header: key '%.*s' appears twice", (int)n, key);
            return false;
        }
        seen |= k;
        if (k == K_DESCR) {
            if (!parse_descr(&h, flags, out)) return false;
        } else if (k == K_FORTRAN) {
            hp_ws(&h);
            if (hp_word(&h, "True")) {
                sb_puts(err, "fortran_order is True: only C-ordered arrays are supported "
                             "(save np.ascontiguousarray(a))");
                return false;
            }
            if (!hp_word(&h, "False")) return hp_fail(&h, "True or False for fortran_order");
        } else if (!hp_shape(&h, out)) {
            return false;
        }
        hp_ws(&h);
        if (h.p < h.end && *h.p == ',') {
            h.p++;
            continue;
        }
        if (h.p < h.end && *h.p == '}') break;
        return hp_fail(&h, "',' or '}' after a value");
    }
    h.p++;
    hp_ws(&h);
    if (h.p != h.end) {
        sb_puts(err, "bad header: bytes after the dictionary (the header length may be wrong)");
        return false;
    }
    if (seen != (K_DESCR | K_FORTRAN | K_SHAPE)) {
        sb_printf(err, "bad header: missing key '%s'",
                  !(seen & K_DESCR) ? "descr" : !(seen & K_FORTRAN) ? "fortran_order" : "shape");
        return false;
    }
    return true;
}

static void shape_text(strbuf *sb, int rank, const int64_t *shape)
{
    sb_putc(sb, '(');
    for (int i = 0; i < rank; i++) sb_printf(sb, i ? ", %" PRId64 : "%" PRId64, shape[i]);
    if (rank == 1) sb_putc(sb, ',');
    sb_putc(sb, ')');
}

/* The element count of a shape, or false when it overflows (with elem bytes each). */
static bool shape_count(int rank, const int64_t *shape, size_t elem, size_t *count)
{
    size_t c = 1, bytes;
    for (int i = 0; i < rank; i++) {
        if (shape[i] < 0 || (uint64_t)shape[i] > SIZE_MAX) return false;
        if (mul_overflows(c, (size_t)shape[i], &c)) return false;
    }
    if (mul_overflows(c, elem, &bytes)) return false;
    *count = c;
    return true;
}

/* The preamble of b[0..len): where the header starts and how long it is. */
static ssmc_status npy_preamble(const unsigned char *b, size_t len, size_t *hstart, size_t *hlen, strbuf *err)
{
    if (len < 10) {
        sb_printf(err, "truncated file: %zu bytes, shorter than the .npy preamble", len);
        return SSMC_ERR_IO;
    }
    if (memcmp(b, npy_magic, sizeof npy_magic) != 0) {
        sb_puts(err, "not a .npy file (bad magic)");
        return SSMC_ERR_IO;
    }
    unsigned major = b[6], minor = b[7];
    if (major == 1 && minor == 0) {
        *hstart = 10;
        *hlen = load_le16(b + 8);
    } else if ((major == 2 || major == 3) && minor == 0) {
        if (len < 12) {
            sb_printf(err, "truncated file: %zu bytes, shorter than the version %u.0 preamble", len, major);
            return SSMC_ERR_IO;
        }
        *hstart = 12;
        *hlen = load_le32(b + 8);
    } else {
        sb_printf(err, "unsupported .npy format version %u.%u", major, minor);
        return SSMC_ERR_IO;
    }
    return SSMC_OK;
}

/* Bytes of one element in the file. */
static size_t elem_size(const rt_npy *a) { return a->index ? (size_t)a->index : dtype_size(a->dtype); }
static const char *descr_of(const rt_npy *a)
{
    return a->index == 4 ? "<i4" : a->index == 8 ? "<i8" : dtype_descr(a->dtype);
}

/* The data's allocation: room for the file's bytes and for what decode makes of them. */
/* The header b[hstart..hstart+hlen) into *a (shape, dtype, count) and the
 * bytes of data that must follow it. */
static ssmc_status npy_header(const unsigned char *b, size_t hstart, size_t hlen, unsigned flags, rt_npy *a,
                              size_t *need, strbuf *err)
{
    /* numpy ends the padded header with '\n'; checking it catches a length
     * field that cuts the padding short, which the dictionary alone cannot show */
    if (hlen == 0 || b[hstart + hlen - 1] != '\n') {
        sb_puts(err, "bad header: it does not end with a newline (the header length may be wrong)");
        return SSMC_ERR_IO;
    }
    if (!parse_header((const char *)b + hstart, hlen, flags, a, err)) return SSMC_ERR_IO;
    size_t elem = elem_size(a);
    if (!shape_count(a->rank, a->shape, elem, &a->count)) {
        strbuf shp = {0};
        shape_text(&shp, a->rank, a->shape);
        sb_printf(err, "shape %s is too large (its size overflows)", sb_cstr(&shp));
        sb_free(&shp);
        return SSMC_ERR_IO;
    }
    *need = a->count * elem;
    return SSMC_OK;
}

static void *alloc_data(const rt_npy *a, size_t need)
{
    size_t n = a->index ? a->count * sizeof(int64_t) : need;
    return malloc(n > need ? n : need ? need : 1);
}

static ssmc_status data_size_error(const rt_npy *a, size_t need, size_t have, bool more, strbuf *err)
{
    strbuf shp = {0};
    shape_text(&shp, a->rank, a->shape);
    sb_printf(err, "%s: shape %s of %s needs %zu bytes of data but the file has %s%zu",
              have < need ? "truncated data" : "trailing data", sb_cstr(&shp), descr_of(a), need,
              more ? "more than " : "", have);
    sb_free(&shp);
    return SSMC_ERR_IO;
}

/* The count little-endian elements at src into a->data (src may be a->data). */
static void decode(rt_npy *a, const unsigned char *src)
{
    if (a->index) {
        /* widened to int64 from the last element down, so that decoding in
         * place reads each element before a wider one overwrites it */
        int64_t *dst = a->data;
        for (size_t i = a->count; i-- > 0;)
            dst[i] = a->index == 4 ? (int64_t)(int32_t)load_le32(src + 4 * i) : (int64_t)load_le64(src + 8 * i);
        return;
    }
    for (size_t i = 0; i < a->count; i++) {
        switch (a->dtype) {
        case SSMC_F64: {
            uint64_t u = load_le64(src + 8 * i);
            memcpy((double *)a->data + i, &u, 8);
            break;
        }
        case SSMC_F32: {
            uint32_t u = load_le32(src + 4 * i);
            memcpy((float *)a->data + i, &u, 4);
            break;
        }
        case SSMC_F16:
        case SSMC_BF16: ((uint16_t *)a->data)[i] = load_le16(src + 2 * i); break;
        }
    }
}

ssmc_status rt_npy_parse(const void *buf, size_t len, unsigned flags, rt_npy *out, strbuf *err)
{
    const unsigned char *b = buf;
    memset(out, 0, sizeof *out);
    size_t hstart, hlen, need;
    ssmc_status st = npy_preamble(b, len, &hstart, &hlen, err);
    if (st != SSMC_OK) return st;
    if (hlen > len - hstart) {
        sb_printf(err, "truncated file: the header claims %zu bytes but only %zu follow the preamble", hlen,
                  len - hstart);
        return SSMC_ERR_IO;
    }
    rt_npy a = {0};
    if ((st = npy_header(b, hstart, hlen, flags, &a, &need, err)) != SSMC_OK) return st;
    size_t have = len - hstart - hlen;
    if (have != need) return data_size_error(&a, need, have, false, err);
    a.data = alloc_data(&a, need);
    if (!a.data) {
        sb_printf(err, "out of memory reading %zu bytes of array data", need);
        return SSMC_ERR_NOMEM;
    }
    decode(&a, b + hstart + hlen);
    *out = a;
    return SSMC_OK;
}

/* Reads up to n bytes; the count read (short only at the end of the file or on an error). */
static size_t read_some(FILE *f, void *dst, size_t n) { return n ? fread(dst, 1, n, f) : 0; }

ssmc_status rt_npy_read(const char *path, unsigned flags, rt_npy *out, strbuf *err)
{
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "rb");
    if (!f) {
        sb_printf(err, "%s: cannot read: %s", path, strerror(errno));
        return SSMC_ERR_IO;
    }
    strbuf msg = {0};
    ssmc_status st = SSMC_OK;
    unsigned char *hdr = NULL;
    rt_npy a = {0};
    struct stat sbuf;
    bool known = fstat(fileno(f), &sbuf) == 0, regular = known && S_ISREG(sbuf.st_mode);
    if (known && S_ISDIR(sbuf.st_mode)) {
        sb_puts(&msg, "cannot read: is a directory");
        st = SSMC_ERR_IO;
        goto done;
    }
    /* The preamble and header first, then exactly the data the header's shape
     * needs: whatever the file is (a pipe, /dev/zero), no more is read than a
     * header and that shape take. */
    unsigned char pre[12];
    size_t npre = read_some(f, pre, sizeof pre), hstart, hlen, need;
    if ((st = npy_preamble(pre, npre, &hstart, &hlen, &msg)) != SSMC_OK) goto done;
    if (hlen > RT_NPY_MAX_HEADER) {
        sb_printf(&msg, "bad header: it claims %zu bytes, more than the %d a .npy header may take", hlen,
                  RT_NPY_MAX_HEADER);
        st = SSMC_ERR_IO;
        goto done;
    }
    hdr = malloc(hstart + hlen);
    if (!hdr) {
        sb_puts(&msg, "out of memory");
        st = SSMC_ERR_NOMEM;
        goto done;
    }
    size_t have = npre < hstart + hlen ? npre : hstart + hlen;
    memcpy(hdr, pre, have);
    have += read_some(f, hdr + have, hstart + hlen - have);
    if (have < hstart + hlen) {
        sb_printf(&msg, "truncated file: the header claims %zu bytes but only %zu follow the preamble", hlen,
                  have - hstart);
        st = SSMC_ERR_IO;
        goto done;
    }
    if ((st = npy_header(hdr, hstart, hlen, flags, &a, &need, &msg)) != SSMC_OK) goto done;
    if (need > RT_NPY_MAX_BYTES) {
        sb_printf(&msg, "its data is %zu bytes, more than the limit of %llu (16 GiB)", need,
                  (unsigned long long)RT_NPY_MAX_BYTES);
        st = SSMC_ERR_IO;
        goto done;
    }
    size_t extra = npre > hstart + hlen ? npre - hstart - hlen : 0; /* data bytes already in pre */
    if (regular && (uintmax_t)sbuf.st_size != (uintmax_t)(hstart + hlen) + need) {
        size_t size = (uintmax_t)sbuf.st_size < hstart + hlen ? 0 : (size_t)sbuf.st_size - hstart - hlen;
        st = data_size_error(&a, need, size, false, &msg);
        goto done;
    }
    a.data = alloc_data(&a, need);
    if (!a.data) {
        sb_printf(&msg, "out of memory reading %zu bytes of array data", need);
        st = SSMC_ERR_NOMEM;
        goto done;
    }
    size_t got = extra < need ? extra : need;
    memcpy(a.data, pre + hstart + hlen, got);
    got += read_some(f, (unsigned char *)a.data + got, need - got);
    unsigned char probe;
    bool more = extra > need || read_some(f, &probe, 1) == 1;
    if (ferror(f)) {
        sb_printf(&msg, "cannot read: %s", strerror(errno));
        st = SSMC_ERR_IO;
    } else if (got != need || more) {
        st = data_size_error(&a, need, more ? need : got, more, &msg);
    } else {
        decode(&a, a.data);
    }
done:
    fclose(f);
    free(hdr);
    if (st == SSMC_OK) {
        *out = a;
    } else {
        free(a.data);
        sb_printf(err, "%s: %s", path, sb_cstr(&msg));
    }
    sb_free(&msg);
    return st;
}

void rt_npy_free(rt_npy *a)
{
    free(a->data);
    memset(a, 0, sizeof *a);
}

static double npy_get(const rt_npy *a, size_t i)
{
    switch (a->dtype) {
    case SSMC_F64: return ((const double *)a->data)[i];
    case SSMC_F32: return ((const float *)a->data)[i];
    case SSMC_F16: return f16_to_f32(((const uint16_t *)a->data)[i]);
    case SSMC_BF16: return bf16_to_f32(((const uint16_t *)a->data)[i]);
    }
    return 0;
}

void rt_npy_convert(const rt_npy *a, ssmc_dtype to, void *dst)
{
    if (a->count == 0) return;
    if (to == a->dtype) { /* bit-exact, NaN payloads included */
        memcpy(dst, a->data, a->count * dtype_size(a->dtype));
        return;
    }
    /* Through double: exact from every narrower type; f64 to f16/bf16 rounds twice,
     * which can differ from a single rounding only at exact ties of the f32 value. */
    for (size_t i = 0; i < a->count; i++) {
        double v = npy_get(a, i);
        switch (to) {
        case SSMC_F64: ((double *)dst)[i] = v; break;
        case SSMC_F32: ((float *)dst)[i] = (float)v; break;
        case SSMC_F16: ((uint16_t *)dst)[i] = f32_to_f16((float)v); break;
        case SSMC_BF16: ((uint16_t *)dst)[i] = f32_to_bf16((float)v); break;
        }
    }
}

void rt_npy_to_f64(const rt_npy *a, double *dst) { rt_npy_convert(a, SSMC_F64, dst); }
void rt_npy_to_f32(const rt_npy *a, float *dst) { rt_npy_convert(a, SSMC_F32, dst); }

/* ---- writing ---- */

static ssmc_status npy_write(const char *path, const void *data, ssmc_dtype dtype, int rank,
                             const int64_t *shape, strbuf *err)
{
    size_t elem = dtype_size(dtype), count;
    if (rank < 0 || rank > RT_NPY_MAX_RANK) {
        sb_printf(err, "%s: rank %d is outside 0..%d", path, rank, RT_NPY_MAX_RANK);
        return SSMC_ERR_ARG;
    }
    if (!shape_count(rank, shape, elem, &count)) {
        sb_printf(err, "%s: the shape has a negative dimension or is too large", path);
        return SSMC_ERR_ARG;
    }

    /* numpy's layout: preamble + dict + spaces + '\n', the total a multiple of 64. */
    strbuf hdr = {0};
    sb_printf(&hdr, "{'descr': '%s', 'fortran_order': False, 'shape': ", dtype_descr(dtype));
    shape_text(&hdr, rank, shape);
    sb_puts(&hdr, ", }");
    while ((10 + hdr.len + 1) % 64) sb_putc(&hdr, ' ');
    sb_putc(&hdr, '\n');
    if (hdr.failed) {
        sb_free(&hdr);
        sb_printf(err, "%s: out of memory", path);
        return SSMC_ERR_NOMEM;
    }
    unsigned char pre[10];
    memcpy(pre, npy_magic, 6);
    pre[6] = 1;
    pre[7] = 0;
    pre[8] = (unsigned char)(hdr.len & 0xff);
    pre[9] = (unsigned char)(hdr.len >> 8); /* rank <= 8 keeps the header far below 64 KiB */

    FILE *f = fopen(path, "wb");
    if (!f) {
        sb_free(&hdr);
        sb_printf(err, "%s: cannot open for writing: %s", path, strerror(errno));
        return SSMC_ERR_IO;
    }
    bool ok = fwrite(pre, 1, sizeof pre, f) == sizeof pre && fwrite(hdr.data, 1, hdr.len, f) == hdr.len;
    sb_free(&hdr);

    unsigned char chunk[65536];
    size_t per = sizeof chunk / elem;
    for (size_t i = 0; ok && i < count; i += per) {
        size_t n = count - i < per ? count - i : per;
        for (size_t j = 0; j < n; j++) {
            if (dtype == SSMC_F64) {
                uint64_t u;
                memcpy(&u, (const double *)data + i + j, 8);
                store_le64(chunk + 8 * j, u);
            } else {
                uint32_t u;
                memcpy(&u, (const float *)data + i + j, 4);
                store_le32(chunk + 4 * j, u);
            }
        }
        ok = fwrite(chunk, elem, n, f) == n;
    }
    int saved = errno;
    if (fclose(f) != 0 && ok) {
        ok = false;
        saved = errno;
    }
    if (!ok) {
        remove(path);
        sb_printf(err, "%s: write failed: %s", path, strerror(saved));
        return SSMC_ERR_IO;
    }
    return SSMC_OK;
}

ssmc_status rt_npy_write_f32(const char *path, const float *data, int rank, const int64_t *shape, strbuf *err)
{
    return npy_write(path, data, SSMC_F32, rank, shape, err);
}

ssmc_status rt_npy_write_f64(const char *path, const double *data, int rank, const int64_t *shape, strbuf *err)
{
    return npy_write(path, data, SSMC_F64, rank, shape, err);
}
