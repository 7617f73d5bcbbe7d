/* What the CPU backend chose at creation, for its tests and benchmarks (backend_cpu_create is in
 * backend.h with the other constructors). */
#ifndef STOPCAL_BACKEND_CPU_H
#define STOPCAL_BACKEND_CPU_H

#include "backend.h"
#include "cpu_isa.h"

/* The instruction sets the linear layers and attention run with (CPU_ISA_NONE: the OpenBLAS
 * forms). Returns 0, or -1 when be is not the CPU backend. */
int backend_cpu_isas(const struct backend *be, enum cpu_isa *gemm, enum cpu_isa *attention);

#endif
