/* Every backend op, driven through be->ops on random inputs, on every backend this build has,
 * against the plain C references (kernels/ref/). A backend gets this suite by being registered
 * (kernels/backend_registry.c) or, for the test-only CUDA emulation, by a row in cases below.
 *
 * Inputs an op reads are produced the way the forward pass produces them (a GEMM's input comes
 * out of a LayerNorm, attention's qkv out of a linear op), because a backend may keep them in its
 * own precision; the test downloads what the backend actually holds and gives exactly that to the
 * reference, so only the op's own roundings count. Weights and uploaded inputs are drawn as bf16
 * values, so a backend that keeps weights in bf16 sees the same numbers as the reference.
 *
 * Tolerances (u = 2⁻⁸, bf16's unit roundoff, for backends that store activations in bf16; the
 * derivations are those of tests/cuda/test_cuda_kernels.c):
 *  - fp32 outputs differ from the reference by summation order only: 1e-5 relative and absolute
 *    (times K/64 for a GEMM's K-term sums);
 *  - an output rounded once to bf16: rtol 2u, plus a small atol for values near 0;
 *  - a GEMM's output z is stored bf16 before the bias/activation pass (|Δz| ≤ u|z|, |GELU′| ≤
 *    1.13), then rounded again: atol 1.2u·max|z| on top of rtol 2u;
 *  - attention with P rounded to bf16: atol 4u·max|v|, rtol 2u. */
#include "../check.h"

#include "backend.h"
#include "backend_registry.h"
#include "bf16.h"
#include "cpu_isa.h"
#include "ref_ops.h"
#ifdef STOPCAL_CUDA_EMULATION
#include "backend_cuda.h"
#endif

#include <math.h>
#include <string.h>

#define BF16_U (1.0 / 256.0)

struct backend_case {
    char name[48];
    const struct backend_entry *entry; /* NULL: the emulation below */
    struct backend_options options;
    int bf16; /* stores GEMM/attention activations in bf16 */
    char unavailable[160]; /* non-empty: this machine cannot run the case, and why */
};

static unsigned long long rng = 2024;

static float *random_bf16_values(size_t n, float lo, float hi)
{
    float *p = malloc(n * sizeof *p);
    for (size_t i = 0; i < n; i++)
        p[i] = bf16_round(test_uniform(&rng, lo, hi));
    return p;
}

static double *widen(const float *x, size_t n)
{
    double *d = malloc(n * sizeof *d);
    for (size_t i = 0; i < n; i++)
        d[i] = x[i];
    return d;
}

static double max_abs(const float *x, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++)
        m = fabs(x[i]) > m ? fabs(x[i]) : m;
    return m;
}

static void *upload(struct backend *be, const float *host, size_t n)
{
    void *buf = be->ops->alloc(be, n);
    CHECK(buf != NULL, "%s alloc: %s", be->ops->name, be->error);
    if (buf)
        CHECK(be->ops->upload(be, buf, host, n) == 0, "%s upload: %s", be->ops->name, be->error);
    return buf;
}

static void *weight(struct backend *be, const float *host, size_t rows, size_t cols, enum weight_kind kind)
{
    void *w = be->ops->upload_weight(be, host, rows, cols, kind);
    CHECK(w != NULL, "%s upload_weight: %s", be->ops->name, be->error);
    return w;
}

static float *download(struct backend *be, const void *buf, size_t n)
{
    float *host = malloc(n * sizeof *host);
    CHECK(be->ops->download(be, host, buf, n) == 0, "%s download: %s", be->ops->name, be->error);
    return host;
}

/* Compare and free got; what names the op, shape and backend. */
static void expect_close(const struct backend_case *bc, const char *op, float *got, const float *want,
                         size_t n, double atol, double rtol)
{
    char what[160];
    snprintf(what, sizeof what, "[%.47s] %.100s", bc->name, op); /* bounded: -O3 checks truncation */
    double *ref = widen(want, n);
    CHECK(check_close(what, got, ref, n, atol, rtol), "%s", what);
    free(ref);
    free(got);
}

