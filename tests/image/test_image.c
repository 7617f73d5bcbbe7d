/* Unit tests of the image library: bad input of every kind refused with a message that names the
 * problem (never a crash), the ceilings (gzip bomb included), file names read literally, the
 * first-image-extension rule, storage types, non-finite pixels, seeded noise, thread safety. The
 * numerical parity with the Python reference lives in test_parity.py. */
#include <fitsio.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "check.h"
#include "fits_builder.h"
#include "fits_tiles.h"
#include "image.h"
#include "preprocess.h"

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif

/* --- helpers ---------------------------------------------------------------------------------- */

static struct model_config config(enum model_profile profile, int size)
{
    struct model_config c;
    memset(&c, 0, sizeof c);
    c.profile = profile;
    c.input_size = size;
    for (int i = 0; i < 3; i++) {
        c.mean[i] = 0.0f;
        c.std[i] = 1.0f;
    }
    return c;
}

/* A noisy sky: Gaussian noise (Box–Muller on a fixed LCG) plus a few bright points. */
static float *sky(int w, int h, unsigned seed)
{
    float *v = malloc((size_t)w * h * sizeof *v);
    uint64_t s = seed * 2654435761u + 1;
    for (int i = 0; i < w * h; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        double u1 = ((s >> 11) + 1.0) / 9007199254740993.0;
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        double u2 = (s >> 11) / 9007199254740992.0;
        v[i] = (float)(1e-4 * sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2));
    }
    for (int k = 0; k < 5; k++)
        v[(k * 7919 + 13) % (w * h)] += 0.05f * (k + 1);
    return v;
}

/* Decode and expect failure with code and a message containing `needle`. */
static void expect_decode_error(const void *bytes, size_t len, const struct image_limits *lim, int code,
                                const char *needle)
{
    char err[512] = "";
    struct image img;
    int rc = image_decode(&img, bytes, len, lim, err, sizeof err);
    CHECK(rc == code, "rc %d, expected %d (message: %s)", rc, code, err);
    CHECK(strstr(err, needle) != NULL, "message '%s' does not mention '%s'", err, needle);
    CHECK(img.pixels == NULL, "pixels left allocated on error");
    if (rc == IMAGE_OK)
        image_free(&img);
}

/* Preprocess bytes, expect failure with code and a message containing `needle`. */
static void expect_tensor_error(const void *bytes, size_t len, int code, const char *needle)
{
    struct model_config c = config(MODEL_PROFILE_CORTEXCHANGE_V2, 28);
    float out[3 * 28 * 28];
    char err[512] = "";
    struct preprocess_stats st;
    int rc = image_to_tensor(out, bytes, len, NULL, &c, 0, &st, err, sizeof err);
    CHECK(rc == code, "rc %d, expected %d (message: %s)", rc, code, err);
    CHECK(strstr(err, needle) != NULL, "message '%s' does not mention '%s'", err, needle);
}

static struct fb header_only(int bitpix, int naxis, const long long *axes)
{
    struct fb f = {0};
    fb_primary(&f, bitpix, naxis, axes);
    fb_end(&f);
    return f;
}

