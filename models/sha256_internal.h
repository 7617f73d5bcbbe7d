/* Between sha256.c and its accelerated block function. */
#ifndef STOPCAL_SHA256_INTERNAL_H
#define STOPCAL_SHA256_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

extern const uint32_t sha256_round_constants[64];

/* Whether the CPU has the SHA extensions (and this build can use them). */
int sha256_shani_available(void);
/* Compresses n_blocks consecutive 64-byte blocks into state (A..H, as the portable code keeps it). */
void sha256_compress_shani(uint32_t state[8], const uint8_t *blocks, size_t n_blocks);

#endif