/* with_pos 0: DINOv3's embedding, no positional term (pos NULL). */
static void test_patch_embed(struct backend *be, const struct backend_case *bc, int R, int with_pos)
{
    const int B = 2, S = 28, P = 14, D = 64, g = S / P, T = 1 + R + g * g, K = 3 * P * P;
    const size_t n_pix = (size_t)B * 3 * S * S, n_out = (size_t)B * T * D;
    float *pix = random_bf16_values(n_pix, -1, 1), *w = random_bf16_values((size_t)D * K, -.1f, .1f);
    float *bias = random_bf16_values(D, -1, 1), *cls = random_bf16_values(D, -1, 1);
    float *reg = random_bf16_values((size_t)(R ? R : 1) * D, -1, 1);
    float *pos = random_bf16_values((size_t)(1 + g * g) * D, -1, 1), *want = malloc(n_out * sizeof *want);
    void *d_pix = upload(be, pix, n_pix), *d_w = weight(be, w, D, K, WEIGHT_PATCH);
    void *d_b = weight(be, bias, 1, D, WEIGHT_VECTOR), *d_cls = weight(be, cls, 1, D, WEIGHT_VECTOR);
    void *d_reg = R ? weight(be, reg, 1, (size_t)R * D, WEIGHT_VECTOR) : NULL;
    void *d_pos = weight(be, pos, 1, (size_t)(1 + g * g) * D, WEIGHT_VECTOR), *d_x = be->ops->alloc(be, n_out);
    CHECK(be->ops->patch_embed(be, d_x, d_pix, d_w, d_b, d_cls, d_reg, with_pos ? d_pos : NULL, B, S, P, D, R) == 0,
          "[%s] patch_embed: %s", bc->name, be->error);
    patch_embed_forward_ref(want, pix, w, bias, cls, R ? reg : NULL, with_pos ? pos : NULL, B, S, P, D, R);
    char op[64];
    snprintf(op, sizeof op, "patch_embed B=%d S=%d P=%d D=%d R=%d%s", B, S, P, D, R, with_pos ? "" : " no pos");
    expect_close(bc, op, download(be, d_x, n_out), want, n_out, 2e-5, 2e-5);
    void *bufs[] = {d_pix, d_w, d_b, d_cls, d_reg, d_pos, d_x};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
        be->ops->release(be, bufs[i]);
    free(pix), free(w), free(bias), free(cls), free(reg), free(pos), free(want);
}

/* A LayerNorm of rows uploaded fp32: the op under test, and the way every GEMM input is made.
 * Returns the backend buffer (rows, dim); *host_out gets what it holds. */
static void *layernormed(struct backend *be, const struct backend_case *bc, int rows, int dim,
                         int stride, float **host_out, int check)
{
    float *x = random_bf16_values((size_t)rows * stride, -3, 5), *w = random_bf16_values(dim, 0.5f, 1.5f);
    float *b = random_bf16_values(dim, -1, 1);
    void *d_x = upload(be, x, (size_t)rows * stride), *d_w = weight(be, w, 1, dim, WEIGHT_VECTOR);
    void *d_b = weight(be, b, 1, dim, WEIGHT_VECTOR), *d_out = be->ops->alloc(be, (size_t)rows * dim);
    CHECK(be->ops->layernorm(be, d_out, d_x, d_w, d_b, rows, dim, stride, 1e-6f) == 0,
          "[%s] layernorm: %s", bc->name, be->error);
    float *got = download(be, d_out, (size_t)rows * dim);
    if (check) {
        float *want = malloc(sizeof(float) * rows * dim);
        layernorm_forward_ref(want, x, w, b, rows, dim, stride, 1e-6f);
        char op[64];
        snprintf(op, sizeof op, "layernorm rows=%d dim=%d stride=%d", rows, dim, stride);
        float *copy = malloc(sizeof(float) * rows * dim);
        memcpy(copy, got, sizeof(float) * rows * dim);
        expect_close(bc, op, copy, want, (size_t)rows * dim, 1e-5, bc->bf16 ? 2 * BF16_U : 1e-5);
        free(want);
    }
    be->ops->release(be, d_x), be->ops->release(be, d_w), be->ops->release(be, d_b);
    free(x), free(w), free(b);
    *host_out = got;
    return d_out;
}

