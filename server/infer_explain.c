/* The explain pass of stopcal-infer, and the files it writes: NAME.attention.fits/.png (the last
 * block's CLS attention, mean of the heads, or a per-head cube with --heads all) and with
 * --rollout NAME.rollout.fits/.png, NAME being the input's file name without its directory. */
#include "infer_explain.h"

#include "explain_output.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int write_file(const char *path, const unsigned char *data, size_t len, char *err, size_t errlen)
{
    FILE *f = fopen(path, "wb");
    if (!f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    size_t put = fwrite(data, 1, len, f);
    if (fclose(f) != 0 || put != len) {
        snprintf(err, errlen, "%s: write failed", path);
        return -1;
    }
    return 0;
}

static int make_files(const struct explain_result *er, int rollout, const struct infer_explain_options *o,
                      const struct image *img, const void *bytes, size_t len,
                      const struct explain_output_meta *meta, const char *base, json_t *files, char *err,
                      size_t errlen)
{
    const char *kind = rollout ? "rollout" : "attention";
    char path[4096];
    unsigned char *out;
    size_t out_len;
    if (explain_make_fits(er, rollout, o->all_heads, img, bytes, len, (size_t)1 << 30, meta, &out, &out_len, err,
                          errlen))
        return -1;
    snprintf(path, sizeof path, "%s/%s.%s.fits", o->dir, base, kind);
    int rc = write_file(path, out, out_len, err, errlen);
    free(out);
    if (rc)
        return -1;
    json_array_append_new(files, json_string(path));
    if (explain_make_png(er, rollout, img, meta, &out, &out_len, err, errlen))
        return -1;
    snprintf(path, sizeof path, "%s/%s.%s.png", o->dir, base, kind);
    rc = write_file(path, out, out_len, err, errlen);
    free(out);
    if (rc)
        return -1;
    json_array_append_new(files, json_string(path));
    return 0;
}

int infer_explain_image(struct vit *v, const struct model *m, int image_size, const float *tensor,
                        const struct image *img, const void *bytes, size_t len,
                        const struct infer_explain_options *o, double threshold, struct stopcal_result *r,
                        json_t **explain, char *err, size_t errlen)
{
    *explain = NULL;
    const struct model_config *c = &m->config;
    const int g = image_size / c->patch_size, T = vit_tokens(v, image_size), H = vit_heads(v);
    float *cls = malloc((size_t)H * T * sizeof *cls), *roll = o->rollout ? malloc((size_t)T * sizeof *roll) : NULL;
    float logit;
    struct explain_result er = {0};
    int rc = -1;
    if (!cls || (o->rollout && !roll)) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    if (vit_explain(v, tensor, image_size, &logit, cls, roll, err, errlen))
        goto out;
    char name[256];
    snprintf(name, sizeof name, "%s", r->name);
    result_from_logit(r, name, logit, threshold, r->precision); /* the caller set which */
    if (explain_result_init(&er, cls, roll, H, c->num_registers, g)) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    *explain = explain_result_json(&er, o->all_heads);
    if (!*explain) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    if (img) {
        const char *base = strrchr(r->name, '/');
        base = base ? base + 1 : r->name;
        struct explain_output_meta meta = {m->config.name, m->sha256, r->continue_score, threshold,
                                           r->stop ? "stop" : "continue"};
        json_t *files = json_array();
        json_object_set_new(*explain, "files", files);
        if (make_files(&er, 0, o, img, bytes, len, &meta, base, files, err, errlen) ||
            (o->rollout && make_files(&er, 1, o, img, bytes, len, &meta, base, files, err, errlen)))
            goto out;
    }
    rc = 0;
out:
    if (rc && *explain) {
        json_decref(*explain);
        *explain = NULL;
    }
    explain_result_free(&er);
    free(cls);
    free(roll);
    return rc;
}
