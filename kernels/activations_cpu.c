/* Element-wise ops, row-parallel. GELU is the exact-erf form DINOv2 uses (nn.GELU default). */
#include "activations.h"

#include "fastmath.h"

void bias_gelu_cpu(float *x, const float *bias, long rows, int cols)
{
#pragma omp parallel for schedule(static)
    for (long r = 0; r < rows; r++) {
        float *row = x + r * cols;
#pragma omp simd
        for (int j = 0; j < cols; j++)
            row[j] = gelu_erf(row[j] + (bias ? bias[j] : 0.0f));
    }
}

void bias_relu_cpu(float *x, const float *bias, long rows, int cols)
{
#pragma omp parallel for schedule(static)
    for (long r = 0; r < rows; r++) {
        float *row = x + r * cols;
        for (int j = 0; j < cols; j++) {
            float v = row[j] + (bias ? bias[j] : 0.0f);
            row[j] = v > 0 ? v : 0;
        }
    }
}

void bias_add_cpu(float *x, const float *bias, long rows, int cols)
{
#pragma omp parallel for schedule(static)
    for (long r = 0; r < rows; r++) {
        float *row = x + r * cols;
        for (int j = 0; j < cols; j++)
            row[j] += bias[j];
    }
}

void layerscale_residual_cpu(float *x, const float *y, const float *gamma, long rows, int dim)
{
#pragma omp parallel for schedule(static)
    for (long r = 0; r < rows; r++)
        for (int j = 0; j < dim; j++)
            x[r * dim + j] += gamma[j] * y[r * dim + j];
}

void swiglu_forward_cpu(float *out, const float *in, long rows, int hidden)
{
#pragma omp parallel for schedule(static)
    for (long r = 0; r < rows; r++) {
        const float *a = in + r * 2 * hidden, *b = a + hidden;
        float *o = out + r * hidden;
#pragma omp simd
        for (int j = 0; j < hidden; j++)
            o[j] = a[j] / (1.0f + fast_expf(-a[j])) * b[j];
    }
}
