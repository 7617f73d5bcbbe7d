/* The forward pass: patch embedding, pre-LN blocks with LayerScale, final norm on the CLS token
 * only (the head never looks at the others), then Linear → ReLU → Linear. Weights go to the
 * backend once; activations live in buffers reserved for the largest batch, reused every call. */
#include "vit.h"
#include "error_message.h"

#include "posembed.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct vit_block {
    void *norm1_w, *norm1_b; /* (D) */
    void *qkv_w, *qkv_b;     /* (3D, D), (3D) */
    void *proj_w, *proj_b;   /* (D, D), (D) */
    void *ls1, *ls2;         /* (D) LayerScale */
    void *norm2_w, *norm2_b; /* (D) */
    void *ffn_in_w, *ffn_in_b;   /* mlp: fc1 (F, D); swiglu: w12 (2F, D) */
    void *ffn_out_w, *ffn_out_b; /* mlp: fc2 (D, F); swiglu: w3 (D, F) */
};

struct vit {
    struct backend *be;
    struct model_config cfg;
    float *pos_stored;       /* host copy (1 + G², D) for re-gridding */
    void *cls, *registers;   /* (D), (R, D) */
    void *patch_w, *patch_b; /* (D, 3·P·P), (D) */
    struct vit_block *blocks;
    void *norm_w, *norm_b;   /* (D) */
    void *head1_w, *head1_b; /* (H, D), (H) */
    void *head2_w, *head2_b; /* (1, H), (1) */

    void *pos;      /* (1 + g², D) for pos_grid */
    int pos_grid;   /* g the table is resized for, 0 = none yet */

    int max_batch, image_size; /* what the buffers below are reserved for */
    void *pixels;   /* (B, 3, S, S) */
    void *x;        /* (B, T, D) residual stream */
    void *h;        /* (B, T, D) normed input / sublayer output */
    void *attn;     /* (B, T, D) */
    void *wide;     /* (B, T, max(3D, F_in)) qkv, then the FFN's first projection */
    void *gated;    /* (B, T, F) SwiGLU only */
    void *cls_norm; /* (B, D) */
    void *head_hidden; /* (B, H) */
    void *logits;   /* (B) */
};

static void *upload(struct vit *v, const struct model *m, const char *name, enum weight_kind kind,
                    int *rc, char *err, size_t errlen)
{
    if (*rc)
        return NULL;
    const struct model_tensor *t = model_find(m, name);
    if (!t) { /* model_open checked the set; only reachable with a hand-built model */
        *rc = error_set(err, errlen, BACKEND_EINVAL, "model has no tensor %s", name);
        return NULL;
    }
    size_t n = model_tensor_numel(t);
    /* Matrices as (first dim, the rest); vectors and token tables as one row. */
    size_t rows = kind == WEIGHT_VECTOR || t->ndim < 1 ? 1 : (size_t)t->shape[0];
    float *host = malloc(n * sizeof(float));
    if (!host) {
        *rc = error_set(err, errlen, BACKEND_ENOMEM, "out of memory widening %s", name);
        return NULL;
    }
    model_tensor_to_f32(t, host);
    void *dev = v->be->ops->upload_weight(v->be, host, rows, rows ? n / rows : 0, kind);
    free(host);
    if (!dev)
        *rc = error_set(err, errlen, BACKEND_ENOMEM, "uploading %s: %s", name, v->be->error);
    return dev;
}

