/* Checks of every compressed tile before cfitsio decompresses it: a bounds-checked walk of Rice-coded
 * tiles (the FITS tiled-image compression convention, Pence et al. 2009; Rice coding as in Rice, Yeh &
 * Miller 1993), written from the format description, and a bounded inflate of gzip tiles. */
#include "fits_tiles.h"
#include "error_message.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "fits_layout.h"
#include "image.h"
#include "image_internal.h"

/* MSB-first bit reader over [p, p + len). */
struct bit_reader {
    const unsigned char *p;
    size_t len, next; /* next byte to load */
    uint64_t acc;     /* unread bits, left-aligned; bits past `have` are 0 */
    int have;
};

static void refill(struct bit_reader *r)
{
    while (r->have <= 56 && r->next < r->len) {
        r->acc |= (uint64_t)r->p[r->next++] << (56 - r->have);
        r->have += 8;
    }
}

/* n in [1, 32] bits as an unsigned value; -1 when the stream ends first. */
static int take(struct bit_reader *r, int n, uint32_t *v)
{
    if (r->have < n)
        refill(r);
    if (r->have < n)
        return -1;
    *v = (uint32_t)(r->acc >> (64 - n));
    r->acc <<= n;
    r->have -= n;
    return 0;
}

/* A unary code: the number of 0 bits before the next 1 bit (which is consumed too). */
static int take_unary(struct bit_reader *r, uint32_t *zeros)
{
    uint64_t count = 0;
    for (;;) {
        if (r->have == 0)
            refill(r);
        if (r->have == 0)
            return -1;
        if (r->acc == 0) { /* every buffered bit is 0 */
            count += (uint64_t)r->have;
            r->have = 0;
            if (count > UINT32_MAX)
                return -1;
            continue;
        }
        int lz = __builtin_clzll(r->acc);
        count += (uint64_t)lz;
        if (count > UINT32_MAX)
            return -1;
        r->acc <<= lz;
        r->acc <<= 1; /* the terminating 1 */
        r->have -= lz + 1;
        *zeros = (uint32_t)count;
        return 0;
    }
}

int fits_rice_decode(const unsigned char *c, size_t len, int64_t npix, int blocksize, int bytepix, int32_t *out)
{
    if (npix < 0 || blocksize < 1 || (bytepix != 1 && bytepix != 2 && bytepix != 4))
        return -1;
    const int bbits = 8 * bytepix;
    const int fsbits = bytepix == 1 ? 3 : (bytepix == 2 ? 4 : 5);
    const int fsmax = bytepix == 1 ? 6 : (bytepix == 2 ? 14 : 25);
    const uint32_t mask = bytepix == 4 ? 0xffffffffu : ((1u << bbits) - 1);
    if (len < (size_t)bytepix)
        return -1;
    /* The first pixel is stored as is, big-endian. */
    uint32_t last = 0;
    for (int i = 0; i < bytepix; i++)
        last = (last << 8) | c[i];
    struct bit_reader r = {c, len, (size_t)bytepix, 0, 0};
    for (int64_t i = 0; i < npix; i += blocksize) {
        int64_t end = i + blocksize < npix ? i + blocksize : npix;
        uint32_t code;
        if (take(&r, fsbits, &code))
            return -1;
        int fs = (int)code - 1;
        for (int64_t k = i; k < end; k++) {
            uint32_t diff;
            if (fs < 0) { /* low entropy: the block repeats the last value */
                diff = 0;
            } else if (fs == fsmax) { /* high entropy: raw differences */
                if (take(&r, bbits, &diff))
                    return -1;
            } else {
                uint32_t zeros, low = 0;
                if (take_unary(&r, &zeros) || (fs > 0 && take(&r, fs, &low)))
                    return -1;
                diff = fs > 0 ? (uint32_t)(((uint64_t)zeros << fs) | low) : zeros;
            }
            /* differences are folded to unsigned: even → positive, odd → negative */
            uint32_t d = (diff & 1) ? ~(diff >> 1) : (diff >> 1);
            last = (last + d) & mask;
            if (out) {
                if (bytepix == 1)
                    out[k] = (int32_t)last; /* unsigned bytes */
                else if (bytepix == 2)
                    out[k] = (int32_t)(int16_t)(uint16_t)last;
                else
                    out[k] = (int32_t)last;
            }
        }
    }
    return 0;
}

