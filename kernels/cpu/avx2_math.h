/* Vector exp2 and GELU for the AVX2 kernels (linear_packed_avx2.c, attention_fused_avx2.c), the
 * counterparts of avx512_math.h: same approximations and error bounds as fastmath.h's scalar forms.
 * Include only where __x86_64__ and GCC intrinsics are available. */
#ifndef STOPCAL_AVX2_MATH_H
#define STOPCAL_AVX2_MATH_H

#include "fastmath.h"

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
    __m256 p = _mm256_set1_ps(EXP2_C7);
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(EXP2_C6));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(EXP2_C5));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(EXP2_C4));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(EXP2_C3));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(EXP2_C2));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(EXP2_C1));
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
    const __m256 d = _mm256_fmadd_ps(_mm256_set1_ps(ERF_AS_P), a, _mm256_set1_ps(1.0f));
    __m256 t = _mm256_rcp_ps(d);
    t = _mm256_mul_ps(t, _mm256_fnmadd_ps(d, t, _mm256_set1_ps(2.0f)));
    __m256 poly = _mm256_fmadd_ps(_mm256_set1_ps(ERF_AS_A5), t, _mm256_set1_ps(ERF_AS_A4));
    poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(ERF_AS_A3));
    poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(ERF_AS_A2));
    poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(ERF_AS_A1));
    poly = _mm256_mul_ps(poly, t);
    const __m256 e = exp2_avx2(_mm256_mul_ps(_mm256_mul_ps(a, a), _mm256_set1_ps(-1.4426950408889634f)));
    const __m256 y = _mm256_fnmadd_ps(poly, e, _mm256_set1_ps(1.0f));
    const __m256 erf = _mm256_or_ps(y, _mm256_and_ps(sign_bit, z));
    return _mm256_mul_ps(x, _mm256_fmadd_ps(erf, _mm256_set1_ps(0.5f), _mm256_set1_ps(0.5f)));
}

#endif
