/* The CPU reference ops against naive double-precision definitions written out here: if an
 * optimisation in kernels/ changes the maths, these catch it before the parity tests do. */
#include "../check.h"

#include "activations.h"
#include "attention.h"
#include "fastmath.h"
#include "layernorm.h"
#include "linear.h"
#include "linear_packed.h"
#include "cpu_isa.h"
#include "patch_embed.h"
#include "sha256.h"
#include "threads.h"

#include <stdlib.h>
#include <string.h>

static unsigned long long rng = 12345;

static float *random_floats(size_t n, float lo, float hi)
{
    float *p = malloc(n * sizeof *p);
    for (size_t i = 0; i < n; i++)
        p[i] = test_uniform(&rng, lo, hi);
    return p;
}

/* Packed weights live in LINEAR_PACKED_ALIGN-aligned memory, as the CPU backend allocates them. */
static float *packed_alloc(size_t n)
{
    size_t bytes = (n * sizeof(float) + LINEAR_PACKED_ALIGN - 1) / LINEAR_PACKED_ALIGN * LINEAR_PACKED_ALIGN;
    float *p = aligned_alloc(LINEAR_PACKED_ALIGN, bytes);
    CHECK(p != NULL, "aligned_alloc of %zu bytes", bytes);
    return p;
}

static void test_fast_expf_matches_libm(void)
{
    double worst = 0;
    for (float x = -87.0f; x <= 88.0f; x += 0.000731f) {
        double want = exp((double)x), got = fast_expf(x);
        double rel = fabs(got - want) / want;
        worst = rel > worst ? rel : worst;
    }
    printf("  fast_expf: max relative error %.3g\n", worst);
    CHECK(worst < 3.6e-7, "fast_expf relative error %.3g", worst); /* ≤ 3 ulp */
    CHECK(fast_expf(-1000.0f) >= 0 && fast_expf(-1000.0f) < 1e-37f, "underflow clamps to ~0");
}

static void test_gelu_matches_exact_erf(void)
{
    double worst = 0;
    for (float x = -12.0f; x <= 12.0f; x += 0.00037f) {
        double want = 0.5 * x * (1.0 + erf(x / sqrt(2.0)));
        double d = fabs(gelu_erf(x) - want) / (fabs(want) > 1 ? fabs(want) : 1);
        worst = d > worst ? d : worst;
    }
    printf("  gelu_erf: max scaled error %.3g\n", worst);
    CHECK(worst < 5e-7, "GELU error %.3g", worst);
}

static void test_layernorm_matches_double_reference(void)
{
    const int rows = 7, dim = 96, stride = 130;
    float *in = random_floats((size_t)rows * stride, -3, 5), *w = random_floats(dim, 0.5f, 1.5f);
    float *b = random_floats(dim, -1, 1), *out = malloc(sizeof(float) * rows * dim);
    double *want = malloc(sizeof(double) * rows * dim);
    for (int r = 0; r < rows; r++) {
        double mean = 0, var = 0;
        for (int i = 0; i < dim; i++)
            mean += in[r * stride + i];
        mean /= dim;
        for (int i = 0; i < dim; i++)
            var += (in[r * stride + i] - mean) * (in[r * stride + i] - mean);
        var /= dim;
        for (int i = 0; i < dim; i++)
            want[r * dim + i] = (in[r * stride + i] - mean) / sqrt(var + 1e-6) * w[i] + b[i];
    }
    layernorm_forward_cpu(out, in, w, b, rows, dim, stride, 1e-6f);
    CHECK(check_close("layernorm (strided rows)", out, want, (size_t)rows * dim, 1e-5, 1e-5), "layernorm");
    free(in), free(w), free(b), free(out), free(want);
}

static void naive_attention(double *out, const float *qkv, int B, int T, int H)
{
    const int D = H * 64;
    double *s = malloc(sizeof(double) * T);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < T; i++) {
                const float *q = qkv + ((size_t)b * T + i) * 3 * D + h * 64;
                double max = -INFINITY, sum = 0;
                for (int j = 0; j < T; j++) {
                    const float *k = qkv + ((size_t)b * T + j) * 3 * D + D + h * 64;
                    double dot = 0;
                    for (int e = 0; e < 64; e++)
                        dot += (double)q[e] * k[e];
                    s[j] = dot / 8.0;
                    max = s[j] > max ? s[j] : max;
                }
                for (int j = 0; j < T; j++)
                    sum += (s[j] = exp(s[j] - max));
                for (int e = 0; e < 64; e++) {
                    double acc = 0;
                    for (int j = 0; j < T; j++)
                        acc += s[j] * qkv[((size_t)b * T + j) * 3 * D + 2 * D + h * 64 + e];
                    out[((size_t)b * T + i) * D + h * 64 + e] = acc / sum;
                }
            }
    free(s);
}

