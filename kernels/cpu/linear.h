/* Linear layer: out = epilogue(in · Wᵀ + bias), PyTorch nn.Linear weight layout (N, K). */
#ifndef STOPCAL_LINEAR_H
#define STOPCAL_LINEAR_H

#include "backend.h"

/* out (M, N), in (M, K), weight (N, K), bias (N) or NULL. */
void linear_forward_cpu(float *out, const float *in, const float *weight, const float *bias, int m,
                        int n, int k, enum linear_epilogue epilogue);

#endif
