/* PNG encoding through libpng into memory, and the picture drawn into it. */
#include "explain_png.h"
#include "error_message.h"

#include <math.h>
#include <png.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "explain_font.h"
#include "rms.h"
#include "symlog.h"

#define MARGIN 10
#define BAR_GAP 14
#define BAR_W 16
#define LABEL_GAP 6
#define SCALE 2 /* font pixels per glyph cell */
#define LINE_H (EXPLAIN_FONT_H * SCALE + 6)
#define TEXT_LINES 3

/* ---- encoding ---- */

struct png_sink {
    unsigned char *buf;
    size_t len, cap;
    char msg[200];
};

static void sink_write(png_structp png, png_bytep data, png_size_t n)
{
    struct png_sink *s = png_get_io_ptr(png);
    if (s->len + n > s->cap) {
        size_t cap = s->cap ? s->cap : 65536;
        while (cap < s->len + n)
            cap *= 2;
        unsigned char *b = realloc(s->buf, cap);
        if (!b)
            png_error(png, "out of memory");
        s->buf = b;
        s->cap = cap;
    }
    memcpy(s->buf + s->len, data, n);
    s->len += n;
}

static void sink_flush(png_structp png) { (void)png; }

static void on_error(png_structp png, png_const_charp msg)
{
    struct png_sink *s = png_get_error_ptr(png);
    snprintf(s->msg, sizeof s->msg, "%s", msg);
    png_longjmp(png, 1);
}

static void on_warning(png_structp png, png_const_charp msg)
{
    (void)png;
    (void)msg; /* warnings change nothing in the output we write */
}

int explain_png_encode(const uint8_t *rgb, int w, int h, const char *const *text_kv, int n_text,
                       unsigned char **out, size_t *out_len, char *err, size_t errlen)
{
    *out = NULL;
    *out_len = 0;
    if (w < 1 || h < 1 || n_text < 0 || n_text > 8)
        return error_set(err, errlen, -1, "invalid PNG size %d x %d", w, h);
    struct png_sink *s = calloc(1, sizeof *s);
    png_text text[8];
    if (!s)
        return error_set(err, errlen, -1, "out of memory");
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, s, on_error, on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!png || !info) {
        png_destroy_write_struct(&png, NULL);
        free(s);
        return error_set(err, errlen, -1, "out of memory for libpng");
    }
    if (setjmp(png_jmpbuf(png))) {
        error_set(err, errlen, -1, "libpng: %s", s->msg);
        png_destroy_write_struct(&png, &info);
        free(s->buf);
        free(s);
        return -1;
    }
    png_set_write_fn(png, s, sink_write, sink_flush);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    for (int i = 0; i < n_text; i++) {
        memset(&text[i], 0, sizeof text[i]);
        text[i].compression = PNG_TEXT_COMPRESSION_NONE;
        text[i].key = (png_charp)text_kv[2 * i];
        text[i].text = (png_charp)text_kv[2 * i + 1];
    }
    if (n_text)
        png_set_text(png, info, text, n_text);
    png_set_compression_level(png, 6);
    png_write_info(png, info);
    for (int y = 0; y < h; y++)
        png_write_row(png, (png_const_bytep)(rgb + (size_t)y * w * 3));
    png_write_end(png, info);
    png_destroy_write_struct(&png, &info);
    *out = s->buf;
    *out_len = s->len;
    free(s);
    return 0;
}

/* ---- drawing ---- */

void explain_png_layout(int64_t width, int64_t height, struct explain_png_layout *l)
{
    int64_t side = width > height ? width : height;
    l->img_w = (int)((width * EXPLAIN_PNG_SIDE + side / 2) / side);
    l->img_h = (int)((height * EXPLAIN_PNG_SIDE + side / 2) / side);
    if (l->img_w < 1)
        l->img_w = 1;
    if (l->img_h < 1)
        l->img_h = 1;
    l->img_x = MARGIN;
    l->img_y = MARGIN;
    l->bar_x = l->img_x + l->img_w + BAR_GAP;
    l->bar_y = l->img_y;
    l->bar_w = BAR_W;
    l->bar_h = l->img_h;
    const int label_w = explain_font_width("0.00000", SCALE);
    l->width = l->bar_x + BAR_W + LABEL_GAP + label_w + MARGIN;
    const int min_w = 2 * MARGIN + explain_font_width("CONTINUE_SCORE 0.000000  CONTINUE", SCALE);
    if (l->width < min_w)
        l->width = min_w;
    l->height = l->img_y + l->img_h + MARGIN + TEXT_LINES * LINE_H + MARGIN;
}

void explain_png_colour(double v, uint8_t rgb[3])
{
    /* Our own ramp through violet, magenta, orange to pale yellow: monotonic in lightness, so high
     * attention always reads brighter. */
    static const double stops[][4] = {
        {0.00, 30, 0, 110}, {0.35, 190, 20, 130}, {0.70, 255, 120, 20}, {1.00, 255, 250, 150}};
    if (!(v > 0))
        v = 0;
    if (v > 1)
        v = 1;
    int k = 0;
    while (k < 2 && v > stops[k + 1][0])
        k++;
    double t = (v - stops[k][0]) / (stops[k + 1][0] - stops[k][0]);
    for (int c = 0; c < 3; c++)
        rgb[c] = (uint8_t)lround(stops[k][c + 1] + t * (stops[k + 1][c + 1] - stops[k][c + 1]));
}

static void fill(uint8_t *rgb, int w, int x0, int y0, int x1, int y1, const uint8_t c[3])
{
    for (int y = y0; y < y1; y++)
        for (int x = x0; x < x1; x++)
            memcpy(rgb + ((size_t)y * w + x) * 3, c, 3);
}

