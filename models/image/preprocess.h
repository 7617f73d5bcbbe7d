/* The reference preprocessing (ARCHITECTURE.md §4): rms by iterative clipping, the SymLogNorm stretch,
 * min-shift and clip, the transpose, the resize (cortexchange-v2: bilinear; cortexchange-v3:
 * antialiased bilinear, then mean/std), three channels; optional seeded noise. float64 throughout,
 * float32 out. Also the one-call path from FITS bytes to the model's input tensor. */
#ifndef STOPCAL_PREPROCESS_H
#define STOPCAL_PREPROCESS_H

#include <stddef.h>
#include <stdint.h>

#include "image.h"
#include "model.h"

/* What the preprocessing measured, reported with each result (ARCHITECTURE.md §6). */
struct preprocess_stats {
    double rms;                /* the clipped noise estimate, in the image's units (Jy/beam) */
    int64_t nonfinite_pixels;  /* NaN/±Inf pixels (BLANK included) set to 0 before everything else */
    int64_t width, height;     /* the decoded image's size (image_to_tensor fills these too) */
};

/* Preprocess img into out, a caller-provided float buffer of 3 × S × S (S = cfg->input_size), laid
 * out (channel, row, column) with row = the image's x axis (the tensor is the transpose of the image).
 * Uses cfg->profile, input_size, mean, std (v3 only) and noise_sigma. When noise_sigma > 0, Gaussian
 * noise of that σ from a generator seeded with noise_seed is added where the profile's reference adds
 * it (v2: to the stretched image before resizing; v3: after resizing); noise_seed is ignored otherwise.
 * Non-finite pixels count as 0 (and are counted); img is not modified. stats may be NULL. Returns IMAGE_OK; IMAGE_EINVAL when the image cannot be normalised (all zero,
 * constant, all NaN: rms is 0 or undefined); IMAGE_ECONFIG for an invalid cfg; IMAGE_ENOMEM. On error
 * out is untouched and err names the problem. Allocates O(S² + a few image rows) of scratch, freed before
 * returning. The noise streams are per row, so the noise for a seed does not depend on evaluation order. */
int preprocess_image(float *out, const struct image *img, const struct model_config *cfg, uint64_t noise_seed,
                     struct preprocess_stats *stats, char *err, size_t errlen);

/* Bytes of one FITS file (gzip allowed) → out (3 × S × S floats, as above) + stats, in one call:
 * image_decode under limits (NULL = defaults), then preprocess_image. Same return codes as both.
 * Nothing is kept; bytes are only read. */
int image_to_tensor(float *out, const void *bytes, size_t len, const struct image_limits *limits,
                    const struct model_config *cfg, uint64_t noise_seed, struct preprocess_stats *stats,
                    char *err, size_t errlen);

#endif
