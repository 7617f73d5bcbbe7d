/* The CPU backend's bf16 kernels against their plain C references (kernels/ref/bf16_ref.c), which
 * emulate the instructions' rounding as the Intel SDM describes it:
 *   - the reference's bf16 rounding and lane of vdpbf16ps against the instructions themselves, bit
 *     for bit, on random bit patterns (denormals, infinities and NaNs included);
 *   - the linear layer bit for bit against linear_bf16_ref (same pairs, same order) on every tail:
 *     rows past whole 8-row tiles and 64-row blocks, columns past whole 16/32-column halves, odd k,
 *     k past the 256-pair chunk, rows past an L3 super-block, an output stride wider than n;
 *   - the attention against attention_bf16_ref within a bound derived below, and closer to it than
 *     to the fp32 reference (so it really rounds what the reference rounds).
 * Without AVX512_BF16 the kernel parts print one line saying so and only the references run. Built
 * against stopcal_kernels_avx512sim, the same checks run the product's kernel sources on the
 * simulated instructions (kernels/emu/avx512_simulated.h), and the first one then checks that
 * simulation against the reference. */
#include "../check.h"

#include "attention.h"
#include "bf16.h"
#include "linear_bf16.h"
#include "ref_ops.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include "avx512_math.h" /* the instructions, or their simulation in the avx512sim build */
#endif

static unsigned long long rng = 2026;

static uint32_t random_bits(void)
{
    rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t)(rng >> 32);
}

