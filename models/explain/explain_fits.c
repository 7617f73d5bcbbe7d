/* explain_fits_write: the map's pixels plus the input's celestial WCS, through cfitsio's memory
 * driver (the input under the same fixed name the decoder uses, never a client's name). Cards are
 * copied verbatim except for the axis numbers in their names, so values keep their exact text. */
#include "explain_fits.h"
#include "error_message.h"

#include <fitsio.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gzip_inflate.h"
#include "image.h"

#define MEMFILE_NAME "stopcal-memory.fits"
#define FITS_RECORD 2880

static int cfitsio_fail(char *err, size_t errlen, const char *what, int status)
{
    char text[FLEN_STATUS];
    fits_get_errstatus(status, text);
    return error_set(err, errlen, -1, "%s: cfitsio error %d (%s)", what, status, text);
}

/* Keywords of the coordinate frame, copied as they are. */
static const char *const frame_keys[] = {"RADESYS", "RADECSYS", "EQUINOX", "EPOCH",   "LONPOLE", "LATPOLE",
                                         "MJD-OBS", "DATE-OBS", "MJDREF",  "DATEREF", "WCSNAME", "OBJECT",
                                         "TELESCOP", "OBSERVER"};
/* Keywords that end in one axis number. */
static const char *const axis_keys[] = {"CTYPE", "CUNIT", "CRVAL", "CDELT", "CRPIX", "CROTA", "CNAME"};

/* Digits only, 1..999; -1 otherwise. */
static int axis_number(const char *s, size_t n)
{
    if (n == 0 || n > 3)
        return -1;
    int v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = 10 * v + (s[i] - '0');
    }
    return v >= 1 ? v : -1;
}

static int renumber(int axis, int a, int b) { return axis == a ? 1 : axis == b ? 2 : 0; }

int explain_wcs_rename(const char *key, int a, int b, char *out)
{
    for (size_t i = 0; i < sizeof frame_keys / sizeof *frame_keys; i++)
        if (strcmp(key, frame_keys[i]) == 0) {
            snprintf(out, 16, "%s", key);
            return 1;
        }
    for (size_t i = 0; i < sizeof axis_keys / sizeof *axis_keys; i++) {
        size_t n = strlen(axis_keys[i]);
        if (strncmp(key, axis_keys[i], n) != 0)
            continue;
        int ax = renumber(axis_number(key + n, strlen(key + n)), a, b);
        if (!ax)
            return 0;
        snprintf(out, 16, "%s%d", axis_keys[i], ax);
        return 1;
    }
    /* PCi_j and CDi_j: both axes must be kept; PVi_m: axis i kept, m as it is. */
    if ((key[0] == 'P' && (key[1] == 'C' || key[1] == 'V')) || (key[0] == 'C' && key[1] == 'D')) {
        const char *us = strchr(key + 2, '_');
        if (!us)
            return 0;
        int i = renumber(axis_number(key + 2, (size_t)(us - key - 2)), a, b);
        int m = axis_number(us + 1, strlen(us + 1));
        if (key[1] == 'V') { /* PVi_0 is a valid parameter index too */
            if (strcmp(us + 1, "0") == 0)
                m = 0;
            if (!i || m < 0)
                return 0;
            snprintf(out, 16, "PV%d_%d", i, m);
            return 1;
        }
        int j = renumber(m, a, b);
        if (!i || !j)
            return 0;
        snprintf(out, 16, "%c%c%d_%d", key[0], key[1], i, j);
        return 1;
    }
    return 0;
}

