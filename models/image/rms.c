/* rms by iterative 3-sigma clipping around the median (ARCHITECTURE.md §4 step 2) without copying the image.
 * The median: a strided sample places a narrow window around it, one pass (which also counts non-finite
 * pixels, as 0, and sums for the unclipped std) copies the values inside the window, and introselect finds the
 * exact median among them; if the window missed, a histogram of the values' top bits finds its bucket
 * instead. Each clipped std is one pass of sums shifted by the median (the kept values lie within 3 rms
 * of it, so nothing cancels). */
#include "rms.h"
#include "error_message.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "image.h"
#include "image_internal.h"

#define RMS_MASK 1e-7     /* pixels with |x| <= this are blank (zeros, NaN borders counted as 0) */
#define RMS_CUT 3.0       /* clip at 3 rms around the median */
#define RMS_CONVERGED 0.1 /* stop when the rms moves by less than 10% */
#define RMS_ITERATIONS 10
/* A value that takes part in the rms: finite and above the mask (non-finite pixels count as 0). */
#define MASKED(v) (isfinite(v) && fabs(v) > RMS_MASK)

static inline void swap2(double *a, double *b)
{
    double t = *a;
    *a = *b;
    *b = t;
}

static void insertion_sort(double *v, size_t lo, size_t hi)
{
    for (size_t i = lo + 1; i <= hi; i++) {
        double x = v[i];
        size_t j = i;
        for (; j > lo && v[j - 1] > x; j--)
            v[j] = v[j - 1];
        v[j] = x;
    }
}

/* Hoare partition of v[lo..hi] around p, a value present in the range that is not its unique maximum.
 * Returns j, lo <= j < hi, with v[lo..j] <= p <= v[j+1..hi]. */
static size_t partition(double *v, size_t lo, size_t hi, double p)
{
    size_t i = lo, j = hi;
    for (;;) {
        while (v[i] < p)
            i++;
        while (v[j] > p)
            j--;
        if (i >= j)
            return j;
        swap2(&v[i], &v[j]);
        i++;
        j--;
    }
}

static double select_range(double *v, size_t lo, size_t hi, size_t k, int budget);

/* Median of the medians of groups of five (BFPRT): a pivot with at least ~30% of the range on each
 * side, which bounds the selection to linear time whatever the data. */
static double median_of_medians(double *v, size_t lo, size_t hi)
{
    size_t groups = 0;
    for (size_t g = lo; g + 4 <= hi; g += 5) {
        insertion_sort(v, g, g + 4);
        swap2(&v[lo + groups], &v[g + 2]);
        groups++;
    }
    return select_range(v, lo, lo + groups - 1, lo + (groups - 1) / 2, -1);
}

/* Introselect on v[lo..hi] (inclusive) for absolute index k: `budget` median-of-three rounds (−1: the
 * default 2·log2(n) + 8), then median-of-medians pivots. */
static double select_range(double *v, size_t lo, size_t hi, size_t k, int budget)
{
    if (budget < 0) {
        size_t n = hi - lo + 1;
        budget = 8;
        while (n >>= 1)
            budget += 2;
    }
    for (;;) {
        if (hi - lo < 16) {
            insertion_sort(v, lo, hi);
            return v[k];
        }
        double p;
        if (budget > 0) {
            budget--;
            size_t mid = lo + (hi - lo) / 2;
            if (v[mid] < v[lo])
                swap2(&v[mid], &v[lo]);
            if (v[hi] < v[lo])
                swap2(&v[hi], &v[lo]);
            if (v[hi] < v[mid])
                swap2(&v[hi], &v[mid]);
            p = v[mid]; /* v[lo] <= p <= v[hi]: p is not the unique maximum */
        } else {
            p = median_of_medians(v, lo, hi);
        }
        size_t j = partition(v, lo, hi, p);
        if (k <= j)
            hi = j;
        else
            lo = j + 1;
    }
}

double rms_select(double *v, size_t n, size_t k)
{
    return select_range(v, 0, n - 1, k, -1);
}

double rms_select_budget(double *v, size_t n, size_t k, int budget)
{
    return select_range(v, 0, n - 1, k, budget < 0 ? 0 : budget);
}

double rms_median(double *v, size_t n)
{
    size_t k = n / 2;
    double upper = rms_select(v, n, k);
    if (n % 2)
        return upper;
    double lower = v[0]; /* after selection the lower middle is the largest of v[0..k) */
    for (size_t i = 1; i < k; i++)
        lower = v[i] > lower ? v[i] : lower;
    return (lower + upper) / 2.0;
}

/* --- the per-pixel passes, once per storage type --------------------------------------------- */

