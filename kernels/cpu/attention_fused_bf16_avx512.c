/* The bf16 kernels of the fused attention (attention_fused.c has the driver; this is the CPU
 * backend's bf16 precision): Q·Kᵀ and P·V by vdpbf16ps with fp32 accumulation, the softmax in fp32.
 * Q (scaled), K and V are rounded to bf16 once, as the tile packs them; the unnormalised
 * probabilities are rounded where P·V reads them, and 1/Σ is taken over those rounded values so the
 * weights P·V applies sum to one. Pairs (two bf16 in a 32-bit word, the even one low) run along the
 * reduction: head dims for the scores, keys for P·V.
 *
 * Layouts, in the fp32 driver's slots (each needs at most half of its fp32 size):
 *   K: panels of 32 keys, [32 dim pairs][32 keys] words, zero past the real keys;
 *   V: [key pairs][64 dims] words, an odd last key paired with a zero key;
 *   Q tile: [8 rows][32 dim pairs] words; probabilities: row r's words at the start of score row r. */
#include "attention_fused_internal.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include "avx512_math.h"

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define TILE_ROWS 8
#define DIM_PAIRS (HEAD_DIM / 2)

AVX512_BF16 static inline __m512bh broadcast_pair(const uint32_t *w)
{
    uint32_t v;
    memcpy(&v, w, sizeof v);
    return (__m512bh)_mm512_set1_epi32((int)v);
}

/* 32 floats → 16 words of bf16 pairs. */
AVX512_BF16 static inline __m512i round32(__m512 lo, __m512 hi)
{
    return (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
}

AVX512_BF16 static void pack_head(float *kp_f, float *vp_f, const float *k, const float *v,
                                  int tokens, int qkv_stride)
{
    uint32_t *kp = (uint32_t *)kp_f, *vp = (uint32_t *)vp_f;
    const int columns = panel_keys(tokens);
    for (int t = 0; t < columns; t++) { /* key t's 32 dim pairs down column t of its panel */
        uint32_t *col = kp + (size_t)(t / PANEL_KEYS) * DIM_PAIRS * PANEL_KEYS + t % PANEL_KEYS;
        uint32_t w[DIM_PAIRS] __attribute__((aligned(64)));
        if (t < tokens) {
            const float *row = k + (size_t)t * qkv_stride;
            _mm512_store_si512(w, round32(_mm512_loadu_ps(row), _mm512_loadu_ps(row + 16)));
            _mm512_store_si512(w + 16, round32(_mm512_loadu_ps(row + 32), _mm512_loadu_ps(row + 48)));
        } else {
            memset(w, 0, sizeof w);
        }
        for (int i = 0; i < DIM_PAIRS; i++)
            col[(size_t)i * PANEL_KEYS] = w[i];
    }
    for (int t = 0; t < tokens; t += 2) { /* keys t, t+1 → one row of 64 words */
        const float *a = v + (size_t)t * qkv_stride, *b = a + qkv_stride;
        const int has_b = t + 1 < tokens;
        for (int d = 0; d < HEAD_DIM; d += 16) {
            const __m512i lo = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(a + d)));
            const __m512i hi = has_b ? _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(b + d)))
                                     : _mm512_setzero_si512();
            _mm512_store_si512(vp + (size_t)(t / 2) * HEAD_DIM + d, _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16)));
        }
    }
}

AVX512_BF16 static void load_q(float *qt_f, const float *q, int qkv_stride, int rows, float q_scale)
{
    uint32_t *qt = (uint32_t *)qt_f;
    const __m512 scale = _mm512_set1_ps(q_scale);
    for (int r = 0; r < TILE_ROWS; r++)
        for (int d = 0; d < HEAD_DIM; d += 32) {
            const float *qr = q + (size_t)r * qkv_stride + d;
            const __m512i w = r < rows ? round32(_mm512_mul_ps(_mm512_loadu_ps(qr), scale),
                                                 _mm512_mul_ps(_mm512_loadu_ps(qr + 16), scale))
                                       : _mm512_setzero_si512();
            _mm512_store_si512(qt + r * DIM_PAIRS + d / 2, w);
        }
}

