/* Fused attention for AVX-512: per tile of 8 query rows, scores for every key, an exact softmax
 * and the product with V, with the tile's score rows (8 × T floats) never leaving L1/L2.
 *
 * Why not two GEMMs: with head dim 64, Q·Kᵀ has a reduction of only 64 and P·V an output of only
 * 64 columns, shapes where a general GEMM spends a large share of its time packing and storing;
 * and the softmax between them makes three more passes over the score matrix. Here K and V of one
 * (image, head) are packed once per thread into the layouts the register tiles read (K transposed
 * in panels of 32 keys, V as rows of 64), zero-padded to a multiple of 32 keys so no loop has a
 * tail; padded keys get probability 0. The 1/√64 scale and log2(e) are folded into the Q tile so
 * the softmax needs exp2 only, and the 1/Σ normalisation is applied to the 64 outputs of a row,
 * not to its T probabilities.
 *
 * Threads split the flattened (image, head, query row) range evenly, so every thread gets the
 * same number of rows whatever batch, heads and tokens are, and packs each head it visits once. */
#include "attention.h"

#define HEAD_DIM 64
#define TILE_ROWS 8  /* query rows per register tile */
#define PANEL_KEYS 32 /* keys per Q·Kᵀ register tile: two 16-float vectors */

static int padded_keys(int tokens) { return (tokens + PANEL_KEYS - 1) / PANEL_KEYS * PANEL_KEYS; }

/* Packed K and V, the tile's score rows, the Q tile, and 16 floats to align the start. */
size_t attention_fused_thread_floats(int tokens)
{
    const size_t keys = (size_t)padded_keys(tokens);
    return 2 * keys * HEAD_DIM + TILE_ROWS * keys + TILE_ROWS * HEAD_DIM + 16;
}

#if defined(__x86_64__) && defined(__GNUC__)
#include "avx512_math.h"

#include <math.h>
#include <omp.h>
#include <stdint.h>

int attention_fused_available(void) { return __builtin_cpu_supports("avx512f"); }

/* Kp: panels of 32 keys, each [64 dims][32 keys]; Vp: [keys][64 dims]; both zero past `tokens`. */
AVX512 static void pack_head(float *restrict kp, float *restrict vp, const float *k, const float *v,
                             int tokens, int keys, int qkv_stride)
{
    for (int t = 0; t < keys; t++) {
        float *kcol = kp + (size_t)(t / PANEL_KEYS) * HEAD_DIM * PANEL_KEYS + t % PANEL_KEYS;
        float *vrow = vp + (size_t)t * HEAD_DIM;
        if (t < tokens) {
            const float *krow = k + (size_t)t * qkv_stride, *vsrc = v + (size_t)t * qkv_stride;
            for (int d = 0; d < HEAD_DIM; d++)
                kcol[d * PANEL_KEYS] = krow[d];
            for (int d = 0; d < HEAD_DIM; d += 16)
                _mm512_store_ps(vrow + d, _mm512_loadu_ps(vsrc + d));
        } else {
            for (int d = 0; d < HEAD_DIM; d++)
                kcol[d * PANEL_KEYS] = 0.0f;
            for (int d = 0; d < HEAD_DIM; d += 16)
                _mm512_store_ps(vrow + d, _mm512_setzero_ps());
        }
    }
}

/* s[r][0..keys) = Σ_d qt[r][d]·K[key][d] for the 8 rows of the tile. */
AVX512 static void tile_scores(float *restrict s, const float *restrict qt, const float *restrict kp,
                               int keys)
{
    for (int p = 0; p < keys; p += PANEL_KEYS) {
        const float *panel = kp + (size_t)p * HEAD_DIM;
        __m512 acc[TILE_ROWS][2];
#pragma GCC unroll 8
        for (int r = 0; r < TILE_ROWS; r++)
            acc[r][0] = acc[r][1] = _mm512_setzero_ps();
        for (int d = 0; d < HEAD_DIM; d++) {
            __m512 k0 = _mm512_load_ps(panel + d * PANEL_KEYS);
            __m512 k1 = _mm512_load_ps(panel + d * PANEL_KEYS + 16);
#pragma GCC unroll 8
            for (int r = 0; r < TILE_ROWS; r++) {
                __m512 q = _mm512_set1_ps(qt[r * HEAD_DIM + d]);
                acc[r][0] = _mm512_fmadd_ps(q, k0, acc[r][0]);
                acc[r][1] = _mm512_fmadd_ps(q, k1, acc[r][1]);
            }
        }
#pragma GCC unroll 8
        for (int r = 0; r < TILE_ROWS; r++) {
            _mm512_store_ps(s + (size_t)r * keys + p, acc[r][0]);
            _mm512_store_ps(s + (size_t)r * keys + p + 16, acc[r][1]);
        }
    }
}

/* In place: s ← 2^(s − max) over the first `tokens` entries, 0 past them; returns 1/Σ. */
AVX512 static float softmax_row_unnormalised(float *s, int tokens, int keys)
{
    __m512 vmax = _mm512_set1_ps(-INFINITY);
    for (int j = 0; j < keys; j += 16) {
        __mmask16 valid = j + 16 <= tokens ? 0xFFFF : j >= tokens ? 0 : (__mmask16)((1u << (tokens - j)) - 1);
        vmax = _mm512_mask_max_ps(vmax, valid, vmax, _mm512_load_ps(s + j));
    }
    const __m512 max = _mm512_set1_ps(_mm512_reduce_max_ps(vmax));
    __m512 vsum = _mm512_setzero_ps();
    for (int j = 0; j < keys; j += 16) {
        __mmask16 valid = j + 16 <= tokens ? 0xFFFF : j >= tokens ? 0 : (__mmask16)((1u << (tokens - j)) - 1);
        __m512 e = _mm512_maskz_mov_ps(valid, exp2_nonpositive(_mm512_sub_ps(_mm512_load_ps(s + j), max)));
        _mm512_store_ps(s + j, e);
        vsum = _mm512_add_ps(vsum, e);
    }
    return 1.0f / _mm512_reduce_add_ps(vsum);
}

