/* DINOv3's RoPE angles for one input grid, computed once per resolution (as posembed.c resizes
 * DINOv2's table): the table the rope op (backend.h) reads. */
#ifndef STOPCAL_ROPE_TABLE_H
#define STOPCAL_ROPE_TABLE_H

/* out (grid_h · grid_w, 64) = per patch (row i, column j, row-major) [cos a (32) | sin a (32)] with
 * a[k] = 2π·c_h / periods[k] and a[16 + k] = 2π·c_w / periods[k] for k < 16, where
 * c_h = 2·(i + 0.5)/grid_h − 1 and c_w = 2·(j + 0.5)/grid_w − 1 (eval mode, coordinates normalised
 * per axis, no shift/jitter/rescale: dinov3/layers/rope_position_encoding.py). Computed in fp32
 * in the release's order (coordinate, then 2π·c, then / period), cos and sin correctly rounded. */
void rope_table_compute(float *out, const float *periods, int grid_h, int grid_w);

#endif