/* out = epilogue(in · Wᵀ + bias) on a LayerNorm's output; returns the output buffer (m, n) and
 * its contents in *host_out (both kept for the ops that read a GEMM's output). */
static void *linear_case(struct backend *be, const struct backend_case *bc, int m, int n, int k,
                         enum linear_epilogue epi, int with_bias, float **host_out)
{
    float *in;
    void *d_in = layernormed(be, bc, m, k, k, &in, 0);
    float *w = random_bf16_values((size_t)n * k, -0.2f, 0.2f), *bias = random_bf16_values(n, -1, 1);
    void *d_w = weight(be, w, n, k, WEIGHT_MATRIX);
    void *d_b = with_bias ? weight(be, bias, 1, n, WEIGHT_VECTOR) : NULL, *d_out = be->ops->alloc(be, (size_t)m * n);
    CHECK(be->ops->linear(be, d_out, d_in, d_w, d_b, m, n, k, epi) == 0, "[%s] linear: %s", bc->name,
          be->error);
    float *want = malloc(sizeof(float) * m * n), *z = malloc(sizeof(float) * m * n);
    linear_forward_ref(want, in, w, with_bias ? bias : NULL, m, n, k, epi);
    linear_forward_ref(z, in, w, with_bias ? bias : NULL, m, n, k, EPILOGUE_NONE);
    float *got = download(be, d_out, (size_t)m * n);
    /* narrow outputs (the logit) stay fp32 on bf16 backends */
    const int bf16_out = bc->bf16 && n >= 8;
    const double fp32_tol = 1e-5 * (k > 64 ? k / 64.0 : 1);
    double atol = bf16_out ? 1.2 * BF16_U * max_abs(z, (size_t)m * n) : fp32_tol;
    double rtol = bf16_out ? 2 * BF16_U : fp32_tol;
    static const char *names[] = {"none", "gelu", "relu"};
    char op[96];
    snprintf(op, sizeof op, "linear M=%d N=%d K=%d epilogue %s%s", m, n, k, names[epi],
             with_bias ? "" : " no bias");
    float *copy = malloc(sizeof(float) * m * n);
    memcpy(copy, got, sizeof(float) * m * n);
    expect_close(bc, op, copy, want, (size_t)m * n, atol, rtol);
    be->ops->release(be, d_in), be->ops->release(be, d_w), be->ops->release(be, d_b);
    free(in), free(w), free(bias), free(want), free(z);
    *host_out = got;
    return d_out;
}

static void test_linear(struct backend *be, const struct backend_case *bc)
{
    /* N a multiple of the CPU's 32-column panel (packed) and not (raw), the head's N = 1, K past
     * one 64-wide step, every epilogue, with and without bias. */
    static const int shapes[][3] = {{9, 64, 96}, {5, 40, 96}, {70, 96, 160}, {3, 1, 96}};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
        for (int e = EPILOGUE_NONE; e <= EPILOGUE_RELU; e++) {
            float *host;
            void *out = linear_case(be, bc, shapes[s][0], shapes[s][1], shapes[s][2], (enum linear_epilogue)e,
                                    1, &host);
            be->ops->release(be, out);
            free(host);
        }
    float *host;
    be->ops->release(be, linear_case(be, bc, 13, 64, 96, EPILOGUE_NONE, 0, &host));
    free(host);
}

