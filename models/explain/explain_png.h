/* The attention map drawn over the image as a PNG: the image in the model's own stretch (the
 * SymLogNorm of the preprocessing, north up as DS9 shows it), the map as a colour overlay, a colour
 * bar, the score and the decision as text. */
#ifndef STOPCAL_EXPLAIN_PNG_H
#define STOPCAL_EXPLAIN_PNG_H

#include <stddef.h>
#include <stdint.h>

#include "image.h"

struct explain_png_meta {
    const char *model;
    double continue_score, threshold;
    const char *decision; /* "stop" / "continue" */
    const char *label;    /* what the map is, e.g. "CLS attention, last block, mean of 6 heads" */
};

/* Where the parts are drawn (pixels, origin top-left). The image box is also written into the PNG
 * as the tEXt chunk "stopcal:image-box" = "x y w h", and the bar as "stopcal:bar-box". */
struct explain_png_layout {
    int width, height;                 /* the whole PNG */
    int img_x, img_y, img_w, img_h;    /* the image, longest side EXPLAIN_PNG_SIDE */
    int bar_x, bar_y, bar_w, bar_h;    /* the colour bar: top = the map's maximum, bottom = 0 */
};

#define EXPLAIN_PNG_SIDE 512

void explain_png_layout(int64_t width, int64_t height, struct explain_png_layout *l);

/* The overlay colour for v in [0, 1] (0: dark violet, 1: pale yellow). */
void explain_png_colour(double v, uint8_t rgb[3]);

/* img: the decoded input; map: (img->height, img->width) floats, the back-projected map
 * (explain_backproject). On 0, *out is a malloc'd PNG of *out_len bytes; -1 with err otherwise
 * (an image whose stretch is undefined, out of memory, a libpng error). */
int explain_png_render(const struct image *img, const float *map, const struct explain_png_meta *meta,
                       unsigned char **out, size_t *out_len, char *err, size_t errlen);

/* rgb (h rows of w × 3 bytes, top first) → PNG bytes, with key/value tEXt chunks (n_text pairs). */
int explain_png_encode(const uint8_t *rgb, int w, int h, const char *const *text_kv, int n_text,
                       unsigned char **out, size_t *out_len, char *err, size_t errlen);

#endif
