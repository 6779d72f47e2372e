/* support.c: arena, growable buffers, hashing, half floats, file reading.
 * See support.h for the contracts. */
#include "support.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct arena_block {
    arena_block *next;
    size_t used, cap;
    _Alignas(16) unsigned char data[];
};

void arena_init(arena *a) { a->head = NULL; a->failed = false; }

void arena_free(arena *a)
{
    arena_block *b = a->head;
    while (b) {
        arena_block *n = b->next;
        free(b);
        b = n;
    }
    a->head = NULL;
}

void *arena_alloc(arena *a, size_t size)
{
    size = (size + 15) & ~(size_t)15;
    if (size == 0) size = 16;
    arena_block *b = a->head;
    if (!b || b->cap - b->used < size) {
        size_t cap = size > 65536 ? size : 65536;
        b = malloc(sizeof *b + cap);
        if (!b) {
            a->failed = true;
            return NULL;
        }
        b->cap = cap;
        b->used = 0;
        b->next = a->head;
        a->head = b;
    }
    void *p = b->data + b->used;
    b->used += size;
    memset(p, 0, size);
    return p;
}

void *arena_array(arena *a, size_t n, size_t size)
{
    size_t total;
    if (mul_overflows(n, size, &total)) {
        a->failed = true;
        return NULL;
    }
    return arena_alloc(a, total);
}

char *arena_strndup(arena *a, const char *s, size_t n)
{
    char *p = arena_alloc(a, n + 1);
    if (p) memcpy(p, s, n);
    return p;
}

char *arena_strdup(arena *a, const char *s) { return arena_strndup(a, s, strlen(s)); }

char *arena_printf(arena *a, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return NULL;
    char *p = arena_alloc(a, (size_t)n + 1);
    if (!p) return NULL;
    va_start(ap, fmt);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return p;
}

bool vec_grow(void **items, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap) return true;
    size_t ncap = *cap ? *cap * 2 : 8;
    while (ncap < need) ncap *= 2;
    size_t bytes;
    if (mul_overflows(ncap, elem, &bytes)) return false;
    void *p = realloc(*items, bytes);
    if (!p) return false;
    *items = p;
    *cap = ncap;
    return true;
}

static bool sb_reserve(strbuf *s, size_t extra)
{
    if (s->failed) return false;
    if (s->len + extra + 1 <= s->cap) return true;
    size_t ncap = s->cap ? s->cap * 2 : 256;
    while (ncap < s->len + extra + 1) ncap *= 2;
    char *p = realloc(s->data, ncap);
    if (!p) {
        s->failed = true;
        return false;
    }
    s->data = p;
    s->cap = ncap;
    return true;
}

void sb_free(strbuf *s)
{
    free(s->data);
    s->data = NULL;
    s->len = s->cap = 0;
    s->failed = false;
}

void sb_putn(strbuf *s, const char *str, size_t n)
{
    if (!sb_reserve(s, n)) return;
    memcpy(s->data + s->len, str, n);
    s->len += n;
    s->data[s->len] = 0;
}

void sb_putc(strbuf *s, char c) { sb_putn(s, &c, 1); }
void sb_puts(strbuf *s, const char *str) { sb_putn(s, str, strlen(str)); }

void sb_vprintf(strbuf *s, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0 || !sb_reserve(s, (size_t)n)) return;
    vsnprintf(s->data + s->len, (size_t)n + 1, fmt, ap);
    s->len += (size_t)n;
}

void sb_printf(strbuf *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    sb_vprintf(s, fmt, ap);
    va_end(ap);
}

const char *sb_cstr(strbuf *s) { return s->data ? s->data : ""; }

char *sb_take(strbuf *s)
{
    char *p = s->data;
    if (!p) {
        p = malloc(1);
        if (p) *p = 0;
    }
    s->data = NULL;
    s->len = s->cap = 0;
    return p;
}

uint64_t hash64(const void *data, size_t n, uint64_t h)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