static void test_attention(struct backend *be, const struct backend_case *bc, int B, int T, int H)
{
    const int D = H * 64;
    float *qkv;
    void *d_qkv = linear_case(be, bc, B * T, 3 * D, 64, EPILOGUE_NONE, 1, &qkv);
    const size_t n = (size_t)B * T * D;
    void *d_out = be->ops->alloc(be, n);
    CHECK(be->ops->attention(be, d_out, d_qkv, B, T, H) == 0, "[%s] attention: %s", bc->name, be->error);
    float *want = malloc(n * sizeof *want);
    attention_forward_ref(want, qkv, B, T, H);
    char op[64];
    snprintf(op, sizeof op, "attention B=%d T=%d H=%d", B, T, H);
    const double vmax = max_abs(qkv, (size_t)B * T * 3 * D);
    expect_close(bc, op, download(be, d_out, n), want, n, bc->bf16 ? 4 * BF16_U * vmax : 2e-6,
                 bc->bf16 ? 2 * BF16_U : 2e-5);
    be->ops->release(be, d_qkv), be->ops->release(be, d_out);
    free(qkv), free(want);
}

/* The explain passes' op: softmax rows of the first `queries` tokens, per head or head-averaged.
 * The reference gets the qkv the backend holds (bf16 on CUDA), so only the kernel's own fp32
 * arithmetic differs from the reference's double: scores of 64 terms and one exp per probability. */
static void test_attention_probs(struct backend *be, const struct backend_case *bc, int B, int T, int H,
                                 int queries, int mean_heads)
{
    const int D = H * 64;
    float *qkv;
    void *d_qkv = linear_case(be, bc, B * T, 3 * D, 64, EPILOGUE_NONE, 1, &qkv);
    const size_t n = (size_t)B * (mean_heads ? 1 : H) * queries * T;
    void *d_out = be->ops->alloc(be, n);
    CHECK(be->ops->attention_probs != NULL, "[%s] has attention_probs", bc->name);
    CHECK(be->ops->attention_probs(be, d_out, d_qkv, B, T, H, queries, mean_heads) == 0, "[%s] attention_probs: %s",
          bc->name, be->error);
    float *want = malloc(n * sizeof *want);
    attention_probs_ref(want, qkv, B, T, H, queries, mean_heads);
    char op[80];
    snprintf(op, sizeof op, "attention_probs B=%d T=%d H=%d queries=%d mean=%d", B, T, H, queries, mean_heads);
    float *got = download(be, d_out, n);
    /* Each row is a distribution: it sums to 1 whatever the tolerance below allows. */
    double worst = 0;
    for (size_t r = 0; r < n / T; r++) {
        double sum = 0;
        for (int j = 0; j < T; j++)
            sum += got[r * T + j];
        worst = fabs(sum - 1) > worst ? fabs(sum - 1) : worst;
    }
    CHECK(worst < 1e-5, "[%s] %s: rows sum to 1 (worst |sum - 1| = %.3g)", bc->name, op, worst);
    expect_close(bc, op, got, want, n, 1e-6, 1e-5);
    CHECK(be->ops->attention_probs(be, d_out, d_qkv, B, T, H, T + 1, mean_heads) == BACKEND_EINVAL,
          "[%s] attention_probs refuses more query rows than tokens", bc->name);
    be->ops->release(be, d_qkv), be->ops->release(be, d_out);
    free(qkv), free(want);
}

/* RoPE in place on a GEMM's qkv (bf16 on CUDA): the reference rotates exactly what the backend
 * holds; one product pair and one add per output, rounded once more to bf16 where stored so. The
 * prefix tokens and v must come back unchanged, bit for bit. */
