/* Linear layers on weights packed once at load, for x86 CPUs with AVX-512 or AVX2. OpenBLAS repacks
 * the weight matrix on every call, which at ViT-S/14 @224 (257 rows) costs ~7% of a forward pass;
 * packing it once, into exactly the layout the register tiles read, removes that, and owning the
 * kernel lets the bias and GELU happen while the output tile is still in registers. */
#ifndef STOPCAL_LINEAR_PACKED_H
#define STOPCAL_LINEAR_PACKED_H

#include "backend.h"
#include "cpu_isa.h"

#include <stddef.h>

/* Output columns per packed panel; a weight with N not a multiple of it stays with BLAS. */
#define LINEAR_PANEL 32

/* Byte alignment the packed weight must have: the tiles read each panel row (32 floats = 128 bytes,
 * or its 64-byte halves) with aligned vector loads, which fault on a misaligned address. malloc
 * gives only 16; allocate packed weights with aligned_alloc(LINEAR_PACKED_ALIGN, ...) (the CPU
 * backend's buffers are). linear_packed_forward refuses anything else rather than crash. */
#define LINEAR_PACKED_ALIGN 64

/* Whether the packed kernel has a tile for isa (AVX-512F or AVX2 + FMA) in this build. The caller
 * also checks cpu_isa_supported(isa). */
int linear_packed_has_tile(enum cpu_isa isa);

/* Floats the packed form of an (n, k) weight takes (n·k: packing only reorders). */
size_t linear_packed_floats(int n, int k);

/* packed ← W (n, k) row-major, as panels of 32 output columns: packed[p][kk][j] = W[32p + j][kk].
 * n must be a multiple of LINEAR_PANEL. Plain stores: packed may have any alignment here, but
 * linear_packed_forward needs it LINEAR_PACKED_ALIGN-aligned. */
void linear_pack_weight(float *packed, const float *weight, int n, int k);

/* out (m, n) = epilogue(in (m, k) · Wᵀ + bias) with W given packed; bias may be NULL; isa one
 * linear_packed_has_tile() accepts (the layout is the same for all, so any packed weight runs on
 * any of them). Threads with OpenMP (call it outside a parallel region).
 * packed must be LINEAR_PACKED_ALIGN-byte aligned and n a multiple of LINEAR_PANEL; out, in and
 * bias may have any alignment (unaligned loads and stores). Returns 0, or -1 with out untouched
 * when packed is misaligned or n is not a multiple of the panel. */
int linear_packed_forward(enum cpu_isa isa, float *out, const float *in, const float *packed,
                          const float *bias, int m, int n, int k, enum linear_epilogue epilogue);

#endif
