/* image_decode: gzip (if any) → header walk and checks (fits_layout) → tile checks for compressed
 * images (fits_tiles) → cfitsio's memory driver reads the pixels as float or double, applying
 * BSCALE/BZERO and turning BLANK into NaN. cfitsio only ever sees our buffer under a fixed name: no file
 * name, no extended-filename syntax, no disk. */
#include <fitsio.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "fits_layout.h"
#include "error_message.h"
#include "fits_tiles.h"
#include "gzip_inflate.h"
#include "image.h"
#include "image_internal.h"

/* The name cfitsio records for the memory file. ffomem parses it for an extension or filter
 * specification, so it must be a constant without brackets, never anything a client sent. */
#define MEMFILE_NAME "stopcal-memory.fits"

static pthread_once_t reentrant_once = PTHREAD_ONCE_INIT;
static int reentrant;
static pthread_mutex_t cfitsio_lock = PTHREAD_MUTEX_INITIALIZER;

static void check_reentrant(void) { reentrant = fits_is_reentrant(); }

int image_decoder_is_reentrant(void)
{
    pthread_once(&reentrant_once, check_reentrant);
    return reentrant;
}

int image_cfitsio_begin(void)
{
    int serialise = !image_decoder_is_reentrant();
    if (serialise)
        pthread_mutex_lock(&cfitsio_lock);
    return serialise;
}

void image_cfitsio_end(int serialised)
{
    if (serialised)
        pthread_mutex_unlock(&cfitsio_lock);
}

struct image_limits image_limits_default(void)
{
    struct image_limits l = {IMAGE_DEFAULT_MAX_BYTES, IMAGE_DEFAULT_MAX_PIXELS};
    return l;
}

void image_free(struct image *img)
{
    if (!img)
        return;
    free(img->pixels);
    memset(img, 0, sizeof *img);
}

static int cfitsio_fail(char *err, size_t errlen, const char *what, int status)
{
    char text[FLEN_STATUS];
    fits_get_errstatus(status, text); /* a table lookup: thread-safe, unlike the message stack */
    return error_set(err, errlen, status == MEMORY_ALLOCATION ? IMAGE_ENOMEM : IMAGE_EINVAL,
                      "%s: cfitsio error %d (%s)", what, status, text);
}

/* BSCALE or BZERO of the current HDU, or its default when absent. */
static int read_scale_key(fitsfile *f, const char *name, double fallback, double *value, int *status)
{
    *value = fallback;
    if (fits_read_key(f, TDOUBLE, name, value, NULL, status) == KEY_NO_EXIST) {
        *status = 0;
        *value = fallback;
    }
    return *status;
}

