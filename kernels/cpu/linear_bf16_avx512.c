/* The AVX512_BF16 kernels of the bf16 linear layer (linear_bf16.h): an 8-row × 32-column register
 * tile (16 fp32 accumulators; per pair of k, two weight vectors and one broadcast pair per row),
 * and the fp32 → bf16 rounding of input rows. */
#include "linear_bf16_tile.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include "avx512_math.h"

#include <stddef.h>
#include <string.h>

/* The pair at a (two bf16 in one word), in every lane: vdpbf16ps takes it as a {1to16} operand. */
AVX512_BF16 static inline __m512bh broadcast_pair(const uint32_t *a)
{
    uint32_t w;
    memcpy(&w, a, sizeof w);
    return (__m512bh)_mm512_set1_epi32((int)w);
}

AVX512_BF16 void linear_bf16_tile_8x32(float *c, int ldc, uint32_t *c16, int ldc16, const uint32_t *a,
                                       int lda, int rows, const uint32_t *restrict wp, int kc,
                                       const float *bias, int cols, int first, int last,
                                       enum linear_epilogue epilogue)
{
    enum { TILE_ROWS = LINEAR_BF16_TILE_ROWS };
    /* columns 0..15 and 16..31 of the panel that exist */
    const __mmask16 m0 = cols >= 16 ? 0xFFFF : (__mmask16)((1u << cols) - 1);
    const __mmask16 m1 = cols >= 32 ? 0xFFFF : cols <= 16 ? 0 : (__mmask16)((1u << (cols - 16)) - 1);
    const uint32_t *ar[TILE_ROWS];
    for (int r = 0; r < TILE_ROWS; r++)
        ar[r] = a + (size_t)(r < rows ? r : rows - 1) * lda;
    __m512 acc[TILE_ROWS][2];
    if (first) {
        const __m512 b0 = bias ? _mm512_maskz_loadu_ps(m0, bias) : _mm512_setzero_ps();
        const __m512 b1 = bias ? _mm512_maskz_loadu_ps(m1, bias + 16) : _mm512_setzero_ps();
#pragma GCC unroll 8
        for (int r = 0; r < TILE_ROWS; r++)
            acc[r][0] = b0, acc[r][1] = b1;
    } else {
#pragma GCC unroll 8
        for (int r = 0; r < TILE_ROWS; r++) {
            const float *cr = c + (size_t)(r < rows ? r : 0) * ldc;
            acc[r][0] = _mm512_maskz_loadu_ps(m0, cr);
            acc[r][1] = _mm512_maskz_loadu_ps(m1, cr + 16);
        }
    }
    for (int i = 0; i < kc; i++) {
        const __m512bh w0 = (__m512bh)_mm512_load_si512(wp + (size_t)i * 32);
        const __m512bh w1 = (__m512bh)_mm512_load_si512(wp + (size_t)i * 32 + 16);
#pragma GCC unroll 8
        for (int r = 0; r < TILE_ROWS; r++) {
            const __m512bh x = broadcast_pair(ar[r] + i);
            acc[r][0] = _mm512_dpbf16_ps(acc[r][0], x, w0);
            acc[r][1] = _mm512_dpbf16_ps(acc[r][1], x, w1);
        }
    }
    if (last && epilogue == EPILOGUE_RELU)
#pragma GCC unroll 8
        for (int r = 0; r < TILE_ROWS; r++) {
            acc[r][0] = _mm512_max_ps(acc[r][0], _mm512_setzero_ps());
            acc[r][1] = _mm512_max_ps(acc[r][1], _mm512_setzero_ps());
        }
    /* Constant trip counts with a guard, never acc[variable]: that would keep the tile in memory. */
    if (last && epilogue == EPILOGUE_GELU)
#pragma GCC unroll 8
        for (int r = 0; r < TILE_ROWS; r++)
            if (r < rows) {
                acc[r][0] = gelu_avx512(acc[r][0]);
                acc[r][1] = gelu_avx512(acc[r][1]);
            }
    if (last && c16) {
        /* Columns past `cols` are zeroed, not just left at 0·x: an infinite input would make them
         * NaN, and the next GEMM multiplies the pad of an odd row by a zero weight. */
        const __mmask16 words = cols >= 32 ? 0xFFFF : (__mmask16)((1u << ((cols + 1) / 2)) - 1);
#pragma GCC unroll 8
        for (int r = 0; r < TILE_ROWS; r++)
            if (r < rows)
                _mm512_mask_storeu_epi32(c16 + (size_t)r * ldc16, words,
                                         (__m512i)_mm512_cvtne2ps_pbh(_mm512_maskz_mov_ps(m1, acc[r][1]),
                                                                      _mm512_maskz_mov_ps(m0, acc[r][0])));
        return;
    }
#pragma GCC unroll 8
    for (int r = 0; r < TILE_ROWS; r++)
        if (r < rows) {
            _mm512_mask_storeu_ps(c + (size_t)r * ldc, m0, acc[r][0]);
            _mm512_mask_storeu_ps(c + (size_t)r * ldc + 16, m1, acc[r][1]);
        }
}

AVX512_BF16 void linear_bf16_round_row_avx512(uint32_t *dst, const float *src, int n)
{
    int j = 0;
    for (; j + 32 <= n; j += 32) {
        const __m512bh h = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(src + j + 16), _mm512_loadu_ps(src + j));
        _mm512_storeu_si512(dst + j / 2, (__m512i)h);
    }
    if (j < n) { /* the tail through masks: lanes past n load as 0, pairs past ⌈n/2⌉ not stored */
        const int left = n - j, pairs = (left + 1) / 2;
        const __mmask16 lo = left >= 16 ? 0xFFFF : (__mmask16)((1u << left) - 1);
        const __mmask16 hi = left <= 16 ? 0 : (__mmask16)((1u << (left - 16)) - 1);
        const __m512bh h = _mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(hi, src + j + 16),
                                               _mm512_maskz_loadu_ps(lo, src + j));
        _mm512_mask_storeu_epi32(dst + j / 2, (__mmask16)((1u << pairs) - 1), (__m512i)h);
    }
}

#endif
