/* A minimal reader of FITS header cards (FITS 4.0 §4): enough of each HDU's mandatory keywords to
 * size its data and step to the next HDU, and the ZIMAGE keywords of tile-compressed images. Every
 * size is computed in 64 bits with overflow checks; nothing is trusted before it is checked. */
#include "fits_layout.h"
#include "error_message.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "image_internal.h"

struct hdu_header {
    int number; /* 1-based */
    int primary;
    char xtension[72];
    int bitpix, naxis;
    int64_t naxes[FITS_MAX_AXES];
    int64_t pcount, gcount;
    int groups, zimage;
    int zbitpix, znaxis, have_zbitpix, have_znaxis;
    int64_t znaxes[FITS_MAX_AXES]; /* -1 = missing */
    int64_t ztile[FITS_MAX_AXES];  /* 0 = missing (defaults apply) */
    char zcmptype[72], zquantiz[72];
    char zname[FITS_MAX_ZPARAMS][72]; /* ZNAMEn / ZVALn compression parameters, n = index + 1 */
    double zval[FITS_MAX_ZPARAMS];
    int have_zval[FITS_MAX_ZPARAMS];
    int64_t zdither0;
    int have_zdither0;
    size_t start, data_start;
};

/* The 8-character keyword field equals key (space padded). */
static int card_is(const unsigned char *card, const char *key)
{
    size_t n = strlen(key);
    if (memcmp(card, key, n) != 0)
        return 0;
    for (size_t i = n; i < 8; i++)
        if (card[i] != ' ')
            return 0;
    return 1;
}

/* The keyword field is prefix followed by a decimal index 1..999 (NAXISn, ZNAXISn, ZTILEn). */
static int card_indexed(const unsigned char *card, const char *prefix, int *index)
{
    size_t n = strlen(prefix);
    if (memcmp(card, prefix, n) != 0)
        return 0;
    int v = 0;
    size_t i = n;
    for (; i < 8 && card[i] >= '0' && card[i] <= '9'; i++)
        v = v * 10 + (card[i] - '0');
    if (i == n || card[n] == '0')
        return 0;
    for (; i < 8; i++)
        if (card[i] != ' ')
            return 0;
    if (v < 1 || v > FITS_MAX_AXES)
        return 0;
    *index = v;
    return 1;
}

/* The value field of a "KEYWORD = value / comment" card, as a NUL-terminated copy. */
static int card_value(const unsigned char *card, char value[72])
{
    if (card[8] != '=' || card[9] != ' ')
        return -1;
    memcpy(value, card + 10, 70);
    value[70] = '\0';
    return 0;
}

static int card_int(const unsigned char *card, int64_t *out)
{
    char v[72];
    if (card_value(card, v))
        return -1;
    const char *p = v;
    while (*p == ' ')
        p++;
    int neg = 0;
    if (*p == '+' || *p == '-')
        neg = *p++ == '-';
    if (*p < '0' || *p > '9')
        return -1;
    uint64_t acc = 0;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (acc > (UINT64_MAX - 9) / 10)
            return -1; /* more digits than 64 bits hold */
        acc = acc * 10 + (uint64_t)(*p - '0');
    }
    while (*p == ' ')
        p++;
    if (*p != '\0' && *p != '/')
        return -1;
    if (acc > (uint64_t)INT64_MAX + (uint64_t)neg)
        return -1;
    *out = neg ? (int64_t)(0 - acc) : (int64_t)acc;
    return 0;
}

static int card_logical(const unsigned char *card, int *out)
{
    char v[72];
    if (card_value(card, v))
        return -1;
    const char *p = v;
    while (*p == ' ')
        p++;
    if (*p != 'T' && *p != 'F')
        return -1;
    *out = *p == 'T';
    return 0;
}

