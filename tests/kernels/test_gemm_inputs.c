/* GEMM-input buffers of the CPU backend at bf16 (backend.h's alloc_gemm_input): an activation that
 * only a linear op reads is stored as bf16 pairs by the op that writes it, instead of being written
 * in fp32 and rounded by the reading GEMM. The rounding must be the same one, so every check here
 * is bit for bit:
 *   - each writer (linear with every epilogue and tail, the attention, LayerNorm on dense and
 *     strided rows, SwiGLU) stores exactly the pairs that rounding its fp32 result gives;
 *   - linear reading such a buffer gives the bits it gives reading the same values in fp32;
 *   - with the kernel table's rounding stores removed (the backend then rounds a staged fp32
 *     result itself) the stored pairs are the same;
 *   - the pad of an odd row stays 0 even when the row's inputs are infinite (the next GEMM
 *     multiplies it by a zero weight);
 *   - ops that cannot read or write the form refuse it with a message;
 *   - given models: a whole forward pass gives the same logits, bit for bit, with GEMM inputs
 *     apart (rounded as written), with the backend rounding them itself, and with the engine's
 *     buffers shared as before (each GEMM rounding its input).
 * Usage: test_gemm_inputs real|emulated [MODEL.safetensors ...]. real: the AVX512_BF16 kernels
 * (exit 77 where the CPU lacks them; the avx512sim build runs them on simulated instructions);
 * emulated: the plain C table of bf16_emulated.h, which has no rounding stores, on any CPU. */
#include "../check.h"

#include "backend_cpu.h"
#include "bf16_emulated.h"
#include "linear_bf16.h"
#include "model.h"
#include "vit.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static unsigned long long rng = 4242;

static float uniform1(float lo, float hi)
{
    rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
    return lo + (hi - lo) * (float)(rng >> 40) / 16777216.0f;
}

static float *uniform(size_t n, float lo, float hi)
{
    float *p = malloc(n * sizeof *p);
    for (size_t i = 0; i < n; i++)
        p[i] = uniform1(lo, hi);
    return p;
}

static void *plain(struct backend *be, const float *host, size_t n)
{
    void *d = be->ops->alloc(be, n);
    CHECK(d && be->ops->upload(be, d, host, n) == 0, "upload: %s", be->error);
    return d;
}

static float *fetch(struct backend *be, const void *d, size_t n)
{
    float *h = malloc(n * sizeof *h);
    CHECK(be->ops->download(be, h, d, n) == 0, "download: %s", be->error);
    return h;
}

/* The pairs rounding fp32 rows gives, through the backend's own round (upload into a GEMM input),
 * widened back: what a GEMM reading those rows would see. */
static float *rounded(struct backend *be, const float *host, int rows, int cols)
{
    void *g = be->ops->alloc_gemm_input(be, rows, cols);
    CHECK(g && be->ops->upload(be, g, host, (size_t)rows * cols) == 0, "upload (GEMM input): %s", be->error);
    float *h = fetch(be, g, (size_t)rows * cols);
    be->ops->release(be, g);
    return h;
}

static void expect_same_bits(const char *what, const float *got, const float *want, size_t n)
{
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < n; i++)
        if (memcmp(got + i, want + i, sizeof *got) != 0 && !(isnan(got[i]) && isnan(want[i])))
            first = bad++ ? first : i;
    CHECK(bad == 0, "%s: %zu of %zu values differ (first at %zu: %.9g, want %.9g)", what, bad, n, first,
          bad ? got[first] : 0.0, bad ? want[first] : 0.0);
}

struct pair_of_backends {
    struct backend fused; /* the table under test */
    struct backend own;   /* the same table without rounding stores: the backend rounds itself */
};

/* linear (m, n, k) into a GEMM input, against the fp32 result rounded; then a second linear
 * reading it, against the same values read from fp32. */
