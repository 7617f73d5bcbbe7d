/* The one boundary between the server and FITS: bytes of one FITS file (gzip allowed) → the model's
 * (3, S, S) input tensor, its rms and its count of non-finite pixels. The work itself is the shared
 * image library's (models/image); the server never decodes FITS on its own. */
#ifndef STOPCAL_SERVER_FITS_JOB_H
#define STOPCAL_SERVER_FITS_JOB_H

#include "model.h"

#include <stddef.h>
#include <stdint.h>

enum fits_job_status {
    FITS_JOB_OK = 0,
    FITS_JOB_EINVAL,      /* not a usable image: 400 */
    FITS_JOB_ETOOBIG,     /* over the byte or pixel ceiling: 413 */
    FITS_JOB_ENOMEM,      /* 503 */
    FITS_JOB_EUNAVAILABLE, /* this build has no FITS decoder: 501 */
    FITS_JOB_EINTERNAL     /* the model's preprocessing configuration was refused: 500 */
};

struct fits_job_result {
    double rms;
    long nonfinite_pixels;
};

/* 1 when FITS input is supported by this build. */
int fits_job_available(void);

/* out: 3 × S × S floats (S = cfg->input_size), filled on success. Thread-safe. Returns a
 * fits_job_status with a message naming the problem in err on failure. */
int fits_job_to_tensor(float *out, const void *bytes, size_t len, size_t max_bytes, uint64_t max_pixels,
                       const struct model_config *cfg, struct fits_job_result *res, char *err, size_t errlen);

#endif
