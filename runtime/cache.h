/* cache.h: the on-disk kernel cache (SPEC §4: JIT results cached under a key of
 * source, options, compiler version and GPU arch).
 *
 * An entry is one file named by the 128-bit key in hex, holding a header
 * (magic, format version, key, payload length, payload checksum, header
 * checksum) and the payload. Entries are written to a temporary file in the
 * same directory and renamed into place, so a reader sees a whole entry or none,
 * even with several processes sharing the directory. A read verifies everything
 * and reports an entry that fails any check as a miss (and removes it): a
 * damaged cache costs a recompile, never wrong data.
 *
 * The directory: the `dir` argument when not NULL, else $SSMC_CACHE_DIR, else
 * $XDG_CACHE_HOME/ssmc, else $HOME/.cache/ssmc; created (with its parents) when
 * missing. */
#ifndef RT_CACHE_H
#define RT_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ssmc.h"
#include "support/support.h"

typedef struct rt_cache_key {
    uint64_t hi, lo;
} rt_cache_key;

/* The key of an ordered list of strings (e.g. generated source, options string,
 * compiler version, GPU arch). Each part is length-prefixed, so ("ab", "c") and
 * ("a", "bc") differ. A NULL part counts as "". */
rt_cache_key rt_cache_key_make(const char *const *parts, int nparts);
/* The 32 lowercase hex digits of the key, NUL-terminated. */
void rt_cache_key_hex(rt_cache_key key, char out[33]);

/* The directory the cache uses (see above), created if needed. */
ssmc_status rt_cache_dir(const char *dir, strbuf *path, strbuf *err);
/* The path of the entry for `key` (whether or not it exists). */
ssmc_status rt_cache_entry_path(const char *dir, rt_cache_key key, strbuf *path, strbuf *err);

/* Looks `key` up. SSMC_OK with *hit true: *data is a malloc'd copy of the
 * payload (followed by a NUL byte not counted in *len; free() it). SSMC_OK with
 * *hit false: no usable entry (*data NULL). Another status: the cache directory
 * could not be used or memory ran out; err says why. */
ssmc_status rt_cache_get(const char *dir, rt_cache_key key, void **data, size_t *len, bool *hit, strbuf *err);
/* Stores `len` bytes under `key`, replacing any entry atomically. */
ssmc_status rt_cache_put(const char *dir, rt_cache_key key, const void *data, size_t len, strbuf *err);
/* Removes the entry for `key`, if any: for a payload that passed every check
 * here but that its user could not use (an object LLVM cannot load). */
ssmc_status rt_cache_remove(const char *dir, rt_cache_key key, strbuf *err);

#endif
