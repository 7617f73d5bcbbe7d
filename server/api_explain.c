/* POST /v1/explain: where the model looked. /v1/predict's bodies, query, limits, memory budget,
 * queue and deadlines (its handler parses the body), plus ?format=json|fits|png, heads=mean|all,
 * rollout=0|1. Each image's batcher item carries rows for an explain pass (vit_explain, run alone
 * on the inference thread); the answer is built here on a worker thread, since drawing a PNG or
 * writing a FITS map must not hold up inference: JSON (the result objects with an "explain"
 * member), a FITS map on the input's pixel grid with its WCS, or a PNG (models/explain).
 * GET / serves the page (page/index.html, compiled in). */
#include "job.h"

#include "explain_output.h"
#include "log.h"
#include "routes.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern const struct api_handler api_v1_predict;
const char *api_page_html(void); /* page_html.c, generated from page/index.html */

static int explain_options(struct request *rq, const char *format, const char *heads, const char *rollout,
                           char *msg, size_t msglen)
{
    struct explain_options *o = &rq->explain;
    snprintf(o->format, sizeof o->format, "json");
    o->all_heads = o->rollout = 0;
    if (format) {
        if (strcmp(format, "json") && strcmp(format, "fits") && strcmp(format, "png")) {
            snprintf(msg, msglen, "format '%s': expected json, fits or png", format);
            return 400;
        }
        snprintf(o->format, sizeof o->format, "%s", format);
    }
    if (heads) {
        if (strcmp(heads, "mean") && strcmp(heads, "all")) {
            snprintf(msg, msglen, "heads '%s': expected mean or all", heads);
            return 400;
        }
        o->all_heads = strcmp(heads, "all") == 0;
    }
    if (rollout) {
        if (strcmp(rollout, "0") && strcmp(rollout, "1")) {
            snprintf(msg, msglen, "rollout '%s': expected 0 or 1", rollout);
            return 400;
        }
        o->rollout = rollout[0] == '1';
    }
    if (o->all_heads && strcmp(o->format, "png") == 0) {
        snprintf(msg, msglen, "heads=all is a FITS cube (one plane per head): not drawable as a PNG; use "
                              "format=fits or json, or heads=mean");
        return 400;
    }
    if (o->all_heads && o->rollout && strcmp(o->format, "fits") == 0) {
        snprintf(msg, msglen, "rollout=1 maps the rollout, which averages the heads: heads=all applies to "
                              "the last block's map (rollout=0)");
        return 400;
    }
    return 0;
}

static int tokens_of(const struct model_config *c)
{
    const int g = c->input_size / c->patch_size;
    return 1 + c->num_registers + g * g;
}

static int explain_prepare(struct job *j, char *msg, size_t msglen)
{
    const struct explain_options *o = &j->rq->explain;
    const struct model_config *c = &job_model(j)->config;
    if (strcmp(o->format, "json") != 0 && j->n != 1) {
        snprintf(msg, msglen, "format=%s answers one map for one image; this request has %d images (send them "
                              "one at a time, or ask for format=json)",
                 o->format, j->n);
        return 400;
    }
    if (strcmp(o->format, "json") != 0 && !j->images[0].bytes) {
        snprintf(msg, msglen, "format=%s needs a FITS image", o->format);
        return 400;
    }
    const size_t T = (size_t)tokens_of(c), H = (size_t)c->num_heads;
    const size_t per_image = H * T + (o->rollout ? T : 0);
    /* The rows, the explain pass's host copy of the rollout's matrices (one image at a time), and
     * the answer: for a map, its planes on the input's grid, bounded by the decoder's estimate. */
    long long bytes = (long long)(per_image * (size_t)j->n * sizeof(float));
    if (o->rollout)
        bytes += (long long)((size_t)c->depth * T * T * sizeof(float));
    if (strcmp(o->format, "json") != 0) {
        long long px = (long long)j->images[0].len;
        if (px > j->srv->cfg->max_image_pixels)
            px = j->srv->cfg->max_image_pixels;
        bytes += (long long)explain_output_bytes(px, 1, o->all_heads ? (int)H : 1);
    }
    if (server_reserve(j->rq, bytes)) {
        snprintf(msg, msglen, "the server's memory budget for requests in flight is spent; retry later");
        return 503;
    }
    j->explain_rows = malloc(per_image * (size_t)j->n * sizeof(float));
    if (!j->explain_rows) {
        snprintf(msg, msglen, "out of memory for %d explained images; retry later", j->n);
        return 503;
    }
    for (int i = 0; i < j->n; i++) {
        struct job_image *im = &j->images[i];
        im->explain.cls = j->explain_rows + (size_t)i * per_image;
        im->explain.rollout = o->rollout ? im->explain.cls + H * T : NULL;
        im->item.explain = &im->explain;
    }
    return 0;
}

static int explain_of(const struct job *j, int i, struct explain_result *er)
{
    const struct model_config *c = &job_model(j)->config;
    const struct batcher_explain *x = &j->images[i].explain;
    return explain_result_init(er, x->cls, x->rollout, c->num_heads, c->num_registers,
                               c->input_size / c->patch_size);
}

