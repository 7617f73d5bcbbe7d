/* Reference elementwise ops (ref_ops.h). */
#include "ref_ops.h"

#include <math.h>

void bias_act_ref(float *x, const float *bias, long rows, int cols, enum linear_epilogue act)
{
    for (long r = 0; r < rows; r++)
        for (int j = 0; j < cols; j++) {
            double v = (double)x[r * cols + j] + bias[j];
            if (act == EPILOGUE_GELU)
                v = 0.5 * v * (1.0 + erf(v / sqrt(2.0)));
            else if (act == EPILOGUE_RELU)
                v = v > 0 ? v : 0;
            x[r * cols + j] = (float)v;
        }
}

void layerscale_residual_ref(float *x, const float *y, const float *gamma, long rows, int dim)
{
    for (long r = 0; r < rows; r++)
        for (int i = 0; i < dim; i++)
            x[r * dim + i] = (float)((double)x[r * dim + i] + (double)gamma[i] * y[r * dim + i]);
}

void swiglu_forward_ref(float *out, const float *in, long rows, int hidden)
{
    for (long r = 0; r < rows; r++)
        for (int j = 0; j < hidden; j++) {
            const double a = in[r * 2 * hidden + j], b = in[r * 2 * hidden + hidden + j];
            out[r * hidden + j] = (float)(a / (1.0 + exp(-a)) * b);
        }
}
