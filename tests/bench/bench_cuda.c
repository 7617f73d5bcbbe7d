/* CUDA benchmark (needs a GPU; exits 77 without one). Prints ratios, asserts nothing (ARCHITECTURE.md §8):
 *  1. the card's measured bf16 matrix rate (a large cuBLAS bf16 GEMM, fp32 accumulation) — the
 *     yardstick for everything else;
 *  2. each of our kernels at ViT-B/14-reg @560 shapes (1,605 tokens, D 768, 12 heads) for batch 8
 *     and 32: TFLOP/s for the matrix kernels (with the fraction of the measured rate), GB/s for
 *     the memory-bound ones;
 *  3. end to end through vit_forward (graph replay, pixel upload and logit download included):
 *     images/s at batch 1, 8, 32, achieved TFLOP/s and the fraction of the measured rate;
 *  4. |Δ continue_score| between this GPU path (bf16) and the CPU engine (fp32) on a few images.
 * Usage: bench_cuda MODEL.safetensors [cpu_images (default 2)]
 * (MODEL: stopcal-genmodel --variant b --registers 4 --input-size 560 -o MODEL) */
#include "backend.h"
#include "backend_cuda.h"
#include "cuda_ops.h"
#include "model.h"
#include "vit.h"

#include <cuda_runtime_api.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../backend_env.h"

static unsigned long long rng = 7;

static float uniform(void)
{
    rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)((rng >> 40) / (double)(1ULL << 24)) * 2.0f - 1.0f;
}

static void *device_random(size_t n, int bf16)
{
    size_t eb = bf16 ? 2 : 4;
    unsigned char *host = malloc(n * eb);
    for (size_t i = 0; i < n; i++) {
        float v = uniform();
        if (bf16) {
            unsigned u;
            memcpy(&u, &v, 4);
            unsigned short h = (unsigned short)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
            memcpy(host + 2 * i, &h, 2);
        } else {
            memcpy(host + 4 * i, &v, 4);
        }
    }
    void *d = cuda_device_alloc(n * eb);
    if (!d) {
        fprintf(stderr, "bench_cuda: out of device memory\n");
        exit(1);
    }
    cuda_copy_to_device(d, host, n * eb);
    free(host);
    return d;
}

/* Milliseconds per call of what `run` does, timed with events over `iters` calls after a warm-up. */
typedef int (*bench_fn)(void *arg);
static double time_ms(bench_fn run, void *arg, int iters)
{
    cudaEvent_t a, b;
    cudaEventCreate(&a);
    cudaEventCreate(&b);
    for (int i = 0; i < 2; i++)
        run(arg);
    cudaEventRecord(a, 0);
    for (int i = 0; i < iters; i++)
        if (run(arg)) {
            fprintf(stderr, "bench_cuda: kernel failed\n");
            exit(1);
        }
    cudaEventRecord(b, 0);
    cudaEventSynchronize(b);
    float ms = 0;
    cudaEventElapsedTime(&ms, a, b);
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    return ms / iters;
}

struct gemm_args {
    void *blas, *out, *in, *w, *bias;
    int m, n, k, act;
};
static int run_gemm(void *p)
{
    struct gemm_args *g = p;
    return cuda_linear(g->blas, g->out, CUDA_DTYPE_BF16, g->in, g->w, g->bias, g->m, g->n, g->k, g->act, NULL);
}

struct kernel_args {
    int which, batch, T, D, H, F, S, P, R;
    void *x, *y, *out, *qkv, *w, *b, *gamma, *pix, *pw, *cls, *reg, *pos, *wide;
};
enum { K_PATCH, K_LN, K_RES_LN, K_ATTN, K_GELU, K_SWIGLU, K_LS };
static int run_kernel(void *p)
{
    struct kernel_args *a = p;
    const long rows = (long)a->batch * a->T;
    switch (a->which) {
    case K_PATCH:
        return cuda_patch_embed(a->x, a->pix, a->pw, a->b, a->cls, a->reg, a->pos, a->batch, a->S, a->P, a->D, a->R,
                                NULL);
    case K_LN:
        return cuda_layernorm(a->out, a->x, a->gamma, a->b, (int)rows, a->D, a->D, 1e-6f, NULL);
    case K_RES_LN:
        return cuda_residual_layernorm(a->x, a->y, CUDA_DTYPE_BF16, a->gamma, a->out, a->gamma, a->b, (int)rows, a->D,
                                       1e-6f, NULL);
    case K_ATTN:
        return cuda_attention(a->out, a->qkv, a->batch, a->T, a->H, NULL);
    case K_GELU:
        return cuda_bias_act(a->wide, CUDA_DTYPE_BF16, a->b, rows, a->F, CUDA_ACT_GELU, NULL);
    case K_SWIGLU:
        return cuda_swiglu(a->out, a->wide, rows, a->F / 2, NULL);
    case K_LS:
        return cuda_layerscale_residual(a->x, a->y, CUDA_DTYPE_BF16, a->gamma, rows, a->D, NULL);
    }
    return -1;
}

