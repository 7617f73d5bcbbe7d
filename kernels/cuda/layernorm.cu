/* LayerNorm on the GPU: one warp per row, fp32 statistics (two passes over the row, the second
 * from cache), bf16 output for the GEMM that follows. The fused variant first applies the
 * sublayer's LayerScale + residual add, saving a full read of the residual stream per block. */
#include "cuda_common.cuh"
#include "cuda_ops.h"

namespace {

const int LN_ROWS_PER_BLOCK = 4; /* 4 warps */

/* When y is non-null: x += gamma ⊙ y first (rows dense, stride == dim). */
template <typename TY>
__global__ void __launch_bounds__(128)
layernorm_kernel(float *x, const TY *y, const float *gamma, bf16_t *out, const float *w, const float *b,
                 int rows, int dim, int stride, float eps)
{
    const int lane = threadIdx.x % 32, row = blockIdx.x * LN_ROWS_PER_BLOCK + threadIdx.x / 32;
    if (row >= rows)
        return; /* whole warps only: the row is uniform across the warp */
    float *xr = x + (long)row * stride;
    float sum = 0.0f;
    for (int i = lane; i < dim; i += 32) {
        float v = xr[i];
        if (y) {
            v += gamma[i] * load_f(y, (long)row * dim + i);
            xr[i] = v;
        }
        sum += v;
    }
    const float mean = warp_sum(sum) / (float)dim;
    float sq = 0.0f;
    for (int i = lane; i < dim; i += 32) {
        float d = xr[i] - mean;
        sq += d * d;
    }
    const float inv_std = rsqrtf(warp_sum(sq) / (float)dim + eps);
    bf16_t *o = out + (long)row * dim;
    for (int i = lane; i < dim; i += 32)
        o[i] = f2bf((xr[i] - mean) * inv_std * w[i] + b[i]);
}

template <typename TY>
__global__ void __launch_bounds__(128)
layerscale_residual_kernel(float *x, const TY *y, const float *gamma, long n, int dim)
{
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x)
        x[i] += gamma[i % dim] * load_f(y, i);
}

} /* namespace */

extern "C" int CUDA_OP(layernorm)(uint16_t *out, const float *in, const float *weight, const float *bias,
                                  int rows, int dim, int in_stride, float eps, void *stream)
{
    if (rows <= 0)
        return 0;
    void (*k)(float *, const float *, const float *, bf16_t *, const float *, const float *, int, int, int,
              float) = layernorm_kernel<float>;
    dim3 grid((unsigned)((rows + LN_ROWS_PER_BLOCK - 1) / LN_ROWS_PER_BLOCK)), block(128);
    /* The kernel writes x only when y is given; casting const away is safe here. */
    CUDA_LAUNCH(k, grid, block, (cudaStream_t)stream, const_cast<float *>(in), (const float *)nullptr,
                (const float *)nullptr, out, weight, bias, rows, dim, in_stride, eps);
    return (int)cudaGetLastError();
}

extern "C" int CUDA_OP(residual_layernorm)(float *x, const void *y, int y_type, const float *gamma,
                                           uint16_t *out, const float *weight, const float *bias, int rows,
                                           int dim, float eps, void *stream)
{
    if (rows <= 0)
        return 0;
    dim3 grid((unsigned)((rows + LN_ROWS_PER_BLOCK - 1) / LN_ROWS_PER_BLOCK)), block(128);
    if (y_type == CUDA_DTYPE_BF16) {
        void (*k)(float *, const bf16_t *, const float *, bf16_t *, const float *, const float *, int, int, int,
                  float) = layernorm_kernel<bf16_t>;
        CUDA_LAUNCH(k, grid, block, (cudaStream_t)stream, x, static_cast<const bf16_t *>(y), gamma, out, weight,
                    bias, rows, dim, dim, eps);
    } else {
        void (*k)(float *, const float *, const float *, bf16_t *, const float *, const float *, int, int, int,
                  float) = layernorm_kernel<float>;
        CUDA_LAUNCH(k, grid, block, (cudaStream_t)stream, x, static_cast<const float *>(y), gamma, out, weight,
                    bias, rows, dim, dim, eps);
    }
    return (int)cudaGetLastError();
}

extern "C" int CUDA_OP(layerscale_residual)(float *x, const void *y, int y_type, const float *gamma, long rows,
                                            int dim, void *stream)
{
    const long n = rows * dim;
    if (n <= 0)
        return 0;
    dim3 grid(elementwise_blocks(n, 128)), block(128);
    if (y_type == CUDA_DTYPE_BF16) {
        void (*k)(float *, const bf16_t *, const float *, long, int) = layerscale_residual_kernel<bf16_t>;
        CUDA_LAUNCH(k, grid, block, (cudaStream_t)stream, x, static_cast<const bf16_t *>(y), gamma, n, dim);
    } else {
        void (*k)(float *, const float *, const float *, long, int) = layerscale_residual_kernel<float>;
        CUDA_LAUNCH(k, grid, block, (cudaStream_t)stream, x, static_cast<const float *>(y), gamma, n, dim);
    }
    return (int)cudaGetLastError();
}
