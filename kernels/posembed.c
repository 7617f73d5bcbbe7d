/* Positional-embedding resize. The two modes are exactly the two call sites DINOv2 has:
 * register models ask interpolate() for a size with antialias on (PyTorch then uses its separable
 * Keys a=-0.5 filter, even when upsampling); the others pass scale_factor=(g+0.1)/G with the
 * plain bicubic (A=-0.75), whose source coordinates follow the scale factor, not g/G. */
#include "posembed.h"

#include "resample.h"

#include <stdlib.h>
#include <string.h>

int pos_embed_resize(float *out, const float *pos, int stored_grid, int grid, int dim,
                     enum model_pos_interp mode)
{
    const int G = stored_grid, g = grid;
    memcpy(out, pos, (size_t)dim * sizeof(float)); /* the CLS position is never resized */
    if (g == G) {
        memcpy(out + dim, pos + dim, (size_t)G * G * dim * sizeof(float));
        return 0;
    }
    float *planes_in = malloc((size_t)dim * G * G * sizeof(float));
    float *planes_out = malloc((size_t)dim * g * g * sizeof(float));
    int rc = -1;
    if (!planes_in || !planes_out)
        goto done;
    /* (G², D) token-major → (D, G, G) planes, as DINOv2's reshape + permute(0, 3, 1, 2). */
    for (int p = 0; p < G * G; p++)
        for (int d = 0; d < dim; d++)
            planes_in[(size_t)d * G * G + p] = pos[(size_t)(1 + p) * dim + d];
    double scale = mode == MODEL_POS_BICUBIC_SCALE_FACTOR ? (g + 0.1) / G : 0.0;
    enum resample_mode rm = mode == MODEL_POS_BICUBIC_SCALE_FACTOR ? RESAMPLE_BICUBIC : RESAMPLE_BICUBIC_AA;
    if (resample2d_f32(planes_out, planes_in, dim, G, G, g, g, scale, scale, rm) != 0)
        goto done;
    for (int p = 0; p < g * g; p++)
        for (int d = 0; d < dim; d++)
            out[(size_t)(1 + p) * dim + d] = planes_out[(size_t)d * g * g + p];
    rc = 0;
done:
    free(planes_in);
    free(planes_out);
    return rc;
}
