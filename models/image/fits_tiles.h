/* A guard in front of cfitsio's tile decompression, which trusts the compressed bytes (cfitsio 4.2, found
 * by our fuzzer): a corrupt Rice tile makes it read far past its buffer (a crash), and a gzip tile is
 * inflated into a buffer that grows without bound (a gzip bomb per tile). So before cfitsio sees a
 * tile-compressed image, every Rice tile is walked here with bounds checks, every gzip tile inflated
 * into a scratch and its size checked, and codecs we do not guard (HCOMPRESS_1, PLIO_1, NOCOMPRESS) are
 * refused. */
#ifndef STOPCAL_FITS_TILES_H
#define STOPCAL_FITS_TILES_H

#include <fitsio.h>
#include <stddef.h>
#include <stdint.h>

/* Check the tile-compressed image in the current HDU of f: ZCMPTYPE is RICE_1, GZIP_1 or GZIP_2; each
 * tile's bytes lie in the heap; each Rice tile decodes to its pixel count inside its bytes; each gzip
 * tile (main column or GZIP_COMPRESSED_DATA) inflates to exactly its pixels (|ZBITPIX|/8 bytes each, or
 * 4 for quantised floats), never more; each UNCOMPRESSED_DATA tile holds exactly its pixels. Returns
 * IMAGE_OK, or IMAGE_EINVAL / IMAGE_ENOMEM with a message. Allocates one tile's compressed bytes of
 * scratch. */
int fits_tiles_check(fitsfile *f, char *err, size_t errlen);

/* Decode one Rice-coded tile (FITS tiled-image convention: first value raw, then blocks of `blocksize`
 * differences, each block led by a code of 3/4/5 bits for 1/2/4-byte pixels) into out (npix values,
 * may be NULL to only check). Returns 0, or -1 when the stream ends early or is malformed. */
int fits_rice_decode(const unsigned char *c, size_t len, int64_t npix, int blocksize, int bytepix, int32_t *out);

#endif
