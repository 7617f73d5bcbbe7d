/* Multi-head self-attention core: softmax(q·kᵀ/√64)·v per head, no mask, head dim 64. */
#ifndef STOPCAL_ATTENTION_H
#define STOPCAL_ATTENTION_H

#include <stddef.h>

/* Scratch floats attention_forward_cpu needs for `tokens` tokens to use every OpenMP thread (one
 * block of score rows per thread). */
size_t attention_scratch_floats_cpu(int tokens);

/* out (B, T, H·64) from qkv (B, T, 3·H·64) laid out [q heads | k heads | v heads] per token.
 * scratch holds scratch_floats floats (at least one block: min(T, 256)·T); fewer than
 * attention_scratch_floats_cpu(T) just means fewer threads. */
void attention_forward_cpu(float *out, const float *qkv, int batch, int tokens, int heads,
                           float *scratch, size_t scratch_floats);

#endif
