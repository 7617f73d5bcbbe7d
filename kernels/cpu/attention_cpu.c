/* Attention on the CPU: the dispatcher, and the portable implementation. The portable one runs,
 * per (image, head, block of query rows), two BLAS GEMMs around a vectorised softmax. A block's
 * score rows (256 × 1,605 floats, 1.6 MB) stay in the core's L2 from the first GEMM to the
 * second, where the whole 10 MB score matrix would not; blocks run in parallel, each with a
 * single-threaded GEMM (OpenBLAS runs serially inside an OpenMP region). */
#include "attention.h"

#include "fastmath.h"
#include "simd.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>

#define QUERY_BLOCK 256

static int block_rows(int tokens) { return tokens < QUERY_BLOCK ? tokens : QUERY_BLOCK; }

size_t attention_blas_thread_floats(int tokens) { return (size_t)block_rows(tokens) * (size_t)tokens; }

static int fused(enum cpu_isa isa) { return isa != CPU_ISA_NONE && attention_fused_has_kernel(isa); }

size_t attention_scratch_floats_cpu(enum cpu_isa isa, int tokens)
{
    size_t per_thread = fused(isa) ? attention_fused_thread_floats(tokens) : attention_blas_thread_floats(tokens);
    return (size_t)omp_get_max_threads() * per_thread;
}

void attention_forward_cpu(enum cpu_isa isa, float *out, const float *qkv, int batch, int tokens,
                           int heads, float *scratch, size_t scratch_floats)
{
    const int use_fused = fused(isa);
    /* As many threads as the scratch has slots for, whatever the thread count is now. */
    size_t slots = scratch_floats / (use_fused ? attention_fused_thread_floats(tokens)
                                               : attention_blas_thread_floats(tokens));
    int max = omp_get_max_threads();
    int threads = slots < 1 ? 1 : slots > (size_t)max ? max : (int)slots;
    if (use_fused)
        attention_fused_forward(isa, out, qkv, batch, tokens, heads, scratch, threads);
    else
        attention_blas_forward(out, qkv, batch, tokens, heads, scratch, threads);
}

SIMD_CLONES static void softmax_row(float *s, int cols)
{
    float max = s[0];
#pragma omp simd reduction(max : max)
    for (int j = 1; j < cols; j++)
        max = s[j] > max ? s[j] : max;
    float sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int j = 0; j < cols; j++) {
        s[j] = fast_expf(s[j] - max);
        sum += s[j];
    }
    float inv = 1.0f / sum;
    for (int j = 0; j < cols; j++)
        s[j] *= inv;
}

void attention_blas_forward(float *out, const float *qkv, int batch, int tokens, int heads,
                            float *scratch, int threads)
{
    const int hd = 64, dim = heads * hd, qkv_stride = 3 * dim;
    const float scale = 0.125f; /* 1/√64, exact */
    const int rows_per_block = block_rows(tokens);
    const int blocks = (tokens + rows_per_block - 1) / rows_per_block;
    const long tasks = (long)batch * heads * blocks;
#pragma omp parallel for schedule(dynamic) num_threads(threads)
    for (long task = 0; task < tasks; task++) {
        const int b = (int)(task / ((long)heads * blocks)), h = (int)(task / blocks % heads);
        const int row0 = (int)(task % blocks) * rows_per_block;
        const int rows = tokens - row0 < rows_per_block ? tokens - row0 : rows_per_block;
        float *scores = scratch + (size_t)omp_get_thread_num() * rows_per_block * tokens;
        const float *base = qkv + (long)b * tokens * qkv_stride;
        const float *q = base + (long)row0 * qkv_stride + h * hd;
        const float *k = base + dim + h * hd, *v = base + 2 * dim + h * hd;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, tokens, hd, scale, q, qkv_stride, k,
                    qkv_stride, 0.0f, scores, tokens);
        for (int r = 0; r < rows; r++)
            softmax_row(scores + (long)r * tokens, tokens);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, hd, tokens, 1.0f, scores, tokens, v,
                    qkv_stride, 0.0f, out + ((long)b * tokens + row0) * dim + h * hd, dim);
    }
}
