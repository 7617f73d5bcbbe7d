/* The two preprocessing profiles of ARCHITECTURE.md §4, step by step, and image_to_tensor (bytes → tensor).
 * What the reference does, from cortExchange (surf/TransferLearningV2 and V3, read for this file):
 * - normalize_fits: squeeze, get_rms, SymLogNorm, y − min(y), clip to [0, 1], then [..., None];
 * - prepare_data: from_numpy, swapdims(0, 2) on (H, W, 1) → (1, W, H), unsqueeze → (1, 1, W, H): the
 *   tensor is the transpose of the image;
 * - V2 resize_and_noise: x + randn·σ (σ = 0.5·size/h) *before* interpolate(size, bilinear,
 *   align_corners=False); V3 resampling.resize_and_noise: interpolate(bilinear, antialias=True) only when
 *   the size differs, then noise *after* it when noise_sigma > 0. We follow each profile's placement,
 *   with σ = cfg->noise_sigma and our own seeded generator (ARCHITECTURE.md §4: opt-in, default off);
 * - normalize(batch, mean, std) = (x − mean)/std on the 1-channel tensor (V2 never finds the dataset's
 *   mean/std, so 0/1; V3 reads them), then the model's lift="stack" repeats it to 3 channels.
 * - dtype: astropy's array (float32 for BITPIX −32) goes through matplotlib in that dtype, and the
 *   tensor is cast to bfloat16 before interpolate (V2) or interpolated in float32 and cast back (V3).
 *   We follow ARCHITECTURE.md §3 instead: float64 throughout, float32 only for the result.
 * Non-finite pixels count as 0 throughout (as training made them) and are counted; the stretched image
 * is made row by row as the resize needs it, never stored whole, and the decoded image is not modified. */
#include "preprocess.h"
#include "error_message.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "image_internal.h"
#include "noise.h"
#include "resample.h"
#include "rms.h"
#include "symlog.h"

#define PREPROCESS_MAX_SIZE 8192               /* largest model input side we accept */
#define PREPROCESS_RING_BYTES ((size_t)8 << 20) /* cap on the cache of stretched rows */

static int check_config(const struct model_config *cfg, char *err, size_t errlen)
{
    if (!cfg)
        return error_set(err, errlen, IMAGE_ECONFIG, "no model configuration");
    if (cfg->profile != MODEL_PROFILE_CORTEXCHANGE_V2 && cfg->profile != MODEL_PROFILE_CORTEXCHANGE_V3)
        return error_set(err, errlen, IMAGE_ECONFIG, "unknown preprocessing profile %d", (int)cfg->profile);
    if (cfg->input_size < 1 || cfg->input_size > PREPROCESS_MAX_SIZE)
        return error_set(err, errlen, IMAGE_ECONFIG, "input_size = %d is not in [1, %d]", cfg->input_size,
                          PREPROCESS_MAX_SIZE);
    if (!isfinite(cfg->noise_sigma) || cfg->noise_sigma < 0.0f)
        return error_set(err, errlen, IMAGE_ECONFIG, "noise_sigma = %g must be finite and >= 0",
                          (double)cfg->noise_sigma);
    if (cfg->profile == MODEL_PROFILE_CORTEXCHANGE_V3)
        for (int c = 0; c < 3; c++)
            if (!isfinite(cfg->mean[c]) || !isfinite(cfg->std[c]) || cfg->std[c] == 0.0f)
                return error_set(err, errlen, IMAGE_ECONFIG, "mean[%d] = %g, std[%d] = %g: need finite, std != 0",
                                  c, (double)cfg->mean[c], c, (double)cfg->std[c]);
    return IMAGE_OK;
}

/* Stretched image rows, made when the resize first asks for them and kept in a small direct-mapped
 * ring (the resize's windows move forward, so a row is reused only while it is recent). The full
 * stretched image is never stored: for a 2048² → 560² bilinear resize only the ~1,100 rows it touches
 * are stretched at all. */
struct row_source {
    const struct image *img;
    int width, slots;
    struct symlog_norm norm;
    double ymin;
    double *ring; /* (slots, width) */
    int *tag;     /* image row held by each slot, or -1 */
    double noise_sigma;
    uint64_t noise_seed;
};

static const double *stretched_row(void *ctx, int y)
{
    struct row_source *rs = ctx;
    int slot = y % rs->slots;
    double *dst = rs->ring + (size_t)slot * (size_t)rs->width;
    if (rs->tag[slot] != y) {
        size_t off = (size_t)y * (size_t)rs->width;
        if (rs->img->dtype == IMAGE_F32)
            symlog_stretch_row_f32(&rs->norm, rs->ymin, (const float *)rs->img->pixels + off, dst, rs->width);
        else
            symlog_stretch_row_f64(&rs->norm, rs->ymin, (const double *)rs->img->pixels + off, dst, rs->width);
        if (rs->noise_sigma > 0.0) /* V2: noise on the stretched image, one stream per image row */
            noise_add_gaussian(dst, (size_t)rs->width, rs->noise_sigma, rs->noise_seed, (uint64_t)y);
        rs->tag[slot] = y;
    }
    return dst;
}

