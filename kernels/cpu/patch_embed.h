/* Patch embedding: Conv2d(3→D, kernel P, stride P) as a gather of non-overlapping P×P×3 patches
 * into rows plus one GEMM, then the token sequence [CLS + pos₀, registers, patches + pos]. */
#ifndef STOPCAL_PATCH_EMBED_H
#define STOPCAL_PATCH_EMBED_H

#include <stddef.h>

/* Scratch floats patch_embed_forward_cpu needs: the gathered patch rows. */
size_t patch_embed_scratch_floats_cpu(int batch, int image_size, int patch_size);

/* patches (B·g², 3·P·P) ← pixels (B, 3, S, S); row (b, py, px), column (c, ky, kx) — the order of
 * the conv weight (D, 3, P, P) flattened. */
void patch_gather_cpu(float *patches, const float *pixels, int batch, int image_size, int patch_size);

/* x (B, T, D) with T = 1 + R + g². pos (1 + g², D) is already resized to the grid g. registers may
 * be NULL when R = 0. */
void patch_embed_forward_cpu(float *x, const float *pixels, const float *weight, const float *bias,
                             const float *cls_token, const float *registers, const float *pos,
                             int batch, int image_size, int patch_size, int dim, int num_registers,
                             float *scratch);

/* The rest of the token sequence once the patch rows of x hold patches·Wᵀ (+ bias already, when
 * bias is NULL): CLS + pos₀, the registers, and + bias + pos on the patch rows; pos may be NULL (a
 * family without a positional table). */
void patch_embed_tokens_cpu(float *x, const float *bias, const float *cls_token, const float *registers,
                            const float *pos, int batch, int grid, int dim, int num_registers);

#endif
