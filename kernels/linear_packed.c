/* The packed-weight linear layer: an 8-row × 32-column register tile (16 accumulators), the weight
 * panel read as two aligned vectors per k and each input value broadcast straight from the row-major
 * input, so only the weight needs packing, and only once.
 *
 * Blocking: a task is (panel of 32 output columns, block of 64 rows); its k loop runs in chunks
 * of 256 so the 32 KB weight chunk stays in L1/L2 across the block's 8 tiles. Tasks are ordered
 * panel-major and split in contiguous ranges over the threads, so each thread keeps to its own
 * panels (the weights it reads stay in its L2) and reads the input, which all threads share, from
 * L2/L3; inputs too large for L3 are taken in super-blocks of rows, one after another. The bias
 * seeds the accumulators; ReLU and GELU (avx512_math.h) are applied in registers before the tile
 * is stored. */
#include "linear_packed.h"

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
#include "avx512_math.h"
#define TILE_ROWS 8
#define ROW_BLOCK 64
#define K_CHUNK 256

int linear_packed_available(void) { return __builtin_cpu_supports("avx512f"); }

/* c (rows ≤ 8, 32) [+]= a (rows, kc) · panel chunk; `first` seeds with the bias (or 0) instead of
 * loading c, `last` applies the epilogue. Rows past `rows` repeat the last row and are not stored. */
AVX512 static void tile_8x32(float *c, int ldc, const float *a, int lda, int rows,
                             const float *restrict wp, int kc, const float *bias, int first, int last,
                             enum linear_epilogue epilogue)
{
    const float *ar[TILE_ROWS];
    for (int r = 0; r < TILE_ROWS; r++)
        ar[r] = a + (size_t)(r < rows ? r : rows - 1) * lda;
    __m512 acc[TILE_ROWS][2];
    if (first) {
        const __m512 b0 = bias ? _mm512_loadu_ps(bias) : _mm512_setzero_ps();
        const __m512 b1 = bias ? _mm512_loadu_ps(bias + 16) : _mm512_setzero_ps();
#pragma GCC unroll 8
        for (int r = 0; r < TILE_ROWS; r++)
            acc[r][0] = b0, acc[r][1] = b1;
    } else {
#pragma GCC unroll 8
        for (int r = 0; r < TILE_ROWS; r++) {
            const float *cr = c + (size_t)(r < rows ? r : 0) * ldc;
            acc[r][0] = _mm512_loadu_ps(cr);
            acc[r][1] = _mm512_loadu_ps(cr + 16);
        }
    }
    for (int k = 0; k < kc; k++) {
        const __m512 w0 = _mm512_load_ps(wp + (size_t)k * LINEAR_PANEL);
        const __m512 w1 = _mm512_load_ps(wp + (size_t)k * LINEAR_PANEL + 16);
#pragma GCC unroll 8
        for (int r = 0; r < TILE_ROWS; r++) {
            const __m512 x = _mm512_set1_ps(ar[r][k]);
            acc[r][0] = _mm512_fmadd_ps(x, w0, acc[r][0]);
            acc[r][1] = _mm512_fmadd_ps(x, w1, acc[r][1]);
        }
    }
    if (last && epilogue == EPILOGUE_RELU)
#pragma GCC unroll 8
        for (int r = 0; r < TILE_ROWS; r++) {
            acc[r][0] = _mm512_max_ps(acc[r][0], _mm512_setzero_ps());
            acc[r][1] = _mm512_max_ps(acc[r][1], _mm512_setzero_ps());
        }
    if (last && epilogue == EPILOGUE_GELU)
        for (int r = 0; r < rows; r++) {
            acc[r][0] = gelu_avx512(acc[r][0]);
            acc[r][1] = gelu_avx512(acc[r][1]);
        }
    for (int r = 0; r < rows; r++) {
        _mm512_storeu_ps(c + (size_t)r * ldc, acc[r][0]);
        _mm512_storeu_ps(c + (size_t)r * ldc + 16, acc[r][1]);
    }
}

/* Rows per pass over the weights: as many as keep the input rows they read (≤ 8 MB) in L3, so a
 * batch of large images (ViT-B @560 × 8: a 39 MB input) is not streamed from DRAM once per panel. */
static int super_block_rows(int m, int k)
{
    long rows = (8L << 20) / ((long)sizeof(float) * k) / ROW_BLOCK * ROW_BLOCK;
    rows = rows < ROW_BLOCK ? ROW_BLOCK : rows;
    return rows < m ? (int)rows : m;
}

void linear_packed_forward(float *out, const float *in, const float *packed, const float *bias,
                           int m, int n, int k, enum linear_epilogue epilogue)
{
    const int panels = n / LINEAR_PANEL, super = super_block_rows(m, k);
#pragma omp parallel
    for (int s0 = 0; s0 < m; s0 += super) {
        const int s1 = m - s0 < super ? m : s0 + super;
        const int row_blocks = (s1 - s0 + ROW_BLOCK - 1) / ROW_BLOCK;
        const long tasks = (long)panels * row_blocks;
#pragma omp for schedule(static)
        for (long task = 0; task < tasks; task++) {
            const int p = (int)(task / row_blocks), r0 = s0 + (int)(task % row_blocks) * ROW_BLOCK;
            const int r1 = s1 - r0 < ROW_BLOCK ? s1 : r0 + ROW_BLOCK;
            const float *panel = packed + (size_t)p * k * LINEAR_PANEL;
            const float *panel_bias = bias ? bias + (size_t)p * LINEAR_PANEL : NULL;
            for (int k0 = 0; k0 < k; k0 += K_CHUNK) {
                const int kc = k - k0 < K_CHUNK ? k - k0 : K_CHUNK;
                for (int r = r0; r < r1; r += TILE_ROWS)
                    tile_8x32(out + (size_t)r * n + (size_t)p * LINEAR_PANEL, n, in + (size_t)r * k + k0,
                              k, r1 - r < TILE_ROWS ? r1 - r : TILE_ROWS,
                              panel + (size_t)k0 * LINEAR_PANEL, kc, panel_bias, k0 == 0, k0 + kc >= k,
                              epilogue);
            }
        }
    }
}

#else /* no AVX-512 intrinsics in this build: never chosen (linear_packed_available() is 0) */

int linear_packed_available(void) { return 0; }

void linear_packed_forward(float *out, const float *in, const float *packed, const float *bias,
                           int m, int n, int k, enum linear_epilogue epilogue)
{
    (void)out, (void)in, (void)packed, (void)bias, (void)m, (void)n, (void)k, (void)epilogue;
}

#endif
