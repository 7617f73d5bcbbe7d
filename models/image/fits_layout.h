/* Walks the HDU chain of a FITS file in memory, reading only the mandatory keywords, to find the image
 * to decode and to check it (BITPIX, NAXIS, sizes without overflow, 2-D after dropping degenerate
 * axes, data present, ceilings, no duplicated structural keyword) before cfitsio parses anything or a
 * pixel buffer exists. Its messages name the keyword at fault, which cfitsio's status codes cannot. */
#ifndef STOPCAL_FITS_LAYOUT_H
#define STOPCAL_FITS_LAYOUT_H

#include <stddef.h>
#include <stdint.h>

#include "image.h"

#define FITS_BLOCK 2880
#define FITS_CARD 80
#define FITS_MAX_AXES 999
#define FITS_LAYOUT_MAX_HDUS 64 /* extensions searched for an image before giving up */
#define FITS_MAX_ZPARAMS 99     /* ZNAMEn/ZVALn compression parameters accepted */

struct fits_layout {
    int hdu;               /* 1-based HDU holding the image */
    int compressed;        /* 1: a tile-compressed image (BINTABLE with ZIMAGE = T) */
    int bitpix;            /* BITPIX, or ZBITPIX when compressed */
    int naxis;             /* NAXIS, or ZNAXIS */
    int64_t width, height; /* the two non-degenerate axes, in axis order */
    uint64_t pixels;       /* width × height */
    size_t data_start;     /* byte offset of the HDU's data */
    size_t data_bytes;     /* declared size of the HDU's data (unpadded) */
};

/* Find and check the image in buf. Returns IMAGE_OK with lay filled, IMAGE_EINVAL (not FITS, bad or
 * truncated header, no image, not 2-D, truncated data) or IMAGE_ETOOBIG (pixel or tile ceiling), with
 * a message in err. Reads buf only; allocates one small scratch header, freed before returning. */
int fits_layout_scan(struct fits_layout *lay, const unsigned char *buf, size_t len,
                     const struct image_limits *limits, char *err, size_t errlen);

#endif
