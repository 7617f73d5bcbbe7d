/* The bf16 linear layer's driver (linear_bf16.h): packing, input rounding, blocking and threads.
 * Same blocking as the fp32 packed layer (linear_packed.c): a task is (panel of 32 output columns,
 * block of 8 row tiles), tasks are ordered panel-major and split in contiguous ranges over the
 * threads so each keeps to its own panels; the k loop runs in chunks of 256 pairs, so a 32 KB
 * weight chunk stays in L1/L2 across the block's tiles; inputs too large for L3 are taken in
 * super-blocks of rows. */
#include "linear_bf16.h"

#include "bf16.h"
#include "linear_bf16_tile.h"

size_t linear_bf16_packed_words(int n, int k)
{
    const size_t panels = ((size_t)n + LINEAR_BF16_PANEL - 1) / LINEAR_BF16_PANEL;
    return panels * LINEAR_BF16_PANEL * (size_t)linear_bf16_pairs(k);
}

void linear_bf16_pack_weight(uint32_t *packed, const float *weight, int n, int k)
{
    const int k2 = linear_bf16_pairs(k), panels = (n + LINEAR_BF16_PANEL - 1) / LINEAR_BF16_PANEL;
    for (int p = 0; p < panels; p++) {
        uint32_t *panel = packed + (size_t)p * k2 * LINEAR_BF16_PANEL;
        for (int j = 0; j < LINEAR_BF16_PANEL; j++) {
            const int col = p * LINEAR_BF16_PANEL + j;
            const float *row = weight + (size_t)col * k;
            for (int i = 0; i < k2; i++) {
                uint32_t lo = 0, hi = 0;
                if (col < n) {
                    lo = bf16_from_float_daz(row[2 * i]);
                    hi = 2 * i + 1 < k ? bf16_from_float_daz(row[2 * i + 1]) : 0;
                }
                panel[(size_t)i * LINEAR_BF16_PANEL + j] = lo | hi << 16;
            }
        }
    }
}

#if defined(__x86_64__) && defined(__GNUC__)
#define K_CHUNK 256 /* pairs */
#define TILES_PER_BLOCK 8

int linear_bf16_supported(void)
{
#ifdef STOPCAL_SIMULATE_AVX512 /* the test build on simulated instructions (cpu_isa.c) */
    return 1;
#else
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512bf16");
#endif
}

int linear_bf16_faster_than_fp32(void)
{
    return linear_bf16_supported() && __builtin_cpu_is("amd");
}

void linear_bf16_round_rows(uint32_t *dst, const float *src, int m, int k, int lda)
{
    const int k2 = linear_bf16_pairs(k);
#pragma omp parallel for schedule(static)
    for (int r = 0; r < m; r++)
        linear_bf16_round_row_avx512(dst + (size_t)r * k2, src + (size_t)r * lda, k);
}

/* Rows per pass over the weights: as many as keep the input rows they read (≤ 4 MB of bf16) in
 * L3. */
static int super_block_rows(int m, int k2, int row_block)
{
    long rows = (4L << 20) / ((long)sizeof(uint32_t) * k2) / row_block * row_block;
    rows = rows < row_block ? row_block : rows;
    return rows < m ? (int)rows : m;
}

/* One driver for both outputs: out16 NULL writes fp32 rows to out; otherwise the last k chunk
 * writes bf16 pairs to out16 (rows ldc16 words apart), and a k longer than one chunk keeps its
 * partial sums in a per-thread staging block of the tiles in flight. */
static void forward(float *out, int ldc, uint32_t *out16, int ldc16, const uint32_t *in,
                    const uint32_t *packed, const float *bias, int m, int n, int k,
                    enum linear_epilogue epilogue)
{
    const int k2 = linear_bf16_pairs(k), tile_rows = LINEAR_BF16_TILE_ROWS;
    const int row_block = tile_rows * TILES_PER_BLOCK;
    const int panels = (n + LINEAR_BF16_PANEL - 1) / LINEAR_BF16_PANEL;
    const int super = super_block_rows(m, k2, row_block);
#pragma omp parallel
    {
        float stage[TILES_PER_BLOCK * LINEAR_BF16_TILE_ROWS * LINEAR_BF16_PANEL] __attribute__((aligned(64)));
        for (int s0 = 0; s0 < m; s0 += super) {
            const int s1 = m - s0 < super ? m : s0 + super;
            const int row_blocks = (s1 - s0 + row_block - 1) / row_block;
            const long tasks = (long)panels * row_blocks;
#pragma omp for schedule(static)
            for (long task = 0; task < tasks; task++) {
                const int p = (int)(task / row_blocks), r0 = s0 + (int)(task % row_blocks) * row_block;
                const int r1 = s1 - r0 < row_block ? s1 : r0 + row_block;
                const int j = p * LINEAR_BF16_PANEL; /* first output column */
                const int cols = n - j < LINEAR_BF16_PANEL ? n - j : LINEAR_BF16_PANEL;
                for (int i0 = 0; i0 < k2; i0 += K_CHUNK) {
                    const int kc = k2 - i0 < K_CHUNK ? k2 - i0 : K_CHUNK;
                    const uint32_t *wp = packed + ((size_t)p * k2 + i0) * LINEAR_BF16_PANEL;
                    for (int r = r0; r < r1; r += tile_rows) {
                        float *c = out16 ? stage + (size_t)(r - r0) * LINEAR_BF16_PANEL : out + (size_t)r * ldc + j;
                        linear_bf16_tile_8x32(c, out16 ? LINEAR_BF16_PANEL : ldc,
                                              out16 ? out16 + (size_t)r * ldc16 + j / 2 : NULL, ldc16,
                                              in + (size_t)r * k2 + i0, k2,
                                              r1 - r < tile_rows ? r1 - r : tile_rows, wp, kc,
                                              bias ? bias + j : NULL, cols, i0 == 0, i0 + kc >= k2,
                                              epilogue);
                    }
                }
            }
        }
    }
}

void linear_bf16_forward(float *out, int ldc, const uint32_t *in, const uint32_t *packed,
                         const float *bias, int m, int n, int k, enum linear_epilogue epilogue)
{
    forward(out, ldc, NULL, 0, in, packed, bias, m, n, k, epilogue);
}

void linear_bf16_forward_to_bf16(uint32_t *out, int ldc, const uint32_t *in, const uint32_t *packed,
                                 const float *bias, int m, int n, int k, enum linear_epilogue epilogue)
{
    forward(NULL, 0, out, ldc, in, packed, bias, m, n, k, epilogue);
}

#else /* no x86 intrinsics in this build: never chosen (linear_bf16_supported() is 0) */

int linear_bf16_supported(void) { return 0; }

int linear_bf16_faster_than_fp32(void) { return 0; }

void linear_bf16_round_rows(uint32_t *dst, const float *src, int m, int k, int lda)
{
    (void)dst, (void)src, (void)m, (void)k, (void)lda;
}

void linear_bf16_forward(float *out, int ldc, const uint32_t *in, const uint32_t *packed,
                         const float *bias, int m, int n, int k, enum linear_epilogue epilogue)
{
    (void)out, (void)ldc, (void)in, (void)packed, (void)bias, (void)m, (void)n, (void)k, (void)epilogue;
}

void linear_bf16_forward_to_bf16(uint32_t *out, int ldc, const uint32_t *in, const uint32_t *packed,
                                 const float *bias, int m, int n, int k, enum linear_epilogue epilogue)
{
    (void)out, (void)ldc, (void)in, (void)packed, (void)bias, (void)m, (void)n, (void)k, (void)epilogue;
}

#endif
