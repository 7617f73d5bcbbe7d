/* The CPU backend's bf16 precision against its fp32 one, measured on whole models: |Δ logit| and
 * |Δ continue_score| over the parity models and radio images (structured synthetic ones and
 * LOFAR-like FITS files through the real preprocessing), with the distribution printed and the
 * bounds derived in bound_logit() asserted.
 *
 *   test_bf16_numerics MODEL[@N]... -- IMAGE.fits...      the bf16 forward on the emulating kernels
 *                                                        (cpu-bf16-ref), on any CPU
 *   test_bf16_numerics --real MODEL... -- IMAGE.fits...   the AVX512_BF16 kernels against it and
 *                                                        against fp32; exits 77 (ctest SKIP) with a
 *                                                        printed reason on CPUs without them
 *
 * MODEL@N runs that model on its first N images only (the synthetic ones first), for the models whose
 * emulated forward pass is slow.
 *
 * Also, in the first form: the emulating linear kernel bit for bit against linear_bf16_ref (so the
 * numbers here are the instructions' numbers), and the bf16 path giving an image the same logit, bit
 * for bit, alone and in a batch. */
#include "../check.h"

#include "backend.h"
#include "backend_cpu.h"
#include "bf16_emulated.h"
#include "image.h"
#include "linear_bf16.h"
#include "model.h"
#include "preprocess.h"
#include "ref_ops.h"
#include "vit.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define N_SYNTHETIC 6
#define MAX_IMAGES 64
#define BATCH 8

static unsigned long long rng = 2027;

static double normal(void)
{
    const double u = 1e-12 + test_uniform(&rng, 0, 1), v = test_uniform(&rng, 0, 1);
    return sqrt(-2 * log(u)) * cos(6.283185307179586 * v);
}

/* A preprocessed-looking image as the parity harness makes them (tests/reference/stopcal_harness.py
 * make_image): a noise floor in [0, 1] with a few compact and extended sources, per channel. */
static void synthetic_image(float *out, int S)
{
    for (int c = 0; c < 3; c++) {
        float *plane = out + (size_t)c * S * S;
        for (int i = 0; i < S * S; i++)
            plane[i] = (float)(0.1 + 0.05 * normal());
        const int sources = 1 + (int)test_uniform(&rng, 0, 6);
        for (int s = 0; s < sources; s++) {
            const double cx = test_uniform(&rng, 0, 1), cy = test_uniform(&rng, 0, 1);
            const double w = test_uniform(&rng, 0.01f, 0.25f), amp = test_uniform(&rng, 0.2f, 0.9f);
            for (int y = 0; y < S; y++)
                for (int x = 0; x < S; x++) {
                    const double dx = (double)x / S - cx, dy = (double)y / S - cy;
                    plane[y * S + x] += (float)(amp * exp(-(dx * dx + dy * dy) / (2 * w * w)));
                }
        }
        for (int i = 0; i < S * S; i++)
            plane[i] = plane[i] < 0 ? 0 : plane[i] > 1 ? 1 : plane[i];
    }
}

static int load_fits(float *out, const char *path, const struct model_config *cfg)
{
    unsigned char *bytes = NULL;
    size_t len = 0;
    char err[256];
    struct preprocess_stats stats;
    const struct image_limits limits = image_limits_default();
    int rc = image_read_file(path, limits.max_bytes, &bytes, &len, err, sizeof err);
    if (!rc)
        rc = image_to_tensor(out, bytes, len, &limits, cfg, 0, &stats, err, sizeof err);
    free(bytes);
    CHECK(rc == 0, "%s: %s", path, err);
    return rc;
}

/* The emulating linear kernel is the reference's arithmetic, bit for bit, on the tails of a panel,
 * of the k pairs and with an odd k (the numbers below are then the instructions' own). */
