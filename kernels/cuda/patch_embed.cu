/* Patch embedding in one kernel: each block gathers a 64-patch × 32-column slice of the
 * im2col matrix straight from the fp32 pixels (rounding to bf16 on the way), multiplies it with
 * the matching slice of the conv weight on the tensor cores (mma.m16n8k16), and writes the token
 * rows with bias and positional embedding added; the first column of blocks also writes the CLS
 * (+ pos₀) and register rows. No im2col buffer, no separate epilogue pass. */
#include "cuda_ops.h"
#include "mma.cuh"

namespace {

const int PE_TM = 64; /* patches per block: 4 warps × 16 rows */
const int PE_TN = 64; /* output channels per block: 8 mma tiles of 8 */
const int PE_TK = 32; /* K slice: two mma k-steps */
const int PE_PAD = 8; /* keeps rows 16-byte aligned and spreads shared-memory banks */

__global__ void __launch_bounds__(128)
patch_embed_kernel(float *x, const float *pixels, const bf16_t *w, const float *bias, const float *cls,
                   const float *reg, const float *pos, int batch, int S, int P, int D, int R)
{
    __shared__ __align__(16) bf16_t As[PE_TM][PE_TK + PE_PAD]; /* patches × K slice */
    __shared__ __align__(16) bf16_t Bs[PE_TN][PE_TK + PE_PAD]; /* channels × K slice (weight rows) */
    const int g = S / P, np = g * g, M = batch * np, PP = P * P, K = 3 * PP, T = 1 + R + np;
    const int m0 = blockIdx.x * PE_TM, n0 = blockIdx.y * PE_TN;
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, gq = lane >> 2, tq = lane & 3;
    float acc[8][4];
    for (int j = 0; j < 8; j++)
        acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.0f;

    for (int k0 = 0; k0 < K; k0 += PE_TK) {
        for (int e = tid; e < PE_TM * PE_TK; e += 128) {
            const int r = e / PE_TK, c = e % PE_TK, m = m0 + r, k = k0 + c;
            float v = 0.0f;
            if (m < M && k < K) {
                const int b = m / np, p = m % np, py = p / g, px = p % g;
                const int ch = k / PP, ky = (k % PP) / P, kx = k % P;
                v = pixels[(((long)b * 3 + ch) * S + py * P + ky) * S + px * P + kx];
            }
            As[r][c] = f2bf(v);
        }
        for (int e = tid; e < PE_TN * PE_TK; e += 128) {
            const int r = e / PE_TK, c = e % PE_TK, n = n0 + r, k = k0 + c;
            Bs[r][c] = n < D && k < K ? w[(long)n * K + k] : (bf16_t)0;
        }
        __syncthreads();
        for (int ks = 0; ks < PE_TK; ks += 16) {
            const int ar = warp * 16 + gq;
            uint32_t a[4], bfrag[8][2];
            a[0] = ld_u32(&As[ar][ks + 2 * tq]);
            a[1] = ld_u32(&As[ar + 8][ks + 2 * tq]);
            a[2] = ld_u32(&As[ar][ks + 8 + 2 * tq]);
            a[3] = ld_u32(&As[ar + 8][ks + 8 + 2 * tq]);
            for (int j = 0; j < 8; j++) { /* B[k][n] = W[n][k]: two k-adjacent values of one weight row */
                bfrag[j][0] = ld_u32(&Bs[j * 8 + gq][ks + 2 * tq]);
                bfrag[j][1] = ld_u32(&Bs[j * 8 + gq][ks + 8 + 2 * tq]);
            }
            mma_m16n8k16_bf16_row<8>(acc, a, bfrag);
        }
        __syncthreads();
    }

    for (int j = 0; j < 8; j++)
        for (int i = 0; i < 4; i++) {
            const int m = m0 + warp * 16 + gq + (i >= 2 ? 8 : 0), n = n0 + j * 8 + 2 * tq + (i & 1);
            if (m < M && n < D) {
                const int b = m / np, p = m % np;
                x[((long)b * T + 1 + R + p) * D + n] = acc[j][i] + bias[n] + (pos ? pos[(long)(1 + p) * D + n] : 0.0f);
            }
        }
    if (blockIdx.x == 0) /* CLS and registers: registers carry no positional embedding */
        for (int e = tid; e < batch * (1 + R) * PE_TN; e += 128) {
            const int c = e % PE_TN, t = (e / PE_TN) % (1 + R), b = e / (PE_TN * (1 + R)), n = n0 + c;
            if (n < D)
                x[((long)b * T + t) * D + n] = t == 0 ? (pos ? cls[n] + pos[n] : cls[n]) : reg[(long)(t - 1) * D + n];
        }
}

} /* namespace */

extern "C" int CUDA_OP(patch_embed)(float *x, const float *pixels, const uint16_t *weight, const float *bias,
                                    const float *cls_token, const float *registers, const float *pos, int batch,
                                    int image_size, int patch_size, int dim, int num_registers, void *stream)
{
    if (batch <= 0 || patch_size <= 0 || image_size % patch_size || dim <= 0 || (num_registers > 0 && !registers))
        return (int)cudaErrorInvalidValue;
    const int g = image_size / patch_size, M = batch * g * g;
    dim3 grid((unsigned)((M + PE_TM - 1) / PE_TM), (unsigned)((dim + PE_TN - 1) / PE_TN)), block(128);
    CUDA_LAUNCH(patch_embed_kernel, grid, block, (cudaStream_t)stream, x, pixels, weight, bias, cls_token,
                registers, pos, batch, image_size, patch_size, dim, num_registers);
    return (int)cudaGetLastError();
}