static void test_attention_matches_naive_softmax(enum cpu_isa isa, int B, int T, int H)
{
    const size_t D = (size_t)H * 64;
    float *qkv = random_floats((size_t)B * T * 3 * D, -2, 2);
    float *out = malloc(sizeof(float) * B * T * D);
    float *scratch = malloc(sizeof(float) * attention_scratch_floats_cpu(isa, T));
    double *want = malloc(sizeof(double) * B * T * D);
    attention_forward_cpu(isa, out, qkv, B, T, H, scratch, attention_scratch_floats_cpu(isa, T));
    naive_attention(want, qkv, B, T, H);
    char what[96];
    snprintf(what, sizeof what, "attention (%s) B=%d T=%d H=%d",
             isa == CPU_ISA_NONE ? "blas" : cpu_isa_name(isa), B, T, H);
    CHECK(check_close(what, out, want, (size_t)B * T * D, 2e-6, 2e-5), "%s", what);
    free(qkv), free(out), free(scratch), free(want);
}

/* Both implementations over shapes that hit every tail: one token, fewer keys than a panel, rows
 * not a multiple of the tile, a thread boundary inside a head, several images and heads, and the
 * B/14 @560 token count; the fused one with each instruction set the CPU has. */
static void test_attention_implementations(void)
{
    static const int shapes[][3] = {{1, 1, 1}, {2, 37, 2}, {1, 261, 3}, {3, 33, 1}, {1, 1601, 1}};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
        test_attention_matches_naive_softmax(CPU_ISA_NONE, shapes[s][0], shapes[s][1], shapes[s][2]);
    static const enum cpu_isa isas[] = {CPU_ISA_AVX512, CPU_ISA_AVX2};
    for (size_t i = 0; i < sizeof isas / sizeof *isas; i++) {
        if (!cpu_isa_supported(isas[i]) || !attention_fused_has_kernel(isas[i])) {
            printf("attention: fused %s kernel not available on this CPU (not checked)\n",
                   cpu_isa_name(isas[i]));
            continue;
        }
        printf("attention: checking the fused %s kernel\n", cpu_isa_name(isas[i]));
        for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
            test_attention_matches_naive_softmax(isas[i], shapes[s][0], shapes[s][1], shapes[s][2]);
    }
    /* A scratch with room for one thread only still gives the right answer. */
    const int T = 50, H = 2;
    float *qkv = random_floats((size_t)T * 3 * H * 64, -2, 2);
    float *out = malloc(sizeof(float) * T * H * 64);
    double *want = malloc(sizeof(double) * T * H * 64);
    size_t one = attention_fused_thread_floats(T) > attention_blas_thread_floats(T)
                     ? attention_fused_thread_floats(T) : attention_blas_thread_floats(T);
    float *scratch = malloc(sizeof(float) * one);
    attention_forward_cpu(cpu_isa_best(), out, qkv, 1, T, H, scratch, one);
    naive_attention(want, qkv, 1, T, H);
    CHECK(check_close("attention, one thread's scratch", out, want, (size_t)T * H * 64, 2e-6, 2e-5),
          "attention with a one-thread scratch");
    free(qkv), free(out), free(want), free(scratch);
}

