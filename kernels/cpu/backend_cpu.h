/* What the CPU backend chose at creation, for its tests and benchmarks (backend_cpu_create is in
 * backend.h with the other constructors). */
#ifndef STOPCAL_BACKEND_CPU_H
#define STOPCAL_BACKEND_CPU_H

#include "backend.h"
#include "cpu_isa.h"

#include <stddef.h>
#include <stdint.h>

/* The instruction sets the linear layers and attention run with (CPU_ISA_NONE: the OpenBLAS
 * forms). Returns 0, or -1 when be is not the CPU backend. */
int backend_cpu_isas(const struct backend *be, enum cpu_isa *gemm, enum cpu_isa *attention);

/* The kernels of the bf16 precision, as one table: the product's are the AVX512_BF16 ones
 * (cpu_bf16_avx512: linear_bf16.h, attention_bf16_forward); the tests hand the backend another
 * table with the same rounding points computed by the plain C references, so the bf16 forward pass
 * runs (and is measured) on CPUs without the instructions. Weights are packed by
 * linear_bf16_pack_weight for both. */
struct cpu_bf16_kernels {
    const char *name; /* for backend_cpu_kernels(): "bf16-avx512" */
    /* dst (m rows of ⌈k/2⌉ pairs) ← src (m, k) rows lda apart, rounded to bf16 */
    void (*round_rows)(uint32_t *dst, const float *src, int m, int k, int lda);
    /* out (m, n) rows ldc apart ← epilogue(in · Wᵀ + bias), in from round_rows, W packed */
    void (*linear)(float *out, int ldc, const uint32_t *in, const uint32_t *packed, const float *bias,
                   int m, int n, int k, enum linear_epilogue epilogue);
    /* attention in bf16 (attention.h's attention_bf16_forward); scratch of at least
     * attention_scratch_floats(tokens) floats (0: none needed) */
    size_t (*attention_scratch_floats)(int tokens);
    void (*attention)(float *out, const float *qkv, int batch, int tokens, int heads, float *scratch,
                      size_t scratch_floats);
    /* Optional (NULL: the backend rounds their fp32 results itself): linear and attention storing
     * bf16 pairs, rounded as round_rows rounds, for outputs in GEMM-input buffers; out rows ldc
     * words apart for linear, (B·T) rows of H·32 words for attention. */
    void (*linear_to_bf16)(uint32_t *out, int ldc, const uint32_t *in, const uint32_t *packed,
                           const float *bias, int m, int n, int k, enum linear_epilogue epilogue);
    void (*attention_to_bf16)(uint32_t *out, const float *qkv, int batch, int tokens, int heads,
                              float *scratch, size_t scratch_floats);
};
extern const struct cpu_bf16_kernels cpu_bf16_avx512;

/* For tests: the CPU backend computing in bf16 on the given kernels, whatever this CPU has and
 * whatever o->precision says (its other fields as backend_cpu_create reads them). */
int backend_cpu_create_bf16_with(struct backend *be, const struct backend_options *o,
                                 const struct cpu_bf16_kernels *kernels, char *err, size_t errlen);

#endif
