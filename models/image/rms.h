/* The noise estimate of the reference pipeline (Cyril Tasse's kMS get_rms, ARCHITECTURE.md §4 step 2): the
 * population std of the pixels with |x| > 1e-7, clipped at 3 rms around their median, repeated until
 * it moves by less than 10% (at most 10 times). The median comes from O(n) selection, not a sort. */
#ifndef STOPCAL_RMS_H
#define STOPCAL_RMS_H

#include <stddef.h>
#include <stdint.h>

struct rms_result {
    double rms;        /* > 0 on success */
    double xmin;       /* smallest pixel, non-finite ones counting as 0 */
    int64_t nonfinite; /* pixels that are NaN or ±Inf */
};

/* rms of x[0..n), floats when f32 is non-zero, else doubles, with non-finite values counting as 0 (the
 * reference's NaN → 0; x itself is not modified) and counted. Returns IMAGE_OK
 * with res->rms > 0; IMAGE_EINVAL when the rms is undefined or zero (no pixel above 1e-7 in magnitude,
 * a constant image, …: the reference would hand NaN to the stretch) or not finite; IMAGE_ENOMEM.
 * err names the case. Passes over x: a strided sample, one full pass (non-finite values, the sums for
 * the unclipped std, the values near the sampled median), then one per clipping iteration (two more
 * when the sample misled). Scratch: the sample and the values near the median, a few % of x. */
int rms_estimate(const void *x, size_t n, int f32, struct rms_result *res, char *err, size_t errlen);

/* The k-th smallest of v[0..n) (0-based, k < n), by introselect: quickselect with median-of-three
 * pivots, switching to median-of-medians pivots if it recurses too deep, so O(n) in the worst case.
 * Reorders v so that v[k] is that value, v[i] <= v[k] for i < k and v[i] >= v[k] for i > k. */
double rms_select(double *v, size_t n, size_t k);

/* rms_select with `budget` median-of-three rounds before median-of-medians pivots (rms_select allows
 * 2·log2(n) + 8); budget 0 uses median-of-medians throughout. For the tests of that path. */
double rms_select_budget(double *v, size_t n, size_t k, int budget);

/* numpy's median: the middle value, or the mean of the two middle values when n is even (n >= 1).
 * Reorders v. */
double rms_median(double *v, size_t n);

#endif