static int cfitsio_error(char *err, size_t errlen, const char *what, int status)
{
    char text[FLEN_STATUS];
    fits_get_errstatus(status, text);
    return error_set(err, errlen, status == MEMORY_ALLOCATION ? IMAGE_ENOMEM : IMAGE_EINVAL,
                      "%s: cfitsio error %d (%s)", what, status, text);
}

/* A keyword as an integer, or `fallback` when absent. */
static int key_ll(fitsfile *f, const char *name, long long fallback, long long *v, int *status)
{
    *v = fallback;
    if (fits_read_key(f, TLONGLONG, name, v, NULL, status) == KEY_NO_EXIST) {
        *status = 0;
        *v = fallback;
    }
    return *status;
}

/* Inflate a gzip (or zlib) tile into a small scratch, counting the bytes it makes. Returns the count
 * (at most cap), or -1 when it is corrupt, truncated or longer than cap (cfitsio would keep growing its
 * buffer: a tile can be a gzip bomb), -2 when zlib has no memory. */
static int64_t inflate_bounded(const unsigned char *c, size_t len, uint64_t cap)
{
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    if (inflateInit2(&zs, 15 + 32) != Z_OK)
        return -2;
    unsigned char scratch[16384];
    uint64_t total = 0;
    int64_t rc = -1;
    zs.next_in = (unsigned char *)c; /* zlib only reads through it */
    zs.avail_in = len > UINT32_MAX ? UINT32_MAX : (uInt)len;
    for (;;) {
        zs.next_out = scratch;
        zs.avail_out = sizeof scratch;
        int z = inflate(&zs, Z_NO_FLUSH);
        total += sizeof scratch - zs.avail_out;
        if (total > cap)
            break;
        if (z == Z_STREAM_END) {
            rc = (int64_t)total;
            break;
        }
        if (z != Z_OK)
            break; /* corrupt, or Z_BUF_ERROR: the input ended first */
    }
    inflateEnd(&zs);
    return rc;
}

enum tile_codec { TILE_RICE, TILE_GZIP, TILE_GZIP_FALLBACK, TILE_RAW_FALLBACK };

/* Read row `row` of column `col` (a variable-length array) and check it holds exactly this tile:
 * a Rice stream that decodes to npix values inside its bytes; gzip that inflates to npix values of the
 * image's width (or of 4 bytes: quantised floats) and no more; npix raw values. elem_bytes = |ZBITPIX|/8. */
