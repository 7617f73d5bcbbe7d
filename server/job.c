/* The path of a prediction request after its body has arrived (job.h). */
#include "job.h"
#include "error_message.h"

#include "gzip_inflate.h"
#include "preprocess.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int failf(struct failure *f, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    error_vset(f->msg, sizeof f->msg, -1, fmt, ap);
    va_end(ap);
    f->status = status;
    return -1;
}

const struct batcher_model_info *job_model(const struct job *j) { return batcher_model(j->srv->batcher, j->model); }

void job_free(struct request *rq)
{
    struct job *j = rq->job;
    if (!j)
        return;
    json_decref(j->v2_id);
    free(j->explain_rows);
    for (int i = 0; j->images && i < j->n; i++)
        free(j->images[i].inflated);
    free(j->images);
    free(j->tensors);
    free(j);
    rq->job = NULL;
}

/* Room for n images of the model: the tensors, and for FITS a bound on the decoded pixels. */
int job_alloc_images(struct job *j, int n, long long extra_bytes, struct failure *f)
{
    const size_t plane = (size_t)3 * j->size * j->size;
    if (server_reserve(j->rq, (long long)(n * plane * sizeof(float)) + extra_bytes))
        return failf(f, 503, "the server's memory budget for requests in flight is spent; retry later");
    j->images = calloc((size_t)n, sizeof *j->images);
    j->tensors = malloc((size_t)n * plane * sizeof(float));
    if (!j->images || !j->tensors)
        return failf(f, 503, "out of memory for %d images; retry later", n);
    j->n = n;
    for (int i = 0; i < n; i++) {
        j->images[i].job = j;
        j->images[i].tensor = j->tensors + (size_t)i * plane;
    }
    return 0;
}

/* Plain FITS: at most 8 bytes of float64 per stored byte. gzip can expand more; bounded by the
 * decompressed-bytes ceiling the image library enforces. */
long long job_fits_decode_estimate(const struct server_config *cfg, size_t len)
{
    long long px = (long long)len;
    if (px > cfg->max_image_pixels)
        px = cfg->max_image_pixels;
    return 8 * px;
}

void job_fill_result(const struct job *j, int i, struct stopcal_result *r)
{
    const struct job_image *im = &j->images[i];
    result_from_logit(r, im->name, im->item.logit, j->threshold, job_model(j)->precision);
    r->has_rms = im->has_rms;
    r->rms = im->rms;
    r->nonfinite_pixels = im->nonfinite;
}

void job_timing(const struct job *j, double *queue, double *infer)
{
    double first_start = 0, last_end = 0;
    for (int i = 0; i < j->n; i++) {
        const struct batcher_item *it = &j->images[i].item;
        if (i == 0 || it->t_started < first_start)
            first_start = it->t_started;
        if (it->t_finished > last_end)
            last_end = it->t_finished;
    }
    *queue = first_start - j->t_prep_done;
    *infer = last_end - first_start;
}

/* ---- the pipeline ------------------------------------------------------------------------------ */

static void on_item_done(struct batcher_item *it)
{
    struct job_image *im = it->owner;
    struct job *j = im->job;
    if (atomic_fetch_sub(&j->pending, 1) != 1)
        return;
    /* The last image of the request: answer it. */
    long failed = 0;
    int worst = BATCHER_OK;
    for (int i = 0; i < j->n; i++)
        if (j->images[i].item.status != BATCHER_OK) {
            failed++;
            if (!worst)
                worst = j->images[i].item.status;
        }
    metrics_images(j->srv->metrics, j->model, failed, j->n - failed);
    switch (worst) {
    case BATCHER_OK:
        for (int i = 0; i < j->n; i++) {
            struct stopcal_result r;
            job_fill_result(j, i, &r);
            metrics_score(j->srv->metrics, j->model, r.continue_score);
        }
        j->rq->route->handler->answer(j);
        return;
    case BATCHER_EDEADLINE: request_fail(j->rq, 504, "the request's deadline passed before inference"); return;
    case BATCHER_ENOMEM: request_fail(j->rq, 503, "the compute device ran out of memory for this batch; retry"); return;
    case BATCHER_EDEVICE: request_fail(j->rq, 503, "the compute device failed; the service is restarting"); return;
    case BATCHER_ESHUTDOWN: request_fail(j->rq, 503, "the service is shutting down"); return;
    default: request_fail(j->rq, 500, "inference failed (see the server log)"); return;
    }
}

