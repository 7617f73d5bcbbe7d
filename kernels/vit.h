/* The stop/continue classifier's forward pass (DINOv2 and DINOv3 backbones, as the model family's
 * architecture description says), driven through a backend. */
#ifndef STOPCAL_VIT_H
#define STOPCAL_VIT_H

#include "backend.h"
#include "model.h"

#include <stddef.h>

struct vit;

/* Upload the model's weights to the backend once. The model may be closed afterwards. Returns 0,
 * or a BACKEND_E* code with a message in err. */
int vit_create(struct vit **out, const struct model *m, struct backend *be, char *err, size_t errlen);
void vit_destroy(struct vit *v);

/* Size every buffer for batches up to max_batch at image_size (a multiple of the patch size), so
 * later forward passes within those bounds allocate nothing. Called implicitly by vit_forward when
 * a pass exceeds the reservation. */
int vit_reserve(struct vit *v, int max_batch, int image_size, char *err, size_t errlen);

/* logits[b] for b < batch ← the "continue" logit of image b; pixels (batch, 3, S, S) host fp32,
 * S = image_size. Returns 0 or a BACKEND_E* code (BACKEND_EDEVICE: the backend is unusable). */
int vit_forward(struct vit *v, const float *pixels, int batch, int image_size, float *logits,
                char *err, size_t errlen);

/* Where the model looked, for one image (an explain pass: opt-in, never part of vit_forward, so
 * ordinary passes neither compute nor store any of it). *logit as vit_forward gives it; cls (H, T)
 * ← the last block's attention from the CLS token to every token, per head, in token order (0 the
 * CLS token itself, 1..R the registers, then the g² patches row by row of the model's input);
 * rollout (T), when not NULL, ← the CLS row of the attention rollout over all blocks: the product
 * Â_L ⋯ Â_1 of the head-averaged matrices with the residual added, Â = (A + I)/2 with rows
 * renormalised to sum to 1. Runs at batch 1 without graphs; rollout keeps depth × T² floats on the
 * host for the pass. Returns 0 or a BACKEND_E* code with err (a backend without attention_probs
 * answers BACKEND_EINVAL). */
int vit_explain(struct vit *v, const float *pixels, int image_size, float *logit, float *cls, float *rollout,
                char *err, size_t errlen);

/* How many of the model's tensors the engine took (uploaded to the backend or kept on the host
 * for a per-resolution table): every tensor of the description, for tests. */
int vit_uploaded_tensors(const struct vit *v);

/* Attention heads of the model. */
int vit_heads(const struct vit *v);

/* Tokens per image at image_size: 1 + registers + (S/P)². */
int vit_tokens(const struct vit *v, int image_size);

#endif
