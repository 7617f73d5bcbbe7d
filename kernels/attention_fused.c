/* Fused attention for AVX-512: per tile of 8 query rows, scores for every key, an exact softmax
 * and the product with V, with the tile's score rows (8 × T floats) never leaving L1/L2.
 *
 * Why not two GEMMs: with head dim 64, Q·Kᵀ has a reduction of only 64 and P·V an output of only
 * 64 columns, shapes where a general GEMM spends a large share of its time packing and storing;
 * and the softmax between them makes three more passes over the score matrix. Here K and V of one
 * (image, head) are packed once per thread into the layouts the register tiles read (K transposed
 * in panels of 32 keys, V as rows of 64). Scores are computed for the keys rounded up to 16 (K
 * is zero-padded there, and those keys get probability 0); P·V runs over the real keys only. The 1/√64 scale and log2(e) are folded into the Q tile so
 * the softmax needs exp2 only, and the 1/Σ normalisation is applied to the 64 outputs of a row,
 * not to its T probabilities.
 *
 * Threads split the flattened (image, head, query row) range evenly, so every thread gets the
 * same number of rows whatever batch, heads and tokens are, and packs each head it visits once. */
#include "attention.h"

#define HEAD_DIM 64
#define TILE_ROWS 8  /* query rows per register tile */
#define PANEL_KEYS 32 /* keys per Q·Kᵀ register tile: two 16-float vectors */

/* Score columns per row: the keys rounded up to a whole vector. */
static int score_keys(int tokens) { return (tokens + 15) / 16 * 16; }
/* Columns the packed K holds: whole panels. */
static int panel_keys(int tokens) { return (tokens + PANEL_KEYS - 1) / PANEL_KEYS * PANEL_KEYS; }

/* Packed K and V, the tile's score rows, the Q tile, and 16 floats to align the start. */
size_t attention_fused_thread_floats(int tokens)
{
    return 2 * (size_t)panel_keys(tokens) * HEAD_DIM + TILE_ROWS * (size_t)score_keys(tokens) +
           TILE_ROWS * HEAD_DIM + 16;
}

#if defined(__x86_64__) && defined(__GNUC__)
#include "avx512_math.h"

#include <math.h>
#include <omp.h>
#include <stdint.h>

int attention_fused_available(void) { return __builtin_cpu_supports("avx512f"); }

/* 16 × 16 transpose in registers: m[i] holds row i on entry and column i on return. Lanes are
 * 128-bit groups of 4: interleave row pairs, gather 4 × 4 blocks within lanes, then move lanes. */
