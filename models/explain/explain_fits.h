/* The attention map as a FITS image on the input's own pixel grid, carrying the input's celestial
 * WCS so that it overlays the input exactly in DS9 or CARTA. */
#ifndef STOPCAL_EXPLAIN_FITS_H
#define STOPCAL_EXPLAIN_FITS_H

#include <stddef.h>
#include <stdint.h>

/* What the map is, written as header keywords beside the WCS. */
struct explain_fits_meta {
    const char *model, *sha256;
    const char *map;       /* "CLS-LAST" (last block, CLS → patches) or "ROLLOUT" */
    const char *heads;     /* "MEAN" or "ALL" (one plane per head) */
    double continue_score, threshold;
    const char *decision;  /* "stop" / "continue" */
    int grid, num_heads, num_registers;
    double cls_self;       /* mean over heads of the CLS token's attention to itself */
    double patch_sum;      /* mean over heads of the attention on all patches together */
    const double *registers; /* (num_registers) mean over heads of CLS → register r; NULL if none */
};

/* Write planes (n_planes × height × width floats, x fastest: FITS order NAXIS1 = width, NAXIS2 =
 * height, NAXIS3 = n_planes when > 1) as a FITS file in memory. input/input_len: the FITS file the
 * map was made from (gzip allowed, inflated under max_bytes), input_hdu its 1-based HDU holding the
 * image (struct image.hdu): the celestial WCS keywords of the two axes the image spans there
 * (CTYPE, CUNIT, CRVAL, CDELT, CRPIX, CROTA, CNAME, PCi_j, CDi_j, PVi_m, renumbered to axes 1 and 2)
 * and the frame keywords (RADESYS, EQUINOX, LONPOLE, LATPOLE, DATE-OBS, MJD-OBS, ...) are copied
 * card for card. On 0, *out is a malloc'd buffer of *out_len bytes (whole 2880-byte records);
 * on -1, err says why (and *out is NULL). */
int explain_fits_write(const float *planes, int n_planes, int64_t width, int64_t height,
                       const void *input, size_t input_len, size_t max_bytes, int input_hdu,
                       const struct explain_fits_meta *meta, unsigned char **out, size_t *out_len,
                       char *err, size_t errlen);

/* The new name of an input header keyword when the image's axes a and b become axes 1 and 2, into
 * out (at least 16 bytes): 1 and out filled when the keyword is one of the WCS or frame keywords
 * copied, 0 when it is not copied. For the tests of the renumbering. */
int explain_wcs_rename(const char *key, int a, int b, char *out);

#endif
