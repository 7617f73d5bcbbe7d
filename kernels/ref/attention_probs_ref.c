/* Reference attention probabilities (ref_ops.h): the softmax rows, written out, in double. */
#include "ref_ops.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void attention_probs_ref(float *probs, const float *qkv, int batch, int tokens, int heads, int queries,
                         int mean_heads)
{
    const int hd = 64, dim = heads * hd, stride = 3 * dim;
    double *p = malloc(sizeof(double) * (size_t)tokens);
    double *mean = calloc((size_t)tokens, sizeof(double));
    if (!p || !mean) /* a test helper: there is no caller to hand an error to */
        abort();
    for (int b = 0; b < batch; b++)
        for (int i = 0; i < queries; i++) {
            memset(mean, 0, sizeof(double) * (size_t)tokens);
            for (int h = 0; h < heads; h++) {
                const float *q = qkv + ((long)b * tokens + i) * stride + h * hd;
                double max = -INFINITY, sum = 0;
                for (int j = 0; j < tokens; j++) {
                    const float *k = qkv + ((long)b * tokens + j) * stride + dim + h * hd;
                    double s = 0;
                    for (int e = 0; e < hd; e++)
                        s += (double)q[e] * k[e];
                    p[j] = s / 8.0;
                    max = p[j] > max ? p[j] : max;
                }
                for (int j = 0; j < tokens; j++)
                    sum += (p[j] = exp(p[j] - max));
                float *row = probs + (((long)b * heads + h) * queries + i) * tokens;
                for (int j = 0; j < tokens; j++) {
                    if (mean_heads)
                        mean[j] += p[j] / sum;
                    else
                        row[j] = (float)(p[j] / sum);
                }
            }
            if (mean_heads)
                for (int j = 0; j < tokens; j++)
                    probs[((long)b * queries + i) * tokens + j] = (float)(mean[j] / heads);
        }
    free(p);
    free(mean);
}