static int card_string(const unsigned char *card, char *out, size_t outlen)
{
    char v[72];
    if (card_value(card, v))
        return -1;
    const char *p = v;
    while (*p == ' ')
        p++;
    if (*p++ != '\'')
        return -1;
    size_t n = 0;
    for (;;) {
        if (*p == '\0')
            return -1;
        if (*p == '\'') {
            if (p[1] != '\'')
                break;
            p++; /* '' is an escaped quote */
        }
        if (n + 1 < outlen)
            out[n++] = *p;
        p++;
    }
    while (n > 0 && out[n - 1] == ' ')
        n--;
    out[n] = '\0';
    return 0;
}

static int valid_bitpix(int64_t b)
{
    return b == 8 || b == 16 || b == 32 || b == 64 || b == -32 || b == -64;
}

enum value_kind { NOT_STRUCTURAL, VALUE_INT, VALUE_NUMBER, VALUE_STRING, VALUE_LOGICAL };

/* Keywords whose value decides how the HDU is read, and the kind of value each must hold. A header
 * carrying one twice is refused: readers disagree on which copy counts (cfitsio takes the first), and
 * a tile-compressed image read with one geometry but checked with another is how a corrupt tile would
 * slip past fits_tiles.c. A malformed value is refused too: cfitsio 4.2 overflows a message buffer
 * while reporting some of them (an abort under _FORTIFY_SOURCE, found by our fuzzer). */
static enum value_kind structural_keyword(const unsigned char *card)
{
    static const struct {
        const char *name;
        enum value_kind kind;
    } exact[] = {{"SIMPLE", VALUE_LOGICAL},  {"XTENSION", VALUE_STRING}, {"BITPIX", VALUE_INT},
                 {"NAXIS", VALUE_INT},       {"PCOUNT", VALUE_INT},      {"GCOUNT", VALUE_INT},
                 {"GROUPS", VALUE_LOGICAL},  {"BSCALE", VALUE_NUMBER},   {"BZERO", VALUE_NUMBER},
                 {"BLANK", VALUE_INT},       {"THEAP", VALUE_INT},       {"TFIELDS", VALUE_INT},
                 {"ZIMAGE", VALUE_LOGICAL},  {"ZSIMPLE", VALUE_LOGICAL}, {"ZTENSION", VALUE_STRING},
                 {"ZBITPIX", VALUE_INT},     {"ZNAXIS", VALUE_INT},      {"ZPCOUNT", VALUE_INT},
                 {"ZGCOUNT", VALUE_INT},     {"ZCMPTYPE", VALUE_STRING}, {"ZSCALE", VALUE_NUMBER},
                 {"ZZERO", VALUE_NUMBER},    {"ZBLANK", VALUE_INT},      {"ZQUANTIZ", VALUE_STRING},
                 {"ZDITHER0", VALUE_INT}},
      indexed[] = {{"NAXIS", VALUE_INT},    {"ZNAXIS", VALUE_INT},   {"ZTILE", VALUE_INT},
                   {"ZNAME", VALUE_STRING}, {"ZVAL", VALUE_NUMBER},  {"TFORM", VALUE_STRING},
                   {"TSCAL", VALUE_NUMBER}, {"TZERO", VALUE_NUMBER}, {"TNULL", VALUE_INT}};
    int k;
    for (size_t i = 0; i < sizeof exact / sizeof exact[0]; i++)
        if (card_is(card, exact[i].name))
            return exact[i].kind;
    for (size_t i = 0; i < sizeof indexed / sizeof indexed[0]; i++)
        if (card_indexed(card, indexed[i].name, &k))
            return indexed[i].kind;
    return NOT_STRUCTURAL;
}

/* The rest of a value field after the value: blanks, then nothing or a comment. */
static int value_tail_ok(const char *p)
{
    while (*p == ' ')
        p++;
    return *p == '\0' || *p == '/';
}

