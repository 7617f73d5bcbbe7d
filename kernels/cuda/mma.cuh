/* The tensor-core step behind our fast kernels: mma.m16n8k16 with bf16 operands and fp32
 * accumulators. On the GPU it is the PTX instruction; in the host emulation a per-warp software
 * version that places every element where the PTX ISA's fragment tables ("Matrix Fragments for
 * mma.m16n8k16 with floating point type") put it, so a kernel that gets a layout wrong fails CI.
 *
 * With g = lane >> 2 (groupID) and t = lane & 3 (threadID_in_group), each lane holds
 *   A (16×16, row-major) in four 32-bit registers of two bf16 (lower column in the low half):
 *     a[0] = A[g][2t..2t+1]   a[1] = A[g+8][2t..2t+1]   a[2] = A[g][2t+8..]   a[3] = A[g+8][2t+8..]
 *   B (16×8, "col": B[k][n]) in two registers:
 *     b[0] = B[2t..2t+1][g]   b[1] = B[2t+8..2t+9][g]
 *   C/D (16×8 fp32):  c[0] = C[g][2t]  c[1] = C[g][2t+1]  c[2] = C[g+8][2t]  c[3] = C[g+8][2t+1] */
#ifndef STOPCAL_MMA_CUH
#define STOPCAL_MMA_CUH

#include "cuda_common.cuh"

#ifndef STOPCAL_CUDA_EMULATION

/* d = a·b + c for one 16×8×16 tile; a warp-collective (all 32 lanes, converged). */
__device__ __forceinline__ void mma_m16n8k16_bf16(float d[4], const uint32_t a[4], const uint32_t b[2],
                                                  const float c[4])
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%11,%12,%13};\n"
                 : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]),
                   "f"(c[2]), "f"(c[3]));
#else
    /* Only sm_80+ is built; this keeps a host pass of nvcc happy. */
    d[0] = c[0], d[1] = c[1], d[2] = c[2], d[3] = c[3];
    (void)a, (void)b;
#endif
}

/* NT tiles that share the A fragment: acc[j] += a · b[j] for j < NT (one row of output tiles). */
template <int NT>
__device__ __forceinline__ void mma_m16n8k16_bf16_row(float (*acc)[4], const uint32_t a[4], const uint32_t (*b)[2])
{
#pragma unroll
    for (int j = 0; j < NT; j++)
        mma_m16n8k16_bf16(acc[j], a, b[j], acc[j]);
}

#else /* emulation */

template <int NT>
inline void mma_m16n8k16_bf16_row(float (*acc)[4], const uint32_t a[4], const uint32_t (*b)[2])
{
    struct fragments {
        uint32_t a[4];
        uint32_t b[NT][2];
    } mine, lane_frag;
    static_assert(sizeof(fragments) <= CUDA_EMU_WARP_SLOT_BYTES, "too many tiles for one exchange");
    memcpy(mine.a, a, sizeof mine.a);
    memcpy(mine.b, b, sizeof mine.b);
    /* One exchange for all NT tiles: the emulation's cost is barriers, not arithmetic. */
    const unsigned char *all = cuda_emu_warp_gather(&mine, sizeof mine);
    float A[16][16], B[NT][16][8];
    for (int L = 0; L < 32; L++) {
        memcpy(&lane_frag, all + (size_t)L * CUDA_EMU_WARP_SLOT_BYTES, sizeof lane_frag);
        const int g = L >> 2, t = L & 3;
        const int rows[4] = {g, g + 8, g, g + 8}, cols[4] = {2 * t, 2 * t, 2 * t + 8, 2 * t + 8};
        for (int r = 0; r < 4; r++) {
            A[rows[r]][cols[r]] = bf16_to_float((uint16_t)(lane_frag.a[r] & 0xffffu));
            A[rows[r]][cols[r] + 1] = bf16_to_float((uint16_t)(lane_frag.a[r] >> 16));
        }
        for (int j = 0; j < NT; j++)
            for (int r = 0; r < 2; r++) {
                B[j][2 * t + 8 * r][g] = bf16_to_float((uint16_t)(lane_frag.b[j][r] & 0xffffu));
                B[j][2 * t + 8 * r + 1][g] = bf16_to_float((uint16_t)(lane_frag.b[j][r] >> 16));
            }
    }
    const int lane = cuda_emu_lane(), g = lane >> 2, t = lane & 3;
    for (int j = 0; j < NT; j++)
        for (int i = 0; i < 4; i++) {
            const int row = g + (i >= 2 ? 8 : 0), col = 2 * t + (i & 1);
            float sum = 0.0f; /* products of bf16 are exact in fp32; the sum is fp32 as on the GPU */
            for (int k = 0; k < 16; k++)
                sum += A[row][k] * B[j][k][col];
            acc[j][i] += sum;
        }
}

inline void mma_m16n8k16_bf16(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4])
{
    float acc[1][4] = {{c[0], c[1], c[2], c[3]}};
    const uint32_t bb[1][2] = {{b[0], b[1]}};
    mma_m16n8k16_bf16_row<1>(acc, a, bb);
    memcpy(d, acc[0], sizeof acc[0]);
}

#endif

#endif
