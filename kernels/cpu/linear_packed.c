/* The packed-weight linear layer. Its register tiles (an 8-row × 32-column one for AVX-512, 6 × 16
 * for AVX2; linear_packed_tiles.h) read the weight panel as aligned vectors per k and broadcast each
 * input value straight from the row-major input, so only the weight needs packing, and only once.
 *
 * Blocking: a task is (panel of 32 output columns, block of 8 row tiles); its k loop runs in chunks
 * of 256 so the 32 KB weight chunk stays in L1/L2 across the block's tiles. Tasks are ordered
 * panel-major and split in contiguous ranges over the threads, so each thread keeps to its own
 * panels (the weights it reads stay in its L2) and reads the input, which all threads share, from
 * L2/L3; inputs too large for L3 are taken in super-blocks of rows, one after another. The bias
 * seeds the accumulators; ReLU and GELU are applied in registers before the tile is stored. */
#include "linear_packed.h"

#include "cpu_isa.h"
#include "linear_packed_tiles.h"

#include <stdint.h>

#include <stdlib.h>

size_t linear_packed_floats(int n, int k) { return (size_t)n * (size_t)k; }

void linear_pack_weight(float *packed, const float *weight, int n, int k)
{
    for (int p = 0; p < n / LINEAR_PANEL; p++) {
        float *panel = packed + (size_t)p * k * LINEAR_PANEL;
        for (int j = 0; j < LINEAR_PANEL; j++) {
            const float *row = weight + ((size_t)p * LINEAR_PANEL + j) * k;
            for (int kk = 0; kk < k; kk++)
                panel[(size_t)kk * LINEAR_PANEL + j] = row[kk];
        }
    }
}

#if defined(__x86_64__) && defined(__GNUC__)
#define K_CHUNK 256
#define TILES_PER_BLOCK 8

struct tile_isa {
    const char *name;
    linear_tile_fn *tile;
    int rows, cols; /* of one tile; cols divides LINEAR_PANEL */
};

static const struct tile_isa isa_avx512 = {"avx512", linear_tile_avx512_8x32, 8, 32};
static const struct tile_isa isa_avx2 = {"avx2", linear_tile_avx2_6x16, 6, 16};

static const struct tile_isa *tile_for(enum cpu_isa isa)
{
    switch (isa) {
    case CPU_ISA_AVX512: return &isa_avx512;
    case CPU_ISA_AVX2: return &isa_avx2;
    default: return NULL;
    }
}

int linear_packed_has_tile(enum cpu_isa isa) { return tile_for(isa) != NULL; }

/* Rows per pass over the weights: as many as keep the input rows they read (≤ 8 MB) in L3, so a
 * batch of large images (ViT-B @560 × 8: a 39 MB input) is not streamed from DRAM once per panel. */
static int super_block_rows(int m, int k, int row_block)
{
    long rows = (8L << 20) / ((long)sizeof(float) * k) / row_block * row_block;
    rows = rows < row_block ? row_block : rows;
    return rows < m ? (int)rows : m;
}

int linear_packed_forward(enum cpu_isa isa_choice, float *out, const float *in, const float *packed,
                          const float *bias, int m, int n, int k, enum linear_epilogue epilogue)
{
    const struct tile_isa *isa = tile_for(isa_choice);
    if (!isa) /* a caller bug: linear_packed_has_tile() said no */
        abort();
    /* The contract in linear_packed.h: the tiles' aligned loads would fault on such a weight. */
    if ((uintptr_t)packed % LINEAR_PACKED_ALIGN != 0 || n % LINEAR_PANEL != 0)
        return -1;
    const int row_block = isa->rows * TILES_PER_BLOCK;
    const int panels = n / LINEAR_PANEL, super = super_block_rows(m, k, row_block);
#pragma omp parallel
    for (int s0 = 0; s0 < m; s0 += super) {
        const int s1 = m - s0 < super ? m : s0 + super;
        const int row_blocks = (s1 - s0 + row_block - 1) / row_block;
        const long tasks = (long)panels * row_blocks;
#pragma omp for schedule(static)
        for (long task = 0; task < tasks; task++) {
            const int p = (int)(task / row_blocks), r0 = s0 + (int)(task % row_blocks) * row_block;
            const int r1 = s1 - r0 < row_block ? s1 : r0 + row_block;
            for (int k0 = 0; k0 < k; k0 += K_CHUNK) {
                const int kc = k - k0 < K_CHUNK ? k - k0 : K_CHUNK;
                for (int col = 0; col < LINEAR_PANEL; col += isa->cols) {
                    const int j = p * LINEAR_PANEL + col; /* first output column */
                    const float *wp = packed + ((size_t)p * k + k0) * LINEAR_PANEL + col;
                    for (int r = r0; r < r1; r += isa->rows)
                        isa->tile(out + (size_t)r * n + j, n, in + (size_t)r * k + k0, k,
                                  r1 - r < isa->rows ? r1 - r : isa->rows, wp, kc,
                                  bias ? bias + j : NULL, k0 == 0, k0 + kc >= k, epilogue);
                }
            }
        }
    }
    return 0;
}

#else /* no x86 intrinsics in this build: never chosen (linear_packed_has_tile() is 0) */

int linear_packed_has_tile(enum cpu_isa isa) { (void)isa; return 0; }

int linear_packed_forward(enum cpu_isa isa, float *out, const float *in, const float *packed,
                          const float *bias, int m, int n, int k, enum linear_epilogue epilogue)
{
    (void)isa, (void)out, (void)in, (void)packed, (void)bias, (void)m, (void)n, (void)k, (void)epilogue;
    abort();
}

#endif
