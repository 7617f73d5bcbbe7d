/* The native API, POST /v1/predict: one raw FITS body (its name from ?name=) or multipart with
 * one or more FITS files (each named by its filename); ?threshold=, ?model=. */
#include "job.h"

#include "multipart.h"
#include "utf8.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static int check_v1_headers(struct request *rq, struct failure *f)
{
    const char *name = http_query(rq, "name");
    snprintf(rq->name, sizeof rq->name, "%s", name && *name ? name : "body");
    const char *th = http_query(rq, "threshold");
    if (th) {
        char *end;
        double t = strtod(th, &end);
        if (end == th || *end || !(t >= 0 && t <= 1))
            return failf(f, 400, "threshold '%s': expected a number in [0, 1]", th);
        rq->threshold = t;
    }
    return 0;
}

static int parse_v1(struct job *j, struct failure *f)
{
    struct request *rq = j->rq;
    const struct server_config *cfg = j->srv->cfg;
    if (rq->body_len == 0)
        return failf(f, 400, "empty body: send one FITS file, or multipart/form-data with FITS files");
    if (strncasecmp(rq->content_type, "multipart/form-data", 19) != 0) {
        if (job_alloc_images(j, 1, job_fits_decode_estimate(cfg, rq->body_len), f))
            return -1;
        j->images[0].bytes = rq->body;
        j->images[0].len = rq->body_len;
        utf8_sanitize(j->images[0].name, sizeof j->images[0].name, rq->name);
        return 0;
    }
    char boundary[128], err[256];
    if (multipart_boundary(rq->content_type, boundary, sizeof boundary, err, sizeof err))
        return failf(f, 400, "%s", err);
    struct multipart_part *parts = calloc((size_t)cfg->max_images, sizeof *parts);
    if (!parts)
        return failf(f, 503, "out of memory; retry later");
    int too_many, n = multipart_parse(rq->body, rq->body_len, boundary, parts, cfg->max_images, &too_many, err,
                                      sizeof err);
    if (n < 0) {
        free(parts);
        return failf(f, too_many ? 413 : 400, "%s%s", err, too_many ? " (--max-images)" : "");
    }
    long long estimate = 0;
    for (int i = 0; i < n; i++) {
        if (!parts[i].filename[0]) {
            failf(f, 400, "multipart part '%s' is not a file (send files with filename=...)", parts[i].name);
            free(parts);
            return -1;
        }
        estimate += job_fits_decode_estimate(cfg, parts[i].len);
    }
    if (job_alloc_images(j, n, estimate, f)) {
        free(parts);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        j->images[i].bytes = parts[i].data;
        j->images[i].len = parts[i].len;
        utf8_sanitize(j->images[i].name, sizeof j->images[i].name, parts[i].filename);
    }
    free(parts);
    return 0;
}

static void answer_v1(struct job *j)
{
    const struct batcher_model_info *m = job_model(j);
    json_t *results = json_array();
    for (int i = 0; results && i < j->n; i++) {
        struct stopcal_result r;
        job_fill_result(j, i, &r);
        json_array_append_new(results, result_to_json(&r));
    }
    /* N images in, N results out, or an error: never a shorter list. */
    if (!results || json_array_size(results) != (size_t)j->n) {
        json_decref(results);
        request_fail(j->rq, 500, "could not build the results of %d images (out of memory)", j->n);
        return;
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

static const char *const v1_media_types[] = {"multipart/form-data", "application/fits", "image/fits",
                                             "application/octet-stream", "application/gzip",
                                             "application/x-gzip", NULL};

const struct api_handler api_v1_predict = {
    .media_types = v1_media_types,
    .media_hint = "send application/fits (one raw FITS file) or multipart/form-data (files)",
    .check_headers = check_v1_headers,
    .parse = parse_v1,
    .answer = answer_v1,
};
