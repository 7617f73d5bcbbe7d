/* Linear layers through OpenBLAS sgemm. The bias is written into the output first and the GEMM
 * accumulates onto it (beta = 1), which saves OpenBLAS's separate beta pass and our bias pass. */
#include "linear.h"

#include "activations.h"

#include <cblas.h>
#include <string.h>

void linear_forward_cpu(float *out, const float *in, const float *weight, const float *bias, int m,
                        int n, int k, enum linear_epilogue epilogue)
{
    float beta = 0.0f;
    if (bias) {
#pragma omp parallel for schedule(static)
        for (int r = 0; r < m; r++)
            memcpy(out + (long)r * n, bias, (size_t)n * sizeof(float));
        beta = 1.0f;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1.0f, in, k, weight, k, beta, out, n);
    if (epilogue == EPILOGUE_GELU)
        gelu_inplace_cpu(out, (long)m * n);
    else if (epilogue == EPILOGUE_RELU)
        relu_inplace_cpu(out, (long)m * n);
}
