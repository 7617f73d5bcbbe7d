/* LayerNorm reference and CPU implementation. Statistics accumulate in double so the result is
 * the exactly rounded fp32 of the true value, whatever order another backend sums in. */
#include "layernorm.h"

#include <math.h>

void layernorm_forward_cpu(float *out, const float *in, const float *weight, const float *bias,
                           int rows, int dim, int in_row_stride, float eps)
{
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) {
        const float *x = in + (long)r * in_row_stride;
        float *y = out + (long)r * dim;
        double sum = 0, sum_sq = 0;
        for (int i = 0; i < dim; i++)
            sum += x[i];
        double mean = sum / dim;
        for (int i = 0; i < dim; i++) {
            double d = x[i] - mean;
            sum_sq += d * d;
        }
        float inv_std = (float)(1.0 / sqrt(sum_sq / dim + eps));
        float m = (float)mean;
        for (int i = 0; i < dim; i++)
            y[i] = (x[i] - m) * inv_std * weight[i] + bias[i];
    }
}
