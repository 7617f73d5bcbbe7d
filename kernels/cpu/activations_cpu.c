/* Element-wise ops, row-parallel, each inner span compiled for several vector widths. GELU is the
 * exact-erf form DINOv2 uses (nn.GELU default). Loops are branch-free so they vectorise. */
#include "activations.h"

#include "fastmath.h"
#include "simd.h"

SIMD_CLONES static void gelu_span(float *x, long n)
{
    for (long i = 0; i < n; i++)
        x[i] = gelu_erf(x[i]);
}

SIMD_CLONES static void relu_span(float *x, long n)
{
    for (long i = 0; i < n; i++)
        x[i] = x[i] > 0 ? x[i] : 0;
}

SIMD_CLONES static void bias_span(float *restrict x, const float *restrict bias, int n)
{
    for (int i = 0; i < n; i++)
        x[i] += bias[i];
}

void gelu_inplace_cpu(float *x, long n)
{
    const long chunk = 4096;
#pragma omp parallel for schedule(static)
    for (long start = 0; start < n; start += chunk)
        gelu_span(x + start, n - start < chunk ? n - start : chunk);
}

void relu_inplace_cpu(float *x, long n)
{
    const long chunk = 4096;
#pragma omp parallel for schedule(static)
    for (long start = 0; start < n; start += chunk)
        relu_span(x + start, n - start < chunk ? n - start : chunk);
}

void bias_add_cpu(float *x, const float *bias, long rows, int cols)
{
#pragma omp parallel for schedule(static)
    for (long r = 0; r < rows; r++)
        bias_span(x + r * cols, bias, cols);
}

SIMD_CLONES static void layerscale_span(float *restrict x, const float *restrict y,
                                        const float *restrict gamma, int n)
{
    for (int j = 0; j < n; j++)
        x[j] += gamma[j] * y[j];
}

void layerscale_residual_cpu(float *x, const float *y, const float *gamma, long rows, int dim)
{
#pragma omp parallel for schedule(static)
    for (long r = 0; r < rows; r++)
        layerscale_span(x + r * dim, y + r * dim, gamma, dim);
}

SIMD_CLONES static void swiglu_span(float *restrict out, const float *restrict a,
                                    const float *restrict b, int n)
{
    for (int j = 0; j < n; j++)
        out[j] = a[j] / (1.0f + fast_expf(-a[j])) * b[j];
}

void swiglu_forward_cpu(float *out, const float *in, long rows, int hidden)
{
#pragma omp parallel for schedule(static)
    for (long r = 0; r < rows; r++)
        swiglu_span(out + r * hidden, in + r * 2 * hidden, in + r * 2 * hidden + hidden, hidden);
}