/* Read the image lay describes from a FITS file in memory. */
static int read_pixels(struct image *img, const struct fits_layout *lay, const unsigned char *buf, size_t len,
                       char *err, size_t errlen)
{
    /* ffomem keeps pointers to these two until the file is closed; cfitsio opened READONLY never writes
     * through them, so dropping const here is safe. */
    void *mem = (void *)buf;
    size_t memsize = len;
    fitsfile *f = NULL;
    void *pixels = NULL;
    int status = 0, rc = IMAGE_OK, hdutype = 0;
    int serialise = !image_decoder_is_reentrant();
    if (serialise)
        pthread_mutex_lock(&cfitsio_lock);

    if (fits_open_memfile(&f, MEMFILE_NAME, READONLY, &mem, &memsize, 0, NULL, &status)) {
        rc = cfitsio_fail(err, errlen, "cannot open the FITS data", status);
        f = NULL;
        goto out;
    }
    if (lay->hdu != 1 && fits_movabs_hdu(f, lay->hdu, &hdutype, &status)) {
        rc = cfitsio_fail(err, errlen, "cannot move to the image HDU", status);
        goto out;
    }
    /* cfitsio must see the image our header walk checked; anything else is a header we misread. */
    int bitpix = 0, naxis = 0;
    LONGLONG naxes[FITS_MAX_AXES];
    if (fits_get_img_type(f, &bitpix, &status) || fits_get_img_dim(f, &naxis, &status)) {
        rc = cfitsio_fail(err, errlen, "cannot read the image header", status);
        goto out;
    }
    if (naxis != lay->naxis || bitpix != lay->bitpix) {
        rc = error_set(err, errlen, IMAGE_EINVAL, "inconsistent header: cfitsio reads BITPIX = %d, NAXIS = %d",
                        bitpix, naxis);
        goto out;
    }
    if (fits_get_img_sizell(f, naxis, naxes, &status)) {
        rc = cfitsio_fail(err, errlen, "cannot read the image size", status);
        goto out;
    }
    LONGLONG first[FITS_MAX_AXES];
    uint64_t total = 1;
    for (int i = 0; i < naxis; i++) {
        first[i] = 1;
        if (naxes[i] < 1 || __builtin_mul_overflow(total, (uint64_t)naxes[i], &total))
            total = 0;
    }
    if (total != lay->pixels) {
        rc = error_set(err, errlen, IMAGE_EINVAL, "inconsistent header: cfitsio reads a different image size");
        goto out;
    }

    if (lay->compressed) { /* cfitsio's Rice decoder trusts its input: check every tile first */
        rc = fits_tiles_check(f, err, errlen);
        if (rc != IMAGE_OK)
            goto out;
    }

    /* float storage when every value is exactly a float: unscaled BITPIX -32, 8 or 16. */
    double bscale = 1.0, bzero = 0.0;
    if (!lay->compressed && (read_scale_key(f, "BSCALE", 1.0, &bscale, &status) ||
                             read_scale_key(f, "BZERO", 0.0, &bzero, &status))) {
        rc = cfitsio_fail(err, errlen, "cannot read BSCALE/BZERO", status);
        goto out;
    }
    int f32 = !lay->compressed && (bitpix == FLOAT_IMG || bitpix == BYTE_IMG || bitpix == SHORT_IMG) &&
              bscale == 1.0 && bzero == 0.0;
    size_t esize = f32 ? sizeof(float) : sizeof(double);
    pixels = image_alloc_large((size_t)lay->pixels * esize);
    if (!pixels) {
        rc = error_set(err, errlen, IMAGE_ENOMEM, "out of memory for %llu pixels", (unsigned long long)lay->pixels);
        goto out;
    }
    /* Undefined pixels: integer BLANK values (and the nulls of compressed tiles) become NaN through
     * nulval. IEEE NaN in a float image is NaN already; without nulval cfitsio skips its per-pixel
     * null test and only copies and swaps. */
    int want_nulls = lay->compressed || bitpix > 0;
    float nul32 = NAN;
    double nul64 = NAN;
    void *nulval = want_nulls ? (f32 ? (void *)&nul32 : (void *)&nul64) : NULL;
    int anynul = 0;
    if (fits_read_pixll(f, f32 ? TFLOAT : TDOUBLE, first, (LONGLONG)lay->pixels, nulval, pixels, &anynul,
                        &status)) {
        rc = cfitsio_fail(err, errlen,
                          lay->compressed ? "cannot decompress the tile-compressed image" : "cannot read the pixels",
                          status);
        goto out;
    }
    img->dtype = f32 ? IMAGE_F32 : IMAGE_F64;
out:
    if (f) {
        int close_status = 0;
        fits_close_file(f, &close_status);
    }
    if (serialise)
        pthread_mutex_unlock(&cfitsio_lock);
    if (rc != IMAGE_OK) {
        free(pixels);
        return rc;
    }
    img->pixels = pixels;
    img->width = lay->width;
    img->height = lay->height;
    img->bitpix = lay->bitpix;
    img->hdu = lay->hdu;
    img->compressed = lay->compressed;
    return IMAGE_OK;
}

/* cfitsio reads whole 2880-byte records, including the last one of a file whose final record was cut
 * short (no padding after the data, which astropy accepts): it would read past the end of our buffer.
 * Such files are given to it in a copy padded with zeros to whole records. */
static int read_pixels_padded(struct image *img, const struct fits_layout *lay, const unsigned char *buf,
                              size_t len, char *err, size_t errlen)
{
    size_t rem = len % FITS_BLOCK;
    if (rem == 0)
        return read_pixels(img, lay, buf, len, err, errlen);
    size_t padded_len = len + (FITS_BLOCK - rem);
    unsigned char *padded = image_alloc_large(padded_len);
    if (!padded)
        return error_set(err, errlen, IMAGE_ENOMEM, "out of memory for %zu bytes", padded_len);
    memcpy(padded, buf, len);
    memset(padded + len, 0, padded_len - len);
    int rc = read_pixels(img, lay, padded, padded_len, err, errlen);
    free(padded);
    return rc;
}

int image_decode(struct image *img, const void *bytes, size_t len, const struct image_limits *limits,
                 char *err, size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    memset(img, 0, sizeof *img);
    struct image_limits lim = limits ? *limits : image_limits_default();
    if (!bytes || len == 0)
        return error_set(err, errlen, IMAGE_EINVAL, "empty input: 0 bytes");
    if (len > lim.max_bytes)
        return error_set(err, errlen, IMAGE_ETOOBIG, "input of %zu bytes is over the ceiling of %zu bytes", len,
                          lim.max_bytes);
    const unsigned char *buf = bytes;
    unsigned char *inflated = NULL;
    int gz = gzip_is_gzip(bytes, len);
    if (gz) {
        size_t n = 0;
        int rc = gzip_inflate(bytes, len, lim.max_bytes, &inflated, &n, err, errlen);
        if (rc != IMAGE_OK)
            return rc;
        if (n == 0) {
            free(inflated);
            return error_set(err, errlen, IMAGE_EINVAL, "empty input: the gzip data inflates to 0 bytes");
        }
        buf = inflated;
        len = n;
    }
    struct fits_layout lay;
    int rc = fits_layout_scan(&lay, buf, len, &lim, err, errlen);
    if (rc == IMAGE_OK)
        rc = read_pixels_padded(img, &lay, buf, len, err, errlen);
    if (rc == IMAGE_OK && gz)
        img->compressed |= 2;
    free(inflated);
    return rc;
}
