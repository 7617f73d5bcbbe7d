/* The CUDA backend: cuBLAS GEMMs in bf16 with fp32 accumulation plus our kernels (cuda_ops.h),
 * weights uploaded once (matrices bf16, vectors fp32), the residual stream in fp32, each forward
 * pass recorded as a CUDA graph per (model, batch size) and replayed. Errors: BACKEND_ENOMEM for a
 * failed allocation (the backend stays usable), BACKEND_EDEVICE for a sticky device error (every
 * later call fails too: the process should be restarted). */
#ifndef STOPCAL_BACKEND_CUDA_H
#define STOPCAL_BACKEND_CUDA_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "backend.h"

#ifdef STOPCAL_HAVE_CUDA
/* Open device device_index (the N of --device cuda:N). o may be NULL (defaults: graphs on); its
 * cuda_graphs = 0 runs without graphs. Returns 0, or -1 with a message in err ("CUDA driver not
 * found …", "no CUDA device", "CUDA device 3 out of range: 1 device(s)") and be left empty;
 * nothing needs freeing then. */
int backend_cuda_create(struct backend *be, int device_index, const struct backend_options *o,
                        char *err, size_t errlen);
#endif

#ifdef STOPCAL_CUDA_EMULATION
/* The same backend over the host emulation of the kernels (tests only; slow). */
int backend_cuda_emu_create(struct backend *be, const struct backend_options *o, char *err, size_t errlen);
#endif

#ifdef __cplusplus
}
#endif

#endif
