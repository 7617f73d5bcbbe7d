/* DINOv2's interpolate_pos_encoding: the stored G×G positional table resized to the input's grid,
 * computed once per resolution on the host (both backends use the result). */
#ifndef STOPCAL_POSEMBED_H
#define STOPCAL_POSEMBED_H

#include "model.h"

/* out (1 + g², D) ← pos (1 + G², D). When g = G the table is copied as stored (DINOv2 returns
 * early there). Returns 0, or -1 when out of memory. */
int pos_embed_resize(float *out, const float *pos, int stored_grid, int grid, int dim,
                     enum model_pos_interp mode);

#endif
