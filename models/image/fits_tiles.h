/* A guard in front of cfitsio's tile decompression. cfitsio 4.2's Rice decoder trusts the compressed
 * stream: a corrupt tile makes it read past the end of its buffer (a crash, found by our fuzzer). So
 * before cfitsio sees a tile-compressed image, every Rice tile is walked here with bounds checks, and
 * compression types we do not guard (HCOMPRESS_1, PLIO_1) are refused. */
#ifndef STOPCAL_FITS_TILES_H
#define STOPCAL_FITS_TILES_H

#include <fitsio.h>
#include <stddef.h>
#include <stdint.h>

/* Check the tile-compressed image in the current HDU of f: ZCMPTYPE is RICE_1, GZIP_1, GZIP_2 or
 * NOCOMPRESS, and each Rice tile decodes to exactly its pixel count inside its bytes. Returns
 * IMAGE_OK, or IMAGE_EINVAL / IMAGE_ENOMEM with a message. Allocates one tile's bytes of scratch. */
int fits_tiles_check(fitsfile *f, char *err, size_t errlen);

/* Decode one Rice-coded tile (FITS tiled-image convention: first value raw, then blocks of `blocksize`
 * differences, each block led by a code of 3/4/5 bits for 1/2/4-byte pixels) into out (npix values,
 * may be NULL to only check). Returns 0, or -1 when the stream ends early or is malformed. */
int fits_rice_decode(const unsigned char *c, size_t len, int64_t npix, int blocksize, int bytepix, int32_t *out);

#endif
