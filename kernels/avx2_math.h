/* Vector exp2 and GELU for the AVX2 kernels (linear_packed_avx2.c, attention_fused_avx2.c), the
 * counterparts of avx512_math.h: same approximations and error bounds as fastmath.h's scalar forms.
 * Include only where __x86_64__ and GCC intrinsics are available. */
#ifndef STOPCAL_AVX2_MATH_H
#define STOPCAL_AVX2_MATH_H

#include <immintrin.h>

#define AVX2 __attribute__((target("avx2,fma")))

/* 2^x for x ≤ 0, clamped at -126: 2^f by the Taylor series of fastmath.h, 2^n built in the exponent
 * field. Below 2^-126 it returns 2^-126 instead of less: GELU's e^(-z²) there leaves erf = 1, and in
 * a softmax (whose sum is ≥ 1) such terms are ≤ 1e-38 each. */
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

#endif