int preprocess_image(float *out, const struct image *img, const struct model_config *cfg, uint64_t noise_seed,
                     struct preprocess_stats *stats, char *err, size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    int rc = check_config(cfg, err, errlen);
    if (rc != IMAGE_OK)
        return rc;
    if (!out || !img || !img->pixels || img->width < 1 || img->height < 1)
        return error_set(err, errlen, IMAGE_EINVAL, "no image to preprocess");
    if (img->width > INT_MAX || img->height > INT_MAX)
        return error_set(err, errlen, IMAGE_EINVAL, "image of %lld x %lld pixels is too large to resize",
                          (long long)img->width, (long long)img->height);
    const int w = (int)img->width, h = (int)img->height, S = cfg->input_size;
    const size_t n = (size_t)w * (size_t)h, plane = (size_t)S * (size_t)S;
    const int v3 = cfg->profile == MODEL_PROFILE_CORTEXCHANGE_V3;
    const enum resample_mode mode = v3 ? RESAMPLE_BILINEAR_AA : RESAMPLE_BILINEAR;

    /* The rms, non-finite pixels counting as 0 (and counted). */
    struct rms_result noise;
    rc = rms_estimate(img->pixels, n, img->dtype == IMAGE_F32, &noise, err, errlen);
    if (rc != IMAGE_OK)
        return rc;

    struct row_source rs = {.img = img, .width = w, .noise_seed = noise_seed};
    symlog_norm_init(&rs.norm, noise.rms);
    if (!isfinite(rs.norm.t_vmax - rs.norm.t_vmin)) /* matplotlib: "Invalid vmin or vmax" */
        return error_set(err, errlen, IMAGE_EINVAL,
                          "rms = %g: vmax = 50000 rms overflows, the stretch is undefined", noise.rms);
    rs.ymin = symlog_normalize(&rs.norm, noise.xmin); /* the norm increases: min(y) = norm(min(x)) */
    rs.noise_sigma = v3 ? 0.0 : (double)cfg->noise_sigma;
    rs.slots = resample_window_rows(h, S, 0.0, mode) + 1;
    size_t max_slots = PREPROCESS_RING_BYTES / ((size_t)w * sizeof(double));
    if ((size_t)rs.slots > max_slots) /* a smaller ring only means some rows are stretched twice */
        rs.slots = max_slots > 1 ? (int)max_slots : 1;
    if (rs.slots > h)
        rs.slots = h;
    rs.ring = malloc((size_t)rs.slots * (size_t)w * sizeof *rs.ring);
    rs.tag = malloc((size_t)rs.slots * sizeof *rs.tag);
    double *r = malloc(2 * plane * sizeof *r); /* the resized image, then its transpose */
    if (!rs.ring || !rs.tag || !r) {
        rc = error_set(err, errlen, IMAGE_ENOMEM, "out of memory for a %d x %d resize", S, S);
        goto out;
    }
    for (int i = 0; i < rs.slots; i++)
        rs.tag[i] = -1;

    /* The tensor is the transpose of the image. Resizing is separable and its weights depend only on
     * (input length, output length), so resize(imageᵀ) = resize(image)ᵀ: resize in the image's own
     * layout (rows stay contiguous) and transpose the small result. */
    if (v3 && w == S && h == S) { /* V3 skips interpolate when the size already matches */
        for (int y = 0; y < h; y++)
            memcpy(r + (size_t)y * S, stretched_row(&rs, y), (size_t)S * sizeof *r);
    } else if (resample2d_rows_f64(r, h, w, S, S, 0.0, 0.0, mode, stretched_row, &rs)) {
        rc = error_set(err, errlen, IMAGE_ENOMEM, "resize of %d x %d to %d x %d failed (out of memory)", w, h,
                        S, S);
        goto out;
    }
    if (v3 && cfg->noise_sigma > 0.0f) /* V3 adds its noise after resizing */
        for (int y = 0; y < S; y++)
            noise_add_gaussian(r + (size_t)y * S, (size_t)S, (double)cfg->noise_sigma, noise_seed, (uint64_t)y);
    double *t = r + plane;
    for (int j = 0; j < S; j++)     /* image row j = tensor column j */
        for (int i = 0; i < S; i++) /* image column i = tensor row i */
            t[(size_t)i * S + j] = r[(size_t)j * S + i];

    double mean[3] = {0.0, 0.0, 0.0}, std[3] = {1.0, 1.0, 1.0};
    if (v3)
        for (int c = 0; c < 3; c++) {
            mean[c] = cfg->mean[c];
            std[c] = cfg->std[c];
        }
    for (int c = 0; c < 3; c++) {
        float *o = out + (size_t)c * plane;
        for (size_t k = 0; k < plane; k++)
            o[k] = (float)((t[k] - mean[c]) / std[c]);
    }
    if (stats) {
        stats->rms = noise.rms;
        stats->nonfinite_pixels = noise.nonfinite;
        stats->width = img->width;
        stats->height = img->height;
    }
out:
    free(rs.ring);
    free(rs.tag);
    free(r);
    return rc;
}

int image_to_tensor(float *out, const void *bytes, size_t len, const struct image_limits *limits,
                    const struct model_config *cfg, uint64_t noise_seed, struct preprocess_stats *stats,
                    char *err, size_t errlen)
{
    int rc = check_config(cfg, err, errlen); /* before decoding: a bad config is not the image's fault */
    if (rc != IMAGE_OK)
        return rc;
    struct image img;
    rc = image_decode(&img, bytes, len, limits, err, errlen);
    if (rc != IMAGE_OK)
        return rc;
    rc = preprocess_image(out, &img, cfg, noise_seed, stats, err, errlen);
    image_free(&img);
    return rc;
}
