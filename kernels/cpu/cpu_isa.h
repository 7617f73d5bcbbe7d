/* Which vector instruction set the hand-written CPU kernels run with. Chosen once, when the CPU
 * backend is created (backend_cpu.c keeps the choice in its context); no kernel looks at the
 * environment or the CPU's features on its own. */
#ifndef STOPCAL_CPU_ISA_H
#define STOPCAL_CPU_ISA_H

#include <stddef.h>

/* NONE: the kernels' portable forms (OpenBLAS GEMMs, the BLAS attention). */
enum cpu_isa { CPU_ISA_NONE, CPU_ISA_AVX2, CPU_ISA_AVX512 };

/* The widest this CPU and build can run: AVX-512F, else AVX2 with FMA, else none. */
enum cpu_isa cpu_isa_best(void);

/* Whether this CPU and build can run isa (NONE always). */
int cpu_isa_supported(enum cpu_isa isa);

/* "avx512", "avx2" or "blas". */
const char *cpu_isa_name(enum cpu_isa isa);

/* A knob's value (STOPCAL_CPU_GEMM, STOPCAL_CPU_ATTENTION) as an instruction set: NULL, "" or
 * "auto" → cpu_isa_best(); "blas" → NONE; "avx2" / "avx512" → that one where the CPU has it.
 * Returns 0, or -1 with a message naming knob_name in err (an unknown value, or an instruction
 * set this CPU lacks). */
int cpu_isa_choose(const char *value, const char *knob_name, enum cpu_isa *out, char *err,
                   size_t errlen);

#endif
