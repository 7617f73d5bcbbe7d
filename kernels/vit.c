/* The forward pass: patch embedding, pre-LN blocks with LayerScale, final norm on the CLS token
 * only (the head never looks at the others), then Linear → ReLU → Linear, in the order of the
 * steps the family's architecture description lists (vit_load.c turned them into enum vit_step
 * and the tensors into slots); this file knows what each step does. Activations live in buffers
 * reserved for the largest batch, reused every call; per-resolution tables (DINOv2's resized
 * positions, DINOv3's RoPE angles) are computed once per input size. */
#include "vit_internal.h"
#include "error_message.h"

#include "posembed.h"
#include "rope_table.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void vit_release_activations(struct vit *v)
{
    if (v->be->ops->graph_forget) /* recorded passes point at these buffers */
        v->be->ops->graph_forget(v->be, v);
    if (v->normed == v->h) /* aliases of h and wide (GEMM inputs not apart), released with them */
        v->normed = NULL;
    if (v->hidden == v->wide)
        v->hidden = NULL;
    void **bufs[] = {&v->pixels, &v->x, &v->h, &v->wide, &v->normed, &v->attn, &v->hidden,
                     &v->gated, &v->cls_norm, &v->head_hidden, &v->logits};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) {
        v->be->ops->release(v->be, *bufs[i]);
        *bufs[i] = NULL;
    }
    v->max_batch = 0;
    v->image_size = 0;
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

/* DINOv3: the RoPE angles for a g × g grid (rope_table.h), once per resolution. */
static int ensure_rope(struct vit *v, int grid, char *err, size_t errlen)
{
    if (v->rope_grid == grid)
        return 0;
    size_t n = (size_t)grid * grid * 64;
    float *host = malloc(n * sizeof(float));
    if (!host)
        return error_set(err, errlen, BACKEND_ENOMEM, "out of memory for the RoPE table");
    rope_table_compute(host, v->rope_periods, grid, grid);
    if (v->be->ops->graph_forget) /* recorded passes point at the old table */
        v->be->ops->graph_forget(v->be, v);
    v->be->ops->release(v->be, v->rope);
    v->rope = v->be->ops->upload_weight(v->be, host, 1, n, WEIGHT_VECTOR);
    free(host);
    v->rope_grid = v->rope ? grid : 0;
    if (!v->rope)
        return error_set(err, errlen, BACKEND_ENOMEM, "RoPE table: %s", v->be->error);
    return 0;
}

