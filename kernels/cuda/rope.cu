/* RoPE on the GPU (backend.h's rope op): one thread per (token, q/k head, pair j), in place on the
 * bf16 qkv in fp32 arithmetic with one rounding per output; the (T − prefix, 64) cos|sin table is
 * fp32 and computed once per resolution on the host. */
#include "cuda_common.cuh"
#include "cuda_ops.h"

namespace {

__global__ void __launch_bounds__(128)
rope_kernel(bf16_t *qkv, const float *table, int tokens, int heads, int prefix, long n)
{
    const int n_rot = tokens - prefix, D = heads * 64;
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        const int j = (int)(i % 32);
        const long r = i / 32;
        const int h = (int)(r % (2 * heads)); /* q heads, then k heads */
        const long bt = r / (2 * heads);
        const int t = (int)(bt % n_rot);
        const long b = bt / n_rot;
        bf16_t *u = qkv + (b * tokens + prefix + t) * 3 * D + (long)h * 64;
        const float *c = table + (long)t * 64;
        const float lo = bf2f(u[j]), hi = bf2f(u[j + 32]);
        const float x = __fmul_rn(lo, c[j]), y = __fmul_rn(hi, c[j + 32]);
        const float z = __fmul_rn(hi, c[j]), w = __fmul_rn(lo, c[j + 32]);
        u[j] = f2bf(x - y);
        u[j + 32] = f2bf(z + w);
    }
}

} /* namespace */

extern "C" int CUDA_OP(rope)(uint16_t *qkv, const float *table, int batch, int tokens, int heads, int prefix,
                             void *stream)
{
    const long n = (long)batch * (tokens - prefix) * 2 * heads * 32;
    if (n <= 0)
        return 0;
    dim3 grid(elementwise_blocks(n, 128)), block(128);
    CUDA_LAUNCH(rope_kernel, grid, block, (cudaStream_t)stream, qkv, table, tokens, heads, prefix, n);
    return (int)cudaGetLastError();
}
