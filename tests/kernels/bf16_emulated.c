/* The emulated bf16 kernel table (bf16_emulated.h). The linear layer walks the packed weight panel
 * by panel, 32 output columns at a time, in the order the AVX512_BF16 tile does: acc ← bias (or 0),
 * then per pair the odd products first, each addition one correctly rounded FMA with denormals
 * flushed (dpbf16_ref, written so the compiler can vectorise it across the 32 columns; tested bit for
 * bit against dpbf16_ref and linear_bf16_ref in test_bf16_numerics.c). Rows round through
 * bf16_pair_ref, GELU is the exact-erf one in double (the product's fp32 polynomial is within 1e-6
 * of it, test_linear_bf16.c). Attention is attention_bf16_ref's arithmetic, reorganised to round each
 * operand once. Slow compared with the instructions, fast enough for the test models. */
#include "bf16_emulated.h"

#include "linear_bf16.h"
#include "ref_ops.h"

#include <float.h>
#include <math.h>
#include <omp.h>
#include <string.h>

static inline float half(uint32_t pair, int high)
{
    const uint32_t bits = high ? pair & 0xffff0000u : pair << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* FTZ/DAZ: a denormal is a zero of its sign. */
static inline float flush(float f) { return fabsf(f) < FLT_MIN ? copysignf(0.0f, f) : f; }

float bf16_emulated_dp(float acc, uint32_t a, uint32_t b)
{
    /* the halves of a pair from bf16_pair_ref are never denormal (the rounding flushed them) */
    acc = flush(fmaf(half(a, 1), half(b, 1), flush(acc)));
    return flush(fmaf(half(a, 0), half(b, 0), acc));
}

static void round_rows(uint32_t *dst, const float *src, int m, int k, int lda)
{
    const int k2 = linear_bf16_pairs(k);
    for (int r = 0; r < m; r++)
        for (int i = 0; i < k2; i++) {
            const float *row = src + (size_t)r * lda;
            dst[(size_t)r * k2 + i] = bf16_pair_ref(row[2 * i], 2 * i + 1 < k ? row[2 * i + 1] : 0.0f);
        }
}

static float epilogue(float x, enum linear_epilogue e)
{
    if (e == EPILOGUE_GELU)
        return (float)(0.5 * x * (1.0 + erf(x / sqrt(2.0))));
    if (e == EPILOGUE_RELU)
        return x > 0 ? x : 0;
    return x;
}

#if defined(__x86_64__) && defined(__GNUC__)
#define FMA_TARGET __attribute__((target("avx2,fma")))
#else
#define FMA_TARGET
#endif

/* One row against one panel: acc (32) through every pair, the same arithmetic as bf16_emulated_dp. */
FMA_TARGET static void panel_row(float *restrict acc, const uint32_t *restrict a, const uint32_t *restrict panel,
                                 int k2)
{
    for (int i = 0; i < k2; i++) {
        const float ahi = half(a[i], 1), alo = half(a[i], 0);
        const uint32_t *w = panel + (size_t)i * LINEAR_BF16_PANEL;
#pragma omp simd
        for (int j = 0; j < LINEAR_BF16_PANEL; j++) {
            float x = fmaf(ahi, half(w[j], 1), acc[j]);
            x = fabsf(x) < FLT_MIN ? copysignf(0.0f, x) : x;
            x = fmaf(alo, half(w[j], 0), x);
            acc[j] = fabsf(x) < FLT_MIN ? copysignf(0.0f, x) : x;
        }
    }
}

static void linear(float *out, int ldc, const uint32_t *in, const uint32_t *packed, const float *bias, int m,
                   int n, int k, enum linear_epilogue e)
{
    const int k2 = linear_bf16_pairs(k), panels = (n + LINEAR_BF16_PANEL - 1) / LINEAR_BF16_PANEL;
#pragma omp parallel for collapse(2) schedule(static)
    for (int r = 0; r < m; r++)
        for (int p = 0; p < panels; p++) {
            float acc[LINEAR_BF16_PANEL];
            const int j0 = p * LINEAR_BF16_PANEL;
            for (int j = 0; j < LINEAR_BF16_PANEL; j++)
                acc[j] = flush(bias && j0 + j < n ? bias[j0 + j] : 0.0f);
            panel_row(acc, in + (size_t)r * k2, packed + (size_t)p * k2 * LINEAR_BF16_PANEL, k2);
            for (int j = 0; j < LINEAR_BF16_PANEL && j0 + j < n; j++)
                out[(size_t)r * ldc + j0 + j] = epilogue(acc[j], e);
        }
}

/* K, V (and the scaled Q) of one (image, head) rounded once: 3·T·64 floats; plus T doubles. */
static size_t attention_scratch(int tokens)
{
    return (size_t)tokens * (3 * 64 + 2) * (size_t)omp_get_max_threads();
}

/* attention_bf16_ref's arithmetic, term for term (the same rounded operands, double sums in the
 * same order), with each operand rounded once per (image, head) instead of once per use, and the
 * (image, head) pairs spread over the threads; bit for bit the reference (test_bf16_numerics.c). */
static void attention(float *out, const float *qkv, int batch, int tokens, int heads, float *scratch,
                      size_t scratch_floats)
{
    (void)scratch_floats;
    const int hd = 64, dim = heads * hd, stride = 3 * dim, T = tokens;
    const float scale = (float)(0.125 * 1.4426950408889634);
#pragma omp parallel for schedule(dynamic)
    for (int bh = 0; bh < batch * heads; bh++) {
        const int b = bh / heads, h = bh % heads;
        float *q = scratch + (size_t)omp_get_thread_num() * T * (3 * 64 + 2), *k = q + (size_t)T * hd;
        float *v = k + (size_t)T * hd;
        double *p = (double *)(v + (size_t)T * hd);
        for (int t = 0; t < T; t++)
            for (int e = 0; e < hd; e++) {
                const float *row = qkv + ((size_t)b * T + t) * stride + h * hd + e;
                q[(size_t)t * hd + e] = bf16_round_ref(row[0] * scale);
                k[(size_t)t * hd + e] = bf16_round_ref(row[dim]);
                v[(size_t)t * hd + e] = bf16_round_ref(row[2 * dim]);
            }
        for (int i = 0; i < T; i++) {
            double max = -INFINITY, sum = 0;
            for (int j = 0; j < T; j++) {
                double s = 0;
                for (int e = 0; e < hd; e++)
                    s += (double)q[(size_t)i * hd + e] * k[(size_t)j * hd + e];
                p[j] = s;
                max = s > max ? s : max;
            }
            for (int j = 0; j < T; j++)
                sum += (p[j] = bf16_round_ref((float)exp2(p[j] - max)));
            for (int e = 0; e < hd; e++) {
                double acc = 0;
                for (int j = 0; j < T; j++)
                    acc += p[j] * v[(size_t)j * hd + e];
                out[((size_t)b * T + i) * dim + h * hd + e] = (float)(acc / sum);
            }
        }
    }
}

/* No rounding stores of its own: the backend rounds these kernels' fp32 results into GEMM-input
 * buffers itself, with round_rows above. */
const struct cpu_bf16_kernels cpu_bf16_emulated = {
    .name = "bf16-ref", .round_rows = round_rows, .linear = linear,
    .attention_scratch_floats = attention_scratch, .attention = attention,
    .linear_to_bf16 = NULL, .attention_to_bf16 = NULL};