static void test_rope(struct backend *be, const struct backend_case *bc, int B, int T, int H, int prefix)
{
    const int D = H * 64;
    float *qkv;
    void *d_qkv = linear_case(be, bc, B * T, 3 * D, 64, EPILOGUE_NONE, 1, &qkv);
    float *table = malloc(sizeof(float) * (T - prefix > 0 ? T - prefix : 1) * 64);
    for (int t = 0; t < T - prefix; t++)
        for (int j = 0; j < 32; j++) {
            const double a = test_uniform(&rng, -7, 7);
            table[t * 64 + j] = (float)cos(a);
            table[t * 64 + 32 + j] = (float)sin(a);
        }
    void *d_table = weight(be, table, 1, (size_t)(T - prefix > 0 ? T - prefix : 1) * 64, WEIGHT_VECTOR);
    CHECK(be->ops->rope != NULL, "[%s] has rope", bc->name);
    CHECK(be->ops->rope(be, d_qkv, d_table, B, T, H, prefix) == 0, "[%s] rope: %s", bc->name, be->error);
    const size_t n = (size_t)B * T * 3 * D;
    float *want = malloc(n * sizeof *want);
    memcpy(want, qkv, n * sizeof *want);
    rope_forward_ref(want, table, B, T, H, prefix);
    float *got = download(be, d_qkv, n);
    size_t changed = 0, kept = 0;
    for (size_t i = 0; i < n; i++) {
        const size_t t = (i / (3 * D)) % T, part = (i % (3 * D)) / D;
        if (t < (size_t)prefix || part == 2)
            kept += got[i] != qkv[i];
        else
            changed += want[i] != qkv[i];
    }
    CHECK(kept == 0, "[%s] rope left the prefix tokens and v alone (%zu values changed)", bc->name, kept);
    CHECK(T == prefix || changed > 0, "[%s] rope rotated something", bc->name);
    char op[64];
    snprintf(op, sizeof op, "rope B=%d T=%d H=%d prefix=%d", B, T, H, prefix);
    expect_close(bc, op, got, want, n, bc->bf16 ? 2 * BF16_U * max_abs(qkv, n) : 1e-6 * (1 + max_abs(qkv, n)),
                 bc->bf16 ? 2 * BF16_U : 1e-6);
    CHECK(be->ops->rope(be, d_qkv, d_table, B, T, H, T + 1) == BACKEND_EINVAL,
          "[%s] rope refuses a prefix past the tokens", bc->name);
    be->ops->release(be, d_qkv), be->ops->release(be, d_table);
    free(qkv), free(want), free(table);
}

static void test_swiglu(struct backend *be, const struct backend_case *bc)
{
    const int rows = 6, F = 40;
    float *in;
    void *d_in = linear_case(be, bc, rows, 2 * F, 64, EPILOGUE_NONE, 1, &in);
    void *d_out = be->ops->alloc(be, (size_t)rows * F);
    CHECK(be->ops->swiglu(be, d_out, d_in, rows, F) == 0, "[%s] swiglu: %s", bc->name, be->error);
    float *want = malloc(sizeof(float) * rows * F);
    swiglu_forward_ref(want, in, rows, F);
    expect_close(bc, "swiglu rows=6 F=40", download(be, d_out, (size_t)rows * F), want, (size_t)rows * F,
                 1e-6, bc->bf16 ? 2 * BF16_U : 1e-6);
    be->ops->release(be, d_in), be->ops->release(be, d_out);
    free(in), free(want);
}

/* x += γ ⊙ y with y a GEMM output; then, with fuse, the LayerNorm of x that always follows in the
 * forward pass (the CUDA backend folds the held-back add into it): both x and the norm checked. */
