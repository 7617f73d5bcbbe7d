/* fits_job: the call into the image library (ARCHITECTURE.md §4), mapping its codes onto HTTP's. */
#include "fits_job.h"

#include <stdio.h>

#include "preprocess.h"

int fits_job_available(void) { return 1; }

int fits_job_to_tensor(float *out, const void *bytes, size_t len, size_t max_bytes, uint64_t max_pixels,
                       const struct model_config *cfg, struct fits_job_result *res, char *err, size_t errlen)
{
    struct image_limits limits = image_limits_default();
    limits.max_bytes = max_bytes;
    limits.max_pixels = max_pixels;
    struct preprocess_stats stats = {0};
    /* noise_seed is fixed so that the opt-in noise, when a model asks for it, is reproducible. */
    int rc = image_to_tensor(out, bytes, len, &limits, cfg, 0, &stats, err, errlen);
    switch (rc) {
    case IMAGE_OK:
        res->rms = stats.rms;
        res->nonfinite_pixels = (long)stats.nonfinite_pixels;
        return FITS_JOB_OK;
    case IMAGE_ETOOBIG: return FITS_JOB_ETOOBIG;
    case IMAGE_ENOMEM: return FITS_JOB_ENOMEM;
    case IMAGE_ECONFIG: return FITS_JOB_EINTERNAL;
    default: return FITS_JOB_EINVAL;
    }
}