/* FITS 4.0 §4.2 value syntax for the kind (fixed or free format). */
static int value_ok(const unsigned char *card, enum value_kind kind)
{
    char v[72];
    if (card_value(card, v))
        return 0;
    const char *p = v;
    while (*p == ' ')
        p++;
    switch (kind) {
    case VALUE_LOGICAL:
        return (*p == 'T' || *p == 'F') && value_tail_ok(p + 1);
    case VALUE_STRING:
        if (*p++ != '\'')
            return 0;
        for (;; p++) {
            if (*p == '\0')
                return 0;
            if (*p == '\'') {
                if (p[1] != '\'')
                    return value_tail_ok(p + 1);
                p++;
            } else if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e) {
                return 0;
            }
        }
    case VALUE_INT:
    case VALUE_NUMBER: {
        if (*p == '+' || *p == '-')
            p++;
        int digits = 0;
        while (*p >= '0' && *p <= '9') {
            p++;
            digits++;
        }
        if (kind == VALUE_NUMBER) {
            if (*p == '.') {
                p++;
                while (*p >= '0' && *p <= '9') {
                    p++;
                    digits++;
                }
            }
            if (digits && (*p == 'E' || *p == 'e' || *p == 'D' || *p == 'd')) {
                p++;
                if (*p == '+' || *p == '-')
                    p++;
                if (*p < '0' || *p > '9')
                    return 0;
                while (*p >= '0' && *p <= '9')
                    p++;
            }
        }
        return digits > 0 && value_tail_ok(p);
    }
    case NOT_STRUCTURAL:
        break;
    }
    return 1;
}

/* "HDU 3: " for extensions, "" for the primary, so messages about the usual case stay short. */
static const char *where(const struct hdu_header *h, char buf[32])
{
    if (h->primary)
        buf[0] = '\0';
    else
        snprintf(buf, 32, "HDU %d: ", h->number);
    return buf;
}

/* Printable copy of a keyword field for messages. */
static void keyword_text(const unsigned char *card, char out[9])
{
    int n = 8;
    for (int i = 0; i < 8; i++)
        out[i] = (card[i] >= 0x20 && card[i] < 0x7f) ? (char)card[i] : '?';
    while (n > 0 && out[n - 1] == ' ')
        n--;
    out[n] = '\0';
}

/* Parse the header of the HDU at h->start. Returns IMAGE_OK, IMAGE_EINVAL with a message, or 1 when
 * the bytes at h->start are not an extension header (the chain ends there; not an error). */