static int check_tile(fitsfile *f, int col, long long row, enum tile_codec codec, long long heap, long long npix,
                      int blocksize, int bytepix, int elem_bytes, unsigned char **buf, size_t *cap, char *err,
                      size_t errlen)
{
    int status = 0, anynul = 0;
    LONGLONG length = 0, offset = 0;
    if (fits_read_descriptll(f, col, row, &length, &offset, &status))
        return cfitsio_error(err, errlen, "cannot read a tile descriptor", status);
    if (length == 0)
        return IMAGE_OK; /* the tile is in another column */
    if (codec == TILE_RAW_FALLBACK) /* elements of the column's own type; cfitsio converts them */
        return length == npix ? IMAGE_OK
                              : error_set(err, errlen, IMAGE_EINVAL,
                                           "tile %lld: %lld uncompressed values for %lld pixels", row,
                                           (long long)length, npix);
    if (length < 0 || offset < 0 || length > heap || offset > heap - length)
        return error_set(err, errlen, IMAGE_EINVAL, "tile %lld: its bytes lie outside the heap", row);
    if ((size_t)length > *cap) {
        unsigned char *grown = realloc(*buf, (size_t)length);
        if (!grown)
            return error_set(err, errlen, IMAGE_ENOMEM, "out of memory for a compressed tile");
        *buf = grown;
        *cap = (size_t)length;
    }
    if (fits_read_col(f, TBYTE, col, row, 1, length, NULL, *buf, &anynul, &status))
        return cfitsio_error(err, errlen, "cannot read a compressed tile", status);
    if (codec == TILE_RICE) {
        if (fits_rice_decode(*buf, (size_t)length, npix, blocksize, bytepix, NULL))
            return error_set(err, errlen, IMAGE_EINVAL,
                              "tile %lld: corrupt Rice-compressed data (%lld bytes do not hold its %lld pixels)", row,
                              (long long)length, npix);
        return IMAGE_OK;
    }
    int64_t z = inflate_bounded(*buf, (size_t)length, (uint64_t)npix * 8); /* no pixel is wider than 8 bytes */
    if (z == -2)
        return error_set(err, errlen, IMAGE_ENOMEM, "zlib has no memory for a compressed tile");
    int64_t want = npix * elem_bytes;
    if (z < 0 || !(z == want || (codec == TILE_GZIP && z == npix * 4)))
        return error_set(err, errlen, IMAGE_EINVAL,
                          "tile %lld: corrupt gzip-compressed data (not %lld pixels of %d bytes)", row, npix,
                          elem_bytes);
    return IMAGE_OK;
}