static void test_layerscale_residual(struct backend *be, const struct backend_case *bc, int fuse)
{
    const int rows = 7, D = 96;
    float *y;
    void *d_y = linear_case(be, bc, rows, D, 64, EPILOGUE_NONE, 1, &y);
    float *x = random_bf16_values((size_t)rows * D, -2, 2), *gamma = random_bf16_values(D, 0, 1);
    float *nw = random_bf16_values(D, 0.5f, 1.5f), *nb = random_bf16_values(D, -1, 1);
    void *d_x = upload(be, x, (size_t)rows * D), *d_g = weight(be, gamma, 1, D, WEIGHT_VECTOR);
    void *d_nw = weight(be, nw, 1, D, WEIGHT_VECTOR), *d_nb = weight(be, nb, 1, D, WEIGHT_VECTOR);
    void *d_norm = be->ops->alloc(be, (size_t)rows * D);
    CHECK(be->ops->layerscale_residual(be, d_x, d_y, d_g, rows, D) == 0, "[%s] layerscale_residual: %s",
          bc->name, be->error);
    if (fuse)
        CHECK(be->ops->layernorm(be, d_norm, d_x, d_nw, d_nb, rows, D, D, 1e-6f) == 0,
              "[%s] layernorm after layerscale_residual: %s", bc->name, be->error);
    CHECK(be->ops->synchronize(be) == 0, "[%s] synchronize: %s", bc->name, be->error);
    float *want_norm = malloc(sizeof(float) * rows * D);
    layerscale_residual_ref(x, y, gamma, rows, D);
    layernorm_forward_ref(want_norm, x, nw, nb, rows, D, D, 1e-6f);
    if (fuse)
        expect_close(bc, "layerscale_residual + layernorm (fused where the backend fuses): norm",
                     download(be, d_norm, (size_t)rows * D), want_norm, (size_t)rows * D, 1e-5,
                     bc->bf16 ? 2 * BF16_U : 1e-5);
    expect_close(bc, fuse ? "layerscale_residual + layernorm: residual stream" : "layerscale_residual",
                 download(be, d_x, (size_t)rows * D), x, (size_t)rows * D, 1e-6, 1e-6);
    void *bufs[] = {d_y, d_x, d_g, d_nw, d_nb, d_norm};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
        be->ops->release(be, bufs[i]);
    free(y), free(x), free(gamma), free(nw), free(nb), free(want_norm);
}

static void run_all_ops(struct backend *be, const struct backend_case *bc)
{
    printf("%s (%s):\n", bc->name, be->ops->name);
    const size_t bytes_before = be->ops->bytes_in_use(be);
    test_patch_embed(be, bc, 0, 1);
    test_patch_embed(be, bc, 4, 1);
    test_patch_embed(be, bc, 4, 0);
    float *host;
    be->ops->release(be, layernormed(be, bc, 7, 96, 96, &host, 1));
    free(host);
    be->ops->release(be, layernormed(be, bc, 3, 64, 64 * 5, &host, 1)); /* the CLS rows, strided */
    free(host);
    test_linear(be, bc);
    test_attention(be, bc, 1, 1, 1);
    test_attention(be, bc, 2, 37, 2);
    test_attention(be, bc, 1, 70, 1);
    /* longer sequences: many row tiles per head split across threads, K and V past L1 (and, at
     * 1,100 tokens, 563 KB: past a Zen 3's L2), a last panel half used (304 and 1104 score keys) */
    test_attention(be, bc, 1, 300, 2);
    test_attention(be, bc, 1, 1100, 1);
    test_attention_probs(be, bc, 2, 37, 3, 1, 0);  /* the CLS rows, per head */
    test_attention_probs(be, bc, 1, 70, 2, 70, 1); /* whole matrices, head mean (rollout) */
    test_attention_probs(be, bc, 2, 21, 1, 5, 0);
    test_rope(be, bc, 2, 21, 2, 5); /* CLS + 4 registers, a 4 × 4 grid */
    test_rope(be, bc, 1, 10, 1, 1);
    test_rope(be, bc, 1, 3, 3, 3);  /* nothing to rotate */
    test_swiglu(be, bc);
    test_layerscale_residual(be, bc, 0);
    test_layerscale_residual(be, bc, 1);
    CHECK(be->ops->bytes_in_use(be) <= bytes_before + (64u << 20),
          "[%s] every test buffer released (%zu bytes in use, %zu before; scratch may stay)", bc->name,
          be->ops->bytes_in_use(be), bytes_before);
}