static int parse_header(struct hdu_header *h, const unsigned char *buf, size_t len, char *err,
                        size_t errlen)
{
    char w[32], key[9];
    where(h, w);
    h->pcount = 0;
    h->gcount = 1;
    h->groups = h->zimage = h->have_zbitpix = h->have_znaxis = h->have_zdither0 = 0;
    h->xtension[0] = h->zcmptype[0] = h->zquantiz[0] = '\0';
    for (int i = 0; i < FITS_MAX_ZPARAMS; i++) {
        h->zname[i][0] = '\0';
        h->have_zval[i] = 0;
    }
    for (int i = 0; i < FITS_MAX_AXES; i++) {
        h->znaxes[i] = -1;
        h->ztile[i] = 0;
    }
    size_t pos = h->start, seen[1024], nseen = 0; /* offsets of the structural cards met so far */
    for (int idx = 0;; idx++, pos += FITS_CARD) {
        if (len - pos < FITS_CARD) {
            if (idx == 0 && !h->primary)
                return 1;
            if (idx == 0 && memcmp(buf, "SIMPLE", len < 6 ? len : 6) != 0)
                return error_set(err, errlen, IMAGE_EINVAL,
                                  "not a FITS file: it does not begin with the card SIMPLE = T");
            return error_set(err, errlen, IMAGE_EINVAL,
                              "%struncated FITS header: no END card in the %zu bytes given", w, len);
        }
        const unsigned char *card = buf + pos;
        int64_t v;
        int iv;
        enum value_kind kind = structural_keyword(card);
        if (kind != NOT_STRUCTURAL) {
            keyword_text(card, key);
            if (idx > 0 && !value_ok(card, kind)) /* the first card has its own checks below */
                return error_set(err, errlen, IMAGE_EINVAL, "%sthe value of %s is not a valid %s", w, key,
                                  kind == VALUE_INT ? "integer" : kind == VALUE_NUMBER ? "number"
                                  : kind == VALUE_STRING ? "string" : "logical (T or F)");
            for (size_t i = 0; i < nseen; i++)
                if (memcmp(buf + seen[i], card, 8) == 0)
                    return error_set(err, errlen, IMAGE_EINVAL,
                                      "%sduplicate keyword %s: readers disagree on which one counts", w, key);
            if (nseen == sizeof seen / sizeof seen[0])
                return error_set(err, errlen, IMAGE_EINVAL, "%stoo many structural keywords in one header", w);
            seen[nseen++] = pos;
        }
        if (idx == 0) {
            if (h->primary) {
                if (!card_is(card, "SIMPLE") || card_logical(card, &iv))
                    return error_set(err, errlen, IMAGE_EINVAL,
                                      "not a FITS file: it does not begin with the card SIMPLE = T");
                if (!iv)
                    return error_set(err, errlen, IMAGE_EINVAL,
                                      "SIMPLE = F: the file says it does not conform to FITS");
            } else {
                if (!card_is(card, "XTENSION"))
                    return 1;
                if (card_string(card, h->xtension, sizeof h->xtension))
                    return error_set(err, errlen, IMAGE_EINVAL, "%sXTENSION value is not a string", w);
            }
            continue;
        }
        if (idx == 1) {
            if (!card_is(card, "BITPIX")) {
                keyword_text(card, key);
                return error_set(err, errlen, IMAGE_EINVAL,
                                  "%sthe second header card must be BITPIX, found '%s'", w, key);
            }
            if (card_int(card, &v))
                return error_set(err, errlen, IMAGE_EINVAL, "%sBITPIX value is not an integer", w);
            if (!valid_bitpix(v))
                return error_set(err, errlen, IMAGE_EINVAL,
                                  "%sBITPIX = %lld is not valid (8, 16, 32, 64, -32 or -64)", w, (long long)v);
            h->bitpix = (int)v;
            continue;
        }
        if (idx == 2) {
            if (!card_is(card, "NAXIS")) {
                keyword_text(card, key);
                return error_set(err, errlen, IMAGE_EINVAL,
                                  "%sthe third header card must be NAXIS, found '%s'", w, key);
            }
            if (card_int(card, &v))
                return error_set(err, errlen, IMAGE_EINVAL, "%sNAXIS value is not an integer", w);
            if (v < 0 || v > FITS_MAX_AXES)
                return error_set(err, errlen, IMAGE_EINVAL, "%sNAXIS = %lld is not valid (0 to 999)", w,
                                  (long long)v);
            h->naxis = (int)v;
            continue;
        }
        if (idx < 3 + h->naxis) {
            int n = idx - 2, k;
            if (!card_indexed(card, "NAXIS", &k) || k != n) {
                keyword_text(card, key);
                return error_set(err, errlen, IMAGE_EINVAL, "%sheader card %d must be NAXIS%d, found '%s'", w,
                                  idx + 1, n, key);
            }
            if (card_int(card, &v) || v < 0)
                return error_set(err, errlen, IMAGE_EINVAL, "%sNAXIS%d is not a non-negative integer", w, n);
            h->naxes[n - 1] = v;
            continue;
        }
        if (card_is(card, "END"))
            break;
        int k;
        if (card_is(card, "PCOUNT")) {
            if (card_int(card, &v) || v < 0)
                return error_set(err, errlen, IMAGE_EINVAL, "%sPCOUNT is not a non-negative integer", w);
            h->pcount = v;
        } else if (card_is(card, "GCOUNT")) {
            if (card_int(card, &v) || v < 0)
                return error_set(err, errlen, IMAGE_EINVAL, "%sGCOUNT is not a non-negative integer", w);
            h->gcount = v;
        } else if (card_is(card, "GROUPS")) {
            if (card_logical(card, &iv) == 0)
                h->groups = iv;
        } else if (card_is(card, "ZIMAGE")) {
            if (card_logical(card, &iv) == 0)
                h->zimage = iv;
        } else if (card_is(card, "ZBITPIX")) {
            if (card_int(card, &v) || !valid_bitpix(v))
                return error_set(err, errlen, IMAGE_EINVAL,
                                  "%sZBITPIX is not valid (8, 16, 32, 64, -32 or -64)", w);
            h->zbitpix = (int)v;
            h->have_zbitpix = 1;
        } else if (card_is(card, "ZNAXIS")) {
            if (card_int(card, &v) || v < 0 || v > FITS_MAX_AXES)
                return error_set(err, errlen, IMAGE_EINVAL, "%sZNAXIS is not valid (0 to 999)", w);
            h->znaxis = (int)v;
            h->have_znaxis = 1;
        } else if (card_indexed(card, "ZNAXIS", &k)) {
            if (card_int(card, &v) || v < 0)
                return error_set(err, errlen, IMAGE_EINVAL, "%sZNAXIS%d is not a non-negative integer", w, k);
            h->znaxes[k - 1] = v;
        } else if (card_is(card, "ZCMPTYPE")) {
            card_string(card, h->zcmptype, sizeof h->zcmptype); /* syntax checked above */
        } else if (card_is(card, "ZQUANTIZ")) {
            card_string(card, h->zquantiz, sizeof h->zquantiz);
        } else if (card_is(card, "ZDITHER0")) {
            if (card_int(card, &v))
                return error_set(err, errlen, IMAGE_EINVAL, "%sZDITHER0 is not an integer", w);
            h->zdither0 = v;
            h->have_zdither0 = 1;
        } else if (card_indexed(card, "ZNAME", &k) || card_indexed(card, "ZVAL", &k)) {
            if (k > FITS_MAX_ZPARAMS)
                return error_set(err, errlen, IMAGE_EINVAL, "%smore than %d compression parameters (ZNAMEn)", w,
                                  FITS_MAX_ZPARAMS);
            char value[72];
            if (card[1] == 'N') {
                card_string(card, h->zname[k - 1], sizeof h->zname[k - 1]);
            } else if (card_value(card, value) == 0) {
                h->zval[k - 1] = strtod(value, NULL); /* syntax checked above; a D exponent stops strtod */
                h->have_zval[k - 1] = 1;
            }
        } else if (card_indexed(card, "ZTILE", &k)) {
            if (card_int(card, &v) || v < 1)
                return error_set(err, errlen, IMAGE_EINVAL, "%sZTILE%d is not a positive integer", w, k);
            h->ztile[k - 1] = v;
        }
    }
    /* The header occupies whole 2880-byte blocks; the data starts at the next block. */
    size_t header_bytes = pos + FITS_CARD - h->start;
    size_t rem = header_bytes % FITS_BLOCK;
    header_bytes += rem ? FITS_BLOCK - rem : 0;
    h->data_start = h->start + header_bytes; /* may lie past len: checked where it matters */
    return IMAGE_OK;
}

