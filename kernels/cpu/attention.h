/* Multi-head self-attention core: softmax(q·kᵀ/√64)·v per head, no mask, head dim 64. */
#ifndef STOPCAL_ATTENTION_H
#define STOPCAL_ATTENTION_H

#include "cpu_isa.h"

#include <stddef.h>
#include <stdint.h>

/* Two implementations compute the same thing. BLAS (isa CPU_ISA_NONE): two OpenBLAS GEMMs around a
 * softmax, per block of query rows; runs anywhere. FUSED (CPU_ISA_AVX512 or CPU_ISA_AVX2): one
 * kernel per tile of query rows that keeps the score rows in cache and never writes normalised
 * probabilities. The CPU backend chooses the instruction set once (cpu_isa.h). */

/* Whether the fused kernel has a version for isa in this build (AVX-512F, AVX2 + FMA). */
int attention_fused_has_kernel(enum cpu_isa isa);

/* Scratch floats attention_forward_cpu(isa, …) needs for `tokens` tokens to use every OpenMP
 * thread. */
size_t attention_scratch_floats_cpu(enum cpu_isa isa, int tokens);

/* out (B, T, H·64) from qkv (B, T, 3·H·64) laid out [q heads | k heads | v heads] per token, with
 * the fused kernel for isa, or the BLAS form for CPU_ISA_NONE (or an isa without a fused kernel).
 * scratch holds scratch_floats floats (at least one thread's worth); fewer than
 * attention_scratch_floats_cpu(isa, T) just means fewer threads. */
void attention_forward_cpu(enum cpu_isa isa, float *out, const float *qkv, int batch, int tokens,
                           int heads, float *scratch, size_t scratch_floats);

/* The bf16 form of the fused kernel (the CPU backend's bf16 precision; only on CPUs where
 * linear_bf16_supported()): q·kᵀ and p·v in bf16 with fp32 accumulation and an fp32 softmax
 * (attention_fused_bf16_avx512.c). Scratch as attention_scratch_floats_cpu(CPU_ISA_AVX512, T). */
void attention_bf16_forward(float *out, const float *qkv, int batch, int tokens, int heads,
                            float *scratch, size_t scratch_floats);
/* The same with out as rows of bf16 pairs ((B·T) rows of H·32 words), each output rounded as the
 * bf16 GEMM that reads it would round it: for the output projection's input. */
void attention_bf16_forward_to_bf16(uint32_t *out, const float *qkv, int batch, int tokens, int heads,
                                    float *scratch, size_t scratch_floats);

/* Per-thread scratch floats of each implementation. */
size_t attention_blas_thread_floats(int tokens);
size_t attention_fused_thread_floats(int tokens);

/* The implementations themselves (attention_cpu.c, attention_fused*.c); `threads` is how many
 * per-thread scratch slots the caller's scratch holds. */
void attention_blas_forward(float *out, const float *qkv, int batch, int tokens, int heads,
                            float *scratch, int threads);
void attention_fused_forward(enum cpu_isa isa, float *out, const float *qkv, int batch, int tokens,
                             int heads, float *scratch, int threads);

#endif
