/* Tests only: FITS files assembled in memory card by card, so each bad-input test states exactly the
 * header it feeds the decoder. Values are written big-endian as FITS requires. Aborts on allocation
 * failure (a test helper, not library code). */
#ifndef STOPCAL_TEST_FITS_BUILDER_H
#define STOPCAL_TEST_FITS_BUILDER_H

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct fb {
    unsigned char *buf;
    size_t len, cap;
};

static void fb_reserve(struct fb *f, size_t more)
{
    if (f->len + more <= f->cap)
        return;
    size_t cap = f->cap ? f->cap : 8192;
    while (cap < f->len + more)
        cap *= 2;
    f->buf = realloc(f->buf, cap);
    if (!f->buf)
        abort();
    f->cap = cap;
}

static void fb_bytes(struct fb *f, const void *p, size_t n)
{
    fb_reserve(f, n);
    memcpy(f->buf + f->len, p, n);
    f->len += n;
}

/* One 80-character card, printf-style, space padded. */
__attribute__((format(printf, 2, 3))) static void fb_card(struct fb *f, const char *fmt, ...)
{
    char card[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(card, sizeof card, fmt, ap);
    va_end(ap);
    if (n > 80)
        n = 80;
    memset(card + n, ' ', 80 - (size_t)n);
    fb_bytes(f, card, 80);
}

/* A keyword = integer card in fixed format. */
static void fb_int(struct fb *f, const char *key, long long v) { fb_card(f, "%-8.8s= %20lld", key, v); }

/* END, then spaces up to the next 2880-byte boundary. */
static void fb_end(struct fb *f)
{
    fb_card(f, "END");
    while (f->len % 2880) {
        fb_reserve(f, 1);
        f->buf[f->len++] = ' ';
    }
}

/* Zero bytes up to the next 2880-byte boundary (data padding). */
static void fb_pad_data(struct fb *f)
{
    while (f->len % 2880) {
        fb_reserve(f, 1);
        f->buf[f->len++] = 0;
    }
}

static void fb_be32f(struct fb *f, float v)
{
    uint32_t u;
    memcpy(&u, &v, 4);
    unsigned char b[4] = {(unsigned char)(u >> 24), (unsigned char)(u >> 16), (unsigned char)(u >> 8), (unsigned char)u};
    fb_bytes(f, b, 4);
}

static void fb_be64f(struct fb *f, double v)
{
    uint64_t u;
    memcpy(&u, &v, 8);
    unsigned char b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)(u >> (56 - 8 * i));
    fb_bytes(f, b, 8);
}

static void fb_be16(struct fb *f, int16_t v)
{
    unsigned char b[2] = {(unsigned char)((uint16_t)v >> 8), (unsigned char)v};
    fb_bytes(f, b, 2);
}

/* A primary header for a float32 image of the given axes (naxis of them). */
static void fb_primary(struct fb *f, int bitpix, int naxis, const long long *axes)
{
    fb_card(f, "SIMPLE  = %20s", "T");
    fb_int(f, "BITPIX", bitpix);
    fb_int(f, "NAXIS", naxis);
    for (int i = 0; i < naxis; i++) {
        char key[16];
        snprintf(key, sizeof key, "NAXIS%d", i + 1);
        fb_int(f, key, axes[i]);
    }
}

/* A complete float32 FITS image, w × h, from values (row-major, h rows of w). */
static struct fb fb_image_f32(int w, int h, const float *values)
{
    struct fb f = {0};
    long long axes[2] = {w, h};
    fb_primary(&f, -32, 2, axes);
    fb_end(&f);
    for (long long i = 0; i < (long long)w * h; i++)
        fb_be32f(&f, values[i]);
    fb_pad_data(&f);
    return f;
}

#endif
