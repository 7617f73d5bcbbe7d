/* The CUDA kernels as C functions on device pointers: what the CUDA backend calls, and what the
 * kernel tests call directly. The same sources build twice — for the GPU (names cuda_*) and for the
 * host emulation (names cuda_emu_*, when STOPCAL_CUDA_EMULATION is defined) — so a test written
 * with CUDA_OP(name) runs against either. bf16 tensors are uint16_t bit patterns.
 * Every function returns 0, a cudaError_t (> 0) from the launch, or CUDA_OPS_EBLAS + a
 * cublasStatus_t for a failed GEMM; stream may be NULL (the default stream). Kernels run
 * asynchronously: execution errors surface at the next synchronisation. */
#ifndef STOPCAL_CUDA_OPS_H
#define STOPCAL_CUDA_OPS_H

#include <stddef.h>
#include <stdint.h>

#ifdef STOPCAL_CUDA_EMULATION
#define CUDA_OP(name) cuda_emu_##name
#else
#define CUDA_OP(name) cuda_##name
#endif

#define CUDA_OPS_EBLAS 100000

enum cuda_dtype { CUDA_DTYPE_F32 = 0, CUDA_DTYPE_BF16 = 1 };
enum cuda_act { CUDA_ACT_NONE = 0, CUDA_ACT_GELU = 1, CUDA_ACT_RELU = 2 }; /* = enum linear_epilogue */

#ifdef __cplusplus
extern "C" {
#endif

/* out (rows, dim) bf16 ← LayerNorm of fp32 rows of `in` spaced in_stride apart. out must not
 * alias in. */
int CUDA_OP(layernorm)(uint16_t *out, const float *in, const float *weight, const float *bias, int rows, int dim,
                       int in_stride, float eps, void *stream);

/* Fused LayerScale + residual + LayerNorm: x (rows, dim) fp32 += gamma ⊙ y, then out (rows, dim)
 * bf16 ← LayerNorm(x). y (rows, dim) is fp32 or bf16 (y_type); out may alias y only when y is bf16. */
int CUDA_OP(residual_layernorm)(float *x, const void *y, int y_type, const float *gamma, uint16_t *out,
                                const float *weight, const float *bias, int rows, int dim, float eps,
                                void *stream);

/* x (rows, dim) fp32 += gamma (dim) ⊙ y (rows, dim), y fp32 or bf16. */
int CUDA_OP(layerscale_residual)(float *x, const void *y, int y_type, const float *gamma, long rows, int dim,
                                 void *stream);

/* x (rows, cols) ← act(x + bias) in place; x fp32 or bf16 (x_type); bias (cols) fp32 or NULL. */
int CUDA_OP(bias_act)(void *x, int x_type, const float *bias, long rows, int cols, int act, void *stream);

/* out (rows, hidden) bf16 ← silu(in[:, :hidden]) ⊙ in[:, hidden:], in (rows, 2·hidden) bf16. */
int CUDA_OP(swiglu)(uint16_t *out, const uint16_t *in, long rows, int hidden, void *stream);

/* x (B, T, D) fp32 ← [CLS + pos₀, registers, patches·Wᵀ + bias + pos₁..] in one kernel: the
 * patches are gathered from pixels (B, 3, S, S) fp32 and rounded to bf16 on the way into the tensor
 * cores; weight (D, 3·P·P) bf16; bias, cls (D), registers (R, D) (NULL when R = 0), pos (1+g², D) fp32. */
int CUDA_OP(patch_embed)(float *x, const float *pixels, const uint16_t *weight, const float *bias,
                         const float *cls_token, const float *registers, const float *pos, int batch,
                         int image_size, int patch_size, int dim, int num_registers, void *stream);

/* out (B, T, H·64) bf16 ← softmax(q·kᵀ/8)·v per head from qkv (B, T, 3·H·64) bf16: one fused
 * flash-style kernel (tiles of 64 queries × 64 keys, online softmax, fp32 accumulators). */
int CUDA_OP(attention)(uint16_t *out, const uint16_t *qkv, int batch, int tokens, int heads, void *stream);

/* probs fp32 ← softmax(q_i·kᵀ/8) for the first `queries` tokens i, from qkv (B, T, 3·H·64) bf16:
 * (B, H, queries, T), or (B, queries, T) averaged over the heads when mean_heads. */
int CUDA_OP(attention_probs)(float *probs, const uint16_t *qkv, int batch, int tokens, int heads, int queries,
                             int mean_heads, void *stream);

/* RoPE in place on q and k of qkv (B, T, 3·H·64) bf16 for tokens [prefix, T) (backend.h's rope op);
 * table (T − prefix, 64) fp32 = [cos (32) | sin (32)] per rotated token. */
int CUDA_OP(rope)(uint16_t *qkv, const float *table, int batch, int tokens, int heads, int prefix, void *stream);

/* out (m, n) ← act(in (m, k) · W (n, k)ᵀ + bias) with bf16 in and W, fp32 accumulation (cuBLAS),
 * out fp32 or bf16 (out_type). blas is a cublasHandle_t already bound to the stream. */
int CUDA_OP(linear)(void *blas, void *out, int out_type, const uint16_t *in, const uint16_t *weight,
                    const float *bias, int m, int n, int k, int act, void *stream);

/* Plumbing for tests and the benchmark. */
void *CUDA_OP(device_alloc)(size_t bytes); /* NULL on failure */
void CUDA_OP(device_free)(void *p);
int CUDA_OP(copy_to_device)(void *dst, const void *src, size_t bytes);
int CUDA_OP(copy_to_host)(void *dst, const void *src, size_t bytes);
int CUDA_OP(device_synchronize)(void);
int CUDA_OP(device_count)(void); /* 0 when there is no device or driver */
void *CUDA_OP(blas_create)(void);   /* a cublasHandle_t on the default stream, or NULL */
void CUDA_OP(blas_destroy)(void *blas);
const char *CUDA_OP(error_string)(int code);

#ifdef STOPCAL_CUDA_EMULATION
/* Error injection (emulation only): the next n device allocations fail; a sticky device error
 * (every later call fails, as after an illegal address) is raised or cleared. */
void cuda_emu_fail_next_mallocs(int n);
void cuda_emu_set_sticky_error(int on);
#endif

#ifdef __cplusplus
}
#endif

#endif
