/* The attention probabilities for explain passes (backend.h, attention_probs): only run when a
 * request asks where the model looked, so plain BLAS + a scalar softmax, no fused tiles. */
#ifndef STOPCAL_ATTENTION_PROBS_H
#define STOPCAL_ATTENTION_PROBS_H

#include <stddef.h>

/* Scratch floats attention_probs_cpu needs (for mean_heads; 0 otherwise). */
size_t attention_probs_scratch_floats(int tokens, int queries, int mean_heads);

/* probs (B, H, Q, T), or (B, Q, T) averaged over heads, from qkv (B, T, 3·H·64). */
void attention_probs_cpu(float *probs, const float *qkv, int batch, int tokens, int heads, int queries,
                         int mean_heads, float *scratch);

#endif
