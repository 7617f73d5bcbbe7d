/* The symmetric-log stretch of the reference: matplotlib's SymLogNorm(linthresh = 2·rms, linscale = 2,
 * vmin = −rms, vmax = 50000·rms, base = 10), evaluated with matplotlib's own formula and operation order
 * (SymmetricalLogTransform: natural log divided by ln 10), then min-shift and clip to [0, 1]. */
#ifndef STOPCAL_SYMLOG_H
#define STOPCAL_SYMLOG_H

#include <stddef.h>

struct symlog_norm {
    double linthresh;    /* 2·rms */
    double linscale_adj; /* linscale / (1 − 1/base) */
    double log_base;     /* ln(base) */
    double t_vmin, t_vmax;
};

/* The norm for a given rms (> 0, finite). */
void symlog_norm_init(struct symlog_norm *s, double rms);

/* The transform t(a): a·linscale_adj inside ±linthresh, sign(a)·linthresh·(linscale_adj + ln(|a|/linthresh)/ln 10)
 * outside. */
double symlog_transform(const struct symlog_norm *s, double a);

/* (t(a) − t(vmin)) / (t(vmax) − t(vmin)), not clipped. */
double symlog_normalize(const struct symlog_norm *s, double a);

/* One row, out of place: y[i] = clip(norm(x[i]) − ymin, 0, 1), x as floats or doubles (non-finite
 * values count as 0), ymin =
 * norm(min of the image); x and y must not overlap. The preprocessing stretches rows as the resize asks
 * for them. Dividing by the norm's range is done as a multiplication by its reciprocal (<= 1 ulp). */
void symlog_stretch_row_f32(const struct symlog_norm *s, double ymin, const float *x, double *y, size_t n);
void symlog_stretch_row_f64(const struct symlog_norm *s, double ymin, const double *x, double *y, size_t n);

/* In place, with matplotlib's exact operations (for tests; slower): y = norm(x); y −= min(y); clip to [0, 1] (ARCHITECTURE.md §4 steps 3–4). x must be finite. xmin is
 * min(x) (the norm is increasing, so min(y) = norm(xmin)); pass NAN to have it computed here. */
void symlog_stretch(double *x, size_t n, double rms, double xmin);

#endif
