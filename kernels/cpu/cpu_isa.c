/* CPU feature checks for the kernels' dispatch, and the knobs that narrow the choice (cpu_isa.h). */
#include "cpu_isa.h"

#include <stdio.h>
#include <string.h>

int cpu_isa_supported(enum cpu_isa isa)
{
#if defined(STOPCAL_SIMULATE_AVX512) /* the test build on simulated instructions: all of them */
    (void)isa;
    return 1;
#elif defined(__x86_64__) && defined(__GNUC__)
    switch (isa) {
    case CPU_ISA_AVX512: return __builtin_cpu_supports("avx512f");
    case CPU_ISA_AVX2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    default: return 1;
    }
#else
    return isa == CPU_ISA_NONE;
#endif
}

enum cpu_isa cpu_isa_best(void)
{
    return cpu_isa_supported(CPU_ISA_AVX512) ? CPU_ISA_AVX512
           : cpu_isa_supported(CPU_ISA_AVX2) ? CPU_ISA_AVX2
                                               : CPU_ISA_NONE;
}

const char *cpu_isa_name(enum cpu_isa isa)
{
    return isa == CPU_ISA_AVX512 ? "avx512" : isa == CPU_ISA_AVX2 ? "avx2" : "blas";
}

int cpu_isa_choose(const char *value, const char *knob_name, enum cpu_isa *out, char *err,
                   size_t errlen)
{
    if (!value || !*value || strcmp(value, "auto") == 0) {
        *out = cpu_isa_best();
        return 0;
    }
    static const enum cpu_isa named[] = {CPU_ISA_NONE, CPU_ISA_AVX2, CPU_ISA_AVX512};
    for (size_t i = 0; i < sizeof named / sizeof *named; i++) {
        if (strcmp(value, cpu_isa_name(named[i])) != 0)
            continue;
        if (!cpu_isa_supported(named[i])) {
            snprintf(err, errlen, "%s=%s: this CPU (or this build) cannot run %s", knob_name, value,
                     value);
            return -1;
        }
        *out = named[i];
        return 0;
    }
    snprintf(err, errlen, "%s=%.40s: expected auto, avx512, avx2 or blas", knob_name, value);
    return -1;
}