static void check_linear(struct pair_of_backends *p, int m, int n, int k, enum linear_epilogue epi)
{
    char what[96];
    snprintf(what, sizeof what, "linear m=%d n=%d k=%d epilogue %d", m, n, k, (int)epi);
    struct backend *be = &p->fused;
    float *x = uniform((size_t)m * k, -2, 2), *w = uniform((size_t)n * k, -0.5f, 0.5f);
    float *bias = uniform((size_t)n, -1, 1), *w2 = uniform((size_t)5 * n, -0.5f, 0.5f);
    void *dx = plain(be, x, (size_t)m * k), *db = plain(be, bias, (size_t)n);
    void *dw = be->ops->upload_weight(be, w, n, k, WEIGHT_MATRIX);
    void *dw2 = be->ops->upload_weight(be, w2, 5, n, WEIGHT_MATRIX);
    void *y = be->ops->alloc(be, (size_t)m * n), *g = be->ops->alloc_gemm_input(be, m, n);
    CHECK(dw && dw2 && y && g, "%s: buffers: %s", what, be->error);
    CHECK(be->ops->linear(be, y, dx, dw, db, m, n, k, epi) == 0, "%s: %s", what, be->error);
    CHECK(be->ops->linear(be, g, dx, dw, db, m, n, k, epi) == 0, "%s (into a GEMM input): %s", what, be->error);
    float *hy = fetch(be, y, (size_t)m * n), *hg = fetch(be, g, (size_t)m * n);
    float *want = rounded(be, hy, m, n);
    expect_same_bits(what, hg, want, (size_t)m * n);

    /* the reader: the GEMM input as it is, against its values given in fp32 */
    void *dg32 = plain(be, hg, (size_t)m * n);
    void *z = be->ops->alloc(be, (size_t)m * 5), *z32 = be->ops->alloc(be, (size_t)m * 5);
    CHECK(be->ops->linear(be, z, g, dw2, NULL, m, 5, n, EPILOGUE_NONE) == 0 &&
          be->ops->linear(be, z32, dg32, dw2, NULL, m, 5, n, EPILOGUE_NONE) == 0, "%s (read): %s", what, be->error);
    float *hz = fetch(be, z, (size_t)m * 5), *hz32 = fetch(be, z32, (size_t)m * 5);
    snprintf(what + strlen(what), sizeof what - strlen(what), ", read back");
    expect_same_bits(what, hz, hz32, (size_t)m * 5);

    /* the backend's own rounding of a staged result */
    struct backend *own = &p->own;
    void *ox = plain(own, x, (size_t)m * k), *ob = plain(own, bias, (size_t)n);
    void *ow = own->ops->upload_weight(own, w, n, k, WEIGHT_MATRIX), *og = own->ops->alloc_gemm_input(own, m, n);
    CHECK(ow && og && own->ops->linear(own, og, ox, ow, ob, m, n, k, epi) == 0, "%s (own rounding): %s", what,
          own->error);
    float *hog = fetch(own, og, (size_t)m * n);
    snprintf(what + strlen(what), sizeof what - strlen(what), ", own rounding");
    expect_same_bits(what, hog, hg, (size_t)m * n);

    void *mine[] = {dx, db, dw, dw2, y, g, dg32, z, z32};
    for (size_t i = 0; i < sizeof mine / sizeof *mine; i++)
        be->ops->release(be, mine[i]);
    void *theirs[] = {ox, ob, ow, og};
    for (size_t i = 0; i < sizeof theirs / sizeof *theirs; i++)
        own->ops->release(own, theirs[i]);
    free(x), free(w), free(bias), free(w2), free(hy), free(hg), free(want), free(hz), free(hz32), free(hog);
}

static void test_linear(struct pair_of_backends *p)
{
    /* one value; a k past the 256-pair chunk (partial sums staged) with GELU; a partial last panel
     * and odd n; rows past 8-row tiles and 64-row blocks; an odd k */
    check_linear(p, 1, 1, 1, EPILOGUE_NONE);
    check_linear(p, 9, 33, 515, EPILOGUE_GELU);
    check_linear(p, 70, 100, 64, EPILOGUE_RELU);
    check_linear(p, 130, 17, 1100, EPILOGUE_GELU);
    check_linear(p, 65, 96, 31, EPILOGUE_NONE);
    printf("  linear into and out of GEMM inputs: 5 shapes bit for bit\n");
}