static void test_emulation_is_the_reference(void)
{
    static const int shapes[][3] = {{1, 1, 1}, {3, 33, 7}, {9, 64, 64}, {5, 100, 515}, {2, 1, 384}};
    long bad = 0, total = 0;
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        const int m = shapes[s][0], n = shapes[s][1], k = shapes[s][2];
        float *in = malloc(sizeof(float) * (size_t)m * k), *w = malloc(sizeof(float) * (size_t)n * k);
        float *bias = malloc(sizeof(float) * (size_t)n), *got = malloc(sizeof(float) * (size_t)m * n);
        float *want = malloc(sizeof(float) * (size_t)m * n);
        uint32_t *packed = malloc(sizeof(uint32_t) * linear_bf16_packed_words(n, k));
        uint32_t *rows = malloc(sizeof(uint32_t) * (size_t)m * linear_bf16_pairs(k));
        for (int i = 0; i < m * k; i++)
            in[i] = test_uniform(&rng, -3, 3) * (i % 17 == 0 ? 1e-39f : 1.0f); /* some denormals */
        for (int i = 0; i < n * k; i++)
            w[i] = test_uniform(&rng, -1, 1);
        for (int i = 0; i < n; i++)
            bias[i] = test_uniform(&rng, -1, 1);
        linear_bf16_pack_weight(packed, w, n, k);
        cpu_bf16_emulated.round_rows(rows, in, m, k, k);
        cpu_bf16_emulated.linear(got, n, rows, packed, bias, m, n, k, EPILOGUE_NONE);
        linear_bf16_ref(want, in, w, bias, m, n, k, EPILOGUE_NONE);
        for (int i = 0; i < m * n; i++, total++)
            bad += memcmp(&got[i], &want[i], sizeof(float)) != 0;
        free(in), free(w), free(bias), free(got), free(want), free(packed), free(rows);
    }
    CHECK(bad == 0, "the emulating linear kernel differs from linear_bf16_ref on %ld of %ld outputs", bad, total);
    printf("  emulating linear kernel: %ld outputs bit-exact against linear_bf16_ref\n", total);
    static const int tokens[] = {1, 2, 17, 40};
    bad = total = 0;
    for (size_t t = 0; t < sizeof tokens / sizeof *tokens; t++) {
        const int T = tokens[t], B = 2, H = 2, n = B * T * H * 64;
        float *qkv = malloc(sizeof(float) * 3 * n), *got = malloc(sizeof(float) * n), *want = malloc(sizeof(float) * n);
        const size_t floats = cpu_bf16_emulated.attention_scratch_floats(T);
        float *scratch = malloc(sizeof(float) * floats);
        for (int i = 0; i < 3 * n; i++)
            qkv[i] = test_uniform(&rng, -2.5f, 2.5f);
        cpu_bf16_emulated.attention(got, qkv, B, T, H, scratch, floats);
        attention_bf16_ref(want, qkv, B, T, H);
        for (int i = 0; i < n; i++, total++)
            bad += memcmp(&got[i], &want[i], sizeof(float)) != 0;
        free(qkv), free(got), free(want), free(scratch);
    }
    CHECK(bad == 0, "the emulating attention differs from attention_bf16_ref on %ld of %ld outputs", bad, total);
    printf("  emulating attention: %ld outputs bit-exact against attention_bf16_ref\n", total);
}

struct engine {
    struct backend be;
    struct vit *v;
};

/* kernels: NULL for the product's backend at `precision`, else the bf16 backend on them. */
static int engine_open(struct engine *e, const struct model *m, const char *precision,
                       const struct cpu_bf16_kernels *kernels)
{
    char err[256];
    struct backend_options o = {.precision = precision};
    const int rc = kernels ? backend_cpu_create_bf16_with(&e->be, &o, kernels, err, sizeof err)
                           : backend_cpu_create(&e->be, &o, err, sizeof err);
    CHECK(rc == 0, "backend (%s): %s", precision, err);
    if (rc)
        return -1;
    if (vit_create(&e->v, m, &e->be, err, sizeof err)) {
        CHECK(0, "vit_create: %s", err);
        backend_destroy(&e->be);
        return -1;
    }
    return 0;
}

static void engine_close(struct engine *e)
{
    vit_destroy(e->v);
    backend_destroy(&e->be);
}

