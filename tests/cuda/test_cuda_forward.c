/* The whole CUDA forward pass (bf16) against the CPU engine (fp32) on tiny models, driven by
 * vit.c unchanged: CUDA graph recording and replay, no allocation after warm-up, and — in the
 * emulation, which can inject them — a failed allocation that the backend survives and a sticky
 * device error that it reports as such. Built against the emulation (default suite) and the GPU
 * (label gpu, status 77 without a device). Usage: test_cuda_forward MODEL.safetensors… */
#include "../check.h"

#include "backend.h"
#include "backend_cuda.h"
#include "cuda_ops.h"
#include "model.h"
#include "vit.h"

#include <string.h>
#include "../backend_env.h"

static unsigned long long rng = 2024;

static int open_cuda(struct backend *be, char *err, size_t errlen)
{
#ifdef STOPCAL_CUDA_EMULATION
    return backend_cuda_emu_create(be, env_options(), err, errlen);
#else
    return backend_cuda_create(be, 0, env_options(), err, errlen);
#endif
}

static double sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }

static float *random_pixels(int batch, int S)
{
    size_t n = (size_t)batch * 3 * S * S;
    float *p = malloc(n * sizeof *p);
    for (size_t i = 0; i < n; i++)
        p[i] = test_uniform(&rng, -2, 2);
    return p;
}

/* bf16 keeps 8 significant bits (u = 2⁻⁸): every GEMM input, attention probability and sublayer
 * output carries a relative error of order u, and the residual stream (fp32) accumulates them
 * over the blocks. There is no tight a-priori bound for a whole network; on these random models
 * the measured |Δ continue_score| is ~1e-3 (printed), so 0.02 (≈ 5u) flags any real defect —
 * a wrong layout or a missed op moves the score by O(0.1). ARCHITECTURE.md §3 asks CPU↔GPU agreement to
 * be measured and reported, not asserted at 1e-4. */
#define SCORE_TOL 0.02

static void test_forward_matches_cpu_engine(const struct model *m, struct vit *gpu, struct vit *cpu, int batch)
{
    const int S = m->config.input_size;
    float *pixels = random_pixels(batch, S), *lg = malloc(batch * sizeof *lg), *lc = malloc(batch * sizeof *lc);
    char err[256];
    CHECK(vit_forward(gpu, pixels, batch, S, lg, err, sizeof err) == 0, "cuda forward: %s", err);
    CHECK(vit_forward(cpu, pixels, batch, S, lc, err, sizeof err) == 0, "cpu forward: %s", err);
    double worst_logit = 0, worst_score = 0;
    for (int b = 0; b < batch; b++) {
        double dl = fabs((double)lg[b] - lc[b]), ds = fabs(sigmoid(lg[b]) - sigmoid(lc[b]));
        worst_logit = dl > worst_logit ? dl : worst_logit;
        worst_score = ds > worst_score ? ds : worst_score;
    }
    printf("  %s batch %d: logits cuda %.6f cpu %.6f …; max |Δ logit| %.3g, max |Δ continue_score| %.3g\n",
           m->config.name, batch, lg[0], lc[0], worst_logit, worst_score);
    CHECK(worst_score <= SCORE_TOL, "|Δ continue_score| %.3g > %.3g", worst_score, SCORE_TOL);
    CHECK(worst_logit <= 4 * SCORE_TOL * (1 + fabs(lc[0])), "|Δ logit| %.3g", worst_logit);
    free(pixels), free(lg), free(lc);
}

/* The explain pass through the CUDA backend (bf16 activations, no graph) against the CPU engine's:
 * the CLS attention rows and the rollout agree to bf16's accuracy (probabilities of order 1/T move
 * by ~u relative), the logit as the ordinary pass's; and the ordinary pass after it is unchanged. */
static void test_explain_matches_cpu_engine(const struct model *m, struct vit *gpu, struct vit *cpu)
{
    const int S = m->config.input_size, T = vit_tokens(cpu, S), H = m->config.num_heads;
    float *pixels = random_pixels(1, S), lg, lc, before, after;
    float *cg = malloc(sizeof(float) * H * T), *cc = malloc(sizeof(float) * H * T);
    float *rg = malloc(sizeof(float) * T), *rc_ = malloc(sizeof(float) * T);
    char err[256];
    CHECK(vit_forward(gpu, pixels, 1, S, &before, err, sizeof err) == 0, "%s", err);
    CHECK(vit_explain(gpu, pixels, S, &lg, cg, rg, err, sizeof err) == 0, "cuda explain: %s", err);
    CHECK(vit_explain(cpu, pixels, S, &lc, cc, rc_, err, sizeof err) == 0, "cpu explain: %s", err);
    CHECK(vit_forward(gpu, pixels, 1, S, &after, err, sizeof err) == 0, "%s", err);
    CHECK(before == after, "the ordinary pass after an explain pass: %.9g vs %.9g", after, before);
    double worst = 0, worst_roll = 0, sum = 0;
    for (int i = 0; i < H * T; i++)
        worst = fmax(worst, fabs((double)cg[i] - cc[i]));
    for (int i = 0; i < T; i++) {
        worst_roll = fmax(worst_roll, fabs((double)rg[i] - rc_[i]));
        sum += rg[i];
    }
    printf("  %s explain: max |Δ CLS attention| %.3g, max |Δ rollout| %.3g, logits %.6f / %.6f\n",
           m->config.name, worst, worst_roll, lg, lc);
    CHECK(fabs(sigmoid(lg) - sigmoid(lc)) <= SCORE_TOL, "explain logits %.6f vs %.6f", lg, lc);
    CHECK(worst <= 0.02, "CLS attention differs by %.3g", worst);
    CHECK(worst_roll <= 0.02, "rollout differs by %.3g", worst_roll);
    CHECK(fabs(sum - 1) < 1e-4, "the rollout row sums to %.6f", sum);
    free(pixels), free(cg), free(cc), free(rg), free(rc_);
}