/* gzip (one member) of bytes, via zlib. */
static unsigned char *gzip_bytes(const void *in, size_t n, size_t *out_len)
{
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    if (deflateInit2(&zs, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        abort();
    size_t cap = deflateBound(&zs, n) + 64;
    unsigned char *out = malloc(cap);
    zs.next_in = (unsigned char *)in;
    zs.avail_in = (uInt)n;
    zs.next_out = out;
    zs.avail_out = (uInt)cap;
    if (deflate(&zs, Z_FINISH) != Z_STREAM_END)
        abort();
    *out_len = zs.total_out;
    deflateEnd(&zs);
    return out;
}

/* --- bad input ---------------------------------------------------------------------------------- */

static void test_fits_rejects_empty_input(void)
{
    expect_decode_error("", 0, NULL, IMAGE_EINVAL, "empty");
    size_t gl;
    unsigned char *g = gzip_bytes("", 0, &gl);
    expect_decode_error(g, gl, NULL, IMAGE_EINVAL, "empty");
    free(g);
}

static void test_fits_rejects_non_fits(void)
{
    const char text[] = "<html><body>this is not a FITS file, it is a web page</body></html>";
    expect_decode_error(text, sizeof text, NULL, IMAGE_EINVAL, "not a FITS file");
    struct fb f = {0};
    fb_card(&f, "SIMPLE  =                    F");
    fb_int(&f, "BITPIX", -32);
    fb_end(&f);
    expect_decode_error(f.buf, f.len, NULL, IMAGE_EINVAL, "SIMPLE = F");
    free(f.buf);
}

static void test_fits_rejects_truncated_header(void)
{
    float *v = sky(40, 30, 1);
    struct fb f = fb_image_f32(40, 30, v);
    expect_decode_error(f.buf, 300, NULL, IMAGE_EINVAL, "truncated FITS header"); /* END is card 6 */
    expect_decode_error(f.buf, 80 * 3 + 17, NULL, IMAGE_EINVAL, "truncated FITS header");
    free(f.buf);
    free(v);
}

static void test_fits_rejects_truncated_data(void)
{
    float *v = sky(40, 30, 2);
    struct fb f = fb_image_f32(40, 30, v);
    expect_decode_error(f.buf, 2880 + 40 * 30 * 4 - 1, NULL, IMAGE_EINVAL, "truncated data");
    expect_decode_error(f.buf, 2880, NULL, IMAGE_EINVAL, "truncated data");
    /* Missing only the final block padding is accepted (astropy reads such files too). */
    struct image img;
    char err[256];
    int rc = image_decode(&img, f.buf, 2880 + 40 * 30 * 4, NULL, err, sizeof err);
    CHECK(rc == IMAGE_OK, "unpadded data refused: %s", err);
    if (rc == IMAGE_OK) {
        CHECK(img.width == 40 && img.height == 30, "%lldx%lld", (long long)img.width, (long long)img.height);
        CHECK(image_pixel(&img, 1199) == (double)v[1199], "last pixel %g vs %g", image_pixel(&img, 1199),
              (double)v[1199]);
        image_free(&img);
    }
    free(f.buf);
    free(v);
}

static void test_fits_rejects_naxis_0(void)
{
    struct fb f = header_only(-32, 0, NULL);
    expect_decode_error(f.buf, f.len, NULL, IMAGE_EINVAL, "no image data: the primary HDU has NAXIS = 0");
    free(f.buf);
}

static void test_fits_rejects_naxis_1(void)
{
    long long axes[1] = {100};
    struct fb f = header_only(-32, 1, axes);
    for (int i = 0; i < 100 * 4; i++)
        fb_bytes(&f, "\0", 1);
    fb_pad_data(&f);
    expect_decode_error(f.buf, f.len, NULL, IMAGE_EINVAL, "NAXIS = 1: image must be 2-D");
    free(f.buf);
}

static void test_fits_rejects_3d_non_degenerate(void)
{
    long long axes[3] = {10, 12, 5};
    struct fb f = header_only(-32, 3, axes);
    expect_decode_error(f.buf, f.len, NULL, IMAGE_EINVAL,
                        "NAXIS3 = 5: image must be 2-D after dropping degenerate axes");
    free(f.buf);
}

static void test_fits_drops_degenerate_axes(void)
{
    /* LOFAR's 4-D images (NAXIS3 = NAXIS4 = 1) and a leading degenerate axis. */
    long long shapes[2][4] = {{10, 12, 1, 1}, {1, 10, 12, 1}};
    for (int s = 0; s < 2; s++) {
        struct fb f = header_only(-32, 4, shapes[s]);
        for (int i = 0; i < 120; i++)
            fb_be32f(&f, (float)i);
        fb_pad_data(&f);
        struct image img;
        char err[256];
        int rc = image_decode(&img, f.buf, f.len, NULL, err, sizeof err);
        CHECK(rc == IMAGE_OK, "shape %d: %s", s, err);
        if (rc == IMAGE_OK) {
            CHECK(img.width == 10 && img.height == 12, "shape %d: %lldx%lld", s, (long long)img.width,
                  (long long)img.height);
            CHECK(image_pixel(&img, 57) == 57.0, "pixel 57 = %g", image_pixel(&img, 57));
            image_free(&img);
        }
        free(f.buf);
    }
}

static void test_fits_rejects_overflowing_naxis(void)
{
    long long axes[2] = {1LL << 62, 1LL << 62};
    struct fb f = header_only(-32, 2, axes);
    expect_decode_error(f.buf, f.len, NULL, IMAGE_EINVAL, "overflows");
    free(f.buf);
    long long axes3[3] = {1LL << 31, 1LL << 31, 1LL << 3};
    f = header_only(64, 3, axes3);
    expect_decode_error(f.buf, f.len, NULL, IMAGE_EINVAL, "overflows");
    free(f.buf);
    /* More digits than 64 bits hold. */
    f = (struct fb){0};
    fb_card(&f, "SIMPLE  =                    T");
    fb_int(&f, "BITPIX", -32);
    fb_int(&f, "NAXIS", 2);
    fb_card(&f, "NAXIS1  = 123456789012345678901234567890");
    fb_int(&f, "NAXIS2", 10);
    fb_end(&f);
    expect_decode_error(f.buf, f.len, NULL, IMAGE_EINVAL, "NAXIS1 is not a non-negative integer");
    free(f.buf);
}

static void test_fits_rejects_1x1(void)
{
    long long axes[2] = {1, 1};
    struct fb f = header_only(-32, 2, axes);
    fb_be32f(&f, 1.0f);
    fb_pad_data(&f);
    expect_decode_error(f.buf, f.len, NULL, IMAGE_EINVAL, "image is 1x1");
    free(f.buf);
}

static void test_fits_rejects_invalid_bitpix(void)
{
    long long axes[2] = {10, 10};
    struct fb f = header_only(12, 2, axes);
    expect_decode_error(f.buf, f.len, NULL, IMAGE_EINVAL, "BITPIX = 12 is not valid");
    free(f.buf);
}

static void test_preprocess_rejects_constant_image(void)
{
    float v[64 * 48];
    for (int i = 0; i < 64 * 48; i++)
        v[i] = 5.0f;
    struct fb f = fb_image_f32(64, 48, v);
    expect_tensor_error(f.buf, f.len, IMAGE_EINVAL, "rms = 0");
    free(f.buf);
    /* Constant apart from a few pixels: the clipped set collapses onto one value. */
    v[10] = 7.0f;
    v[20] = -3.0f;
    f = fb_image_f32(64, 48, v);
    expect_tensor_error(f.buf, f.len, IMAGE_EINVAL, "rms = 0");
    free(f.buf);
}

static void test_preprocess_rejects_all_zero_image(void)
{
    float v[64 * 48] = {0};
    struct fb f = fb_image_f32(64, 48, v);
    expect_tensor_error(f.buf, f.len, IMAGE_EINVAL, "rms is undefined");
    free(f.buf);
}

static void test_preprocess_rejects_all_nan_image(void)
{
    float v[64 * 48];
    for (int i = 0; i < 64 * 48; i++)
        v[i] = i % 3 ? NAN : INFINITY;
    struct fb f = fb_image_f32(64, 48, v);
    expect_tensor_error(f.buf, f.len, IMAGE_EINVAL, "all zero or all NaN");
    free(f.buf);
}

static void test_preprocess_rejects_overflowing_values(void)
{
    struct fb f = {0};
    long long axes[2] = {40, 30};
    fb_primary(&f, -64, 2, axes);
    fb_end(&f);
    float *v = sky(40, 30, 35);
    for (int i = 0; i < 1200; i++)
        fb_be64f(&f, v[i] * 1e306); /* the rms is finite, 50000 rms is not */
    fb_pad_data(&f);
    expect_tensor_error(f.buf, f.len, IMAGE_EINVAL, "rms");
    free(f.buf);
    free(v);
}

static void test_random_bytes_never_crash(void)
{
    uint64_t s = 12345;
    size_t n_ok = 0;
    for (int t = 0; t < 300; t++) {
        size_t len = 1 + (size_t)(t * 97 % 9000);
        unsigned char *b = malloc(len);
        for (size_t i = 0; i < len; i++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            b[i] = (unsigned char)(s >> 56);
        }
        /* a third start like a FITS header, a third like gzip, the rest pure noise */
        if (t % 3 == 0 && len > 30)
            memcpy(b, "SIMPLE  =                    T", 30);
        if (t % 3 == 1 && len > 2) {
            b[0] = 0x1f;
            b[1] = 0x8b;
        }
        struct model_config c = config(t % 2 ? MODEL_PROFILE_CORTEXCHANGE_V3 : MODEL_PROFILE_CORTEXCHANGE_V2, 14);
        float out[3 * 14 * 14];
        char err[256] = "";
        int rc = image_to_tensor(out, b, len, NULL, &c, 0, NULL, err, sizeof err);
        n_ok += rc == IMAGE_OK;
        CHECK(rc == IMAGE_OK || err[0] != '\0', "case %d: error %d without a message", t, rc);
        free(b);
    }
    CHECK(n_ok == 0, "%zu random buffers decoded as images", n_ok);
}

/* --- ceilings ----------------------------------------------------------------------------------- */

static long peak_rss_kib(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

static void test_gzip_bomb_refused_at_ceiling(void)
{
    /* 256 MiB of zeros deflate to ~256 KiB; the ceiling is 8 MiB. */
    const size_t inflated = (size_t)256 << 20, chunk = (size_t)1 << 20;
    unsigned char *zeros = calloc(1, chunk);
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    deflateInit2(&zs, 9, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY);
    size_t cap = 2 << 20;
    unsigned char *bomb = malloc(cap);
    zs.next_out = bomb;
    zs.avail_out = (uInt)cap;
    for (size_t done = 0; done < inflated; done += chunk) {
        zs.next_in = zeros;
        zs.avail_in = (uInt)chunk;
        deflate(&zs, done + chunk < inflated ? Z_NO_FLUSH : Z_FINISH);
    }
    size_t bomb_len = zs.total_out;
    deflateEnd(&zs);
    free(zeros);

    struct image_limits lim = {(size_t)8 << 20, IMAGE_DEFAULT_MAX_PIXELS};
    long before = peak_rss_kib();
    expect_decode_error(bomb, bomb_len, &lim, IMAGE_ETOOBIG, "inflates past the ceiling of 8388608 bytes");
    long grown_mib = (peak_rss_kib() - before) / 1024;
    printf("    gzip bomb: %zu bytes → refused at 8 MiB; peak RSS grew by %ld MiB\n", bomb_len, grown_mib);
    /* ASan's allocator keeps freed memory in quarantine and adds redzones, so RSS says nothing about
     * the decoder there; the Release pass of tests/run_all.sh checks the bound. */
    if (UNDER_ASAN)
        printf("    gzip bomb memory bound: not checked under ASan (RSS is the allocator's); the "
               "Release pass checks it\n");
    else
        CHECK(grown_mib < 24, "peak RSS grew by %ld MiB for an 8 MiB ceiling", grown_mib);
    free(bomb);
}

static void test_gzip_bodies(void)
{
    float *v = sky(50, 40, 3);
    struct fb f = fb_image_f32(50, 40, v);
    size_t gl;
    unsigned char *g = gzip_bytes(f.buf, f.len, &gl);
    struct image a, b;
    char err[256];
    CHECK(image_decode(&a, f.buf, f.len, NULL, err, sizeof err) == IMAGE_OK, "%s", err);
    CHECK(image_decode(&b, g, gl, NULL, err, sizeof err) == IMAGE_OK, "%s", err);
    CHECK(b.compressed & 2, "gzip not reported");
    CHECK(a.width == b.width && a.height == b.height &&
              memcmp(a.pixels, b.pixels, (size_t)(a.width * a.height) * sizeof(float)) == 0,
          "gzip body decodes differently");
    image_free(&a);
    image_free(&b);
    /* concatenated members (cat a.gz b.gz) are one stream; trailing zero padding is ignored */
    size_t h1l, h2l;
    unsigned char *h1 = gzip_bytes(f.buf, 2880, &h1l), *h2 = gzip_bytes(f.buf + 2880, f.len - 2880, &h2l);
    unsigned char *cat = malloc(h1l + h2l + 512);
    memcpy(cat, h1, h1l);
    memcpy(cat + h1l, h2, h2l);
    memset(cat + h1l + h2l, 0, 512);
    CHECK(image_decode(&b, cat, h1l + h2l + 512, NULL, err, sizeof err) == IMAGE_OK, "two members: %s", err);
    image_free(&b);
    expect_decode_error(g, gl - 9, NULL, IMAGE_EINVAL, "truncated gzip");
    memcpy(cat + h1l + h2l, "garbage!", 8);
    expect_decode_error(cat, h1l + h2l + 8, NULL, IMAGE_EINVAL, "trailing garbage");
    g[gl / 2] ^= 0x55;
    g[gl / 2 + 1] ^= 0xaa;
    struct image c;
    int rc = image_decode(&c, g, gl, NULL, err, sizeof err);
    CHECK(rc != IMAGE_OK, "corrupted gzip accepted");
    if (rc == IMAGE_OK)
        image_free(&c);
    free(cat);
    free(h1);
    free(h2);
    free(g);
    free(f.buf);
    free(v);
}

static void test_pixel_ceiling_checked_before_allocation(void)
{
    long long axes[2] = {100000, 100000}; /* 10^10 pixels, 40 GB, declared in a 2880-byte file */
    struct fb f = header_only(-32, 2, axes);
    expect_decode_error(f.buf, f.len, NULL, IMAGE_ETOOBIG, "over the ceiling");
    struct image_limits lim = {IMAGE_DEFAULT_MAX_BYTES, 1000};
    long long small[2] = {40, 30};
    free(f.buf);
    f = header_only(-32, 2, small);
    expect_decode_error(f.buf, f.len, &lim, IMAGE_ETOOBIG, "1200 pixels is over the ceiling of 1000");
    free(f.buf);
}

static void test_byte_ceiling(void)
{
    float *v = sky(50, 40, 4);
    struct fb f = fb_image_f32(50, 40, v);
    struct image_limits lim = {f.len - 1, IMAGE_DEFAULT_MAX_PIXELS};
    expect_decode_error(f.buf, f.len, &lim, IMAGE_ETOOBIG, "over the ceiling");
    size_t gl;
    unsigned char *g = gzip_bytes(f.buf, f.len, &gl);
    lim.max_bytes = f.len - 1; /* the compressed body fits, the inflated one does not */
    expect_decode_error(g, gl, &lim, IMAGE_ETOOBIG, "inflates past the ceiling");
    free(g);
    free(f.buf);
    free(v);
}

/* --- file names --------------------------------------------------------------------------------- */

static void write_file(const char *path, const void *b, size_t n)
{
    FILE *fp = fopen(path, "wb");
    if (!fp || fwrite(b, 1, n, fp) != n || fclose(fp) != 0)
        abort();
}

static void test_read_file_takes_extended_syntax_name_literally(void)
{
    char dir[] = "/tmp/stopcal-image-test-XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    char plain[512], bracket[512], mem[512];
    snprintf(plain, sizeof plain, "%s/x.fits", dir);
    snprintf(bracket, sizeof bracket, "%s/x.fits[1][col X=1]", dir);
    snprintf(mem, sizeof mem, "%s/mem://x.fits", dir);
    float *a = sky(30, 20, 5), *b = sky(44, 33, 6);
    struct fb fa = fb_image_f32(30, 20, a), fbb = fb_image_f32(44, 33, b);
    write_file(plain, fa.buf, fa.len);
    write_file(bracket, fbb.buf, fbb.len); /* a different image under the bracketed name */
    unsigned char *bytes;
    size_t len;
    char err[512];
    int rc = image_read_file(bracket, 1 << 20, &bytes, &len, err, sizeof err);
    CHECK(rc == IMAGE_OK, "%s", err);
    if (rc == IMAGE_OK) {
        CHECK(len == fbb.len && memcmp(bytes, fbb.buf, len) == 0, "read %zu bytes, not the bracketed file", len);
        struct image img;
        CHECK(image_decode(&img, bytes, len, NULL, err, sizeof err) == IMAGE_OK, "%s", err);
        CHECK(img.width == 44 && img.height == 33, "decoded %lldx%lld: cfitsio syntax was applied",
              (long long)img.width, (long long)img.height);
        image_free(&img);
        free(bytes);
    }
    rc = image_read_file(mem, 1 << 20, &bytes, &len, err, sizeof err);
    CHECK(rc == IMAGE_EIO && strstr(err, "No such file"), "'mem://' name: rc %d %s", rc, err);
    rc = image_read_file("-", 1 << 20, &bytes, &len, err, sizeof err);
    CHECK(rc == IMAGE_EIO, "'-' read as stdin: rc %d", rc);
    rc = image_read_file(dir, 1 << 20, &bytes, &len, err, sizeof err);
    CHECK(rc == IMAGE_EIO && strstr(err, "directory"), "directory: rc %d %s", rc, err);
    unlink(plain);
    unlink(bracket);
    rmdir(dir);
    free(fa.buf);
    free(fbb.buf);
    free(a);
    free(b);
}

static void test_read_file_enforces_ceiling(void)
{
    char path[] = "/tmp/stopcal-image-big-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0, "mkstemp");
    unsigned char buf[10000] = {0};
    CHECK(write(fd, buf, sizeof buf) == (ssize_t)sizeof buf, "write");
    close(fd);
    unsigned char *bytes;
    size_t len;
    char err[512];
    int rc = image_read_file(path, 5000, &bytes, &len, err, sizeof err);
    CHECK(rc == IMAGE_ETOOBIG && strstr(err, "ceiling"), "rc %d %s", rc, err);
    rc = image_read_file(path, 10000, &bytes, &len, err, sizeof err);
    CHECK(rc == IMAGE_OK && len == 10000, "rc %d %s", rc, err);
    if (rc == IMAGE_OK)
        free(bytes);
    unlink(path);
    /* A stream with no size: the ceiling holds while reading. */
    rc = image_read_file("/dev/zero", 1 << 20, &bytes, &len, err, sizeof err);
    CHECK(rc == IMAGE_ETOOBIG, "/dev/zero: rc %d %s", rc, err);
    rc = image_read_file("/nonexistent/stopcal.fits", 1 << 20, &bytes, &len, err, sizeof err);
    CHECK(rc == IMAGE_EIO && strstr(err, "No such file"), "missing file: rc %d %s", rc, err);
}

/* --- HDUs, types, pixels ------------------------------------------------------------------------ */

static void test_first_image_extension_after_a_table(void)
{
    struct fb f = {0};
    fb_primary(&f, 8, 0, NULL);
    fb_card(&f, "EXTEND  =                    T");
    fb_end(&f);
    /* HDU 2: a binary table with 3 rows of 4 bytes */
    fb_card(&f, "XTENSION= 'BINTABLE'");
    fb_int(&f, "BITPIX", 8);
    fb_int(&f, "NAXIS", 2);
    fb_int(&f, "NAXIS1", 4);
    fb_int(&f, "NAXIS2", 3);
    fb_int(&f, "PCOUNT", 0);
    fb_int(&f, "GCOUNT", 1);
    fb_int(&f, "TFIELDS", 1);
    fb_card(&f, "TFORM1  = '1J      '");
    fb_end(&f);
    for (int i = 0; i < 12; i++)
        fb_bytes(&f, "\1", 1);
    fb_pad_data(&f);
    size_t table_only = f.len;
    /* HDU 3: the image */
    fb_card(&f, "XTENSION= 'IMAGE   '");
    fb_int(&f, "BITPIX", -64);
    fb_int(&f, "NAXIS", 2);
    fb_int(&f, "NAXIS1", 6);
    fb_int(&f, "NAXIS2", 5);
    fb_int(&f, "PCOUNT", 0);
    fb_int(&f, "GCOUNT", 1);
    fb_end(&f);
    for (int i = 0; i < 30; i++)
        fb_be64f(&f, i * 0.5);
    fb_pad_data(&f);
    struct image img;
    char err[256];
    int rc = image_decode(&img, f.buf, f.len, NULL, err, sizeof err);
    CHECK(rc == IMAGE_OK, "%s", err);
    if (rc == IMAGE_OK) {
        CHECK(img.hdu == 3 && img.width == 6 && img.height == 5 && img.dtype == IMAGE_F64, "hdu %d %lldx%lld",
              img.hdu, (long long)img.width, (long long)img.height);
        CHECK(image_pixel(&img, 29) == 14.5, "pixel 29 = %g", image_pixel(&img, 29));
        image_free(&img);
    }
    expect_decode_error(f.buf, table_only, NULL, IMAGE_EINVAL, "no image data");
    free(f.buf);
}

static void test_storage_type_and_scaling(void)
{
    struct {
        int bitpix;
        double bscale, bzero;
        enum image_dtype want;
    } cases[] = {{16, 1.0, 0.0, IMAGE_F32}, {16, 0.5, 3.0, IMAGE_F64}, {8, 1.0, 0.0, IMAGE_F32},
                 {32, 1.0, 0.0, IMAGE_F64}, {-32, 1.0, 0.0, IMAGE_F32}, {-32, 2.0, 0.0, IMAGE_F64}};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        struct fb f = {0};
        long long axes[2] = {4, 3};
        fb_primary(&f, cases[k].bitpix, 2, axes);
        fb_card(&f, "BSCALE  = %20.10f", cases[k].bscale);
        fb_card(&f, "BZERO   = %20.10f", cases[k].bzero);
        if (cases[k].bitpix == 16)
            fb_int(&f, "BLANK", -7);
        fb_end(&f);
        for (int i = 0; i < 12; i++) {
            int raw = (i == 5 && cases[k].bitpix == 16) ? -7 : i * 3 - 5;
            if (cases[k].bitpix == 16)
                fb_be16(&f, (int16_t)raw);
            else if (cases[k].bitpix == 8)
                fb_bytes(&f, &(unsigned char){(unsigned char)(i * 20)}, 1);
            else if (cases[k].bitpix == 32) {
                unsigned char b[4] = {(unsigned char)((uint32_t)raw >> 24), (unsigned char)((uint32_t)raw >> 16),
                                      (unsigned char)((uint32_t)raw >> 8), (unsigned char)raw};
                fb_bytes(&f, b, 4);
            } else
                fb_be32f(&f, (float)raw);
        }
        fb_pad_data(&f);
        struct image img;
        char err[256];
        int rc = image_decode(&img, f.buf, f.len, NULL, err, sizeof err);
        CHECK(rc == IMAGE_OK, "case %zu: %s", k, err);
        if (rc == IMAGE_OK) {
            CHECK(img.dtype == cases[k].want, "case %zu: BITPIX %d stored as %s", k, cases[k].bitpix,
                  img.dtype == IMAGE_F32 ? "float" : "double");
            double raw3 = cases[k].bitpix == 8 ? 60.0 : 3 * 3 - 5;
            double want = cases[k].bzero + cases[k].bscale * raw3;
            CHECK(image_pixel(&img, 3) == want, "case %zu: pixel 3 = %.17g, want %.17g", k, image_pixel(&img, 3),
                  want);
            if (cases[k].bitpix == 16)
                CHECK(isnan(image_pixel(&img, 5)), "case %zu: BLANK pixel is %g, not NaN", k, image_pixel(&img, 5));
            image_free(&img);
        }
        free(f.buf);
    }
}

static void test_nonfinite_pixels_count_as_zero(void)
{
    int w = 60, h = 50;
    float *v = sky(w, h, 7), *z = malloc((size_t)w * h * sizeof *z);
    memcpy(z, v, (size_t)w * h * sizeof *z);
    int bad[] = {0, 1, 2, 100, 777, 1500, 2999};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        v[bad[i]] = i % 3 == 0 ? NAN : (i % 3 == 1 ? INFINITY : -INFINITY);
        z[bad[i]] = 0.0f;
    }
    struct fb fv = fb_image_f32(w, h, v), fz = fb_image_f32(w, h, z);
    for (int p = 0; p < 2; p++) {
        struct model_config c = config(p ? MODEL_PROFILE_CORTEXCHANGE_V3 : MODEL_PROFILE_CORTEXCHANGE_V2, 56);
        float *a = malloc(3 * 56 * 56 * sizeof *a), *b = malloc(3 * 56 * 56 * sizeof *b);
        struct preprocess_stats sa, sb;
        char err[256];
        CHECK(image_to_tensor(a, fv.buf, fv.len, NULL, &c, 0, &sa, err, sizeof err) == IMAGE_OK, "%s", err);
        CHECK(image_to_tensor(b, fz.buf, fz.len, NULL, &c, 0, &sb, err, sizeof err) == IMAGE_OK, "%s", err);
        CHECK(sa.nonfinite_pixels == 7 && sb.nonfinite_pixels == 0, "nonfinite %lld, %lld",
              (long long)sa.nonfinite_pixels, (long long)sb.nonfinite_pixels);
        CHECK(sa.rms == sb.rms && memcmp(a, b, 3 * 56 * 56 * sizeof *a) == 0,
              "profile %d: NaN/Inf pixels are not the same as 0 (rms %g vs %g)", p, sa.rms, sb.rms);
        for (int i = 0; i < 3 * 56 * 56; i++)
            if (!isfinite(a[i])) {
                CHECK(0, "non-finite output at %d", i);
                break;
            }
        free(a);
        free(b);
    }
    free(fv.buf);
    free(fz.buf);
    free(v);
    free(z);
}

static void test_config_errors(void)
{
    float *v = sky(40, 40, 8);
    struct fb f = fb_image_f32(40, 40, v);
    float out[3 * 28 * 28];
    char err[256];
    struct model_config c = config(MODEL_PROFILE_CORTEXCHANGE_V3, 28);
    c.std[1] = 0.0f;
    CHECK(image_to_tensor(out, f.buf, f.len, NULL, &c, 0, NULL, err, sizeof err) == IMAGE_ECONFIG, "std 0");
    c = config((enum model_profile)7, 28);
    CHECK(image_to_tensor(out, f.buf, f.len, NULL, &c, 0, NULL, err, sizeof err) == IMAGE_ECONFIG, "profile 7");
    c = config(MODEL_PROFILE_CORTEXCHANGE_V2, 0);
    CHECK(image_to_tensor(out, f.buf, f.len, NULL, &c, 0, NULL, err, sizeof err) == IMAGE_ECONFIG, "size 0");
    c = config(MODEL_PROFILE_CORTEXCHANGE_V2, 28);
    c.noise_sigma = NAN;
    CHECK(image_to_tensor(out, f.buf, f.len, NULL, &c, 0, NULL, err, sizeof err) == IMAGE_ECONFIG, "noise NaN");
    CHECK(image_to_tensor(out, f.buf, f.len, NULL, NULL, 0, NULL, err, sizeof err) == IMAGE_ECONFIG, "no config");
    free(f.buf);
    free(v);
}

/* --- noise -------------------------------------------------------------------------------------- */

static void noise_stats(const float *a, const float *b, size_t n, double *mean, double *std)
{
    double s = 0, s2 = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - b[i];
        s += d;
        s2 += d * d;
    }
    *mean = s / n;
    *std = sqrt(s2 / n - *mean * *mean);
}

