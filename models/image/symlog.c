/* SymLogNorm as matplotlib computes it (colors.SymLogNorm via scale.SymmetricalLogTransform), so that
 * our stretched image equals the reference to the last bits, then the reference's min-shift and clip. */
#include "symlog.h"

#include <math.h>
#include <stdint.h>

#include "image_internal.h"

#define SYMLOG_LINSCALE 2.0
#define SYMLOG_BASE 10.0
#define SYMLOG_VMAX_RMS 50000.0

void symlog_norm_init(struct symlog_norm *s, double rms)
{
    s->linthresh = rms * 2.0;
    s->linscale_adj = SYMLOG_LINSCALE / (1.0 - 1.0 / SYMLOG_BASE); /* matplotlib: base ** -1 */
    s->log_base = log(SYMLOG_BASE);
    s->t_vmin = symlog_transform(s, -rms);
    s->t_vmax = symlog_transform(s, rms * SYMLOG_VMAX_RMS);
}

double symlog_transform(const struct symlog_norm *s, double a)
{
    double abs_a = fabs(a);
    if (abs_a <= s->linthresh)
        return a * s->linscale_adj;
    double sign = a < 0.0 ? -1.0 : 1.0;
    return sign * s->linthresh * (s->linscale_adj + log(abs_a / s->linthresh) / s->log_base);
}

double symlog_normalize(const struct symlog_norm *s, double a)
{
    return (symlog_transform(s, a) - s->t_vmin) / (s->t_vmax - s->t_vmin);
}

/* One row, 64 pixels at a time: every pixel as if it were inside ±linthresh (the linear branch:
 * vectorised, and right for most pixels, the noise within 2 rms), noting in a bit mask the few that are
 * not; those are then redone with the log. The operations are matplotlib's, except that dividing by
 * (t(vmax) − t(vmin)) is a multiplication by its reciprocal (at most 1 ulp apart). */
#define STRETCH_ROW                                                                                       \
    const double lt = s->linthresh, adj = s->linscale_adj, t0 = s->t_vmin;                                \
    const double inv_range = 1.0 / (s->t_vmax - s->t_vmin);                                               \
    for (size_t b = 0; b < n; b += 64) {                                                                  \
        const size_t len = n - b < 64 ? n - b : 64;                                                       \
        uint64_t outside = 0;                                                                             \
        IMAGE_SIMD_OR(outside)                                                                            \
        for (size_t j = 0; j < len; j++) {                                                                \
            double a = (double)x[b + j];                                                                  \
            a = a - a == 0.0 ? a : 0.0; /* non-finite pixels count as 0 */                                \
            double yi = (a * adj - t0) * inv_range - ymin;                                                \
            y[b + j] = yi < 0.0 ? 0.0 : (yi > 1.0 ? 1.0 : yi);                                            \
            outside |= (uint64_t)(fabs(a) > lt) << j;                                                     \
        }                                                                                                 \
        while (outside) {                                                                                 \
            size_t j = (size_t)__builtin_ctzll(outside);                                                  \
            outside &= outside - 1;                                                                       \
            double a = (double)x[b + j]; /* finite: only finite pixels were flagged */                   \
            double t = (a < 0.0 ? -1.0 : 1.0) * lt * (adj + log(fabs(a) / lt) / s->log_base);             \
            double yi = (t - t0) * inv_range - ymin;                                                      \
            y[b + j] = yi < 0.0 ? 0.0 : (yi > 1.0 ? 1.0 : yi);                                            \
        }                                                                                                 \
    }

IMAGE_HOT void symlog_stretch_row_f32(const struct symlog_norm *s, double ymin, const float *x, double *y,
                                      size_t n)
{
    STRETCH_ROW
}

IMAGE_HOT void symlog_stretch_row_f64(const struct symlog_norm *s, double ymin, const double *x, double *y,
                                      size_t n)
{
    STRETCH_ROW
}

void symlog_stretch(double *x, size_t n, double rms, double xmin)
{
    if (n == 0)
        return;
    if (isnan(xmin)) {
        xmin = x[0];
        for (size_t i = 1; i < n; i++)
            xmin = x[i] < xmin ? x[i] : xmin;
    }
    struct symlog_norm s;
    symlog_norm_init(&s, rms);
    const double ymin = symlog_normalize(&s, xmin);
    for (size_t i = 0; i < n; i++) {
        double y = symlog_normalize(&s, x[i]) - ymin;
        x[i] = y < 0.0 ? 0.0 : (y > 1.0 ? 1.0 : y);
    }
}
