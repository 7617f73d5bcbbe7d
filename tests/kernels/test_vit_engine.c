/* Engine-level properties no single-op test can show: a batch gives each image the logit it gets
 * alone, steady-state passes allocate nothing, a bigger batch re-reserves once, and bad shapes are
 * refused with a message instead of running. Usage: test_vit_engine MODEL.safetensors [--bf16|--bf16-ref]:
 * --bf16 the bf16 precision on the AVX512_BF16 kernels (exit 77, skipped, on CPUs without them),
 * --bf16-ref the same path on the emulating kernels (bf16_emulated.h), on any CPU. */
#include "../check.h"

#include "backend.h"
#include "backend_cpu.h"
#include "bf16_emulated.h"
#include "linear_bf16.h"
#include "model.h"
#include "vit.h"

#include <string.h>
#include "../backend_env.h"

static unsigned long long rng = 99;

static void test_batch_gives_each_image_its_own_logit(struct vit *v, int S)
{
    const size_t n = (size_t)3 * S * S;
    float *pixels = malloc(3 * n * sizeof(float)), batch_logits[3], single;
    for (size_t i = 0; i < 3 * n; i++)
        pixels[i] = test_uniform(&rng, -2, 2);
    char err[256];
    CHECK(vit_forward(v, pixels, 3, S, batch_logits, err, sizeof err) == 0, "%s", err);
    CHECK(batch_logits[0] != batch_logits[1] && batch_logits[1] != batch_logits[2],
          "different images give different logits (%g %g %g)", batch_logits[0], batch_logits[1],
          batch_logits[2]);
    for (int b = 0; b < 3; b++) {
        CHECK(vit_forward(v, pixels + b * n, 1, S, &single, err, sizeof err) == 0, "%s", err);
        CHECK(fabsf(single - batch_logits[b]) <= 1e-5f * (1 + fabsf(single)),
              "image %d: alone %.9g, in a batch %.9g", b, single, batch_logits[b]);
    }
    free(pixels);
}

static void test_forward_allocates_nothing_after_warmup(struct vit *v, struct backend *be, int S)
{
    const size_t n = (size_t)3 * S * S;
    float *pixels = calloc(4 * n, sizeof(float)), logits[4];
    char err[256];
    CHECK(vit_reserve(v, 4, S, err, sizeof err) == 0, "%s", err);
    CHECK(vit_forward(v, pixels, 4, S, logits, err, sizeof err) == 0, "%s", err); /* warm-up */
    size_t count = be->ops->alloc_count(be), bytes = be->ops->bytes_in_use(be);
    for (int i = 0; i < 3; i++) {
        CHECK(vit_forward(v, pixels, 1 + i, S, logits, err, sizeof err) == 0, "%s", err);
    }
    CHECK(be->ops->alloc_count(be) == count, "allocations after warm-up: %zu -> %zu", count,
          be->ops->alloc_count(be));
    CHECK(be->ops->bytes_in_use(be) == bytes, "bytes in use changed: %zu -> %zu", bytes,
          be->ops->bytes_in_use(be));
    free(pixels);
}

static void test_bad_shapes_are_refused(struct vit *v, int P)
{
    float pixels[1] = {0}, logit;
    char err[256] = "";
    CHECK(vit_forward(v, pixels, 0, P, &logit, err, sizeof err) != 0, "batch 0 refused");
    CHECK(vit_forward(v, pixels, 1, P + 1, &logit, err, sizeof err) == BACKEND_EINVAL,
          "image size not a multiple of the patch refused");
    CHECK(strstr(err, "multiple of the patch size") != NULL, "message names the problem: %s", err);
}

int main(int argc, char **argv)
{
    const char *mode = argc == 3 ? argv[2] : "";
    if (argc < 2 || argc > 3 || (argc == 3 && strcmp(mode, "--bf16") && strcmp(mode, "--bf16-ref"))) {
        fprintf(stderr, "usage: %s MODEL [--bf16|--bf16-ref]\n", argv[0]);
        return 2;
    }
    if (!strcmp(mode, "--bf16") && !linear_bf16_supported()) {
        printf("skip: this CPU (or build) has no AVX512_BF16; the bf16 path runs on the emulating kernels "
               "in vit_engine_bf16_ref instead\n");
        return 77;
    }
    char err[512];
    struct model m;
    if (model_open(&m, argv[1], err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    struct backend be;
    struct vit *v;
    struct backend_options o = *env_options();
    if (!strcmp(mode, "--bf16"))
        o.precision = "bf16";
    const int created = !strcmp(mode, "--bf16-ref")
                            ? backend_cpu_create_bf16_with(&be, &o, &cpu_bf16_emulated, err, sizeof err)
                            : backend_cpu_create(&be, &o, err, sizeof err);
    CHECK(created == 0, "%s", err);
    CHECK(!*mode || be.precision == BACKEND_BF16, "%s: the backend computes in %s", mode,
          backend_precision_name(be.precision));
    CHECK(vit_create(&v, &m, &be, err, sizeof err) == 0, "%s", err);
    const int S = m.config.input_size, P = m.config.patch_size;
    model_close(&m); /* the engine keeps its own copy of the weights */
    test_batch_gives_each_image_its_own_logit(v, S);
    test_forward_allocates_nothing_after_warmup(v, &be, S);
    test_bad_shapes_are_refused(v, P);
    /* A different resolution (grid 3 instead of 4) re-grids the positional table and runs. */
    float *pixels = calloc((size_t)3 * (S - P) * (S - P), sizeof(float)), logit;
    CHECK(vit_forward(v, pixels, 1, S - P, &logit, err, sizeof err) == 0, "%s", err);
    free(pixels);
    vit_destroy(v);
    backend_destroy(&be); /* LeakSanitizer checks that every buffer came back */
    return test_report("test_vit_engine");
}
