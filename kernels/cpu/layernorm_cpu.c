/* LayerNorm reference and CPU implementation. Statistics accumulate in double so the result is
 * the correctly rounded fp32 of the true value whatever order another backend sums in; the row
 * loop is compiled per vector width (simd.h). */
#include "layernorm.h"

#include "simd.h"

#include <math.h>

SIMD_CLONES static void layernorm_row(float *restrict y, const float *restrict x,
                                      const float *restrict weight, const float *restrict bias,
                                      int dim, float eps)
{
    double sum = 0, sum_sq = 0;
#pragma omp simd reduction(+ : sum)
    for (int i = 0; i < dim; i++)
        sum += x[i];
    const double mean = sum / dim;
#pragma omp simd reduction(+ : sum_sq)
    for (int i = 0; i < dim; i++)
        sum_sq += (x[i] - mean) * (x[i] - mean);
    const float inv_std = (float)(1.0 / sqrt(sum_sq / dim + eps));
    const float m = (float)mean;
    for (int i = 0; i < dim; i++)
        y[i] = (x[i] - m) * inv_std * weight[i] + bias[i];
}

void layernorm_forward_cpu(float *out, const float *in, const float *weight, const float *bias,
                           int rows, int dim, int in_row_stride, float eps)
{
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++)
        layernorm_row(out + (long)r * dim, in + (long)r * in_row_stride, weight, bias, dim, eps);
}
