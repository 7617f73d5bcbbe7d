/* Fused attention, flash-attention style (head dim 64, any sequence length): one block per
 * (64 queries, head, image), 4 warps of 16 query rows. Per 64-key tile: S = Q·Kᵀ on the tensor
 * cores, mask the ragged tail, online softmax in fp32 (running max and sum per row, exp2 with the
 * 1/8·log2 e scale folded in), P rounded to bf16 and O += P·V on the tensor cores. The T×T score
 * matrix never exists; memory traffic is one read of Q, K, V per query tile and one write of O.
 * P's bf16 rounding is summed into the normaliser too, so O stays an exact weighted mean of V. */
#include "cuda_ops.h"
#include "mma.cuh"

#include <math.h>

namespace {

const int FA_TQ = 64, FA_TK = 64, FA_HD = 64, FA_LD = FA_HD + 8;

__global__ void __launch_bounds__(128)
flash_attention_kernel(bf16_t *out, const bf16_t *qkv, int T, int H)
{
    __shared__ __align__(16) bf16_t Qs[FA_TQ][FA_LD]; /* query × dim */
    __shared__ __align__(16) bf16_t Ks[FA_TK][FA_LD]; /* key × dim */
    __shared__ __align__(16) bf16_t Vt[FA_HD][FA_LD]; /* dim × key: V transposed for the B fragments */
    const int D = H * FA_HD, ld = 3 * D;
    const int q0 = blockIdx.x * FA_TQ, h = blockIdx.y, b = blockIdx.z;
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, gq = lane >> 2, tq = lane & 3;
    const bf16_t *base = qkv + (long)b * T * ld;
    const float scale_log2 = 0.125f * 1.44269504088896341f; /* 1/√64 · log2(e) */

    for (int e = tid; e < FA_TQ * FA_HD / 2; e += 128) {
        const int r = e / (FA_HD / 2), c = 2 * (e % (FA_HD / 2)), t = q0 + r;
        st_u32(&Qs[r][c], t < T ? ld_u32(base + (long)t * ld + h * FA_HD + c) : 0u);
    }
    __syncthreads();
    uint32_t qa[4][4]; /* this warp's 16 query rows as A fragments, one per 16-wide k-step */
    const int qr = warp * 16 + gq;
    for (int ks = 0; ks < 4; ks++) {
        qa[ks][0] = ld_u32(&Qs[qr][ks * 16 + 2 * tq]);
        qa[ks][1] = ld_u32(&Qs[qr + 8][ks * 16 + 2 * tq]);
        qa[ks][2] = ld_u32(&Qs[qr][ks * 16 + 8 + 2 * tq]);
        qa[ks][3] = ld_u32(&Qs[qr + 8][ks * 16 + 8 + 2 * tq]);
    }

    float o[8][4], row_max[2] = {-INFINITY, -INFINITY}, row_sum[2] = {0.0f, 0.0f};
    for (int j = 0; j < 8; j++)
        o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;

    for (int k0 = 0; k0 < T; k0 += FA_TK) {
        __syncthreads(); /* every warp is done with the previous K and V tiles */
        for (int e = tid; e < FA_TK * FA_HD / 2; e += 128) {
            const int r = e / (FA_HD / 2), c = 2 * (e % (FA_HD / 2)), t = k0 + r;
            const bf16_t *row = base + (long)t * ld + h * FA_HD + c;
            const uint32_t kv = t < T ? ld_u32(row + D) : 0u, vv = t < T ? ld_u32(row + 2 * D) : 0u;
            st_u32(&Ks[r][c], kv);
            Vt[c][r] = (bf16_t)(vv & 0xffffu); /* zeros past the tail: 0·garbage could be NaN */
            Vt[c + 1][r] = (bf16_t)(vv >> 16);
        }
        __syncthreads();

        float s[8][4];
        for (int j = 0; j < 8; j++)
            s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
        for (int ks = 0; ks < 4; ks++) {
            uint32_t kb[8][2]; /* B[k][n] = K[key n][dim k] */
            for (int j = 0; j < 8; j++) {
                kb[j][0] = ld_u32(&Ks[j * 8 + gq][ks * 16 + 2 * tq]);
                kb[j][1] = ld_u32(&Ks[j * 8 + gq][ks * 16 + 8 + 2 * tq]);
            }
            mma_m16n8k16_bf16_row<8>(s, qa[ks], kb);
        }

        float tile_max[2] = {-INFINITY, -INFINITY};
        for (int j = 0; j < 8; j++)
            for (int i = 0; i < 4; i++) {
                const int key = k0 + j * 8 + 2 * tq + (i & 1);
                const float v = key < T ? s[j][i] * scale_log2 : -INFINITY;
                s[j][i] = v;
                tile_max[i >> 1] = fmaxf(tile_max[i >> 1], v);
            }
        float alpha[2];
        for (int r = 0; r < 2; r++) { /* the 4 lanes of a quad share rows gq and gq + 8 */
            tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 1));
            tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 2));
            /* Every tile holds at least one real key, so the new max is finite. */
            const float m_new = fmaxf(row_max[r], tile_max[r]);
            alpha[r] = exp2f(row_max[r] - m_new);
            row_max[r] = m_new;
            row_sum[r] *= alpha[r];
        }
        for (int j = 0; j < 8; j++)
            for (int i = 0; i < 4; i++) {
                const float p = bf2f(f2bf(exp2f(s[j][i] - row_max[i >> 1])));
                s[j][i] = p;
                row_sum[i >> 1] += p;
                o[j][i] *= alpha[i >> 1];
            }
        for (int ks = 0; ks < 4; ks++) { /* keys 16ks..16ks+15: accumulator tiles 2ks and 2ks+1 */
            uint32_t pa[4], vb[8][2];
            pa[0] = pack_bf16x2(s[2 * ks][0], s[2 * ks][1]);
            pa[1] = pack_bf16x2(s[2 * ks][2], s[2 * ks][3]);
            pa[2] = pack_bf16x2(s[2 * ks + 1][0], s[2 * ks + 1][1]);
            pa[3] = pack_bf16x2(s[2 * ks + 1][2], s[2 * ks + 1][3]);
            for (int j = 0; j < 8; j++) { /* B[k][n] = V[key k][dim n] = Vt[n][k] */
                vb[j][0] = ld_u32(&Vt[j * 8 + gq][ks * 16 + 2 * tq]);
                vb[j][1] = ld_u32(&Vt[j * 8 + gq][ks * 16 + 8 + 2 * tq]);
            }
            mma_m16n8k16_bf16_row<8>(o, pa, vb);
        }
    }

    for (int r = 0; r < 2; r++) {
        row_sum[r] += __shfl_xor_sync(0xffffffffu, row_sum[r], 1);
        row_sum[r] += __shfl_xor_sync(0xffffffffu, row_sum[r], 2);
    }
    for (int r = 0; r < 2; r++) {
        const int t = q0 + qr + 8 * r;
        if (t >= T)
            continue;
        const float inv = 1.0f / row_sum[r];
        bf16_t *dst = out + ((long)b * T + t) * D + h * FA_HD;
        for (int j = 0; j < 8; j++)
            st_u32(dst + j * 8 + 2 * tq, pack_bf16x2(o[j][2 * r] * inv, o[j][2 * r + 1] * inv));
    }
}

} /* namespace */

extern "C" int CUDA_OP(attention)(uint16_t *out, const uint16_t *qkv, int batch, int tokens, int heads,
                                  void *stream)
{
    if (batch <= 0 || tokens <= 0 || heads <= 0)
        return batch == 0 || tokens == 0 ? 0 : (int)cudaErrorInvalidValue;
    dim3 grid((unsigned)((tokens + FA_TQ - 1) / FA_TQ), (unsigned)heads, (unsigned)batch), block(128);
    CUDA_LAUNCH(flash_attention_kernel, grid, block, (cudaStream_t)stream, out, qkv, tokens, heads);
    return (int)cudaGetLastError();
}
