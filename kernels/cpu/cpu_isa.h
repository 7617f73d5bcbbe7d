/* Which vector instruction set the hand-written CPU kernels run with. */
#ifndef STOPCAL_CPU_ISA_H
#define STOPCAL_CPU_ISA_H

enum cpu_isa { CPU_ISA_NONE, CPU_ISA_AVX2, CPU_ISA_AVX512 };

/* The widest this CPU and build can run (AVX-512F, else AVX2 with FMA, else none). The environment
 * variable `env_name` overrides it: "blas" gives none (the kernels' portable OpenBLAS forms run),
 * "avx2" gives AVX2 where the CPU has it (tests and benchmarks of the AVX2 kernels on an AVX-512
 * machine). The one place these knobs are read. */
enum cpu_isa cpu_isa_select(const char *env_name);

#endif
