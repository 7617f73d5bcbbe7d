/* Vector exp2 and GELU for the AVX-512 kernels (attention_fused_avx512.c, linear_packed_avx512.c),
 * evaluated in registers so neither kernel makes an extra pass over memory for them. Same
 * approximations and error bounds as fastmath.h's scalar forms. Include only where __x86_64__ and
 * GCC intrinsics are available; the functions carry their own target attribute (AVX512, and
 * AVX512_BF16 for the bf16 kernels). */
#ifndef STOPCAL_AVX512_MATH_H
#define STOPCAL_AVX512_MATH_H

#include "fastmath.h"

/* STOPCAL_SIMULATE_AVX512 is the test-only build of these kernels for CPUs without AVX-512
 * (kernels/emu/avx512_simulated.h): the same sources on simulated instructions, compiled for AVX2. The
 * product never defines it. */
#ifdef STOPCAL_SIMULATE_AVX512
#include "avx512_simulated.h"
#define AVX512
#define AVX512_BF16
#else
#include <immintrin.h>
#define AVX512 __attribute__((target("avx512f")))
#define AVX512_BF16 __attribute__((target("avx512f,avx512bw,avx512bf16")))
#endif

/* 2^x for x ≤ 0: x = n + f with |f| ≤ ½, 2^f by its Taylor series in f·ln2 to degree 7
 * (truncation < 6e-9, the form of fast_expf), scaled by 2^n with vscalefps, which also takes the
 * underflow towards 0 correctly. */
/* x (≤ 0) = n + f with n an integer and |f| ≤ ½; returns n. Both polynomials below share it. */
AVX512 static inline __m512 exp2_split(__m512 x, __m512 *f)
{
    x = _mm512_max_ps(x, _mm512_set1_ps(-150.0f)); /* 2^-150 rounds to 0 either way */
    const __m512 n = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    *f = _mm512_sub_ps(x, n);
    return n;
}

AVX512 static inline __m512 exp2_nonpositive(__m512 x)
{
    __m512 f;
    const __m512 n = exp2_split(x, &f);
    __m512 p = _mm512_set1_ps(EXP2_C7);
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(EXP2_C6));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(EXP2_C5));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(EXP2_C4));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(EXP2_C3));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(EXP2_C2));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(EXP2_C1));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

/* 2^x for x ≤ 0 for the bf16 kernels, whose results are rounded to bf16 (a relative step of
 * 2^-8) before anything reads them: 2^f on |f| ≤ ½ by a degree-5 polynomial fitted for relative
 * error (a Lawson-weighted least-squares fit with p(0) = 1 exactly; max relative error 1.9e-7
 * evaluated in fp32, against fp32's own 6e-8 step), two multiply-adds fewer than the degree-7
 * series above, which the fp32 kernels keep. */
#define EXP2_BF16_C1 6.9314697759658880e-01f
#define EXP2_BF16_C2 2.4022242081843076e-01f
#define EXP2_BF16_C3 5.5507337456459140e-02f
#define EXP2_BF16_C4 9.6715128621907110e-03f
#define EXP2_BF16_C5 1.3264727080073118e-03f

AVX512 static inline __m512 exp2_nonpositive_bf16(__m512 x)
{
    __m512 f;
    const __m512 n = exp2_split(x, &f);
    __m512 p = _mm512_set1_ps(EXP2_BF16_C5);
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(EXP2_BF16_C4));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(EXP2_BF16_C3));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(EXP2_BF16_C2));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(EXP2_BF16_C1));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

/* Exact-erf GELU, 0.5·x·(1 + erf(x/√2)), with erf in the Abramowitz & Stegun 7.1.26 form of
 * fast_erff (absolute error < 2e-7); its 1/(1 + p·|z|) by vrcp14ps and one Newton step
 * (relative error ~4e-9) instead of a division. */
AVX512 static inline __m512 gelu_avx512(__m512 x)
{
    const __m512 z = _mm512_mul_ps(x, _mm512_set1_ps(0.70710678118654752f));
    const __m512 a = _mm512_abs_ps(z);
    const __m512 d = _mm512_fmadd_ps(_mm512_set1_ps(ERF_AS_P), a, _mm512_set1_ps(1.0f));
    __m512 t = _mm512_rcp14_ps(d);
    t = _mm512_mul_ps(t, _mm512_fnmadd_ps(d, t, _mm512_set1_ps(2.0f)));
    __m512 poly = _mm512_fmadd_ps(_mm512_set1_ps(ERF_AS_A5), t, _mm512_set1_ps(ERF_AS_A4));
    poly = _mm512_fmadd_ps(poly, t, _mm512_set1_ps(ERF_AS_A3));
    poly = _mm512_fmadd_ps(poly, t, _mm512_set1_ps(ERF_AS_A2));
    poly = _mm512_fmadd_ps(poly, t, _mm512_set1_ps(ERF_AS_A1));
    poly = _mm512_mul_ps(poly, t);
    const __m512 e = exp2_nonpositive(_mm512_mul_ps(_mm512_mul_ps(a, a), _mm512_set1_ps(-1.4426950408889634f)));
    const __m512 y = _mm512_fnmadd_ps(poly, e, _mm512_set1_ps(1.0f)); /* erf(|z|) ≥ 0 */
    const __m512i sign = _mm512_and_si512(_mm512_castps_si512(z), _mm512_set1_epi32((int)0x80000000u));
    const __m512 erf = _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(y), sign));
    return _mm512_mul_ps(x, _mm512_fmadd_ps(erf, _mm512_set1_ps(0.5f), _mm512_set1_ps(0.5f)));
}

#endif
