/* Register-only multiply-add loops (peak_flops.h). Sixteen independent accumulators per thread,
 * more than latency × throughput on any of our CPUs (Zen 4: 6 cycles × 1 zmm per cycle for
 * vdpbf16ps), so the loop runs at the instruction's throughput; named variables, not an array, so
 * the compiler keeps every one in a register. Each thread's result feeds a sink so no loop is
 * optimised away. */
#include "peak_flops.h"

#include "linear_bf16.h"

#include <omp.h>
#include <time.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

/* Sixteen accumulators a0..a15 of type T, accumulator k starting at INIT(k): distinct values, or
 * the compiler would see sixteen copies of one computation and keep one. */
#define ACCUMULATORS(T, INIT) T a0 = INIT(0), a1 = INIT(1), a2 = INIT(2), a3 = INIT(3), a4 = INIT(4), \
    a5 = INIT(5), a6 = INIT(6), a7 = INIT(7), a8 = INIT(8), a9 = INIT(9), a10 = INIT(10),           \
    a11 = INIT(11), a12 = INIT(12), a13 = INIT(13), a14 = INIT(14), a15 = INIT(15)
#define STEP16(OP) \
    a0 = OP(a0), a1 = OP(a1), a2 = OP(a2), a3 = OP(a3), a4 = OP(a4), a5 = OP(a5), a6 = OP(a6), a7 = OP(a7), \
    a8 = OP(a8), a9 = OP(a9), a10 = OP(a10), a11 = OP(a11), a12 = OP(a12), a13 = OP(a13), a14 = OP(a14),   \
    a15 = OP(a15)
#define SUM16(add) \
    add(add(add(add(a0, a1), add(a2, a3)), add(add(a4, a5), add(a6, a7))), \
        add(add(add(a8, a9), add(a10, a11)), add(add(a12, a13), add(a14, a15))))

/* The timed loop: sixteen accumulators of type T from INIT, `steps` rounds of OP on each, then
 * their sum by ADD (so every accumulator feeds the result and none is optimised away). */
#define LOOP16(T, INIT, OP, ADD)                 \
    ACCUMULATORS(T, INIT);                       \
    for (long i = 0; i < steps; i++)             \
        STEP16(OP);                              \
    const T sum = SUM16(ADD)

#define INIT512(k) _mm512_set1_ps(1.0f + 0.01f * (k))
#define INIT256(k) _mm256_set1_ps(1.0f + 0.01f * (k))

/* Each: steps × 16 instructions. */
__attribute__((target("avx512f"))) static float fma512(long steps)
{
    const __m512 x = _mm512_set1_ps(0.999f), y = _mm512_set1_ps(1e-3f);
#define FMA512(a) _mm512_fmadd_ps(a, x, y)
    LOOP16(__m512, INIT512, FMA512, _mm512_add_ps);
    return _mm512_reduce_add_ps(sum);
}

__attribute__((target("avx2,fma"))) static float fma256(long steps)
{
    const __m256 x = _mm256_set1_ps(0.999f), y = _mm256_set1_ps(1e-3f);
#define FMA256(a) _mm256_fmadd_ps(a, x, y)
    LOOP16(__m256, INIT256, FMA256, _mm256_add_ps);
    float lanes[8];
    _mm256_storeu_ps(lanes, sum);
    return lanes[0] + lanes[7];
}

__attribute__((target("avx512f,avx512bw,avx512bf16"))) static float dpbf16(long steps)
{
    /* pairs of (1, 1) and (2^-10, 2^-10): each step adds 2^-9, far from overflow */
    const __m512bh x = (__m512bh)_mm512_set1_epi32(0x3F803F80), y = (__m512bh)_mm512_set1_epi32(0x3A803A80);
#define DP(a) _mm512_dpbf16_ps(a, x, y)
    LOOP16(__m512, INIT512, DP, _mm512_add_ps);
    return _mm512_reduce_add_ps(sum);
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static volatile float sink;

/* GFLOP/s of loop on `threads` threads: steps sized from a probe to last about `seconds`. */
static double measure(float (*loop)(long), double flops_per_instruction, int threads, int reps, double seconds)
{
    long steps = 1 << 16;
    for (double t0 = now(); now() - t0 < 0.02; steps *= 2) /* probe: ~20 ms on one thread */
        sink = loop(steps);
    double t0 = now();
    sink = loop(steps);
    const double per_step = (now() - t0) / (double)steps;
    steps = (long)(seconds / (per_step > 0 ? per_step : 1e-9)) + 1;
    double best = 0;
    for (int r = 0; r < reps; r++) {
        t0 = now();
#pragma omp parallel num_threads(threads)
        sink = loop(steps);
        const double dt = now() - t0;
        const double gflops = (double)threads * (double)steps * 16.0 * flops_per_instruction / dt * 1e-9;
        best = gflops > best ? gflops : best;
    }
    return best;
}

void peak_flops(int threads, int reps, double seconds, double *fp32_gflops, double *bf16_gflops)
{
    /* a zmm FMA is 16 lanes × 2 flops, a ymm one 8 × 2; a vdpbf16ps is 16 lanes × 2 products × 2 */
    if (__builtin_cpu_supports("avx512f"))
        *fp32_gflops = measure(fma512, 32.0, threads, reps, seconds);
    else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        *fp32_gflops = measure(fma256, 16.0, threads, reps, seconds);
    else
        *fp32_gflops = -1;
    *bf16_gflops = linear_bf16_supported() ? measure(dpbf16, 64.0, threads, reps, seconds) : -1;
}

#else /* no x86 intrinsics: nothing to measure */

void peak_flops(int threads, int reps, double seconds, double *fp32_gflops, double *bf16_gflops)
{
    (void)threads, (void)reps, (void)seconds;
    *fp32_gflops = *bf16_gflops = -1;
}

#endif
