/* LayerNorm over the last dimension (PyTorch semantics: biased variance, eps inside the sqrt). */
#ifndef STOPCAL_LAYERNORM_H
#define STOPCAL_LAYERNORM_H

/* out (rows, dim) dense; in rows are in_row_stride floats apart (dim for dense input). */
void layernorm_forward_cpu(float *out, const float *in, const float *weight, const float *bias,
                           int rows, int dim, int in_row_stride, float eps);

#endif
