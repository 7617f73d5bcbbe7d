/* torch.nn.functional.interpolate(align_corners=False) for bilinear and bicubic, with and without
 * antialias, as a separable resize: per-axis tap tables built the way ATen's CPU kernels build them
 * (UpSample.h's source-index rule, the AA helper's centre/support/normalisation), applied in double. */
#include "resample.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

/* The inner loops below carry no dependence between iterations; `omp simd` lets the compiler vectorise
 * them at -O2 too. Active with -fopenmp (the kernels library's flags) or -fopenmp-simd, with GCC (clang
 * warns, an error under -Werror, wherever it declines to vectorise). */
#if (defined(_OPENMP) || defined(STOPCAL_OPENMP_SIMD)) && !defined(__clang__)
#define RESAMPLE_SIMD _Pragma("omp simd")
#else
#define RESAMPLE_SIMD
#endif

/* The resize loops are also compiled for AVX2 and picked at load time (function multiversioning via
 * ifunc); the x86-64 baseline has only 2-wide double vectors. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
#define RESAMPLE_HOT __attribute__((target_clones("avx2", "default")))
#else
#define RESAMPLE_HOT
#endif

/* Keys' cubic convolution, the two pieces ATen names cubic_convolution1 (|x| <= 1) and 2 (1 < |x| < 2). */
static double cubic_near(double x, double a) { return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0; }
static double cubic_far(double x, double a) { return ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a; }

/* The antialias filters: evaluated at the (scaled) distance from the output pixel's centre. */
static double aa_triangle(double x)
{
    x = fabs(x);
    return x < 1.0 ? 1.0 - x : 0.0;
}

static double aa_cubic(double x)
{
    const double a = -0.5; /* PIL's choice, which PyTorch's antialias path follows */
    x = fabs(x);
    if (x < 1.0)
        return cubic_near(x, a);
    if (x < 2.0)
        return cubic_far(x, a);
    return 0.0;
}

/* Input pixels per output pixel: in/out from the sizes, or 1/scale_factor when one was given. */
static double axis_scale(int in_size, int out_size, double scale_factor)
{
    return scale_factor > 0.0 ? 1.0 / scale_factor : (double)in_size / (double)out_size;
}

static int clamp_index(int64_t i, int n)
{
    return i < 0 ? 0 : (i >= n ? n - 1 : (int)i);
}

void resample_axis_free(struct resample_axis *ax)
{
    free(ax->count);
    free(ax->index);
    free(ax->weight);
    ax->count = NULL;
    ax->index = NULL;
    ax->weight = NULL;
}

/* Non-antialiased bilinear: src = scale·(o + ½) − ½, clamped at 0 (ATen's
 * area_pixel_compute_source_index with cubic=false); the right tap is clamped at the last pixel. */
static void build_bilinear(struct resample_axis *ax, double scale)
{
    for (int o = 0; o < ax->out_size; o++) {
        double src = scale * (o + 0.5) - 0.5;
        if (src < 0.0)
            src = 0.0;
        int64_t i0 = (int64_t)src;
        if (i0 > ax->in_size - 1)
            i0 = ax->in_size - 1;
        double l1 = src - (double)i0;
        if (l1 > 1.0)
            l1 = 1.0;
        int i1 = (int)i0 + (i0 < ax->in_size - 1 ? 1 : 0);
        ax->count[o] = 2;
        ax->index[o * 2] = (int)i0;
        ax->index[o * 2 + 1] = i1;
        ax->weight[o * 2] = 1.0 - l1;
        ax->weight[o * 2 + 1] = l1;
    }
}

/* Non-antialiased bicubic: src = scale·(o + ½) − ½ (negative allowed), four taps floor(src)−1 … +2
 * with Keys' A = −0.75, indices clamped to the edge (ATen's upsample_get_value_bounded). */
static void build_bicubic(struct resample_axis *ax, double scale)
{
    const double a = -0.75;
    for (int o = 0; o < ax->out_size; o++) {
        double src = scale * (o + 0.5) - 0.5;
        double fl = floor(src);
        double t = src - fl;
        int64_t i = (int64_t)fl;
        double *w = ax->weight + (size_t)o * 4;
        w[0] = cubic_far(t + 1.0, a);
        w[1] = cubic_near(t, a);
        w[2] = cubic_near(1.0 - t, a);
        w[3] = cubic_far(2.0 - t, a);
        ax->count[o] = 4;
        for (int k = 0; k < 4; k++)
            ax->index[o * 4 + k] = clamp_index(i - 1 + k, ax->in_size);
    }
}

