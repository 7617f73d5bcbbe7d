/* RoPE on the CPU (backend.h's rope op). */
#ifndef STOPCAL_ROPE_CPU_H
#define STOPCAL_ROPE_CPU_H

/* qkv (B, T, 3·H·64) in place, q and k of tokens [prefix, T); table (T − prefix, 64) = [cos | sin]. */
void rope_forward_cpu(float *qkv, const float *table, int batch, int tokens, int heads, int prefix);

#endif