#define RMS_BUCKETS 4096       /* fallback median search: the top 12 bits of a value's ordered key */
#define RMS_SAMPLE 65536       /* about this many pixels are sampled to place the median's window */
#define RMS_WINDOW_FRACTION 64 /* the window spans ±1/64 of the sample's ranks around its median */

struct scan {
    int64_t nonfinite;
    size_t m;     /* values with |x| > RMS_MASK */
    size_t below; /* masked values below the window */
    double xmin, s1, s2;
};
struct moments {
    size_t count;
    double s1, s2;
};
/* Masked values inside the window [lo, hi], in a buffer that grows as needed. */
struct window {
    double *v;
    size_t count, capacity;
};

static int window_grow(struct window *w)
{
    size_t cap = w->capacity ? w->capacity * 2 : 4096;
    double *v = realloc(w->v, cap * sizeof *v);
    if (!v)
        return -1;
    w->v = v;
    w->capacity = cap;
    return 0;
}

/* Order-preserving keys: flip every bit of a negative value, only the sign bit of a positive one, and
 * unsigned comparison of the keys orders the values. The top 12 bits are the bucket: sign, exponent and
 * (for float) 3 mantissa bits, so a bucket spans at most an octave. */
static inline unsigned bucket_f32(float v)
{
    uint32_t u;
    memcpy(&u, &v, sizeof u);
    u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
    return u >> 20;
}

static inline unsigned bucket_f64(double v)
{
    uint64_t u;
    memcpy(&u, &v, sizeof u);
    u = (u >> 63) ? ~u : (u | (UINT64_C(1) << 63));
    return (unsigned)(u >> 52);
}

#define PIX float
#define SUFFIX f32
#define BUCKET bucket_f32
#include "rms_passes.inc"
#undef PIX
#undef SUFFIX
#undef BUCKET
#define PIX double
#define SUFFIX f64
#define BUCKET bucket_f64
#include "rms_passes.inc"
#undef PIX
#undef SUFFIX
#undef BUCKET

static void moments(const void *x, size_t n, int f32, double center, double limit, struct moments *mo)
{
    if (f32)
        moments_f32(x, n, center, limit, mo);
    else
        moments_f64(x, n, center, limit, mo);
}

/* Population std from shifted sums (numpy's np.std, ddof = 0). */
static double std_of(double s1, double s2, size_t count)
{
    double mean = s1 / (double)count;
    double var = s2 / (double)count - mean * mean;
    return sqrt(var > 0.0 ? var : 0.0);
}

/* A window [lo, hi] that holds the median with near certainty: the ranks 1/2 ± 1/64 of a strided
 * sample. Returns 0, or -1 when the sample is too small to bother (then lo > hi: an empty window) or
 * memory is short. *center gets a sampled value, a centre for the scan's sums. */
static int sample_window(const void *x, size_t n, int f32, double *lo, double *hi, double *center)
{
    *lo = INFINITY;
    *hi = -INFINITY;
    *center = 0.0;
    size_t stride = n / RMS_SAMPLE;
    stride = stride < 1 ? 1 : stride | 1; /* odd: not in step with power-of-two row lengths */
    size_t cap = n / stride + 1;
    double *v = malloc(cap * sizeof *v);
    if (!v)
        return -1;
    size_t k = f32 ? sample_f32(x, n, stride, v) : sample_f64(x, n, stride, v);
    if (k > 0)
        *center = v[0];
    if (k < 256) {
        free(v);
        return -1;
    }
    size_t half = k / RMS_WINDOW_FRACTION, mid = k / 2;
    size_t klo = mid - half, khi = mid + half < k ? mid + half : k - 1;
    *lo = rms_select(v, k, klo);
    *hi = rms_select(v + klo, k - klo, khi - klo); /* the values above rank klo sit after it */
    free(v);
    return 0;
}

/* The median when the window missed it (or there was none): a histogram of the values' top bits finds
 * the median's bucket, and only that bucket is copied and searched. */
