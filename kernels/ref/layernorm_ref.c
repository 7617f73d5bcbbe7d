/* Reference LayerNorm (ref_ops.h). */
#include "ref_ops.h"

#include <math.h>

void layernorm_forward_ref(float *out, const float *in, const float *weight, const float *bias,
                           int rows, int dim, int in_row_stride, float eps)
{
    for (int r = 0; r < rows; r++) {
        const float *x = in + (long)r * in_row_stride;
        double mean = 0, var = 0;
        for (int i = 0; i < dim; i++)
            mean += x[i];
        mean /= dim;
        for (int i = 0; i < dim; i++)
            var += (x[i] - mean) * (x[i] - mean);
        var /= dim;
        const double inv_std = 1.0 / sqrt(var + eps);
        for (int i = 0; i < dim; i++)
            out[(long)r * dim + i] = (float)((x[i] - mean) * inv_std * weight[i] + bias[i]);
    }
}
