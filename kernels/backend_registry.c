/* --device parsing and the auto fallback, shared by stopcal-infer and stopcald. */
#include "backend_registry.h"

#ifdef STOPCAL_HAVE_CUDA
#include "backend_cuda.h"
#endif

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* "cuda" → 0, "cuda:N" → N; -1 when the string is not of that form. */
static int parse_cuda_index(const char *device)
{
    if (strcmp(device, "cuda") == 0)
        return 0;
    if (strncmp(device, "cuda:", 5) != 0 || device[5] < '0' || device[5] > '9')
        return -1;
    char *end;
    errno = 0;
    long index = strtol(device + 5, &end, 10);
    return (*end || errno || index > 1024) ? -1 : (int)index;
}

int backend_create_for_device(struct backend *be, const char *device, int threads, char *fallback_note,
                              size_t note_len, char *err, size_t errlen)
{
    snprintf(fallback_note, note_len, "%s", "");
    int is_auto = strcmp(device, "auto") == 0;
    if (strcmp(device, "cpu") == 0)
        return backend_cpu_create(be, threads, err, errlen);
    int index = is_auto ? 0 : parse_cuda_index(device);
    if (index < 0) {
        snprintf(err, errlen, "--device %s: expected auto, cpu, cuda or cuda:N", device);
        return -1;
    }
#ifdef STOPCAL_HAVE_CUDA
    char cuda_err[256];
    if (backend_cuda_create(be, index, cuda_err, sizeof cuda_err) == 0)
        return 0;
    if (!is_auto) {
        snprintf(err, errlen, "--device %s: %s", device, cuda_err);
        return -1;
    }
    snprintf(fallback_note, note_len, "device auto: CUDA unavailable (%s); using the CPU", cuda_err);
#else
    if (!is_auto) {
        snprintf(err, errlen, "--device %s: this build has no CUDA backend", device);
        return -1;
    }
    snprintf(fallback_note, note_len, "device auto: this build has no CUDA backend; using the CPU");
#endif
    return backend_cpu_create(be, threads, err, errlen);
}
