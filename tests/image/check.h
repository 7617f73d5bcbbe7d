/* Tests only: the smallest assert helper that keeps going after a failure and says where it was. */
#ifndef STOPCAL_TEST_CHECK_H
#define STOPCAL_TEST_CHECK_H

#include <stdio.h>

static int check_failures;

#define CHECK(cond, ...)                                                                                    \
    do {                                                                                                    \
        if (!(cond)) {                                                                                      \
            fprintf(stderr, "%s:%d: CHECK(%s) failed: ", __FILE__, __LINE__, #cond);                        \
            fprintf(stderr, __VA_ARGS__);                                                                   \
            fputc('\n', stderr);                                                                            \
            check_failures++;                                                                               \
        }                                                                                                   \
    } while (0)

#define RUN(test)                                                                                           \
    do {                                                                                                    \
        int before_ = check_failures;                                                                       \
        test();                                                                                             \
        printf("%s %s\n", check_failures == before_ ? "ok  " : "FAIL", #test);                              \
        fflush(stdout);                                                                                     \
    } while (0)

#endif
