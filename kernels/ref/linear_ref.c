/* Reference linear layer (ref_ops.h). */
#include "ref_ops.h"

#include <math.h>

void linear_forward_ref(float *out, const float *in, const float *weight, const float *bias, int m,
                        int n, int k, enum linear_epilogue epilogue)
{
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double acc = bias ? bias[j] : 0.0;
            for (int kk = 0; kk < k; kk++)
                acc += (double)in[(long)i * k + kk] * weight[(long)j * k + kk];
            if (epilogue == EPILOGUE_GELU)
                acc = 0.5 * acc * (1.0 + erf(acc / sqrt(2.0)));
            else if (epilogue == EPILOGUE_RELU)
                acc = acc > 0 ? acc : 0;
            out[(long)i * n + j] = (float)acc;
        }
}
