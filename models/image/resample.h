/* The separable image resampler shared by the preprocessing (bilinear, with and without antialias)
 * and the positional-embedding resize (bicubic, with and without antialias). It reproduces
 * torch.nn.functional.interpolate(align_corners=False) on CPU, tap for tap, computing in double. */
#ifndef STOPCAL_RESAMPLE_H
#define STOPCAL_RESAMPLE_H

enum resample_mode {
    RESAMPLE_BILINEAR,    /* mode="bilinear", antialias=False */
    RESAMPLE_BILINEAR_AA, /* mode="bilinear", antialias=True: triangle widened by the scale when shrinking */
    RESAMPLE_BICUBIC,     /* mode="bicubic", antialias=False: Keys cubic A = -0.75, clamped taps */
    RESAMPLE_BICUBIC_AA,  /* mode="bicubic", antialias=True: cubic a = -0.5 (PIL), normalised, even upsampling */
};

/* Resize `channels` planes of in_h×in_w (row-major, contiguous planes) to out_h×out_w.
 * scale_h/scale_w: the scale_factor passed to interpolate (output/input) when the caller used
 * scale_factor=..., or 0 to mean size=... (scale derived from the sizes). Non-AA bicubic uses
 * A = -0.75, half-pixel centres, no clamping of negative source coordinates, clamped tap indices (as
 * PyTorch); non-AA bilinear clamps negative source coordinates to 0 (as PyTorch); AA modes use
 * PyTorch's separable antialias filters (bicubic a = -0.5, bilinear triangle widened by the scale when
 * downsampling, weights normalised) even when upsampling. Computes in double.
 * `out` must not overlap `in`. Returns 0, or -1 on invalid sizes / scales / allocation failure
 * (out is then untouched). Allocates only a small scratch, freed before returning; thread-safe. */
int resample2d_f32(float *out, const float *in, int channels, int in_h, int in_w, int out_h, int out_w,
                   double scale_h, double scale_w, enum resample_mode mode);

/* The same in double precision, for the preprocessing (ARCHITECTURE.md §4: float64 where the reference is). */
int resample2d_f64(double *out, const double *in, int channels, int in_h, int in_w, int out_h, int out_w,
                   double scale_h, double scale_w, enum resample_mode mode);

/* The same, reading the input through a callback instead of an array, so a caller can produce input
 * rows on demand (the preprocessing stretches only the rows a resize touches, once each). row(ctx, y)
 * returns in_w doubles of input row y (0 <= y < in_h), or NULL to abort (the call then returns -1);
 * the pointer need only stay valid until the next call. Rows are requested in non-decreasing order of
 * the first row of each output row's window, so a small ring of recent rows serves every request. One
 * channel. Returns 0, or -1 as above. */
typedef const double *(*resample_row_fn)(void *ctx, int y);
int resample2d_rows_f64(double *out, int in_h, int in_w, int out_h, int out_w, double scale_h, double scale_w,
                        enum resample_mode mode, resample_row_fn row, void *ctx);

/* Rows of input an output row of this resize combines, at most: the ring size a resample2d_rows_f64
 * caller needs to serve every row from its cache. Returns 0 on invalid arguments. */
int resample_window_rows(int in_size, int out_size, double scale_factor, enum resample_mode mode);

/* One axis of a separable resize: for output o, taps index[o*max_taps + k] with weights
 * weight[o*max_taps + k], k < count[o]. Exposed so that callers resizing many planes the same way
 * (and the tests) can build the tables once. */
struct resample_axis {
    int in_size, out_size, max_taps;
    int *count;     /* (out_size) */
    int *index;     /* (out_size, max_taps), each in [0, in_size) */
    double *weight; /* (out_size, max_taps) */
};

/* Build the tables for one axis. scale_factor as above (0 = derived from sizes). Returns 0, or -1 on
 * invalid arguments or allocation failure (ax is then empty and needs no resample_axis_free). */
int resample_axis_init(struct resample_axis *ax, int in_size, int out_size, double scale_factor,
                       enum resample_mode mode);
void resample_axis_free(struct resample_axis *ax);

#endif
