/* Resolving struct backend_options' precision request into what a backend computes in, the same
 * way for every backend (each constructor calls this once, before it allocates anything). Inline
 * so the CUDA emulation library needs nothing else from the kernels library. */
#ifndef STOPCAL_BACKEND_PRECISION_H
#define STOPCAL_BACKEND_PRECISION_H

#include "backend.h"

#include <stdio.h>
#include <string.h>

/* What a backend can compute in, and why not where it cannot (one clause, e.g. "this CPU has no
 * AVX512_BF16"); bf16_faster: whether its bf16 form is the faster one here, which is what auto
 * asks for (why_bf16_slower says why not). */
struct backend_precision_caps {
    int fp32;
    const char *why_no_fp32;
    int bf16;
    const char *why_no_bf16;
    int bf16_faster;
    const char *why_bf16_slower;
};

/* Returns 0 with *out set, or -1 with a message in err naming where the request came from
 * (--precision / STOPCAL_PRECISION, or the model file). note (may be NULL) is set to one line a
 * user should hear when auto passed over a bf16 the backend could run, else "". */
static inline int backend_precision_resolve(const struct backend_options *o, const char *backend,
                                            const struct backend_precision_caps *caps,
                                            enum backend_precision *out, char *note, size_t note_len,
                                            char *err, size_t errlen)
{
    const char *asked = o && o->precision && *o->precision ? o->precision : NULL;
    const char *model = o && o->model_precision && *o->model_precision ? o->model_precision : NULL;
    const char *want = asked ? asked : model;
    const char *from = asked ? "--precision" : "the model file's runtime.precision";
    if (note && note_len)
        note[0] = '\0';
    if (!want) { /* nobody asked: the backend's own arithmetic */
        *out = caps->fp32 ? BACKEND_FP32 : BACKEND_BF16;
        return 0;
    }
    if (strcmp(want, "auto") == 0) {
        /* bf16 where it runs and is the faster, unless the model pins fp32; a backend without
         * fp32 computes in bf16 whatever */
        const int model_pins_fp32 = model && strcmp(model, "fp32") == 0;
        if (!caps->fp32 || (caps->bf16 && caps->bf16_faster && !model_pins_fp32)) {
            *out = BACKEND_BF16;
            return 0;
        }
        *out = BACKEND_FP32;
        if (caps->bf16 && !caps->bf16_faster && !model_pins_fp32 && note && note_len)
            snprintf(note, note_len, "%s auto: fp32, since %s (--precision bf16 runs bf16 anyway)", from,
                     caps->why_bf16_slower ? caps->why_bf16_slower : "bf16 is not the faster here");
        return 0;
    }
    if (strcmp(want, "fp32") == 0) {
        if (!caps->fp32) {
            snprintf(err, errlen, "%s fp32: the %s backend %s", from, backend, caps->why_no_fp32);
            return -1;
        }
        *out = BACKEND_FP32;
        return 0;
    }
    if (strcmp(want, "bf16") == 0) {
        if (!caps->bf16) {
            snprintf(err, errlen, "%s bf16: the %s backend cannot compute in bf16 here: %s (use "
                     "--precision fp32 or auto)", from, backend, caps->why_no_bf16);
            return -1;
        }
        *out = BACKEND_BF16;
        return 0;
    }
    snprintf(err, errlen, "%s %.40s: expected fp32, bf16 or auto", from, want);
    return -1;
}

#endif
