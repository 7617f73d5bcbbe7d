/* The CPU backend's bf16 precision on CPUs without AVX512_BF16, for tests: a kernel table
 * (backend_cpu.h's struct cpu_bf16_kernels) with the instructions' rounding points emulated in plain
 * C. The linear layer is bit for bit what vdpbf16ps computes (kernels/ref/bf16_ref.c's dpbf16_ref,
 * over the product's packed layout, in the tile's order); attention is attention_bf16_ref. Created
 * through backend_cpu_create_bf16_with: the backend "cpu-bf16-ref" of the bf16 tests. */
#ifndef STOPCAL_TEST_BF16_EMULATED_H
#define STOPCAL_TEST_BF16_EMULATED_H

#include "backend_cpu.h"

extern const struct cpu_bf16_kernels cpu_bf16_emulated;

/* One lane as the emulated linear layer computes it (for its own bit-exactness test): acc after
 * dpbf16 of pair a with pair b. */
float bf16_emulated_dp(float acc, uint32_t a, uint32_t b);

#endif
