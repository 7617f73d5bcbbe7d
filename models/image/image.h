/* FITS ingestion: bytes in memory (optionally gzip-compressed) → one 2-D float64 image, under
 * ceilings on bytes and pixels that are checked before anything is allocated. Decoding goes through
 * cfitsio's memory driver only (fits_open_memfile with a fixed internal name), so neither the
 * extended-filename syntax nor the disk is ever involved; image_read_file reads a file by name with
 * plain open()/read(), whatever characters that name holds.
 *
 * Thread safety: every function here may be called from several threads at once. cfitsio is used
 * concurrently when it was built reentrant (fits_is_reentrant(), true for Debian's libcfitsio10);
 * otherwise this library serialises its cfitsio calls behind one mutex. */
#ifndef STOPCAL_IMAGE_H
#define STOPCAL_IMAGE_H

#include <stddef.h>
#include <stdint.h>

/* Return codes of every image_* and preprocess_* function. */
enum image_status {
    IMAGE_OK = 0,
    IMAGE_EINVAL = -1,  /* the input is not a usable image (not FITS, truncated, not 2-D, rms = 0…): 400 */
    IMAGE_ETOOBIG = -2, /* over the byte or pixel ceiling (compressed or decompressed): 413 */
    IMAGE_ENOMEM = -3,  /* an allocation failed: the caller may retry later (503) */
    IMAGE_EIO = -4,     /* image_read_file could not open or read the file */
    IMAGE_ECONFIG = -5, /* the preprocessing configuration is invalid: a caller or model-file bug */
};

/* Ceilings, checked at the earliest point that knows the number: max_bytes against the input length
 * and, for gzip, while inflating (the output never grows past max_bytes + 1); max_pixels against the
 * header's dimensions (and a tile-compressed image's tile size) before the pixel buffer exists. */
struct image_limits {
    size_t max_bytes;    /* input bytes, and decompressed bytes of a gzip body */
    uint64_t max_pixels; /* NAXIS1 × NAXIS2 × … of the image read */
};

#define IMAGE_DEFAULT_MAX_BYTES ((size_t)1 << 30)        /* 1 GiB */
#define IMAGE_DEFAULT_MAX_PIXELS ((uint64_t)8192 * 8192) /* 512 MiB as float64 */

/* The defaults above. */
struct image_limits image_limits_default(void);

/* How a decoded image's pixels are stored. float when that is exact (every value of a BITPIX −32 image,
 * or of an unscaled BITPIX 8 or 16 one, is a float), which halves the memory every later pass reads;
 * double otherwise. Either way the preprocessing computes in double. */
enum image_dtype { IMAGE_F64 = 0, IMAGE_F32 = 1 };

/* A decoded image: BSCALE/BZERO applied, BLANK (and IEEE NaN) pixels as NaN, Inf kept, degenerate axes
 * dropped. Pixel (x, y) is element y * width + x: x runs along the first remaining FITS axis (NAXIS1 for
 * a plain image), y along the second; this is numpy's (height, width) view of the same data. */
struct image {
    void *pixels;           /* (height, width) floats or doubles (dtype), owned: release with image_free */
    enum image_dtype dtype;
    int64_t width;          /* length of the first non-degenerate axis */
    int64_t height;         /* length of the second non-degenerate axis */
    int bitpix;             /* BITPIX as stored (ZBITPIX for a tile-compressed image) */
    int hdu;                /* 1-based HDU the pixels came from */
    int compressed;         /* bit 0: tile-compressed image (.fits.fz); bit 1: the bytes were gzip */
};

/* Pixel i (row-major) as a double, whatever the storage. */
static inline double image_pixel(const struct image *img, size_t i)
{
    return img->dtype == IMAGE_F32 ? (double)((const float *)img->pixels)[i] : ((const double *)img->pixels)[i];
}

/* Decode bytes (a FITS file, or a gzip-compressed one) into img. Takes the primary HDU, or the first
 * image extension (tile-compressed images included) when the primary holds no data. limits may be
 * NULL (defaults). bytes are only read; the caller keeps them.
 * Returns IMAGE_OK with img filled (free it with image_free), or an error code with a message naming
 * the problem in err (err may be NULL; errlen bytes, always NUL-terminated) and img zeroed. */
int image_decode(struct image *img, const void *bytes, size_t len, const struct image_limits *limits,
                 char *err, size_t errlen);

/* Release img->pixels and zero img. Safe on a zeroed or already-freed image. */
void image_free(struct image *img);

/* Read a whole file with open()/read(). The name is used verbatim: "x.fits[1][col X=1]" is a file
 * called exactly that. Files longer than max_bytes are refused (IMAGE_ETOOBIG) before (regular files)
 * or while (pipes, devices) reading. On success *bytes is a malloc'd buffer of *len bytes that the
 * caller frees with free(). Errors: IMAGE_EIO (with strerror text), IMAGE_ETOOBIG, IMAGE_ENOMEM;
 * *bytes is then NULL. */
int image_read_file(const char *path, size_t max_bytes, unsigned char **bytes, size_t *len, char *err,
                    size_t errlen);

/* 1 when cfitsio is used concurrently (it was built reentrant), 0 when calls are serialised. */
int image_decoder_is_reentrant(void);

/* For other code of this project that calls cfitsio (the attention-map writer): bracket the calls
 * with these so that they are serialised with the decoder's when cfitsio is not reentrant.
 * image_cfitsio_begin returns what image_cfitsio_end must be given. */
int image_cfitsio_begin(void);
void image_cfitsio_end(int serialised);

#endif
