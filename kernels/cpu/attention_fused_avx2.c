/* The AVX2 + FMA kernels of the fused attention (attention_fused.c has the driver), for CPUs
 * without AVX-512: 6 query rows × 16 keys for the scores and 6 rows × 16 dims for P·V, 12
 * accumulators + 2 loaded vectors + 1 broadcast of the 16 ymm registers; the same packed layout
 * as the AVX-512 kernels (the scores read half a 32-key panel at a time). */
#include "attention_fused_internal.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include "avx2_math.h"

#include <math.h>
#include <stddef.h>

#define TILE_ROWS 6

/* Lanes j..j+7 that are real keys (< tokens), as an all-ones mask per lane. */
AVX2 static inline __m256 valid_lanes(int j, int tokens)
{
    const __m256i lane = _mm256_add_epi32(_mm256_set1_epi32(j), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    return _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(tokens), lane));
}

AVX2 static float hmax(__m256 v)
{
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

AVX2 static float hsum(__m256 v)
{
    __m128 m = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_add_ps(m, _mm_movehl_ps(m, m));
    m = _mm_add_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

/* K transposed into its panels key by key (zero past `tokens` up to a whole panel), V copied. */
AVX2 static void pack_head(float *restrict kp, float *restrict vp, const float *k, const float *v,
                           int tokens, int qkv_stride)
{
    const int columns = panel_keys(tokens);
    for (int t = 0; t < columns; t++) {
        float *kcol = kp + (size_t)(t / PANEL_KEYS) * HEAD_DIM * PANEL_KEYS + t % PANEL_KEYS;
        const float *krow = k + (size_t)t * qkv_stride;
        for (int d = 0; d < HEAD_DIM; d++)
            kcol[d * PANEL_KEYS] = t < tokens ? krow[d] : 0.0f;
    }
    for (int t = 0; t < tokens; t++)
        for (int d = 0; d < HEAD_DIM; d += 8)
            _mm256_store_ps(vp + (size_t)t * HEAD_DIM + d, _mm256_loadu_ps(v + (size_t)t * qkv_stride + d));
}

AVX2 static void load_q(float *qt, const float *q, int qkv_stride, int rows, float q_scale)
{
    const __m256 scale = _mm256_set1_ps(q_scale);
    for (int r = 0; r < TILE_ROWS; r++)
        for (int d = 0; d < HEAD_DIM; d += 8)
            _mm256_store_ps(qt + r * HEAD_DIM + d,
                            r < rows ? _mm256_mul_ps(_mm256_loadu_ps(q + (size_t)r * qkv_stride + d), scale)
                                     : _mm256_setzero_ps());
}

/* s[r][0..keys) = Σ_d qt[r][d]·K[key][d], 16 keys (half a panel) at a time. */
AVX2 static void tile_scores(float *restrict s, const float *restrict qt, const float *restrict kp,
                             int keys)
{
    for (int j = 0; j < keys; j += 16) {
        const float *half = kp + (size_t)(j / PANEL_KEYS) * HEAD_DIM * PANEL_KEYS + j % PANEL_KEYS;
        __m256 acc[TILE_ROWS][2];
#pragma GCC unroll 6
        for (int r = 0; r < TILE_ROWS; r++)
            acc[r][0] = acc[r][1] = _mm256_setzero_ps();
        for (int d = 0; d < HEAD_DIM; d++) {
            const __m256 k0 = _mm256_load_ps(half + d * PANEL_KEYS);
            const __m256 k1 = _mm256_load_ps(half + d * PANEL_KEYS + 8);
#pragma GCC unroll 6
            for (int r = 0; r < TILE_ROWS; r++) {
                const __m256 q = _mm256_broadcast_ss(qt + r * HEAD_DIM + d);
                acc[r][0] = _mm256_fmadd_ps(q, k0, acc[r][0]);
                acc[r][1] = _mm256_fmadd_ps(q, k1, acc[r][1]);
            }
        }
#pragma GCC unroll 6
        for (int r = 0; r < TILE_ROWS; r++) {
            _mm256_store_ps(s + (size_t)r * keys + j, acc[r][0]);
            _mm256_store_ps(s + (size_t)r * keys + j + 8, acc[r][1]);
        }
    }
}

/* In place: s ← 2^(s − max) over the first `tokens` entries, 0 past them; returns 1/Σ. */
AVX2 static float softmax_row_unnormalised(float *s, int tokens, int keys)
{
    __m256 vmax = _mm256_set1_ps(-INFINITY);
    for (int j = 0; j < keys; j += 8)
        vmax = _mm256_max_ps(vmax, _mm256_blendv_ps(_mm256_set1_ps(-INFINITY), _mm256_load_ps(s + j),
                                                     valid_lanes(j, tokens)));
    const __m256 max = _mm256_set1_ps(hmax(vmax));
    __m256 vsum = _mm256_setzero_ps();
    for (int j = 0; j < keys; j += 8) {
        __m256 e = exp2_avx2(_mm256_sub_ps(_mm256_load_ps(s + j), max));
        e = _mm256_and_ps(e, valid_lanes(j, tokens));
        _mm256_store_ps(s + j, e);
        vsum = _mm256_add_ps(vsum, e);
    }
    return 1.0f / hsum(vsum);
}

/* out[r][0..64) = inv[r] · Σ_key p[r][key]·V[key][·] over the real keys, 16 dims at a time. */
AVX2 static void tile_values(float *out, int out_stride, const float *restrict p,
                             const float *restrict vp, const float *inv, int rows, int tokens, int keys)
{
    for (int d0 = 0; d0 < HEAD_DIM; d0 += 16) {
        __m256 acc[TILE_ROWS][2];
#pragma GCC unroll 6
        for (int r = 0; r < TILE_ROWS; r++)
            acc[r][0] = acc[r][1] = _mm256_setzero_ps();
        for (int key = 0; key < tokens; key++) {
            const __m256 v0 = _mm256_load_ps(vp + (size_t)key * HEAD_DIM + d0);
            const __m256 v1 = _mm256_load_ps(vp + (size_t)key * HEAD_DIM + d0 + 8);
#pragma GCC unroll 6
            for (int r = 0; r < TILE_ROWS; r++) {
                const __m256 pr = _mm256_broadcast_ss(p + (size_t)r * keys + key);
                acc[r][0] = _mm256_fmadd_ps(pr, v0, acc[r][0]);
                acc[r][1] = _mm256_fmadd_ps(pr, v1, acc[r][1]);
            }
        }
#pragma GCC unroll 6
        for (int r = 0; r < TILE_ROWS; r++) /* constant trips: acc stays in registers */
            if (r < rows) {
                const __m256 scale = _mm256_set1_ps(inv[r]);
                _mm256_storeu_ps(out + (size_t)r * out_stride + d0, _mm256_mul_ps(acc[r][0], scale));
                _mm256_storeu_ps(out + (size_t)r * out_stride + d0 + 8, _mm256_mul_ps(acc[r][1], scale));
            }
    }
}

const struct attention_isa attention_isa_avx2 = {
    .name = "avx2", .tile_rows = TILE_ROWS, .out_pairs = 0, .pack_head = pack_head, .load_q = load_q,
    .scores = tile_scores, .softmax_row = softmax_row_unnormalised, .values = tile_values};

#endif