float f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else { /* subnormal: renormalise */
            int e = -1;
            do {
                e++;
                man <<= 1;
            } while (!(man & 0x400));
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ff) << 13);
        }
    } else if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (man << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t f32_to_f16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000;
    int32_t exp = (int32_t)((x >> 23) & 0xff);
    uint32_t man = x & 0x7fffff;
    if (exp == 0xff) return (uint16_t)(sign | 0x7c00 | (man ? 0x200 : 0));
    int32_t e = exp - 127 + 15;
    if (e >= 0x1f) return (uint16_t)(sign | 0x7c00);
    if (e <= 0) {
        if (e < -10) return (uint16_t)sign;
        man |= 0x800000;
        uint32_t shift = (uint32_t)(14 - e);
        uint32_t half = man >> shift, rem = man & ((1u << shift) - 1), mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1))) half++;
        return (uint16_t)(sign | half);
    }
    uint32_t half = ((uint32_t)e << 10) | (man >> 13), rem = man & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (half & 1))) half++; /* may carry into exp: correct */
    return (uint16_t)(sign | half);
}

float bf16_to_f32(uint16_t h)
{
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t f32_to_bf16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffff) > 0x7f800000) return (uint16_t)((x >> 16) | 0x40);
    x += 0x7fff + ((x >> 16) & 1);
    return (uint16_t)(x >> 16);
}

bool mul_overflows(size_t a, size_t b, size_t *out)
{
    if (a && b > SIZE_MAX / a) return true;
    *out = a * b;
    return false;
}

char *read_file_max(const char *path, size_t max, size_t *len, const char **err)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        *err = strerror(errno);
        return NULL;
    }
    struct stat st;
    if (fstat(fileno(f), &st) == 0) {
        const char *why = S_ISDIR(st.st_mode)                                    ? "is a directory"
                          : S_ISREG(st.st_mode) && (uintmax_t)st.st_size > max ? "larger than the size limit"
                                                                                 : NULL;
        if (why) {
            fclose(f);
            *err = why;
            return NULL;
        }
    }
    strbuf sb = {0};
    char chunk[65536];
    size_t n;
    while (!sb.failed && sb.len <= max && (n = fread(chunk, 1, sizeof chunk, f)) > 0)
        sb_putn(&sb, chunk, n < max - sb.len + 1 ? n : max - sb.len + 1);
    bool bad = ferror(f);
    fclose(f);
    if (bad || sb.failed || sb.len > max) {
        *err = sb.failed ? "out of memory" : sb.len > max ? "larger than the size limit" : "read error";
        sb_free(&sb);
        return NULL;
    }
    *len = sb.len;
    return sb_take(&sb);
}

char *read_file(const char *path, size_t *len, const char **err) { return read_file_max(path, SIZE_MAX - 1, len, err); }

static size_t name_slot(const name_index *ix, const char *key)
{
    size_t i = (size_t)hash64(key, strlen(key), HASH64_SEED) & (ix->cap - 1);
    while (ix->keys[i] && strcmp(ix->keys[i], key) != 0) i = (i + 1) & (ix->cap - 1);
    return i;
}

int name_index_get(const name_index *ix, const char *key)
{
    if (!ix->cap) return -1;
    size_t i = name_slot(ix, key);
    return ix->keys[i] ? ix->vals[i] : -1;
}

int name_index_put(name_index *ix, const char *key, int val)
{
    if ((ix->n + 1) * 2 > ix->cap) { /* at most half full */
        size_t ncap = ix->cap ? ix->cap * 2 : 64;
        name_index big = {calloc(ncap, sizeof *big.keys), calloc(ncap, sizeof *big.vals), ncap, ix->n};
        if (!big.keys || !big.vals) {
            free(big.keys);
            free(big.vals);
            return -2;
        }
        for (size_t i = 0; i < ix->cap; i++) {
            if (!ix->keys[i]) continue;
            size_t j = name_slot(&big, ix->keys[i]);
            big.keys[j] = ix->keys[i];
            big.vals[j] = ix->vals[i];
        }
        free(ix->keys);
        free(ix->vals);
        *ix = big;
    }
    size_t i = name_slot(ix, key);
    if (ix->keys[i]) return ix->vals[i];
    ix->keys[i] = key;
    ix->vals[i] = val;
    ix->n++;
    return -1;
}

void name_index_free(name_index *ix)
{
    free(ix->keys);
    free(ix->vals);
    *ix = (name_index){0};
}

uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

double uniform_pm1(uint64_t *state) { return (double)(splitmix64(state) >> 11) * 0x1.0p-53 * 2.0 - 1.0; }
