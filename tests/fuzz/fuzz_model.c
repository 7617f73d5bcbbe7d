/* libFuzzer target over the model-file reader: bytes → model_open_buffer (safetensors header, JSON,
 * offsets, stopcal.config, tensor set, the format_version 2 data digest) → model_close. A refusal
 * must say why and leave nothing behind; an accepted model must be whole (every tensor inside the
 * buffer, widenable to fp32). Built and run by run_fuzz.sh (clang -fsanitize=fuzzer,address,undefined). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct model m;
    char err[512];
    err[0] = '\0';
    if (model_open_buffer(&m, data, size, err, sizeof err) != 0) {
        if (err[0] == '\0' || m.map != NULL || m.tensors != NULL)
            abort(); /* every refusal names the problem and frees what it took */
        return 0;
    }
    if (m.n_tensors < 1 || m.config.depth < 1 || strlen(m.sha256) != 64)
        abort();
    for (int i = 0; i < m.n_tensors; i++) {
        const struct model_tensor *t = &m.tensors[i];
        size_t numel = model_tensor_numel(t);
        if (model_find(&m, t->name) != t)
            abort();
        /* Touch every byte the engine would read: ASan reports any that lie outside. */
        float *out = malloc(numel ? numel * sizeof(float) : 1);
        if (!out)
            abort();
        model_tensor_to_f32(t, out);
        free(out);
    }
    if ((m.config.tensor_data_sha256[0] != '\0') != m.data_verified)
        abort(); /* a recorded digest is verified, or the model is refused */
    model_close(&m);
    return 0;
}
