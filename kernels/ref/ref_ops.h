/* Plain C references of every backend op: the ground truth the CPU kernels (kernels/cpu/) and the
 * CUDA kernels (kernels/cuda/) are tested against, and nothing else uses. Short enough to check by
 * eye against the maths in each comment; sums accumulate in double so the result is close to the
 * correctly rounded fp32 of the exact value, whatever order a fast kernel sums in. Single-threaded,
 * no intrinsics, no BLAS; slow on purpose. Shapes are in the comments, row-major. */
#ifndef STOPCAL_REF_OPS_H
#define STOPCAL_REF_OPS_H

#include "backend.h"

#include <stdint.h>

/* out (M, N) = epilogue(in (M, K) · W (N, K)ᵀ + bias (N)); bias may be NULL.
 * GELU is the exact-erf one: 0.5·x·(1 + erf(x/√2)). */
void linear_forward_ref(float *out, const float *in, const float *weight, const float *bias, int m,
                        int n, int k, enum linear_epilogue epilogue);

/* out (rows, D) = (x − mean) / √(var + eps) · weight + bias per row of in, rows in_row_stride
 * apart; var is the population variance. */
void layernorm_forward_ref(float *out, const float *in, const float *weight, const float *bias,
                           int rows, int dim, int in_row_stride, float eps);

/* out (B, T, H·64) = softmax(q·kᵀ/8)·v per image and head, from qkv (B, T, 3·H·64) laid out
 * [q heads | k heads | v heads] per token. */
void attention_forward_ref(float *out, const float *qkv, int batch, int tokens, int heads);

/* probs = softmax(q_i·kᵀ/8) for the first `queries` tokens i of each image, per head (B, H, queries, T),
 * or its mean over the heads (B, queries, T) when mean_heads; qkv as attention_forward_ref reads it. */
void attention_probs_ref(float *probs, const float *qkv, int batch, int tokens, int heads, int queries,
                         int mean_heads);

/* x (B, T, D) = [cls + pos[0], registers (R, D), patch p · Wᵀ + bias + pos[1 + p]] where patch p is
 * the (3, P, P) block of pixels (B, 3, S, S) at row p / g, column p % g of the g × g grid, g = S/P,
 * flattened channel-major as W (D, 3·P·P) expects; registers may be NULL when R = 0, pos NULL for
 * no positional term. */
void patch_embed_forward_ref(float *x, const float *pixels, const float *weight, const float *bias,
                             const float *cls_token, const float *registers, const float *pos,
                             int batch, int image_size, int patch_size, int dim, int num_registers);

/* RoPE in place on q and k of qkv (B, T, 3·H·64) for tokens [prefix, T), as backend.h's rope op
 * says: per head u'[j] = u[j]·c[j] − u[j+32]·s[j], u'[j+32] = u[j+32]·c[j] + u[j]·s[j], j < 32,
 * c = table[t − prefix][0, 32), s = table[t − prefix][32, 64); each result rounded once. */
void rope_forward_ref(float *qkv, const float *table, int batch, int tokens, int heads, int prefix);

/* x (rows, cols) = act(x + bias (cols)), act as the linear epilogue */
void bias_act_ref(float *x, const float *bias, long rows, int cols, enum linear_epilogue act);

/* x (rows, D) += gamma (D) ⊙ y (rows, D) */
void layerscale_residual_ref(float *x, const float *y, const float *gamma, long rows, int dim);

/* out (rows, F) = silu(in[:, :F]) ⊙ in[:, F:], in (rows, 2F), silu(a) = a / (1 + e^−a) */
void swiglu_forward_ref(float *out, const float *in, long rows, int hidden);

/* bf16 (bf16_ref.c): the rounding of the x86 bf16 instructions emulated, for the CPU backend's
 * bf16 kernels. bf16_round_ref: f to the nearest bf16 (ties to even), a denormal to a signed zero,
 * as fp32. bf16_pair_ref: two of them in one word (even in the low half), as vdpbf16ps reads it.
 * dpbf16_ref: one fp32 lane of vdpbf16ps: acc + odd·odd, rounded, + even·even, rounded, denormals
 * read and written as zero. */
float bf16_round_ref(float f);
uint32_t bf16_pair_ref(float even, float odd);
float dpbf16_ref(float acc, uint32_t a, uint32_t b);

/* linear_forward_ref as the bf16 kernel computes it: in and W rounded to bf16, per output
 * acc ← bias (or 0), then dpbf16_ref over k in pairs (an odd k padded with 0), then the epilogue
 * (exact-erf GELU). */
void linear_bf16_ref(float *out, const float *in, const float *weight, const float *bias, int m,
                     int n, int k, enum linear_epilogue epilogue);

/* attention_forward_ref as the bf16 kernel computes it: q·(log2 e)/8, k and v rounded to bf16,
 * scores and the softmax (base 2) exact, the unnormalised probabilities rounded to bf16 and the
 * output divided by their sum. */
void attention_bf16_ref(float *out, const float *qkv, int batch, int tokens, int heads);

#endif