/* The first pass at a batch size is recorded, later ones replay the graph: same answers, bit for
 * bit, and no allocation once every size has been seen. */
static void test_graph_replay_repeats_the_pass(const struct model *m, struct vit *v, struct backend *be)
{
    const int S = m->config.input_size;
    float *pixels = random_pixels(3, S), first[3], again[3], other[2];
    char err[256];
    CHECK(vit_forward(v, pixels, 3, S, first, err, sizeof err) == 0, "%s", err);
    size_t allocs = be->ops->alloc_count(be), bytes = be->ops->bytes_in_use(be);
    CHECK(vit_forward(v, pixels, 2, S, other, err, sizeof err) == 0, "%s", err);
    CHECK(vit_forward(v, pixels, 3, S, again, err, sizeof err) == 0, "%s", err);
    for (int b = 0; b < 3; b++)
        CHECK(first[b] == again[b], "image %d: recorded %.9g, replayed %.9g", b, first[b], again[b]);
    for (int b = 0; b < 2; b++)
        CHECK(fabsf(other[b] - first[b]) <= 1e-2f * (1 + fabsf(first[b])), "image %d alone in a batch of 2: %.6g vs %.6g",
              b, other[b], first[b]);
    CHECK(be->ops->alloc_count(be) == allocs, "allocations after warm-up: %zu -> %zu", allocs,
          be->ops->alloc_count(be));
    CHECK(be->ops->bytes_in_use(be) == bytes, "bytes in use %zu -> %zu", bytes, be->ops->bytes_in_use(be));
    free(pixels);
}

#ifdef STOPCAL_CUDA_EMULATION
static void test_failed_allocation_is_recoverable(const struct model *m, struct vit *v, struct backend *be)
{
    const int S = m->config.input_size;
    float *pixels = random_pixels(2, S), before[2], after[2];
    char err[256] = "";
    CHECK(vit_forward(v, pixels, 2, S, before, err, sizeof err) == 0, "%s", err);
    cuda_emu_fail_next_mallocs(1);
    void *b = be->ops->alloc(be, 1000);
    CHECK(b == NULL && strstr(be->error, "out of device memory") != NULL, "alloc fails with a message: %s",
          be->error);
    cuda_emu_fail_next_mallocs(1);
    int rc = vit_reserve(v, 16, S, err, sizeof err);
    CHECK(rc == BACKEND_ENOMEM, "reserving a bigger batch fails with ENOMEM (got %d: %s)", rc, err);
    cuda_emu_fail_next_mallocs(0);
    CHECK(vit_forward(v, pixels, 2, S, after, err, sizeof err) == 0, "the backend still works: %s", err);
    CHECK(before[0] == after[0] && before[1] == after[1], "same answers after the failure");
    free(pixels);
}

static void test_sticky_error_is_reported_and_stays(const struct model *m, struct vit *v)
{
    const int S = m->config.input_size;
    float *pixels = random_pixels(1, S), logit;
    char err[256] = "";
    cuda_emu_set_sticky_error(1);
    int rc = vit_forward(v, pixels, 1, S, &logit, err, sizeof err);
    CHECK(rc == BACKEND_EDEVICE, "sticky error gives BACKEND_EDEVICE (got %d: %s)", rc, err);
    CHECK(strstr(err, "sticky") != NULL, "message says so: %s", err);
    cuda_emu_set_sticky_error(0); /* even if the device came back, this backend stays dead */
    rc = vit_forward(v, pixels, 1, S, &logit, err, sizeof err);
    CHECK(rc == BACKEND_EDEVICE, "later calls fail too (got %d: %s)", rc, err);
    free(pixels);
}
#endif

static void run_model(const char *path)
{
    struct model m;
    char err[256];
    if (model_open(&m, path, err, sizeof err)) {
        CHECK(0, "%s", err);
        return;
    }
    struct backend cpu_be, cuda_be;
    struct vit *cpu = NULL, *gpu = NULL;
    CHECK(backend_cpu_create(&cpu_be, env_options(), err, sizeof err) == 0, "%s", err);
    CHECK(open_cuda(&cuda_be, err, sizeof err) == 0, "%s", err);
    CHECK(vit_create(&cpu, &m, &cpu_be, err, sizeof err) == 0, "%s", err);
    CHECK(vit_create(&gpu, &m, &cuda_be, err, sizeof err) == 0, "%s", err);
    if (cpu && gpu) {
        test_forward_matches_cpu_engine(&m, gpu, cpu, 3);
        test_forward_matches_cpu_engine(&m, gpu, cpu, 1);
        test_graph_replay_repeats_the_pass(&m, gpu, &cuda_be);
        test_explain_matches_cpu_engine(&m, gpu, cpu);
#ifdef STOPCAL_CUDA_EMULATION
        test_failed_allocation_is_recoverable(&m, gpu, &cuda_be);
        test_sticky_error_is_reported_and_stays(&m, gpu);
#endif
    }
    vit_destroy(gpu);
    vit_destroy(cpu);
    if (cuda_be.ops) {
        CHECK(cuda_be.ops->bytes_in_use(&cuda_be) <= (64u << 20), "only the cuBLAS workspace is left");
        backend_destroy(&cuda_be);
    }
    backend_destroy(&cpu_be);
    model_close(&m);
}

int main(int argc, char **argv)
{
    if (CUDA_OP(device_count)() < 1) {
        printf("no CUDA device: skipped\n");
        return 77;
    }
    for (int i = 1; i < argc; i++)
        run_model(argv[i]);
    return test_report("test_cuda_forward");
}