static void test_noise_is_seeded_and_optional(void)
{
    const int S = 112; /* the image is S×S so that V2's resize is the identity and its noise shows as is */
    float *v = sky(S, S, 9);
    struct fb f = fb_image_f32(S, S, v);
    const size_t n = 3 * (size_t)S * S;
    float *clean = malloc(n * 4), *a = malloc(n * 4), *b = malloc(n * 4), *c = malloc(n * 4);
    char err[256];
    for (int p = 0; p < 2; p++) {
        struct model_config cfg = config(p ? MODEL_PROFILE_CORTEXCHANGE_V3 : MODEL_PROFILE_CORTEXCHANGE_V2, S);
        CHECK(image_to_tensor(clean, f.buf, f.len, NULL, &cfg, 42, NULL, err, sizeof err) == IMAGE_OK, "%s", err);
        float *again = malloc(n * 4);
        CHECK(image_to_tensor(again, f.buf, f.len, NULL, &cfg, 43, NULL, err, sizeof err) == IMAGE_OK, "%s", err);
        CHECK(memcmp(clean, again, n * 4) == 0, "profile %d: without noise_sigma the seed changed the output", p);
        free(again);
        cfg.noise_sigma = 0.25f;
        CHECK(image_to_tensor(a, f.buf, f.len, NULL, &cfg, 42, NULL, err, sizeof err) == IMAGE_OK, "%s", err);
        CHECK(image_to_tensor(b, f.buf, f.len, NULL, &cfg, 42, NULL, err, sizeof err) == IMAGE_OK, "%s", err);
        CHECK(image_to_tensor(c, f.buf, f.len, NULL, &cfg, 43, NULL, err, sizeof err) == IMAGE_OK, "%s", err);
        CHECK(memcmp(a, b, n * 4) == 0, "profile %d: same seed, different noise", p);
        CHECK(memcmp(a, c, n * 4) != 0, "profile %d: different seeds, same noise", p);
        double mean, std;
        noise_stats(a, clean, (size_t)S * S, &mean, &std);
        printf("    profile %d: noise mean %.4f std %.4f (sigma 0.25)\n", p, mean, std);
        CHECK(fabs(mean) < 0.01 && fabs(std - 0.25) < 0.01, "profile %d: noise mean %g std %g", p, mean, std);
    }
    free(clean);
    free(a);
    free(b);
    free(c);
    free(f.buf);
    free(v);
}

