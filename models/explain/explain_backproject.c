/* Token order → image order, and the patch grid → the input image's pixel grid (explain_map.h). */
#include "explain_map.h"

void explain_grid_to_image(const float *tok, int g, float *out)
{
    for (int iy = 0; iy < g; iy++)
        for (int ix = 0; ix < g; ix++)
            out[(size_t)iy * g + ix] = tok[(size_t)ix * g + iy];
}

int explain_patch_of(int64_t x, int64_t n, int g)
{
    /* ⌊(x + ½)·g / n⌋ = ⌊(2x + 1)·g / 2n⌋; both operands are non-negative. */
    int64_t p = ((2 * x + 1) * (int64_t)g) / (2 * n);
    return p < 0 ? 0 : p >= g ? g - 1 : (int)p;
}

void explain_backproject(const float *grid, int g, int64_t width, int64_t height, float *out)
{
    for (int64_t y = 0; y < height; y++) {
        const float *row = grid + (size_t)explain_patch_of(y, height, g) * (size_t)g;
        float *o = out + (size_t)y * (size_t)width;
        for (int64_t x = 0; x < width; x++)
            o[x] = row[explain_patch_of(x, width, g)];
    }
}
