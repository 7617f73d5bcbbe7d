/* bfloat16 as raw 16-bit patterns on the host: round-to-nearest-even from fp32 (what the GPU's
 * cvt.rn.bf16.f32 does) and exact widening. Shared by the CUDA backend, its emulation and tests. */
#ifndef STOPCAL_BF16_H
#define STOPCAL_BF16_H

#include <stdint.h>
#include <string.h>

static inline uint16_t bf16_from_float(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) /* NaN: keep it a (quiet) NaN */
        return (uint16_t)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static inline float bf16_to_float(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* What the x86 vcvtne2ps2bf16 / vcvtneps2bf16 instructions do (the CPU backend's bf16 path): the
 * same round-to-nearest-even, but a denormal input becomes a zero of its sign first (DAZ; checked
 * against the instruction bit for bit in tests/kernels/test_linear_bf16.c). */
static inline uint16_t bf16_from_float_daz(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7f800000u) == 0)
        u &= 0x80000000u;
    memcpy(&f, &u, 4);
    return bf16_from_float(f);
}

/* f rounded to the nearest bf16 value, as fp32. */
static inline float bf16_round(float f) { return bf16_to_float(bf16_from_float(f)); }

#endif
