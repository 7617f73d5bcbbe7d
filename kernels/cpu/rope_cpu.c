/* RoPE on the CPU: one pass over the q and k halves of each rotated token, threads over tokens.
 * Memory-bound and a few percent of a block's work, so plain C the compiler vectorises; products
 * and the difference are rounded separately (no FMA contraction in ISO C mode), as torch computes
 * q·cos + rotate_half(q)·sin. */
#include "rope_cpu.h"

void rope_forward_cpu(float *qkv, const float *table, int batch, int tokens, int heads, int prefix)
{
    const int D = heads * 64, n = tokens - prefix;
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < batch; b++)
        for (int i = 0; i < n; i++) {
            const float *c = table + (long)i * 64, *s = c + 32;
            float *row = qkv + ((long)b * tokens + prefix + i) * 3 * D;
            for (int h = 0; h < 2 * heads; h++) { /* q heads then k heads: contiguous */
                float *u = row + h * 64;
                for (int j = 0; j < 32; j++) {
                    const float lo = u[j], hi = u[j + 32];
                    const float a = lo * c[j], bb = hi * s[j], e = hi * c[j], f = lo * s[j];
                    u[j] = a - bb;
                    u[j + 32] = e + f;
                }
            }
        }
}
