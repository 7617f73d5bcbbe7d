/* SHA-256 block compression with the x86 SHA extensions (SHA-NI: AMD Zen and later, Intel from Ice
 * Lake / Goldmont): ~8× the portable loop, which matters because every model file is hashed in
 * full at load (1.5 s for a 350 MB ViT-B/14 with the portable code, paid by every stopcal-infer
 * run). The state is kept in the instruction's ABEF / CDGH lane order across blocks. */
#include "sha256_internal.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#include <immintrin.h>

int sha256_shani_available(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !(b & (1u << 29))) /* CPUID.7.0:EBX.SHA */
        return 0;
    return __builtin_cpu_supports("sse4.1");
}

#define SHANI __attribute__((target("sha,sse4.1,ssse3")))

SHANI void sha256_compress_shani(uint32_t state[8], const uint8_t *blocks, size_t n_blocks)
{
    /* state[0..7] = A..H → STATE0 = (A,B,E,F), STATE1 = (C,D,G,H), high lane first */
    __m128i dcba = _mm_loadu_si128((const __m128i *)state);
    __m128i hgfe = _mm_loadu_si128((const __m128i *)(state + 4));
    __m128i cdab = _mm_shuffle_epi32(dcba, 0xB1);
    __m128i efgh = _mm_shuffle_epi32(hgfe, 0x1B);
    __m128i state0 = _mm_alignr_epi8(cdab, efgh, 8);    /* ABEF */
    __m128i state1 = _mm_blend_epi16(efgh, cdab, 0xF0); /* CDGH */
    const __m128i byte_swap = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
    for (size_t blk = 0; blk < n_blocks; blk++) {
        const uint8_t *p = blocks + 64 * blk;
        const __m128i abef_saved = state0, cdgh_saved = state1;
        __m128i w[4];
        for (int i = 0; i < 16; i++) {
            __m128i msg;
            if (i < 4) {
                msg = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 16 * i)), byte_swap);
            } else { /* w[t] from w[t-16], w[t-15], w[t-7], w[t-2], four words at a time */
                msg = _mm_sha256msg1_epu32(w[i % 4], w[(i + 1) % 4]);
                msg = _mm_add_epi32(msg, _mm_alignr_epi8(w[(i + 3) % 4], w[(i + 2) % 4], 4));
                msg = _mm_sha256msg2_epu32(msg, w[(i + 3) % 4]);
            }
            w[i % 4] = msg;
            __m128i wk = _mm_add_epi32(msg, _mm_loadu_si128((const __m128i *)(sha256_round_constants + 4 * i)));
            state1 = _mm_sha256rnds2_epu32(state1, state0, wk);
            state0 = _mm_sha256rnds2_epu32(state0, state1, _mm_shuffle_epi32(wk, 0x0E));
        }
        state0 = _mm_add_epi32(state0, abef_saved);
        state1 = _mm_add_epi32(state1, cdgh_saved);
    }
    __m128i feba = _mm_shuffle_epi32(state0, 0x1B);
    __m128i dchg = _mm_shuffle_epi32(state1, 0xB1);
    _mm_storeu_si128((__m128i *)state, _mm_blend_epi16(feba, dchg, 0xF0));    /* DCBA */
    _mm_storeu_si128((__m128i *)(state + 4), _mm_alignr_epi8(dchg, feba, 8)); /* HGFE */
}

#else

int sha256_shani_available(void) { return 0; }

void sha256_compress_shani(uint32_t state[8], const uint8_t *blocks, size_t n_blocks)
{
    (void)state, (void)blocks, (void)n_blocks;
}

#endif
