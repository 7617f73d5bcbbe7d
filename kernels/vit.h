/* The DINOv2 stop/continue classifier's forward pass, driven through a backend. */
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

/* Tokens per image at image_size: 1 + registers + (S/P)². */
int vit_tokens(const struct vit *v, int image_size);

#endif
