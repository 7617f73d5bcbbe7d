/* The register tiles of linear_packed.c, one per instruction set, sharing one packed layout
 * (panels of LINEAR_PANEL output columns, [k][32] each). A tile computes
 *   c (rows, cols) [+]= a (rows, kc) · the panel chunk at wp (row stride LINEAR_PANEL)
 * where `first` seeds the accumulators with the bias (or 0) instead of loading c and `last`
 * applies the epilogue before the store. Rows past `rows` repeat the last row and are not stored. */
#ifndef STOPCAL_LINEAR_PACKED_TILES_H
#define STOPCAL_LINEAR_PACKED_TILES_H

#include "backend.h"

typedef void linear_tile_fn(float *c, int ldc, const float *a, int lda, int rows, const float *wp,
                            int kc, const float *bias, int first, int last,
                            enum linear_epilogue epilogue);

/* AVX-512F: 8 rows × 32 columns (a whole panel). */
linear_tile_fn linear_tile_avx512_8x32;
/* AVX2 + FMA: 6 rows × 16 columns (half a panel; wp, c and bias point at the half). */
linear_tile_fn linear_tile_avx2_6x16;

#endif
