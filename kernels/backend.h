/* The one seam between the model and the hardware: a struct of function pointers plus a context.
 * vit.c drives the forward pass through these ops only; the CPU backend is always there, the CUDA
 * backend registers itself when a device answers. Buffers are opaque handles owned by the backend:
 * on the CPU they are plain float arrays, on a GPU device memory in whatever precision it chooses.
 * Every op returns 0 on success or a negative BACKEND_E* code with a message in be->error
  * (backend_error()). */
#ifndef STOPCAL_BACKEND_H
#define STOPCAL_BACKEND_H

#include "error_message.h"

#include <stddef.h>

enum backend_status {
    BACKEND_OK = 0,
    BACKEND_EINVAL = -1,  /* bad arguments: a caller bug or bad input shapes */
    BACKEND_ENOMEM = -2,  /* allocation failed: recoverable, the caller may retry smaller */
    BACKEND_EDEVICE = -3, /* sticky device error: the backend is unusable, restart the process */
};

enum weight_kind {
    WEIGHT_MATRIX, /* the weight of the linear op, (N, K) row-major; the backend may store it in its
                    * own layout (CPU: packed panels) or precision (GPU: bf16) */
    WEIGHT_PATCH,  /* the patch-embedding weight (D, 3·P·P) row-major; may be reduced precision */
    WEIGHT_VECTOR, /* biases, norms, LayerScale, tokens, positional tables: kept in fp32 */
};

enum linear_epilogue {
    EPILOGUE_NONE,
    EPILOGUE_GELU, /* exact-erf GELU after the bias */
    EPILOGUE_RELU,
};

struct backend;

struct backend_ops {
    const char *name;
    void (*destroy)(struct backend *be);

    /* Memory. alloc returns NULL on failure (message set). upload copies n fp32 values from the host;
     * upload_weight copies a rows × cols weight (a vector: rows = 1) and keeps it as `kind` says. */
    void *(*alloc)(struct backend *be, size_t n_elements);
    void (*release)(struct backend *be, void *buf);
    void *(*upload_weight)(struct backend *be, const float *host, size_t rows, size_t cols,
                           enum weight_kind kind);
    int (*upload)(struct backend *be, void *dst, const float *host, size_t n_elements);
    int (*download)(struct backend *be, float *host, const void *src, size_t n_elements);

    /* x (B, T, D) ← [CLS + pos[0], registers, patches·Wᵀ + bias + pos[1..]] where T = 1 + R + g²,
     * pixels (B, 3, S, S), weight (D, 3·P·P), pos (1 + g², D) already resized to the grid g = S/P;
     * pos NULL: no positional term (DINOv3, whose positions are RoPE in attention). */
    int (*patch_embed)(struct backend *be, void *x, const void *pixels, const void *weight, const void *bias,
                       const void *cls_token, const void *registers, const void *pos, int batch,
                       int image_size, int patch_size, int dim, int num_registers);
    /* out (M, N) = epilogue(in (M, K) · W (N, K)ᵀ + bias (N)); bias may be NULL. */
    int (*linear)(struct backend *be, void *out, const void *in, const void *weight, const void *bias, int m,
                  int n, int k, enum linear_epilogue epilogue);
    /* out (rows, D) dense ← LayerNorm of rows of `in` spaced in_row_stride elements apart. */
    int (*layernorm)(struct backend *be, void *out, const void *in, const void *weight, const void *bias,
                     int rows, int dim, int in_row_stride, float eps);
    /* out (B, T, H·64) ← softmax(q·kᵀ/√64)·v per head, from qkv (B, T, 3·H·64). */
    int (*attention)(struct backend *be, void *out, const void *qkv, int batch, int tokens, int heads);
    /* x (rows, D) += gamma (D) ⊙ y (rows, D) */
    int (*layerscale_residual)(struct backend *be, void *x, const void *y, const void *gamma, int rows, int dim);
    /* out (rows, F) ← silu(in[:, :F]) ⊙ in[:, F:] with in (rows, 2F) */
    int (*swiglu)(struct backend *be, void *out, const void *in, int rows, int hidden);
    /* Wait for queued work; returns the first error it met. */
    int (*synchronize)(struct backend *be);

    /* Bytes currently allocated by this backend, and how many allocations it has made (tests
     * use the count to prove the forward pass allocates nothing after warm-up). */
    size_t (*bytes_in_use)(struct backend *be);
    size_t (*alloc_count)(struct backend *be);

    /* Optional, NULL where the backend has no graphs (CPU): record a stretch of ops once per
     * (owner, key) and replay it. graph_begin returns 1 when it launched the recorded stretch (the
     * caller skips the ops), 0 when the caller should issue the ops up to graph_end (they may be
     * recorded, not run, until then), or a negative BACKEND_E* code. graph_end(status) closes the
     * stretch: status ≠ 0 discards the recording, 0 launches it; returns 0 or BACKEND_E*.
     * graph_forget drops owner's recordings (its buffers moved or are gone). */
    int (*graph_begin)(struct backend *be, const void *owner, int key);
    int (*graph_end)(struct backend *be, const void *owner, int key, int status);
    void (*graph_forget)(struct backend *be, const void *owner);

    /* The attention probabilities themselves, for explain passes only (never in the ordinary
     * forward pass, which keeps them inside the fused attention): for each image, the softmax rows
     * softmax(q_i·kᵀ/√64) of the first `queries` tokens i (1: the CLS token's row; T: the whole
     * matrix), from qkv (B, T, 3·H·64) as the attention op reads it. mean_heads = 0: probs
     * (B, H, queries, T) fp32; mean_heads = 1: probs (B, queries, T), the mean over the heads. */
    int (*attention_probs)(struct backend *be, void *probs, const void *qkv, int batch, int tokens, int heads,
                           int queries, int mean_heads);

