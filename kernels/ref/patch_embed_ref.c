/* Reference patch embedding (ref_ops.h): the strided convolution written out. */
#include "ref_ops.h"

void patch_embed_forward_ref(float *x, const float *pixels, const float *weight, const float *bias,
                             const float *cls_token, const float *registers, const float *pos,
                             int batch, int image_size, int patch_size, int dim, int num_registers)
{
    const int S = image_size, P = patch_size, g = S / P, R = num_registers;
    const long T = 1 + R + (long)g * g;
    for (int b = 0; b < batch; b++) {
        float *img = x + b * T * dim;
        for (int d = 0; d < dim; d++)
            img[d] = pos ? cls_token[d] + pos[d] : cls_token[d];
        for (int r = 0; r < R; r++)
            for (int d = 0; d < dim; d++)
                img[(1 + r) * dim + d] = registers[r * dim + d];
        for (int p = 0; p < g * g; p++) {
            const int py = p / g, px = p % g;
            for (int d = 0; d < dim; d++) {
                double acc = bias[d];
                for (int c = 0; c < 3; c++)
                    for (int ky = 0; ky < P; ky++)
                        for (int kx = 0; kx < P; kx++)
                            acc += (double)weight[(((long)d * 3 + c) * P + ky) * P + kx] *
                                   pixels[(((long)b * 3 + c) * S + py * P + ky) * S + px * P + kx];
                img[(1 + R + p) * dim + d] = (float)(acc + (pos ? pos[(1 + p) * dim + d] : 0));
            }
        }
    }
}
