/* Hot element-wise loops are compiled several times (AVX-512, AVX2, baseline) and the loader picks
 * the best for the CPU at hand, so one portable binary still runs at the machine's vector width. */
#ifndef STOPCAL_SIMD_H
#define STOPCAL_SIMD_H

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
#define SIMD_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define SIMD_CLONES
#endif

#endif
