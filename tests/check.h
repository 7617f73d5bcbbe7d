/* A minimal test harness: CHECK records a failure with file and line and keeps going, so one run
 * shows every broken case; test_report() prints "N passed, N failed" and returns the exit code. */
#ifndef STOPCAL_TEST_CHECK_H
#define STOPCAL_TEST_CHECK_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static int check_failures, check_passes;

#define CHECK(cond, ...)                                                       \
    do {                                                                       \
        if (cond) {                                                            \
            check_passes++;                                                    \
        } else {                                                               \
            check_failures++;                                                  \
            fprintf(stderr, "%s:%d: FAILED %s: ", __FILE__, __LINE__, #cond);  \
            fprintf(stderr, __VA_ARGS__);                                      \
            fputc('\n', stderr);                                               \
        }                                                                      \
    } while (0)

/* Max |a−b|/(atol + rtol·|b|) style comparison that prints the first mismatch and the max diff. */
static inline int check_close(const char *what, const float *got, const double *want, size_t n,
                              double atol, double rtol)
{
    double max_diff = 0;
    size_t first_bad = n;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - want[i]);
        if (!(d <= atol + rtol * fabs(want[i])) && first_bad == n)
            first_bad = i;
        if (d > max_diff || d != d)
            max_diff = d;
    }
    if (first_bad < n) {
        fprintf(stderr, "  %s: first mismatch at %zu: got %.9g want %.9g; max |diff| %.3g\n", what,
                first_bad, got[first_bad], want[first_bad], max_diff);
        return 0;
    }
    printf("  %s: max |diff| %.3g over %zu values\n", what, max_diff, n);
    return 1;
}

static inline int test_report(const char *suite)
{
    printf("%s: %d passed, %d failed\n", suite, check_passes, check_failures);
    return check_failures ? 1 : 0;
}

/* Deterministic uniform floats in [lo, hi). */
static inline float test_uniform(unsigned long long *state, float lo, float hi)
{
    *state = *state * 6364136223846793005ULL + 1442695040888963407ULL;
    return lo + (hi - lo) * (float)((*state >> 40) / (double)(1ULL << 24));
}

#endif