/* Declared data size: |BITPIX|/8 · GCOUNT · (PCOUNT + Π NAXISn) (FITS 4.0 §4.4.1), random groups
 * skipping NAXIS1. Returns IMAGE_OK or IMAGE_EINVAL when it does not fit in 64 bits. */
static int data_size(const struct hdu_header *h, uint64_t *bytes, char *err, size_t errlen)
{
    char w[32];
    where(h, w);
    *bytes = 0;
    if (h->naxis == 0)
        return IMAGE_OK;
    int first = (h->primary && h->groups && h->naxes[0] == 0) ? 1 : 0;
    uint64_t n = 1;
    for (int i = first; i < h->naxis; i++)
        if (__builtin_mul_overflow(n, (uint64_t)h->naxes[i], &n))
            goto overflow;
    if (__builtin_add_overflow(n, (uint64_t)h->pcount, &n) || __builtin_mul_overflow(n, (uint64_t)h->gcount, &n) ||
        __builtin_mul_overflow(n, (uint64_t)(h->bitpix < 0 ? -h->bitpix : h->bitpix) / 8, &n) ||
        n > (uint64_t)SIZE_MAX - FITS_BLOCK)
        goto overflow;
    *bytes = n;
    return IMAGE_OK;
overflow: {
    char dims[160];
    size_t used = 0;
    dims[0] = '\0';
    for (int i = 0; i < h->naxis && used < sizeof dims - 40; i++)
        used += (size_t)snprintf(dims + used, sizeof dims - used, "%sNAXIS%d = %lld", i ? ", " : "", i + 1,
                                 (long long)h->naxes[i]);
    if (h->naxis > 0 && used >= sizeof dims - 40)
        snprintf(dims + used, sizeof dims - used, ", ...");
    return error_set(err, errlen, IMAGE_EINVAL, "%sthe data size overflows 64 bits (%s, BITPIX = %d)", w, dims,
                      h->bitpix);
}
}

