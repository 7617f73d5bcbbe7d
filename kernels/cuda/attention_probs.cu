/* Attention probabilities for explain passes (backend.h, attention_probs): one block of 128
 * threads per (query row, image[, head]); the scores q·k/8 are recomputed in each of the three
 * passes (max, sum of exponentials, normalised write) rather than kept, so the kernel needs no
 * scratch row whatever the token count. Only explain requests run it, never the ordinary pass. */
#include "cuda_common.cuh"
#include "cuda_ops.h"

namespace {

const int AP_THREADS = 128;

__device__ __forceinline__ float warp_max(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* The block's max (is_max) or sum of v; every thread gets it. */
__device__ float block_reduce(float v, int is_max, float *tmp)
{
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    v = is_max ? warp_max(v) : warp_sum(v);
    if (lane == 0)
        tmp[warp] = v;
    __syncthreads();
    float r = tmp[0];
    for (int w = 1; w < AP_THREADS / 32; w++)
        r = is_max ? fmaxf(r, tmp[w]) : r + tmp[w];
    __syncthreads(); /* tmp is reused by the next reduction */
    return r;
}

__device__ __forceinline__ float score(const float *q, const bf16_t *k)
{
    float s = 0.0f;
    for (int e = 0; e < 64; e++)
        s += q[e] * bf2f(k[e]);
    return s * 0.125f;
}

__global__ void __launch_bounds__(AP_THREADS)
attention_probs_kernel(float *probs, const bf16_t *qkv, int tokens, int heads, int queries, int mean_heads)
{
    __shared__ float q[64];
    __shared__ float tmp[AP_THREADS / 32];
    const int i = blockIdx.x, b = blockIdx.y, tid = threadIdx.x;
    const int dim = heads * 64, stride = 3 * dim;
    const bf16_t *base = qkv + (long)b * tokens * stride;
    const int h0 = mean_heads ? 0 : (int)blockIdx.z, h1 = mean_heads ? heads : h0 + 1;
    float *out = mean_heads ? probs + ((long)b * queries + i) * tokens
                            : probs + (((long)b * heads + h0) * queries + i) * tokens;
    const float weight = mean_heads ? 1.0f / (float)heads : 1.0f;
    for (int h = h0; h < h1; h++) {
        __syncthreads(); /* everyone is done with the previous head's q */
        if (tid < 64)
            q[tid] = bf2f(base[(long)i * stride + h * 64 + tid]);
        __syncthreads();
        const bf16_t *keys = base + dim + h * 64;
        float m = -INFINITY;
        for (int j = tid; j < tokens; j += AP_THREADS)
            m = fmaxf(m, score(q, keys + (long)j * stride));
        m = block_reduce(m, 1, tmp);
        float s = 0.0f;
        for (int j = tid; j < tokens; j += AP_THREADS)
            s += expf(score(q, keys + (long)j * stride) - m);
        s = block_reduce(s, 0, tmp);
        const float scale = weight / s;
        /* Each thread owns the same columns j for every head, so the head mean needs no atomics. */
        for (int j = tid; j < tokens; j += AP_THREADS) {
            const float p = expf(score(q, keys + (long)j * stride) - m) * scale;
            out[j] = mean_heads && h > 0 ? out[j] + p : p;
        }
    }
}

} // namespace

extern "C" int CUDA_OP(attention_probs)(float *probs, const uint16_t *qkv, int batch, int tokens, int heads,
                                        int queries, int mean_heads, void *stream)
{
    if (batch <= 0 || tokens <= 0 || queries <= 0)
        return 0;
    dim3 grid((unsigned)queries, (unsigned)batch, mean_heads ? 1u : (unsigned)heads), block(AP_THREADS);
    CUDA_LAUNCH(attention_probs_kernel, grid, block, (cudaStream_t)stream, probs, qkv, tokens, heads, queries,
                mean_heads);
    return (int)cudaGetLastError();
}