int vit_create(struct vit **out, const struct model *m, struct backend *be, char *err, size_t errlen)
{
    struct vit *v = calloc(1, sizeof *v);
    const struct model_config *c = &m->config;
    if (!v)
        return error_set(err, errlen, BACKEND_ENOMEM, "out of memory");
    v->be = be;
    v->cfg = *c;
    v->blocks = calloc((size_t)c->depth, sizeof *v->blocks);
    const struct model_tensor *pos = model_find(m, "pos_embed");
    v->pos_stored = pos ? malloc(model_tensor_numel(pos) * sizeof(float)) : NULL;
    if (!v->blocks || !v->pos_stored) {
        vit_destroy(v);
        return error_set(err, errlen, BACKEND_ENOMEM, "out of memory");
    }
    model_tensor_to_f32(pos, v->pos_stored);
    int rc = 0;
    const enum weight_kind VEC = WEIGHT_VECTOR, MAT = WEIGHT_MATRIX;
    v->cls = upload(v, m, "cls_token", VEC, &rc, err, errlen);
    if (c->num_registers > 0)
        v->registers = upload(v, m, "register_tokens", VEC, &rc, err, errlen);
    v->patch_w = upload(v, m, "patch_embed.proj.weight", WEIGHT_PATCH, &rc, err, errlen);
    v->patch_b = upload(v, m, "patch_embed.proj.bias", VEC, &rc, err, errlen);
    const char *in = c->ffn == MODEL_FFN_MLP ? "mlp.fc1" : "mlp.w12";
    const char *outp = c->ffn == MODEL_FFN_MLP ? "mlp.fc2" : "mlp.w3";
    for (int i = 0; i < c->depth && !rc; i++) {
        struct vit_block *b = &v->blocks[i];
        char name[96];
#define UP(field, suffix, kind)                                          \
    do {                                                                 \
        snprintf(name, sizeof name, "blocks.%d.%s", i, suffix);          \
        b->field = upload(v, m, name, kind, &rc, err, errlen);           \
    } while (0)
        UP(norm1_w, "norm1.weight", VEC);
        UP(norm1_b, "norm1.bias", VEC);
        UP(qkv_w, "attn.qkv.weight", MAT);
        UP(qkv_b, "attn.qkv.bias", VEC);
        UP(proj_w, "attn.proj.weight", MAT);
        UP(proj_b, "attn.proj.bias", VEC);
        UP(ls1, "ls1.gamma", VEC);
        UP(ls2, "ls2.gamma", VEC);
        UP(norm2_w, "norm2.weight", VEC);
        UP(norm2_b, "norm2.bias", VEC);
        char sub[32];
        snprintf(sub, sizeof sub, "%s.weight", in);
        UP(ffn_in_w, sub, MAT);
        snprintf(sub, sizeof sub, "%s.bias", in);
        UP(ffn_in_b, sub, VEC);
        snprintf(sub, sizeof sub, "%s.weight", outp);
        UP(ffn_out_w, sub, MAT);
        snprintf(sub, sizeof sub, "%s.bias", outp);
        UP(ffn_out_b, sub, VEC);
#undef UP
    }
    v->norm_w = upload(v, m, "norm.weight", VEC, &rc, err, errlen);
    v->norm_b = upload(v, m, "norm.bias", VEC, &rc, err, errlen);
    v->head1_w = upload(v, m, "head.fc1.weight", MAT, &rc, err, errlen);
    v->head1_b = upload(v, m, "head.fc1.bias", VEC, &rc, err, errlen);
    v->head2_w = upload(v, m, "head.fc2.weight", MAT, &rc, err, errlen);
    v->head2_b = upload(v, m, "head.fc2.bias", VEC, &rc, err, errlen);
    if (rc) {
        vit_destroy(v);
        return rc;
    }
    *out = v;
    return 0;
}

static void release_activations(struct vit *v)
{
    if (v->be->ops->graph_forget) /* recorded passes point at these buffers */
        v->be->ops->graph_forget(v->be, v);
    void **bufs[] = {&v->pixels, &v->x, &v->h, &v->attn, &v->wide, &v->gated, &v->cls_norm,
                     &v->head_hidden, &v->logits};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) {
        v->be->ops->release(v->be, *bufs[i]);
        *bufs[i] = NULL;
    }
    v->max_batch = 0;
    v->image_size = 0;
}

void vit_destroy(struct vit *v)
{
    if (!v)
        return;
    const struct backend_ops *ops = v->be->ops;
    release_activations(v);
    ops->release(v->be, v->pos);
    void *weights[] = {v->cls, v->registers, v->patch_w, v->patch_b, v->norm_w, v->norm_b,
                       v->head1_w, v->head1_b, v->head2_w, v->head2_b};
    for (size_t i = 0; i < sizeof weights / sizeof *weights; i++)
        ops->release(v->be, weights[i]);
    for (int i = 0; v->blocks && i < v->cfg.depth; i++) {
        struct vit_block *b = &v->blocks[i];
        void *bw[] = {b->norm1_w, b->norm1_b, b->qkv_w, b->qkv_b, b->proj_w, b->proj_b, b->ls1,
                      b->ls2, b->norm2_w, b->norm2_b, b->ffn_in_w, b->ffn_in_b, b->ffn_out_w,
                      b->ffn_out_b};
        for (size_t j = 0; j < sizeof bw / sizeof *bw; j++)
            ops->release(v->be, bw[j]);
    }
    free(v->blocks);
    free(v->pos_stored);
    free(v);
}

