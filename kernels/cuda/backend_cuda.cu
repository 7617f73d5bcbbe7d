/* The CUDA backend behind backend_ops (backend.h). Buffers are handles that remember what their
 * last writer stored: the residual stream stays fp32, everything a GEMM or attention reads is
 * bf16, and results narrower than 8 columns (the logit) stay fp32. LayerScale + residual is held
 * back one op so the LayerNorm that always follows it can fuse the add. Each forward pass is
 * recorded once per (model, batch size) as a CUDA graph and replayed; weights are uploaded once
 * through pinned staging buffers; nothing is allocated after warm-up. Compiled for the GPU by nvcc
 * and, as C++, against the host emulation (backend_cuda_emu_create), where CI runs it. */
#include "backend_cuda.h"
#include "backend_precision.h"
#include "cuda_common.cuh"
#include "cuda_ops.h"

#ifndef STOPCAL_CUDA_EMULATION
#include <cublas_v2.h>
#endif

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

namespace {

#ifdef STOPCAL_CUDA_EMULATION
const char BACKEND_NAME[] = "cuda-emu";
#else
const char BACKEND_NAME[] = "cuda";
#endif

const size_t STAGING_HALF_BYTES = (size_t)8 << 20; /* two pinned halves, used in turn */
const size_t BLAS_WORKSPACE_BYTES = (size_t)32 << 20;
const int NARROW_OUTPUT_COLS = 8; /* linear outputs narrower than this stay fp32 */

struct cbuf {
    void *dev;
    size_t bytes; /* allocated */
    int type;     /* CUDA_DTYPE_*: what the last writer stored */
};

struct graph_entry {
    const void *owner;
    int key;
    cudaGraphExec_t exec;
};

struct cuda_ctx {
    int device;
    cudaStream_t stream;
    cublasHandle_t blas;
    void *blas_workspace;
    unsigned char *staging[2]; /* pinned host memory */
    cudaEvent_t staging_free[2];
    int staging_next;
    size_t bytes_in_use, alloc_count;
    int dead; /* a sticky error happened: every op fails from now on */
    char dead_msg[200];
    struct {
        int active;
        cbuf *x;
        const cbuf *y, *gamma;
        int rows, dim;
    } pending; /* a LayerScale + residual not yet launched */
    int graphs_enabled, capturing;
    graph_entry *graphs;
    int n_graphs, cap_graphs;
};

cuda_ctx *ctx_of(struct backend *be) { return static_cast<cuda_ctx *>(be->ctx); }
cbuf *buf(void *p) { return static_cast<cbuf *>(p); }
const cbuf *buf(const void *p) { return static_cast<const cbuf *>(p); }
void *dev(const void *p) { return p ? buf(p)->dev : nullptr; }
size_t elem_bytes(int type) { return type == CUDA_DTYPE_BF16 ? 2 : 4; }

bool is_sticky(cudaError_t e)
{
    switch (e) {
    case cudaErrorIllegalAddress:
    case cudaErrorLaunchFailure:
#ifndef STOPCAL_CUDA_EMULATION
    case cudaErrorLaunchTimeout:
    case cudaErrorHardwareStackError:
    case cudaErrorIllegalInstruction:
    case cudaErrorMisalignedAddress:
    case cudaErrorInvalidAddressSpace:
    case cudaErrorInvalidPc:
    case cudaErrorAssert:
    case cudaErrorECCUncorrectable:
    case cudaErrorContextIsDestroyed:
#endif
    case cudaErrorUnknown:
        return true;
    default:
        return false;
    }
}

int dead_error(struct backend *be)
{
    return backend_fail(be, BACKEND_EDEVICE, "%s: device unusable after an earlier sticky error (%s)", BACKEND_NAME,
                     ctx_of(be)->dead_msg);
}

/* Turn a failed CUDA call into a backend code: allocation failures are recoverable; a sticky error
 * (known as such, or still reported by a synchronisation after clearing) kills the backend. */
int cuda_fail(struct backend *be, cudaError_t e, const char *what)
{
    cuda_ctx *c = ctx_of(be);
    cudaGetLastError(); /* clears a non-sticky error */
    if (e == cudaErrorMemoryAllocation)
        return backend_fail(be, BACKEND_ENOMEM, "%s: out of device memory in %s", BACKEND_NAME, what);
    bool sticky = is_sticky(e);
    if (!sticky && !c->capturing && cudaDeviceSynchronize() != cudaSuccess)
        sticky = true;
    if (sticky) {
        c->dead = 1;
        snprintf(c->dead_msg, sizeof c->dead_msg, "%s in %s: %s", cudaGetErrorName(e), what, cudaGetErrorString(e));
        return backend_fail(be, BACKEND_EDEVICE, "%s: sticky device error %s; the device is unusable until the "
                         "process restarts", BACKEND_NAME, c->dead_msg);
    }
    return backend_fail(be, BACKEND_EINVAL, "%s: %s failed: %s (%s)", BACKEND_NAME, what, cudaGetErrorString(e),
                     cudaGetErrorName(e));
}

/* The result of a cuda_ops.h call. */
int op_result(struct backend *be, int r, const char *what)
{
    if (r == 0)
        return 0;
    if (r >= CUDA_OPS_EBLAS) {
        const int st = r - CUDA_OPS_EBLAS;
        if (st == CUBLAS_STATUS_ALLOC_FAILED)
            return backend_fail(be, BACKEND_ENOMEM, "%s: cuBLAS out of memory in %s", BACKEND_NAME, what);
        if (st == CUBLAS_STATUS_EXECUTION_FAILED)
            return cuda_fail(be, cudaErrorLaunchFailure, what);
        return backend_fail(be, BACKEND_EINVAL, "%s: cuBLAS status %d in %s", BACKEND_NAME, st, what);
    }
    return cuda_fail(be, (cudaError_t)r, what);
}

#define CU(be, call)                                        \
    do {                                                    \
        cudaError_t e_ = (call);                            \
        if (e_ != cudaSuccess)                              \
            return cuda_fail((be), e_, #call);              \
    } while (0)

int need_type(struct backend *be, const void *b, int type, const char *op, const char *what)
{
    if (!b)
        return backend_fail(be, BACKEND_EINVAL, "%s %s: %s is missing", BACKEND_NAME, op, what);
    if (buf(b)->type != type)
        return backend_fail(be, BACKEND_EINVAL, "%s %s: %s must hold %s (it holds %s)", BACKEND_NAME, op, what,
                         type == CUDA_DTYPE_BF16 ? "bf16" : "fp32", buf(b)->type == CUDA_DTYPE_BF16 ? "bf16" : "fp32");
    return 0;
}

int need_room(struct backend *be, const void *b, size_t n, int type, const char *op)
{
    if (n * elem_bytes(type) > buf(b)->bytes)
        return backend_fail(be, BACKEND_EINVAL, "%s %s: output holds %zu bytes, needs %zu", BACKEND_NAME, op,
                         buf(b)->bytes, n * elem_bytes(type));
    return 0;
}

int flush_pending(struct backend *be)
{
    cuda_ctx *c = ctx_of(be);
    if (!c->pending.active)
        return 0;
    c->pending.active = 0;
    return op_result(be,
                     CUDA_OP(layerscale_residual)(static_cast<float *>(c->pending.x->dev), c->pending.y->dev,
                                                  c->pending.y->type, static_cast<const float *>(c->pending.gamma->dev),
                                                  c->pending.rows, c->pending.dim, c->stream),
                     "layerscale_residual");
}

/* Start of every op: refuse on a dead device, launch the held-back residual add. */
int begin_op(struct backend *be)
{
    if (ctx_of(be)->dead)
        return dead_error(be);
    return flush_pending(be);
}

void *alloc_bytes(struct backend *be, size_t bytes, int type)
{
    cuda_ctx *c = ctx_of(be);
    if (c->dead) {
        dead_error(be);
        return nullptr;
    }
    cbuf *b = static_cast<cbuf *>(calloc(1, sizeof *b));
    if (!b) {
        backend_fail(be, BACKEND_ENOMEM, "%s: host out of memory", BACKEND_NAME);
        return nullptr;
    }
    if (bytes == 0)
        bytes = 4;
    cudaError_t e = cudaMalloc(&b->dev, bytes);
    if (e != cudaSuccess) {
        free(b);
        char what[64];
        snprintf(what, sizeof what, "cudaMalloc(%zu bytes)", bytes);
        cuda_fail(be, e, what);
        return nullptr;
    }
    b->bytes = bytes;
    b->type = type;
    c->bytes_in_use += bytes;
    c->alloc_count++;
    return b;
}

/* Host fp32 → device (fp32 or bf16) through the two pinned halves: converting into one half
 * overlaps the DMA out of the other. */
int stage_to_device(struct backend *be, void *dst, const float *host, size_t n, int type)
{
    cuda_ctx *c = ctx_of(be);
    const size_t eb = elem_bytes(type), per_chunk = STAGING_HALF_BYTES / eb;
    for (size_t off = 0; off < n; off += per_chunk) {
        const size_t cnt = n - off < per_chunk ? n - off : per_chunk;
        const int h = c->staging_next;
        c->staging_next ^= 1;
        CU(be, cudaEventSynchronize(c->staging_free[h]));
        if (type == CUDA_DTYPE_BF16) {
            uint16_t *s = reinterpret_cast<uint16_t *>(c->staging[h]);
            for (size_t i = 0; i < cnt; i++)
                s[i] = bf16_from_float(host[off + i]);
        } else {
            memcpy(c->staging[h], host + off, cnt * 4);
        }
        CU(be, cudaMemcpyAsync(static_cast<unsigned char *>(dst) + off * eb, c->staging[h], cnt * eb,
                               cudaMemcpyHostToDevice, c->stream));
        CU(be, cudaEventRecord(c->staging_free[h], c->stream));
    }
    return 0;
}

/* ---- backend_ops ---- */

void *cu_alloc(struct backend *be, size_t n) { return alloc_bytes(be, n * 4, CUDA_DTYPE_F32); }

void cu_release(struct backend *be, void *p)
{
    if (!p)
        return;
    cuda_ctx *c = ctx_of(be);
    if (!c->dead && !c->capturing)
        flush_pending(be); /* it may read this buffer */
    if (c->pending.active && (c->pending.x == p || c->pending.y == p || c->pending.gamma == p))
        c->pending.active = 0;
    cbuf *b = buf(p);
    cudaFree(b->dev);
    c->bytes_in_use -= b->bytes;
    free(b);
}

void *cu_upload_weight(struct backend *be, const float *host, size_t rows, size_t cols,
                       enum weight_kind kind)
{
    const size_t n = rows * cols;
    const int type = kind == WEIGHT_VECTOR ? CUDA_DTYPE_F32 : CUDA_DTYPE_BF16;
    void *b = alloc_bytes(be, n * elem_bytes(type), type);
    if (!b)
        return nullptr;
    int rc = stage_to_device(be, buf(b)->dev, host, n, type);
    if (!rc) {
        cudaError_t e = cudaStreamSynchronize(ctx_of(be)->stream);
        if (e != cudaSuccess)
            rc = cuda_fail(be, e, "uploading a weight");
    }
    if (rc) {
        cu_release(be, b);
        return nullptr;
    }
    return b;
}

int cu_upload(struct backend *be, void *dst, const float *host, size_t n)
{
    int rc = begin_op(be);
    if (rc)
        return rc;
    if ((rc = need_room(be, dst, n, CUDA_DTYPE_F32, "upload")))
        return rc;
    buf(dst)->type = CUDA_DTYPE_F32;
    return stage_to_device(be, buf(dst)->dev, host, n, CUDA_DTYPE_F32);
}

int cu_download(struct backend *be, float *host, const void *src, size_t n)
{
    int rc = begin_op(be);
    if (rc)
        return rc;
    cuda_ctx *c = ctx_of(be);
    if (c->capturing)
        return backend_fail(be, BACKEND_EINVAL, "%s: download inside a graph recording", BACKEND_NAME);
    const int type = buf(src)->type;
    const size_t eb = elem_bytes(type), per_chunk = STAGING_HALF_BYTES / eb;
    if (n * eb > buf(src)->bytes)
        return backend_fail(be, BACKEND_EINVAL, "%s download: %zu values exceed the buffer", BACKEND_NAME, n);
    for (size_t off = 0; off < n; off += per_chunk) {
        const size_t cnt = n - off < per_chunk ? n - off : per_chunk;
        const int h = c->staging_next;
        CU(be, cudaEventSynchronize(c->staging_free[h]));
        CU(be, cudaMemcpyAsync(c->staging[h], static_cast<const unsigned char *>(buf(src)->dev) + off * eb,
                               cnt * eb, cudaMemcpyDeviceToHost, c->stream));
        CU(be, cudaStreamSynchronize(c->stream));
        if (type == CUDA_DTYPE_BF16) {
            const uint16_t *s = reinterpret_cast<const uint16_t *>(c->staging[h]);
            for (size_t i = 0; i < cnt; i++)
                host[off + i] = bf16_to_float(s[i]);
        } else {
            memcpy(host + off, c->staging[h], cnt * 4);
        }
    }
    return 0;
}

int cu_patch_embed(struct backend *be, void *x, const void *pixels, const void *weight, const void *bias,
                   const void *cls_token, const void *registers, const void *pos, int batch, int image_size,
                   int patch_size, int dim, int num_registers)
{
    int rc = begin_op(be);
    if (rc)
        return rc;
    if (patch_size <= 0 || image_size % patch_size)
        return backend_fail(be, BACKEND_EINVAL, "image size %d is not a multiple of the patch size %d", image_size,
                         patch_size);
    const int g = image_size / patch_size;
    const size_t T = (size_t)(1 + num_registers + g * g);
    if ((rc = need_type(be, pixels, CUDA_DTYPE_F32, "patch_embed", "pixels")) ||
        (rc = need_type(be, weight, CUDA_DTYPE_BF16, "patch_embed", "weight")) ||
        (rc = need_room(be, x, (size_t)batch * T * dim, CUDA_DTYPE_F32, "patch_embed")))
        return rc;
    cuda_ctx *c = ctx_of(be);
    buf(x)->type = CUDA_DTYPE_F32;
    return op_result(be,
                     CUDA_OP(patch_embed)(static_cast<float *>(dev(x)), static_cast<const float *>(dev(pixels)),
                                          static_cast<const uint16_t *>(dev(weight)),
                                          static_cast<const float *>(dev(bias)),
                                          static_cast<const float *>(dev(cls_token)),
                                          static_cast<const float *>(dev(registers)),
                                          static_cast<const float *>(dev(pos)), batch, image_size, patch_size, dim,
                                          num_registers, c->stream),
                     "patch_embed");
}

int cu_linear(struct backend *be, void *out, const void *in, const void *weight, const void *bias, int m, int n,
              int k, enum linear_epilogue epilogue)
{
    int rc = begin_op(be);
    if (rc)
        return rc;
    const int out_type = n < NARROW_OUTPUT_COLS ? CUDA_DTYPE_F32 : CUDA_DTYPE_BF16;
    if ((rc = need_type(be, in, CUDA_DTYPE_BF16, "linear", "input")) ||
        (rc = need_type(be, weight, CUDA_DTYPE_BF16, "linear", "weight")) ||
        (rc = need_room(be, out, (size_t)m * n, out_type, "linear")))
        return rc;
    cuda_ctx *c = ctx_of(be);
    buf(out)->type = out_type;
    return op_result(be,
                     CUDA_OP(linear)(c->blas, dev(out), out_type, static_cast<const uint16_t *>(dev(in)),
                                     static_cast<const uint16_t *>(dev(weight)), static_cast<const float *>(dev(bias)),
                                     m, n, k, (int)epilogue, c->stream),
                     "linear");
}

int cu_layernorm(struct backend *be, void *out, const void *in, const void *weight, const void *bias, int rows,
                 int dim, int in_row_stride, float eps)
{
    cuda_ctx *c = ctx_of(be);
    if (c->dead)
        return dead_error(be);
    int rc;
    if ((rc = need_room(be, out, (size_t)rows * dim, CUDA_DTYPE_BF16, "layernorm")))
        return rc;
    /* The LayerNorm right after a residual add of the same rows: one pass instead of two. (A bf16
     * output may overwrite the bf16 y it reads, row by row in the same lanes; an fp32 y may not.) */
    if (c->pending.active && c->pending.x == in && c->pending.rows == rows && c->pending.dim == dim &&
        in_row_stride == dim && (c->pending.y->type == CUDA_DTYPE_BF16 || c->pending.y != out)) {
        c->pending.active = 0;
        buf(out)->type = CUDA_DTYPE_BF16;
        return op_result(be,
                         CUDA_OP(residual_layernorm)(static_cast<float *>(c->pending.x->dev), c->pending.y->dev,
                                                     c->pending.y->type,
                                                     static_cast<const float *>(c->pending.gamma->dev),
                                                     static_cast<uint16_t *>(dev(out)),
                                                     static_cast<const float *>(dev(weight)),
                                                     static_cast<const float *>(dev(bias)), rows, dim, eps, c->stream),
                         "residual_layernorm");
    }
    if ((rc = flush_pending(be)) || (rc = need_type(be, in, CUDA_DTYPE_F32, "layernorm", "input")))
        return rc;
    if (in == out)
        return backend_fail(be, BACKEND_EINVAL, "%s layernorm: output must not alias the input", BACKEND_NAME);
    buf(out)->type = CUDA_DTYPE_BF16;
    return op_result(be,
                     CUDA_OP(layernorm)(static_cast<uint16_t *>(dev(out)), static_cast<const float *>(dev(in)),
                                        static_cast<const float *>(dev(weight)), static_cast<const float *>(dev(bias)),
                                        rows, dim, in_row_stride, eps, c->stream),
                     "layernorm");
}

int cu_attention(struct backend *be, void *out, const void *qkv, int batch, int tokens, int heads)
{
    int rc = begin_op(be);
    if (rc)
        return rc;
    if ((rc = need_type(be, qkv, CUDA_DTYPE_BF16, "attention", "qkv")) ||
        (rc = need_room(be, out, (size_t)batch * tokens * heads * 64, CUDA_DTYPE_BF16, "attention")))
        return rc;
    cuda_ctx *c = ctx_of(be);
    buf(out)->type = CUDA_DTYPE_BF16;
    return op_result(be,
                     CUDA_OP(attention)(static_cast<uint16_t *>(dev(out)), static_cast<const uint16_t *>(dev(qkv)),
                                        batch, tokens, heads, c->stream),
                     "attention");
}

int cu_attention_probs(struct backend *be, void *probs, const void *qkv, int batch, int tokens, int heads,
                       int queries, int mean_heads)
{
    int rc = begin_op(be);
    if (rc)
        return rc;
    if (queries < 1 || queries > tokens)
        return backend_fail(be, BACKEND_EINVAL, "%s attention_probs: %d query rows of %d tokens", BACKEND_NAME,
                         queries, tokens);
    const size_t n = (size_t)batch * (mean_heads ? 1 : heads) * queries * tokens;
    if ((rc = need_type(be, qkv, CUDA_DTYPE_BF16, "attention_probs", "qkv")) ||
        (rc = need_room(be, probs, n, CUDA_DTYPE_F32, "attention_probs")))
        return rc;
    cuda_ctx *c = ctx_of(be);
    buf(probs)->type = CUDA_DTYPE_F32;
    return op_result(be,
                     CUDA_OP(attention_probs)(static_cast<float *>(dev(probs)), static_cast<const uint16_t *>(dev(qkv)),
                                              batch, tokens, heads, queries, mean_heads, c->stream),
                     "attention_probs");
}

int cu_rope(struct backend *be, void *qkv, const void *table, int batch, int tokens, int heads, int prefix)
{
    int rc = begin_op(be);
    if (rc)
        return rc;
    if (prefix < 0 || prefix > tokens)
        return backend_fail(be, BACKEND_EINVAL, "%s rope: prefix %d of %d tokens", BACKEND_NAME, prefix, tokens);
    if ((rc = need_type(be, qkv, CUDA_DTYPE_BF16, "rope", "qkv")) ||
        (rc = need_type(be, table, CUDA_DTYPE_F32, "rope", "table")))
        return rc;
    cuda_ctx *c = ctx_of(be);
    return op_result(be,
                     CUDA_OP(rope)(static_cast<uint16_t *>(dev(qkv)), static_cast<const float *>(dev(table)), batch,
                                   tokens, heads, prefix, c->stream),
                     "rope");
}

int cu_layerscale_residual(struct backend *be, void *x, const void *y, const void *gamma, int rows, int dim)
{
    int rc = begin_op(be);
    if (rc)
        return rc;
    if ((rc = need_type(be, x, CUDA_DTYPE_F32, "layerscale_residual", "x")) ||
        (rc = need_type(be, gamma, CUDA_DTYPE_F32, "layerscale_residual", "gamma")))
        return rc;
    cuda_ctx *c = ctx_of(be);
    c->pending.active = 1;
    c->pending.x = buf(x);
    c->pending.y = buf(y);
    c->pending.gamma = buf(gamma);
    c->pending.rows = rows;
    c->pending.dim = dim;
    return 0;
}

int cu_swiglu(struct backend *be, void *out, const void *in, int rows, int hidden)
{
    int rc = begin_op(be);
    if (rc)
        return rc;
    if ((rc = need_type(be, in, CUDA_DTYPE_BF16, "swiglu", "input")) ||
        (rc = need_room(be, out, (size_t)rows * hidden, CUDA_DTYPE_BF16, "swiglu")))
        return rc;
    cuda_ctx *c = ctx_of(be);
    buf(out)->type = CUDA_DTYPE_BF16;
    return op_result(be,
                     CUDA_OP(swiglu)(static_cast<uint16_t *>(dev(out)), static_cast<const uint16_t *>(dev(in)), rows,
                                     hidden, c->stream),
                     "swiglu");
}

int cu_synchronize(struct backend *be)
{
    int rc = begin_op(be);
    if (rc)
        return rc;
    CU(be, cudaStreamSynchronize(ctx_of(be)->stream));
    return 0;
}

size_t cu_bytes_in_use(struct backend *be) { return ctx_of(be)->bytes_in_use; }
size_t cu_alloc_count(struct backend *be) { return ctx_of(be)->alloc_count; }

graph_entry *find_graph(cuda_ctx *c, const void *owner, int key)
{
    for (int i = 0; i < c->n_graphs; i++)
        if (c->graphs[i].owner == owner && c->graphs[i].key == key)
            return &c->graphs[i];
    return nullptr;
}

int cu_graph_begin(struct backend *be, const void *owner, int key)
{
    int rc = begin_op(be);
    if (rc)
        return rc;
    cuda_ctx *c = ctx_of(be);
    if (!c->graphs_enabled)
        return 0;
    if (graph_entry *g = find_graph(c, owner, key)) {
        CU(be, cudaGraphLaunch(g->exec, c->stream));
        return 1;
    }
    CU(be, cudaStreamBeginCapture(c->stream, cudaStreamCaptureModeThreadLocal));
    c->capturing = 1;
    return 0;
}

int cu_graph_end(struct backend *be, const void *owner, int key, int status)
{
    cuda_ctx *c = ctx_of(be);
    if (!c->capturing)
        return 0;
    int rc = c->dead ? BACKEND_EDEVICE : flush_pending(be);
    cudaGraph_t graph = nullptr;
    cudaError_t e = cudaStreamEndCapture(c->stream, &graph);
    c->capturing = 0;
    if (status || rc || e != cudaSuccess) {
        if (graph)
            cudaGraphDestroy(graph);
        if (status || rc)
            return status ? 0 : rc; /* the caller keeps the first error's message */
        return cuda_fail(be, e, "cudaStreamEndCapture");
    }
    if (c->n_graphs == c->cap_graphs) {
        int cap = c->cap_graphs ? 2 * c->cap_graphs : 8;
        graph_entry *g = static_cast<graph_entry *>(realloc(c->graphs, (size_t)cap * sizeof *g));
        if (!g) {
            cudaGraphDestroy(graph);
            return backend_fail(be, BACKEND_ENOMEM, "%s: host out of memory for a graph", BACKEND_NAME);
        }
        c->graphs = g;
        c->cap_graphs = cap;
    }
    cudaGraphExec_t exec = nullptr;
    e = cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphDestroy(graph);
    if (e != cudaSuccess)
        return cuda_fail(be, e, "cudaGraphInstantiate");
    c->graphs[c->n_graphs++] = graph_entry{owner, key, exec};
    CU(be, cudaGraphLaunch(exec, c->stream));
    return 0;
}

void cu_graph_forget(struct backend *be, const void *owner)
{
    cuda_ctx *c = ctx_of(be);
    int kept = 0;
    for (int i = 0; i < c->n_graphs; i++) {
        if (c->graphs[i].owner == owner)
            cudaGraphExecDestroy(c->graphs[i].exec);
        else
            c->graphs[kept++] = c->graphs[i];
    }
    c->n_graphs = kept;
}

void cu_destroy(struct backend *be)
{
    cuda_ctx *c = ctx_of(be);
    if (c->stream)
        cudaStreamSynchronize(c->stream);
    for (int i = 0; i < c->n_graphs; i++)
        cudaGraphExecDestroy(c->graphs[i].exec);
    free(c->graphs);
    for (int h = 0; h < 2; h++) {
        if (c->staging_free[h])
            cudaEventDestroy(c->staging_free[h]);
        if (c->staging[h])
            cudaFreeHost(c->staging[h]);
    }
    if (c->blas)
        cublasDestroy(c->blas);
    if (c->blas_workspace)
        cudaFree(c->blas_workspace);
    if (c->stream)
        cudaStreamDestroy(c->stream);
    cudaGetLastError();
    free(c);
    be->ctx = nullptr;
}

const struct backend_ops cuda_backend_ops = {
    BACKEND_NAME,
    cu_destroy,
    cu_alloc,
    cu_release,
    cu_upload_weight,
    cu_upload,
    cu_download,
    cu_patch_embed,
    cu_linear,
    cu_layernorm,
    cu_attention,
    cu_layerscale_residual,
    cu_swiglu,
    cu_synchronize,
    cu_bytes_in_use,
    cu_alloc_count,
    cu_graph_begin,
    cu_graph_end,
    cu_graph_forget,
    cu_attention_probs,
    cu_rope,
    nullptr, /* alloc_gemm_input: the GEMMs read the activations as they are */
};

/* Everything after the device is chosen. Returns 0 or -1 with err set (nothing left allocated). */
int create_on_device(struct backend *be, int device, const struct backend_options *o, char *err, size_t errlen)
{
    memset(be, 0, sizeof *be);
    /* The GEMMs are cuBLAS bf16 and attention runs on bf16 mma: there is no fp32 form to choose. */
    enum backend_precision precision;
    struct backend_precision_caps caps = {};
    caps.why_no_fp32 = "computes in bf16 only (run fp32 with --device cpu)";
    caps.bf16 = caps.bf16_faster = 1;
    if (backend_precision_resolve(o, BACKEND_NAME, &caps, &precision, nullptr, 0, err, errlen))
        return -1;
    cuda_ctx *c = static_cast<cuda_ctx *>(calloc(1, sizeof *c));
    if (!c) {
        snprintf(err, errlen, "%s backend: out of memory", BACKEND_NAME);
        return -1;
    }
    c->device = device;
    c->graphs_enabled = o ? o->cuda_graphs != 0 : 1;
    be->ops = &cuda_backend_ops;
    be->ctx = c;
    be->precision = precision;
    const char *step = "cudaSetDevice";
    cudaError_t e = cudaSetDevice(device);
    if (!e)
        step = "cudaStreamCreate", e = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking);
    if (!e)
        step = "cudaMalloc(cuBLAS workspace)", e = cudaMalloc(&c->blas_workspace, BLAS_WORKSPACE_BYTES);
    for (int h = 0; h < 2 && !e; h++) {
        step = "cudaMallocHost(staging)", e = cudaMallocHost(reinterpret_cast<void **>(&c->staging[h]),
                                                             STAGING_HALF_BYTES);
        if (!e)
            step = "cudaEventCreate", e = cudaEventCreateWithFlags(&c->staging_free[h], cudaEventDisableTiming);
    }
    cublasStatus_t st = CUBLAS_STATUS_SUCCESS;
    if (!e) {
        st = cublasCreate(&c->blas);
        if (!st)
            st = cublasSetStream(c->blas, c->stream);
        /* Our own workspace, so cuBLAS allocates nothing while a graph is being recorded. */
        if (!st)
            st = cublasSetWorkspace(c->blas, c->blas_workspace, BLAS_WORKSPACE_BYTES);
    }
    if (e || st) {
        if (e)
            snprintf(err, errlen, "%s backend on device %d: %s failed: %s", BACKEND_NAME, device, step,
                     cudaGetErrorString(e));
        else
            snprintf(err, errlen, "%s backend on device %d: cuBLAS initialisation failed (status %d)",
                     BACKEND_NAME, device, (int)st);
        cu_destroy(be);
        be->ops = nullptr;
        return -1;
    }
    c->bytes_in_use = BLAS_WORKSPACE_BYTES;
    c->alloc_count = 1;
    return 0;
}

} /* namespace */