static int is_compressed_image(const struct hdu_header *h)
{
    return !h->primary && strcmp(h->xtension, "BINTABLE") == 0 && h->zimage;
}

/* The axes of the image an HDU holds (ZNAXISn for a compressed one), or 0 axes when it holds none. */
static int image_axes(const struct hdu_header *h, const int64_t **axes, const char **name)
{
    if (is_compressed_image(h)) {
        *axes = h->znaxes;
        *name = "ZNAXIS";
        return h->have_znaxis ? h->znaxis : 0;
    }
    int image = h->primary ? !(h->groups && h->naxis > 0 && h->naxes[0] == 0)
                           : strcmp(h->xtension, "IMAGE") == 0;
    *axes = h->naxes;
    *name = "NAXIS";
    return image ? h->naxis : 0;
}

static int has_data(const struct hdu_header *h)
{
    const int64_t *axes;
    const char *name;
    int n = image_axes(h, &axes, &name);
    if (n == 0)
        return 0;
    for (int i = 0; i < n; i++)
        if (axes[i] <= 0)
            return 0; /* a zero-length axis (or a missing ZNAXISn): no pixels */
    return 1;
}

/* The compression parameters cfitsio computes with while it opens the HDU (before fits_tiles.c can look
 * at a tile): it divides by the Rice block size (0 when the parameter is missing) and indexes its dither
 * table with ZDITHER0, unchecked (a zero block size is a SIGFPE, found by our fuzzer). Only the codecs
 * fits_tiles.c guards pass. */