/* out[r][0..64) = inv[r] · Σ_key p[r][key]·V[key][·] for the tile's first `rows` rows, in two
 * halves of 32 dims so the 8 × 2 accumulators fit the register file. */
AVX512 static void tile_values(float *out, int out_stride, const float *restrict p,
                               const float *restrict vp, const float *inv, int rows, int keys)
{
    for (int half = 0; half < HEAD_DIM; half += 32) {
        __m512 acc[TILE_ROWS][2];
#pragma GCC unroll 8
        for (int r = 0; r < TILE_ROWS; r++)
            acc[r][0] = acc[r][1] = _mm512_setzero_ps();
        for (int key = 0; key < keys; key++) {
            __m512 v0 = _mm512_load_ps(vp + (size_t)key * HEAD_DIM + half);
            __m512 v1 = _mm512_load_ps(vp + (size_t)key * HEAD_DIM + half + 16);
#pragma GCC unroll 8
            for (int r = 0; r < TILE_ROWS; r++) {
                __m512 pr = _mm512_set1_ps(p[(size_t)r * keys + key]);
                acc[r][0] = _mm512_fmadd_ps(pr, v0, acc[r][0]);
                acc[r][1] = _mm512_fmadd_ps(pr, v1, acc[r][1]);
            }
        }
        for (int r = 0; r < rows; r++) {
            __m512 scale = _mm512_set1_ps(inv[r]);
            _mm512_storeu_ps(out + (size_t)r * out_stride + half, _mm512_mul_ps(acc[r][0], scale));
            _mm512_storeu_ps(out + (size_t)r * out_stride + half + 16, _mm512_mul_ps(acc[r][1], scale));
        }
    }
}

AVX512 static void run_rows(float *out, const float *qkv, int tokens, int heads, float *scratch,
                            long first, long last)
{
    const int dim = heads * HEAD_DIM, qkv_stride = 3 * dim, keys = padded_keys(tokens);
    /* scale 1/√64 and log2(e), so that 2^(q·k·this) = e^(q·k/8) */
    const float q_scale = 0.125f * 1.4426950408889634f;
    float *base = (float *)(((uintptr_t)scratch + 63) & ~(uintptr_t)63);
    float *kp = base, *vp = kp + (size_t)keys * HEAD_DIM, *s = vp + (size_t)keys * HEAD_DIM;
    float *qt = s + (size_t)TILE_ROWS * keys;
    float inv[TILE_ROWS];
    long packed = -1; /* which (image, head) kp/vp hold */
    for (long at = first; at < last;) {
        const long bh = at / tokens;
        const int b = (int)(bh / heads), h = (int)(bh % heads), row0 = (int)(at % tokens);
        const float *img = qkv + (size_t)b * tokens * qkv_stride;
        if (bh != packed) {
            pack_head(kp, vp, img + dim + h * HEAD_DIM, img + 2 * dim + h * HEAD_DIM, tokens, keys,
                      qkv_stride);
            packed = bh;
        }
        int rows = tokens - row0 < TILE_ROWS ? tokens - row0 : TILE_ROWS;
        if (last - at < rows)
            rows = (int)(last - at);
        const __m512 scale = _mm512_set1_ps(q_scale);
        for (int r = 0; r < TILE_ROWS; r++) {
            const float *q = r < rows ? img + (size_t)(row0 + r) * qkv_stride + h * HEAD_DIM : NULL;
            for (int d = 0; d < HEAD_DIM; d += 16)
                _mm512_store_ps(qt + r * HEAD_DIM + d,
                                q ? _mm512_mul_ps(_mm512_loadu_ps(q + d), scale) : _mm512_setzero_ps());
        }
        tile_scores(s, qt, kp, keys);
        for (int r = 0; r < rows; r++)
            inv[r] = softmax_row_unnormalised(s + (size_t)r * keys, tokens, keys);
        for (int r = rows; r < TILE_ROWS; r++) /* padding rows: zero probabilities, unused output */
            for (int j = 0; j < keys; j += 16)
                _mm512_store_ps(s + (size_t)r * keys + j, _mm512_setzero_ps());
        tile_values(out + ((size_t)b * tokens + row0) * dim + h * HEAD_DIM, dim, s, vp, inv, rows, keys);
        at += rows;
    }
}

void attention_fused_forward(float *out, const float *qkv, int batch, int tokens, int heads,
                             float *scratch, int threads)
{
    const long total = (long)batch * heads * tokens;
    const size_t slot = attention_fused_thread_floats(tokens);
    if (threads < 1)
        threads = 1;
    if (threads > total)
        threads = (int)total;
#pragma omp parallel num_threads(threads)
    {
        const int t = omp_get_thread_num(), n = omp_get_num_threads();
        run_rows(out, qkv, tokens, heads, scratch + (size_t)t * slot, total * t / n, total * (t + 1) / n);
    }
}

#else /* not x86-64 with GCC-style intrinsics: the portable implementation only */

int attention_fused_available(void) { return 0; }

void attention_fused_forward(float *out, const float *qkv, int batch, int tokens, int heads,
                             float *scratch, int threads)
{
    attention_blas_forward(out, qkv, batch, tokens, heads, scratch, threads);
}

#endif
