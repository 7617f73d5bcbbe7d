/* Building the engine for a model: every tensor its family's architecture description lists
 * goes to the backend once (or, kind host, into a host copy for a per-resolution table) and into
 * the slot the description names; the description's step names become this engine's steps; what
 * the steps read is checked to be there. */
#include "vit_internal.h"
#include "error_message.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


static const struct { const char *name; enum family_stage stage; } STEPS[] = {
    [STEP_POS_EMBED_RESIZE] = {"pos_embed_resize", FAMILY_PER_RESOLUTION},
    [STEP_ROPE_TABLE] = {"rope_table", FAMILY_PER_RESOLUTION},
    [STEP_PATCH_EMBED] = {"patch_embed", FAMILY_EMBED},
    [STEP_NORM1] = {"norm1", FAMILY_BLOCK},
    [STEP_QKV] = {"qkv", FAMILY_BLOCK},
    [STEP_ROPE] = {"rope", FAMILY_BLOCK},
    [STEP_ATTENTION] = {"attention", FAMILY_BLOCK},
    [STEP_PROJ] = {"proj", FAMILY_BLOCK},
    [STEP_LS1_RESIDUAL] = {"ls1_residual", FAMILY_BLOCK},
    [STEP_NORM2] = {"norm2", FAMILY_BLOCK},
    [STEP_FFN] = {"ffn", FAMILY_BLOCK},
    [STEP_LS2_RESIDUAL] = {"ls2_residual", FAMILY_BLOCK},
    [STEP_FINAL_NORM_CLS] = {"final_norm_cls", FAMILY_HEAD},
    [STEP_HEAD] = {"head", FAMILY_HEAD},
};
#define N_STEPS (int)(sizeof STEPS / sizeof STEPS[0])

/* Where a description's slot lands: a field of struct vit (device or host) or of a block. */
#define VIT_SLOT(f) {#f, offsetof(struct vit, f)}
#define BLOCK_SLOT(f) {#f, offsetof(struct vit_block, f)}
static const struct { const char *slot; size_t off; } VIT_SLOTS[] = {
    VIT_SLOT(cls), VIT_SLOT(registers), VIT_SLOT(patch_w), VIT_SLOT(patch_b), VIT_SLOT(norm_w),
    VIT_SLOT(norm_b), VIT_SLOT(head1_w), VIT_SLOT(head1_b), VIT_SLOT(head2_w), VIT_SLOT(head2_b),
}, HOST_SLOTS[] = {
    VIT_SLOT(pos_stored), VIT_SLOT(rope_periods),
}, BLOCK_SLOTS[] = {
    BLOCK_SLOT(norm1_w), BLOCK_SLOT(norm1_b), BLOCK_SLOT(qkv_w), BLOCK_SLOT(qkv_b), BLOCK_SLOT(proj_w),
    BLOCK_SLOT(proj_b), BLOCK_SLOT(ls1), BLOCK_SLOT(ls2), BLOCK_SLOT(norm2_w), BLOCK_SLOT(norm2_b),
    BLOCK_SLOT(ffn_in_w), BLOCK_SLOT(ffn_in_b), BLOCK_SLOT(ffn_out_w), BLOCK_SLOT(ffn_out_b),
};
#undef VIT_SLOT
#undef BLOCK_SLOT
#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* The field a tensor's slot names, or NULL (err set) when it is none of this engine's. */
static void **slot_of(struct vit *v, const struct family_tensor *t, char *err, size_t errlen)
{
    const char *slot = t->spec->slot;
    if (t->spec->kind == FAMILY_KIND_HOST) {
        for (size_t i = 0; t->block < 0 && i < COUNT(HOST_SLOTS); i++)
            if (strcmp(HOST_SLOTS[i].slot, slot) == 0)
                return (void **)((char *)v + HOST_SLOTS[i].off);
    } else if (t->block >= 0) {
        for (size_t i = 0; i < COUNT(BLOCK_SLOTS); i++)
            if (strcmp(BLOCK_SLOTS[i].slot, slot) == 0)
                return (void **)((char *)&v->blocks[t->block] + BLOCK_SLOTS[i].off);
    } else {
        for (size_t i = 0; i < COUNT(VIT_SLOTS); i++)
            if (strcmp(VIT_SLOTS[i].slot, slot) == 0)
                return (void **)((char *)v + VIT_SLOTS[i].off);
    }
    error_set(err, errlen, BACKEND_EINVAL, "architecture description: tensor %s names slot \"%s\", which is no %s%s "
         "slot of the engine", t->name, slot, t->spec->kind == FAMILY_KIND_HOST ? "host " : "",
         t->block >= 0 ? "block" : "model");
    return NULL;
}

