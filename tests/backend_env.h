/* The backend options as the programs take them (backend_options_from_env), for tests and
 * benchmarks: the STOPCAL_CPU_* knobs select the path variant ctest runs (portable, AVX2). */
#ifndef STOPCAL_TEST_BACKEND_ENV_H
#define STOPCAL_TEST_BACKEND_ENV_H

#include "backend.h"

static inline const struct backend_options *env_options(void)
{
    static struct backend_options o;
    backend_options_from_env(&o);
    return &o;
}

#endif
