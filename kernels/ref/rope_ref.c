/* Reference RoPE (ref_ops.h): the rotation of each (j, j + 32) pair written out, in double. */
#include "ref_ops.h"

void rope_forward_ref(float *qkv, const float *table, int batch, int tokens, int heads, int prefix)
{
    const int D = heads * 64;
    for (int b = 0; b < batch; b++)
        for (int t = prefix; t < tokens; t++) {
            const float *c = table + (long)(t - prefix) * 64, *s = c + 32;
            for (int part = 0; part < 2; part++) /* q, then k */
                for (int h = 0; h < heads; h++) {
                    float *u = qkv + ((long)b * tokens + t) * 3 * D + (long)part * D + h * 64;
                    for (int j = 0; j < 32; j++) {
                        const double lo = u[j], hi = u[j + 32];
                        u[j] = (float)(lo * c[j] - hi * s[j]);
                        u[j + 32] = (float)(hi * c[j] + lo * s[j]);
                    }
                }
        }
}
