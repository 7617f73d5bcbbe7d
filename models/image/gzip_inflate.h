/* gzip bodies (.fits.gz, Content-Encoding: gzip) inflated with zlib under a ceiling that holds while
 * inflating: the output buffer never grows past max_out + 1 bytes, so a gzip bomb costs at most that. */
#ifndef STOPCAL_GZIP_INFLATE_H
#define STOPCAL_GZIP_INFLATE_H

#include <stddef.h>

/* 1 when buf starts with the gzip magic bytes (1f 8b), else 0. */
int gzip_is_gzip(const void *buf, size_t len);

/* Inflate one gzip stream (or several concatenated members, as `cat a.gz b.gz` makes; zero padding
 * after the last member is ignored). On IMAGE_OK *out is a malloc'd buffer of *out_len ≤ max_out
 * bytes, freed by the caller with free(). Errors: IMAGE_ETOOBIG when the output would exceed max_out,
 * IMAGE_EINVAL for corrupt or truncated data or trailing garbage, IMAGE_ENOMEM; *out is then NULL and
 * err holds the reason. */
int gzip_inflate(const void *in, size_t in_len, size_t max_out, unsigned char **out, size_t *out_len,
                 char *err, size_t errlen);

/* gzip_inflate that asks reserve(ctx, n) before every allocation of n more output bytes, so that a
 * caller keeping a memory budget counts the decompressed bytes before they exist; a non-zero answer
 * stops with IMAGE_ENOMEM. What was granted is the caller's to release. */
int gzip_inflate_budget(const void *in, size_t in_len, size_t max_out, int (*reserve)(void *ctx, size_t n),
                        void *ctx, unsigned char **out, size_t *out_len, char *err, size_t errlen);

#endif
