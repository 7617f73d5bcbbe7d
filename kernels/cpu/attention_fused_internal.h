/* Between the fused attention's driver (attention_fused.c) and its per-instruction-set kernels.
 * Layout per thread: K packed transposed in panels of 32 keys ([64 dims][32 keys] each, zero past
 * the real keys up to a whole panel), V as rows of 64, the tile's score rows (keys rounded up to 16
 * apart), the Q tile; all 64-byte aligned. */
#ifndef STOPCAL_ATTENTION_FUSED_INTERNAL_H
#define STOPCAL_ATTENTION_FUSED_INTERNAL_H

#define HEAD_DIM 64
#define PANEL_KEYS 32
#define MAX_TILE_ROWS 8

/* Score columns per row: the keys rounded up to a whole 16-float vector. */
static inline int score_keys(int tokens) { return (tokens + 15) / 16 * 16; }
/* Columns the packed K holds: whole panels. */
static inline int panel_keys(int tokens) { return (tokens + PANEL_KEYS - 1) / PANEL_KEYS * PANEL_KEYS; }

struct attention_isa {
    const char *name;
    int tile_rows; /* query rows per register tile, ≤ MAX_TILE_ROWS */
    /* 1: values() stores bf16 pairs, so out's offsets and row stride are in 32-bit words, half
     * those of the fp32 layout; 0: fp32 */
    int out_pairs;
    /* kp, vp ← K and V of one (image, head), rows qkv_stride floats apart */
    void (*pack_head)(float *kp, float *vp, const float *k, const float *v, int tokens, int qkv_stride);
    /* qt (tile_rows × 64) ← scale · the first `rows` q rows; the rest zero */
    void (*load_q)(float *qt, const float *q, int qkv_stride, int rows, float scale);
    /* s (tile_rows × keys) ← qt · Kᵀ */
    void (*scores)(float *s, const float *qt, const float *kp, int keys);
    /* s ← 2^(s − max) over the first `tokens` entries, 0 past them; returns 1/Σ */
    float (*softmax_row)(float *s, int tokens, int keys);
    /* out rows ← inv[r] · Σ_key p[r][key] · V[key], the first `rows` rows stored */
    void (*values)(float *out, int out_stride, const float *p, const float *vp, const float *inv,
                   int rows, int tokens, int keys);
};

extern const struct attention_isa attention_isa_avx512, attention_isa_avx2;
/* The bf16 form (attention_fused_bf16_avx512.c): the same slots, holding bf16 pairs. */
extern const struct attention_isa attention_isa_avx512_bf16;
/* The bf16 form storing its outputs as bf16 pairs (attention_bf16_forward_to_bf16). */
extern const struct attention_isa attention_isa_avx512_bf16_pairs;

#endif