#ifdef STOPCAL_CUDA_EMULATION

extern "C" int backend_cuda_emu_create(struct backend *be, const struct backend_options *o, char *err,
                                       size_t errlen)
{
    return create_on_device(be, 0, o, err, errlen);
}

#else

extern "C" int backend_cuda_create(struct backend *be, int device_index, const struct backend_options *o,
                                   char *err, size_t errlen)
{
    memset(be, 0, sizeof *be);
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) {
        cudaGetLastError();
        if (e == cudaErrorInsufficientDriver || e == cudaErrorStubLibrary)
            snprintf(err, errlen, "CUDA driver not found or older than the CUDA runtime (%s)", cudaGetErrorString(e));
        else if (e == cudaErrorNoDevice)
            snprintf(err, errlen, "no CUDA device");
        else
            snprintf(err, errlen, "CUDA unavailable: %s (%s)", cudaGetErrorString(e), cudaGetErrorName(e));
        return -1;
    }
    if (count == 0) {
        snprintf(err, errlen, "no CUDA device");
        return -1;
    }
    if (device_index < 0 || device_index >= count) {
        snprintf(err, errlen, "CUDA device %d out of range: %d device(s)", device_index, count);
        return -1;
    }
    return create_on_device(be, device_index, o, err, errlen);
}

#endif