/* An infinite input makes every real column ±inf or NaN; the pad of an odd row must still be 0. */
static void test_pad_stays_zero(struct backend *be)
{
    const int m = 3, n = 17, k = 40, k2 = linear_bf16_pairs(n);
    float *x = uniform((size_t)m * k, -1, 1), *w = uniform((size_t)n * k, -1, 1);
    x[5] = INFINITY;
    x[k + 7] = -INFINITY;
    void *dx = plain(be, x, (size_t)m * k), *dw = be->ops->upload_weight(be, w, n, k, WEIGHT_MATRIX);
    void *g = be->ops->alloc_gemm_input(be, m, n);
    CHECK(dw && g && be->ops->linear(be, g, dx, dw, NULL, m, n, k, EPILOGUE_GELU) == 0, "pad: %s", be->error);
    const uint32_t *words = g; /* the CPU backend's layout: rows of ⌈n/2⌉ pairs */
    for (int r = 0; r < m; r++)
        CHECK(words[(size_t)r * k2 + k2 - 1] >> 16 == 0, "row %d: the pad past odd n is 0x%04x, not 0", r,
              (unsigned)(words[(size_t)r * k2 + k2 - 1] >> 16));
    be->ops->release(be, dx), be->ops->release(be, dw), be->ops->release(be, g);
    free(x), free(w);
}

static void check_attention(struct pair_of_backends *p, int B, int T, int H)
{
    char what[64];
    snprintf(what, sizeof what, "attention B=%d T=%d H=%d", B, T, H);
    const size_t rows = (size_t)B * T, cols = (size_t)H * 64;
    float *qkv = uniform(rows * 3 * cols, -2.5f, 2.5f), *want = NULL, *got[2];
    struct backend *bes[] = {&p->fused, &p->own};
    for (int i = 0; i < 2; i++) {
        struct backend *be = bes[i];
        void *dq = plain(be, qkv, rows * 3 * cols), *out = be->ops->alloc(be, rows * cols);
        void *g = be->ops->alloc_gemm_input(be, rows, cols);
        CHECK(out && g && be->ops->attention(be, out, dq, B, T, H) == 0 &&
              be->ops->attention(be, g, dq, B, T, H) == 0, "%s: %s", what, be->error);
        if (i == 0) {
            float *h = fetch(be, out, rows * cols);
            want = rounded(be, h, (int)rows, (int)cols);
            free(h);
        }
        got[i] = fetch(be, g, rows * cols);
        be->ops->release(be, dq), be->ops->release(be, out), be->ops->release(be, g);
    }
    expect_same_bits(what, got[0], want, rows * cols);
    snprintf(what + strlen(what), sizeof what - strlen(what), ", own rounding");
    expect_same_bits(what, got[1], want, rows * cols);
    free(qkv), free(want), free(got[0]), free(got[1]);
}

/* LayerNorm (dense rows, and CLS rows `stride` apart) and SwiGLU into GEMM inputs; both are
 * rounded by the backend itself, so one backend suffices. */
static void check_layernorm(struct backend *be, int rows, int dim, int stride)
{
    char what[64];
    snprintf(what, sizeof what, "layernorm rows=%d dim=%d stride=%d", rows, dim, stride);
    float *x = uniform((size_t)rows * stride, -3, 5), *w = uniform((size_t)dim, 0.5f, 1.5f);
    float *b = uniform((size_t)dim, -1, 1);
    void *dx = plain(be, x, (size_t)rows * stride), *dw = plain(be, w, dim), *db = plain(be, b, dim);
    void *out = be->ops->alloc(be, (size_t)rows * dim), *g = be->ops->alloc_gemm_input(be, rows, dim);
    CHECK(out && g && be->ops->layernorm(be, out, dx, dw, db, rows, dim, stride, 1e-6f) == 0 &&
          be->ops->layernorm(be, g, dx, dw, db, rows, dim, stride, 1e-6f) == 0, "%s: %s", what, be->error);
    float *h = fetch(be, out, (size_t)rows * dim), *hg = fetch(be, g, (size_t)rows * dim);
    float *want = rounded(be, h, rows, dim);
    expect_same_bits(what, hg, want, (size_t)rows * dim);
    void *bufs[] = {dx, dw, db, out, g};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
        be->ops->release(be, bufs[i]);
    free(x), free(w), free(b), free(h), free(hg), free(want);
}

