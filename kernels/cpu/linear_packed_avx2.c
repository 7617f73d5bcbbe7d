/* The AVX2 + FMA register tile of the packed linear layer, for CPUs without AVX-512 (AMD Zen 2/3,
 * Intel before Skylake-SP): 6 rows × 16 columns, 12 accumulators + 2 weight vectors + 1 broadcast
 * of the 16 ymm registers, reading half of a 32-column panel, so both instruction sets share one
 * packed layout. GELU is evaluated in registers (avx2_math.h). */
#include "linear_packed_tiles.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include "avx2_math.h"
#include "linear_packed.h"

#define ROWS 6

AVX2 void linear_tile_avx2_6x16(float *c, int ldc, const float *a, int lda, int rows,
                                const float *restrict wp, int kc, const float *bias, int first,
                                int last, enum linear_epilogue epilogue)
{
    const float *ar[ROWS];
    for (int r = 0; r < ROWS; r++)
        ar[r] = a + (size_t)(r < rows ? r : rows - 1) * lda;
    __m256 acc[ROWS][2];
    if (first) {
        const __m256 b0 = bias ? _mm256_loadu_ps(bias) : _mm256_setzero_ps();
        const __m256 b1 = bias ? _mm256_loadu_ps(bias + 8) : _mm256_setzero_ps();
#pragma GCC unroll 6
        for (int r = 0; r < ROWS; r++)
            acc[r][0] = b0, acc[r][1] = b1;
    } else {
#pragma GCC unroll 6
        for (int r = 0; r < ROWS; r++) {
            const float *cr = c + (size_t)(r < rows ? r : 0) * ldc;
            acc[r][0] = _mm256_loadu_ps(cr);
            acc[r][1] = _mm256_loadu_ps(cr + 8);
        }
    }
    for (int k = 0; k < kc; k++) {
        const __m256 w0 = _mm256_load_ps(wp + (size_t)k * LINEAR_PANEL);
        const __m256 w1 = _mm256_load_ps(wp + (size_t)k * LINEAR_PANEL + 8);
#pragma GCC unroll 6
        for (int r = 0; r < ROWS; r++) {
            const __m256 x = _mm256_broadcast_ss(ar[r] + k);
            acc[r][0] = _mm256_fmadd_ps(x, w0, acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(x, w1, acc[r][1]);
        }
    }
    if (last && epilogue == EPILOGUE_RELU)
#pragma GCC unroll 6
        for (int r = 0; r < ROWS; r++) {
            acc[r][0] = _mm256_max_ps(acc[r][0], _mm256_setzero_ps());
            acc[r][1] = _mm256_max_ps(acc[r][1], _mm256_setzero_ps());
        }
    /* Constant trip counts with a guard, never acc[variable]: that would keep the whole tile in
     * memory, stored back on every k. */
    if (last && epilogue == EPILOGUE_GELU)
#pragma GCC unroll 6
        for (int r = 0; r < ROWS; r++)
            if (r < rows) {
                acc[r][0] = gelu_avx2(acc[r][0]);
                acc[r][1] = gelu_avx2(acc[r][1]);
            }
#pragma GCC unroll 6
    for (int r = 0; r < ROWS; r++)
        if (r < rows) {
            _mm256_storeu_ps(c + (size_t)r * ldc, acc[r][0]);
            _mm256_storeu_ps(c + (size_t)r * ldc + 8, acc[r][1]);
        }
}

#endif