/* One tensor onto the backend (or, kind host, into a host copy) and into its slot. */
static int upload(struct vit *v, const struct model *m, const struct family_tensor *ft, char *err, size_t errlen)
{
    const struct model_tensor *t = model_find(m, ft->name);
    if (!t) /* model_open checked the set; only reachable with a hand-built model */
        return error_set(err, errlen, BACKEND_EINVAL, "model has no tensor %s", ft->name);
    void **slot = NULL;
    if (ft->spec->slot[0] && !(slot = slot_of(v, ft, err, errlen)))
        return BACKEND_EINVAL;
    size_t n = model_tensor_numel(t);
    float *host = malloc((n ? n : 1) * sizeof(float));
    if (!host)
        return error_set(err, errlen, BACKEND_ENOMEM, "out of memory widening %s", ft->name);
    model_tensor_to_f32(t, host);
    if (ft->spec->kind == FAMILY_KIND_HOST) {
        if (!slot) {
            free(host);
            return error_set(err, errlen, BACKEND_EINVAL, "architecture description: host tensor %s needs a slot",
                        ft->name);
        }
        *slot = host;
        return 0;
    }
    static const enum weight_kind kinds[] = {
        [FAMILY_KIND_MATRIX] = WEIGHT_MATRIX, [FAMILY_KIND_PATCH] = WEIGHT_PATCH, [FAMILY_KIND_VECTOR] = WEIGHT_VECTOR};
    const enum weight_kind kind = kinds[ft->spec->kind];
    /* Matrices as (first dim, the rest); vectors and token tables as one row. */
    size_t rows = kind == WEIGHT_VECTOR || t->ndim < 1 ? 1 : (size_t)t->shape[0];
    void *dev = v->be->ops->upload_weight(v->be, host, rows, rows ? n / rows : 0, kind);
    free(host);
    if (!dev)
        return error_set(err, errlen, BACKEND_ENOMEM, "uploading %s: %s", ft->name, v->be->error);
    v->weights[v->n_weights++] = dev;
    if (slot)
        *slot = dev;
    return 0;
}

/* The description's step names as this engine's steps, each in its stage. */
static int resolve_steps(struct vit *v, const struct model_family *f, char *err, size_t errlen)
{
    for (int s = 0; s < FAMILY_STAGES; s++)
        for (int i = 0; i < f->n_steps[s]; i++) {
            int k = 0;
            while (k < N_STEPS && !(strcmp(STEPS[k].name, f->steps[s][i]) == 0 && (int)STEPS[k].stage == s))
                k++;
            if (k == N_STEPS)
                return error_set(err, errlen, BACKEND_EINVAL, "architecture description: family %s: \"%s\" is not a "
                            "step this engine runs there", f->name, f->steps[s][i]);
            v->steps[s][v->n_steps[s]++] = (enum vit_step)k;
        }
    return 0;
}

static int has_step(const struct vit *v, enum vit_step step)
{
    for (int s = 0; s < FAMILY_STAGES; s++)
        for (int i = 0; i < v->n_steps[s]; i++)
            if (v->steps[s][i] == step)
                return 1;
    return 0;
}

