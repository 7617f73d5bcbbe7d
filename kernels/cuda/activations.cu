/* Elementwise epilogues on the GPU: bias + GELU (exact erf, as DINOv2) / ReLU / identity applied
 * in place to a GEMM's output, and SwiGLU. fp32 arithmetic, one rounding to the storage type. */
#include "cuda_common.cuh"
#include "cuda_ops.h"

namespace {

template <typename T>
__global__ void __launch_bounds__(128)
bias_act_kernel(T *x, const float *bias, long n, int cols, int act)
{
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        float v = load_f(x, i) + (bias ? bias[i % cols] : 0.0f);
        if (act == CUDA_ACT_GELU)
            v = 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
        else if (act == CUDA_ACT_RELU)
            v = v > 0.0f ? v : 0.0f;
        store_f(x, i, v);
    }
}

__global__ void __launch_bounds__(128)
swiglu_kernel(bf16_t *out, const bf16_t *in, long n, int hidden)
{
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        const long r = i / hidden, j = i % hidden;
        const float a = bf2f(in[r * 2 * hidden + j]), g = bf2f(in[r * 2 * hidden + hidden + j]);
        out[i] = f2bf(a / (1.0f + expf(-a)) * g);
    }
}

} /* namespace */

extern "C" int CUDA_OP(bias_act)(void *x, int x_type, const float *bias, long rows, int cols, int act,
                                 void *stream)
{
    const long n = rows * cols;
    if (n <= 0 || (!bias && act == CUDA_ACT_NONE))
        return 0;
    dim3 grid(elementwise_blocks(n, 128)), block(128);
    if (x_type == CUDA_DTYPE_BF16) {
        void (*k)(bf16_t *, const float *, long, int, int) = bias_act_kernel<bf16_t>;
        CUDA_LAUNCH(k, grid, block, (cudaStream_t)stream, static_cast<bf16_t *>(x), bias, n, cols, act);
    } else {
        void (*k)(float *, const float *, long, int, int) = bias_act_kernel<float>;
        CUDA_LAUNCH(k, grid, block, (cudaStream_t)stream, static_cast<float *>(x), bias, n, cols, act);
    }
    return (int)cudaGetLastError();
}

extern "C" int CUDA_OP(swiglu)(uint16_t *out, const uint16_t *in, long rows, int hidden, void *stream)
{
    const long n = rows * hidden;
    if (n <= 0)
        return 0;
    dim3 grid(elementwise_blocks(n, 128)), block(128);
    CUDA_LAUNCH(swiglu_kernel, grid, block, (cudaStream_t)stream, out, in, n, hidden);
    return (int)cudaGetLastError();
}