static int logits_of(struct engine *e, const float *pixels, int n, int S, float *logits)
{
    char err[256];
    for (int at = 0; at < n; at += BATCH) {
        const int b = n - at < BATCH ? n - at : BATCH;
        if (vit_forward(e->v, pixels + (size_t)at * 3 * S * S, b, S, logits + at, err, sizeof err)) {
            CHECK(0, "forward: %s", err);
            return -1;
        }
    }
    return 0;
}

static double sigmoid(double x) { return x >= 0 ? 1 / (1 + exp(-x)) : exp(x) / (1 + exp(x)); }

static int by_value(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The distribution of n values, as one line: min, median, 90th percentile, max. */
static void print_distribution(const char *what, const double *v, int n)
{
    double *s = malloc(sizeof *s * (size_t)n);
    memcpy(s, v, sizeof *s * (size_t)n);
    qsort(s, (size_t)n, sizeof *s, by_value);
    printf("  %-34s n=%3d  min %.2e  median %.2e  p90 %.2e  max %.2e\n", what, n, s[0], s[n / 2],
           s[(int)(0.9 * (n - 1))], s[n - 1]);
    free(s);
}

/* The typical size of the terms the logit is summed from, from the model's own weights: the head
 * computes logit = Σ_j w2_j·h_j + b2 with h = ReLU(W1·c + b1) and c the final-norm CLS token. c is
 * LayerNorm's output, x̂ (zero mean, unit variance) times norm.weight plus norm.bias, so E c_i² =
 * nw_i² + nb_i²; then E (W1_j·c + b1_j)² ≈ ‖W1_j‖²·‖c‖²/D + b1_j², halved by the ReLU; and the terms
 * w2_j·h_j have ‖t‖₂² = Σ_j w2_j²·E h_j². The logit itself can be much smaller than ‖t‖₂ (the
 * terms cancel), but its rounding error is a sum over those terms, so ‖t‖₂ is its scale. */
static double head_scale(const struct model *m)
{
    const struct model_config *c = &m->config;
    const int D = c->embed_dim, H = c->head_hidden_dim;
    float *nw = malloc(sizeof(float) * D), *nb = malloc(sizeof(float) * D);
    float *w1 = malloc(sizeof(float) * (size_t)H * D), *b1 = malloc(sizeof(float) * H), *w2 = malloc(sizeof(float) * H);
    model_tensor_to_f32(model_find(m, "norm.weight"), nw);
    model_tensor_to_f32(model_find(m, "norm.bias"), nb);
    model_tensor_to_f32(model_find(m, "head.fc1.weight"), w1);
    model_tensor_to_f32(model_find(m, "head.fc1.bias"), b1);
    model_tensor_to_f32(model_find(m, "head.fc2.weight"), w2);
    double cc = 0, tt = 0;
    for (int i = 0; i < D; i++)
        cc += (double)nw[i] * nw[i] + (double)nb[i] * nb[i];
    for (int j = 0; j < H; j++) {
        double row = 0;
        for (int i = 0; i < D; i++)
            row += (double)w1[(size_t)j * D + i] * w1[(size_t)j * D + i];
        tt += (double)w2[j] * w2[j] * 0.5 * (row * cc / D + (double)b1[j] * b1[j]);
    }
    free(nw), free(nb), free(w1), free(b1), free(w2);
    return sqrt(tt);
}

/* The bound on |Δ logit| of bf16 against fp32 for a model of depth L whose logit terms have scale
 * S (head_scale). Where it comes from:
 *   - one rounding to bf16 moves an operand by a relative error of at most u = 2⁻⁹ (8 significant
 *     bits, round to nearest), spread evenly within ±u: standard deviation u/√3 ≈ 1.1e-3;
 *   - a GEMM output is a sum of k products whose operands are both rounded: relative to the output's
 *     own size its error stays of order u/√3 (errors and values both add like random walks, so it
 *     does not grow with k), and it adds to whatever error its inputs already carried;
 *   - the CLS token the head reads is the end of a chain of such GEMMs: per block qkv, Q·Kᵀ, P·V,
 *     proj, fc1, fc2 (6; SwiGLU the same count), plus the patch embedding and the head's first
 *     layer; independent errors add in quadrature, so its elements carry a relative error of about
 *     (u/√3)·√(6L + 2), and the head's last layer one more rounding: √(6L + 3);
 *   - the logit sums the terms w2_j·h_j, each off by that relative error independently, so
 *     |Δ logit| has standard deviation ≈ (u/√3)·√(6L + 3)·S.
 * We allow 6 standard deviations (a Gaussian exceeds that once in 5·10⁸ draws; the error is a sum of
 * thousands of independent roundings) plus 1e-4 absolute, the fp32 path's own tolerance. */
static double bound_logit(int depth, double scale)
{
    const double u = 0x1p-9;
    return 6 * u / sqrt(3.0) * sqrt(6.0 * depth + 3) * scale + 1e-4;
}

struct tally {
    double dl[MAX_IMAGES * 8], ds[MAX_IMAGES * 8];
    int n;
};

/* One model: fp32 and bf16 logits for every image; returns 0 when it ran. */
static int run_model(const char *arg, char **fits, int n_fits, int real, struct tally *all,
                     struct tally *real_vs_ref)
{
    struct model m;
    char err[512], path[1024];
    snprintf(path, sizeof path, "%s", arg);
    char *at = strrchr(path, '@');
    int cap = MAX_IMAGES;
    if (at) {
        *at = '\0';
        cap = atoi(at + 1);
    }
    if (model_open(&m, path, err, sizeof err)) {
        CHECK(0, "%s: %s", path, err);
        return -1;
    }
    const struct model_config *c = &m.config;
    const int S = c->input_size, n_all = N_SYNTHETIC + n_fits, n = cap < n_all ? (cap < 1 ? 1 : cap) : n_all;
    float *pixels = malloc(sizeof(float) * (size_t)n * 3 * S * S);
    float l32[MAX_IMAGES], l16[MAX_IMAGES], lreal[MAX_IMAGES], alone;
    int ok = pixels != NULL;
    /* the first half synthetic, then the FITS images, so a capped model sees both kinds */
    int n_syn = n == n_all ? N_SYNTHETIC : (n + 1) / 2 < N_SYNTHETIC ? (n + 1) / 2 : N_SYNTHETIC;
    if (n - n_syn > n_fits)
        n_syn = n - n_fits;
    for (int i = 0; ok && i < n_syn; i++)
        synthetic_image(pixels + (size_t)i * 3 * S * S, S);
    for (int i = 0; ok && i < n - n_syn && i < n_fits; i++)
        ok = load_fits(pixels + (size_t)(n_syn + i) * 3 * S * S, fits[i], c) == 0;
    struct engine fp32, ref, hw;
    ok = ok && engine_open(&fp32, &m, "fp32", NULL) == 0;
    ok = ok && logits_of(&fp32, pixels, n, S, l32) == 0;
    if (ok)
        engine_close(&fp32);
    ok = ok && engine_open(&ref, &m, "bf16", &cpu_bf16_emulated) == 0;
    ok = ok && logits_of(&ref, pixels, n, S, l16) == 0;
    if (ok) {
        /* the bf16 path is row-wise and per image: batch-invariant, bit for bit */
        CHECK(vit_forward(ref.v, pixels + (size_t)(n - 1) * 3 * S * S, 1, S, &alone, err, sizeof err) == 0,
              "%s", err);
        CHECK(memcmp(&alone, &l16[n - 1], sizeof alone) == 0, "bf16: image %d alone %.9g, in a batch %.9g",
              n - 1, alone, l16[n - 1]);
        engine_close(&ref);
    }
    if (ok && real) {
        ok = engine_open(&hw, &m, "bf16", NULL) == 0 && logits_of(&hw, pixels, n, S, lreal) == 0;
        if (ok)
            engine_close(&hw);
    }
    if (ok) {
        double mean = 0, dl[MAX_IMAGES], ds[MAX_IMAGES], worst = 0, worst_s = 0, worst_real = 0;
        for (int i = 0; i < n; i++)
            mean += fabs(l32[i]) / n;
        const double scale = head_scale(&m), bound = bound_logit(c->depth, scale);
        for (int i = 0; i < n; i++) {
            const float *got = real ? lreal : l16;
            dl[i] = fabs((double)got[i] - l32[i]);
            ds[i] = fabs(sigmoid(got[i]) - sigmoid(l32[i]));
            worst = fmax(worst, dl[i]);
            worst_s = fmax(worst_s, ds[i]);
            all->dl[all->n] = dl[i], all->ds[all->n++] = ds[i];
            if (real) {
                real_vs_ref->dl[real_vs_ref->n] = fabs((double)lreal[i] - l16[i]);
                worst_real = fmax(worst_real, real_vs_ref->dl[real_vs_ref->n]);
                real_vs_ref->ds[real_vs_ref->n++] = fabs(sigmoid(lreal[i]) - sigmoid(l16[i]));
            }
        }
        const char *name = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
        printf("  %s (D %d, depth %d, %d px, %d images; mean |logit| %.3f, head scale %.3f): max |Δ logit| "
               "%.2e (bound %.2e), max |Δ continue_score| %.2e\n", name, c->embed_dim, c->depth, S, n, mean, scale,
               worst, bound, worst_s);
        /* the kernels and the emulation round the same operands; they part only where attention's
         * fp32 sums (vs the reference's double) tip a rounding, so they are held to the same bound */
        CHECK(!real || worst_real <= bound, "%s: AVX512_BF16 kernels vs the emulation: |Δ logit| %.3g > %.3g",
              name, worst_real, bound);
        CHECK(worst <= bound, "%s: bf16 %s fp32 by |Δ logit| %.3g > %.3g", name, real ? "(AVX512_BF16) vs" : "vs",
              worst, bound);
        /* the score moves by at most a quarter of the logit (σ' ≤ 1/4) */
        for (int i = 0; i < n; i++)
            CHECK(ds[i] <= 0.25 * dl[i] + 1e-7, "%s image %d: |Δ score| %.3g > |Δ logit|/4", name, i, ds[i]);
        /* and bf16 really is another computation than fp32 (the path is not fp32 in disguise) */
        int differ = 0;
        for (int i = 0; i < n; i++)
            differ += l16[i] != l32[i];
        CHECK(differ == n, "%s: bf16 logits equal to fp32 on %d of %d images", name, n - differ, n);
    }
    free(pixels);
    model_close(&m);
    return ok ? 0 : -1;
}

int main(int argc, char **argv)
{
    int real = argc > 1 && strcmp(argv[1], "--real") == 0, first = 1 + real, sep = first;
    while (sep < argc && strcmp(argv[sep], "--") != 0)
        sep++;
    char **fits = argv + sep + (sep < argc), **models = argv + first;
    const int n_models = sep - first, n_fits = sep < argc ? argc - sep - 1 : 0;
    if (n_models < 1 || N_SYNTHETIC + n_fits > MAX_IMAGES || n_models > 8) {
        fprintf(stderr, "usage: test_bf16_numerics [--real] MODEL... [-- IMAGE.fits...]\n");
        return 2;
    }
    if (real && !linear_bf16_supported()) {
        printf("skip: this CPU (or build) has no AVX512_BF16, so the bf16 kernels cannot run; the bf16 "
               "forward pass was measured on the emulating kernels instead (bf16_numerics)\n");
        return 77;
    }
    if (!real)
        test_emulation_is_the_reference();
    static struct tally all, real_vs_ref;
    for (int i = 0; i < n_models; i++)
        run_model(models[i], fits, n_fits, real, &all, &real_vs_ref);
    if (all.n) {
        printf("  bf16 %s vs fp32, every model and image:\n", real ? "(AVX512_BF16 kernels)" : "(emulated)");
        print_distribution("|Δ logit|", all.dl, all.n);
        print_distribution("|Δ continue_score|", all.ds, all.n);
    }
    if (real_vs_ref.n) {
        printf("  AVX512_BF16 kernels vs the emulating reference:\n");
        print_distribution("|Δ logit|", real_vs_ref.dl, real_vs_ref.n);
        print_distribution("|Δ continue_score|", real_vs_ref.ds, real_vs_ref.n);
    }
    return test_report(real ? "bf16_numerics_real" : "bf16_numerics");
}
