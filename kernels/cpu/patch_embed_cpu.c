/* Patch embedding on the CPU: gather, one sgemm straight into the token rows, then bias, position
 * and the CLS/register rows. Registers carry no positional embedding (they are inserted after it
 * is added, as DINOv2 does). */
#include "patch_embed.h"

#include <cblas.h>
#include <string.h>

size_t patch_embed_scratch_floats_cpu(int batch, int image_size, int patch_size)
{
    size_t g = (size_t)(image_size / patch_size);
    return (size_t)batch * g * g * 3 * (size_t)patch_size * (size_t)patch_size;
}

void patch_gather_cpu(float *patches, const float *pixels, int batch, int image_size, int patch_size)
{
    const int S = image_size, P = patch_size, g = S / P, row_len = 3 * P * P;
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < batch; b++)
        for (int py = 0; py < g; py++)
            for (int px = 0; px < g; px++) {
                float *row = patches + ((long)(b * g + py) * g + px) * row_len;
                for (int c = 0; c < 3; c++)
                    for (int ky = 0; ky < P; ky++)
                        memcpy(row + (c * P + ky) * P,
                               pixels + (((long)b * 3 + c) * S + py * P + ky) * S + px * P,
                               (size_t)P * sizeof(float));
            }
}

void patch_embed_tokens_cpu(float *x, const float *bias, const float *cls_token, const float *registers,
                            const float *pos, int batch, int grid, int dim, int num_registers)
{
    const int T = 1 + num_registers + grid * grid;
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < batch; b++)
        for (int t = 0; t < T; t++) {
            float *row = x + ((long)b * T + t) * dim;
            if (t == 0) {
                for (int i = 0; i < dim; i++)
                    row[i] = pos ? cls_token[i] + pos[i] : cls_token[i];
            } else if (t <= num_registers) {
                memcpy(row, registers + (long)(t - 1) * dim, (size_t)dim * sizeof(float));
            } else { /* (row + bias) + pos, each term where there is one */
                const float *p = pos ? pos + (long)(t - num_registers) * dim : NULL;
                if (bias)
                    for (int i = 0; i < dim; i++)
                        row[i] = row[i] + bias[i];
                if (p)
                    for (int i = 0; i < dim; i++)
                        row[i] = row[i] + p[i];
            }
        }
}

void patch_embed_forward_cpu(float *x, const float *pixels, const float *weight, const float *bias,
                             const float *cls_token, const float *registers, const float *pos,
                             int batch, int image_size, int patch_size, int dim, int num_registers,
                             float *scratch)
{
    const int g = image_size / patch_size, n_patches = g * g, K = 3 * patch_size * patch_size;
    const int T = 1 + num_registers + n_patches;
    patch_gather_cpu(scratch, pixels, batch, image_size, patch_size);
    for (int b = 0; b < batch; b++) {
        float *tokens = x + (long)b * T * dim;
        /* Patch rows land directly after CLS and the registers (ldc = dim, contiguous). */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n_patches, dim, K, 1.0f,
                    scratch + (long)b * n_patches * K, K, weight, K, 0.0f,
                    tokens + (long)(1 + num_registers) * dim, dim);
    }
    patch_embed_tokens_cpu(x, bias, cls_token, registers, pos, batch, g, dim, num_registers);
}
