/* Element-wise ops of the transformer block. */
#ifndef STOPCAL_ACTIVATIONS_H
#define STOPCAL_ACTIVATIONS_H

#include <stddef.h>

/* x (n) ← act(x), in place. */
void gelu_inplace_cpu(float *x, long n);
void relu_inplace_cpu(float *x, long n);

/* x (rows, cols) += bias (cols) on every row. */
void bias_add_cpu(float *x, const float *bias, long rows, int cols);

/* x (rows, dim) += gamma (dim) ⊙ y (rows, dim) */
void layerscale_residual_cpu(float *x, const float *y, const float *gamma, long rows, int dim);

/* out (rows, hidden) ← silu(in[:, :hidden]) ⊙ in[:, hidden:], in (rows, 2·hidden) */
void swiglu_forward_cpu(float *out, const float *in, long rows, int hidden);

#endif