static int check_compression(const struct hdu_header *h, const char *w, char *err, size_t errlen)
{
    char type[72];
    snprintf(type, sizeof type, "%s", h->zcmptype);
    size_t n = strlen(type);
    while (n > 0 && type[n - 1] == ' ')
        type[--n] = '\0';
    int rice = !strcmp(type, "RICE_1") || !strcmp(type, "RICE_ONE");
    if (!rice && strcmp(type, "GZIP_1") != 0 && strcmp(type, "GZIP_2") != 0)
        return error_set(err, errlen, IMAGE_EINVAL, "%sZCMPTYPE = '%s' is not supported (RICE_1, GZIP_1 or GZIP_2)",
                          w, type);
    int have_blocksize = 0;
    for (int i = 0; i < FITS_MAX_ZPARAMS; i++) {
        if (!h->zname[i][0])
            continue;
        have_blocksize |= !strncmp(h->zname[i], "BLOCKSIZE", 9);
        if (!h->have_zval[i])
            return error_set(err, errlen, IMAGE_EINVAL, "%sZNAME%d has no ZVAL%d", w, i + 1, i + 1);
        double v = h->zval[i];
        if (rice && !strncmp(h->zname[i], "BLOCKSIZE", 9) && !(v >= 1.0 && v <= 1048576.0 && v == floor(v)))
            return error_set(err, errlen, IMAGE_EINVAL, "%sRice BLOCKSIZE = %g is not valid", w, v);
        if (rice && !strncmp(h->zname[i], "BYTEPIX", 7) && v != 1.0 && v != 2.0 && v != 4.0 && v != 8.0)
            return error_set(err, errlen, IMAGE_EINVAL, "%sRice BYTEPIX = %g is not valid (1, 2, 4 or 8)", w, v);
    }
    if (rice && !have_blocksize) /* cfitsio has no default: it would divide by zero */
        return error_set(err, errlen, IMAGE_EINVAL, "%sRice-compressed image without a BLOCKSIZE parameter", w);
    if (h->have_zdither0 && (h->zdither0 < 1 || h->zdither0 > 10000))
        return error_set(err, errlen, IMAGE_EINVAL, "%sZDITHER0 = %lld is not in [1, 10000]", w,
                          (long long)h->zdither0);
    if (h->zquantiz[0] && strncmp(h->zquantiz, "NO_DITHER", 9) && strncmp(h->zquantiz, "SUBTRACTIVE_DITHER_1", 20) &&
        strncmp(h->zquantiz, "SUBTRACTIVE_DITHER_2", 20) && strncmp(h->zquantiz, "NONE", 4))
        return error_set(err, errlen, IMAGE_EINVAL, "%sZQUANTIZ = '%s' is not a known quantisation", w, h->zquantiz);
    return IMAGE_OK;
}

/* Check the chosen HDU's image: 2-D after dropping degenerate axes, within the ceilings, data present. */
static int check_image(struct fits_layout *lay, const struct hdu_header *h, uint64_t data_bytes, size_t len,
                       const struct image_limits *lim, char *err, size_t errlen)
{
    char w[32];
    where(h, w);
    const int64_t *axes;
    const char *name;
    int n = image_axes(h, &axes, &name);
    int kept[2], nkept = 0;
    for (int i = 0; i < n; i++) {
        if (axes[i] == 1)
            continue;
        if (nkept == 2)
            return error_set(err, errlen, IMAGE_EINVAL,
                              "%s%s%d = %lld: image must be 2-D after dropping degenerate axes "
                              "(%s%d = %lld and %s%d = %lld already)",
                              w, name, i + 1, (long long)axes[i], name, kept[0] + 1, (long long)axes[kept[0]], name,
                              kept[1] + 1, (long long)axes[kept[1]]);
        kept[nkept++] = i;
    }
    if (nkept < 2) {
        if (nkept == 1)
            return error_set(err, errlen, IMAGE_EINVAL,
                              "%s%s = %d: image must be 2-D after dropping degenerate axes, only %s%d = %lld "
                              "is longer than 1",
                              w, name, n, name, kept[0] + 1, (long long)axes[kept[0]]);
        return error_set(err, errlen, IMAGE_EINVAL,
                          "%simage is 1x1: it must be 2-D after dropping degenerate axes (every %sn is 1)", w,
                          name);
    }
    uint64_t pixels;
    if (__builtin_mul_overflow((uint64_t)axes[kept[0]], (uint64_t)axes[kept[1]], &pixels))
        return error_set(err, errlen, IMAGE_EINVAL, "%s%s%d x %s%d overflows 64 bits", w, name, kept[0] + 1,
                          name, kept[1] + 1);
    if (pixels > lim->max_pixels)
        return error_set(err, errlen, IMAGE_ETOOBIG, "%simage of %lld x %lld = %llu pixels is over the ceiling of %llu",
                          w, (long long)axes[kept[0]], (long long)axes[kept[1]], (unsigned long long)pixels,
                          (unsigned long long)lim->max_pixels);
    if (is_compressed_image(h)) {
        if (!h->have_zbitpix)
            return error_set(err, errlen, IMAGE_EINVAL, "%stile-compressed image without ZBITPIX", w);
        int rc = check_compression(h, w, err, errlen);
        if (rc != IMAGE_OK)
            return rc;
        /* cfitsio allocates whole tiles: bound them like the image (default tile: one row). */
        uint64_t tile = 1;
        for (int i = 0; i < n; i++) {
            uint64_t t = h->ztile[i] ? (uint64_t)h->ztile[i] : (i == 0 ? (uint64_t)axes[0] : 1);
            if (__builtin_mul_overflow(tile, t, &tile) || tile > lim->max_pixels)
                return error_set(err, errlen, IMAGE_ETOOBIG,
                                  "%scompression tiles (ZTILEn) are larger than the ceiling of %llu pixels", w,
                                  (unsigned long long)lim->max_pixels);
        }
    }
    if (h->data_start > len || data_bytes > len - h->data_start)
        return error_set(err, errlen, IMAGE_EINVAL,
                          "%struncated data: the header declares %llu bytes of data, only %zu follow it", w,
                          (unsigned long long)data_bytes, h->data_start > len ? (size_t)0 : len - h->data_start);
    lay->hdu = h->number;
    lay->compressed = is_compressed_image(h);
    lay->bitpix = lay->compressed ? h->zbitpix : h->bitpix;
    lay->naxis = n;
    lay->width = axes[kept[0]];
    lay->height = axes[kept[1]];
    lay->pixels = pixels;
    lay->data_start = h->data_start;
    lay->data_bytes = (size_t)data_bytes;
    return IMAGE_OK;
}

