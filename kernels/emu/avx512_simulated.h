/* The AVX-512 and AVX512_BF16 instructions the CPU kernels use, simulated in C, so that the
 * product's own AVX-512 sources (kernels/cpu/..._avx512.c) run and are tested on any x86-64 CPU with
 * AVX2, not only on the CPUs that have the instructions. Included by kernels/cpu/avx512_math.h in
 * the test-only build that defines STOPCAL_SIMULATE_AVX512 (stopcal_kernels_avx512sim
 * in kernels/CMakeLists.txt); never in the product.
 *
 * The AVX-512F/BW instructions come from SIMDe (libsimde-dev), whose aliases let the sources keep
 * the intrinsics' own names. Defined here: the few SIMDe 0.7 lacks, and the bf16 ones, whose SIMDe
 * forms do not round as the instructions do (its vdpbf16ps adds both products before the
 * accumulator and keeps denormals; it has no vcvtne2ps2bf16). The bf16 semantics follow the Intel
 * SDM, written with bit operations so that they are independent of the plain C references
 * (kernels/ref/bf16_ref.c) the tests compare the kernels with:
 *   vcvtne2ps2bf16 / vcvtneps2bf16: round to nearest even, a denormal input read as zero (DAZ);
 *   vdpbf16ps: per fp32 lane, acc + odd·odd rounded, then + even·even rounded; denormal inputs
 *   read as zero and a denormal result written as zero (FTZ).
 * vrcp14ps is an approximation on hardware (relative error < 2^-14) and is simulated as one, 1/x
 * cut to 14 significant bits, so that a kernel relying on an exact reciprocal fails here too.
 * Masked loads and stores touch only the lanes their mask selects, as the hardware does (a lane
 * past the end of a buffer is never read, which AddressSanitizer checks). */
#ifndef STOPCAL_AVX512_SIMULATED_H
#define STOPCAL_AVX512_SIMULATED_H

#define SIMDE_ENABLE_NATIVE_ALIASES
#include <simde/x86/avx512.h>

#include <math.h>
#include <stdint.h>
#include <string.h>

/* Lanes of a vector as an array, and back. */
#define SIM_LANES(type, n, name, vec) \
    type name[n];                     \
    memcpy(name, &(vec), sizeof name)
#define SIM_VECTOR(vtype, name, lanes) \
    vtype name;                        \
    memcpy(&name, lanes, sizeof name)