static unsigned char *tile_compressed(int w, int h, const float *v, size_t *len);

/* --- tile compression ------------------------------------------------------------------------------ */

/* Our bounds-checked Rice walk decodes cfitsio's own Rice tiles to the pixels written, for 1-, 2- and
 * 4-byte data with smooth regions (low-entropy blocks), noise and wild values (high-entropy blocks). */
static void test_rice_walk_matches_cfitsio(void)
{
    const int w = 100, h = 7;
    int types[3] = {BYTE_IMG, SHORT_IMG, LONG_IMG};
    for (int t = 0; t < 3; t++) {
        int32_t *px = malloc((size_t)w * h * sizeof *px);
        uint64_t s = 99 + t;
        for (int i = 0; i < w * h; i++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            int32_t r = (int32_t)(s >> 33);
            int row = i / w;
            int32_t v = row == 0 ? 5 : (row == 1 ? i : (row < 5 ? r % 50 : r)); /* flat, ramp, noise, wild */
            px[i] = types[t] == BYTE_IMG ? (v & 0xff) : (types[t] == SHORT_IMG ? (int16_t)v : v);
        }
        void *mem = malloc(2880);
        size_t size = 2880;
        fitsfile *f;
        int status = 0, anynul = 0, col = 0;
        long naxes[2] = {w, h};
        fits_create_memfile(&f, &mem, &size, 2880, realloc, &status);
        fits_set_compression_type(f, RICE_1, &status);
        fits_create_img(f, types[t], 2, naxes, &status);
        /* cfitsio compresses only from the image's own type */
        unsigned char u8[700];
        int16_t i16[700];
        for (int i = 0; i < w * h; i++) {
            u8[i] = (unsigned char)px[i];
            i16[i] = (int16_t)px[i];
        }
        if (types[t] == BYTE_IMG)
            fits_write_img(f, TBYTE, 1, (LONGLONG)w * h, u8, &status);
        else if (types[t] == SHORT_IMG)
            fits_write_img(f, TSHORT, 1, (LONGLONG)w * h, i16, &status);
        else
            fits_write_img(f, TINT, 1, (LONGLONG)w * h, px, &status);
        fits_close_file(f, &status);
        CHECK(status == 0, "bytepix test: cfitsio could not write (%d)", status);
        if (status) {
            free(px);
            continue;
        }
        fits_open_memfile(&f, "rice.fits", READONLY, &mem, &size, 0, NULL, &status);
        fits_movabs_hdu(f, 2, NULL, &status);
        fits_get_colnum(f, CASEINSEN, "COMPRESSED_DATA", &col, &status);
        int bytepix = types[t] == BYTE_IMG ? 1 : (types[t] == SHORT_IMG ? 2 : 4);
        for (int row = 1; row <= h && status == 0; row++) {
            LONGLONG len = 0, off = 0;
            fits_read_descriptll(f, col, row, &len, &off, &status);
            unsigned char *bytes = malloc((size_t)len + 1);
            fits_read_col(f, TBYTE, col, row, 1, len, NULL, bytes, &anynul, &status);
            int32_t got[100];
            int rc = fits_rice_decode(bytes, (size_t)len, w, 32, bytepix, got);
            CHECK(rc == 0, "bytepix %d row %d: walk failed", bytepix, row);
            for (int i = 0; rc == 0 && i < w; i++)
                if (got[i] != px[(row - 1) * w + i]) {
                    CHECK(0, "bytepix %d row %d pixel %d: %d, wrote %d", bytepix, row, i, got[i], px[(row - 1) * w + i]);
                    break;
                }
            /* one byte short, and garbage, are refused rather than read past */
            CHECK(fits_rice_decode(bytes, (size_t)len - 1, w, 32, bytepix, NULL) != 0 || len <= 1,
                  "bytepix %d row %d: a truncated tile passed", bytepix, row);
            memset(bytes, 0, (size_t)len);
            bytes[bytepix] = 0x08; /* a valid code, then nothing but zero bits: an unending unary run */
            CHECK(fits_rice_decode(bytes, (size_t)len, w, 32, bytepix, NULL) != 0,
                  "bytepix %d row %d: an all-zero stream passed", bytepix, row);
            free(bytes);
        }
        CHECK(status == 0, "cfitsio status %d", status);
        fits_close_file(f, &status);
        free(mem);
        free(px);
    }
}