static void test_patch_embed_matches_naive_conv(int R)
{
    const int B = 2, S = 28, P = 14, D = 64, g = S / P, T = 1 + R + g * g, K = 3 * P * P;
    float *pix = random_floats((size_t)B * 3 * S * S, -1, 1), *w = random_floats((size_t)D * K, -.1f, .1f);
    float *bias = random_floats(D, -1, 1), *cls = random_floats(D, -1, 1);
    float *reg = random_floats((size_t)(R ? R : 1) * D, -1, 1), *pos = random_floats((size_t)(1 + g * g) * D, -1, 1);
    float *x = malloc(sizeof(float) * B * T * D);
    float *scratch = malloc(sizeof(float) * patch_embed_scratch_floats_cpu(B, S, P));
    double *want = malloc(sizeof(double) * B * T * D);
    for (int b = 0; b < B; b++) {
        for (int d = 0; d < D; d++)
            want[((size_t)b * T) * D + d] = (double)cls[d] + pos[d];
        for (int r = 0; r < R; r++)
            for (int d = 0; d < D; d++)
                want[((size_t)b * T + 1 + r) * D + d] = reg[r * D + d];
        for (int py = 0; py < g; py++)
            for (int px = 0; px < g; px++)
                for (int d = 0; d < D; d++) {
                    double acc = bias[d];
                    for (int c = 0; c < 3; c++)
                        for (int ky = 0; ky < P; ky++)
                            for (int kx = 0; kx < P; kx++)
                                acc += (double)w[((size_t)d * 3 + c) * P * P + ky * P + kx] *
                                       pix[(((size_t)b * 3 + c) * S + py * P + ky) * S + px * P + kx];
                    int p = py * g + px;
                    want[((size_t)b * T + 1 + R + p) * D + d] = acc + pos[(1 + p) * D + d];
                }
    }
    patch_embed_forward_cpu(x, pix, w, bias, cls, R ? reg : NULL, pos, B, S, P, D, R, scratch);
    char what[64];
    snprintf(what, sizeof what, "patch embed R=%d", R);
    CHECK(check_close(what, x, want, (size_t)B * T * D, 1e-5, 1e-5), "%s", what);
    free(pix), free(w), free(bias), free(cls), free(reg), free(pos), free(x), free(scratch), free(want);
}

/* One linear layer against a double reference, through OpenBLAS or through the packed kernel
 * (with the instruction set the caller selected). The packed shapes below hit every tail: one row,
 * rows not a multiple of the tile, more rows than one row block, k of 1, k past one 256 chunk, and
 * an input too large for one row super-block (k = 8192: 256 rows each). */
static void check_linear(enum cpu_isa packed, int M, int N, int K, enum linear_epilogue epilogue, int with_bias)
{
    float *in = random_floats((size_t)M * K, -1, 1), *w = random_floats((size_t)N * K, -1, 1);
    float *b = with_bias ? random_floats(N, -1, 1) : NULL, *out = malloc(sizeof(float) * M * N);
    float *wp = packed_alloc(linear_packed_floats(N, K));
    double *want = malloc(sizeof(double) * M * N);
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double acc = b ? b[j] : 0;
            for (int k = 0; k < K; k++)
                acc += (double)in[(size_t)i * K + k] * w[(size_t)j * K + k];
            if (epilogue == EPILOGUE_GELU)
                acc = 0.5 * acc * (1 + erf(acc / sqrt(2.0)));
            if (epilogue == EPILOGUE_RELU)
                acc = acc > 0 ? acc : 0;
            want[(size_t)i * N + j] = acc;
        }
    if (packed) {
        linear_pack_weight(wp, w, N, K);
        CHECK(linear_packed_forward(packed, out, in, wp, b, M, N, K, epilogue) == 0, "packed linear runs");
    } else {
        linear_forward_cpu(out, in, w, b, M, N, K, epilogue);
    }
    static const char *names[] = {"none", "gelu", "relu"};
    char what[96];
    snprintf(what, sizeof what, "linear %s M=%d N=%d K=%d epilogue %s%s", packed ? "packed" : "blas",
             M, N, K, names[epilogue], b ? "" : " no bias");
    /* fp32 sums of K terms of size ≤ 1: allow K·ε relative to the sum's scale */
    double tol = 2e-6 * (K > 64 ? K / 64.0 : 1);
    CHECK(check_close(what, out, want, (size_t)M * N, tol, tol), "%s", what);
    free(in), free(w), free(b), free(out), free(wp), free(want);
}

/* The packed kernel's contract (linear_packed.h): a weight that is not LINEAR_PACKED_ALIGN-aligned,
 * such as one in a plain malloc buffer, is refused with the output left alone, never a fault. */
