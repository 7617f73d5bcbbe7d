/* A tiny 5 × 7 bitmap font of our own for the PNG's labels (no font files: clusters are offline).
 * Upper-case letters, digits and the punctuation the labels use; lower case is drawn as upper case
 * and anything else as '?'. */
#ifndef STOPCAL_EXPLAIN_FONT_H
#define STOPCAL_EXPLAIN_FONT_H

#include <stdint.h>

#define EXPLAIN_FONT_W 5
#define EXPLAIN_FONT_H 7

/* Row r (0 = top) of character c's glyph: bit 4 is the leftmost column. */
uint8_t explain_font_row(char c, int r);

/* Draw text into an RGB image (w × h, 3 bytes per pixel, rows top first) at (x, y) = the glyphs'
 * top-left corner, each font pixel as a scale × scale square, one blank font column between
 * characters. Clipped to the image. Returns the x after the last character. */
int explain_font_draw(uint8_t *rgb, int w, int h, int x, int y, const char *text, int scale,
                      const uint8_t colour[3]);

/* Width in pixels that explain_font_draw takes for text at scale. */
int explain_font_width(const char *text, int scale);

#endif