/* A Rice-compressed image with one tile's bytes zeroed past its first code: cfitsio alone would read
 * past the tile (and crash on a long enough run); the guard refuses it with a message. Also an
 * HCOMPRESS_1 image (not guarded, so not accepted). */
static void test_corrupt_compressed_tiles_are_refused(void)
{
    const int w = 64, h = 16;
    float *v = sky(w, h, 31);
    for (int i = 0; i < w * h; i++)
        v[i] = roundf(v[i] * 1e5f); /* integers: lossless Rice */
    size_t len;
    unsigned char *bytes = tile_compressed(w, h, v, &len);
    struct image img;
    char err[256];
    CHECK(image_decode(&img, bytes, len, NULL, err, sizeof err) == IMAGE_OK, "intact file refused: %s", err);
    image_free(&img);
    /* Find tile 5's bytes in the heap; keep its first value, then a block code for fs = 0 followed by
     * nothing but zero bits: a unary run that never ends inside the tile. */
    void *mem = bytes;
    size_t size = len;
    fitsfile *f;
    int status = 0, col = 0;
    LONGLONG tile_len = 0, tile_off = 0, data_start = 0, head_start = 0, data_end = 0, theap = 0;
    fits_open_memfile(&f, "t.fits", READONLY, &mem, &size, 0, NULL, &status);
    fits_movabs_hdu(f, 2, NULL, &status);
    fits_get_colnum(f, CASEINSEN, "COMPRESSED_DATA", &col, &status);
    fits_read_descriptll(f, col, 5, &tile_len, &tile_off, &status);
    fits_get_hduaddrll(f, &head_start, &data_start, &data_end, &status);
    long long naxis1 = 0, naxis2 = 0;
    fits_read_key(f, TLONGLONG, "NAXIS1", &naxis1, NULL, &status);
    fits_read_key(f, TLONGLONG, "NAXIS2", &naxis2, NULL, &status);
    theap = naxis1 * naxis2;
    fits_close_file(f, &status);
    CHECK(status == 0 && tile_len > 5, "could not locate tile 5 (status %d)", status);
    if (status == 0 && tile_len > 5) {
        unsigned char *t = bytes + data_start + theap + tile_off;
        memset(t + 4, 0, (size_t)tile_len - 4);
        t[4] = 0x08; /* 5-bit code 00001: fs = 0 (4-byte pixels) */
        int rc = image_decode(&img, bytes, len, NULL, err, sizeof err);
        CHECK(rc == IMAGE_EINVAL && strstr(err, "tile 5: corrupt Rice-compressed data"), "rc %d: %s", rc, err);
        if (rc == IMAGE_OK)
            image_free(&img);
    }
    free(bytes);

    mem = malloc(2880);
    size = 2880;
    status = 0;
    long naxes[2] = {w, h};
    fits_create_memfile(&f, &mem, &size, 2880, realloc, &status);
    fits_set_compression_type(f, HCOMPRESS_1, &status);
    fits_create_img(f, FLOAT_IMG, 2, naxes, &status);
    fits_write_img(f, TFLOAT, 1, (LONGLONG)w * h, v, &status);
    fits_close_file(f, &status);
    CHECK(status == 0, "cfitsio could not write HCOMPRESS (%d)", status);
    expect_decode_error(mem, size, NULL, IMAGE_EINVAL, "ZCMPTYPE = 'HCOMPRESS_1' is not supported");
    free(mem);
    free(v);
}

