/* References of the CPU backend's bf16 kernels (ref_ops.h): the instructions' rounding emulated in
 * plain C, written from the Intel SDM's description of vdpbf16ps and vcvtne2ps2bf16, not from the
 * bit tricks the product uses (bf16.h), so the unit tests compare two independent forms. */
#include "ref_ops.h"

#include <math.h>
#include <stdlib.h>

/* A denormal becomes a zero of its sign (the instructions' DAZ on inputs, FTZ on results). */
static float flush(float f) { return fpclassify(f) == FP_SUBNORMAL ? copysignf(0.0f, f) : f; }

float bf16_round_ref(float f)
{
    f = flush(f);
    if (f == 0 || !isfinite(f))
        return f;
    /* keep 8 significant bits, ties to even (nearbyint in the default rounding mode); scaling by
     * powers of two is exact, and a value that rounds past the largest finite bf16 becomes ∞ */
    const int e = ilogbf(f);
    return ldexpf(nearbyintf(ldexpf(f, 7 - e)), e - 7);
}

static float bf16_half(uint32_t pair, int high)
{
    const uint32_t bits = (high ? pair >> 16 : pair & 0xffffu) << 16;
    union { uint32_t u; float f; } v = {bits};
    return flush(v.f);
}

uint32_t bf16_pair_ref(float even, float odd)
{
    union { float f; uint32_t u; } lo = {bf16_round_ref(even)}, hi = {bf16_round_ref(odd)};
    if (isnan(lo.f)) /* a quiet NaN either way; which one does not matter to these tests */
        lo.u = 0x7fc00000u;
    if (isnan(hi.f))
        hi.u = 0x7fc00000u;
    return (lo.u >> 16) | (hi.u >> 16) << 16;
}

/* One lane of vdpbf16ps (SDM pseudocode): the odd (high) pair's product is added first, then the
 * even one's, each addition rounded to nearest even as one FMA (a product of two bf16 values has at
 * most 16 significant bits, so it is exact in fp32 and only the sum rounds); denormal inputs read as
 * zero and denormal results are flushed. */
float dpbf16_ref(float acc, uint32_t a, uint32_t b)
{
    acc = flush(fmaf(bf16_half(a, 1), bf16_half(b, 1), flush(acc)));
    return flush(fmaf(bf16_half(a, 0), bf16_half(b, 0), acc));
}

static float epilogue_ref(float x, enum linear_epilogue epilogue)
{
    if (epilogue == EPILOGUE_GELU)
        return (float)(0.5 * x * (1.0 + erf(x / sqrt(2.0))));
    if (epilogue == EPILOGUE_RELU)
        return x > 0 ? x : 0;
    return x;
}

void linear_bf16_ref(float *out, const float *in, const float *weight, const float *bias, int m,
                     int n, int k, enum linear_epilogue epilogue)
{
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            const float *a = in + (long)i * k, *w = weight + (long)j * k;
            float acc = bias ? bias[j] : 0.0f;
            for (int kk = 0; kk < k; kk += 2) {
                const int odd = kk + 1 < k;
                acc = dpbf16_ref(acc, bf16_pair_ref(a[kk], odd ? a[kk + 1] : 0.0f),
                                 bf16_pair_ref(w[kk], odd ? w[kk + 1] : 0.0f));
            }
            out[(long)i * n + j] = epilogue_ref(acc, epilogue);
        }
}

void attention_bf16_ref(float *out, const float *qkv, int batch, int tokens, int heads)
{
    const int hd = 64, dim = heads * hd, stride = 3 * dim;
    const double scale = 0.125 * 1.4426950408889634; /* 1/√64 and log2(e): the kernel's base 2 */
    double *p = malloc(sizeof(double) * (size_t)tokens);
    if (!p) /* a test helper: there is no caller to hand an error to */
        abort();
    for (int b = 0; b < batch; b++)
        for (int h = 0; h < heads; h++)
            for (int i = 0; i < tokens; i++) {
                const float *q = qkv + ((long)b * tokens + i) * stride + h * hd;
                double max = -INFINITY, sum = 0;
                for (int j = 0; j < tokens; j++) {
                    const float *k = qkv + ((long)b * tokens + j) * stride + dim + h * hd;
                    double s = 0;
                    for (int e = 0; e < hd; e++)
                        s += (double)bf16_round_ref((float)(q[e] * (float)scale)) * bf16_round_ref(k[e]);
                    p[j] = s;
                    max = p[j] > max ? p[j] : max;
                }
                for (int j = 0; j < tokens; j++) /* probabilities rounded where P·V reads them */
                    sum += (p[j] = bf16_round_ref((float)exp2(p[j] - max)));
                for (int e = 0; e < hd; e++) {
                    double acc = 0;
                    for (int j = 0; j < tokens; j++)
                        acc += p[j] * bf16_round_ref(qkv[((long)b * tokens + j) * stride + 2 * dim + h * hd + e]);
                    out[((long)b * tokens + i) * dim + h * hd + e] = (float)(acc / sum);
                }
            }
    free(p);
}
