/* The CPU backend: buffers are fp32 arrays, ops are the CPU kernels (OpenBLAS GEMMs or our packed
 * tiles, OpenMP for the rest). Scratch space grows to the largest shape seen during warm-up and is
 * then reused, so steady-state forward passes allocate nothing. The instruction sets are chosen
 * once, at creation, and kept here: on CPUs with AVX-512 or AVX2 the linear weights are packed at
 * upload for linear_packed.c (gemm "blas" keeps them raw for OpenBLAS instead), and attention runs
 * fused (attention_fused.c).
 *
 * The bf16 precision (CPUs with AVX512_BF16, chosen at creation): every matrix weight, the patch
 * embedding's and the head's included, is rounded to bf16 and packed once at upload
 * (linear_bf16.h); each GEMM reads its input rows as bf16 and accumulates in fp32; attention runs
 * its bf16 form (bf16 Q·Kᵀ and P·V, an fp32 softmax). LayerNorm, LayerScale + residual, SwiGLU and
 * the softmax compute in fp32. An input the engine keeps in a GEMM-input buffer
 * (alloc_gemm_input) is stored as bf16 pairs by the op that writes it — the linear tile and the
 * attention tile round in registers, LayerNorm and SwiGLU round each block of rows while it is in
 * cache — so the GEMM reads it as it is; any other input is rounded into a scratch first. Either
 * way every GEMM sees the same bf16 values. */
#include "backend_cpu.h"

#include "activations.h"
#include "backend_precision.h"
#include "linear_bf16.h"
#include "attention.h"
#include "attention_probs.h"
#include "layernorm.h"
#include "linear.h"
#include "linear_packed.h"
#include "patch_embed.h"
#include "rope_cpu.h"
#include "threads.h"

#include <limits.h>
#include <omp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct cpu_ctx {
    enum cpu_isa gemm_isa;      /* CPU_ISA_NONE: OpenBLAS on raw weights */
    enum cpu_isa attention_isa; /* CPU_ISA_NONE: the BLAS form */
    const struct cpu_bf16_kernels *bf16; /* NULL: fp32 precision */
    char kernels[64];           /* what the two are, for logs */
    size_t bytes_in_use;
    size_t alloc_count;
    float *scratch; /* shared by patch_embed and attention, never live at once */
    size_t scratch_floats;
    uint32_t *rows16; /* bf16: a GEMM's input rows rounded to bf16 pairs */
    size_t rows16_words;
    float *staging; /* bf16: fp32 results of an op with no rounding store, before they are rounded */
    size_t staging_floats;
};

/* Every buffer carries its size in front so release can keep bytes_in_use honest, and, for a
 * packed linear weight, the (N, K) it was packed as. 64 bytes, so payloads are cache-line aligned
 * (the packed kernel's aligned loads need it). */
struct cpu_header {
    size_t bytes;
    int packed_n, packed_k; /* 0, 0: a plain row-major array */
    int bf16;               /* packed by linear_bf16_pack_weight (bf16 pairs), else fp32 panels */
    int gemm_cols;          /* a bf16 GEMM-input buffer: rows of ⌈gemm_cols/2⌉ pairs; else 0 */
    size_t gemm_rows;
    unsigned char pad[32];
};
_Static_assert(sizeof(struct cpu_header) % LINEAR_PACKED_ALIGN == 0,
               "payloads must stay LINEAR_PACKED_ALIGN-byte aligned");

static struct cpu_header *header_of(const void *buf) { return (struct cpu_header *)buf - 1; }

static void *cpu_alloc(struct backend *be, size_t n)
{
    struct cpu_ctx *c = be->ctx;
    size_t bytes = n * sizeof(float);
    struct cpu_header *h = aligned_alloc(LINEAR_PACKED_ALIGN, (sizeof *h + bytes + LINEAR_PACKED_ALIGN - 1) /
                                         LINEAR_PACKED_ALIGN * LINEAR_PACKED_ALIGN);
    if (!h) {
        backend_fail(be, BACKEND_ENOMEM, "cpu: cannot allocate %zu bytes", bytes);
        return NULL;
    }
    h->bytes = bytes;
    h->packed_n = h->packed_k = 0;
    h->bf16 = 0;
    h->gemm_cols = 0;
    h->gemm_rows = 0;
    c->bytes_in_use += bytes;
    c->alloc_count++;
    return h + 1;
}