/* Where a compressed image's tile `row` lies in the file: byte offset and length. */
static int locate_tile(unsigned char *bytes, size_t len, int row, LONGLONG *at, LONGLONG *tile_len)
{
    void *mem = bytes;
    size_t size = len;
    fitsfile *f;
    int status = 0, col = 0;
    LONGLONG off = 0, head = 0, data = 0, end = 0;
    long long naxis1 = 0, naxis2 = 0;
    fits_open_memfile(&f, "t.fits", READONLY, &mem, &size, 0, NULL, &status);
    fits_movabs_hdu(f, 2, NULL, &status);
    fits_get_colnum(f, CASEINSEN, "COMPRESSED_DATA", &col, &status);
    fits_read_descriptll(f, col, row, tile_len, &off, &status);
    fits_get_hduaddrll(f, &head, &data, &end, &status);
    fits_read_key(f, TLONGLONG, "NAXIS1", &naxis1, NULL, &status);
    fits_read_key(f, TLONGLONG, "NAXIS2", &naxis2, NULL, &status);
    int close_status = 0;
    fits_close_file(f, &close_status);
    *at = data + naxis1 * naxis2 + off;
    return status;
}

/* cfitsio's own Rice files with tiles it could not quantise (all NaN, constant, huge values) stored
 * in its fallback column pass the tile checks and decode to what was written. */
