/* support.h: the small pieces every stage uses: an arena allocator, a growable
 * byte buffer, growable arrays, hashing and half-precision conversions.
 * Nothing here knows about models; nothing here prints or exits. Allocation
 * failure is reported by a NULL return (arena) or a false return (buffers), so
 * callers can turn it into SSMC_ERR_NOMEM. */
#ifndef SSMC_SUPPORT_H
#define SSMC_SUPPORT_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- arena: many allocations, one free ---- */
typedef struct arena_block arena_block;
typedef struct arena {
    arena_block *head;
    bool failed; /* set once an allocation failed; sticky */
} arena;

void arena_init(arena *a);
void arena_free(arena *a);
void *arena_alloc(arena *a, size_t size);           /* zeroed, 16-byte aligned */
void *arena_array(arena *a, size_t n, size_t size); /* overflow-checked */
char *arena_strndup(arena *a, const char *s, size_t n);
char *arena_strdup(arena *a, const char *s);
char *arena_printf(arena *a, const char *fmt, ...);

/* ---- growable arrays (heap, freed by vec_free) ----
 * Usage: `T *items = NULL; size_t n = 0, cap = 0; VEC_PUSH(items, n, cap, x)`.
 * VEC_PUSH evaluates to false when memory ran out. */
bool vec_grow(void **items, size_t *cap, size_t need, size_t elem);
#define VEC_PUSH(items, n, cap, x) \
    (vec_grow((void **)&(items), &(cap), (n) + 1, sizeof *(items)) ? ((items)[(n)++] = (x), true) : false)

/* ---- strbuf: growable text ---- */
typedef struct strbuf {
    char *data; /* always NUL-terminated when len > 0 or after sb_cstr */
    size_t len, cap;
    bool failed;
} strbuf;

void sb_free(strbuf *s);
void sb_putc(strbuf *s, char c);
void sb_puts(strbuf *s, const char *str);
void sb_putn(strbuf *s, const char *str, size_t n);
void sb_printf(strbuf *s, const char *fmt, ...);
void sb_vprintf(strbuf *s, const char *fmt, va_list ap);
const char *sb_cstr(strbuf *s); /* "" for an empty buffer */
char *sb_take(strbuf *s);       /* hands the malloc'd text to the caller */

/* ---- hashing: 64-bit FNV-1a, good enough for cache keys and checksums ---- */
uint64_t hash64(const void *data, size_t n, uint64_t seed);
#define HASH64_SEED 0xcbf29ce484222325ull

/* ---- name index: NUL-terminated names to ints, open addressing, for
 * lookups that stay linear in files of thousands of names. The keys are
 * not copied: they must outlive the index. */
typedef struct name_index {
    const char **keys;
    int *vals;
    size_t cap, n; /* cap: 0 or a power of two */
} name_index;

/* The value stored under key, or -1. */
int name_index_get(const name_index *ix, const char *key);
/* Stores val under key unless the key is there already; returns the value
 * that was there (-1: none, val stored), or -2 when memory ran out. */
int name_index_put(name_index *ix, const char *key, int val);
void name_index_free(name_index *ix);

/* ---- seeded random numbers: splitmix64 (random inputs of `ssmc run`, benches, the fuzzer) ---- */
uint64_t splitmix64(uint64_t *state);
double uniform_pm1(uint64_t *state); /* uniform in [-1, 1), 53-bit resolution */

/* ---- half precision ---- */
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f); /* round to nearest even */
float bf16_to_f32(uint16_t h);
uint16_t f32_to_bf16(float f); /* round to nearest even, NaN kept */

/* ---- checked size arithmetic ---- */
bool mul_overflows(size_t a, size_t b, size_t *out);

/* ---- files ---- */
/* Reads a whole file of at most `max` bytes into malloc'd memory
 * (NUL-terminated). Returns NULL and sets *err to a static reason on failure:
 * the system's (no such file...), "is a directory", "larger than the size
 * limit" (a regular file is refused by its size before any read; anything
 * else, a pipe or a device such as /dev/zero, once max + 1 bytes have come),
 * "read error", "out of memory". Memory stays bounded by the limit (about
 * twice it at most, while the buffer grows). */
char *read_file_max(const char *path, size_t max, size_t *len, const char **err);
/* read_file_max without a limit (tests, benches: files they made). */
char *read_file(const char *path, size_t *len, const char **err);

#endif