static void enqueue(struct job *j)
{
    struct request *rq = j->rq;
    j->t_prep_done = server_now();
    metrics_stage(j->srv->metrics, j->model, STAGE_PREPROCESS, j->t_prep_done - j->t_body);
    rq->incoming_counted = 0; /* batcher_submit withdraws it */
    if (j->t_prep_done > rq->deadline) {
        batcher_incoming(j->srv->batcher, j->model, -1);
        metrics_images(j->srv->metrics, j->model, j->n, 0);
        request_fail(rq, 504, "the request's deadline passed before inference");
        return;
    }
    struct batcher_item **items = malloc((size_t)j->n * sizeof *items);
    if (!items) {
        batcher_incoming(j->srv->batcher, j->model, -1);
        request_fail(rq, 503, "out of memory; retry later");
        return;
    }
    for (int i = 0; i < j->n; i++) {
        struct job_image *im = &j->images[i];
        im->item.pixels = im->tensor;
        im->item.deadline = rq->deadline;
        im->item.done = on_item_done;
        im->item.owner = im;
        items[i] = &im->item;
    }
    atomic_store(&j->pending, j->n);
    int n = j->n, model = j->model;
    struct batcher *e = j->srv->batcher;
    struct metrics *metrics = j->srv->metrics;
    /* After a successful submit the job may already be answered and freed: touch nothing of it. */
    int rc = batcher_submit(e, model, items, n, 1);
    free(items);
    if (rc == BATCHER_OK)
        return;
    metrics_images(metrics, model, n, 0);
    if (rc == BATCHER_EQUEUEFULL)
        request_fail(rq, 503, "the queue is full (%d images); retry later", j->srv->cfg->max_queue);
    else if (rc == BATCHER_EDEVICE)
        request_fail(rq, 503, "the compute device failed; the service is restarting");
    else
        request_fail(rq, 503, "the service is shutting down");
}

static void after_preprocessing(struct job *j)
{
    for (int i = 0; i < j->n; i++) {
        struct job_image *im = &j->images[i];
        if (im->prep_status) {
            metrics_images(j->srv->metrics, j->model, j->n, 0);
            request_fail(j->rq, im->prep_status, "%s: %s", im->name, im->prep_err);
            return;
        }
    }
    enqueue(j);
}

static int reserve_for(void *rq, size_t n) { return server_reserve(rq, (long long)n); }

static int gzip_status(int rc) { return rc == IMAGE_ETOOBIG ? 413 : rc == IMAGE_ENOMEM ? 503 : 400; }

/* A .fits.gz inflated here rather than in the image library, so that every decompressed byte is
 * counted against the memory budget before it is produced (a 135 KB file can inflate to hundreds
 * of MB), and the decoded-pixel estimate follows the inflated size. Returns 0, or −1 with
 * prep_status set. */
static int inflate_image(struct job_image *im)
{
    struct job *j = im->job;
    const struct server_config *cfg = j->srv->cfg;
    size_t n;
    char err[256];
    int rc = gzip_inflate_budget(im->bytes, im->len, (size_t)cfg->max_body_bytes, reserve_for, j->rq, &im->inflated,
                                 &n, err, sizeof err);
    if (rc != IMAGE_OK) {
        im->prep_status = gzip_status(rc);
        snprintf(im->prep_err, sizeof im->prep_err, "%s", err);
        return -1;
    }
    long long more = job_fits_decode_estimate(cfg, n) - job_fits_decode_estimate(cfg, im->len);
    if (more > 0 && server_reserve(j->rq, more)) {
        im->prep_status = 503;
        snprintf(im->prep_err, sizeof im->prep_err,
                 "the server's memory budget for requests in flight is spent; retry later");
        return -1;
    }
    im->bytes = im->inflated;
    im->len = n;
    return 0;
}

