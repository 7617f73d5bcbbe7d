/* libFuzzer target over the whole ingestion path: bytes → image_decode (gzip, header walk, cfitsio)
 * → preprocess_image with both profiles. Any crash, sanitizer report, leak or broken invariant is a
 * finding; rejected inputs are the expected outcome for almost every input. Built and run by
 * run_fuzz.sh (clang -fsanitize=fuzzer,address,undefined). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "image.h"
#include "preprocess.h"

#define FUZZ_SIZE 28

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Small ceilings keep every input cheap; they are part of what is being fuzzed. */
    const struct image_limits limits = {(size_t)4 << 20, (uint64_t)1 << 20};
    struct image img;
    char err[256];
    int rc = image_decode(&img, data, size, &limits, err, sizeof err);
    if (rc != IMAGE_OK) {
        if (err[0] == '\0' || img.pixels != NULL)
            abort(); /* every refusal says why and leaves nothing allocated */
        return 0;
    }
    if (img.width < 1 || img.height < 1 || (uint64_t)img.width * (uint64_t)img.height > limits.max_pixels)
        abort();
    static float out[3 * FUZZ_SIZE * FUZZ_SIZE];
    for (int p = 0; p < 2; p++) {
        struct model_config cfg;
        memset(&cfg, 0, sizeof cfg);
        cfg.profile = p ? MODEL_PROFILE_CORTEXCHANGE_V3 : MODEL_PROFILE_CORTEXCHANGE_V2;
        cfg.input_size = FUZZ_SIZE;
        for (int c = 0; c < 3; c++) {
            cfg.mean[c] = 0.25f;
            cfg.std[c] = 0.5f;
        }
        cfg.noise_sigma = size % 5 == 0 ? 0.1f : 0.0f;
        struct preprocess_stats st;
        rc = preprocess_image(out, &img, &cfg, size, &st, err, sizeof err);
        if (rc == IMAGE_OK) {
            if (!(st.rms > 0.0) || !isfinite(st.rms) || st.nonfinite_pixels < 0)
                abort();
            for (size_t i = 0; i < sizeof out / sizeof out[0]; i++)
                if (!isfinite(out[i]))
                    abort(); /* the stretch is clipped to [0, 1]: the tensor is always finite */
        } else if (err[0] == '\0') {
            abort();
        }
    }
    image_free(&img);
    return 0;
}