static float from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static uint32_t bits_of(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* Random fp32 bit patterns: all exponents, with every 4th a denormal or zero. */
static float random_pattern(int i)
{
    uint32_t u = random_bits();
    return from_bits(i % 4 == 0 ? u & 0x807fffffu : u);
}

static int same_value(float a, float b) { return (isnan(a) && isnan(b)) || bits_of(a) == bits_of(b); }

/* The reference's rounding against the product's (bf16.h) and the test's own view of the rules. */
static void test_reference_rounding(void)
{
    CHECK(bf16_round_ref(1.0f + 0x1p-8f) == 1.0f, "a tie rounds to even (down)");
    CHECK(bf16_round_ref(1.0f + 3 * 0x1p-8f) == 1.0f + 0x1p-6f, "a tie rounds to even (up)");
    CHECK(bf16_round_ref(1.0f + 0x1p-8f + 0x1p-20f) == 1.0f + 0x1p-7f, "above a tie rounds up");
    CHECK(bf16_round_ref(0x1p-130f) == 0 && signbit(bf16_round_ref(-0x1p-130f)), "denormals → ±0");
    CHECK(isinf(bf16_round_ref(3.4e38f)), "past the largest bf16 → ∞");
    long bad = 0;
    for (int i = 0; i < 400000; i++) {
        float f = random_pattern(i);
        if (!same_value(bf16_round_ref(f), bf16_to_float(bf16_from_float_daz(f))))
            bad++;
    }
    CHECK(bad == 0, "bf16_round_ref and bf16_from_float_daz differ on %ld of 400000 patterns", bad);
    /* dpbf16_ref on exact small integers: odd pair first, then even; no rounding needed */
    const uint32_t a = bf16_pair_ref(3.0f, 5.0f), b = bf16_pair_ref(7.0f, -2.0f);
    CHECK(dpbf16_ref(100.0f, a, b) == 100.0f + 21.0f - 10.0f, "dpbf16_ref(100, (3,5), (7,-2))");
    /* The order of the two additions: at acc = 2^24 (fp32 spacing 2) with odd product 1 and even
     * product 2: odd first, 2^24 + 1 is a tie that rounds to 2^24 (even), then + 2 → 2^24 + 2; even
     * first would give 2^24 + 2, then 2^24 + 3, a tie that rounds to 2^24 + 4. */
    const float big = 0x1p24f;
    const float order = dpbf16_ref(big, bf16_pair_ref(2.0f, 1.0f), bf16_pair_ref(1.0f, 1.0f));
    CHECK(order == big + 2.0f, "dpbf16_ref order: got 2^24 + %.1f, want + 2 (odd first)", order - big);
}

#if defined(__x86_64__) && defined(__GNUC__)
AVX512_BF16 static void hw_dpbf16(float *acc16, const uint32_t *a16, const uint32_t *b16)
{
    const __m512 r = _mm512_dpbf16_ps(_mm512_loadu_ps(acc16), (__m512bh)_mm512_loadu_si512(a16),
                                      (__m512bh)_mm512_loadu_si512(b16));
    _mm512_storeu_ps(acc16, r);
}

/* The instructions against the reference, bit for bit: conversion (through the product's row
 * rounding, vcvtne2ps2bf16) and one vdpbf16ps per 16 lanes. */
static void test_reference_matches_instructions(void)
{
    enum { N = 1 << 16 };
    float *src = malloc(N * sizeof *src);
    uint32_t *got = malloc(N / 2 * sizeof *got);
    for (int i = 0; i < N; i++)
        src[i] = random_pattern(i);
    linear_bf16_round_rows(got, src, 1, N, N);
    long bad = 0;
    for (int i = 0; i < N; i++) {
        const uint16_t h = (uint16_t)(got[i / 2] >> (i % 2 ? 16 : 0));
        if (!same_value(bf16_to_float(h), bf16_round_ref(src[i])))
            bad++;
    }
    CHECK(bad == 0, "vcvtne2ps2bf16 and bf16_round_ref differ on %ld of %d values", bad, N);
    long lanes = 0, diff = 0;
    for (int it = 0; it < 20000; it++) {
        uint32_t a[16], b[16];
        float acc[16], want[16];
        for (int j = 0; j < 16; j++) {
            a[j] = random_bits(), b[j] = random_bits();
            if (it % 2) { /* moderate exponents, so the sums cancel and round often */
                a[j] = (a[j] & 0x80ff80ffu) | (uint32_t)(120 + j % 16) << 23 | (uint32_t)(118 + it % 16) << 7;
                b[j] = (b[j] & 0x80ff80ffu) | (uint32_t)(121 + it % 9) << 23 | (uint32_t)(119 + j % 8) << 7;
            }
            acc[j] = it % 2 ? ldexpf((float)(random_bits() % 2001) - 1000.0f, -(int)(random_bits() % 24))
                            : random_pattern(j);
            want[j] = dpbf16_ref(acc[j], a[j], b[j]);
        }
        hw_dpbf16(acc, a, b);
        for (int j = 0; j < 16; j++, lanes++)
            diff += !same_value(acc[j], want[j]);
    }
    CHECK(diff == 0, "vdpbf16ps and dpbf16_ref differ on %ld of %ld lanes", diff, lanes);
    printf("  instructions vs reference: %d conversions, %ld vdpbf16ps lanes, bit-exact\n", N, lanes);
    free(src);
    free(got);
}
#endif

static float *uniform(size_t n, float lo, float hi)
{
    float *p = malloc(n * sizeof *p);
    for (size_t i = 0; i < n; i++)
        p[i] = lo + (hi - lo) * (float)(random_bits() >> 8) / 16777216.0f;
    return p;
}

/* One shape: the kernel against linear_bf16_ref, bit for bit before GELU; GELU within its
 * polynomial's error (< 2e-7 absolute on erf, so |Δ| ≤ 1e-6·max(1, |x|)); columns between n and
 * ldc left as they were. */
static void check_linear(int m, int n, int k, int ldc, enum linear_epilogue epi, int with_bias)
{
    float *in = uniform((size_t)m * k, -2, 2), *w = uniform((size_t)n * k, -1, 1);
    float *bias = with_bias ? uniform((size_t)n, -1, 1) : NULL;
    float *want = malloc(sizeof(float) * (size_t)m * n), *out = malloc(sizeof(float) * (size_t)m * ldc);
    uint32_t *packed = aligned_alloc(64, (linear_bf16_packed_words(n, k) * 4 + 63) / 64 * 64);
    uint32_t *in16 = malloc(sizeof(uint32_t) * (size_t)m * linear_bf16_pairs(k));
    for (size_t i = 0; i < (size_t)m * ldc; i++)
        out[i] = -12345.0f;
    linear_bf16_pack_weight(packed, w, n, k);
    linear_bf16_round_rows(in16, in, m, k, k);
    linear_bf16_forward(out, ldc, in16, packed, bias, m, n, k, epi);
    linear_bf16_ref(want, in, w, bias, m, n, k, epi);
    long bad = 0, gap = 0;
    for (int r = 0; r < m; r++) {
        for (int j = 0; j < n; j++) {
            const float g = out[(size_t)r * ldc + j], e = want[(size_t)r * n + j];
            const int ok = epi == EPILOGUE_GELU ? fabsf(g - e) <= 1e-6f * fmaxf(1.0f, fabsf(e))
                                                : bits_of(g) == bits_of(e);
            bad += !ok;
        }
        for (int j = n; j < ldc; j++)
            gap += out[(size_t)r * ldc + j] != -12345.0f;
    }
    CHECK(bad == 0 && gap == 0, "linear bf16 m=%d n=%d k=%d ldc=%d epilogue %d bias %d: %ld wrong, %ld "
          "written past n", m, n, k, ldc, (int)epi, with_bias, bad, gap);
    free(in), free(w), free(bias), free(want), free(out), free(packed), free(in16);
}

static void test_linear_every_tail(void)
{
    static const int ms[] = {1, 7, 8, 9, 65, 130};
    static const int ns[] = {1, 15, 16, 17, 31, 32, 33, 96, 100};
    static const int ks[] = {1, 2, 3, 31, 64, 512, 515};
    int shapes = 0;
    for (size_t a = 0; a < sizeof ms / sizeof *ms; a++)
        for (size_t b = 0; b < sizeof ns / sizeof *ns; b++)
            for (size_t c = 0; c < sizeof ks / sizeof *ks; c++, shapes++)
                check_linear(ms[a], ns[b], ks[c], ns[b], (enum linear_epilogue)(shapes % 3), shapes % 2);
    /* an output stride wider than n (the patch embedding writes into token rows) */
    check_linear(19, 40, 588, 57, EPILOGUE_NONE, 1);
    /* rows past one L3 super-block (4 MB of bf16 input: 2048 rows at k = 1024) */
    check_linear(2100, 33, 1024, 33, EPILOGUE_NONE, 1);
    printf("  linear bf16: %d shapes bit-exact against the emulation (GELU within 1e-6)\n", shapes + 2);
}

/* The attention against attention_bf16_ref. Bound: the kernel and the reference round the same
 * operands, so they differ by fp32 accumulation (~1e-6 relative), the exp2 polynomial (6e-9) and,
 * where an fp32 probability lies within those of a bf16 rounding boundary, a probability rounded
 * the other way: at most one bf16 ulp (2^-8 relative) on those keys, so |Δ out| ≤ 2^-8·max|v| in
 * the worst case, reached only if every key flipped; we allow 2^-9·max|v| + 1e-5 (half of it) and
 * also require the kernel to be at least 4× closer to this reference than to the fp32 one. */
static void test_attention(void)
{
    static const int tokens_list[] = {1, 2, 15, 16, 17, 33, 50, 257};
    const int batch = 2, heads = 2, dim = heads * 64;
    for (size_t t = 0; t < sizeof tokens_list / sizeof *tokens_list; t++) {
        const int T = tokens_list[t];
        float *qkv = uniform((size_t)batch * T * 3 * dim, -2.5f, 2.5f);
        float *out = malloc(sizeof(float) * (size_t)batch * T * dim);
        float *ref = malloc(sizeof(float) * (size_t)batch * T * dim);
        float *ref32 = malloc(sizeof(float) * (size_t)batch * T * dim);
        const size_t floats = attention_scratch_floats_cpu(CPU_ISA_AVX512, T);
        float *scratch = malloc(floats * sizeof(float));
        attention_bf16_forward(out, qkv, batch, T, heads, scratch, floats);
        attention_bf16_ref(ref, qkv, batch, T, heads);
        attention_forward_ref(ref32, qkv, batch, T, heads);
        double d = 0, d32 = 0;
        for (size_t i = 0; i < (size_t)batch * T * dim; i++) {
            d = fmax(d, fabs((double)out[i] - ref[i]));
            d32 = fmax(d32, fabs((double)out[i] - ref32[i]));
        }
        const double bound = 0x1p-9 * 2.5 + 1e-5;
        CHECK(d <= bound, "attention bf16 T=%d: |Δ| %.3g vs the bf16 reference > %.3g", T, d, bound);
        CHECK(T == 1 || d * 4 <= d32, "attention bf16 T=%d: |Δ| %.3g vs the bf16 reference, %.3g vs fp32",
              T, d, d32);
        printf("  attention bf16 T=%d: max |Δ| %.2g vs bf16 reference, %.2g vs fp32 reference\n", T, d, d32);
        free(qkv), free(out), free(ref), free(ref32), free(scratch);
    }
}

/* test_linear_bf16 references | kernels. ctest runs the two as separate tests, so that on a CPU
 * without AVX512_BF16 the kernel half shows as Skipped (exit 77) in CI's summary. */
int main(int argc, char **argv)
{
    const char *part = argc > 1 ? argv[1] : "";
    if (strcmp(part, "references") == 0) {
        test_reference_rounding();
        return test_report("linear_bf16 references");
    }
    if (strcmp(part, "kernels") != 0) {
        fprintf(stderr, "usage: test_linear_bf16 references|kernels\n");
        return 2;
    }
    if (!linear_bf16_supported()) {
        printf("skip: this CPU (or build) has no AVX512_BF16, so the bf16 kernels cannot run here\n");
        return 77;
    }
#if defined(__x86_64__) && defined(__GNUC__)
    test_reference_matches_instructions();
#endif
    test_linear_every_tail();
    test_attention();
    return test_report("linear_bf16 kernels");
}