static void answer_json(struct job *j)
{
    const struct batcher_model_info *m = job_model(j);
    json_t *results = json_array();
    for (int i = 0; i < j->n && results; i++) {
        struct stopcal_result r;
        struct explain_result er;
        job_fill_result(j, i, &r);
        json_t *obj = result_to_json(&r);
        if (!obj || explain_of(j, i, &er)) {
            json_decref(obj);
            json_decref(results);
            request_fail(j->rq, 503, "out of memory; retry later");
            return;
        }
        json_object_set_new(obj, "explain", explain_result_json(&er, j->rq->explain.all_heads));
        explain_result_free(&er);
        json_array_append_new(results, obj);
    }
    double queue, infer, now = server_now();
    job_timing(j, &queue, &infer);
    json_t *doc = json_pack("{s:{s:s, s:s}, s:s, s:s, s:o, s:{s:f, s:f, s:f, s:f}}", "model", "name", m->name,
                            "sha256", m->sha256, "stopcal_version", STOPCAL_VERSION, "request_id",
                            j->rq->request_id, "results", results, "timing_ms", "queue", queue * 1e3, "preprocess",
                            (j->t_prep_done - j->t_body) * 1e3, "inference", infer * 1e3, "total",
                            (now - j->rq->t_arrival) * 1e3);
    char *text = doc ? json_dumps(doc, JSON_COMPACT | JSON_REAL_PRECISION(9)) : NULL;
    json_decref(doc);
    request_finish(j->rq, 200, text, text ? strlen(text) : 0, "application/json", -1);
}

static void answer_map(struct job *j)
{
    const struct batcher_model_info *m = job_model(j);
    const struct server_config *cfg = j->srv->cfg;
    const struct explain_options *o = &j->rq->explain;
    const struct job_image *im = &j->images[0];
    struct image_limits limits = {(size_t)cfg->max_body_bytes, (uint64_t)cfg->max_image_pixels};
    struct image img;
    struct explain_result er;
    char err[512];
    /* The image decoded once more: the preprocessing kept only the model's tensor. */
    int rc = image_decode(&img, im->bytes, im->len, &limits, err, sizeof err);
    if (rc) {
        request_fail(j->rq, rc == IMAGE_ENOMEM ? 503 : 500, "%s: decoding the image again: %s", im->name, err);
        return;
    }
    if (explain_of(j, 0, &er)) {
        image_free(&img);
        request_fail(j->rq, 503, "out of memory; retry later");
        return;
    }
    struct stopcal_result r;
    job_fill_result(j, 0, &r);
    struct explain_output_meta meta = {m->name, m->sha256, r.continue_score, r.threshold,
                                       r.stop ? "stop" : "continue"};
    unsigned char *out = NULL;
    size_t len = 0;
    int png = strcmp(o->format, "png") == 0;
    rc = png ? explain_make_png(&er, o->rollout, &img, &meta, &out, &len, err, sizeof err)
             : explain_make_fits(&er, o->rollout, o->all_heads, &img, im->bytes, im->len, (size_t)cfg->max_body_bytes,
                                 &meta, &out, &len, err, sizeof err);
    explain_result_free(&er);
    image_free(&img);
    if (rc) {
        log_msg("error", "/v1/explain: %s", err);
        request_fail(j->rq, 500, "%s: cannot make the %s map: %s", im->name, o->format, err);
        return;
    }
    request_finish(j->rq, 200, (char *)out, len, png ? "image/png" : "application/fits", -1);
}

static void answer_task(void *arg)
{
    struct job *j = arg;
    if (strcmp(j->rq->explain.format, "json") == 0)
        answer_json(j);
    else
        answer_map(j);
}

/* On the inference thread: the map is made elsewhere. */
static void answer_explain(struct job *j)
{
    if (workpool_submit(j->srv->pool, answer_task, j))
        request_fail(j->rq, 503, "the service is shutting down");
}

static int check_explain_headers(struct request *rq, struct failure *f)
{
    if (api_v1_predict.check_headers(rq, f))
        return -1;
    int status = explain_options(rq, http_query(rq, "format"), http_query(rq, "heads"), http_query(rq, "rollout"),
                                 f->msg, sizeof f->msg);
    if (status)
        f->status = status;
    return status ? -1 : 0;
}

static int parse_explain(struct job *j, struct failure *f)
{
    if (api_v1_predict.parse(j, f))
        return -1;
    int status = explain_prepare(j, f->msg, sizeof f->msg);
    if (status)
        f->status = status;
    return status ? -1 : 0;
}

static const char *const explain_media_types[] = {"multipart/form-data", "application/fits", "image/fits",
                                                  "application/octet-stream", "application/gzip",
                                                  "application/x-gzip", NULL};

const struct api_handler api_v1_explain = {
    .media_types = explain_media_types, /* /v1/predict's */
    .media_hint = "send application/fits (one raw FITS file) or multipart/form-data (files)",
    .check_headers = check_explain_headers,
    .parse = parse_explain,
    .answer = answer_explain,
};

static int page(struct server *s, struct request *rq, struct api_answer *a)
{
    (void)s, (void)rq;
    a->text = strdup(api_page_html());
    a->len = a->text ? strlen(a->text) : 0;
    a->type = "text/html; charset=utf-8";
    return 200;
}

const struct api_handler api_page = {.get = page};
