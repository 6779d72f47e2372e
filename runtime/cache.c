/* cache.c: the on-disk kernel cache declared in cache.h.
 *
 * Entry layout, all integers little-endian (56-byte header, then the payload):
 *   0  magic "SSMCKERN"       8  u32 format version   12  u32 header size (56)
 *   16 u64 key.hi             24 u64 key.lo
 *   32 u64 payload length     40 u64 payload checksum 48  u64 header checksum
 * The header checksum covers bytes 0..47, so a damaged length field is caught
 * before it is trusted. Writes go through mkstemp + rename in the cache
 * directory; there is no fsync: an entry cut short by a crash fails its checks
 * and reads as a miss. Assumes POSIX rename semantics (atomic replace). */
#include "runtime/cache.h"
#include "support/env.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CACHE_MAGIC "SSMCKERN"
#define CACHE_FORMAT 1u
#define CACHE_HEADER 56u
#define CACHE_MAX_ENTRY ((size_t)1 << 30) /* an entry file past 1 GiB is not read: a miss */

static void put_le(unsigned char *p, uint64_t v, int n)
{
    for (int i = 0; i < n; i++) p[i] = (unsigned char)(v >> 8 * i);
}

static uint64_t get_le(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

/* splitmix64's finaliser: spreads FNV's weak high bits over the whole word. */
static uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

rt_cache_key rt_cache_key_make(const char *const *parts, int nparts)
{
    uint64_t a = HASH64_SEED, b = 0x6c62272e07bb0142ull; /* two independent FNV streams */
    for (int i = 0; i < nparts; i++) {
        const char *s = parts[i] ? parts[i] : "";
        size_t n = strlen(s);
        unsigned char len[8];
        put_le(len, n, 8);
        a = hash64(s, n, hash64(len, 8, a));
        b = hash64(s, n, hash64(len, 8, b ^ 0x5bd1e995u));
    }
    return (rt_cache_key){mix64(a), mix64(b ^ (uint64_t)nparts)};
}

void rt_cache_key_hex(rt_cache_key key, char out[33])
{
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < 16; i++) {
        out[i] = digits[(key.hi >> (60 - 4 * i)) & 15];
        out[16 + i] = digits[(key.lo >> (60 - 4 * i)) & 15];
    }
    out[32] = 0;
}

/* mkdir -p: every missing component of `path` is created. */
static ssmc_status make_dirs(char *path, strbuf *err)
{
    for (char *p = path + 1;; p++) {
        if (*p != '/' && *p != 0) continue;
        char saved = *p;
        *p = 0;
        if (mkdir(path, 0777) != 0 && errno != EEXIST) {
            sb_printf(err, "cannot create the cache directory %s: %s", path, strerror(errno));
            *p = saved;
            return SSMC_ERR_IO;
        }
        *p = saved;
        if (!saved) break;
    }
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode)) {
        sb_printf(err, "the cache directory %s is not a directory", path);
        return SSMC_ERR_IO;
    }
    return SSMC_OK;
}

ssmc_status rt_cache_dir(const char *dir, strbuf *path, strbuf *err)
{
    const char *env;
    if (dir && *dir)
        sb_puts(path, dir);
    else if ((env = env_get(ENV_SSMC_CACHE_DIR)))
        sb_puts(path, env);
    else if ((env = env_get(ENV_XDG_CACHE_HOME)) && env[0] == '/') /* the XDG spec ignores relative values */
        sb_printf(path, "%s/ssmc", env);
    else if ((env = env_get(ENV_HOME)))
        sb_printf(path, "%s/.cache/ssmc", env);
    else {
        sb_puts(err, "no cache directory: set SSMC_CACHE_DIR or HOME");
        return SSMC_ERR_IO;
    }
    if (path->failed) {
        sb_puts(err, "out of memory");
        return SSMC_ERR_NOMEM;
    }
    while (path->len > 1 && path->data[path->len - 1] == '/') path->data[--path->len] = 0;
    return make_dirs(path->data, err);
}

ssmc_status rt_cache_entry_path(const char *dir, rt_cache_key key, strbuf *path, strbuf *err)
{
    ssmc_status st = rt_cache_dir(dir, path, err);
    if (st != SSMC_OK) return st;
    char hex[33];
    rt_cache_key_hex(key, hex);
    sb_printf(path, "/%s", hex);
    if (path->failed) {
        sb_puts(err, "out of memory");
        return SSMC_ERR_NOMEM;
    }
    return SSMC_OK;
}