/* Copy the WCS cards of the input's image HDU into out (positioned on its new primary HDU). */
static int copy_wcs(fitsfile *out, const unsigned char *buf, size_t len, int hdu, char *err, size_t errlen)
{
    void *mem = (void *)buf; /* opened READONLY: cfitsio never writes through it */
    size_t memsize = len;
    fitsfile *in = NULL;
    int status = 0, hdutype = 0, naxis = 0, rc = 0;
    LONGLONG naxes[16];
    if (fits_open_memfile(&in, MEMFILE_NAME, READONLY, &mem, &memsize, 0, NULL, &status)) {
        rc = cfitsio_fail(err, errlen, "cannot reopen the input image for its WCS", status);
        goto done;
    }
    if ((hdu != 1 && fits_movabs_hdu(in, hdu, &hdutype, &status)) || fits_get_img_dim(in, &naxis, &status) ||
        naxis > 16 || fits_get_img_sizell(in, naxis, naxes, &status)) {
        rc = status ? cfitsio_fail(err, errlen, "cannot read the input image's axes", status)
                    : error_set(err, errlen, -1, "the input image has %d axes", naxis);
        goto done;
    }
    /* The two axes the image spans: the first two longer than 1, as the decoder takes them. */
    int a = 0, b = 0;
    for (int i = 0; i < naxis; i++)
        if (naxes[i] > 1) {
            if (!a)
                a = i + 1;
            else if (!b)
                b = i + 1;
        }
    if (!a)
        a = 1;
    if (!b)
        b = a == 1 ? 2 : 1;
    int nkeys = 0;
    if (fits_get_hdrspace(in, &nkeys, NULL, &status)) {
        rc = cfitsio_fail(err, errlen, "cannot read the input header", status);
        goto done;
    }
    for (int k = 1; k <= nkeys; k++) {
        char card[FLEN_CARD], key[FLEN_KEYWORD], renamed[16];
        int keylen = 0;
        if (fits_read_record(in, k, card, &status) || fits_get_keyname(card, key, &keylen, &status)) {
            rc = cfitsio_fail(err, errlen, "cannot read an input header card", status);
            goto done;
        }
        if (!explain_wcs_rename(key, a, b, renamed) || strlen(renamed) > 8)
            continue;
        char copy[FLEN_CARD];
        /* The name in columns 1-8, the rest of the card ('= value / comment') as it was. */
        snprintf(copy, sizeof copy, "%-8.8s%s", renamed, strlen(card) > 8 ? card + 8 : "");
        if (fits_write_record(out, copy, &status)) {
            rc = cfitsio_fail(err, errlen, "cannot write a WCS card", status);
            goto done;
        }
    }
done:
    if (in) {
        int s2 = 0;
        fits_close_file(in, &s2);
    }
    return rc;
}

static int write_meta(fitsfile *f, const struct explain_fits_meta *m, int *status)
{
    char model[69], sha[69], decision[16];
    snprintf(model, sizeof model, "%s", m->model ? m->model : "");
    snprintf(sha, sizeof sha, "%s", m->sha256 ? m->sha256 : "");
    snprintf(decision, sizeof decision, "%s", m->decision ? m->decision : "");
    fits_write_key(f, TSTRING, "ORIGIN", (void *)"stopcal " STOPCAL_VERSION, "made by stopcal's /v1/explain", status);
    fits_write_key(f, TSTRING, "EXPLMAP", (void *)m->map,
                   strcmp(m->map, "ROLLOUT") == 0 ? "attention rollout over all blocks, CLS row"
                                                  : "last block's attention, CLS query to patches",
                   status);
    fits_write_key(f, TSTRING, "EXPLHEAD", (void *)m->heads,
                   strcmp(m->heads, "ALL") == 0 ? "one plane per head (NAXIS3)" : "mean over the heads", status);
    fits_write_key(f, TSTRING, "MODEL", model, "model name", status);
    fits_write_key(f, TSTRING, "MODELSHA", sha, "sha256 of the model file", status);
    fits_write_key(f, TDOUBLE, "CSCORE", (void *)&m->continue_score, "continue_score (low: stop)", status);
    fits_write_key(f, TDOUBLE, "THRESH", (void *)&m->threshold, "decision threshold on continue_score", status);
    fits_write_key(f, TSTRING, "DECISION", decision, "stop when continue_score < THRESH", status);
    fits_write_key(f, TINT, "GRID", (void *)&m->grid, "patches per side of the model's input", status);
    fits_write_key(f, TINT, "NHEADS", (void *)&m->num_heads, "attention heads", status);
    fits_write_key(f, TINT, "NREGS", (void *)&m->num_registers, "register tokens (not in the map)", status);
    fits_write_key(f, TDOUBLE, "CLSSELF", (void *)&m->cls_self, "CLS attention to itself (mean of heads)", status);
    fits_write_key(f, TDOUBLE, "PATCHSUM", (void *)&m->patch_sum, "CLS attention on all patches together", status);
    for (int r = 0; r < m->num_registers && m->registers && r < 99; r++) {
        char key[16];
        snprintf(key, sizeof key, "REGATT%d", r + 1);
        fits_write_key(f, TDOUBLE, key, (void *)&m->registers[r], "CLS attention to this register", status);
    }
    fits_write_comment(f, "Each pixel holds the attention of the patch its centre was resized into;", status);
    fits_write_comment(f, "pixels of one patch share its value. Patches sum to PATCHSUM per plane.", status);
    return *status;
}

