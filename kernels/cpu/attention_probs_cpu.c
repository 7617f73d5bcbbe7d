/* attention_probs on the CPU: per (image, head) one GEMM Q[:queries]·Kᵀ/8 into rows, then a
 * softmax per row (max-subtracted, summed in double); the head mean accumulates in the output. */
#include "attention_probs.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

size_t attention_probs_scratch_floats(int tokens, int queries, int mean_heads)
{
    return mean_heads ? (size_t)queries * (size_t)tokens : 0;
}

static void softmax_rows(float *rows, int n_rows, int n, float scale_out, float *acc)
{
#pragma omp parallel for schedule(static) if (n_rows > 8)
    for (int i = 0; i < n_rows; i++) {
        float *r = rows + (size_t)i * n;
        float max = -INFINITY;
        for (int j = 0; j < n; j++)
            max = r[j] > max ? r[j] : max;
        double sum = 0;
        for (int j = 0; j < n; j++)
            sum += (r[j] = expf(r[j] - max));
        const float inv = (float)(1.0 / sum);
        if (acc) {
            float *a = acc + (size_t)i * n;
            for (int j = 0; j < n; j++)
                a[j] += r[j] * inv * scale_out;
        } else {
            for (int j = 0; j < n; j++)
                r[j] *= inv;
        }
    }
}

void attention_probs_cpu(float *probs, const float *qkv, int batch, int tokens, int heads, int queries,
                         int mean_heads, float *scratch)
{
    const int hd = 64, dim = heads * hd, stride = 3 * dim;
    const size_t rows = (size_t)queries * (size_t)tokens;
    for (int b = 0; b < batch; b++) {
        const float *base = qkv + (size_t)b * tokens * stride;
        float *mean = probs + (size_t)b * rows;
        if (mean_heads)
            memset(mean, 0, rows * sizeof *mean);
        for (int h = 0; h < heads; h++) {
            float *s = mean_heads ? scratch : probs + ((size_t)b * heads + h) * rows;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, queries, tokens, hd, 0.125f, base + h * hd,
                        stride, base + dim + h * hd, stride, 0.0f, s, tokens);
            softmax_rows(s, queries, tokens, 1.0f / heads, mean_heads ? mean : NULL);
        }
    }
}
