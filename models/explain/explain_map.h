/* Attention maps on the sky: the patch grid the engine returns, turned into the input image's own
 * orientation and pixel grid, then written as FITS (with the input's celestial WCS) or drawn as a PNG.
 *
 * Orientations. The engine's grid is in token order: token 1 + R + r·g + c is the patch at tensor row
 * r, column c, and the model's tensor is the transpose of the image (models/image/preprocess.c), so
 * tensor row r runs along the image's x axis (NAXIS1) and column c along y (NAXIS2). Everything this
 * library hands out is in image order instead: grid[iy·g + ix], ix along x, iy along y, pixel (1,1)
 * of the FITS image in grid cell (0,0). */
#ifndef STOPCAL_EXPLAIN_MAP_H
#define STOPCAL_EXPLAIN_MAP_H

#include <stddef.h>
#include <stdint.h>

/* out[iy·g + ix] = tok[ix·g + iy]: token order → image order (a transpose). out ≠ tok. */
void explain_grid_to_image(const float *tok, int g, float *out);

/* The patch (0 ≤ p < g) whose tensor pixels an input pixel index x (0 ≤ x < n) is resized into:
 * the preprocessing's resizes (bilinear, antialiased bilinear, or none when n = S) all map output
 * pixel i onto input centre (i + ½)·n/S − ½, so patch p = ⌊(x + ½)·g / n⌋ owns the input pixels
 * whose centres fall in its P output pixels. Exact integer arithmetic. */
int explain_patch_of(int64_t x, int64_t n, int g);

/* out (height, width) ← grid (g × g, image order) back-projected onto the input's pixel grid: every
 * pixel takes the value of the patch it was resized into (piecewise constant, so the map's total per
 * patch is the patch's value times its pixel count and nothing is invented between patches). */
void explain_backproject(const float *grid, int g, int64_t width, int64_t height, float *out);

#endif