static void preprocess_task(void *arg)
{
    struct job_image *im = arg;
    struct job *j = im->job;
    const struct server_config *cfg = j->srv->cfg;
    if (gzip_is_gzip(im->bytes, im->len) && inflate_image(im)) {
        if (atomic_fetch_sub(&j->pending, 1) == 1)
            after_preprocessing(j);
        return;
    }
    struct image_limits limits = image_limits_default();
    limits.max_bytes = (size_t)cfg->max_body_bytes;
    limits.max_pixels = (uint64_t)cfg->max_image_pixels;
    struct preprocess_stats stats = {0};
    /* noise_seed is fixed so that the opt-in noise, when a model asks for it, is reproducible. */
    int rc = image_to_tensor(im->tensor, im->bytes, im->len, &limits, &job_model(j)->config, 0, &stats,
                             im->prep_err, sizeof im->prep_err);
    im->prep_status = rc == IMAGE_OK ? 0 : rc == IMAGE_ETOOBIG ? 413 : rc == IMAGE_ENOMEM ? 503
                                                                 : rc == IMAGE_ECONFIG ? 500 : 400;
    im->has_rms = rc == IMAGE_OK;
    im->rms = stats.rms;
    im->nonfinite = (long)stats.nonfinite_pixels;
    if (atomic_fetch_sub(&j->pending, 1) == 1)
        after_preprocessing(j);
}

void job_start(void *arg)
{
    struct request *rq = arg;
    struct server *s = rq->srv;
    struct job *j = calloc(1, sizeof *j);
    if (!j) {
        request_fail(rq, 503, "out of memory; retry later");
        return;
    }
    rq->job = j;
    j->rq = rq;
    j->srv = s;
    j->model = rq->model;
    j->size = job_model(j)->config.input_size;
    j->threshold = rq->threshold >= 0 ? rq->threshold : job_model(j)->config.threshold;
    j->t_body = server_now();
    struct failure f = {0};
    if (j->t_body > rq->deadline) {
        request_fail(rq, 504, "the request's deadline passed while its body was received");
        return;
    }
    if (rq->gzip_body) { /* Content-Encoding: gzip, decoded within --max-body-bytes and the budget */
        unsigned char *plain;
        size_t n;
        char err[256];
        if (!gzip_is_gzip(rq->body, rq->body_len)) {
            request_fail(rq, 400, "Content-Encoding: gzip, but the body is not gzip data");
            return;
        }
        int rc = gzip_inflate_budget(rq->body, rq->body_len, (size_t)s->cfg->max_body_bytes, reserve_for, rq, &plain,
                                     &n, err, sizeof err);
        if (rc != IMAGE_OK) {
            request_fail(rq, gzip_status(rc), "Content-Encoding: gzip: %s", err);
            return;
        }
        free(rq->body);
        rq->body = plain;
        rq->body_len = rq->body_cap = n;
    }
    if (rq->route->handler->parse(j, &f) != 0) {
        request_fail(rq, f.status, "%s", f.msg);
        return;
    }
    rq->images = j->n;
    if (!j->images[0].bytes) { /* pixels: already the model's input */
        enqueue(j);
        return;
    }
    /* FITS: one task per image, this thread taking the first. */
    atomic_store(&j->pending, j->n);
    for (int i = j->n - 1; i >= 1; i--)
        if (workpool_submit(s->pool, preprocess_task, &j->images[i])) {
            j->images[i].prep_status = 503;
            snprintf(j->images[i].prep_err, sizeof j->images[i].prep_err, "the service is shutting down");
            atomic_fetch_sub(&j->pending, 1); /* image 0 is still ahead, so this is never the last */
        }
    preprocess_task(&j->images[0]);
}
