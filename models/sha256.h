/* SHA-256 (FIPS 180-4), so a result can name the exact weights that produced it. */
#ifndef STOPCAL_SHA256_H
#define STOPCAL_SHA256_H

#include <stddef.h>
#include <stdint.h>

struct sha256 {
    uint32_t state[8];
    uint64_t length_bytes;
    uint8_t block[64];
    size_t block_used;
};

void sha256_init(struct sha256 *h);
void sha256_update(struct sha256 *h, const void *data, size_t len);
/* Writes the 64 hex digits and a NUL into hex[65]. */
void sha256_final_hex(struct sha256 *h, char hex[65]);
void sha256_hex(const void *data, size_t len, char hex[65]);

/* The CPU's SHA extensions are used where present; sha256_accelerated(0) turns them off (tests
 * compare both), (1) back on. Returns whether they are now in use. Not thread-safe: call before
 * hashing starts. */
int sha256_accelerated(int enable);

#endif
