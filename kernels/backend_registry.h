/* Choosing a backend from a --device string, the same way in every program: "cpu", "cuda[:N]", or
 * "auto" (CUDA when this build has it and a device answers, else the CPU). */
#ifndef STOPCAL_BACKEND_REGISTRY_H
#define STOPCAL_BACKEND_REGISTRY_H

#include "backend.h"

/* Create be for device. threads: CPU compute threads (≤ 0: the CPUs this process may use).
 * *fallback_note is set to a one-line explanation when "auto" fell back to the CPU (for the caller
 * to log once), else to "". Returns 0, or -1 with a message in err (unknown device string, CUDA
 * asked for explicitly but unavailable, out of memory). */
int backend_create_for_device(struct backend *be, const char *device, int threads, char *fallback_note,
                              size_t note_len, char *err, size_t errlen);

#endif