/* text, cut to what fits in max_w pixels. */
static void draw_line(uint8_t *rgb, const struct explain_png_layout *l, int line, const char *text,
                      const uint8_t c[3])
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", text);
    size_t fit = (size_t)((l->width - 2 * MARGIN + SCALE) / ((EXPLAIN_FONT_W + 1) * SCALE));
    if (strlen(buf) > fit)
        buf[fit] = '\0';
    explain_font_draw(rgb, l->width, l->height, MARGIN, l->img_y + l->img_h + MARGIN + line * LINE_H, buf, SCALE,
                      c);
}

int explain_png_render(const struct image *img, const float *map, const struct explain_png_meta *meta,
                       unsigned char **out, size_t *out_len, char *err, size_t errlen)
{
    *out = NULL;
    *out_len = 0;
    if (!img || !img->pixels || img->width < 1 || img->height < 1 || !map || !meta)
        return error_set(err, errlen, -1, "no image to draw");
    const int64_t W = img->width, H = img->height;
    struct rms_result noise;
    char why[256];
    if (rms_estimate(img->pixels, (size_t)(W * H), img->dtype == IMAGE_F32, &noise, why, sizeof why))
        return error_set(err, errlen, -1, "%s", why);
    struct symlog_norm norm;
    symlog_norm_init(&norm, noise.rms);
    const double ymin = symlog_normalize(&norm, noise.xmin);
    float vmax = 0;
    for (int64_t i = 0; i < W * H; i++)
        if (map[i] > vmax)
            vmax = map[i];

    struct explain_png_layout l;
    explain_png_layout(W, H, &l);
    uint8_t *rgb = malloc((size_t)l.width * l.height * 3);
    if (!rgb)
        return error_set(err, errlen, -1, "out of memory for a %d x %d PNG", l.width, l.height);
    const uint8_t bg[3] = {24, 24, 28}, white[3] = {235, 235, 235}, grey[3] = {170, 170, 170};
    fill(rgb, l.width, 0, 0, l.width, l.height, bg);

    /* The image, nearest-sampled, north (high y) up; overlay alpha grows with the map. */
    for (int Y = 0; Y < l.img_h; Y++) {
        int64_t sy = H - 1 - ((int64_t)(2 * Y + 1) * H) / (2 * l.img_h);
        for (int X = 0; X < l.img_w; X++) {
            int64_t sx = ((int64_t)(2 * X + 1) * W) / (2 * l.img_w);
            size_t i = (size_t)(sy * W + sx);
            double px = image_pixel(img, i), g;
            symlog_stretch_row_f64(&norm, ymin, &px, &g, 1);
            double v = vmax > 0 ? map[i] / vmax : 0, a = 0.7 * v;
            uint8_t c[3];
            explain_png_colour(v, c);
            uint8_t *o = rgb + ((size_t)(l.img_y + Y) * l.width + l.img_x + X) * 3;
            for (int k = 0; k < 3; k++)
                o[k] = (uint8_t)lround((1 - a) * 255.0 * g + a * c[k]);
        }
    }
    /* The colour bar: the overlay's colours at full strength, maximum at the top. */
    for (int Y = 0; Y < l.bar_h; Y++) {
        uint8_t c[3];
        explain_png_colour(l.bar_h > 1 ? 1.0 - (double)Y / (l.bar_h - 1) : 1.0, c);
        fill(rgb, l.width, l.bar_x, l.bar_y + Y, l.bar_x + l.bar_w, l.bar_y + Y + 1, c);
    }
    char top[32];
    snprintf(top, sizeof top, "%.3g", (double)vmax);
    int lx = l.bar_x + l.bar_w + LABEL_GAP;
    explain_font_draw(rgb, l.width, l.height, lx, l.bar_y, top, SCALE, grey);
    explain_font_draw(rgb, l.width, l.height, lx, l.bar_y + l.bar_h - EXPLAIN_FONT_H * SCALE, "0", SCALE, grey);

    char line[256];
    int stop = meta->decision && strcmp(meta->decision, "stop") == 0;
    const uint8_t verdict[3] = {stop ? 100 : 255, stop ? 220 : 150, stop ? 100 : 40};
    snprintf(line, sizeof line, "CONTINUE_SCORE %.6f  ", meta->continue_score);
    int x = explain_font_draw(rgb, l.width, l.height, MARGIN, l.img_y + l.img_h + MARGIN, line, SCALE, white);
    explain_font_draw(rgb, l.width, l.height, x, l.img_y + l.img_h + MARGIN, stop ? "STOP" : "CONTINUE", SCALE,
                      verdict);
    snprintf(line, sizeof line, "MODEL %s  THRESHOLD %.3g", meta->model ? meta->model : "", meta->threshold);
    draw_line(rgb, &l, 1, line, grey);
    draw_line(rgb, &l, 2, meta->label ? meta->label : "", grey);

    char ibox[64], bbox[64], score[32];
    snprintf(ibox, sizeof ibox, "%d %d %d %d", l.img_x, l.img_y, l.img_w, l.img_h);
    snprintf(bbox, sizeof bbox, "%d %d %d %d", l.bar_x, l.bar_y, l.bar_w, l.bar_h);
    snprintf(score, sizeof score, "%.9g", meta->continue_score);
    const char *kv[] = {"Software", "stopcal " STOPCAL_VERSION, "stopcal:image-box", ibox, "stopcal:bar-box", bbox,
                        "stopcal:continue_score", score, "stopcal:decision", meta->decision ? meta->decision : ""};
    int rc = explain_png_encode(rgb, l.width, l.height, kv, 5, out, out_len, err, errlen);
    free(rgb);
    return rc;
}