int explain_fits_write(const float *planes, int n_planes, int64_t width, int64_t height,
                       const void *input, size_t input_len, size_t max_bytes, int input_hdu,
                       const struct explain_fits_meta *meta, unsigned char **out, size_t *out_len,
                       char *err, size_t errlen)
{
    *out = NULL;
    *out_len = 0;
    if (!planes || n_planes < 1 || width < 1 || height < 1 || !meta || !meta->map || !meta->heads)
        return error_set(err, errlen, -1, "no map to write");
    unsigned char *inflated = NULL, *padded = NULL;
    const unsigned char *in = input;
    size_t in_len = input_len;
    if (in && gzip_is_gzip(in, in_len)) {
        char why[256];
        if (gzip_inflate(in, in_len, max_bytes, &inflated, &in_len, why, sizeof why))
            return error_set(err, errlen, -1, "cannot inflate the input for its WCS: %s", why);
        in = inflated;
    }
    /* cfitsio reads whole records: a file whose last record was cut short gets a padded copy. */
    if (in && in_len % FITS_RECORD) {
        size_t n = in_len + (FITS_RECORD - in_len % FITS_RECORD);
        padded = calloc(1, n);
        if (!padded) {
            free(inflated);
            return error_set(err, errlen, -1, "out of memory");
        }
        memcpy(padded, in, in_len);
        in = padded;
        in_len = n;
    }
    void *mem = NULL;
    size_t memsize = 0;
    fitsfile *f = NULL;
    int status = 0, rc = 0;
    int lock = image_cfitsio_begin();
    LONGLONG naxes[3] = {width, height, n_planes};
    int naxis = n_planes > 1 ? 3 : 2;
    LONGLONG total = (LONGLONG)width * height * n_planes;
    if (fits_create_memfile(&f, &mem, &memsize, 64 * FITS_RECORD, realloc, &status) ||
        fits_create_imgll(f, FLOAT_IMG, naxis, naxes, &status)) {
        rc = cfitsio_fail(err, errlen, "cannot create the map", status);
        goto done;
    }
    int wcsaxes = naxis;
    if (fits_write_key(f, TINT, "WCSAXES", &wcsaxes, "the input's celestial axes (+ head)", &status)) {
        rc = cfitsio_fail(err, errlen, "cannot write WCSAXES", status);
        goto done;
    }
    if (in && (rc = copy_wcs(f, in, in_len, input_hdu, err, errlen)) != 0)
        goto done;
    if (naxis == 3) {
        double one = 1.0, zero = 0.0;
        fits_write_key(f, TSTRING, "CTYPE3", (void *)"HEAD", "attention head (0-based)", &status);
        fits_write_key(f, TDOUBLE, "CRPIX3", &one, NULL, &status);
        fits_write_key(f, TDOUBLE, "CRVAL3", &zero, NULL, &status);
        fits_write_key(f, TDOUBLE, "CDELT3", &one, NULL, &status);
    }
    if (write_meta(f, meta, &status) ||
        fits_write_imgnull(f, TFLOAT, 1, total, (void *)planes, NULL, &status)) {
        rc = cfitsio_fail(err, errlen, "cannot write the map", status);
        goto done;
    }
    LONGLONG head = 0, data = 0, end = 0;
    if (fits_get_hduaddrll(f, &head, &data, &end, &status)) {
        rc = cfitsio_fail(err, errlen, "cannot size the map", status);
        goto done;
    }
    int close_status = 0;
    fits_close_file(f, &close_status);
    f = NULL;
    if (close_status) {
        rc = cfitsio_fail(err, errlen, "cannot finish the map", close_status);
        goto done;
    }
    size_t len = (size_t)end;
    if (len % FITS_RECORD)
        len += FITS_RECORD - len % FITS_RECORD;
    if (len > memsize) {
        rc = error_set(err, errlen, -1, "the map's %zu bytes exceed cfitsio's %zu", len, memsize);
        goto done;
    }
    *out = mem;
    *out_len = len;
    mem = NULL;
done:
    if (f) {
        int s2 = 0;
        fits_close_file(f, &s2);
    }
    image_cfitsio_end(lock);
    free(mem);
    free(inflated);
    free(padded);
    return rc;
}
