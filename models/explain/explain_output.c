/* The maps back-projected onto the input's pixel grid, then handed to the FITS or PNG writer. */
#include "explain_output.h"

#include <stdio.h>
#include <stdlib.h>

#include "explain_fits.h"
#include "explain_map.h"
#include "explain_png.h"

size_t explain_output_bytes(long long width, long long height, int planes)
{
    /* the planes, the file made of them, and the PNG's canvas */
    return (size_t)width * (size_t)height * sizeof(float) * (size_t)planes * 2 + (size_t)3 * 600 * 700;
}

int explain_make_fits(const struct explain_result *r, int rollout, int all_heads, const struct image *img,
                      const void *bytes, size_t len, size_t max_bytes, const struct explain_output_meta *meta,
                      unsigned char **out, size_t *out_len, char *err, size_t errlen)
{
    if (rollout && !r->rollout_map) {
        snprintf(err, errlen, "no rollout was computed");
        return -1;
    }
    const int planes = all_heads && !rollout ? r->heads : 1, P = r->grid * r->grid;
    const size_t plane = (size_t)img->width * (size_t)img->height;
    float *data = malloc(plane * planes * sizeof *data);
    if (!data) {
        snprintf(err, errlen, "out of memory for a %lld x %lld x %d map", (long long)img->width,
                 (long long)img->height, planes);
        return -1;
    }
    for (int k = 0; k < planes; k++) {
        const float *grid = rollout ? r->rollout_map : planes > 1 ? r->heads_map + (size_t)k * P : r->mean_map;
        explain_backproject(grid, r->grid, img->width, img->height, data + plane * k);
    }
    struct explain_fits_meta fm = {
        .model = meta->model,
        .sha256 = meta->sha256,
        .map = rollout ? "ROLLOUT" : "CLS-LAST",
        .heads = planes > 1 ? "ALL" : "MEAN",
        .continue_score = meta->continue_score,
        .threshold = meta->threshold,
        .decision = meta->decision,
        .grid = r->grid,
        .num_heads = r->heads,
        .num_registers = r->registers,
        .cls_self = rollout ? r->rollout_cls : r->cls_self,
        .patch_sum = rollout ? r->rollout_patch_sum : r->patch_sum,
        .registers = rollout ? r->rollout_reg : r->reg_mean,
    };
    int rc = explain_fits_write(data, planes, img->width, img->height, bytes, len, max_bytes, img->hdu, &fm, out,
                                out_len, err, errlen);
    free(data);
    return rc;
}

int explain_make_png(const struct explain_result *r, int rollout, const struct image *img,
                     const struct explain_output_meta *meta, unsigned char **out, size_t *out_len, char *err,
                     size_t errlen)
{
    if (rollout && !r->rollout_map) {
        snprintf(err, errlen, "no rollout was computed");
        return -1;
    }
    float *map = malloc((size_t)img->width * (size_t)img->height * sizeof *map);
    if (!map) {
        snprintf(err, errlen, "out of memory for a %lld x %lld map", (long long)img->width, (long long)img->height);
        return -1;
    }
    explain_backproject(rollout ? r->rollout_map : r->mean_map, r->grid, img->width, img->height, map);
    char label[128];
    if (rollout)
        snprintf(label, sizeof label, "ATTENTION ROLLOUT OVER ALL BLOCKS, CLS ROW");
    else
        snprintf(label, sizeof label, "CLS ATTENTION, LAST BLOCK, MEAN OF %d HEAD%s", r->heads,
                 r->heads == 1 ? "" : "S");
    struct explain_png_meta pm = {meta->model, meta->continue_score, meta->threshold, meta->decision, label};
    int rc = explain_png_render(img, map, &pm, out, out_len, err, errlen);
    free(map);
    return rc;
}