static void check_packed_alignment_refused(enum cpu_isa isa)
{
    const int M = 9, N = 64, K = 17;
    float *in = random_floats((size_t)M * K, -1, 1), *w = random_floats((size_t)N * K, -1, 1);
    float *base = packed_alloc(linear_packed_floats(N, K) + 16), *out = malloc(sizeof(float) * M * N);
    for (int offset = 1; offset < 16; offset++) { /* 4 .. 60 bytes past a 64-byte boundary */
        float *wp = base + offset;
        linear_pack_weight(wp, w, N, K);
        for (int i = 0; i < M * N; i++)
            out[i] = -7.0f;
        CHECK(linear_packed_forward(isa, out, in, wp, NULL, M, N, K, EPILOGUE_NONE) == -1,
              "a packed weight %d bytes off alignment is refused", offset * 4);
        int untouched = 1;
        for (int i = 0; i < M * N; i++)
            untouched &= out[i] == -7.0f;
        CHECK(untouched, "a refused call leaves the output alone");
    }
    CHECK(linear_packed_forward(isa, out, in, base, NULL, M, N - 1, K, EPILOGUE_NONE) == -1,
          "n not a multiple of the panel is refused");
    free(in), free(w), free(base), free(out);
}

static void check_packed_linear(enum cpu_isa isa)
{
    printf("linear: checking the packed %s kernel\n", cpu_isa_name(isa));
    static const int shapes[][3] = {{1, 32, 1}, {9, 64, 17}, {70, 96, 300}, {257, 32, 384}, {8, 128, 513},
                                    {300, 32, 8192}};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
        for (int e = EPILOGUE_NONE; e <= EPILOGUE_RELU; e++)
            check_linear(isa, shapes[s][0], shapes[s][1], shapes[s][2], (enum linear_epilogue)e, 1);
    check_linear(isa, 13, 64, 40, EPILOGUE_NONE, 0);
    check_packed_alignment_refused(isa);

    /* The in-register GELU over its whole range: out = gelu(x + bias) with K = 1 and unit weights,
     * x from -9 to 9, so the erf tails, the sign and zero are all met. */
    const int M = 721, N = 32;
    float *in = malloc(sizeof(float) * M), *w = malloc(sizeof(float) * N), *b = malloc(sizeof(float) * N);
    float *wp = packed_alloc((size_t)N), *out = malloc(sizeof(float) * M * N);
    double *want = malloc(sizeof(double) * M * N);
    for (int i = 0; i < M; i++)
        in[i] = -9.0f + 18.0f * i / (M - 1);
    for (int j = 0; j < N; j++)
        w[j] = 1.0f, b[j] = 0.0007f * j;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double x = (double)(in[i] + b[j]);
            want[i * N + j] = 0.5 * x * (1 + erf(x / sqrt(2.0)));
        }
    linear_pack_weight(wp, w, N, 1);
    CHECK(linear_packed_forward(isa, out, in, wp, b, M, N, 1, EPILOGUE_GELU) == 0, "packed GELU runs");
    CHECK(check_close("packed GELU epilogue on [-9, 9]", out, want, (size_t)M * N, 5e-7, 5e-7),
          "packed GELU epilogue");
    free(in), free(w), free(b), free(wp), free(out), free(want);
}

static void test_linear_epilogues(void)
{
    for (int e = EPILOGUE_NONE; e <= EPILOGUE_RELU; e++)
        check_linear(CPU_ISA_NONE, 5, 19, 33, (enum linear_epilogue)e, 1);
    /* Each instruction set the CPU has. */
    static const enum cpu_isa isas[] = {CPU_ISA_AVX512, CPU_ISA_AVX2};
    for (size_t i = 0; i < sizeof isas / sizeof *isas; i++) {
        if (cpu_isa_supported(isas[i]) && linear_packed_has_tile(isas[i]))
            check_packed_linear(isas[i]);
        else
            printf("linear: packed %s kernel not available on this CPU (not checked)\n",
                   cpu_isa_name(isas[i]));
    }
}