int vit_tokens(const struct vit *v, int image_size)
{
    int g = image_size / v->cfg.patch_size;
    return 1 + v->cfg.num_registers + g * g;
}

static int ensure_pos(struct vit *v, int grid, char *err, size_t errlen)
{
    if (v->pos_grid == grid)
        return 0;
    const int D = v->cfg.embed_dim;
    size_t n = (size_t)(1 + grid * grid) * D;
    float *host = malloc(n * sizeof(float));
    if (!host)
        return error_set(err, errlen, BACKEND_ENOMEM, "out of memory resizing the positional embedding");
    if (pos_embed_resize(host, v->pos_stored, v->cfg.pos_embed_grid, grid, D, v->cfg.pos_interp)) {
        free(host);
        return error_set(err, errlen, BACKEND_ENOMEM, "out of memory resizing the positional embedding");
    }
    if (v->be->ops->graph_forget)
        v->be->ops->graph_forget(v->be, v);
    v->be->ops->release(v->be, v->pos);
    v->pos = v->be->ops->upload_weight(v->be, host, 1, n, WEIGHT_VECTOR);
    free(host);
    v->pos_grid = v->pos ? grid : 0;
    if (!v->pos)
        return error_set(err, errlen, BACKEND_ENOMEM, "positional embedding: %s", v->be->error);
    return 0;
}

int vit_reserve(struct vit *v, int max_batch, int image_size, char *err, size_t errlen)
{
    const struct model_config *c = &v->cfg;
    if (max_batch < 1 || image_size < c->patch_size || image_size % c->patch_size)
        return error_set(err, errlen, BACKEND_EINVAL, "image size %d must be a positive multiple of the "
                    "patch size %d (batch %d)", image_size, c->patch_size, max_batch);
    int rc = ensure_pos(v, image_size / c->patch_size, err, errlen);
    if (rc)
        return rc;
    if (max_batch <= v->max_batch && image_size == v->image_size)
        return 0;
    release_activations(v);
    const size_t B = (size_t)max_batch, T = (size_t)vit_tokens(v, image_size), D = (size_t)c->embed_dim;
    const size_t F = (size_t)c->ffn_hidden_dim, S = (size_t)image_size;
    size_t wide = 3 * D;
    size_t ffn_in = c->ffn == MODEL_FFN_MLP ? F : 2 * F;
    if (ffn_in > wide)
        wide = ffn_in;
    struct { void **buf; size_t n; } plan[] = {
        {&v->pixels, B * 3 * S * S},
        {&v->x, B * T * D},
        {&v->h, B * T * D},
        {&v->attn, B * T * D},
        {&v->wide, B * T * wide},
        {&v->gated, c->ffn == MODEL_FFN_SWIGLU ? B * T * F : 0},
        {&v->cls_norm, B * D},
        {&v->head_hidden, B * (size_t)c->head_hidden_dim},
        {&v->logits, B},
    };
    for (size_t i = 0; i < sizeof plan / sizeof *plan; i++) {
        if (plan[i].n == 0)
            continue;
        *plan[i].buf = v->be->ops->alloc(v->be, plan[i].n);
        if (!*plan[i].buf) {
            release_activations(v);
            return error_set(err, errlen, BACKEND_ENOMEM, "reserving batch %d at %d px: %s", max_batch,
                        image_size, v->be->error);
        }
    }
    v->max_batch = max_batch;
    v->image_size = image_size;
    return 0;
}

/* An explain pass's extra work, done right after a block's attention op while the qkv buffer still
 * holds that block's q, k and v (the FFN's first projection overwrites it later in the block). */
struct explain_pass {
    void *probs;     /* device (T, T) or (H, T) */
    float *cls;      /* host (H, T) */
    float *matrices; /* host (depth, T, T) head-averaged, when a rollout is asked; else NULL */
};

static int explain_block(struct vit *v, struct explain_pass *x, int block, int T)
{
    struct backend *be = v->be;
    const struct backend_ops *ops = be->ops;
    const int H = v->cfg.num_heads;
    int rc;
    if (x->matrices) {
        if ((rc = ops->attention_probs(be, x->probs, v->wide, 1, T, H, T, 1)) ||
            (rc = ops->download(be, x->matrices + (size_t)block * T * T, x->probs, (size_t)T * T)))
            return rc;
    }
    if (block == v->cfg.depth - 1) {
        if ((rc = ops->attention_probs(be, x->probs, v->wide, 1, T, H, 1, 0)) ||
            (rc = ops->download(be, x->cls, x->probs, (size_t)H * T)))
            return rc;
    }
    return 0;
}