static void check_swiglu(struct backend *be, int rows, int hidden)
{
    float *x = uniform((size_t)rows * 2 * hidden, -4, 4);
    void *dx = plain(be, x, (size_t)rows * 2 * hidden), *out = be->ops->alloc(be, (size_t)rows * hidden);
    void *g = be->ops->alloc_gemm_input(be, rows, hidden);
    CHECK(out && g && be->ops->swiglu(be, out, dx, rows, hidden) == 0 &&
          be->ops->swiglu(be, g, dx, rows, hidden) == 0, "swiglu: %s", be->error);
    float *h = fetch(be, out, (size_t)rows * hidden), *hg = fetch(be, g, (size_t)rows * hidden);
    float *want = rounded(be, h, rows, hidden);
    expect_same_bits("swiglu", hg, want, (size_t)rows * hidden);
    be->ops->release(be, dx), be->ops->release(be, out), be->ops->release(be, g);
    free(x), free(h), free(hg), free(want);
}

static void expect_refused(struct backend *be, int rc, const char *what, const char *needle)
{
    CHECK(rc == BACKEND_EINVAL, "%s: returned %d, not BACKEND_EINVAL", what, rc);
    CHECK(strstr(be->error, needle) != NULL, "%s: message '%s' does not mention '%s'", what, be->error, needle);
}

static void test_misuse_is_refused(struct backend *be)
{
    const int rows = 4, D = 64;
    float *x = uniform((size_t)rows * 3 * D, -1, 1), *w = uniform((size_t)D * D, -1, 1);
    void *g = be->ops->alloc_gemm_input(be, rows, D), *dx = plain(be, x, (size_t)rows * D);
    void *dq = plain(be, x, (size_t)rows * 3 * D), *dg = plain(be, w, D);
    void *dw = be->ops->upload_weight(be, w, D, D, WEIGHT_MATRIX), *dw2 = be->ops->upload_weight(be, w, 32, 2 * 32, WEIGHT_MATRIX);
    CHECK(g && dw && dw2, "misuse: buffers: %s", be->error);
    expect_refused(be, be->ops->layerscale_residual(be, g, dx, dg, rows, D), "layerscale_residual into a GEMM input",
                   "GEMM-input");
    expect_refused(be, be->ops->layerscale_residual(be, dx, g, dg, rows, D), "layerscale_residual from a GEMM input",
                   "GEMM-input");
    expect_refused(be, be->ops->attention(be, dx, g, 1, rows, 1), "attention reading a GEMM input as qkv",
                   "GEMM-input");
    expect_refused(be, be->ops->layernorm(be, dx, g, dg, dg, rows, D, D, 1e-6f), "layernorm reading a GEMM input",
                   "GEMM-input");
    /* a GEMM input of 64 columns read as k = 64 by a weight of k = 64 is fine; by k = 64 but more
     * rows than it holds, or as a 32 × 64 output of n = 32, it is not */
    expect_refused(be, be->ops->linear(be, dx, g, dw, NULL, rows + 1, D, D, EPILOGUE_NONE), "linear reading too many rows",
                   "GEMM-input buffer of 4 rows of 64");
    expect_refused(be, be->ops->linear(be, g, dx, dw2, NULL, rows, 32, 64, EPILOGUE_NONE), "linear writing 32 columns into 64",
                   "GEMM-input buffer of 4 rows of 64");
    float part[3];
    expect_refused(be, be->ops->download(be, part, g, 3), "download of part of a row", "not whole rows");
    void *bufs[] = {g, dx, dq, dg, dw, dw2};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
        be->ops->release(be, bufs[i]);
    free(x), free(w);
}

