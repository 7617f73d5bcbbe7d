/* Command-line access to the image library for the Python parity tests and the benchmark: each mode
 * runs one piece (decode, preprocess, resample, rms, stretch) on raw files and prints one JSON line.
 * Errors print {"error": "...", "code": N} and exit 1, so tests can check messages too. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "image.h"
#include "preprocess.h"
#include "resample.h"
#include "rms.h"
#include "symlog.h"

static void *slurp(const char *path, size_t *len)
{
    unsigned char *bytes;
    char err[256];
    if (image_read_file(path, (size_t)1 << 31, &bytes, len, err, sizeof err) != IMAGE_OK) {
        fprintf(stderr, "%s\n", err);
        exit(2);
    }
    return bytes;
}

static void spill(const char *path, const void *data, size_t bytes)
{
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, bytes, f) != bytes || fclose(f) != 0) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(2);
    }
}

static int fail_json(int code, const char *err)
{
    printf("{\"error\": \"");
    for (const char *p = err; *p; p++) {
        if (*p == '"' || *p == '\\')
            putchar('\\');
        putchar((unsigned char)*p < 0x20 ? ' ' : *p);
    }
    printf("\", \"code\": %d}\n", code);
    return 1;
}

static void parse3(const char *s, float v[3])
{
    if (sscanf(s, "%f,%f,%f", &v[0], &v[1], &v[2]) != 3) {
        fprintf(stderr, "expected three comma-separated numbers, got %s\n", s);
        exit(2);
    }
}

static enum model_profile parse_profile(const char *s)
{
    if (strcmp(s, "cortexchange-v2") == 0)
        return MODEL_PROFILE_CORTEXCHANGE_V2;
    if (strcmp(s, "cortexchange-v3") == 0)
        return MODEL_PROFILE_CORTEXCHANGE_V3;
    fprintf(stderr, "unknown profile %s\n", s);
    exit(2);
}

static double clock_s(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int usage(void)
{
    fprintf(stderr,
            "usage: image_tool decode IN.fits OUT.f64\n"
            "       image_tool preprocess PROFILE SIZE MEAN3 STD3 NOISE SEED IN.fits OUT.f32\n"
            "       image_tool resample f32|f64 MODE C IH IW OH OW SCALE_H SCALE_W IN OUT\n"
            "       image_tool rms f32|f64 IN\n"
            "       image_tool median IN.f64\n"
            "       image_tool select IN.f64 K BUDGET\n"
            "       image_tool stretchrow f32|f64 RMS XMIN IN OUT.f64\n"
            "       image_tool stretch RMS IN.f64 OUT.f64\n"
            "       image_tool bench PROFILE SIZE SECONDS IN.fits\n");
    return 2;
}

int main(int argc, char **argv)
{
    char err[512];
    if (argc < 2)
        return usage();
    const char *mode = argv[1];
    if (strcmp(mode, "decode") == 0 && argc == 4) {
        size_t len;
        void *bytes = slurp(argv[2], &len);
        struct image img;
        int rc = image_decode(&img, bytes, len, NULL, err, sizeof err);
        free(bytes);
        if (rc != IMAGE_OK)
            return fail_json(rc, err);
        size_t n = (size_t)(img.width * img.height);
        double *px = malloc(n * sizeof *px);
        for (size_t i = 0; i < n; i++)
            px[i] = image_pixel(&img, i);
        spill(argv[3], px, n * sizeof *px);
        free(px);
        printf("{\"width\": %lld, \"height\": %lld, \"bitpix\": %d, \"hdu\": %d, \"compressed\": %d, "
               "\"dtype\": \"%s\"}\n",
               (long long)img.width, (long long)img.height, img.bitpix, img.hdu, img.compressed,
               img.dtype == IMAGE_F32 ? "f32" : "f64");
        image_free(&img);
        return 0;
    }
    if (strcmp(mode, "preprocess") == 0 && argc == 10) {
        struct model_config cfg;
        memset(&cfg, 0, sizeof cfg);
        cfg.profile = parse_profile(argv[2]);
        cfg.input_size = atoi(argv[3]);
        parse3(argv[4], cfg.mean);
        parse3(argv[5], cfg.std);
        cfg.noise_sigma = (float)atof(argv[6]);
        uint64_t seed = strtoull(argv[7], NULL, 10);
        size_t len;
        void *bytes = slurp(argv[8], &len);
        size_t n = 3 * (size_t)cfg.input_size * (size_t)cfg.input_size;
        float *out = malloc((n ? n : 1) * sizeof *out);
        struct preprocess_stats st;
        int rc = image_to_tensor(out, bytes, len, NULL, &cfg, seed, &st, err, sizeof err);
        free(bytes);
        if (rc != IMAGE_OK) {
            free(out);
            return fail_json(rc, err);
        }
        spill(argv[9], out, n * sizeof *out);
        free(out);
        printf("{\"rms\": %.17g, \"nonfinite\": %lld, \"width\": %lld, \"height\": %lld}\n", st.rms,
               (long long)st.nonfinite_pixels, (long long)st.width, (long long)st.height);
        return 0;
    }
    if (strcmp(mode, "resample") == 0 && argc == 13) {
        int f32 = strcmp(argv[2], "f32") == 0;
        static const char *names[] = {"bilinear", "bilinear_aa", "bicubic", "bicubic_aa"};
        int m = -1;
        for (int i = 0; i < 4; i++)
            if (strcmp(argv[3], names[i]) == 0)
                m = i;
        if (m < 0)
            return usage();
        int c = atoi(argv[4]), ih = atoi(argv[5]), iw = atoi(argv[6]), oh = atoi(argv[7]), ow = atoi(argv[8]);
        double sh = atof(argv[9]), sw = atof(argv[10]);
        size_t len;
        void *in = slurp(argv[11], &len);
        size_t esz = f32 ? sizeof(float) : sizeof(double), nout = (size_t)c * oh * ow;
        if (len != (size_t)c * ih * iw * esz) {
            fprintf(stderr, "input is %zu bytes, expected %zu\n", len, (size_t)c * ih * iw * esz);
            return 2;
        }
        void *out = malloc(nout * esz);
        int rc = f32 ? resample2d_f32(out, in, c, ih, iw, oh, ow, sh, sw, (enum resample_mode)m)
                     : resample2d_f64(out, in, c, ih, iw, oh, ow, sh, sw, (enum resample_mode)m);
        free(in);
        if (rc) {
            free(out);
            return fail_json(rc, "resample failed");
        }
        spill(argv[12], out, nout * esz);
        free(out);
        printf("{\"ok\": true}\n");
        return 0;
    }
    if (strcmp(mode, "rms") == 0 && argc == 4) { /* rms f32|f64 IN: raw values of that type */
        int f32 = strcmp(argv[2], "f32") == 0;
        size_t len;
        void *x = slurp(argv[3], &len);
        struct rms_result res;
        int rc = rms_estimate(x, len / (f32 ? sizeof(float) : sizeof(double)), f32, &res, err, sizeof err);
        free(x);
        if (rc != IMAGE_OK)
            return fail_json(rc, err);
        printf("{\"rms\": %.17g, \"xmin\": %.17g, \"nonfinite\": %lld}\n", res.rms, res.xmin,
               (long long)res.nonfinite);
        return 0;
    }
    if (strcmp(mode, "select") == 0 && argc == 5) { /* select K BUDGET < IN.f64 via file: select IN K BUDGET */
        size_t len;
        double *x = slurp(argv[2], &len);
        size_t n = len / sizeof(double), k = strtoull(argv[3], NULL, 10);
        if (n == 0 || k >= n)
            return usage();
        double v = rms_select_budget(x, n, k, atoi(argv[4]));
        int ordered = 1; /* the partition property rms_select promises */
        for (size_t i = 0; i < n; i++)
            if ((i < k && x[i] > v) || (i > k && x[i] < v))
                ordered = 0;
        free(x);
        printf("{\"value\": %.17g, \"partitioned\": %s}\n", v, ordered ? "true" : "false");
        return 0;
    }
    if (strcmp(mode, "stretchrow") == 0 && argc == 7) { /* stretchrow f32|f64 RMS XMIN IN OUT.f64 */
        int f32 = strcmp(argv[2], "f32") == 0;
        size_t len;
        void *x = slurp(argv[5], &len);
        size_t n = len / (f32 ? sizeof(float) : sizeof(double));
        double *y = malloc((n ? n : 1) * sizeof *y);
        struct symlog_norm s;
        symlog_norm_init(&s, atof(argv[3]));
        double ymin = symlog_normalize(&s, atof(argv[4]));
        if (f32)
            symlog_stretch_row_f32(&s, ymin, x, y, n);
        else
            symlog_stretch_row_f64(&s, ymin, x, y, n);
        spill(argv[6], y, n * sizeof *y);
        free(x);
        free(y);
        printf("{\"ok\": true}\n");
        return 0;
    }
    if (strcmp(mode, "median") == 0 && argc == 3) {
        size_t len;
        double *x = slurp(argv[2], &len);
        if (len < sizeof(double))
            return usage();
        double med = rms_median(x, len / sizeof(double));
        free(x);
        printf("{\"median\": %.17g}\n", med);
        return 0;
    }
    if (strcmp(mode, "stretch") == 0 && argc == 5) {
        size_t len;
        double *x = slurp(argv[3], &len);
        symlog_stretch(x, len / sizeof(double), atof(argv[2]), NAN);
        spill(argv[4], x, len);
        free(x);
        printf("{\"ok\": true}\n");
        return 0;
    }
    if (strcmp(mode, "bench") == 0 && argc == 6) {
        struct model_config cfg;
        memset(&cfg, 0, sizeof cfg);
        cfg.profile = parse_profile(argv[2]);
        cfg.input_size = atoi(argv[3]);
        for (int c = 0; c < 3; c++) {
            cfg.mean[c] = 0.0f;
            cfg.std[c] = 1.0f;
        }
        double seconds = atof(argv[4]);
        size_t len;
        void *bytes = slurp(argv[5], &len);
        size_t n = 3 * (size_t)cfg.input_size * (size_t)cfg.input_size;
        float *out = malloc(n * sizeof *out);
        struct preprocess_stats st;
        double best = 1e30, best_cpu = 1e30, total = 0.0;
        int iters = 0;
        while (total < seconds || iters < 3) {
            double t0 = clock_s(CLOCK_MONOTONIC), c0 = clock_s(CLOCK_PROCESS_CPUTIME_ID);
            int rc = image_to_tensor(out, bytes, len, NULL, &cfg, 0, &st, err, sizeof err);
            double dt = clock_s(CLOCK_MONOTONIC) - t0, dc = clock_s(CLOCK_PROCESS_CPUTIME_ID) - c0;
            if (rc != IMAGE_OK) {
                free(out);
                free(bytes);
                return fail_json(rc, err);
            }
            best = dt < best ? dt : best;
            best_cpu = dc < best_cpu ? dc : best_cpu;
            total += dt;
            iters++;
        }
        printf("{\"best_s\": %.6f, \"best_cpu_s\": %.6f, \"mean_s\": %.6f, \"iters\": %d, \"pixels\": %lld, "
               "\"rms\": %.17g}\n",
               best, best_cpu, total / iters, iters, (long long)(st.width * st.height), st.rms);
        free(out);
        free(bytes);
        return 0;
    }
    return usage();
}
