/* Multi-head self-attention core: softmax(q·kᵀ/√64)·v per head, no mask, head dim 64. */
#ifndef STOPCAL_ATTENTION_H
#define STOPCAL_ATTENTION_H

#include <stddef.h>

/* Two implementations compute the same thing. BLAS: two OpenBLAS GEMMs around a softmax, per
 * block of query rows; runs anywhere. FUSED: one kernel per tile of query rows that keeps the score
 * rows in cache and never writes normalised probabilities; needs AVX-512F or AVX2 + FMA. AUTO
 * picks FUSED where the CPU can run it. */
enum attention_cpu_impl { ATTENTION_CPU_AUTO, ATTENTION_CPU_BLAS, ATTENTION_CPU_FUSED };

/* Whether this CPU (and this build) can run ATTENTION_CPU_FUSED, and with which instruction set
 * ("avx512", or "avx2" where the CPU lacks AVX-512 or STOPCAL_CPU_ATTENTION=avx2; NULL: none, or
 * STOPCAL_CPU_ATTENTION=blas). */
int attention_fused_available(void);
const char *attention_fused_isa(void);

/* What AUTO and FUSED resolve to here: FUSED where available, else BLAS (so
 * STOPCAL_CPU_ATTENTION=blas forces BLAS: for benchmarks and for bisecting a suspected kernel bug). */
enum attention_cpu_impl attention_cpu_impl_resolve(enum attention_cpu_impl impl);

/* Scratch floats attention_forward_cpu needs for `tokens` tokens to use every OpenMP thread, with
 * whichever implementation AUTO picks (the larger of the two, so either fits). */
size_t attention_scratch_floats_cpu(int tokens);

/* out (B, T, H·64) from qkv (B, T, 3·H·64) laid out [q heads | k heads | v heads] per token.
 * scratch holds scratch_floats floats (at least one thread's worth); fewer than
 * attention_scratch_floats_cpu(T) just means fewer threads. Uses the AUTO implementation. */
void attention_forward_cpu(float *out, const float *qkv, int batch, int tokens, int heads,
                           float *scratch, size_t scratch_floats);

/* The same with the implementation named (tests run both; a FUSED request where it is not
 * available runs BLAS). */
void attention_forward_cpu_impl(enum attention_cpu_impl impl, float *out, const float *qkv,
                                int batch, int tokens, int heads, float *scratch,
                                size_t scratch_floats);

/* Per-thread scratch floats of each implementation. */
size_t attention_blas_thread_floats(int tokens);
size_t attention_fused_thread_floats(int tokens);

/* The implementations themselves (attention_cpu.c, attention_fused*.c); `threads` is how many
 * per-thread scratch slots the caller's scratch holds. */
void attention_blas_forward(float *out, const float *qkv, int batch, int tokens, int heads,
                            float *scratch, int threads);
void attention_fused_forward(float *out, const float *qkv, int batch, int tokens, int heads,
                             float *scratch, int threads);

#endif
