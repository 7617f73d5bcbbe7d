/* stopcal-infer on the CUDA backend as the host emulation runs it (kernels/emu), for the parity
 * tests of the CUDA path on machines without a GPU: --device cuda opens the emulated backend.
 * The tool is server/infer_main.c itself, its main() renamed. */
#include "backend_cuda.h"

#define main stopcal_infer_main
#include "../../server/infer_main.c"
#undef main

/* This definition, in an object file, is the one the linker takes, so the GPU backend's is never
 * pulled from stopcal_kernels. */
int backend_cuda_create(struct backend *be, int device_index, const struct backend_options *o, char *err,
                        size_t errlen)
{
    (void)device_index;
    return backend_cuda_emu_create(be, o, err, errlen);
}

int main(int argc, char **argv) { return stopcal_infer_main(argc, argv); }