int vit_reserve(struct vit *v, int max_batch, int image_size, char *err, size_t errlen)
{
    const struct model_config *c = &v->cfg;
    if (max_batch < 1 || image_size < c->patch_size || image_size % c->patch_size)
        return error_set(err, errlen, BACKEND_EINVAL, "image size %d must be a positive multiple of the "
                    "patch size %d (batch %d)", image_size, c->patch_size, max_batch);
    int rc = 0;
    for (int i = 0; i < v->n_steps[FAMILY_PER_RESOLUTION] && !rc; i++)
        rc = v->steps[FAMILY_PER_RESOLUTION][i] == STEP_POS_EMBED_RESIZE
                 ? ensure_pos(v, image_size / c->patch_size, err, errlen)
                 : ensure_rope(v, image_size / c->patch_size, err, errlen);
    if (rc)
        return rc;
    if (max_batch <= v->max_batch && image_size == v->image_size)
        return 0;
    vit_release_activations(v);
    const size_t B = (size_t)max_batch, T = (size_t)vit_tokens(v, image_size), D = (size_t)c->embed_dim;
    const size_t F = (size_t)c->ffn_hidden_dim, S = (size_t)image_size;
    const int apart = v->be->ops->alloc_gemm_input && v->be->gemm_inputs_apart;
    const int mlp = c->ffn == MODEL_FFN_MLP;
    size_t wide = 3 * D;
    size_t ffn_in = !mlp ? 2 * F : apart ? 0 : F; /* an MLP's fc1 output apart: in hidden */
    if (ffn_in > wide)
        wide = ffn_in;
    /* cols 0: an fp32 buffer of n values; else a GEMM input of n / cols rows of cols. */
    struct { void **buf; size_t n, cols; } plan[] = {
        {&v->pixels, B * 3 * S * S, 0},
        {&v->x, B * T * D, 0},
        {&v->h, B * T * D, 0},
        {&v->wide, B * T * wide, 0},
        {&v->normed, apart ? B * T * D : 0, D},
        {&v->attn, B * T * D, apart ? D : 0},
        {&v->hidden, apart && mlp ? B * T * F : 0, F},
        {&v->gated, !mlp ? B * T * F : 0, apart ? F : 0},
        {&v->cls_norm, B * D, 0},
        {&v->head_hidden, B * (size_t)c->head_hidden_dim, 0},
        {&v->logits, B, 0},
    };
    for (size_t i = 0; i < sizeof plan / sizeof *plan; i++) {
        if (plan[i].n == 0)
            continue;
        *plan[i].buf = plan[i].cols ? v->be->ops->alloc_gemm_input(v->be, plan[i].n / plan[i].cols, plan[i].cols)
                                    : v->be->ops->alloc(v->be, plan[i].n);
        if (!*plan[i].buf) {
            vit_release_activations(v);
            return error_set(err, errlen, BACKEND_ENOMEM, "reserving batch %d at %d px: %s", max_batch,
                        image_size, v->be->error);
        }
    }
    if (!apart) {
        v->normed = v->h;
        v->hidden = v->wide;
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

static int backend_fail_rope(struct backend *be)
{
    snprintf(be->error, sizeof be->error, "the %s backend has no rope op (needed by this model family)",
             be->ops->name);
    return BACKEND_EINVAL;
}

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
    const int rows = batch * T, prefix = 1 + c->num_registers;
    const float eps = c->layernorm_eps;
    int rc;
#define TRY(call)                   \
    do {                            \
        if ((rc = (call)) != 0)     \
            return rc;              \
    } while (0)
    for (int s = 0; s < v->n_steps[FAMILY_EMBED]; s++) /* patch_embed: the only embed step */
        TRY(ops->patch_embed(be, v->x, v->pixels, v->patch_w, v->patch_b, v->cls, v->registers, v->pos,
                             batch, image_size, c->patch_size, D, c->num_registers));
    for (int i = 0; i < c->depth; i++) {
        const struct vit_block *b = &v->blocks[i];
        for (int s = 0; s < v->n_steps[FAMILY_BLOCK]; s++) {
            switch (v->steps[FAMILY_BLOCK][s]) {
            case STEP_NORM1:
                TRY(ops->layernorm(be, v->normed, v->x, b->norm1_w, b->norm1_b, rows, D, D, eps));
                break;
            case STEP_QKV:
                TRY(ops->linear(be, v->wide, v->normed, b->qkv_w, b->qkv_b, rows, 3 * D, D, EPILOGUE_NONE));
                break;
            case STEP_ROPE:
                if (!ops->rope)
                    return backend_fail_rope(be);
                TRY(ops->rope(be, v->wide, v->rope, batch, T, c->num_heads, prefix));
                break;
            case STEP_ATTENTION:
                TRY(ops->attention(be, v->attn, v->wide, batch, T, c->num_heads));
                if (x) /* the qkv buffer holds this block's q, k (rotated, for dinov3) and v */
                    TRY(explain_block(v, x, i, T));
                break;
            case STEP_PROJ:
                TRY(ops->linear(be, v->h, v->attn, b->proj_w, b->proj_b, rows, D, D, EPILOGUE_NONE));
                break;
            case STEP_LS1_RESIDUAL:
                TRY(ops->layerscale_residual(be, v->x, v->h, b->ls1, rows, D));
                break;
            case STEP_NORM2:
                TRY(ops->layernorm(be, v->normed, v->x, b->norm2_w, b->norm2_b, rows, D, D, eps));
                break;
            case STEP_FFN:
                if (c->ffn == MODEL_FFN_MLP) {
                    TRY(ops->linear(be, v->hidden, v->normed, b->ffn_in_w, b->ffn_in_b, rows, F, D, EPILOGUE_GELU));
                    TRY(ops->linear(be, v->h, v->hidden, b->ffn_out_w, b->ffn_out_b, rows, D, F, EPILOGUE_NONE));
                } else {
                    TRY(ops->linear(be, v->wide, v->normed, b->ffn_in_w, b->ffn_in_b, rows, 2 * F, D, EPILOGUE_NONE));
                    TRY(ops->swiglu(be, v->gated, v->wide, rows, F));
                    TRY(ops->linear(be, v->h, v->gated, b->ffn_out_w, b->ffn_out_b, rows, D, F, EPILOGUE_NONE));
                }
                break;
            case STEP_LS2_RESIDUAL:
                TRY(ops->layerscale_residual(be, v->x, v->h, b->ls2, rows, D));
                break;
            default: /* resolve_steps admits only block steps here */
                break;
            }
        }
    }
    for (int s = 0; s < v->n_steps[FAMILY_HEAD]; s++) {
        if (v->steps[FAMILY_HEAD][s] == STEP_FINAL_NORM_CLS) {
            /* Final norm on the CLS rows only: row 0 of each image, T·D floats apart. */
            TRY(ops->layernorm(be, v->cls_norm, v->x, v->norm_w, v->norm_b, batch, D, T * D, eps));
        } else {
            TRY(ops->linear(be, v->head_hidden, v->cls_norm, v->head1_w, v->head1_b, batch, c->head_hidden_dim,
                            D, EPILOGUE_RELU));
            TRY(ops->linear(be, v->logits, v->head_hidden, v->head2_w, v->head2_b, batch, 1,
                            c->head_hidden_dim, EPILOGUE_NONE));
        }
    }
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