int fits_tiles_check(fitsfile *f, char *err, size_t errlen)
{
    int status = 0;
    char ctype[FLEN_VALUE] = "";
    if (fits_read_key(f, TSTRING, "ZCMPTYPE", ctype, NULL, &status))
        return cfitsio_error(err, errlen, "tile-compressed image without a readable ZCMPTYPE", status);
    size_t n = strlen(ctype);
    while (n > 0 && ctype[n - 1] == ' ')
        ctype[--n] = '\0';
    enum tile_codec codec;
    if (!strcmp(ctype, "RICE_1") || !strcmp(ctype, "RICE_ONE"))
        codec = TILE_RICE;
    else if (!strcmp(ctype, "GZIP_1") || !strcmp(ctype, "GZIP_2"))
        codec = TILE_GZIP;
    else
        return error_set(err, errlen, IMAGE_EINVAL, "ZCMPTYPE = '%s' is not supported (RICE_1, GZIP_1 or GZIP_2)",
                          ctype);
    long long zbitpix = 0;
    if (key_ll(f, "ZBITPIX", 0, &zbitpix, &status) ||
        (zbitpix != 8 && zbitpix != 16 && zbitpix != 32 && zbitpix != 64 && zbitpix != -32 && zbitpix != -64))
        return error_set(err, errlen, IMAGE_EINVAL, "tile-compressed image: ZBITPIX is not valid");
    const int elem_bytes = (int)(zbitpix < 0 ? -zbitpix : zbitpix) / 8;

    /* Rice parameters, as cfitsio reads them: ZNAMEi = 'BLOCKSIZE' / 'BYTEPIX' with their ZVALi; a
     * BYTEPIX other than 1 or 2 is decoded as 4-byte data. */
    long long blocksize = 32, bytepix = 4;
    for (int i = 1; i < 100; i++) {
        char key[16], name[FLEN_VALUE];
        snprintf(key, sizeof key, "ZNAME%d", i);
        if (fits_read_key(f, TSTRING, key, name, NULL, &status)) {
            status = 0;
            break;
        }
        snprintf(key, sizeof key, "ZVAL%d", i);
        long long v;
        if (key_ll(f, key, -1, &v, &status)) {
            status = 0;
            continue;
        }
        if (!strncmp(name, "BLOCKSIZE", 9))
            blocksize = v;
        else if (!strncmp(name, "BYTEPIX", 7))
            bytepix = v;
    }
    if (codec == TILE_RICE && (blocksize < 1 || blocksize > (1 << 20)))
        return error_set(err, errlen, IMAGE_EINVAL, "Rice BLOCKSIZE = %lld is not valid", blocksize);
    if (bytepix != 1 && bytepix != 2)
        bytepix = 4;

    /* Tile geometry: ZTILEn (default: whole rows), tiles in row-major order, the last ones clipped. */
    long long znaxis, dims[FITS_MAX_AXES], tile[FITS_MAX_AXES], ntiles[FITS_MAX_AXES], total = 1;
    if (key_ll(f, "ZNAXIS", 0, &znaxis, &status) || znaxis < 1 || znaxis > FITS_MAX_AXES)
        return error_set(err, errlen, IMAGE_EINVAL, "tile-compressed image: ZNAXIS is not in [1, %d]",
                          FITS_MAX_AXES);
    for (int i = 0; i < znaxis; i++) {
        char key[16];
        snprintf(key, sizeof key, "ZNAXIS%d", i + 1);
        if (key_ll(f, key, 0, &dims[i], &status) || dims[i] < 1)
            return error_set(err, errlen, IMAGE_EINVAL, "tile-compressed image: %s is not positive", key);
        snprintf(key, sizeof key, "ZTILE%d", i + 1);
        if (key_ll(f, key, i == 0 ? dims[0] : 1, &tile[i], &status) || tile[i] < 1)
            return error_set(err, errlen, IMAGE_EINVAL, "tile-compressed image: %s is not positive", key);
        ntiles[i] = (dims[i] + tile[i] - 1) / tile[i];
        if (__builtin_mul_overflow(total, ntiles[i], &total))
            return error_set(err, errlen, IMAGE_EINVAL, "tile-compressed image: too many tiles");
    }
    long long rows = 0, heap = 0;
    int col = 0, gzip_col = 0, raw_col = 0;
    if (fits_get_num_rowsll(f, &rows, &status) || key_ll(f, "PCOUNT", 0, &heap, &status))
        return cfitsio_error(err, errlen, "cannot read the compressed table", status);
    if (fits_get_colnum(f, CASEINSEN, "COMPRESSED_DATA", &col, &status))
        return cfitsio_error(err, errlen, "tile-compressed image without a COMPRESSED_DATA column", status);
    /* Tiles cfitsio could not compress with the main codec are gzip'd, or stored as is, in these. */
    if (fits_get_colnum(f, CASEINSEN, "GZIP_COMPRESSED_DATA", &gzip_col, &status)) {
        status = 0;
        gzip_col = 0;
    }
    if (fits_get_colnum(f, CASEINSEN, "UNCOMPRESSED_DATA", &raw_col, &status)) {
        status = 0;
        raw_col = 0;
    }
    if (rows > total)
        rows = total; /* cfitsio reads one row per tile; any others are never decoded */

    unsigned char *buf = NULL;
    size_t cap = 0;
    int rc = IMAGE_OK;
    for (long long row = 1; row <= rows && rc == IMAGE_OK; row++) {
        /* This tile's pixel count: its position in the tile grid, clipped at the image's far edges. */
        long long index = row - 1, npix = 1;
        for (int i = 0; i < znaxis; i++) {
            long long t = index % ntiles[i];
            index /= ntiles[i];
            long long extent = dims[i] - t * tile[i];
            npix *= extent < tile[i] ? extent : tile[i];
        }
        rc = check_tile(f, col, row, codec, heap, npix, (int)blocksize, (int)bytepix, elem_bytes, &buf, &cap, err,
                        errlen);
        if (rc == IMAGE_OK && gzip_col)
            rc = check_tile(f, gzip_col, row, TILE_GZIP_FALLBACK, heap, npix, 0, 0, elem_bytes, &buf, &cap, err,
                            errlen);
        if (rc == IMAGE_OK && raw_col)
            rc = check_tile(f, raw_col, row, TILE_RAW_FALLBACK, heap, npix, 0, 0, elem_bytes, &buf, &cap, err,
                            errlen);
    }
    free(buf);
    return rc;
}