static void make_header(unsigned char *h, rt_cache_key key, const void *data, size_t len)
{
    memcpy(h, CACHE_MAGIC, 8);
    put_le(h + 8, CACHE_FORMAT, 4);
    put_le(h + 12, CACHE_HEADER, 4);
    put_le(h + 16, key.hi, 8);
    put_le(h + 24, key.lo, 8);
    put_le(h + 32, len, 8);
    put_le(h + 40, hash64(data, len, HASH64_SEED), 8);
    put_le(h + 48, hash64(h, 48, HASH64_SEED), 8);
}

ssmc_status rt_cache_get(const char *dir, rt_cache_key key, void **data, size_t *len, bool *hit, strbuf *err)
{
    *data = NULL;
    *len = 0;
    *hit = false;
    strbuf path = {0};
    ssmc_status st = rt_cache_entry_path(dir, key, &path, err);
    if (st != SSMC_OK) {
        sb_free(&path);
        return st;
    }
    size_t n;
    const char *why;
    unsigned char *buf = (unsigned char *)read_file_max(path.data, CACHE_MAX_ENTRY, &n, &why);
    if (!buf) { /* absent, unreadable or larger than any kernel: either way, not a hit */
        sb_free(&path);
        return SSMC_OK;
    }
    bool whole = n >= CACHE_HEADER && memcmp(buf, CACHE_MAGIC, 8) == 0;
    if (whole && get_le(buf + 8, 4) != CACHE_FORMAT) { /* another ssmc's format: leave it alone */
        free(buf);
        sb_free(&path);
        return SSMC_OK;
    }
    uint64_t plen = whole ? get_le(buf + 32, 8) : 0;
    bool ok = whole && get_le(buf + 12, 4) == CACHE_HEADER && get_le(buf + 48, 8) == hash64(buf, 48, HASH64_SEED) &&
              get_le(buf + 16, 8) == key.hi && get_le(buf + 24, 8) == key.lo && plen == n - CACHE_HEADER &&
              get_le(buf + 40, 8) == hash64(buf + CACHE_HEADER, plen, HASH64_SEED);
    if (!ok) {
        unlink(path.data);
        free(buf);
        sb_free(&path);
        return SSMC_OK;
    }
    sb_free(&path);
    memmove(buf, buf + CACHE_HEADER, plen);
    buf[plen] = 0; /* read_file's buffer holds n + 1 bytes */
    *data = buf;
    *len = plen;
    *hit = true;
    return SSMC_OK;
}

static bool write_all(int fd, const void *data, size_t len)
{
    const unsigned char *p = data;
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return false;
        p += w;
        len -= (size_t)w;
    }
    return true;
}

ssmc_status rt_cache_put(const char *dir, rt_cache_key key, const void *data, size_t len, strbuf *err)
{
    strbuf path = {0}, tmp = {0};
    ssmc_status st = rt_cache_entry_path(dir, key, &path, err);
    if (st != SSMC_OK) goto out;
    /* Same directory as the entry, so rename never crosses a file system. */
    size_t slash = path.len - 33;
    sb_putn(&tmp, path.data, slash + 1);
    sb_printf(&tmp, ".%s.XXXXXX", path.data + slash + 1);
    if (tmp.failed) {
        sb_puts(err, "out of memory");
        st = SSMC_ERR_NOMEM;
        goto out;
    }
    int fd = mkstemp(tmp.data);
    if (fd < 0) {
        path.data[slash] = 0;
        sb_printf(err, "cannot create a file in the cache directory %s: %s", path.data, strerror(errno));
        st = SSMC_ERR_IO;
        goto out;
    }
    unsigned char h[CACHE_HEADER];
    make_header(h, key, data, len);
    bool ok = write_all(fd, h, sizeof h) && write_all(fd, data, len);
    int saved = errno;
    if (close(fd) != 0 && ok) {
        ok = false;
        saved = errno;
    }
    if (ok && rename(tmp.data, path.data) != 0) {
        ok = false;
        saved = errno;
    }
    if (!ok) {
        unlink(tmp.data);
        sb_printf(err, "cannot write the cache entry %s: %s", path.data, strerror(saved));
        st = SSMC_ERR_IO;
    }
out:
    sb_free(&path);
    sb_free(&tmp);
    return st;
}

ssmc_status rt_cache_remove(const char *dir, rt_cache_key key, strbuf *err)
{
    strbuf path = {0};
    ssmc_status st = rt_cache_entry_path(dir, key, &path, err);
    if (st == SSMC_OK && unlink(path.data) != 0 && errno != ENOENT) {
        sb_printf(err, "cannot remove the cache entry %s: %s", path.data, strerror(errno));
        st = SSMC_ERR_IO;
    }
    sb_free(&path);
    return st;
}
