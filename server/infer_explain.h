/* stopcal-infer --explain DIR: one image through an explain pass (vit_explain), its result object
 * with an "explain" member, and for FITS inputs the map files written into DIR. */
#ifndef STOPCAL_SERVER_INFER_EXPLAIN_H
#define STOPCAL_SERVER_INFER_EXPLAIN_H

#include "image.h"
#include "model.h"
#include "result_json.h"
#include "vit.h"

#include <jansson.h>
#include <stddef.h>

struct infer_explain_options {
    const char *dir;
    int rollout;   /* also the rollout (JSON) and its files */
    int all_heads; /* per-head grids in JSON and a per-head FITS cube */
};

/* tensor (3, S, S); img/bytes/len: the decoded FITS input and its file, or NULL/0 for --pixels
 * (then only the JSON is made). r: the result so far (name, rms); its scores are filled here.
 * *explain ← the "explain" object (with "files": the paths written). Returns 0, or -1 with err. */
int infer_explain_image(struct vit *v, const struct model *m, int image_size, const float *tensor,
                        const struct image *img, const void *bytes, size_t len,
                        const struct infer_explain_options *o, double threshold, struct stopcal_result *r,
                        json_t **explain, char *err, size_t errlen);

#endif
