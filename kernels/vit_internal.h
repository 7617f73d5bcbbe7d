/* What the parts of the engine share (vit_load.c builds a struct vit from a model and its family's
 * description, vit.c runs it); not for other users. */
#ifndef STOPCAL_VIT_INTERNAL_H
#define STOPCAL_VIT_INTERNAL_H

#include "family.h"
#include "vit.h"

struct vit_block {
    void *norm1_w, *norm1_b; /* (D) */
    void *qkv_w, *qkv_b;     /* (3D, D), (3D) */
    void *proj_w, *proj_b;   /* (D, D), (D) */
    void *ls1, *ls2;         /* (D) LayerScale */
    void *norm2_w, *norm2_b; /* (D) */
    void *ffn_in_w, *ffn_in_b;   /* mlp: fc1 (F, D); swiglu: w12 (2F, D) */
    void *ffn_out_w, *ffn_out_b; /* mlp: fc2 (D, F); swiglu: w3 (D, F) */
};

/* The steps a description's forward lists may name (families.json "forward"). */
enum vit_step {
    STEP_POS_EMBED_RESIZE, STEP_ROPE_TABLE,                            /* per resolution */
    STEP_PATCH_EMBED,                                                  /* embed */
    STEP_NORM1, STEP_QKV, STEP_ROPE, STEP_ATTENTION, STEP_PROJ, STEP_LS1_RESIDUAL, STEP_NORM2,
    STEP_FFN, STEP_LS2_RESIDUAL,                                       /* block */
    STEP_FINAL_NORM_CLS, STEP_HEAD,                                    /* head */
};
struct vit {
    struct backend *be;
    struct model_config cfg;
    enum vit_step steps[FAMILY_STAGES][FAMILY_MAX_STEPS];
    int n_steps[FAMILY_STAGES];
    void **weights;          /* every uploaded tensor, in the description's order (to release) */
    int n_weights;
    void *pos_stored;        /* host float copy (1 + G², D) for re-gridding (dinov2) */
    void *rope_periods;      /* host float copy (16) of rope.periods (dinov3) */
    void *cls, *registers;   /* (D), (R, D) */
    void *patch_w, *patch_b; /* (D, 3·P·P), (D) */
    struct vit_block *blocks;
    void *norm_w, *norm_b;   /* (D) */
    void *head1_w, *head1_b; /* (H, D), (H) */
    void *head2_w, *head2_b; /* (1, H), (1) */

    void *pos;      /* (1 + g², D) for pos_grid */
    int pos_grid;   /* g the table is resized for, 0 = none yet */
    void *rope;     /* (g², 64) cos|sin for rope_grid (rope_table.h) */
    int rope_grid;

    int max_batch, image_size; /* what the buffers below are reserved for */
    void *pixels;   /* (B, 3, S, S) */
    void *x;        /* (B, T, D) residual stream */
    void *h;        /* (B, T, D) sublayer output */
    void *wide;     /* (B, T, max(3D, F_in)) qkv, then the FFN's first projection */
    /* GEMM inputs, each read only by a linear op: in buffers of their own (ops->alloc_gemm_input)
     * where the backend keeps them in its GEMMs' form (be->gemm_inputs_apart), else fp32 with
     * normed the same buffer as h and hidden as wide, as they always were. */
    void *normed;   /* (B, T, D) LayerNorm's output, read by qkv and the FFN's first linear */
    void *attn;     /* (B, T, D) attention's output, read by proj */
    void *hidden;   /* (B, T, F) MLP: GELU(fc1), read by fc2 */
    void *gated;    /* (B, T, F) SwiGLU only: its output, read by the FFN's last linear */
    void *cls_norm; /* (B, D) */
    void *head_hidden; /* (B, H) */
    void *logits;   /* (B) */
};

/* Drop the activation buffers (and the backend's recordings that point at them). */
void vit_release_activations(struct vit *v);

#endif
