/* The AVX-512F register tile of the packed linear layer: 8 rows × a whole 32-column panel, 16
 * accumulators; GELU in registers (avx512_math.h). */
#include "linear_packed_tiles.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include "avx512_math.h"
#include "linear_packed.h"

#include <stddef.h>

AVX512 void linear_tile_avx512_8x32(float *c, int ldc, const float *a, int lda, int rows,
                                    const float *restrict wp, int kc, const float *bias, int first,
                                    int last, enum linear_epilogue epilogue)
{
    enum { TILE_ROWS = 8 };
    const float *ar[TILE_ROWS];
    for (int r = 0; r < TILE_ROWS; r++)
        ar[r] = a + (size_t)(r < rows ? r : rows - 1) * lda;
    __m512 acc[TILE_ROWS][2];
    if (first) {
        const __m512 b0 = bias ? _mm512_loadu_ps(bias) : _mm512_setzero_ps();
        const __m512 b1 = bias ? _mm512_loadu_ps(bias + 16) : _mm512_setzero_ps();
#pragma GCC unroll 8
        for (int r = 0; r < TILE_ROWS; r++)
            acc[r][0] = b0, acc[r][1] = b1;
    } else {
#pragma GCC unroll 8
        for (int r = 0; r < TILE_ROWS; r++) {
            const float *cr = c + (size_t)(r < rows ? r : 0) * ldc;
            acc[r][0] = _mm512_loadu_ps(cr);
            acc[r][1] = _mm512_loadu_ps(cr + 16);
        }
    }
    for (int k = 0; k < kc; k++) {
        const __m512 w0 = _mm512_load_ps(wp + (size_t)k * LINEAR_PANEL);
        const __m512 w1 = _mm512_load_ps(wp + (size_t)k * LINEAR_PANEL + 16);
#pragma GCC unroll 8
        for (int r = 0; r < TILE_ROWS; r++) {
            const __m512 x = _mm512_set1_ps(ar[r][k]);
            acc[r][0] = _mm512_fmadd_ps(x, w0, acc[r][0]);
            acc[r][1] = _mm512_fmadd_ps(x, w1, acc[r][1]);
        }
    }
    if (last && epilogue == EPILOGUE_RELU)
#pragma GCC unroll 8
        for (int r = 0; r < TILE_ROWS; r++) {
            acc[r][0] = _mm512_max_ps(acc[r][0], _mm512_setzero_ps());
            acc[r][1] = _mm512_max_ps(acc[r][1], _mm512_setzero_ps());
        }
    /* Constant trip counts with a guard, never acc[variable]: that would keep the whole tile in
     * memory, stored back on every k. */
    if (last && epilogue == EPILOGUE_GELU)
#pragma GCC unroll 8
        for (int r = 0; r < TILE_ROWS; r++)
            if (r < rows) {
                acc[r][0] = gelu_avx512(acc[r][0]);
                acc[r][1] = gelu_avx512(acc[r][1]);
            }
#pragma GCC unroll 8
    for (int r = 0; r < TILE_ROWS; r++)
        if (r < rows) {
            _mm512_storeu_ps(c + (size_t)r * ldc, acc[r][0]);
            _mm512_storeu_ps(c + (size_t)r * ldc + 16, acc[r][1]);
        }
}

#endif