static void test_rice_fallback_tiles_decode(void)
{
    enum { W = 64, H = 6 };
    float v[W * H];
    for (int i = 0; i < W * H; i++)
        v[i] = i / W == 0 ? NAN : (i / W == 1 ? 3.5f : sinf((float)i) * (i / W == 5 ? 1e30f : 1.0f));
    void *mem = malloc(2880);
    size_t size = 2880;
    fitsfile *f;
    int status = 0, col = 0;
    long naxes[2] = {W, H};
    fits_create_memfile(&f, &mem, &size, 2880, realloc, &status);
    fits_set_compression_type(f, RICE_1, &status);
    fits_create_img(f, FLOAT_IMG, 2, naxes, &status);
    fits_write_img(f, TFLOAT, 1, W * H, v, &status);
    fits_close_file(f, &status);
    void *m2 = mem;
    size_t s2 = size;
    fits_open_memfile(&f, "r.fits", READONLY, &m2, &s2, 0, NULL, &status);
    fits_movabs_hdu(f, 2, NULL, &status);
    fits_get_colnum(f, CASEINSEN, "GZIP_COMPRESSED_DATA", &col, &status);
    fits_close_file(f, &status);
    CHECK(status == 0 && col > 0, "no fallback column in cfitsio's file (status %d)", status);
    struct image img;
    char err[256];
    int rc = image_decode(&img, mem, size, NULL, err, sizeof err);
    CHECK(rc == IMAGE_OK, "%s", err);
    if (rc == IMAGE_OK) {
        for (int i = 0; i < 2 * W; i++) {
            double a = image_pixel(&img, (size_t)i);
            if (i < W ? !isnan(a) : a != 3.5) {
                CHECK(0, "pixel %d = %g", i, a);
                break;
            }
        }
        image_free(&img);
    }
    free(mem);
}

/* A gzip tile that inflates far past its pixels: cfitsio alone would grow its buffer without bound. */
static void test_gzip_bomb_tile_is_refused(void)
{
    const int w = 1024, h = 4;
    float *v = sky(w, h, 33);
    void *mem = malloc(2880);
    size_t size = 2880;
    fitsfile *f;
    int status = 0;
    long naxes[2] = {w, h};
    fits_create_memfile(&f, &mem, &size, 2880, realloc, &status);
    fits_set_compression_type(f, GZIP_1, &status);
    fits_set_quantize_level(f, 0.0f, &status); /* lossless: tiles of raw float bytes, ~4 KiB each */
    fits_create_img(f, FLOAT_IMG, 2, naxes, &status);
    fits_write_img(f, TFLOAT, 1, (LONGLONG)w * h, v, &status);
    fits_close_file(f, &status);
    CHECK(status == 0, "cfitsio could not write GZIP_1 (%d)", status);
    struct image img;
    char err[256];
    CHECK(image_decode(&img, mem, size, NULL, err, sizeof err) == IMAGE_OK, "intact file refused: %s", err);
    image_free(&img);
    LONGLONG at = 0, tile_len = 0;
    CHECK(locate_tile(mem, size, 2, &at, &tile_len) == 0, "tile 2 not found");
    size_t zeros_len = (size_t)2 << 20, bomb_len; /* 2 MiB of zeros: ~2 KiB of gzip, 256x the tile */
    unsigned char *zeros = calloc(1, zeros_len);
    unsigned char *bomb = gzip_bytes(zeros, zeros_len, &bomb_len);
    CHECK(bomb_len <= (size_t)tile_len, "bomb of %zu bytes does not fit the tile's %lld", bomb_len,
          (long long)tile_len);
    if (bomb_len <= (size_t)tile_len) {
        memset((unsigned char *)mem + at, 0, (size_t)tile_len);
        memcpy((unsigned char *)mem + at, bomb, bomb_len);
        expect_decode_error(mem, size, NULL, IMAGE_EINVAL, "tile 2: corrupt gzip-compressed data");
    }
    free(bomb);
    free(zeros);
    free(mem);
    free(v);
}

/* A malformed value in a keyword cfitsio parses (it overflowed a buffer reporting this one). */
static void test_malformed_structural_values_are_refused(void)
{
    const int w = 64, h = 8;
    float *v = sky(w, h, 34);
    size_t len;
    unsigned char *bytes = tile_compressed(w, h, v, &len);
    unsigned char *card = NULL, *blocksize = NULL;
    for (size_t i = 0; i + 80 <= len; i += 80) {
        if (memcmp(bytes + i, "ZVAL2   = ", 10) == 0)
            card = bytes + i;
        if (memcmp(bytes + i, "ZVAL1   = ", 10) == 0)
            blocksize = bytes + i;
    }
    CHECK(card != NULL && blocksize != NULL, "no ZVAL1/ZVAL2 card");
    if (card && blocksize) {
        unsigned char saved[20];
        memcpy(saved, card + 10, 20);
        memcpy(card + 10, "   (               4", 20);
        expect_decode_error(bytes, len, NULL, IMAGE_EINVAL, "the value of ZVAL2 is not a valid number");
        memcpy(card + 10, saved, 20);
        memcpy(blocksize + 10, "                   0", 20); /* cfitsio would divide by it: SIGFPE */
        expect_decode_error(bytes, len, NULL, IMAGE_EINVAL, "Rice BLOCKSIZE = 0 is not valid");
    }
    free(bytes);
    free(v);
    struct fb f = {0};
    long long axes[2] = {10, 10};
    fb_primary(&f, -32, 2, axes);
    fb_card(&f, "BSCALE  = 'one'");
    fb_end(&f);
    expect_decode_error(f.buf, f.len, NULL, IMAGE_EINVAL, "the value of BSCALE is not a valid number");
    free(f.buf);
}

