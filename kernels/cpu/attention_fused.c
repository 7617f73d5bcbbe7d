/* Fused attention: per tile of query rows, scores for every key, an exact softmax and the product
 * with V, with the tile's score rows (8 × T floats) never leaving L1/L2. This file is the driver;
 * the register kernels are per instruction set (attention_fused_avx512.c, attention_fused_avx2.c).
 *
 * Why not two GEMMs: with head dim 64, Q·Kᵀ has a reduction of only 64 and P·V an output of only
 * 64 columns, shapes where a general GEMM spends a large share of its time packing and storing;
 * and the softmax between them makes three more passes over the score matrix. Here K and V of one
 * (image, head) are packed once per thread into the layouts the register tiles read (K transposed
 * in panels of 32 keys, V as rows of 64). Scores are computed for the keys rounded up to 16 (K
 * is zero-padded there, and those keys get probability 0); P·V runs over the real keys only. The
 * 1/√64 scale and log2(e) are folded into the Q tile so the softmax needs exp2 only, and the 1/Σ
 * normalisation is applied to the 64 outputs of a row, not to its T probabilities.
 *
 * Threads split the flattened (image, head, query row) range evenly, so every thread gets the
 * same number of rows whatever batch, heads and tokens are, and packs each head it visits once. */
#include "attention.h"

#include "attention_fused_internal.h"
#include "cpu_isa.h"

#include <stdint.h>
#include <string.h>

/* Packed K and V, the tile's score rows, the Q tile, and 16 floats to align the start. */
size_t attention_fused_thread_floats(int tokens)
{
    return 2 * (size_t)panel_keys(tokens) * HEAD_DIM + MAX_TILE_ROWS * (size_t)score_keys(tokens) +
           MAX_TILE_ROWS * HEAD_DIM + 16;
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <omp.h>

static const struct attention_isa *kernel_for(enum cpu_isa isa)
{
    switch (isa) {
    case CPU_ISA_AVX512: return &attention_isa_avx512;
    case CPU_ISA_AVX2: return &attention_isa_avx2;
    default: return NULL;
    }
}

int attention_fused_has_kernel(enum cpu_isa isa) { return kernel_for(isa) != NULL; }

static void run_rows(const struct attention_isa *isa, float *out, const float *qkv, int tokens,
                     int heads, float *scratch, long first, long last)
{
    const int dim = heads * HEAD_DIM, qkv_stride = 3 * dim, keys = score_keys(tokens);
    const int tile = isa->tile_rows;
    /* scale 1/√64 and log2(e), so that 2^(q·k·this) = e^(q·k/8) */
    const float q_scale = 0.125f * 1.4426950408889634f;
    float *base = (float *)(((uintptr_t)scratch + 63) & ~(uintptr_t)63);
    float *kp = base, *vp = kp + (size_t)panel_keys(tokens) * HEAD_DIM;
    float *s = vp + (size_t)panel_keys(tokens) * HEAD_DIM;
    float *qt = s + (size_t)MAX_TILE_ROWS * keys;
    float inv[MAX_TILE_ROWS];
    long packed = -1; /* which (image, head) kp/vp hold */
    for (long at = first; at < last;) {
        const long bh = at / tokens;
        const int b = (int)(bh / heads), h = (int)(bh % heads), row0 = (int)(at % tokens);
        const float *img = qkv + (size_t)b * tokens * qkv_stride;
        if (bh != packed) {
            isa->pack_head(kp, vp, img + dim + h * HEAD_DIM, img + 2 * dim + h * HEAD_DIM, tokens,
                           qkv_stride);
            packed = bh;
        }
        int rows = tokens - row0 < tile ? tokens - row0 : tile;
        if (last - at < rows)
            rows = (int)(last - at);
        isa->load_q(qt, img + (size_t)row0 * qkv_stride + h * HEAD_DIM, qkv_stride, rows, q_scale);
        isa->scores(s, qt, kp, keys);
        for (int r = 0; r < rows; r++)
            inv[r] = isa->softmax_row(s + (size_t)r * keys, tokens, keys);
        for (int r = rows; r < tile; r++) /* padding rows: zero probabilities, unused output */
            memset(s + (size_t)r * keys, 0, (size_t)keys * sizeof(float));
        const size_t at_out = ((size_t)b * tokens + row0) * dim + h * HEAD_DIM; /* dim, 64 even */
        if (isa->out_pairs)
            isa->values((float *)((uint32_t *)out + at_out / 2), dim / 2, s, vp, inv, rows, tokens, keys);
        else
            isa->values(out + at_out, dim, s, vp, inv, rows, tokens, keys);
        at += rows;
    }
}

static void run_threads(const struct attention_isa *isa, float *out, const float *qkv, int batch,
                        int tokens, int heads, float *scratch, int threads)
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
        run_rows(isa, out, qkv, tokens, heads, scratch + (size_t)t * slot, total * t / n,
                 total * (t + 1) / n);
    }
}

void attention_fused_forward(enum cpu_isa isa_choice, float *out, const float *qkv, int batch, int tokens,
                             int heads, float *scratch, int threads)
{
    const struct attention_isa *isa = kernel_for(isa_choice);
    if (!isa) { /* callers check attention_fused_has_kernel(); this keeps a wrong call correct */
        attention_blas_forward(out, qkv, batch, tokens, heads, scratch, threads);
        return;
    }
    run_threads(isa, out, qkv, batch, tokens, heads, scratch, threads);
}

/* The bf16 forms: as many threads as the scratch has slots for, at most the OpenMP team. */
static void run_bf16(const struct attention_isa *isa, float *out, const float *qkv, int batch,
                     int tokens, int heads, float *scratch, size_t scratch_floats)
{
    size_t slots = scratch_floats / attention_fused_thread_floats(tokens);
    const int max = omp_get_max_threads();
    run_threads(isa, out, qkv, batch, tokens, heads, scratch,
                slots < 1 ? 1 : slots > (size_t)max ? max : (int)slots);
}

void attention_bf16_forward(float *out, const float *qkv, int batch, int tokens, int heads,
                            float *scratch, size_t scratch_floats)
{
    run_bf16(&attention_isa_avx512_bf16, out, qkv, batch, tokens, heads, scratch, scratch_floats);
}

void attention_bf16_forward_to_bf16(uint32_t *out, const float *qkv, int batch, int tokens, int heads,
                                    float *scratch, size_t scratch_floats)
{
    run_bf16(&attention_isa_avx512_bf16_pairs, (float *)out, qkv, batch, tokens, heads, scratch,
             scratch_floats);
}

#else /* not x86-64 with GCC-style intrinsics: the portable implementation only */

int attention_fused_has_kernel(enum cpu_isa isa) { (void)isa; return 0; }

void attention_fused_forward(enum cpu_isa isa, float *out, const float *qkv, int batch, int tokens,
                             int heads, float *scratch, int threads)
{
    (void)isa;
    attention_blas_forward(out, qkv, batch, tokens, heads, scratch, threads);
}

void attention_bf16_forward(float *out, const float *qkv, int batch, int tokens, int heads,
                            float *scratch, size_t scratch_floats)
{ /* never chosen: the bf16 precision needs linear_bf16_supported() */
    (void)out, (void)qkv, (void)batch, (void)tokens, (void)heads, (void)scratch, (void)scratch_floats;
}

void attention_bf16_forward_to_bf16(uint32_t *out, const float *qkv, int batch, int tokens, int heads,
                                    float *scratch, size_t scratch_floats)
{ /* never chosen, as above */
    (void)out, (void)qkv, (void)batch, (void)tokens, (void)heads, (void)scratch, (void)scratch_floats;
}

#endif
