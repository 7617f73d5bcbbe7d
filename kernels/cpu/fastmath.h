/* exp and erf in forms the compiler can vectorise: the softmax evaluates ~10⁸ exponentials per
 * image at 560², where libm's scalar calls would cost more than the attention GEMMs. */
#ifndef STOPCAL_FASTMATH_H
#define STOPCAL_FASTMATH_H

#include <stdint.h>
#include <string.h>

/* The coefficients of the approximations, shared with the vector forms (avx512_math.h,
 * avx2_math.h) so every path computes the same polynomial.
 * erf (Abramowitz & Stegun 7.1.26, absolute error < 1.5e-7 for a ≥ 0):
 *   erf(a) ≈ 1 − t·(A1 + t·(A2 + t·(A3 + t·(A4 + t·A5))))·e^(−a²), t = 1/(1 + P·a) */
#define ERF_AS_P 0.3275911f
#define ERF_AS_A1 0.254829592f
#define ERF_AS_A2 -0.284496736f
#define ERF_AS_A3 1.421413741f
#define ERF_AS_A4 -1.453152027f
#define ERF_AS_A5 1.061405429f
/* 2^f for |f| ≤ ½ by the Taylor series of e^(f·ln2) to degree 7 (truncation < 6e-9):
 * the coefficients ln2^k / k! */
#define EXP2_C1 6.9314718055994531e-01f
#define EXP2_C2 2.4022650695910071e-01f
#define EXP2_C3 5.5504108664821580e-02f
#define EXP2_C4 9.6181291076284772e-03f
#define EXP2_C5 1.3333558146428443e-03f
#define EXP2_C6 1.5403530393381609e-04f
#define EXP2_C7 1.5252733804059840e-05f

/* e^x with ≤ 2 ulp error on [-87, 88]; inputs are clamped there (e^-87 ≈ 1.6e-38). */
static inline float fast_expf(float x)
{
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    /* x = n·ln2 + f with |f| ≤ ln2/2; n rounded by the 1.5·2²³ trick (no libm call). */
    float n = (x * 1.44269504089f + 12582912.0f) - 12582912.0f;
    float f = x - n * 0.693145751953125f;
    f = f - n * 1.428606765330187e-06f;
    /* Taylor to degree 7: truncation error < 6e-9 on |f| ≤ 0.347. */
    float p = 1.0f / 5040.0f;
    p = p * f + 1.0f / 720.0f;
    p = p * f + 1.0f / 120.0f;
    p = p * f + 1.0f / 24.0f;
    p = p * f + 1.0f / 6.0f;
    p = p * f + 0.5f;
    p = p * f + 1.0f;
    p = p * f + 1.0f;
    int32_t e = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &e, 4);
    return p * scale;
}

/* erf(x) with absolute error < 2e-7 (Abramowitz & Stegun 7.1.26 form). */
static inline float fast_erff(float x)
{
    float a = x < 0 ? -x : x;
    float t = 1.0f / (1.0f + ERF_AS_P * a);
    float poly = t * (ERF_AS_A1 + t * (ERF_AS_A2 + t * (ERF_AS_A3 + t * (ERF_AS_A4 + t * ERF_AS_A5))));
    float y = 1.0f - poly * fast_expf(-a * a);
    return x < 0 ? -y : y;
}

/* GELU with the exact-erf definition: 0.5·x·(1 + erf(x/√2)). */
static inline float gelu_erf(float x) { return 0.5f * x * (1.0f + fast_erff(x * 0.70710678118654752f)); }

#endif
