/* The CPU backend: buffers are fp32 arrays, ops are the CPU kernels (OpenBLAS GEMMs or our packed
 * tiles, OpenMP for the rest). Scratch space grows to the largest shape seen during warm-up and is
 * then reused, so steady-state forward passes allocate nothing. The instruction sets are chosen
 * once, at creation, and kept here: on CPUs with AVX-512 or AVX2 the linear weights are packed at
 * upload for linear_packed.c (gemm "blas" keeps them raw for OpenBLAS instead), and attention runs
 * fused (attention_fused.c).
 *
 * The bf16 precision (CPUs with AVX512_BF16, chosen at creation): every matrix weight, the patch
 * embedding's and the head's included, is rounded to bf16 and packed once at upload
 * (linear_bf16.h); each GEMM rounds the fp32 activation rows it reads to bf16 into a scratch of its
 * own and accumulates in fp32, writing fp32; attention runs its bf16 form (bf16 Q·Kᵀ and P·V, an
 * fp32 softmax). LayerNorm, LayerScale + residual, SwiGLU and the softmax never see bf16. */
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
};

/* Every buffer carries its size in front so release can keep bytes_in_use honest, and, for a
 * packed linear weight, the (N, K) it was packed as. 64 bytes, so payloads are cache-line aligned
 * (the packed kernel's aligned loads need it). */
struct cpu_header {
    size_t bytes;
    int packed_n, packed_k; /* 0, 0: a plain row-major array */
    int bf16;               /* packed by linear_bf16_pack_weight (bf16 pairs), else fp32 panels */
    unsigned char pad[44];
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

static int cpu_upload(struct backend *be, void *dst, const float *host, size_t n)
{
    (void)be;
    memcpy(dst, host, n * sizeof(float));
    return 0;
}

static int cpu_download(struct backend *be, float *host, const void *src, size_t n)
{
    (void)be;
    memcpy(host, src, n * sizeof(float));
    return 0;
}

static float *scratch(struct backend *be, size_t floats)
{
    struct cpu_ctx *c = be->ctx;
    if (floats <= c->scratch_floats)
        return c->scratch;
    cpu_release(be, c->scratch);
    c->scratch = cpu_alloc(be, floats);
    c->scratch_floats = c->scratch ? floats : 0;
    return c->scratch;
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
    if (w->bf16) {
        if (w->packed_n != n || w->packed_k != k)
            return backend_fail(be, BACKEND_EINVAL, "linear: weight packed as (%d, %d), used as (%d, %d)",
                             w->packed_n, w->packed_k, n, k);
        const uint32_t *rows = round_rows(be, in, m, k, k);
        if (!rows)
            return BACKEND_ENOMEM;
        ((const struct cpu_ctx *)be->ctx)->bf16->linear(out, n, rows, weight, bias, m, n, k, epilogue);
        return 0;
    }
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

static int cpu_layernorm(struct backend *be, void *out, const void *in, const void *weight,
                         const void *bias, int rows, int dim, int in_row_stride, float eps)
{
    (void)be;
    layernorm_forward_cpu(out, in, weight, bias, rows, dim, in_row_stride, eps);
    return 0;
}

static int cpu_attention(struct backend *be, void *out, const void *qkv, int batch, int tokens,
                         int heads)
{
    const struct cpu_ctx *c = be->ctx;
    if (c->bf16) {
        const size_t n = c->bf16->attention_scratch_floats(tokens);
        float *s = n ? scratch(be, n) : NULL;
        if (n && !s)
            return BACKEND_ENOMEM;
        c->bf16->attention(out, qkv, batch, tokens, heads, s, n);
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
    rope_forward_cpu(qkv, table, batch, tokens, heads, prefix);
    return 0;
}

static int cpu_layerscale_residual(struct backend *be, void *x, const void *y, const void *gamma,
                                   int rows, int dim)
{
    (void)be;
    layerscale_residual_cpu(x, y, gamma, rows, dim);
    return 0;
}

static int cpu_swiglu(struct backend *be, void *out, const void *in, int rows, int hidden)
{
    (void)be;
    swiglu_forward_cpu(out, in, rows, hidden);
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
};

static size_t bf16_attention_scratch(int tokens)
{
    return attention_scratch_floats_cpu(CPU_ISA_AVX512, tokens);
}

const struct cpu_bf16_kernels cpu_bf16_avx512 = {"bf16-avx512", linear_bf16_round_rows, linear_bf16_forward,
                                                 bf16_attention_scratch, attention_bf16_forward};

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
    if (!kernels) {
        char why[160];
        const char *no_bf16 = no_bf16_reason(o, gemm, attention, why, sizeof why);
        if (backend_precision_resolve(o, "cpu", 1, "", !no_bf16, no_bf16, &precision, err, errlen))
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
