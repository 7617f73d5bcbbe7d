/* Resolving struct backend_options' precision request into what a backend computes in, the same
 * way for every backend (each constructor calls this once, before it allocates anything). Inline
 * so the CUDA emulation library needs nothing else from the kernels library. */
#ifndef STOPCAL_BACKEND_PRECISION_H
#define STOPCAL_BACKEND_PRECISION_H

#include "backend.h"

#include <stdio.h>
#include <string.h>

/* What a backend can do: can_fp32 / can_bf16, and why not where it cannot (one clause, e.g. "this
 * CPU has no AVX512_BF16"). Returns 0 with *out set, or -1 with a message in err naming where the
 * request came from (--precision / STOPCAL_PRECISION, or the model file). */
static inline int backend_precision_resolve(const struct backend_options *o, const char *backend,
                                            int can_fp32, const char *why_no_fp32, int can_bf16,
                                            const char *why_no_bf16, enum backend_precision *out,
                                            char *err, size_t errlen)
{
    const char *asked = o && o->precision && *o->precision ? o->precision : NULL;
    const char *model = o && o->model_precision && *o->model_precision ? o->model_precision : NULL;
    const char *want = asked ? asked : model;
    const char *from = asked ? "--precision" : "the model file's runtime.precision";
    if (!want) { /* nobody asked: the backend's own arithmetic */
        *out = can_fp32 ? BACKEND_FP32 : BACKEND_BF16;
        return 0;
    }
    if (strcmp(want, "auto") == 0) {
        /* bf16 where it runs, unless the model pins fp32 (and the backend can do fp32 at all) */
        const int model_pins_fp32 = model && strcmp(model, "fp32") == 0;
        *out = can_bf16 && !(model_pins_fp32 && can_fp32) ? BACKEND_BF16
               : can_fp32                                  ? BACKEND_FP32
                                                           : BACKEND_BF16;
        return 0;
    }
    if (strcmp(want, "fp32") == 0) {
        if (!can_fp32) {
            snprintf(err, errlen, "%s fp32: the %s backend %s", from, backend, why_no_fp32);
            return -1;
        }
        *out = BACKEND_FP32;
        return 0;
    }
    if (strcmp(want, "bf16") == 0) {
        if (!can_bf16) {
            snprintf(err, errlen, "%s bf16: the %s backend cannot compute in bf16 here: %s (use "
                     "--precision fp32 or auto)", from, backend, why_no_bf16);
            return -1;
        }
        *out = BACKEND_BF16;
        return 0;
    }
    snprintf(err, errlen, "%s %.40s: expected fp32, bf16 or auto", from, want);
    return -1;
}

#endif