/* The registered backends, the CPU once per instruction set (the portable OpenBLAS forms
 * included), then the test-only emulation. A CPU case this machine cannot run is listed with
 * its reason in unavailable, so that asking for it by name can say why it was skipped. */
static int collect_cases(struct backend_case *cases, int max)
{
    int n = 0;
    for (int i = 0; i < backend_registry_count() && n < max; i++) {
        const struct backend_entry *e = backend_registry_entry(i);
        if (strcmp(e->name, "cpu") != 0) {
            struct backend_case *c = &cases[n++];
            memset(c, 0, sizeof *c);
            snprintf(c->name, sizeof c->name, "%s", e->name);
            c->entry = e;
            c->options.cuda_graphs = 1;
            c->bf16 = strcmp(e->name, "cuda") == 0;
            continue;
        }
        static const char *isas[] = {"avx512", "avx2", "blas"};
        for (size_t k = 0; k < sizeof isas / sizeof *isas && n < max; k++) {
            enum cpu_isa isa;
            char err[160];
            struct backend_case *c = &cases[n++];
            memset(c, 0, sizeof *c);
            snprintf(c->name, sizeof c->name, "cpu-%s", isas[k]);
            c->entry = e;
            c->options.cpu_gemm = c->options.cpu_attention = isas[k];
            if (cpu_isa_choose(isas[k], "isa", &isa, err, sizeof err))
                snprintf(c->unavailable, sizeof c->unavailable, "%s", err);
        }
    }
#ifdef STOPCAL_CUDA_EMULATION
    if (n < max) {
        struct backend_case *c = &cases[n++];
        memset(c, 0, sizeof *c);
        snprintf(c->name, sizeof c->name, "cuda-emu");
        c->options.cuda_graphs = 1;
        c->bf16 = 1;
    }
#endif
    return n;
}

/* test_backend_ops [CASE]: every case this build has, or only CASE (cpu-avx512, cpu-avx2, cpu-blas,
 * cuda-emu, cuda). ctest runs one CASE per test, so a case this machine cannot run (an instruction
 * set the CPU lacks, no GPU) shows as Skipped in CI's summary (exit 77) rather than passing. */
int main(int argc, char **argv)
{
    const char *only = argc > 1 ? argv[1] : NULL;
    struct backend_case cases[16];
    const int n = collect_cases(cases, 16);
    int ran = 0, listed = 0;
    for (int i = 0; i < n; i++) {
        if (only && strcmp(cases[i].name, only) != 0)
            continue;
        listed++;
        if (cases[i].unavailable[0]) {
            printf("%s: not run here (%s)\n", cases[i].name, cases[i].unavailable);
            continue;
        }
        struct backend be;
        char err[256];
        int rc;
#ifdef STOPCAL_CUDA_EMULATION
        if (!cases[i].entry)
            rc = backend_cuda_emu_create(&be, &cases[i].options, err, sizeof err);
        else
#endif
            rc = cases[i].entry->create(&be, 0, &cases[i].options, err, sizeof err);
        if (rc) {
            /* Only an accelerator may be absent (a CUDA build on a machine without a GPU). */
            CHECK(cases[i].entry && cases[i].entry->accelerator, "[%s] create: %s", cases[i].name, err);
            printf("%s: no device here, not run (%s)\n", cases[i].name, err);
            continue;
        }
        run_all_ops(&be, &cases[i]);
        backend_destroy(&be);
        ran++;
    }
    if (only) {
        CHECK(listed == 1, "'%s' is not a backend case of this build", only);
        if (listed == 1 && ran == 0 && check_failures == 0)
            return 77; /* its one line above says why */
    } else {
        CHECK(ran >= 2, "at least the CPU and the emulated CUDA backend ran (%d backends)", ran);
    }
    return test_report("test_backend_ops");
}