    /* Rotary position embedding (DINOv3), in place on the q and k parts of qkv (B, T, 3·H·64) for
     * tokens [prefix, T) (the prefix — CLS and registers — is untouched): for each head's 64-vector
     * u of q and of k, with c = table[t − prefix][0, 32) and s = table[t − prefix][32, 64),
     * u'[j] = u[j]·c[j] − u[j+32]·s[j] and u'[j+32] = u[j+32]·c[j] + u[j]·s[j] (j < 32), i.e.
     * u·cos + rotate_half(u)·sin with the angles tiled twice. table (T − prefix, 64) fp32, a
     * WEIGHT_VECTOR upload (kernels/rope_table.c). v is untouched. */
    int (*rope)(struct backend *be, void *qkv, const void *table, int batch, int tokens, int heads, int prefix);

    /* Optional, NULL where GEMMs read their fp32 inputs as stored (and the engine then shares
     * activation buffers as it always did). A buffer of rows × cols activations that only linear
     * reads, as its `in` (k = cols): linear, layernorm, attention and swiglu may write it (n, dim,
     * H·64 or hidden = cols), and download returns its values as fp32; other ops refuse it. A
     * backend whose GEMMs read their own operand form keeps it in that form (the CPU at bf16: rows
     * of bf16 pairs, each value rounded as it is written, exactly as the reading GEMM would round
     * it), so the fp32 activation is never written out and read back. be->gemm_inputs_apart says
     * whether it differs from alloc. */
    void *(*alloc_gemm_input)(struct backend *be, size_t rows, size_t cols);
};

/* The arithmetic a backend computes the forward pass in, chosen once when it is created. FP32:
 * fp32 everywhere (the reference's maths; parity is promised for it). BF16: the GEMMs (linear
 * layers, patch embedding, head, Q·Kᵀ and P·V) read bf16 operands and accumulate in fp32; the
 * residual stream, LayerNorm and softmax stay fp32. */
enum backend_precision { BACKEND_FP32, BACKEND_BF16 };

static inline const char *backend_precision_name(enum backend_precision p)
{
    return p == BACKEND_BF16 ? "bf16" : "fp32";
}

struct backend {
    const struct backend_ops *ops;
    void *ctx;
    enum backend_precision precision; /* what this backend computes in (set by its constructor) */
    /* 1: ops->alloc_gemm_input buffers hold a form of their own (not the fp32 of alloc), so the
     * engine gives GEMM inputs buffers apart from the fp32 activations; 0: it need not */
    int gemm_inputs_apart;
    /* One line the user should hear about a choice the constructor made on its own (auto passing
     * over bf16 where it would be slower), else "": stopcald logs it, stopcal-infer prints it. */
    char note[320];
    char error[256];
};

/* Everything a backend decides once, when it is created, and then keeps in its context: no op
 * reads the environment or re-checks the CPU on its own. */
struct backend_options {
    int threads;               /* CPU compute threads; ≤ 0: the CPUs this process may use */
    const char *cpu_gemm;      /* linear layers: auto|avx512|avx2|blas (NULL = auto) */
    const char *cpu_attention; /* attention: the same choices */
    int cuda_graphs;           /* 1: replay a CUDA graph per batch size; 0: issue every op */
    /* fp32|bf16|auto as asked for (--precision, STOPCAL_PRECISION); NULL or "": not asked, so the
     * model's default below, else the backend's own (CPU fp32, CUDA bf16). auto: bf16 where the
     * backend can compute it (the CPU: AVX512_BF16 and no ISA knob narrowing the kernels below
     * AVX-512), it is the faster (the CPU: linear_bf16_faster_than_fp32) and the model allows it,
     * else fp32. */
    const char *precision;
    /* The model file's runtime.precision (models/FORMAT.md, format_version 3), NULL: none. Used
     * when precision is not asked for; a model saying "fp32" also keeps auto at fp32. */
    const char *model_precision;
};

/* Defaults (threads 0, auto, graphs on, precision not asked) overridden by the environment, read
 * here once: STOPCAL_CPU_GEMM, STOPCAL_CPU_ATTENTION ("blas" runs the portable OpenBLAS forms,
 * "avx2" the AVX2 kernels on an AVX-512 CPU: for tests, benchmarks and bisecting a kernel),
 * STOPCAL_CUDA_GRAPHS=0, STOPCAL_PRECISION (fp32|bf16|auto). */
void backend_options_from_env(struct backend_options *o);

/* The CPU backend (OpenBLAS + OpenMP, packed AVX-512/AVX2 kernels where the CPU has them; the bf16
 * precision on CPUs with AVX512_BF16). o may be NULL (the defaults, without the environment).
 * Returns 0, or -1 with a message in err (a knob naming an instruction set this CPU lacks, bf16
 * asked for where it cannot run, out of memory). */
int backend_cpu_create(struct backend *be, const struct backend_options *o, char *err, size_t errlen);

/* What the CPU backend chose, for logs and /v1/models: e.g. "gemm avx512, attention avx512",
 * "gemm bf16-avx512, attention bf16-avx512".
 * NULL for another backend. */
const char *backend_cpu_kernels(const struct backend *be);

static inline const char *backend_error(const struct backend *be) { return be->error; }
/* Record a message in be->error through the one error formatter (models/error_message.h) and return code:
 * `return backend_fail(be, BACKEND_EINVAL, "linear: %d rows", m);`. */
#define backend_fail(be, code, ...) error_set((be)->error, sizeof (be)->error, (code), __VA_ARGS__)
void backend_destroy(struct backend *be);

#endif