/* s[r][0..keys) = Σ_d qt[r][d]·K[key][d] for the tile's 8 rows (fp32); keys a multiple of 16. */
AVX512_BF16 static void tile_scores(float *restrict s, const float *restrict qt_f,
                                    const float *restrict kp_f, int keys)
{
    const uint32_t *qt = (const uint32_t *)qt_f, *kp = (const uint32_t *)kp_f;
    int p = 0;
    for (; p + PANEL_KEYS <= keys; p += PANEL_KEYS) {
        const uint32_t *panel = kp + (size_t)p * DIM_PAIRS;
        __m512 acc[TILE_ROWS][2];
#pragma GCC unroll 8
        for (int r = 0; r < TILE_ROWS; r++)
            acc[r][0] = acc[r][1] = _mm512_setzero_ps();
        for (int i = 0; i < DIM_PAIRS; i++) {
            const __m512bh k0 = (__m512bh)_mm512_load_si512(panel + i * PANEL_KEYS);
            const __m512bh k1 = (__m512bh)_mm512_load_si512(panel + i * PANEL_KEYS + 16);
#pragma GCC unroll 8
            for (int r = 0; r < TILE_ROWS; r++) {
                const __m512bh q = broadcast_pair(qt + r * DIM_PAIRS + i);
                acc[r][0] = _mm512_dpbf16_ps(acc[r][0], q, k0);
                acc[r][1] = _mm512_dpbf16_ps(acc[r][1], q, k1);
            }
        }
#pragma GCC unroll 8
        for (int r = 0; r < TILE_ROWS; r++) {
            _mm512_store_ps(s + (size_t)r * keys + p, acc[r][0]);
            _mm512_store_ps(s + (size_t)r * keys + p + 16, acc[r][1]);
        }
    }
    if (p < keys) { /* 16 keys left: the first half of the last panel */
        const uint32_t *panel = kp + (size_t)p * DIM_PAIRS;
        __m512 acc[TILE_ROWS];
#pragma GCC unroll 8
        for (int r = 0; r < TILE_ROWS; r++)
            acc[r] = _mm512_setzero_ps();
        for (int i = 0; i < DIM_PAIRS; i++) {
            const __m512bh k0 = (__m512bh)_mm512_load_si512(panel + i * PANEL_KEYS);
#pragma GCC unroll 8
            for (int r = 0; r < TILE_ROWS; r++)
                acc[r] = _mm512_dpbf16_ps(acc[r], broadcast_pair(qt + r * DIM_PAIRS + i), k0);
        }
#pragma GCC unroll 8
        for (int r = 0; r < TILE_ROWS; r++)
            _mm512_store_ps(s + (size_t)r * keys + p, acc[r]);
    }
}

static inline __mmask16 valid_mask(int j, int tokens)
{
    return j + 16 <= tokens ? 0xFFFF : j >= tokens ? 0 : (__mmask16)((1u << (tokens - j)) - 1);
}

/* In place: the row's first keys/2 words ← bf16 pairs of 2^(s − max) over the first `tokens`
 * entries (0 past them); returns 1/Σ of the rounded values. 32 floats at a time: one vcvtne2ps2bf16
 * rounds them into 16 words, and one vdpbf16ps against pairs of 1.0 adds the rounded values into
 * the sum, exactly as P·V will weigh them (its flushing of bf16 denormals included). Each group is
 * read before its 16 words are written over the row's first half, which lies behind it (the last
 * group's words still end inside the row: j/2 + 16 ≤ keys). Only the last groups, which reach
 * past the real keys, are masked. */
AVX512_BF16 static float softmax_row_bf16(float *s, int tokens, int keys)
{
    (void)keys; /* the loads stop at `tokens`; the stores stay inside the row, as shown above */
    __m512 vmax = _mm512_set1_ps(-INFINITY);
    int j = 0;
    for (; j + 16 <= tokens; j += 16)
        vmax = _mm512_max_ps(vmax, _mm512_load_ps(s + j));
    if (j < tokens)
        vmax = _mm512_mask_max_ps(vmax, valid_mask(j, tokens), vmax, _mm512_load_ps(s + j));
    const __m512 max = _mm512_set1_ps(_mm512_reduce_max_ps(vmax));
    const __m512bh ones = (__m512bh)_mm512_set1_epi32(0x3F803F80); /* (1.0, 1.0) in bf16 */
    __m512 vsum = _mm512_setzero_ps();
    uint32_t *w = (uint32_t *)s;
    for (j = 0; j + 32 <= tokens; j += 32) {
        const __m512 e0 = exp2_nonpositive_bf16(_mm512_sub_ps(_mm512_load_ps(s + j), max));
        const __m512 e1 = exp2_nonpositive_bf16(_mm512_sub_ps(_mm512_load_ps(s + j + 16), max));
        const __m512bh h = _mm512_cvtne2ps_pbh(e1, e0);
        vsum = _mm512_dpbf16_ps(vsum, h, ones);
        _mm512_store_si512(w + j / 2, (__m512i)h);
    }
    for (; j < tokens; j += 32) { /* the ragged end: keys past `tokens` are 0, s past keys unread */
        const __mmask16 m0 = valid_mask(j, tokens), m1 = valid_mask(j + 16, tokens);
        const __m512 e0 = _mm512_maskz_mov_ps(
            m0, exp2_nonpositive_bf16(_mm512_sub_ps(_mm512_maskz_loadu_ps(m0, s + j), max)));
        const __m512 e1 = _mm512_maskz_mov_ps(
            m1, exp2_nonpositive_bf16(_mm512_sub_ps(_mm512_maskz_loadu_ps(m1, s + j + 16), max)));
        const __m512bh h = _mm512_cvtne2ps_pbh(e1, e0);
        vsum = _mm512_dpbf16_ps(vsum, h, ones);
        _mm512_store_si512(w + j / 2, (__m512i)h);
    }
    return 1.0f / _mm512_reduce_add_ps(vsum);
}