static double measured_bf16_tflops(void *blas)
{
    const int n = 8192;
    struct gemm_args g = {blas, cuda_device_alloc((size_t)n * n * 2), device_random((size_t)n * n, 1),
                          device_random((size_t)n * n, 1), NULL, n, n, n, CUDA_ACT_NONE};
    double ms = time_ms(run_gemm, &g, 20);
    double tflops = 2.0 * n * n * (double)n / (ms * 1e-3) / 1e12;
    printf("measured bf16 matrix rate (cuBLAS %d³, fp32 accumulate): %.1f TFLOP/s\n", n, tflops);
    cuda_device_free(g.out), cuda_device_free(g.in), cuda_device_free(g.w);
    return tflops;
}

static void bench_kernels(void *blas, int batch, double peak)
{
    const int D = 768, H = 12, F = 3072, S = 560, P = 14, R = 4, g = S / P, T = 1 + R + g * g;
    const long rows = (long)batch * T;
    struct kernel_args a = {0};
    a.batch = batch, a.T = T, a.D = D, a.H = H, a.F = F, a.S = S, a.P = P, a.R = R;
    a.x = device_random((size_t)rows * D, 0);
    a.y = device_random((size_t)rows * D, 1);
    a.out = cuda_device_alloc((size_t)rows * D * 2);
    a.qkv = device_random((size_t)rows * 3 * D, 1);
    a.wide = device_random((size_t)rows * F, 1);
    a.gamma = device_random(D, 0), a.b = device_random(F, 0);
    a.pix = device_random((size_t)batch * 3 * S * S, 0), a.pw = device_random((size_t)D * 3 * P * P, 1);
    a.cls = device_random(D, 0), a.reg = device_random((size_t)R * D, 0), a.pos = device_random((size_t)(1 + g * g) * D, 0);
    printf("\nkernels at ViT-B/14-reg @560, batch %d (%ld token rows):\n", batch, rows);
    struct {
        const char *name;
        int which;
        double flops, bytes;
    } ks[] = {
        {"patch_embed (gather+mma+pos)", K_PATCH, 2.0 * batch * g * g * 3 * P * P * D,
         4.0 * batch * 3 * S * S + 4.0 * rows * D},
        {"attention (flash, mma)", K_ATTN, 4.0 * batch * H * (double)T * T * 64, 2.0 * rows * 4 * D},
        {"layernorm", K_LN, 0, rows * D * (4.0 + 2.0)},
        {"residual+layernorm (fused)", K_RES_LN, 0, rows * D * (4.0 + 2.0 + 4.0 + 2.0)},
        {"layerscale+residual", K_LS, 0, rows * D * (4.0 + 2.0 + 4.0)},
        {"bias+GELU (bf16, in place)", K_GELU, 0, rows * F * 4.0},
        {"swiglu", K_SWIGLU, 0, rows * (F * 2.0 + F / 2 * 2.0)},
    };
    for (size_t i = 0; i < sizeof ks / sizeof *ks; i++) {
        a.which = ks[i].which;
        double ms = time_ms(run_kernel, &a, 10);
        if (ks[i].flops > 0)
            printf("  %-30s %8.3f ms  %7.1f TFLOP/s  (%.0f%% of measured bf16)\n", ks[i].name, ms,
                   ks[i].flops / (ms * 1e-3) / 1e12, 100 * ks[i].flops / (ms * 1e-3) / 1e12 / peak);
        else
            printf("  %-30s %8.3f ms  %7.1f GB/s\n", ks[i].name, ms, ks[i].bytes / (ms * 1e-3) / 1e9);
    }
    struct {
        const char *name;
        int n, k, act;
    } gemms[] = {{"linear qkv (768→2304)", 3 * D, D, CUDA_ACT_NONE},
                 {"linear proj (768→768)", D, D, CUDA_ACT_NONE},
                 {"linear fc1+GELU (768→3072)", F, D, CUDA_ACT_GELU},
                 {"linear fc2 (3072→768)", D, F, CUDA_ACT_NONE}};
    for (size_t i = 0; i < sizeof gemms / sizeof *gemms; i++) {
        struct gemm_args ga = {blas, a.wide, gemms[i].k == D ? a.out : a.wide, NULL, a.b, (int)rows, gemms[i].n,
                               gemms[i].k, gemms[i].act};
        void *out = cuda_device_alloc((size_t)rows * gemms[i].n * 2);
        ga.out = out;
        ga.w = device_random((size_t)gemms[i].n * gemms[i].k, 1);
        double ms = time_ms(run_gemm, &ga, 10), fl = 2.0 * rows * gemms[i].n * gemms[i].k;
        printf("  %-30s %8.3f ms  %7.1f TFLOP/s  (%.0f%% of measured bf16)\n", gemms[i].name, ms,
               fl / (ms * 1e-3) / 1e12, 100 * fl / (ms * 1e-3) / 1e12 / peak);
        cuda_device_free(out), cuda_device_free(ga.w);
    }
    void *bufs[] = {a.x, a.y, a.out, a.qkv, a.wide, a.gamma, a.b, a.pix, a.pw, a.cls, a.reg, a.pos};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
        cuda_device_free(bufs[i]);
}

