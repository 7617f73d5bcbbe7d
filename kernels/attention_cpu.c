/* Attention on the CPU: two BLAS GEMMs per (image, head) around a vectorised softmax. The score
 * matrix for 1,605 tokens is 10 MB; it is reused head after head, so memory stays flat. */
#include "attention.h"

#include "fastmath.h"
#include "simd.h"

#include <cblas.h>
#include <math.h>

size_t attention_scratch_floats_cpu(int tokens) { return (size_t)tokens * (size_t)tokens; }

SIMD_CLONES static void softmax_row(float *s, int cols)
{
    float max = s[0];
#pragma omp simd reduction(max : max)
    for (int j = 1; j < cols; j++)
        max = s[j] > max ? s[j] : max;
    float sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int j = 0; j < cols; j++) {
        s[j] = fast_expf(s[j] - max);
        sum += s[j];
    }
    float inv = 1.0f / sum;
    for (int j = 0; j < cols; j++)
        s[j] *= inv;
}

static void softmax_rows(float *scores, int rows, int cols)
{
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++)
        softmax_row(scores + (long)r * cols, cols);
}

void attention_forward_cpu(float *out, const float *qkv, int batch, int tokens, int heads,
                           float *scratch)
{
    const int hd = 64, dim = heads * hd, qkv_stride = 3 * dim;
    const float scale = 0.125f; /* 1/√64, exact */
    for (int b = 0; b < batch; b++) {
        const float *base = qkv + (long)b * tokens * qkv_stride;
        for (int h = 0; h < heads; h++) {
            const float *q = base + h * hd, *k = base + dim + h * hd, *v = base + 2 * dim + h * hd;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, tokens, tokens, hd, scale, q,
                        qkv_stride, k, qkv_stride, 0.0f, scratch, tokens);
            softmax_rows(scratch, tokens, tokens);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, tokens, hd, tokens, 1.0f, scratch,
                        tokens, v, qkv_stride, 0.0f, out + (long)b * tokens * dim + h * hd, dim);
        }
    }
}