/* Antialiased (ATen's _compute_indices_min_size_weights_aa): centre = scale·(o + ½); support =
 * (taps/2)·scale when shrinking, taps/2 otherwise; the window [centre − support + ½,
 * centre + support + ½) truncated to the input; weights filter((j − centre + ½)/max(scale, 1)),
 * normalised to sum 1 (left as they are when they sum to 0). */
static void build_aa(struct resample_axis *ax, double scale, double half_taps, double (*filter)(double))
{
    double support = scale >= 1.0 ? half_taps * scale : half_taps;
    double invscale = scale >= 1.0 ? 1.0 / scale : 1.0;
    for (int o = 0; o < ax->out_size; o++) {
        double center = scale * (o + 0.5);
        int64_t lo = (int64_t)(center - support + 0.5);
        int64_t hi = (int64_t)(center + support + 0.5);
        if (lo < 0)
            lo = 0;
        if (hi > ax->in_size)
            hi = ax->in_size;
        int64_t n = hi - lo;
        if (n < 0)
            n = 0;
        if (n > ax->max_taps)
            n = ax->max_taps; /* cannot happen: max_taps covers the window; keeps the table in bounds */
        double *w = ax->weight + (size_t)o * ax->max_taps;
        int *idx = ax->index + (size_t)o * ax->max_taps;
        double total = 0.0;
        for (int64_t j = 0; j < n; j++) {
            w[j] = filter(((double)(j + lo) - center + 0.5) * invscale);
            idx[j] = (int)(lo + j);
            total += w[j];
        }
        if (total != 0.0)
            for (int64_t j = 0; j < n; j++)
                w[j] /= total;
        ax->count[o] = (int)n;
    }
}

int resample_axis_init(struct resample_axis *ax, int in_size, int out_size, double scale_factor,
                       enum resample_mode mode)
{
    ax->count = NULL;
    ax->index = NULL;
    ax->weight = NULL;
    if (in_size < 1 || out_size < 1 || !(scale_factor >= 0.0) || isinf(scale_factor))
        return -1;
    double scale = axis_scale(in_size, out_size, scale_factor);
    if (!isfinite(scale) || scale <= 0.0)
        return -1;
    int max_taps;
    switch (mode) {
    case RESAMPLE_BILINEAR: max_taps = 2; break;
    case RESAMPLE_BICUBIC: max_taps = 4; break;
    case RESAMPLE_BILINEAR_AA:
    case RESAMPLE_BICUBIC_AA: {
        double half = mode == RESAMPLE_BILINEAR_AA ? 1.0 : 2.0;
        double support = scale >= 1.0 ? half * scale : half;
        double taps = ceil(support) * 2.0 + 1.0;
        max_taps = taps > (double)in_size ? in_size : (int)taps; /* a window never exceeds the input */
        break;
    }
    default: return -1;
    }
    ax->in_size = in_size;
    ax->out_size = out_size;
    ax->max_taps = max_taps;
    size_t cells = (size_t)out_size * (size_t)max_taps;
    if (cells / (size_t)max_taps != (size_t)out_size)
        return -1;
    ax->count = malloc((size_t)out_size * sizeof *ax->count);
    ax->index = calloc(cells, sizeof *ax->index);
    ax->weight = calloc(cells, sizeof *ax->weight);
    if (!ax->count || !ax->index || !ax->weight) {
        resample_axis_free(ax);
        return -1;
    }
    switch (mode) {
    case RESAMPLE_BILINEAR: build_bilinear(ax, scale); break;
    case RESAMPLE_BICUBIC: build_bicubic(ax, scale); break;
    case RESAMPLE_BILINEAR_AA: build_aa(ax, scale, 1.0, aa_triangle); break;
    case RESAMPLE_BICUBIC_AA: build_aa(ax, scale, 2.0, aa_cubic); break;
    }
    return 0;
}

/* Where the input comes from: an f32 or f64 array of `channels` planes, or a row callback. */
struct source {
    const float *in32;
    const double *in64;
    resample_row_fn row;
    void *ctx;
};

/* Rows first (each output row is a weighted sum of whole input rows: contiguous, vectorisable), then
 * columns. ATen resizes the width first; in double the order changes only the last bits. Exactly one
 * of out32/out64 is set. */