static inline uint32_t sim_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float sim_float(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* DAZ / FTZ: a value with a zero exponent field and a nonzero fraction becomes a zero of its sign. */
static inline float sim_flush(float f)
{
    const uint32_t u = sim_bits(f);
    return (u & 0x7f800000u) == 0 ? sim_float(u & 0x80000000u) : f;
}

/* One fp32 → bf16 conversion as vcvtneps2bf16 does it. */
static inline uint16_t sim_to_bf16(float f)
{
    uint32_t u = sim_bits(sim_flush(f));
    if ((u & 0x7fffffffu) > 0x7f800000u) /* NaN: quieted, its sign and top payload bits kept */
        return (uint16_t)(u >> 16 | 0x0040u);
    u += 0x7fffu + (u >> 16 & 1u); /* ties to even; a carry into the exponent is the right result */
    return (uint16_t)(u >> 16);
}

static inline __m512bh sim_mm512_cvtne2ps_pbh(__m512 a, __m512 b)
{
    SIM_LANES(float, 16, hi, a);
    SIM_LANES(float, 16, lo, b);
    uint16_t h[32];
    for (int i = 0; i < 16; i++) {
        h[i] = sim_to_bf16(lo[i]);
        h[i + 16] = sim_to_bf16(hi[i]);
    }
    SIM_VECTOR(__m512bh, r, h);
    return r;
}

static inline __m256bh sim_mm512_cvtneps_pbh(__m512 a)
{
    SIM_LANES(float, 16, f, a);
    uint16_t h[16];
    for (int i = 0; i < 16; i++)
        h[i] = sim_to_bf16(f[i]);
    SIM_VECTOR(__m256bh, r, h);
    return r;
}

static inline __m512 sim_mm512_dpbf16_ps(__m512 src, __m512bh a, __m512bh b)
{
    SIM_LANES(float, 16, acc, src);
    SIM_LANES(uint16_t, 32, x, a);
    SIM_LANES(uint16_t, 32, y, b);
    for (int i = 0; i < 16; i++) {
        const float xo = sim_flush(sim_float((uint32_t)x[2 * i + 1] << 16));
        const float yo = sim_flush(sim_float((uint32_t)y[2 * i + 1] << 16));
        const float xe = sim_flush(sim_float((uint32_t)x[2 * i] << 16));
        const float ye = sim_flush(sim_float((uint32_t)y[2 * i] << 16));
        /* each bf16 product is exact in fp32, so fmaf rounds only the addition, as the SDM says */
        const float t = sim_flush(fmaf(xo, yo, sim_flush(acc[i])));
        acc[i] = sim_flush(fmaf(xe, ye, t));
    }
    SIM_VECTOR(__m512, r, acc);
    return r;
}

static inline __m512 sim_mm512_maskz_loadu_ps(__mmask16 k, const void *p)
{
    float f[16];
    for (int i = 0; i < 16; i++)
        f[i] = k >> i & 1 ? ((const float *)p)[i] : 0.0f;
    SIM_VECTOR(__m512, r, f);
    return r;
}

static inline void sim_mm512_mask_storeu_ps(void *p, __mmask16 k, __m512 v)
{
    SIM_LANES(float, 16, f, v);
    for (int i = 0; i < 16; i++)
        if (k >> i & 1)
            ((float *)p)[i] = f[i];
}

static inline void sim_mm512_mask_storeu_epi32(void *p, __mmask16 k, __m512i v)
{
    SIM_LANES(uint32_t, 16, w, v);
    for (int i = 0; i < 16; i++)
        if (k >> i & 1)
            memcpy((char *)p + 4 * i, &w[i], 4);
}

static inline __m512i sim_mm512_cvtepu16_epi32(__m256i v)
{
    SIM_LANES(uint16_t, 16, h, v);
    uint32_t w[16];
    for (int i = 0; i < 16; i++)
        w[i] = h[i];
    SIM_VECTOR(__m512i, r, w);
    return r;
}

static inline __m512 sim_mm512_rcp14_ps(__m512 v)
{
    SIM_LANES(float, 16, f, v);
    for (int i = 0; i < 16; i++) {
        const float q = 1.0f / f[i];
        f[i] = isfinite(q) && q != 0 ? sim_float(sim_bits(q) & ~0x1ffu) : q; /* 14 bits kept */
    }
    SIM_VECTOR(__m512, r, f);
    return r;
}

/* The reductions in the order GCC's forms of them take (halves folded in turn). */
static inline float sim_reduce(__m512 v, int max)
{
    SIM_LANES(float, 16, f, v);
    for (int width = 8; width >= 1; width /= 2)
        for (int i = 0; i < width; i++)
            f[i] = max ? fmaxf(f[i], f[i + width]) : f[i] + f[i + width];
    return f[0];
}

static inline float sim_mm512_reduce_add_ps(__m512 v) { return sim_reduce(v, 0); }
static inline float sim_mm512_reduce_max_ps(__m512 v) { return sim_reduce(v, 1); }

/* The compiler's own declarations of these need the real target, and SIMDe's bf16 forms round
 * otherwise: the names are taken over. */
#undef _mm512_dpbf16_ps
#define _mm512_cvtne2ps_pbh sim_mm512_cvtne2ps_pbh
#define _mm512_cvtneps_pbh sim_mm512_cvtneps_pbh
#define _mm512_dpbf16_ps sim_mm512_dpbf16_ps
#define _mm512_maskz_loadu_ps sim_mm512_maskz_loadu_ps
#define _mm512_mask_storeu_ps sim_mm512_mask_storeu_ps
#define _mm512_mask_storeu_epi32 sim_mm512_mask_storeu_epi32
#define _mm512_cvtepu16_epi32 sim_mm512_cvtepu16_epi32
#define _mm512_rcp14_ps sim_mm512_rcp14_ps
#define _mm512_reduce_add_ps sim_mm512_reduce_add_ps
#define _mm512_reduce_max_ps sim_mm512_reduce_max_ps
#define _mm512_shuffle_f32x4(a, b, imm) simde_mm512_shuffle_f32x4(a, b, imm)

#endif