static void cpu_release(struct backend *be, void *buf)
{
    if (!buf)
        return;
    struct cpu_ctx *c = be->ctx;
    struct cpu_header *h = header_of(buf);
    c->bytes_in_use -= h->bytes;
    free(h);
}

/* At bf16, rows of bf16 pairs (linear_bf16.h's input layout); at fp32, a plain buffer (the
 * engine does not ask: gemm_inputs_apart is 0). */
static void *cpu_alloc_gemm_input(struct backend *be, size_t rows, size_t cols)
{
    const struct cpu_ctx *c = be->ctx;
    if (!c->bf16)
        return cpu_alloc(be, rows * cols);
    if (cols < 1 || cols > INT_MAX || rows > INT_MAX) {
        backend_fail(be, BACKEND_EINVAL, "cpu: a %zu x %zu GEMM input cannot be laid out", rows, cols);
        return NULL;
    }
    uint32_t *w = cpu_alloc(be, rows * (size_t)linear_bf16_pairs((int)cols)); /* a word per slot */
    if (!w)
        return NULL;
    header_of(w)->gemm_cols = (int)cols;
    header_of(w)->gemm_rows = rows;
    return w;
}

/* A GEMM-input buffer's pairs, or NULL for an fp32 buffer (or none). */
static uint32_t *gemm_input_words(const void *buf)
{
    return buf && header_of(buf)->gemm_cols ? (uint32_t *)buf : NULL;
}

/* 0 when the GEMM-input buffer buf can hold `rows` rows of `cols` values as op uses it. */
static int check_gemm_input(struct backend *be, const char *op, const void *buf, long rows, int cols)
{
    const struct cpu_header *h = header_of(buf);
    if (h->gemm_cols != cols || (size_t)rows > h->gemm_rows)
        return backend_fail(be, BACKEND_EINVAL, "%s: a GEMM-input buffer of %zu rows of %d, used as %ld of %d",
                            op, h->gemm_rows, h->gemm_cols, rows, cols);
    return 0;
}

/* Ops that only read and write fp32 refuse a GEMM-input buffer rather than misread it. */
static int refuse_gemm_input(struct backend *be, const char *op, const void *a, const void *b)
{
    if (gemm_input_words(a) || gemm_input_words(b))
        return backend_fail(be, BACKEND_EINVAL, "%s: given a GEMM-input buffer, which only linear reads", op);
    return 0;
}

/* bf16: matrices and the patch weight as bf16 pairs in 32-column panels, any (N, K). */
static void *upload_bf16(struct backend *be, const float *host, size_t rows, size_t cols)
{
    if (rows < 1 || rows > INT_MAX || cols < 1 || cols > INT_MAX) {
        backend_fail(be, BACKEND_EINVAL, "cpu: a %zu x %zu weight cannot be packed", rows, cols);
        return NULL;
    }
    /* one 32-bit word per float slot: the allocator's size is in floats */
    uint32_t *w = cpu_alloc(be, linear_bf16_packed_words((int)rows, (int)cols));
    if (!w)
        return NULL;
    linear_bf16_pack_weight(w, host, (int)rows, (int)cols);
    header_of(w)->packed_n = (int)rows;
    header_of(w)->packed_k = (int)cols;
    header_of(w)->bf16 = 1;
    return w;
}

/* fp32: every weight stays fp32; linear weights whose N is a multiple of the panel width are
 * packed. bf16: matrices and the patch weight are packed in bf16, vectors stay fp32. */
static void *cpu_upload_weight(struct backend *be, const float *host, size_t rows, size_t cols,
                               enum weight_kind kind)
{
    const struct cpu_ctx *c = be->ctx;
    if (c->bf16 && (kind == WEIGHT_MATRIX || kind == WEIGHT_PATCH))
        return upload_bf16(be, host, rows, cols);
    const int pack = kind == WEIGHT_MATRIX && rows % LINEAR_PANEL == 0 && rows <= INT_MAX &&
                     cols >= 1 && cols <= INT_MAX && c->gemm_isa != CPU_ISA_NONE;
    const size_t n = pack ? linear_packed_floats((int)rows, (int)cols) : rows * cols;
    float *w = cpu_alloc(be, n);
    if (!w)
        return NULL;
    if (pack) {
        linear_pack_weight(w, host, (int)rows, (int)cols);
        header_of(w)->packed_n = (int)rows;
        header_of(w)->packed_k = (int)cols;
    } else {
        memcpy(w, host, rows * cols * sizeof(float));
    }
    return w;
}