int fits_layout_scan(struct fits_layout *lay, const unsigned char *buf, size_t len,
                     const struct image_limits *limits, char *err, size_t errlen)
{
    memset(lay, 0, sizeof *lay);
    if (len == 0)
        return error_set(err, errlen, IMAGE_EINVAL, "empty input: 0 bytes");
    struct hdu_header *h = malloc(sizeof *h);
    if (!h)
        return error_set(err, errlen, IMAGE_ENOMEM, "out of memory reading the FITS header");
    int rc = IMAGE_OK;
    char primary_empty[96] = "";
    size_t start = 0;
    for (int number = 1; number <= FITS_LAYOUT_MAX_HDUS; number++) {
        h->number = number;
        h->primary = number == 1;
        h->start = start;
        rc = parse_header(h, buf, len, err, errlen);
        if (rc == 1)
            break; /* no further extension */
        if (rc != IMAGE_OK)
            goto out;
        uint64_t bytes;
        rc = data_size(h, &bytes, err, errlen);
        if (rc != IMAGE_OK)
            goto out;
        if (has_data(h)) {
            rc = check_image(lay, h, bytes, len, limits, err, errlen);
            goto out;
        }
        if (h->primary) {
            if (h->naxis == 0)
                snprintf(primary_empty, sizeof primary_empty, "the primary HDU has NAXIS = 0");
            else
                snprintf(primary_empty, sizeof primary_empty, "the primary HDU holds no pixels");
        }
        /* Step over this HDU's data (padded to whole blocks) to the next header. */
        uint64_t padded = bytes + (bytes % FITS_BLOCK ? FITS_BLOCK - bytes % FITS_BLOCK : 0);
        if (h->data_start >= len || padded >= len - h->data_start)
            break;
        start = h->data_start + (size_t)padded;
    }
    rc = error_set(err, errlen, IMAGE_EINVAL, "no image data: %s and no image extension follows",
                    primary_empty[0] ? primary_empty : "none of the first HDUs holds an image");
out:
    free(h);
    return rc;
}
