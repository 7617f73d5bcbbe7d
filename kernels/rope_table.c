/* The RoPE table (rope_table.h). */
#include "rope_table.h"

#include <math.h>

void rope_table_compute(float *out, const float *periods, int grid_h, int grid_w)
{
    const float two_pi = (float)(2.0 * M_PI);
    for (int i = 0; i < grid_h; i++)
        for (int j = 0; j < grid_w; j++) {
            /* arange(0.5, n) / n, then 2·c − 1, all in fp32 */
            const float ch = 2.0f * ((float)i + 0.5f) / (float)grid_h - 1.0f;
            const float cw = 2.0f * ((float)j + 0.5f) / (float)grid_w - 1.0f;
            float *row = out + ((long)i * grid_w + j) * 64;
            for (int k = 0; k < 32; k++) {
                const float coord = k < 16 ? ch : cw;
                const float a = two_pi * coord / periods[k % 16];
                row[k] = (float)cos((double)a);
                row[32 + k] = (float)sin((double)a);
            }
        }
}