/* A GEMM-input buffer takes and gives fp32 by whole rows: uploading rounds them, downloading
 * widens the stored bf16 back (exactly). The rows n values make, or -1 (message set). */
static long whole_rows(struct backend *be, const char *op, const void *buf, size_t n)
{
    const int cols = header_of(buf)->gemm_cols;
    if (n % (size_t)cols) {
        backend_fail(be, BACKEND_EINVAL, "%s: %zu values are not whole rows of this %zu x %d GEMM-input "
                     "buffer", op, n, header_of(buf)->gemm_rows, cols);
        return -1;
    }
    return check_gemm_input(be, op, buf, (long)(n / (size_t)cols), cols) ? -1 : (long)(n / (size_t)cols);
}

static int cpu_upload(struct backend *be, void *dst, const float *host, size_t n)
{
    uint32_t *w = gemm_input_words(dst);
    if (!w) {
        memcpy(dst, host, n * sizeof(float));
        return 0;
    }
    const int cols = header_of(dst)->gemm_cols;
    const long rows = whole_rows(be, "upload", dst, n);
    if (rows < 0)
        return BACKEND_EINVAL;
    ((const struct cpu_ctx *)be->ctx)->bf16->round_rows(w, host, (int)rows, cols, cols);
    return 0;
}

static int cpu_download(struct backend *be, float *host, const void *src, size_t n)
{
    const uint32_t *w = gemm_input_words(src);
    if (!w) {
        memcpy(host, src, n * sizeof(float));
        return 0;
    }
    const int cols = header_of(src)->gemm_cols, k2 = linear_bf16_pairs(cols);
    if (whole_rows(be, "download", src, n) < 0)
        return BACKEND_EINVAL;
    for (size_t i = 0; i < n; i++) {
        const uint32_t pair = w[i / (size_t)cols * (size_t)k2 + i % (size_t)cols / 2];
        const uint32_t bits = (i % (size_t)cols % 2 ? pair >> 16 : pair & 0xFFFF) << 16;
        memcpy(host + i, &bits, sizeof bits);
    }
    return 0;
}

/* *buf, grown to at least `floats` (kept across calls, so warm passes allocate nothing). */
static float *grown(struct backend *be, float **buf, size_t *have, size_t floats)
{
    if (floats <= *have)
        return *buf;
    cpu_release(be, *buf);
    *buf = cpu_alloc(be, floats);
    *have = *buf ? floats : 0;
    return *buf;
}

static float *scratch(struct backend *be, size_t floats)
{
    struct cpu_ctx *c = be->ctx;
    return grown(be, &c->scratch, &c->scratch_floats, floats);
}

static float *staging(struct backend *be, size_t floats)
{
    struct cpu_ctx *c = be->ctx;
    return grown(be, &c->staging, &c->staging_floats, floats);
}

/* Into a GEMM-input buffer without a rounding store of its own: the op's fp32 rows from the
 * staging buffer, rounded. */
static void round_staged(struct backend *be, uint32_t *dst, int rows, int cols)
{
    const struct cpu_ctx *c = be->ctx;
    c->bf16->round_rows(dst, c->staging, rows, cols, cols);
}

/* The bf16 copy of a GEMM's input: m rows of k values, lda apart, rounded once. */
static const uint32_t *round_rows(struct backend *be, const float *in, int m, int k, int lda)
{
    struct cpu_ctx *c = be->ctx;
    const size_t words = (size_t)m * (size_t)linear_bf16_pairs(k);
    if (words > c->rows16_words) {
        cpu_release(be, c->rows16);
        c->rows16 = cpu_alloc(be, words);
        c->rows16_words = c->rows16 ? words : 0;
        if (!c->rows16)
            return NULL;
    }
    c->bf16->round_rows(c->rows16, in, m, k, lda);
    return c->rows16;
}

/* bf16 patch embedding: gather, round the patch rows, one bf16 GEMM per image straight into its
 * token rows with the bias fused, then CLS, registers and positions in fp32. */
