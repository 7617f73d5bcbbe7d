/* Linear layers in bf16 for CPUs with AVX512_BF16 (the CPU backend's bf16 precision). The weight is
 * rounded to bf16 and packed once at load; each call rounds its fp32 input rows to bf16 once, and
 * vdpbf16ps multiplies pairs of them with fp32 accumulation; bias, ReLU and GELU are applied in
 * fp32 while the tile is in registers, and the output is fp32 (the residual stream, LayerNorm and
 * softmax never see bf16).
 *
 * Layouts. A bf16 "pair" is one 32-bit word: element 2i in the low half, 2i + 1 in the high half,
 * as vdpbf16ps reads them. Rows of k values are k2 = ⌈k/2⌉ pairs (an odd k padded with a zero).
 * The weight (n, k) is packed as ⌈n/32⌉ panels of 32 output columns, panel p holding
 * [k2 pairs][32 columns] words: packed[p][i][j] = (W[32p + j][2i], W[32p + j][2i + 1]), columns
 * past n zero. So any (n, k) packs; a partial last panel is stored with a mask. */
#ifndef STOPCAL_LINEAR_BF16_H
#define STOPCAL_LINEAR_BF16_H

#include "backend.h"

#include <stddef.h>
#include <stdint.h>

#define LINEAR_BF16_PANEL 32

/* Whether this CPU and build can run the bf16 kernels (AVX-512F with AVX512_BF16). */
int linear_bf16_supported(void);

/* Whether the bf16 kernels are the faster ones on this CPU, so that --precision auto takes them:
 * AMD's cores with AVX512_BF16 (Zen 4 on) run vdpbf16ps at the rate of their fp32 multiply-adds,
 * twice the flops (the pass measured 1.9× fp32 on a Zen 4); Intel's, without AMX in these
 * kernels, gave 0.71× (ViT-S/14) and 0.94× (ViT-B/14) of fp32 on an Intel Xeon with AMX, the
 * rounding of the inputs costing more than the dot products gain. 0 where
 * linear_bf16_supported() is 0. */
int linear_bf16_faster_than_fp32(void);

/* Pairs in a row of k values. */
static inline int linear_bf16_pairs(int k) { return (k + 1) / 2; }

/* 32-bit words the packed form of an (n, k) weight takes. */
size_t linear_bf16_packed_words(int n, int k);

/* packed ← W (n, k) row-major, rounded to bf16 as vcvtne2ps2bf16 does (bf16.h). */
void linear_bf16_pack_weight(uint32_t *packed, const float *weight, int n, int k);

/* dst (m rows of k2 pairs) ← src (m, k) fp32 rows lda floats apart, rounded to bf16. Threads with
 * OpenMP (call it outside a parallel region). */
void linear_bf16_round_rows(uint32_t *dst, const float *src, int m, int k, int lda);

/* out (m, n), rows ldc floats apart, = epilogue(in · Wᵀ + bias) with in (m rows of k2 pairs) from
 * linear_bf16_round_rows and W packed; bias may be NULL. Every output element is
 *   acc ← bias (or 0); for i = 0 … k2−1: acc ← dpbf16(acc, in pair i, W pair i)
 * in that order (kernels/ref/linear_bf16_ref.c is this, in plain C). Threads with OpenMP. */
void linear_bf16_forward(float *out, int ldc, const uint32_t *in, const uint32_t *packed,
                         const float *bias, int m, int n, int k, enum linear_epilogue epilogue);

/* The same, with out (m rows of ⌈n/2⌉ bf16 pairs, rows ldc words apart) rounded from the fp32
 * results as linear_bf16_round_rows would round them (a column past an odd n as 0): for a layer
 * whose output only another bf16 GEMM reads, so no fp32 copy is written and read back. */
void linear_bf16_forward_to_bf16(uint32_t *out, int ldc, const uint32_t *in, const uint32_t *packed,
                                 const float *bias, int m, int n, int k, enum linear_epilogue epilogue);

#endif
