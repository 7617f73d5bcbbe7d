/* Unit checks of the explain library's pieces that the end-to-end tests reach only in part: the
 * WCS keyword renumbering (axes 3 and 4 of a 4-D image becoming 1 and 2), the patch of each input
 * pixel against the resize's own sampling positions, the font, and bad arguments. */
#include "../check.h"

#include "explain_fits.h"
#include "explain_font.h"
#include "explain_map.h"
#include "explain_png.h"

#include <string.h>

static void rename_case(const char *key, int a, int b, const char *want)
{
    char out[16] = "";
    int kept = explain_wcs_rename(key, a, b, out);
    if (want)
        CHECK(kept && strcmp(out, want) == 0, "%s (axes %d,%d) -> %s, want %s", key, a, b, kept ? out : "-", want);
    else
        CHECK(!kept, "%s (axes %d,%d) should not be copied, got %s", key, a, b, out);
}

int main(void)
{
    rename_case("CTYPE1", 1, 2, "CTYPE1");
    rename_case("CRVAL3", 3, 4, "CRVAL1");
    rename_case("CDELT4", 3, 4, "CDELT2");
    rename_case("CRPIX1", 3, 4, NULL);
    rename_case("CTYPE3", 1, 2, NULL);
    rename_case("PC3_4", 3, 4, "PC1_2");
    rename_case("PC1_3", 1, 2, NULL);
    rename_case("CD2_1", 1, 2, "CD2_1");
    rename_case("PV2_1", 1, 2, "PV2_1");
    rename_case("PV2_0", 1, 2, "PV2_0");
    rename_case("PV3_1", 1, 2, NULL);
    rename_case("CROTA2", 1, 2, "CROTA2");
    rename_case("RADESYS", 1, 2, "RADESYS");
    rename_case("DATE-OBS", 1, 2, "DATE-OBS");
    rename_case("CTYPE", 1, 2, NULL);
    rename_case("CTYPE1A", 1, 2, NULL); /* alternate descriptions are not copied */
    rename_case("NAXIS1", 1, 2, NULL);
    rename_case("BUNIT", 1, 2, NULL);
    rename_case("PCX_1", 1, 2, NULL);

    /* The patch of input pixel x: the output pixels i the resize maps onto input centre
     * (i + ½)·n/S − ½ nearest to x lie in that patch (S = g·P), for every x, n up and down. */
    const int g = 8, P = 14, S = g * P;
    int bad = 0;
    for (int n = 1; n <= 700; n += 13)
        for (int x = 0; x < n; x++) {
            /* first output pixel whose sampling position is at or past x's centre */
            double best = 1e30;
            int best_i = 0;
            for (int i = 0; i < S; i++) {
                double d = (i + 0.5) * n / S - 0.5 - x;
                if (d < 0)
                    d = -d;
                if (d < best - 1e-12) {
                    best = d;
                    best_i = i;
                }
            }
            int p = explain_patch_of(x, n, g);
            /* Ties between two output pixels of different patches may go either way. */
            int lo = explain_patch_of(x, n, g), ok = best_i / P == p;
            if (!ok && best_i % P == 0 && (best_i / P) - 1 == lo)
                ok = 1;
            if (!ok && best_i % P == P - 1 && (best_i / P) + 1 == lo)
                ok = 1;
            bad += !ok;
        }
    CHECK(bad == 0, "%d input pixels assigned to a patch other than their nearest output pixel's", bad);

    float grid[4] = {1, 2, 3, 4}, map[15];
    explain_backproject(grid, 2, 5, 3, map); /* 5 wide: x 0,1 -> column 0; 3 high: y 0 -> row 0 */
    const float want[15] = {1, 1, 2, 2, 2, 3, 3, 4, 4, 4, 3, 3, 4, 4, 4};
    CHECK(memcmp(map, want, sizeof want) == 0, "backprojection of a 2x2 grid onto 5x3");
    float tok[4] = {1, 2, 3, 4}, img[4];
    explain_grid_to_image(tok, 2, img);
    CHECK(img[1] == 3 && img[2] == 2, "token order is the transpose of image order");

    CHECK(explain_font_row('A', 0) == 0x0e && explain_font_row('a', 3) == 0x1f, "glyph rows of A");
    CHECK(explain_font_row('~', 0) == explain_font_row('?', 0), "unknown characters draw as ?");
    CHECK(explain_font_width("AB", 2) == 22, "width of two glyphs at scale 2");

    unsigned char *out = (unsigned char *)"x";
    size_t len = 1;
    char err[128];
    CHECK(explain_png_encode(NULL, 0, 0, NULL, 0, &out, &len, err, sizeof err) == -1 && !out && len == 0,
          "a 0 x 0 PNG is refused");
    float one = 1;
    CHECK(explain_fits_write(&one, 1, 0, 1, NULL, 0, 0, 1, NULL, &out, &len, err, sizeof err) == -1 && !out,
          "a map without size or metadata is refused: %s", err);
    return test_report("test_explain_unit");
}