static int patch_embed_bf16(struct backend *be, float *x, const float *pixels, const uint32_t *weight,
                            const float *bias, const float *cls_token, const float *registers,
                            const float *pos, int batch, int image_size, int patch_size, int dim,
                            int num_registers)
{
    const struct cpu_ctx *c = be->ctx;
    const int g = image_size / patch_size, n_patches = g * g, K = 3 * patch_size * patch_size;
    const int T = 1 + num_registers + n_patches;
    if (header_of(weight)->packed_n != dim || header_of(weight)->packed_k != K)
        return backend_fail(be, BACKEND_EINVAL, "patch_embed: weight packed as (%d, %d), used as (%d, %d)",
                         header_of(weight)->packed_n, header_of(weight)->packed_k, dim, K);
    float *s = scratch(be, patch_embed_scratch_floats_cpu(batch, image_size, patch_size));
    if (!s)
        return BACKEND_ENOMEM;
    patch_gather_cpu(s, pixels, batch, image_size, patch_size);
    const uint32_t *rows = round_rows(be, s, batch * n_patches, K, K);
    if (!rows)
        return BACKEND_ENOMEM;
    for (int b = 0; b < batch; b++)
        c->bf16->linear(x + ((size_t)b * T + 1 + num_registers) * dim, dim,
                        rows + (size_t)b * n_patches * linear_bf16_pairs(K), weight, bias, n_patches,
                        dim, K, EPILOGUE_NONE);
    patch_embed_tokens_cpu(x, NULL, cls_token, registers, pos, batch, g, dim, num_registers);
    return 0;
}

static int cpu_patch_embed(struct backend *be, void *x, const void *pixels, const void *weight,
                           const void *bias, const void *cls_token, const void *registers,
                           const void *pos, int batch, int image_size, int patch_size, int dim,
                           int num_registers)
{
    if (image_size % patch_size)
        return backend_fail(be, BACKEND_EINVAL, "image size %d is not a multiple of the patch size %d",
                         image_size, patch_size);
    if (header_of(weight)->bf16)
        return patch_embed_bf16(be, x, pixels, weight, bias, cls_token, registers, pos, batch,
                                image_size, patch_size, dim, num_registers);
    float *s = scratch(be, patch_embed_scratch_floats_cpu(batch, image_size, patch_size));
    if (!s)
        return BACKEND_ENOMEM;
    patch_embed_forward_cpu(x, pixels, weight, bias, cls_token, registers, pos, batch, image_size,
                            patch_size, dim, num_registers, s);
    return 0;
}

static int cpu_linear(struct backend *be, void *out, const void *in, const void *weight,
                      const void *bias, int m, int n, int k, enum linear_epilogue epilogue)
{
    const struct cpu_header *w = header_of(weight);
    uint32_t *out16 = gemm_input_words(out);
    const uint32_t *in16 = gemm_input_words(in);
    if (w->bf16) {
        const struct cpu_bf16_kernels *kernels = ((const struct cpu_ctx *)be->ctx)->bf16;
        if (w->packed_n != n || w->packed_k != k)
            return backend_fail(be, BACKEND_EINVAL, "linear: weight packed as (%d, %d), used as (%d, %d)",
                             w->packed_n, w->packed_k, n, k);
        if ((in16 && check_gemm_input(be, "linear (input)", in, m, k)) ||
            (out16 && check_gemm_input(be, "linear (output)", out, m, n)))
            return BACKEND_EINVAL;
        const uint32_t *rows = in16 ? in16 : round_rows(be, in, m, k, k);
        if (!rows)
            return BACKEND_ENOMEM;
        if (!out16) {
            kernels->linear(out, n, rows, weight, bias, m, n, k, epilogue);
        } else if (kernels->linear_to_bf16) {
            kernels->linear_to_bf16(out16, linear_bf16_pairs(n), rows, weight, bias, m, n, k, epilogue);
        } else {
            float *s = staging(be, (size_t)m * n);
            if (!s)
                return BACKEND_ENOMEM;
            kernels->linear(s, n, rows, weight, bias, m, n, k, epilogue);
            round_staged(be, out16, m, n);
        }
        return 0;
    }
    if (in16 || out16) /* only the bf16 precision makes these */
        return refuse_gemm_input(be, "linear (fp32 weight)", in, out);
    if (!w->packed_n) {
        linear_forward_cpu(out, in, weight, bias, m, n, k, epilogue);
        return 0;
    }
    if (w->packed_n != n || w->packed_k != k)
        return backend_fail(be, BACKEND_EINVAL, "linear: weight packed as (%d, %d), used as (%d, %d)",
                         w->packed_n, w->packed_k, n, k);
    if (linear_packed_forward(((const struct cpu_ctx *)be->ctx)->gemm_isa, out, in, weight, bias, m,
                              n, k, epilogue) != 0)
        return backend_fail(be, BACKEND_EINVAL, "linear: the packed kernel refused weight (%d, %d) "
                         "(not %d-byte aligned)", n, k, LINEAR_PACKED_ALIGN);
    return 0;
}