/* A whole pass, three ways, the same logits bit for bit. */
static void check_model(const char *path, const struct cpu_bf16_kernels *kernels,
                        const struct cpu_bf16_kernels *own_rounding)
{
    char err[512];
    struct model m;
    CHECK(model_open(&m, path, err, sizeof err) == 0, "%s", err);
    if (check_failures)
        return;
    const int S = m.config.input_size, B = 2;
    float *pixels = uniform((size_t)B * 3 * S * S, -2, 2), logits[3][2];
    const struct cpu_bf16_kernels *tables[] = {kernels, own_rounding, kernels};
    static const char *ways[] = {"GEMM inputs rounded as written", "rounded by the backend", "buffers shared"};
    for (int i = 0; i < 3; i++) {
        struct backend be;
        struct vit *v;
        CHECK(backend_cpu_create_bf16_with(&be, NULL, tables[i], err, sizeof err) == 0, "%s", err);
        if (i == 2)
            be.gemm_inputs_apart = 0; /* the engine then shares buffers and each GEMM rounds its input */
        CHECK(vit_create(&v, &m, &be, err, sizeof err) == 0 &&
              vit_forward(v, pixels, B, S, logits[i], err, sizeof err) == 0, "%s (%s): %s", path, ways[i], err);
        vit_destroy(v);
        backend_destroy(&be);
    }
    for (int i = 1; i < 3; i++)
        CHECK(memcmp(logits[0], logits[i], sizeof logits[0]) == 0, "%s: logits %.9g %.9g (%s) vs %.9g %.9g (%s)",
              path, logits[0][0], logits[0][1], ways[0], logits[i][0], logits[i][1], ways[i]);
    printf("  %s: logits %.7g, %.7g the same three ways\n", path, logits[0][0], logits[0][1]);
    model_close(&m);
    free(pixels);
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "";
    if (strcmp(mode, "real") && strcmp(mode, "emulated")) {
        fprintf(stderr, "usage: test_gemm_inputs real|emulated [MODEL.safetensors ...]\n");
        return 2;
    }
    const int real = !strcmp(mode, "real");
    if (real && !linear_bf16_supported()) {
        printf("skip: this CPU (or build) has no AVX512_BF16; 'emulated' runs the backend's own rounding "
               "on any CPU\n");
        return 77;
    }
    const struct cpu_bf16_kernels *kernels = real ? &cpu_bf16_avx512 : &cpu_bf16_emulated;
    struct cpu_bf16_kernels own_rounding = *kernels;
    own_rounding.linear_to_bf16 = NULL;
    own_rounding.attention_to_bf16 = NULL;
    if (!real)
        CHECK(!kernels->linear_to_bf16 && !kernels->attention_to_bf16,
              "the emulating table was expected to have no rounding stores");
    else
        CHECK(kernels->linear_to_bf16 && kernels->attention_to_bf16, "the product's table lacks its rounding stores");

    struct pair_of_backends p;
    char err[256];
    CHECK(backend_cpu_create_bf16_with(&p.fused, NULL, kernels, err, sizeof err) == 0, "%s", err);
    CHECK(backend_cpu_create_bf16_with(&p.own, NULL, &own_rounding, err, sizeof err) == 0, "%s", err);
    CHECK(p.fused.gemm_inputs_apart && p.fused.ops->alloc_gemm_input, "the bf16 CPU backend keeps GEMM inputs apart");
    if (check_failures)
        return test_report("test_gemm_inputs");
    printf("%s kernels (%s):\n", mode, kernels->name);
    test_linear(&p);
    test_pad_stays_zero(&p.fused);
    test_pad_stays_zero(&p.own);
    check_attention(&p, 1, 1, 1);
    check_attention(&p, 2, 37, 2);
    check_attention(&p, 1, 300, 2);
    printf("  attention into GEMM inputs: 3 shapes bit for bit\n");
    check_layernorm(&p.fused, 70, 96, 96);
    check_layernorm(&p.fused, 3, 64, 64 * 5);
    check_swiglu(&p.fused, 37, 48);
    printf("  layernorm (dense, strided) and swiglu into GEMM inputs: bit for bit\n");
    test_misuse_is_refused(&p.fused);
    backend_destroy(&p.fused);
    backend_destroy(&p.own);

    /* fp32: GEMM inputs are not kept apart, so the engine shares its buffers as before */
    struct backend fp32;
    CHECK(backend_cpu_create(&fp32, NULL, err, sizeof err) == 0, "%s", err);
    CHECK(fp32.precision == BACKEND_FP32 && !fp32.gemm_inputs_apart, "fp32 CPU backend: GEMM inputs apart");
    backend_destroy(&fp32);

    for (int i = 2; i < argc; i++)
        check_model(argv[i], kernels, &own_rounding);
    return test_report("test_gemm_inputs");
}
