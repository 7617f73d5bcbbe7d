/* The backends this build has, in one table, and choosing one from a --device string the same way
 * in every program: "cpu", "cuda[:N]", or "auto" (the first registered accelerator that answers,
 * else the CPU). Adding a backend is one row in backend_registry.c; the op test
 * (tests/kernels/test_backend_ops.c) then runs every op on it. */
#ifndef STOPCAL_BACKEND_REGISTRY_H
#define STOPCAL_BACKEND_REGISTRY_H

#include "backend.h"

struct backend_entry {
    const char *name; /* the --device word: "cpu", "cuda" */
    int indexed;      /* takes name:N (device N); name alone means N = 0 */
    int accelerator;  /* tried by "auto" before the CPU */
    /* Returns 0, or -1 with a message in err and be left empty. */
    int (*create)(struct backend *be, int index, const struct backend_options *o, char *err,
                  size_t errlen);
};

/* The registered backends, in "auto"'s order of preference (the CPU last). */
int backend_registry_count(void);
const struct backend_entry *backend_registry_entry(int i);

/* Create be for device with options o (NULL: defaults). *note is set to a line explaining the
 * choices made on the caller's behalf (for it to log once): why "auto" fell back to the CPU, and
 * the backend's own note (be->note, e.g. precision auto staying at fp32), "; "-joined; else "".
 * Returns 0, or -1 with a message in err (unknown device string, a backend asked for explicitly
 * but unavailable, a bad option, out of memory). */
int backend_create_for_device(struct backend *be, const char *device, const struct backend_options *o,
                              char *note, size_t note_len, char *err, size_t errlen);

#endif