/* Rows per block of a LayerNorm into a GEMM-input buffer: one thread normalises them into its
 * part of the staging buffer and rounds them while they are still in its cache. */
#define LAYERNORM_ROUND_ROWS 32

static int cpu_layernorm(struct backend *be, void *out, const void *in, const void *weight,
                         const void *bias, int rows, int dim, int in_row_stride, float eps)
{
    uint32_t *out16 = gemm_input_words(out);
    if (refuse_gemm_input(be, "layernorm (input)", in, NULL) ||
        (out16 && check_gemm_input(be, "layernorm", out, rows, dim)))
        return BACKEND_EINVAL;
    if (!out16) {
        layernorm_forward_cpu(out, in, weight, bias, rows, dim, in_row_stride, eps);
        return 0;
    }
    const struct cpu_bf16_kernels *kernels = ((const struct cpu_ctx *)be->ctx)->bf16;
    const int threads = omp_get_max_threads(), k2 = linear_bf16_pairs(dim);
    float *s = staging(be, (size_t)threads * LAYERNORM_ROUND_ROWS * dim);
    if (!s)
        return BACKEND_ENOMEM;
    const int blocks = (rows + LAYERNORM_ROUND_ROWS - 1) / LAYERNORM_ROUND_ROWS;
    /* The kernels' own OpenMP loops run nested here, so on one thread each. */
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int blk = 0; blk < blocks; blk++) {
        const int r0 = blk * LAYERNORM_ROUND_ROWS;
        const int n = rows - r0 < LAYERNORM_ROUND_ROWS ? rows - r0 : LAYERNORM_ROUND_ROWS;
        float *mine = s + (size_t)omp_get_thread_num() * LAYERNORM_ROUND_ROWS * dim;
        layernorm_forward_cpu(mine, (const float *)in + (size_t)r0 * in_row_stride, weight, bias, n,
                              dim, in_row_stride, eps);
        kernels->round_rows(out16 + (size_t)r0 * k2, mine, n, dim, dim);
    }
    return 0;
}

static int cpu_attention(struct backend *be, void *out, const void *qkv, int batch, int tokens,
                         int heads)
{
    const struct cpu_ctx *c = be->ctx;
    uint32_t *out16 = gemm_input_words(out);
    if (refuse_gemm_input(be, "attention (qkv)", qkv, NULL) ||
        (out16 && check_gemm_input(be, "attention", out, (long)batch * tokens, heads * 64)))
        return BACKEND_EINVAL;
    if (c->bf16) {
        const size_t n = c->bf16->attention_scratch_floats(tokens);
        float *s = n ? scratch(be, n) : NULL;
        if (n && !s)
            return BACKEND_ENOMEM;
        if (!out16) {
            c->bf16->attention(out, qkv, batch, tokens, heads, s, n);
        } else if (c->bf16->attention_to_bf16) {
            c->bf16->attention_to_bf16(out16, qkv, batch, tokens, heads, s, n);
        } else {
            const int rows = batch * tokens, cols = heads * 64;
            float *st = staging(be, (size_t)rows * cols);
            if (!st)
                return BACKEND_ENOMEM;
            c->bf16->attention(st, qkv, batch, tokens, heads, s, n);
            round_staged(be, out16, rows, cols);
        }
        return 0;
    }
    const enum cpu_isa isa = c->attention_isa;
    size_t floats = attention_scratch_floats_cpu(isa, tokens);
    float *s = scratch(be, floats);
    if (!s)
        return BACKEND_ENOMEM;
    attention_forward_cpu(isa, out, qkv, batch, tokens, heads, s, floats);
    return 0;
}

static int cpu_attention_probs(struct backend *be, void *probs, const void *qkv, int batch, int tokens,
                               int heads, int queries, int mean_heads)
{
    if (queries < 1 || queries > tokens)
        return backend_fail(be, BACKEND_EINVAL, "attention_probs: %d query rows of %d tokens", queries, tokens);
    if (refuse_gemm_input(be, "attention_probs", probs, qkv))
        return BACKEND_EINVAL;
    size_t floats = attention_probs_scratch_floats(tokens, queries, mean_heads);
    float *s = floats ? scratch(be, floats) : NULL;
    if (floats && !s)
        return backend_fail(be, BACKEND_ENOMEM, "attention_probs: out of memory for %zu floats", floats);
    attention_probs_cpu(probs, qkv, batch, tokens, heads, queries, mean_heads, s);
    return 0;
}