AVX512 static inline void transpose16(__m512 m[16])
{
    __m512 t[16], r[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(m[i], m[i + 1]);     /* per lane: a0 b0 a1 b1 */
        t[i + 1] = _mm512_unpackhi_ps(m[i], m[i + 1]); /* per lane: a2 b2 a3 b3 */
    }
    for (int i = 0; i < 16; i += 4) { /* r[i + c] lane k: column 4k + c of rows i..i+3 */
        r[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
        r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xEE);
        r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    for (int h = 0; h < 16; h += 8) /* lanes 0,2 and 1,3 of rows h..h+3 with rows h+4..h+7 */
        for (int c = 0; c < 4; c++) {
            t[h + c] = _mm512_shuffle_f32x4(r[h + c], r[h + 4 + c], 0x88);
            t[h + 4 + c] = _mm512_shuffle_f32x4(r[h + c], r[h + 4 + c], 0xDD);
        }
    for (int c = 0; c < 8; c++) { /* t[c] with t[8 + c]: columns c and c + 8, all 16 rows */
        m[c] = _mm512_shuffle_f32x4(t[c], t[8 + c], 0x88);
        m[c + 8] = _mm512_shuffle_f32x4(t[c], t[8 + c], 0xDD);
    }
}

/* Kp: panels of 32 keys, each [64 dims][32 keys], zero past `tokens`; Vp: [tokens][64 dims].
 * Whole groups of 16 keys are transposed in registers, the last partial group one by one. */
AVX512 static void pack_head(float *restrict kp, float *restrict vp, const float *k, const float *v,
                             int tokens, int qkv_stride)
{
    const int whole = tokens / 16 * 16, columns = panel_keys(tokens);
    for (int t0 = 0; t0 < whole; t0 += 16) {
        float *panel = kp + (size_t)(t0 / PANEL_KEYS) * HEAD_DIM * PANEL_KEYS + t0 % PANEL_KEYS;
        for (int d0 = 0; d0 < HEAD_DIM; d0 += 16) {
            __m512 m[16];
            for (int i = 0; i < 16; i++)
                m[i] = _mm512_loadu_ps(k + (size_t)(t0 + i) * qkv_stride + d0);
            transpose16(m);
            for (int j = 0; j < 16; j++)
                _mm512_store_ps(panel + (size_t)(d0 + j) * PANEL_KEYS, m[j]);
        }
    }
    for (int t = whole; t < columns; t++) {
        float *kcol = kp + (size_t)(t / PANEL_KEYS) * HEAD_DIM * PANEL_KEYS + t % PANEL_KEYS;
        const float *krow = k + (size_t)t * qkv_stride;
        for (int d = 0; d < HEAD_DIM; d++)
            kcol[d * PANEL_KEYS] = t < tokens ? krow[d] : 0.0f;
    }
    for (int t = 0; t < tokens; t++)
        for (int d = 0; d < HEAD_DIM; d += 16)
            _mm512_store_ps(vp + (size_t)t * HEAD_DIM + d, _mm512_loadu_ps(v + (size_t)t * qkv_stride + d));
}

/* s[r][0..keys) = Σ_d qt[r][d]·K[key][d] for the 8 rows of the tile; keys is a multiple of 16,
 * so the last panel may be half used. */
AVX512 static void tile_scores(float *restrict s, const float *restrict qt, const float *restrict kp,
                               int keys)
{
    int p = 0;
    for (; p + PANEL_KEYS <= keys; p += PANEL_KEYS) {
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
    if (p < keys) { /* 16 keys left: the first half of the last panel */
        const float *panel = kp + (size_t)p * HEAD_DIM;
        __m512 acc[TILE_ROWS];
#pragma GCC unroll 8
        for (int r = 0; r < TILE_ROWS; r++)
            acc[r] = _mm512_setzero_ps();
        for (int d = 0; d < HEAD_DIM; d++) {
            __m512 k0 = _mm512_load_ps(panel + d * PANEL_KEYS);
#pragma GCC unroll 8
            for (int r = 0; r < TILE_ROWS; r++)
                acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(qt[r * HEAD_DIM + d]), k0, acc[r]);
        }
#pragma GCC unroll 8
        for (int r = 0; r < TILE_ROWS; r++)
            _mm512_store_ps(s + (size_t)r * keys + p, acc[r]);
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

/* out[r][0..64) = inv[r] · Σ_key p[r][key]·V[key][·] over the real keys, for the tile's first
 * `rows` rows (p rows `keys` apart), in two halves of 32 dims so the 8 × 2 accumulators fit the
 * register file. */
AVX512 static void tile_values(float *out, int out_stride, const float *restrict p,
                               const float *restrict vp, const float *inv, int rows, int tokens,
                               int keys)
{
    for (int half = 0; half < HEAD_DIM; half += 32) {
        __m512 acc[TILE_ROWS][2];
#pragma GCC unroll 8
        for (int r = 0; r < TILE_ROWS; r++)
            acc[r][0] = acc[r][1] = _mm512_setzero_ps();
        for (int key = 0; key < tokens; key++) {
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
    const int dim = heads * HEAD_DIM, qkv_stride = 3 * dim, keys = score_keys(tokens);
    /* scale 1/√64 and log2(e), so that 2^(q·k·this) = e^(q·k/8) */
    const float q_scale = 0.125f * 1.4426950408889634f;
    float *base = (float *)(((uintptr_t)scratch + 63) & ~(uintptr_t)63);
    float *kp = base, *vp = kp + (size_t)panel_keys(tokens) * HEAD_DIM;
    float *s = vp + (size_t)panel_keys(tokens) * HEAD_DIM;
    float *qt = s + (size_t)TILE_ROWS * keys;
    float inv[TILE_ROWS];
    long packed = -1; /* which (image, head) kp/vp hold */
    for (long at = first; at < last;) {
        const long bh = at / tokens;
        const int b = (int)(bh / heads), h = (int)(bh % heads), row0 = (int)(at % tokens);
        const float *img = qkv + (size_t)b * tokens * qkv_stride;
        if (bh != packed) {
            pack_head(kp, vp, img + dim + h * HEAD_DIM, img + 2 * dim + h * HEAD_DIM, tokens, qkv_stride);
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
        tile_values(out + ((size_t)b * tokens + row0) * dim + h * HEAD_DIM, dim, s, vp, inv, rows, tokens,
                    keys);
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
