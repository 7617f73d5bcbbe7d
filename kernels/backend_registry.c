/* The table of backends, --device parsing and the auto fallback (backend_registry.h). */
#include "backend_registry.h"

#ifdef STOPCAL_HAVE_CUDA
#include "backend_cuda.h"
#endif

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int create_cpu(struct backend *be, int index, const struct backend_options *o, char *err,
                      size_t errlen)
{
    (void)index;
    return backend_cpu_create(be, o, err, errlen);
}

static const struct backend_entry registry[] = {
#ifdef STOPCAL_HAVE_CUDA
    {"cuda", 1, 1, backend_cuda_create},
#endif
    {"cpu", 0, 0, create_cpu},
};
enum { REGISTERED = sizeof registry / sizeof *registry };

int backend_registry_count(void) { return REGISTERED; }

const struct backend_entry *backend_registry_entry(int i)
{
    return i >= 0 && i < REGISTERED ? &registry[i] : NULL;
}

void backend_options_from_env(struct backend_options *o)
{
    memset(o, 0, sizeof *o);
    o->cpu_gemm = getenv("STOPCAL_CPU_GEMM");
    o->cpu_attention = getenv("STOPCAL_CPU_ATTENTION");
    const char *graphs = getenv("STOPCAL_CUDA_GRAPHS");
    o->cuda_graphs = !(graphs && strcmp(graphs, "0") == 0);
    o->precision = getenv("STOPCAL_PRECISION");
}

/* "name" → index 0, "name:N" → N (indexed backends only); -1 when device is not of that form. */
static int parse_index(const struct backend_entry *e, const char *device)
{
    size_t len = strlen(e->name);
    if (strncmp(device, e->name, len) != 0)
        return -1;
    if (device[len] == '\0')
        return 0;
    if (!e->indexed || device[len] != ':' || device[len + 1] < '0' || device[len + 1] > '9')
        return -1;
    char *end;
    errno = 0;
    long index = strtol(device + len + 1, &end, 10);
    return (*end || errno || index > 1024) ? -1 : (int)index;
}

/* "auto, cuda, cuda:N, cpu": what --device accepts in this build. */
static void list_names(char *out, size_t len)
{
    size_t at = (size_t)snprintf(out, len, "auto");
    for (int i = 0; i < REGISTERED && at < len; i++)
        at += (size_t)snprintf(out + at, len - at, registry[i].indexed ? ", %s, %s:N" : ", %s",
                               registry[i].name, registry[i].name);
}

/* note ← the device note, then the backend's own, "; "-joined. */
static void join_notes(char *note, size_t note_len, const char *device_note, const struct backend *be)
{
    snprintf(note, note_len, "%s%s%s", device_note, device_note[0] && be->note[0] ? "; " : "", be->note);
}

static int create_named(struct backend *be, const char *device, const struct backend_options *o,
                        char *note, size_t note_len, char *err, size_t errlen)
{
    for (int i = 0; i < REGISTERED; i++) {
        int index = parse_index(&registry[i], device);
        if (index < 0)
            continue;
        char why[256];
        if (registry[i].create(be, index, o, why, sizeof why) == 0) {
            join_notes(note, note_len, "", be);
            return 0;
        }
        snprintf(err, errlen, "--device %s: %s", device, why);
        return -1;
    }
    char names[128];
    list_names(names, sizeof names);
    if (strncmp(device, "cuda", 4) == 0 && (device[4] == '\0' || device[4] == ':'))
        snprintf(err, errlen, "--device %.40s: this build has no CUDA backend (it has: %s)", device, names);
    else
        snprintf(err, errlen, "--device %.40s: expected %s", device, names);
    return -1;
}

int backend_create_for_device(struct backend *be, const char *device, const struct backend_options *o,
                              char *note, size_t note_len, char *err, size_t errlen)
{
    snprintf(note, note_len, "%s", "");
    if (strcmp(device, "auto") != 0)
        return create_named(be, device, o, note, note_len, err, errlen);
    /* auto: the accelerators in order, then the CPU; say why each accelerator stepped aside. */
    char why[256] = "this build has no accelerator backend";
    for (int i = 0; i < REGISTERED; i++) {
        if (!registry[i].accelerator)
            continue;
        if (registry[i].create(be, 0, o, why, sizeof why) == 0) {
            join_notes(note, note_len, "", be);
            return 0;
        }
    }
    if (backend_cpu_create(be, o, err, errlen))
        return -1;
    char fallback[320];
    snprintf(fallback, sizeof fallback, "device auto: %s; using the CPU", why);
    join_notes(note, note_len, fallback, be);
    return 0;
}
