/* The AVX-512 kernels of the fused attention (attention_fused.c has the driver): 8 query rows ×
 * 32 keys for the scores (16 accumulators), 8 rows × 32 dims for P·V, exp2 by vscalefps, K packed
 * through an in-register 16 × 16 transpose. */
#include "attention_fused_internal.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include "avx512_math.h"

#include <math.h>
#include <stddef.h>

#define TILE_ROWS 8

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
#pragma GCC unroll 8
        for (int r = 0; r < TILE_ROWS; r++) /* constant trips: acc stays in registers */
            if (r < rows) {
                __m512 scale = _mm512_set1_ps(inv[r]);
                _mm512_storeu_ps(out + (size_t)r * out_stride + half, _mm512_mul_ps(acc[r][0], scale));
                _mm512_storeu_ps(out + (size_t)r * out_stride + half + 16, _mm512_mul_ps(acc[r][1], scale));
            }
    }
}

AVX512 static void load_q(float *qt, const float *q, int qkv_stride, int rows, float q_scale)
{
    const __m512 scale = _mm512_set1_ps(q_scale);
    for (int r = 0; r < TILE_ROWS; r++)
        for (int d = 0; d < HEAD_DIM; d += 16)
            _mm512_store_ps(qt + r * HEAD_DIM + d,
                            r < rows ? _mm512_mul_ps(_mm512_loadu_ps(q + (size_t)r * qkv_stride + d), scale)
                                     : _mm512_setzero_ps());
}

const struct attention_isa attention_isa_avx512 = {
    .name = "avx512", .tile_rows = TILE_ROWS, .out_pairs = 0, .pack_head = pack_head, .load_q = load_q,
    .scores = tile_scores, .softmax_row = softmax_row_unnormalised, .values = tile_values};

#endif