static double flops_per_image(const struct model_config *c, int S)
{
    const double g = S / c->patch_size, T = 1 + c->num_registers + g * g, D = c->embed_dim;
    const double F = c->ffn_hidden_dim, ffn = c->ffn == MODEL_FFN_MLP ? 2 * T * D * F * 2 : 2 * T * D * F * 3;
    const double block = 2 * T * D * 3 * D + 4 * T * T * D + 2 * T * D * D + ffn;
    return c->depth * block + 2 * g * g * 3 * c->patch_size * c->patch_size * D;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: bench_cuda MODEL.safetensors [cpu_images]\n");
        return 2;
    }
    const int cpu_images = argc > 2 ? atoi(argv[2]) : 2;
    struct backend be, cpu_be;
    char err[256];
    if (backend_cuda_create(&be, 0, env_options(), err, sizeof err)) {
        printf("bench_cuda: %s — no GPU, nothing measured\n", err);
        return 77;
    }
    struct cudaDeviceProp prop;
    cudaGetDeviceProperties(&prop, 0);
    printf("device: %s (sm_%d%d, %d SMs, %.0f GiB)\n", prop.name, prop.major, prop.minor, prop.multiProcessorCount,
           prop.totalGlobalMem / 1073741824.0);
    void *blas = cuda_blas_create();
    const double peak = measured_bf16_tflops(blas);
    bench_kernels(blas, 8, peak);
    bench_kernels(blas, 32, peak);
    cuda_blas_destroy(blas);

    struct model m;
    if (model_open(&m, argv[1], err, sizeof err)) {
        fprintf(stderr, "bench_cuda: %s\n", err);
        return 1;
    }
    const int S = m.config.input_size;
    struct vit *v = NULL;
    if (vit_create(&v, &m, &be, err, sizeof err) || vit_reserve(v, 32, S, err, sizeof err)) {
        fprintf(stderr, "bench_cuda: %s\n", err);
        return 1;
    }
    const double fl = flops_per_image(&m.config, S);
    printf("\nend to end, %s @%d (%.0f GFLOP/image), graph replay, upload + download included:\n", m.config.name, S,
           fl / 1e9);
    float *pixels = malloc(sizeof(float) * 32 * 3 * S * S), logits[32];
    for (size_t i = 0; i < (size_t)32 * 3 * S * S; i++)
        pixels[i] = uniform() * 2;
    const int batches[] = {1, 8, 32};
    for (int i = 0; i < 3; i++) {
        const int b = batches[i], iters = b == 1 ? 50 : 10;
        for (int w = 0; w < 2; w++) /* records the graph, then replays once */
            if (vit_forward(v, pixels, b, S, logits, err, sizeof err)) {
                fprintf(stderr, "bench_cuda: %s\n", err);
                return 1;
            }
        cudaEvent_t e0, e1;
        cudaEventCreate(&e0);
        cudaEventCreate(&e1);
        cudaEventRecord(e0, 0);
        for (int it = 0; it < iters; it++)
            vit_forward(v, pixels, b, S, logits, err, sizeof err);
        cudaEventRecord(e1, 0);
        cudaEventSynchronize(e1);
        float ms = 0;
        cudaEventElapsedTime(&ms, e0, e1);
        const double s = ms * 1e-3 / iters, tf = fl * b / s / 1e12;
        printf("  batch %2d: %8.2f ms/pass  %8.1f images/s  %6.1f TFLOP/s  (%.0f%% of measured bf16)\n", b, ms / iters,
               b / s, tf, 100 * tf / peak);
    }

    /* GPU (bf16) vs CPU (fp32) on the same images. */
    struct vit *cv = NULL;
    if (cpu_images > 0 && backend_cpu_create(&cpu_be, env_options(), err, sizeof err) == 0 &&
        vit_create(&cv, &m, &cpu_be, err, sizeof err) == 0) {
        double worst = 0;
        for (int i = 0; i < cpu_images && i < 32; i++) {
            float lg, lc;
            const float *img = pixels + (size_t)i * 3 * S * S;
            if (vit_forward(v, img, 1, S, &lg, err, sizeof err) || vit_forward(cv, img, 1, S, &lc, err, sizeof err))
                break;
            double d = fabs(1 / (1 + exp(-(double)lg)) - 1 / (1 + exp(-(double)lc)));
            worst = d > worst ? d : worst;
        }
        printf("\n|Δ continue_score| GPU (bf16) vs CPU (fp32), %d images: max %.3g\n", cpu_images, worst);
        vit_destroy(cv);
        backend_destroy(&cpu_be);
    }
    free(pixels);
    vit_destroy(v);
    model_close(&m);
    backend_destroy(&be);
    return 0;
}