static int cpu_rope(struct backend *be, void *qkv, const void *table, int batch, int tokens, int heads,
                    int prefix)
{
    if (prefix < 0 || prefix > tokens)
        return backend_fail(be, BACKEND_EINVAL, "rope: prefix %d of %d tokens", prefix, tokens);
    if (refuse_gemm_input(be, "rope", qkv, table))
        return BACKEND_EINVAL;
    rope_forward_cpu(qkv, table, batch, tokens, heads, prefix);
    return 0;
}

static int cpu_layerscale_residual(struct backend *be, void *x, const void *y, const void *gamma,
                                   int rows, int dim)
{
    if (refuse_gemm_input(be, "layerscale_residual", x, y))
        return BACKEND_EINVAL;
    layerscale_residual_cpu(x, y, gamma, rows, dim);
    return 0;
}

static int cpu_swiglu(struct backend *be, void *out, const void *in, int rows, int hidden)
{
    uint32_t *out16 = gemm_input_words(out);
    if (refuse_gemm_input(be, "swiglu (input)", in, NULL) ||
        (out16 && check_gemm_input(be, "swiglu", out, rows, hidden)))
        return BACKEND_EINVAL;
    if (!out16) {
        swiglu_forward_cpu(out, in, rows, hidden);
        return 0;
    }
    float *s = staging(be, (size_t)rows * hidden);
    if (!s)
        return BACKEND_ENOMEM;
    swiglu_forward_cpu(s, in, rows, hidden);
    round_staged(be, out16, rows, hidden);
    return 0;
}

static int cpu_synchronize(struct backend *be)
{
    (void)be;
    return 0;
}

static size_t cpu_bytes_in_use(struct backend *be) { return ((struct cpu_ctx *)be->ctx)->bytes_in_use; }
static size_t cpu_alloc_count(struct backend *be) { return ((struct cpu_ctx *)be->ctx)->alloc_count; }

static void cpu_destroy(struct backend *be)
{
    struct cpu_ctx *c = be->ctx;
    cpu_release(be, c->scratch);
    cpu_release(be, c->rows16);
    cpu_release(be, c->staging);
    free(c);
    be->ctx = NULL;
}

static const struct backend_ops cpu_ops = {
    .name = "cpu",
    .destroy = cpu_destroy,
    .alloc = cpu_alloc,
    .release = cpu_release,
    .upload_weight = cpu_upload_weight,
    .upload = cpu_upload,
    .download = cpu_download,
    .patch_embed = cpu_patch_embed,
    .linear = cpu_linear,
    .layernorm = cpu_layernorm,
    .attention = cpu_attention,
    .layerscale_residual = cpu_layerscale_residual,
    .swiglu = cpu_swiglu,
    .synchronize = cpu_synchronize,
    .bytes_in_use = cpu_bytes_in_use,
    .alloc_count = cpu_alloc_count,
    .attention_probs = cpu_attention_probs,
    .rope = cpu_rope,
    .alloc_gemm_input = cpu_alloc_gemm_input,
};

static size_t bf16_attention_scratch(int tokens)
{
    return attention_scratch_floats_cpu(CPU_ISA_AVX512, tokens);
}

const struct cpu_bf16_kernels cpu_bf16_avx512 = {
    .name = "bf16-avx512", .round_rows = linear_bf16_round_rows, .linear = linear_bf16_forward,
    .attention_scratch_floats = bf16_attention_scratch, .attention = attention_bf16_forward,
    .linear_to_bf16 = linear_bf16_forward_to_bf16, .attention_to_bf16 = attention_bf16_forward_to_bf16};

/* Why this backend cannot run the bf16 kernels here, or NULL when it can: a knob narrowing the
 * kernels below AVX-512 (the AVX2 or portable path has no bf16 form), or a CPU without them. */
