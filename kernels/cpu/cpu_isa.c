/* CPU feature checks for the kernels' run-time dispatch (cpu_isa.h). */
#include "cpu_isa.h"

#include <stdlib.h>
#include <string.h>

enum cpu_isa cpu_isa_select(const char *env_name)
{
#if defined(__x86_64__) && defined(__GNUC__)
    const int has512 = __builtin_cpu_supports("avx512f");
    const int has2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    const char *env = env_name ? getenv(env_name) : NULL;
    if (env && strcmp(env, "blas") == 0)
        return CPU_ISA_NONE;
    if (env && strcmp(env, "avx2") == 0 && has2)
        return CPU_ISA_AVX2;
    return has512 ? CPU_ISA_AVX512 : has2 ? CPU_ISA_AVX2 : CPU_ISA_NONE;
#else
    (void)env_name;
    return CPU_ISA_NONE;
#endif
}