/* Everything between the pixel upload and the logit download: the part a backend with graphs
 * records once per batch size and replays. x: NULL for an ordinary pass. Returns 0 or a
 * BACKEND_E* code (message in be->error). */
static int forward_pass(struct vit *v, int batch, int image_size, struct explain_pass *x)
{
    const struct model_config *c = &v->cfg;
    struct backend *be = v->be;
    const struct backend_ops *ops = be->ops;
    const int D = c->embed_dim, F = c->ffn_hidden_dim, T = vit_tokens(v, image_size);
    const int rows = batch * T;
    const float eps = c->layernorm_eps;
    int rc;
#define TRY(call)                   \
    do {                            \
        if ((rc = (call)) != 0)     \
            return rc;              \
    } while (0)
    TRY(ops->patch_embed(be, v->x, v->pixels, v->patch_w, v->patch_b, v->cls, v->registers, v->pos,
                         batch, image_size, c->patch_size, D, c->num_registers));
    for (int i = 0; i < c->depth; i++) {
        const struct vit_block *b = &v->blocks[i];
        TRY(ops->layernorm(be, v->h, v->x, b->norm1_w, b->norm1_b, rows, D, D, eps));
        TRY(ops->linear(be, v->wide, v->h, b->qkv_w, b->qkv_b, rows, 3 * D, D, EPILOGUE_NONE));
        TRY(ops->attention(be, v->attn, v->wide, batch, T, c->num_heads));
        if (x)
            TRY(explain_block(v, x, i, T));
        TRY(ops->linear(be, v->h, v->attn, b->proj_w, b->proj_b, rows, D, D, EPILOGUE_NONE));
        TRY(ops->layerscale_residual(be, v->x, v->h, b->ls1, rows, D));
        TRY(ops->layernorm(be, v->h, v->x, b->norm2_w, b->norm2_b, rows, D, D, eps));
        if (c->ffn == MODEL_FFN_MLP) {
            TRY(ops->linear(be, v->wide, v->h, b->ffn_in_w, b->ffn_in_b, rows, F, D, EPILOGUE_GELU));
            TRY(ops->linear(be, v->h, v->wide, b->ffn_out_w, b->ffn_out_b, rows, D, F, EPILOGUE_NONE));
        } else {
            TRY(ops->linear(be, v->wide, v->h, b->ffn_in_w, b->ffn_in_b, rows, 2 * F, D, EPILOGUE_NONE));
            TRY(ops->swiglu(be, v->gated, v->wide, rows, F));
            TRY(ops->linear(be, v->h, v->gated, b->ffn_out_w, b->ffn_out_b, rows, D, F, EPILOGUE_NONE));
        }
        TRY(ops->layerscale_residual(be, v->x, v->h, b->ls2, rows, D));
    }
    /* Final norm on the CLS rows only: row 0 of each image, T·D floats apart. */
    TRY(ops->layernorm(be, v->cls_norm, v->x, v->norm_w, v->norm_b, batch, D, T * D, eps));
    TRY(ops->linear(be, v->head_hidden, v->cls_norm, v->head1_w, v->head1_b, batch, c->head_hidden_dim,
                    D, EPILOGUE_RELU));
    TRY(ops->linear(be, v->logits, v->head_hidden, v->head2_w, v->head2_b, batch, 1,
                    c->head_hidden_dim, EPILOGUE_NONE));
#undef TRY
    return 0;
}

int vit_forward(struct vit *v, const float *pixels, int batch, int image_size, float *logits,
                char *err, size_t errlen)
{
    struct backend *be = v->be;
    const struct backend_ops *ops = be->ops;
    if (batch < 1)
        return error_set(err, errlen, BACKEND_EINVAL, "batch must be at least 1");
    if (batch > v->max_batch || image_size != v->image_size) {
        int want = batch > v->max_batch ? batch : v->max_batch;
        int rc = vit_reserve(v, want, image_size, err, errlen);
        if (rc)
            return rc;
    }
    int rc;
#define TRY(call)                                                             \
    do {                                                                      \
        if ((rc = (call)) != 0)                                               \
            return error_set(err, errlen, rc, "%s: %s", ops->name, be->error);     \
    } while (0)
    TRY(ops->upload(be, v->pixels, pixels, (size_t)batch * 3 * image_size * image_size));
    /* A backend with graphs records the pass the first time at this batch size, then replays it. */
    int replayed = ops->graph_begin ? ops->graph_begin(be, v, batch) : 0;
    if (replayed < 0)
        return error_set(err, errlen, replayed, "%s: %s", ops->name, be->error);
    if (!replayed) {
        rc = forward_pass(v, batch, image_size, NULL);
        if (ops->graph_end) {
            int end_rc = ops->graph_end(be, v, batch, rc);
            rc = rc ? rc : end_rc;
        }
        if (rc)
            return error_set(err, errlen, rc, "%s: %s", ops->name, be->error);
    }
    TRY(ops->download(be, logits, v->logits, (size_t)batch));
    TRY(ops->synchronize(be));
#undef TRY
    return 0;
}