/* What the steps read is there: a description whose tensors and steps disagree fails here, at
 * load, instead of in a forward pass. */
static int check_slots(const struct vit *v, char *err, size_t errlen)
{
    const struct model_config *c = &v->cfg;
    const char *missing = NULL;
    if (!v->cls || !v->patch_w || !v->patch_b || (c->num_registers > 0 && !v->registers))
        missing = "the patch embedding's cls, patch_w, patch_b (and registers)";
    else if (has_step(v, STEP_POS_EMBED_RESIZE) && !v->pos_stored)
        missing = "pos_stored (pos_embed_resize)";
    else if (has_step(v, STEP_ROPE_TABLE) != has_step(v, STEP_ROPE) || (has_step(v, STEP_ROPE) && !v->rope_periods))
        missing = "rope_periods with both rope_table and rope";
    else if (!v->norm_w || !v->norm_b || !v->head1_w || !v->head1_b || !v->head2_w || !v->head2_b)
        missing = "the final norm and the head";
    for (int i = 0; !missing && i < c->depth; i++) {
        const struct vit_block *b = &v->blocks[i];
        if (!b->norm1_w || !b->norm1_b || !b->qkv_w || !b->qkv_b || !b->proj_w || !b->proj_b || !b->ls1 ||
            !b->ls2 || !b->norm2_w || !b->norm2_b || !b->ffn_in_w || !b->ffn_in_b || !b->ffn_out_w ||
            !b->ffn_out_b)
            missing = "a block slot";
    }
    if (missing)
        return error_set(err, errlen, BACKEND_EINVAL, "architecture description of %s leaves %s empty",
                    c->family ? c->family->name : "(no family)", missing);
    const float *periods = v->rope_periods;
    for (int k = 0; periods && k < MODEL_HEAD_DIM / 4; k++)
        if (!(periods[k] > 0) || periods[k] > 1e30f)
            return error_set(err, errlen, BACKEND_EINVAL, "rope.periods[%d] = %g is not a positive finite period", k,
                        (double)periods[k]);
    return 0;
}

int vit_create(struct vit **out, const struct model *m, struct backend *be, char *err, size_t errlen)
{
    struct vit *v = calloc(1, sizeof *v);
    const struct model_config *c = &m->config;
    if (!v)
        return error_set(err, errlen, BACKEND_ENOMEM, "out of memory");
    v->be = be;
    v->cfg = *c;
    struct family_tensor *ft = NULL;
    char why[256];
    int n = family_tensors(c, &ft, why, sizeof why);
    if (n < 0) {
        vit_destroy(v);
        return error_set(err, errlen, BACKEND_EINVAL, "%s", why);
    }
    v->blocks = calloc((size_t)c->depth, sizeof *v->blocks);
    v->weights = calloc((size_t)n + 1, sizeof *v->weights);
    if (!v->blocks || !v->weights) {
        free(ft);
        vit_destroy(v);
        return error_set(err, errlen, BACKEND_ENOMEM, "out of memory");
    }
    int rc = resolve_steps(v, c->family, err, errlen);
    for (int i = 0; i < n && !rc; i++)
        rc = upload(v, m, &ft[i], err, errlen);
    free(ft);
    if (!rc)
        rc = check_slots(v, err, errlen);
    if (rc) {
        vit_destroy(v);
        return rc;
    }
    *out = v;
    return 0;
}

int vit_uploaded_tensors(const struct vit *v)
{
    return v->n_weights + (v->pos_stored != NULL) + (v->rope_periods != NULL);
}

void vit_destroy(struct vit *v)
{
    if (!v)
        return;
    const struct backend_ops *ops = v->be->ops;
    vit_release_activations(v);
    ops->release(v->be, v->pos);
    ops->release(v->be, v->rope);
    for (int i = 0; i < v->n_weights; i++)
        ops->release(v->be, v->weights[i]);
    free(v->weights);
    free(v->blocks);
    free(v->pos_stored);
    free(v->rope_periods);
    free(v);
}
