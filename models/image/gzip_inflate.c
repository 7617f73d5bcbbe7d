/* zlib inflate of gzip data into a buffer that grows geometrically but is capped at the ceiling + 1
 * byte: producing that extra byte is how an over-long stream is detected without inflating the rest. */
#include "gzip_inflate.h"
#include "error_message.h"

#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "image.h"
#include "image_internal.h"

int gzip_is_gzip(const void *buf, size_t len)
{
    const unsigned char *b = buf;
    return len >= 2 && b[0] == 0x1f && b[1] == 0x8b;
}

static int all_zero(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return 0;
    return 1;
}

int gzip_inflate(const void *in, size_t in_len, size_t max_out, unsigned char **out, size_t *out_len,
                 char *err, size_t errlen)
{
    return gzip_inflate_budget(in, in_len, max_out, NULL, NULL, out, out_len, err, errlen);
}

int gzip_inflate_budget(const void *in, size_t in_len, size_t max_out, int (*reserve)(void *ctx, size_t n),
                        void *ctx, unsigned char **out, size_t *out_len, char *err, size_t errlen)
{
    *out = NULL;
    *out_len = 0;
    if (!gzip_is_gzip(in, in_len))
        return error_set(err, errlen, IMAGE_EINVAL, "not gzip data (no 1f 8b magic)");
    if (max_out >= SIZE_MAX)
        max_out = SIZE_MAX - 1;
    const size_t hard_cap = max_out + 1; /* one byte past the ceiling proves the stream is too long */

    /* First guess: the last member's ISIZE (length mod 2^32; untrusted, so only a hint), bounded by
     * what deflate can reach (about 1032:1) so a forged ISIZE cannot make us reserve the whole ceiling. */
    const unsigned char *src = in;
    size_t cap = 64 * 1024;
    if (in_len >= 18) {
        uint32_t isize = (uint32_t)src[in_len - 4] | (uint32_t)src[in_len - 3] << 8 |
                         (uint32_t)src[in_len - 2] << 16 | (uint32_t)src[in_len - 1] << 24;
        size_t reach = in_len > SIZE_MAX / 1032 ? SIZE_MAX : in_len * 1032;
        if (isize > cap)
            cap = isize < reach ? isize : reach;
    }
    if (cap > hard_cap)
        cap = hard_cap;
    if (reserve && reserve(ctx, cap))
        return error_set(err, errlen, IMAGE_ENOMEM, "the memory budget has no room for %zu bytes of gzip output",
                          cap);
    unsigned char *buf = malloc(cap);
    if (!buf)
        return error_set(err, errlen, IMAGE_ENOMEM, "out of memory for %zu bytes of gzip output", cap);

    z_stream zs;
    memset(&zs, 0, sizeof zs);
    if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) { /* 16+: gzip wrapper only */
        free(buf);
        return error_set(err, errlen, IMAGE_ENOMEM, "zlib inflateInit2 failed");
    }
    size_t consumed = 0, produced = 0;
    int rc = IMAGE_OK;
    for (;;) {
        if (produced == cap) {
            if (cap == hard_cap) {
                rc = error_set(err, errlen, IMAGE_ETOOBIG,
                                "gzip data inflates past the ceiling of %zu bytes", max_out);
                break;
            }
            size_t next = cap > hard_cap / 2 ? hard_cap : cap * 2;
            if (reserve && reserve(ctx, next - cap)) {
                rc = error_set(err, errlen, IMAGE_ENOMEM,
                                "the memory budget has no room for %zu bytes of gzip output", next);
                break;
            }
            unsigned char *grown = realloc(buf, next);
            if (!grown) {
                rc = error_set(err, errlen, IMAGE_ENOMEM, "out of memory for %zu bytes of gzip output", next);
                break;
            }
            buf = grown;
            cap = next;
        }
        size_t in_left = in_len - consumed, out_left = cap - produced;
        zs.next_in = (unsigned char *)src + consumed; /* zlib's API is not const-correct; it only reads */
        zs.avail_in = in_left > UINT_MAX ? UINT_MAX : (uInt)in_left;
        zs.next_out = buf + produced;
        zs.avail_out = out_left > UINT_MAX ? UINT_MAX : (uInt)out_left;
        uInt avail_in0 = zs.avail_in, avail_out0 = zs.avail_out;
        int zr = inflate(&zs, Z_NO_FLUSH);
        consumed += avail_in0 - zs.avail_in;
        produced += avail_out0 - zs.avail_out;
        if (zr == Z_STREAM_END) {
            size_t rest = in_len - consumed;
            if (rest == 0 || all_zero(src + consumed, rest))
                break;
            if (!gzip_is_gzip(src + consumed, rest)) {
                rc = error_set(err, errlen, IMAGE_EINVAL,
                                "%zu bytes of trailing garbage after the gzip stream", rest);
                break;
            }
            inflateReset(&zs); /* another member follows */
            continue;
        }
        if (zr == Z_OK)
            continue;
        if (zr == Z_BUF_ERROR && zs.avail_out == 0)
            continue; /* output full: grow and go on */
        if (zr == Z_BUF_ERROR) { /* no progress possible: input exhausted mid-stream */
            rc = error_set(err, errlen, IMAGE_EINVAL, "truncated gzip data (stream ends after %zu bytes)",
                            in_len);
            break;
        }
        if (zr == Z_MEM_ERROR) {
            rc = error_set(err, errlen, IMAGE_ENOMEM, "zlib ran out of memory");
            break;
        }
        rc = error_set(err, errlen, IMAGE_EINVAL, "corrupt gzip data: %s",
                        zs.msg ? zs.msg : "invalid deflate stream");
        break;
    }
    inflateEnd(&zs);
    if (rc == IMAGE_OK && produced > max_out) /* the stream ended exactly one byte past the ceiling */
        rc = error_set(err, errlen, IMAGE_ETOOBIG, "gzip data inflates past the ceiling of %zu bytes", max_out);
    if (rc != IMAGE_OK) {
        free(buf);
        return rc;
    }
    *out = buf;
    *out_len = produced;
    return IMAGE_OK;
}
