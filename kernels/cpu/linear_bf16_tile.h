/* Between the bf16 linear driver (linear_bf16.c) and its AVX512_BF16 kernels
 * (linear_bf16_avx512.c). */
#ifndef STOPCAL_LINEAR_BF16_TILE_H
#define STOPCAL_LINEAR_BF16_TILE_H

#include "backend.h"

#include <stdint.h>

/* Rows of one register tile (its columns: a whole panel of 32). */
#define LINEAR_BF16_TILE_ROWS 8

/* c (rows, cols) [+]= a (rows, kc pairs, rows lda pairs apart) · the panel chunk at wp (kc pair
 * rows of 32 words): `first` seeds the accumulators with the bias (or 0) instead of loading c,
 * `last` applies the epilogue before the store. Only the first `cols` (≤ 32) columns of c and bias
 * are touched; rows past `rows` repeat the last row and are not stored. c16 non-NULL: the last
 * chunk stores its rows as bf16 pairs there instead (rows ldc16 words apart, ⌈cols/2⌉ words each,
 * a column past an odd `cols` as 0), and c only carries the earlier chunks' partial sums. */
void linear_bf16_tile_8x32(float *c, int ldc, uint32_t *c16, int ldc16, const uint32_t *a, int lda,
                           int rows, const uint32_t *wp, int kc, const float *bias, int cols,
                           int first, int last, enum linear_epilogue epilogue);

/* dst (n2 pairs) ← src (n floats), rounded by vcvtne2ps2bf16; a pair past n is zero-padded. */
void linear_bf16_round_row_avx512(uint32_t *dst, const float *src, int n);

#endif
