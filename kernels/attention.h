/* Multi-head self-attention core: softmax(q·kᵀ/√64)·v per head, no mask, head dim 64. */
#ifndef STOPCAL_ATTENTION_H
#define STOPCAL_ATTENTION_H

#include <stddef.h>

/* Scratch floats attention_forward_cpu needs for `tokens` tokens (one tokens×tokens score matrix). */
size_t attention_scratch_floats_cpu(int tokens);

/* out (B, T, H·64) from qkv (B, T, 3·H·64) laid out [q heads | k heads | v heads] per token. */
void attention_forward_cpu(float *out, const float *qkv, int batch, int tokens, int heads,
                           float *scratch);

#endif