static int median_by_buckets(const void *x, size_t n, int f32, size_t m, double *med, char *err, size_t errlen)
{
    size_t *hist = calloc(RMS_BUCKETS, sizeof *hist);
    if (!hist)
        return error_set(err, errlen, IMAGE_ENOMEM, "out of memory for the rms");
    if (f32)
        histogram_f32(x, n, hist);
    else
        histogram_f64(x, n, hist);
    size_t k = m / 2, before = 0;
    unsigned bk = 0;
    for (; bk < RMS_BUCKETS - 1 && before + hist[bk] <= k; bk++)
        before += hist[bk];
    size_t nb = hist[bk], r = k - before;
    free(hist);
    double *g = malloc((nb ? nb : 1) * sizeof *g);
    if (!g)
        return error_set(err, errlen, IMAGE_ENOMEM, "out of memory for the median (%zu values)", nb);
    size_t ng = f32 ? gather_f32(x, n, bk, g) : gather_f64(x, n, bk, g);
    if (ng != nb || r >= nb) { /* the passes saw different data: a caller bug */
        free(g);
        return error_set(err, errlen, IMAGE_EINVAL, "internal error: the image changed during the rms");
    }
    double upper = rms_select(g, nb, r);
    if (m % 2 == 0) { /* numpy averages the two middle values */
        double lower;
        if (r > 0) {
            lower = g[0]; /* after selection the values before rank r are the smaller ones */
            for (size_t i = 1; i < r; i++)
                lower = g[i] > lower ? g[i] : lower;
        } else {
            lower = f32 ? below_f32(x, n, bk) : below_f64(x, n, bk);
        }
        upper = (lower + upper) / 2.0;
    }
    free(g);
    *med = upper;
    return IMAGE_OK;
}

int rms_estimate(const void *x, size_t n, int f32, struct rms_result *res, char *err, size_t errlen)
{
    res->rms = 0.0;
    res->xmin = 0.0;
    res->nonfinite = 0;
    double lo, hi, center;
    if (sample_window(x, n, f32, &lo, &hi, &center) != 0) {
        lo = INFINITY; /* no window: the median comes from the buckets */
        hi = -INFINITY;
    }
    struct window win = {NULL, 0, 0};
    struct scan sc;
    if ((f32 ? scan_f32(x, n, center, lo, hi, &sc, &win) : scan_f64(x, n, center, lo, hi, &sc, &win)) != 0) {
        free(win.v);
        return error_set(err, errlen, IMAGE_ENOMEM, "out of memory for the median");
    }
    res->nonfinite = sc.nonfinite;
    res->xmin = sc.xmin;
    if (sc.m == 0) {
        free(win.v);
        return error_set(err, errlen, IMAGE_EINVAL,
                          "rms is undefined: no pixel has |value| > 1e-7 (the image is all zero or all NaN)");
    }

    /* The median (numpy's: the mean of the two middle values when m is even) from the window when
     * both middle ranks fall in it, else from the buckets. */
    size_t k = sc.m / 2, need_lo = sc.m % 2 ? k : k - 1;
    double med = 0.0;
    if (need_lo >= sc.below && k < sc.below + win.count) {
        double upper = rms_select(win.v, win.count, k - sc.below);
        if (sc.m % 2 == 0) {
            size_t r = k - sc.below;
            double lower = win.v[0];
            for (size_t i = 1; i < r; i++)
                lower = win.v[i] > lower ? win.v[i] : lower;
            upper = (lower + upper) / 2.0;
        }
        med = upper;
        free(win.v);
    } else {
        free(win.v);
        int rc = median_by_buckets(x, n, f32, sc.m, &med, err, errlen);
        if (rc != IMAGE_OK)
            return rc;
    }

    /* np.std of all masked values. Sums around a sampled value are exact enough unless the mean lies
     * far from it relative to the spread (a bright source, a large offset): then sum again around the
     * median, which is within one std of the mean. */
    double rms_old = std_of(sc.s1, sc.s2, sc.m);
    double shift = sc.s1 / (double)sc.m;
    if (!(rms_old > 0.0) || shift * shift > 1e4 * rms_old * rms_old) {
        struct moments mo;
        moments(x, n, f32, med, INFINITY, &mo);
        rms_old = std_of(mo.s1, mo.s2, mo.count);
    }

    double rms = rms_old;
    size_t kept = 1;
    for (int it = 0; it < RMS_ITERATIONS; it++) {
        struct moments mo;
        moments(x, n, f32, med, rms_old * RMS_CUT, &mo);
        kept = mo.count;
        if (kept == 0)
            break; /* rms_old was 0: nothing lies strictly within 0 of the median (numpy: NaN) */
        rms = std_of(mo.s1, mo.s2, mo.count);
        if (fabs((rms - rms_old) / rms_old) < RMS_CONVERGED)
            break;
        rms_old = rms;
    }
    if (isinf(rms) || isnan(rms) || isinf(rms_old))
        return error_set(err, errlen, IMAGE_EINVAL, "rms is not finite: the pixel values overflow double precision");
    if (kept == 0 || !(rms > 0.0))
        return error_set(err, errlen, IMAGE_EINVAL,
                          "rms = 0: the image is constant (or nearly so: the clipped pixels all share one value), "
                          "so it cannot be normalised");
    res->rms = rms;
    return IMAGE_OK;
}