static void test_duplicate_structural_keywords_are_refused(void)
{
    struct fb f = {0};
    long long axes[2] = {10, 10};
    fb_primary(&f, -32, 2, axes);
    fb_int(&f, "NAXIS2", 1000); /* a second NAXIS2 later in the header */
    fb_end(&f);
    expect_decode_error(f.buf, f.len, NULL, IMAGE_EINVAL, "duplicate keyword NAXIS2");
    free(f.buf);
    f = (struct fb){0};
    fb_primary(&f, -32, 2, axes);
    fb_card(&f, "BSCALE  = 1.0");
    fb_card(&f, "BSCALE  = 2.0");
    fb_end(&f);
    expect_decode_error(f.buf, f.len, NULL, IMAGE_EINVAL, "duplicate keyword BSCALE");
    free(f.buf);
}

/* --- threads ------------------------------------------------------------------------------------ */

#define THREAD_IMAGES 4
static unsigned char *thread_bytes[THREAD_IMAGES];
static size_t thread_len[THREAD_IMAGES];
static float *thread_want[THREAD_IMAGES];
static int thread_mismatch;

/* A RICE tile-compressed image written by cfitsio into memory. */
static unsigned char *tile_compressed(int w, int h, const float *v, size_t *len)
{
    void *mem = malloc(2880);
    size_t size = 2880;
    fitsfile *f;
    int status = 0;
    long naxes[2] = {w, h};
    fits_create_memfile(&f, &mem, &size, 2880, realloc, &status);
    fits_set_compression_type(f, RICE_1, &status);
    fits_create_img(f, FLOAT_IMG, 2, naxes, &status);
    fits_write_img(f, TFLOAT, 1, (LONGLONG)w * h, (void *)v, &status);
    fits_close_file(f, &status);
    CHECK(status == 0, "cfitsio could not write a compressed image: %d", status);
    *len = size;
    return mem;
}

static void *thread_main(void *arg)
{
    int id = (int)(intptr_t)arg;
    struct model_config c = config(id % 2 ? MODEL_PROFILE_CORTEXCHANGE_V3 : MODEL_PROFILE_CORTEXCHANGE_V2, 56);
    float *out = malloc(3 * 56 * 56 * sizeof *out);
    char err[256];
    for (int rep = 0; rep < 12; rep++) {
        int k = (id + rep) % THREAD_IMAGES;
        c.profile = k % 2 ? MODEL_PROFILE_CORTEXCHANGE_V3 : MODEL_PROFILE_CORTEXCHANGE_V2;
        if (image_to_tensor(out, thread_bytes[k], thread_len[k], NULL, &c, 0, NULL, err, sizeof err) != IMAGE_OK ||
            memcmp(out, thread_want[k], 3 * 56 * 56 * sizeof *out) != 0)
            __atomic_add_fetch(&thread_mismatch, 1, __ATOMIC_RELAXED);
    }
    free(out);
    return NULL;
}

static void test_decode_and_preprocess_are_thread_safe(void)
{
    printf("    cfitsio reentrant: %s\n", image_decoder_is_reentrant() ? "yes" : "no (calls serialised)");
    CHECK(image_decoder_is_reentrant() == fits_is_reentrant(), "reentrancy misreported");
    int sizes[THREAD_IMAGES][2] = {{120, 100}, {97, 130}, {150, 150}, {64, 200}};
    for (int k = 0; k < THREAD_IMAGES; k++) {
        float *v = sky(sizes[k][0], sizes[k][1], 20 + k);
        if (k == 2) {
            thread_bytes[k] = tile_compressed(sizes[k][0], sizes[k][1], v, &thread_len[k]);
        } else {
            struct fb f = fb_image_f32(sizes[k][0], sizes[k][1], v);
            if (k == 3) {
                thread_bytes[k] = gzip_bytes(f.buf, f.len, &thread_len[k]);
                free(f.buf);
            } else {
                thread_bytes[k] = f.buf;
                thread_len[k] = f.len;
            }
        }
        free(v);
        struct model_config c = config(k % 2 ? MODEL_PROFILE_CORTEXCHANGE_V3 : MODEL_PROFILE_CORTEXCHANGE_V2, 56);
        thread_want[k] = malloc(3 * 56 * 56 * sizeof(float));
        char err[256];
        int rc = image_to_tensor(thread_want[k], thread_bytes[k], thread_len[k], NULL, &c, 0, NULL, err, sizeof err);
        CHECK(rc == IMAGE_OK, "image %d: %s", k, err);
    }
    pthread_t t[8];
    for (int i = 0; i < 8; i++)
        pthread_create(&t[i], NULL, thread_main, (void *)(intptr_t)i);
    for (int i = 0; i < 8; i++)
        pthread_join(t[i], NULL);
    CHECK(thread_mismatch == 0, "%d results differed from the single-threaded ones", thread_mismatch);
    for (int k = 0; k < THREAD_IMAGES; k++) {
        free(thread_bytes[k]);
        free(thread_want[k]);
    }
}

int main(void)
{
    RUN(test_gzip_bomb_refused_at_ceiling); /* first: it measures the peak RSS */
    RUN(test_fits_rejects_empty_input);
    RUN(test_fits_rejects_non_fits);
    RUN(test_fits_rejects_truncated_header);
    RUN(test_fits_rejects_truncated_data);
    RUN(test_fits_rejects_naxis_0);
    RUN(test_fits_rejects_naxis_1);
    RUN(test_fits_rejects_3d_non_degenerate);
    RUN(test_fits_drops_degenerate_axes);
    RUN(test_fits_rejects_overflowing_naxis);
    RUN(test_fits_rejects_1x1);
    RUN(test_fits_rejects_invalid_bitpix);
    RUN(test_preprocess_rejects_constant_image);
    RUN(test_preprocess_rejects_all_zero_image);
    RUN(test_preprocess_rejects_all_nan_image);
    RUN(test_preprocess_rejects_overflowing_values);
    RUN(test_random_bytes_never_crash);
    RUN(test_gzip_bodies);
    RUN(test_pixel_ceiling_checked_before_allocation);
    RUN(test_byte_ceiling);
    RUN(test_read_file_takes_extended_syntax_name_literally);
    RUN(test_read_file_enforces_ceiling);
    RUN(test_first_image_extension_after_a_table);
    RUN(test_storage_type_and_scaling);
    RUN(test_nonfinite_pixels_count_as_zero);
    RUN(test_config_errors);
    RUN(test_noise_is_seeded_and_optional);
    RUN(test_rice_walk_matches_cfitsio);
    RUN(test_corrupt_compressed_tiles_are_refused);
    RUN(test_rice_fallback_tiles_decode);
    RUN(test_gzip_bomb_tile_is_refused);
    RUN(test_malformed_structural_values_are_refused);
    RUN(test_duplicate_structural_keywords_are_refused);
    RUN(test_decode_and_preprocess_are_thread_safe);
    if (check_failures)
        printf("%d check(s) failed\n", check_failures);
    return check_failures ? 1 : 0;
}
