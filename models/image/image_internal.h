/* Helpers shared by the image library's modules and nowhere else. */
#ifndef STOPCAL_IMAGE_INTERNAL_H
#define STOPCAL_IMAGE_INTERNAL_H

#include <stddef.h>

/* Loops marked with these are vectorised with the reductions they name reassociated (that is all
 * `omp simd` asserts); they need -fopenmp-simd (or -fopenmp) and are plain loops otherwise. GCC only:
 * clang warns (-Wpass-failed, an error under -Werror) wherever it declines, as it does at -O1. */
#if (defined(_OPENMP) || defined(STOPCAL_OPENMP_SIMD)) && !defined(__clang__)
#define IMAGE_PRAGMA(x) _Pragma(#x)
#define IMAGE_SIMD IMAGE_PRAGMA(omp simd)
#define IMAGE_SIMD_SUM3(a, b, c) IMAGE_PRAGMA(omp simd reduction(+ : a, b, c))
#define IMAGE_SIMD_OR(a) IMAGE_PRAGMA(omp simd reduction(| : a))
#else
#define IMAGE_PRAGMA(x)
#define IMAGE_SIMD
#define IMAGE_SIMD_SUM3(a, b, c)
#define IMAGE_SIMD_OR(a)
#endif

/* The few per-pixel loops that dominate the preprocessing are also compiled for AVX2 and picked at load
 * time (GCC's function multiversioning through ifunc): the portable x86-64 baseline has only 2-wide
 * double vectors, AVX2 doubles that, and every x86 server of the last decade has it. Elsewhere, or
 * with compilers without target_clones, the baseline alone. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
#define IMAGE_HOT __attribute__((target_clones("avx2", "default")))
#else
#define IMAGE_HOT
#endif

/* malloc for the large per-image buffers: on Linux, 2 MiB-aligned and advised for transparent huge
 * pages when at least 4 MiB, since faulting in 4 KiB pages costs more than the work on them (notably in
 * VMs). Release with free(). Returns NULL on failure. */
void *image_alloc_large(size_t bytes);

#endif