RESAMPLE_HOT static int resample2d(float *out32, double *out64, const struct source *src, int channels, int in_h, int in_w,
                      int out_h, int out_w, double scale_h, double scale_w, enum resample_mode mode)
{
    if (channels < 1 || in_h < 1 || in_w < 1 || out_h < 1 || out_w < 1)
        return -1;
    struct resample_axis ay, ax;
    if (resample_axis_init(&ay, in_h, out_h, scale_h, mode))
        return -1;
    if (resample_axis_init(&ax, in_w, out_w, scale_w, mode)) {
        resample_axis_free(&ay);
        return -1;
    }
    int rc = 0;
    double *row = malloc((size_t)in_w * sizeof *row);
    if (!row) {
        rc = -1;
        goto out;
    }
    size_t in_plane = (size_t)in_h * (size_t)in_w, out_plane = (size_t)out_h * (size_t)out_w;
    for (int c = 0; c < channels; c++) {
        for (int oy = 0; oy < out_h; oy++) {
            const int *iy = ay.index + (size_t)oy * ay.max_taps;
            const double *wy = ay.weight + (size_t)oy * ay.max_taps;
            if (ay.count[oy] == 0)
                for (int x = 0; x < in_w; x++)
                    row[x] = 0.0;
            for (int k = 0; k < ay.count[oy]; k++) {
                const double w = wy[k];
                const size_t off = (size_t)c * in_plane + (size_t)iy[k] * (size_t)in_w;
                if (src->in32) {
                    const float *s = src->in32 + off;
                    if (k == 0) {
                        RESAMPLE_SIMD
                        for (int x = 0; x < in_w; x++)
                            row[x] = w * (double)s[x];
                    } else {
                        RESAMPLE_SIMD
                        for (int x = 0; x < in_w; x++)
                            row[x] += w * (double)s[x];
                    }
                } else {
                    const double *s = src->in64 ? src->in64 + off : src->row(src->ctx, iy[k]);
                    if (!s) {
                        rc = -1;
                        goto out;
                    }
                    if (k == 0) {
                        RESAMPLE_SIMD
                        for (int x = 0; x < in_w; x++)
                            row[x] = w * s[x];
                    } else {
                        RESAMPLE_SIMD
                        for (int x = 0; x < in_w; x++)
                            row[x] += w * s[x];
                    }
                }
            }
            size_t dst = (size_t)c * out_plane + (size_t)oy * (size_t)out_w;
            for (int ox = 0; ox < out_w; ox++) {
                const int *ix = ax.index + (size_t)ox * ax.max_taps;
                const double *wx = ax.weight + (size_t)ox * ax.max_taps;
                double acc = 0.0;
                for (int k = 0; k < ax.count[ox]; k++)
                    acc += wx[k] * row[ix[k]];
                if (out32)
                    out32[dst + ox] = (float)acc;
                else
                    out64[dst + ox] = acc;
            }
        }
    }
out:
    free(row);
    resample_axis_free(&ay);
    resample_axis_free(&ax);
    return rc;
}

int resample2d_f32(float *out, const float *in, int channels, int in_h, int in_w, int out_h, int out_w,
                   double scale_h, double scale_w, enum resample_mode mode)
{
    if (!out || !in)
        return -1;
    struct source src = {in, NULL, NULL, NULL};
    return resample2d(out, NULL, &src, channels, in_h, in_w, out_h, out_w, scale_h, scale_w, mode);
}

int resample2d_f64(double *out, const double *in, int channels, int in_h, int in_w, int out_h, int out_w,
                   double scale_h, double scale_w, enum resample_mode mode)
{
    if (!out || !in)
        return -1;
    struct source src = {NULL, in, NULL, NULL};
    return resample2d(NULL, out, &src, channels, in_h, in_w, out_h, out_w, scale_h, scale_w, mode);
}

int resample2d_rows_f64(double *out, int in_h, int in_w, int out_h, int out_w, double scale_h, double scale_w,
                        enum resample_mode mode, resample_row_fn row, void *ctx)
{
    if (!out || !row)
        return -1;
    struct source src = {NULL, NULL, row, ctx};
    return resample2d(NULL, out, &src, 1, in_h, in_w, out_h, out_w, scale_h, scale_w, mode);
}

int resample_window_rows(int in_size, int out_size, double scale_factor, enum resample_mode mode)
{
    struct resample_axis a;
    if (resample_axis_init(&a, in_size, out_size, scale_factor, mode))
        return 0;
    int span = 0;
    for (int o = 0; o < a.out_size; o++) {
        if (a.count[o] == 0)
            continue;
        int lo = a.index[(size_t)o * a.max_taps], hi = lo;
        for (int k = 1; k < a.count[o]; k++) {
            int i = a.index[(size_t)o * a.max_taps + k];
            lo = i < lo ? i : lo;
            hi = i > hi ? i : hi;
        }
        span = hi - lo + 1 > span ? hi - lo + 1 : span;
    }
    resample_axis_free(&a);
    return span > 0 ? span : 1;
}