/* out[r][0..64) = inv[r] · Σ_key p[r][key]·V[key][·] over the key pairs, for the first `rows` rows
 * (p rows `keys` floats apart, their words at the start), in two halves of 32 dims; stored as fp32
 * (out_stride floats apart) or, `pairs`, as 16 words of bf16 pairs per half (out_stride words
 * apart), rounded as the next GEMM's input rounding would. */
AVX512_BF16 static inline void tile_values_to(float *out, int out_stride, const float *restrict p_f,
                                              const float *restrict vp_f, const float *inv, int rows,
                                              int tokens, int keys, int pairs)
{
    const uint32_t *vp = (const uint32_t *)vp_f;
    const int key_pairs = (tokens + 1) / 2;
    for (int half = 0; half < HEAD_DIM; half += 32) {
        __m512 acc[TILE_ROWS][2];
#pragma GCC unroll 8
        for (int r = 0; r < TILE_ROWS; r++)
            acc[r][0] = acc[r][1] = _mm512_setzero_ps();
        for (int j = 0; j < key_pairs; j++) {
            const __m512bh v0 = (__m512bh)_mm512_load_si512(vp + (size_t)j * HEAD_DIM + half);
            const __m512bh v1 = (__m512bh)_mm512_load_si512(vp + (size_t)j * HEAD_DIM + half + 16);
#pragma GCC unroll 8
            for (int r = 0; r < TILE_ROWS; r++) {
                const __m512bh pr = broadcast_pair((const uint32_t *)(p_f + (size_t)r * keys) + j);
                acc[r][0] = _mm512_dpbf16_ps(acc[r][0], pr, v0);
                acc[r][1] = _mm512_dpbf16_ps(acc[r][1], pr, v1);
            }
        }
#pragma GCC unroll 8
        for (int r = 0; r < TILE_ROWS; r++) /* constant trips: acc stays in registers */
            if (r < rows) {
                const __m512 scale = _mm512_set1_ps(inv[r]);
                const __m512 lo = _mm512_mul_ps(acc[r][0], scale), hi = _mm512_mul_ps(acc[r][1], scale);
                if (pairs) {
                    _mm512_storeu_si512((uint32_t *)out + (size_t)r * out_stride + half / 2,
                                        (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
                } else {
                    _mm512_storeu_ps(out + (size_t)r * out_stride + half, lo);
                    _mm512_storeu_ps(out + (size_t)r * out_stride + half + 16, hi);
                }
            }
    }
}

AVX512_BF16 static void tile_values(float *out, int out_stride, const float *restrict p_f,
                                    const float *restrict vp_f, const float *inv, int rows,
                                    int tokens, int keys)
{
    tile_values_to(out, out_stride, p_f, vp_f, inv, rows, tokens, keys, 0);
}

AVX512_BF16 static void tile_values_pairs(float *out, int out_stride, const float *restrict p_f,
                                          const float *restrict vp_f, const float *inv, int rows,
                                          int tokens, int keys)
{
    tile_values_to(out, out_stride, p_f, vp_f, inv, rows, tokens, keys, 1);
}

const struct attention_isa attention_isa_avx512_bf16 = {
    .name = "avx512-bf16", .tile_rows = TILE_ROWS, .out_pairs = 0, .pack_head = pack_head,
    .load_q = load_q, .scores = tile_scores, .softmax_row = softmax_row_bf16, .values = tile_values};
const struct attention_isa attention_isa_avx512_bf16_pairs = {
    .name = "avx512-bf16-pairs", .tile_rows = TILE_ROWS, .out_pairs = 1, .pack_head = pack_head,
    .load_q = load_q, .scores = tile_scores, .softmax_row = softmax_row_bf16, .values = tile_values_pairs};

#endif
