/* Linear layers through OpenBLAS sgemm; bias and activation in one pass over the output. */
#include "linear.h"

#include "activations.h"

#include <cblas.h>

void linear_forward_cpu(float *out, const float *in, const float *weight, const float *bias, int m,
                        int n, int k, enum linear_epilogue epilogue)
{
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1.0f, in, k, weight, k, 0.0f, out, n);
    switch (epilogue) {
    case EPILOGUE_GELU:
        bias_gelu_cpu(out, bias, m, n);
        break;
    case EPILOGUE_RELU:
        bias_relu_cpu(out, bias, m, n);
        break;
    case EPILOGUE_NONE:
        if (bias)
            bias_add_cpu(out, bias, m, n);
        break;
    }
}
