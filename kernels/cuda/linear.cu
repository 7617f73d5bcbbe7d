/* Linear layers: one cuBLAS GEMM (bf16 operands, fp32 accumulation, CUBLAS_COMPUTE_32F) writing
 * fp32 or bf16, then our in-place bias/activation epilogue (GELU must be the exact-erf form,
 * which cuBLASLt's GELU epilogue is not). Also the small runtime plumbing tests and the benchmark
 * use, so they need no CUDA headers of their own. */
#include "cuda_common.cuh"
#include "cuda_ops.h"

#ifndef STOPCAL_CUDA_EMULATION
#include <cublas_v2.h>
#endif

extern "C" int CUDA_OP(linear)(void *blas, void *out, int out_type, const uint16_t *in, const uint16_t *weight,
                               const float *bias, int m, int n, int k, int act, void *stream)
{
    if (m <= 0 || n <= 0)
        return 0;
    const float one = 1.0f, zero = 0.0f;
    /* Row-major out (m, n) = in (m, k) · Wᵀ is column-major outᵀ (n, m) = W' · in', where the
     * row-major W (n, k) read column-major is W' (k, n), hence op(A) = transpose, and in' (k, m)
     * is used as is. */
    cublasStatus_t st = cublasGemmEx(static_cast<cublasHandle_t>(blas), CUBLAS_OP_T, CUBLAS_OP_N, n, m, k, &one,
                                     weight, CUDA_R_16BF, k, in, CUDA_R_16BF, k, &zero, out,
                                     out_type == CUDA_DTYPE_BF16 ? CUDA_R_16BF : CUDA_R_32F, n,
                                     CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    if (st != CUBLAS_STATUS_SUCCESS)
        return CUDA_OPS_EBLAS + (int)st;
    return CUDA_OP(bias_act)(out, out_type, bias, m, n, act, stream);
}

extern "C" void *CUDA_OP(device_alloc)(size_t bytes)
{
    void *p = nullptr;
    if (cudaMalloc(&p, bytes) != cudaSuccess) {
        cudaGetLastError();
        return nullptr;
    }
    return p;
}

extern "C" void CUDA_OP(device_free)(void *p) { cudaFree(p); }

extern "C" int CUDA_OP(copy_to_device)(void *dst, const void *src, size_t bytes)
{
    return (int)cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice);
}

extern "C" int CUDA_OP(copy_to_host)(void *dst, const void *src, size_t bytes)
{
    return (int)cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost);
}

extern "C" int CUDA_OP(device_synchronize)(void) { return (int)cudaDeviceSynchronize(); }

extern "C" int CUDA_OP(device_count)(void)
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return n;
}

extern "C" void *CUDA_OP(blas_create)(void)
{
    cublasHandle_t h = nullptr;
    return cublasCreate(&h) == CUBLAS_STATUS_SUCCESS ? h : nullptr;
}

extern "C" void CUDA_OP(blas_destroy)(void *blas)
{
    if (blas)
        cublasDestroy(static_cast<cublasHandle_t>(blas));
}

extern "C" const char *CUDA_OP(error_string)(int code)
{
    if (code >= CUDA_OPS_EBLAS)
        return "cuBLAS call failed";
    return cudaGetErrorString((cudaError_t)code);
}