static const char *no_bf16_reason(const struct backend_options *o, enum cpu_isa gemm, enum cpu_isa attention,
                                  char *why, size_t len)
{
    const char *knob = NULL, *value = NULL;
    if (gemm != CPU_ISA_AVX512 && o && o->cpu_gemm && *o->cpu_gemm && strcmp(o->cpu_gemm, "auto"))
        knob = "STOPCAL_CPU_GEMM", value = o->cpu_gemm;
    else if (attention != CPU_ISA_AVX512 && o && o->cpu_attention && *o->cpu_attention &&
             strcmp(o->cpu_attention, "auto"))
        knob = "STOPCAL_CPU_ATTENTION", value = o->cpu_attention;
    if (knob) {
        snprintf(why, len, "%s=%.16s forces the %s kernels, which have no bf16 form", knob, value,
                 strcmp(value, "blas") == 0 ? "portable OpenBLAS" : "AVX2");
        return why;
    }
    if (!linear_bf16_supported()) {
        snprintf(why, len, "this CPU (or this build) has no AVX512_BF16");
        return why;
    }
    return NULL;
}

/* kernels: the bf16 kernels to force (tests), or NULL to resolve the precision from o. */
static int create(struct backend *be, const struct backend_options *o, const struct cpu_bf16_kernels *kernels,
                  char *err, size_t errlen)
{
    memset(be, 0, sizeof *be);
    enum cpu_isa gemm, attention;
    if (cpu_isa_choose(o ? o->cpu_gemm : NULL, "STOPCAL_CPU_GEMM", &gemm, err, errlen) ||
        cpu_isa_choose(o ? o->cpu_attention : NULL, "STOPCAL_CPU_ATTENTION", &attention, err, errlen))
        return -1;
    enum backend_precision precision = BACKEND_BF16;
    char note[sizeof be->note] = "";
    if (!kernels) {
        char why[160];
        const char *no_bf16 = no_bf16_reason(o, gemm, attention, why, sizeof why);
        const struct backend_precision_caps caps = {
            .fp32 = 1, .bf16 = !no_bf16, .why_no_bf16 = no_bf16,
            .bf16_faster = linear_bf16_faster_than_fp32(),
            .why_bf16_slower = "the bf16 kernels are slower than fp32 on this CPU (only AMD's cores run "
                               "vdpbf16ps at twice the flops of their fp32 multiply-adds)"};
        if (backend_precision_resolve(o, "cpu", &caps, &precision, note, sizeof note, err, errlen))
            return -1;
        kernels = precision == BACKEND_BF16 ? &cpu_bf16_avx512 : NULL;
    }
    struct cpu_ctx *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "cpu backend: out of memory");
        return -1;
    }
    c->gemm_isa = linear_packed_has_tile(gemm) ? gemm : CPU_ISA_NONE;
    c->attention_isa = attention_fused_has_kernel(attention) ? attention : CPU_ISA_NONE;
    c->bf16 = kernels;
    if (kernels)
        snprintf(c->kernels, sizeof c->kernels, "gemm %s, attention %s", kernels->name, kernels->name);
    else
        snprintf(c->kernels, sizeof c->kernels, "gemm %s, attention %s", cpu_isa_name(c->gemm_isa),
                 cpu_isa_name(c->attention_isa));
    const int threads = o ? o->threads : 0;
    threads_set_compute_threads(threads > 0 ? threads : threads_available_cpus());
    be->ops = &cpu_ops;
    be->ctx = c;
    be->precision = precision;
    be->gemm_inputs_apart = kernels != NULL;
    snprintf(be->note, sizeof be->note, "%s", note);
    return 0;
}

int backend_cpu_create(struct backend *be, const struct backend_options *o, char *err, size_t errlen)
{
    return create(be, o, NULL, err, errlen);
}

int backend_cpu_create_bf16_with(struct backend *be, const struct backend_options *o,
                                 const struct cpu_bf16_kernels *kernels, char *err, size_t errlen)
{
    return create(be, o, kernels, err, errlen);
}

int backend_cpu_isas(const struct backend *be, enum cpu_isa *gemm, enum cpu_isa *attention)
{
    if (be->ops != &cpu_ops)
        return -1;
    const struct cpu_ctx *c = be->ctx;
    *gemm = c->gemm_isa;
    *attention = c->attention_isa;
    return 0;
}

const char *backend_cpu_kernels(const struct backend *be)
{
    return be->ops == &cpu_ops ? ((const struct cpu_ctx *)be->ctx)->kernels : NULL;
}

void backend_destroy(struct backend *be)
{
    if (be->ops && be->ctx)
        be->ops->destroy(be);
    be->ops = NULL;
}