static void test_swiglu_and_layerscale(void)
{
    const int rows = 4, F = 40;
    float *in = random_floats((size_t)rows * 2 * F, -6, 6), *out = malloc(sizeof(float) * rows * F);
    double *want = malloc(sizeof(double) * rows * F);
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < F; j++) {
            double a = in[r * 2 * F + j], b = in[r * 2 * F + F + j];
            want[r * F + j] = a / (1 + exp(-a)) * b;
        }
    swiglu_forward_cpu(out, in, rows, F);
    CHECK(check_close("swiglu", out, want, (size_t)rows * F, 1e-6, 1e-6), "swiglu");
    float *x = random_floats((size_t)rows * F, -1, 1), *y = random_floats((size_t)rows * F, -1, 1);
    float *gamma = random_floats(F, 0, 1);
    for (int i = 0; i < rows * F; i++)
        want[i] = (double)x[i] + (double)gamma[i % F] * y[i];
    layerscale_residual_cpu(x, y, gamma, rows, F);
    CHECK(check_close("layerscale residual", x, want, (size_t)rows * F, 1e-6, 1e-6), "layerscale");
    free(in), free(out), free(want), free(x), free(y), free(gamma);
}

/* FIPS 180-4 vectors, and a million 'a's fed in uneven pieces, through one implementation. */
static void check_sha256_vectors(const char *which)
{
    char hex[65];
    sha256_hex("", 0, hex);
    CHECK(strcmp(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855") == 0, "%s: %s", which, hex);
    sha256_hex("abc", 3, hex);
    CHECK(strcmp(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad") == 0, "%s: %s", which, hex);
    const char *two_blocks = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    sha256_hex(two_blocks, strlen(two_blocks), hex);
    CHECK(strcmp(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1") == 0, "%s: %s", which, hex);
    char *a = malloc(1000000);
    memset(a, 'a', 1000000);
    struct sha256 h;
    sha256_init(&h);
    for (size_t at = 0, step = 1; at < 1000000; at += step, step = step * 7 % 997 + 1)
        sha256_update(&h, a + at, at + step > 1000000 ? 1000000 - at : step);
    sha256_final_hex(&h, hex);
    CHECK(strcmp(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0") == 0,
          "%s, a million 'a': %s", which, hex);
    free(a);
}

/* Both implementations on the vectors, then against each other on every length up to five blocks
 * and on one large buffer. */
static void test_sha256_known_vectors(void)
{
    sha256_accelerated(0);
    check_sha256_vectors("portable");
    if (!sha256_accelerated(1)) {
        printf("sha256: SHA extensions not available on this CPU (portable code checked)\n");
        return;
    }
    check_sha256_vectors("SHA-NI");
    size_t big = 3u << 20;
    unsigned char *buf = malloc(big);
    unsigned long long rng = 5;
    for (size_t i = 0; i < big; i++)
        buf[i] = (unsigned char)(test_uniform(&rng, 0, 256));
    int same = 1;
    for (size_t len = 0; len <= 320 && same; len++) {
        char fast[65], slow[65];
        sha256_hex(buf, len, fast);
        sha256_accelerated(0);
        sha256_hex(buf, len, slow);
        sha256_accelerated(1);
        same = strcmp(fast, slow) == 0;
        CHECK(same, "SHA-NI and portable differ at %zu bytes", len);
    }
    char fast[65], slow[65];
    sha256_hex(buf, big, fast);
    sha256_accelerated(0);
    sha256_hex(buf, big, slow);
    sha256_accelerated(1);
    CHECK(strcmp(fast, slow) == 0, "SHA-NI and portable differ on 3 MiB");
    printf("sha256: SHA-NI and portable agree (lengths 0-320 and 3 MiB)\n");
    free(buf);
}

static void test_thread_budget_respects_slurm(void)
{
    int all = threads_available_cpus();
    CHECK(all >= 1, "at least one CPU");
    setenv("SLURM_CPUS_PER_TASK", "1", 1);
    CHECK(threads_available_cpus() == 1, "SLURM_CPUS_PER_TASK=1 limits to 1");
    unsetenv("SLURM_CPUS_PER_TASK");
}

int main(void)
{
    test_fast_expf_matches_libm();
    test_gelu_matches_exact_erf();
    test_layernorm_matches_double_reference();
    test_attention_implementations();
    test_patch_embed_matches_naive_conv(0);
    test_patch_embed_matches_naive_conv(4);
    test_linear_epilogues();
    test_swiglu_and_layerscale();
    test_sha256_known_vectors();
    test_thread_budget_respects_slurm();
    return test_report("test_ops_cpu");
}
