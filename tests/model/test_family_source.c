/* The C side of the single-source tests (tests/model/test_families.py):
 *   test_family_source dump OUT    writes the compiled-in architecture description to OUT
 *   test_family_source load MODEL  opens MODEL and builds the engine on the CPU; prints
 *                                  "tensors N uploaded M" and exits 0 only when M = N
 * STOPCAL_TEST_ONLY_FAMILIES, when set, points the reader and the engine at another description. */
#include "backend.h"
#include "family.h"
#include "model.h"
#include "vit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "dump") == 0) {
        FILE *f = fopen(argv[2], "wb");
        if (!f || fwrite(family_description_bytes, 1, family_description_size, f) != family_description_size ||
            fclose(f) != 0) {
            perror(argv[2]);
            return 1;
        }
        return 0;
    }
    if (argc != 3 || strcmp(argv[1], "load") != 0) {
        fprintf(stderr, "usage: %s dump OUT | load MODEL\n", argv[0]);
        return 2;
    }
    char err[512];
    struct model m;
    if (model_open(&m, argv[2], err, sizeof err)) {
        printf("refused: %s\n", err);
        return 1;
    }
    struct backend be;
    struct vit *v;
    if (backend_cpu_create(&be, NULL, err, sizeof err)) {
        printf("backend: %s\n", err);
        model_close(&m);
        return 1;
    }
    if (vit_create(&v, &m, &be, err, sizeof err)) {
        printf("engine: %s\n", err);
        backend_destroy(&be);
        model_close(&m);
        return 1;
    }
    const int n = m.n_tensors, up = vit_uploaded_tensors(v);
    float *pixels = calloc((size_t)3 * m.config.input_size * m.config.input_size, sizeof(float)), logit = 0;
    int rc = vit_forward(v, pixels, 1, m.config.input_size, &logit, err, sizeof err);
    printf("tensors %d uploaded %d logit %.6f%s%s\n", n, up, logit, rc ? " forward failed: " : "", rc ? err : "");
    free(pixels);
    vit_destroy(v);
    backend_destroy(&be);
    model_close(&m);
    return up == n && rc == 0 ? 0 : 1;
}