int vit_heads(const struct vit *v) { return v->cfg.num_heads; }

/* r ← r · Â for Â = (A + I)/2 with rows renormalised; A (T, T) row-major, r (T) overwritten. */
static int rollout_step(double *r, const float *A, int T, double *tmp)
{
    for (int j = 0; j < T; j++)
        tmp[j] = 0;
    for (int i = 0; i < T; i++) {
        const float *row = A + (size_t)i * T;
        double sum = 1.0; /* the identity's 1 */
        for (int j = 0; j < T; j++)
            sum += row[j];
        if (!(sum > 0))
            return -1;
        const double w = r[i] / sum; /* (A + I) row i / its sum; the ½ cancels in the renormalisation */
        for (int j = 0; j < T; j++)
            tmp[j] += w * row[j];
        tmp[i] += w;
    }
    for (int j = 0; j < T; j++)
        r[j] = tmp[j];
    return 0;
}

int vit_explain(struct vit *v, const float *pixels, int image_size, float *logit, float *cls, float *rollout,
                char *err, size_t errlen)
{
    struct backend *be = v->be;
    const struct backend_ops *ops = be->ops;
    if (!ops->attention_probs)
        return error_set(err, errlen, BACKEND_EINVAL, "the %s backend cannot explain (no attention_probs op)", ops->name);
    if (v->max_batch < 1 || image_size != v->image_size) {
        int rc = vit_reserve(v, v->max_batch > 0 ? v->max_batch : 1, image_size, err, errlen);
        if (rc)
            return rc;
    }
    const int T = vit_tokens(v, image_size), H = v->cfg.num_heads, L = v->cfg.depth;
    struct explain_pass x = {.cls = cls};
    const size_t probs_n = rollout ? (size_t)T * T : (size_t)H * T;
    double *r = NULL, *tmp = NULL;
    if (rollout) {
        x.matrices = malloc((size_t)L * T * T * sizeof(float));
        r = malloc((size_t)T * sizeof *r);
        tmp = malloc((size_t)T * sizeof *tmp);
        if (!x.matrices || !r || !tmp) {
            free(x.matrices), free(r), free(tmp);
            return error_set(err, errlen, BACKEND_ENOMEM, "out of memory for the rollout's %d matrices of %d²", L, T);
        }
    }
    x.probs = ops->alloc(be, probs_n > (size_t)H * T ? probs_n : (size_t)H * T);
    int rc = x.probs ? 0 : BACKEND_ENOMEM;
    if (!rc)
        rc = ops->upload(be, v->pixels, pixels, (size_t)3 * image_size * image_size);
    if (!rc)
        rc = forward_pass(v, 1, image_size, &x);
    if (!rc)
        rc = ops->download(be, logit, v->logits, 1);
    if (!rc)
        rc = ops->synchronize(be);
    if (rc)
        error_set(err, errlen, rc, "%s (explain pass): %s", ops->name, be->error);
    ops->release(be, x.probs);
    if (!rc && rollout) {
        /* e₀ᵀ Â_L ⋯ Â_1: the CLS row, multiplied through from the last block down. */
        for (int j = 0; j < T; j++)
            r[j] = j == 0;
        for (int l = L - 1; l >= 0 && !rc; l--)
            if (rollout_step(r, x.matrices + (size_t)l * T * T, T, tmp))
                rc = error_set(err, errlen, BACKEND_EINVAL, "block %d's attention rows do not sum to a positive number", l);
        for (int j = 0; j < T && !rc; j++)
            rollout[j] = (float)r[j];
    }
    free(x.matrices), free(r), free(tmp);
    return rc;
}
