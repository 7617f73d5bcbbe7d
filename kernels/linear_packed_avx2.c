/* The AVX2 + FMA register tile of the packed linear layer, for CPUs without AVX-512 (AMD Zen 2/3,
 * Intel before Skylake-SP): 6 rows × 16 columns, 12 accumulators + 2 weight vectors + 1 broadcast
 * of the 16 ymm registers, reading half of a 32-column panel, so both instruction sets share one
 * packed layout. GELU is evaluated in registers with the approximations of fastmath.h. */
#include "linear_packed_tiles.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#include "linear_packed.h"

#define AVX2 __attribute__((target("avx2,fma")))
#define ROWS 6

/* 2^x for -126 ≤ x ≤ 0 (clamped there): 2^f by the Taylor series of fastmath.h, 2^n built in the
 * exponent field. Only GELU's e^(-z²) uses it, where anything below 2^-126 leaves erf = 1. */
AVX2 static inline __m256 exp2_avx2(__m256 x)
{
    x = _mm256_max_ps(x, _mm256_set1_ps(-126.0f));
    __m256 n = _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 f = _mm256_sub_ps(x, n);
    __m256 p = _mm256_set1_ps(1.5252733804059840e-05f);
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.5403530393381609e-04f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.3333558146428443e-03f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(9.6181291076284772e-03f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(5.5504108664821580e-02f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(2.4022650695910071e-01f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(6.9314718055994531e-01f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.0f));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

/* Exact-erf GELU as gelu_avx512 computes it (A&S 7.1.26 erf, reciprocal by rcp + Newton step). */
AVX2 static inline __m256 gelu_avx2(__m256 x)
{
    const __m256 sign_bit = _mm256_set1_ps(-0.0f);
    const __m256 z = _mm256_mul_ps(x, _mm256_set1_ps(0.70710678118654752f));
    const __m256 a = _mm256_andnot_ps(sign_bit, z);
    const __m256 d = _mm256_fmadd_ps(_mm256_set1_ps(0.3275911f), a, _mm256_set1_ps(1.0f));
    __m256 t = _mm256_rcp_ps(d);
    t = _mm256_mul_ps(t, _mm256_fnmadd_ps(d, t, _mm256_set1_ps(2.0f)));
    __m256 poly = _mm256_fmadd_ps(_mm256_set1_ps(1.061405429f), t, _mm256_set1_ps(-1.453152027f));
    poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(1.421413741f));
    poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(-0.284496736f));
    poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(0.254829592f));
    poly = _mm256_mul_ps(poly, t);
    const __m256 e = exp2_avx2(_mm256_mul_ps(_mm256_mul_ps(a, a), _mm256_set1_ps(-1.4426950408889634f)));
    const __m256 y = _mm256_fnmadd_ps(poly, e, _mm256_set1_ps(1.0f));
    const __m256 erf = _mm256_or_ps(y, _mm256_and_ps(sign_bit, z));
    return _mm256_mul_ps(x, _mm256_fmadd_ps(erf, _mm256_set1_ps(0.5f), _mm256_set1_ps(0.5f)));
}

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
