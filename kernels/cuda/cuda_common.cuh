/* What every CUDA source of ours includes: the CUDA headers on the GPU or cuda_emu.h on the host,
 * the launch macro, and the bf16 and 32-bit shared-memory helpers the kernels share. Kernels only
 * use what both builds provide, so the same text runs on a GPU and in CI. */
#ifndef STOPCAL_CUDA_COMMON_CUH
#define STOPCAL_CUDA_COMMON_CUH

#include "bf16.h"

#include <stddef.h>
#include <stdint.h>

#ifdef STOPCAL_CUDA_EMULATION
#include "cuda_emu.h"
/* kernel must be a plain name (alias a template instantiation first). */
#define CUDA_LAUNCH(kernel, grid, block, stream, ...) \
    cuda_emu_launch((grid), (block), (stream), [=]() { kernel(__VA_ARGS__); })
#else
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#define CUDA_LAUNCH(kernel, grid, block, stream, ...) kernel<<<(grid), (block), 0, (stream)>>>(__VA_ARGS__)
#endif

typedef uint16_t bf16_t; /* bfloat16 bit pattern in memory */

__device__ __forceinline__ float bf2f(bf16_t h)
{
#ifdef STOPCAL_CUDA_EMULATION
    return bf16_to_float(h);
#else
    return __bfloat162float(__ushort_as_bfloat16(h));
#endif
}

__device__ __forceinline__ bf16_t f2bf(float f)
{
#ifdef STOPCAL_CUDA_EMULATION
    return bf16_from_float(f);
#else
    return __bfloat16_as_ushort(__float2bfloat16_rn(f));
#endif
}

/* Two bf16 in one 32-bit register, `lo` in the low half (the element with the lower index, as
 * the mma fragments and little-endian memory both have it). */
__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi)
{
    return (uint32_t)f2bf(lo) | ((uint32_t)f2bf(hi) << 16);
}

/* 32-bit load/store of two adjacent bf16 (4-byte aligned). */
__device__ __forceinline__ uint32_t ld_u32(const void *p)
{
#ifdef STOPCAL_CUDA_EMULATION
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
#else
    return *static_cast<const uint32_t *>(p);
#endif
}

__device__ __forceinline__ void st_u32(void *p, uint32_t v)
{
#ifdef STOPCAL_CUDA_EMULATION
    memcpy(p, &v, 4);
#else
    *static_cast<uint32_t *>(p) = v;
#endif
}

/* Values we read as fp32 or bf16 depending on the buffer's storage. */
__device__ __forceinline__ float load_f(const float *p, long i) { return p[i]; }
__device__ __forceinline__ float load_f(const bf16_t *p, long i) { return bf2f(p[i]); }
__device__ __forceinline__ void store_f(float *p, long i, float v) { p[i] = v; }
__device__ __forceinline__ void store_f(bf16_t *p, long i, float v) { p[i] = f2bf(v); }

__device__ __forceinline__ float warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* Elementwise kernels loop over the grid; the emulation keeps their grids small because every
 * emulated block costs a round of thread barriers. */
#ifdef STOPCAL_CUDA_EMULATION
#define CUDA_ELEMENTWISE_MAX_BLOCKS 3
#else
#define CUDA_ELEMENTWISE_MAX_BLOCKS 4096
#endif

static inline unsigned elementwise_blocks(long n, int threads)
{
    long b = (n + threads - 1) / threads;
    if (b > CUDA_ELEMENTWISE_MAX_BLOCKS)
        b = CUDA_ELEMENTWISE_MAX_BLOCKS;
    return (unsigned)(b > 0 ? b : 1);
}

#endif
