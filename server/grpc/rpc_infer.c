/* ModelInfer over gRPC: the same path as a REST v2 request — unpack and check (a worker) → FITS
 * preprocessing (workers, in parallel) → the batcher's queue → the answer (built on the
 * inference thread). Inputs come as Triton's clients send them: raw_input_contents[0] (BYTES
 * elements each behind a 4-byte little-endian length, or little-endian FP32/BF16), or the typed
 * contents (bytes_contents, fp32_contents). Outputs go back as raw_output_contents. */
#include "rpc.h"

#include "grpc_service.pb-c.h"
#include "metrics.h"
#include "preprocess.h"
#include "result_json.h"
#include "triton.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct rjob;

struct rimage {
    struct batcher_item item;
    struct rjob *job;
    const unsigned char *bytes; /* FITS inside the request message; NULL for pixels */
    size_t len;
    float *tensor;
    int prep_status; /* HTTP-style status of a preprocessing failure; 0 = fine */
    char prep_err[320];
};

struct rjob {
    struct rpc_request *req;
    struct server *srv;
    Inference__ModelInferRequest *msg;
    int model, form, size;
    double threshold;
    int n;
    struct rimage *images;
    float *tensors;
    atomic_int pending;
    int want_score, want_logit;
    double t_body, t_prep_done;
};

static const struct batcher_model_info *job_model(const struct rjob *j) { return batcher_model(j->srv->batcher, j->model); }

static void job_free(struct rjob *j)
{
    if (j->msg)
        inference__model_infer_request__free_unpacked(j->msg, NULL);
    free(j->images);
    free(j->tensors);
    free(j);
}

static void job_fail(struct rjob *j, grpc_status_code code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void job_fail(struct rjob *j, grpc_status_code code, const char *fmt, ...)
{
    char text[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    if (j->model >= 0)
        triton_stats_failure(j->model, j->form, server_now() - j->req->t_arrival);
    rpc_fail(j->req, code, "%s", text);
    job_free(j);
}

/* ---- checking the request ----------------------------------------------------------------------- */

static int alloc_images(struct rjob *j, int n, long long extra)
{
    const size_t plane = (size_t)3 * j->size * j->size;
    if (rpc_reserve(j->req, (long long)(n * plane * sizeof(float)) + extra))
        return -1;
    j->images = calloc((size_t)n, sizeof *j->images);
    j->tensors = malloc((size_t)n * plane * sizeof(float));
    if (!j->images || !j->tensors)
        return -1;
    j->n = n;
    for (int i = 0; i < n; i++) {
        j->images[i].job = j;
        j->images[i].tensor = j->tensors + (size_t)i * plane;
    }
    return 0;
}

static long long fits_estimate(const struct server_config *cfg, size_t len)
{
    long long px = (long long)len;
    return 8 * (px > cfg->max_image_pixels ? cfg->max_image_pixels : px);
}

/* Sets *n from shape[0] after checking it against the limits; returns 0, or a status with msg. */
static grpc_status_code batch_of(struct rjob *j, const Inference__ModelInferRequest__InferInputTensor *in, int *n,
                                 char *msg, size_t len)
{
    long long b = in->n_shape ? in->shape[0] : -1;
    if (b < 1) {
        snprintf(msg, len, "inputs[0].shape: shape[0] (the number of images) must be at least 1");
        return GRPC_STATUS_INVALID_ARGUMENT;
    }
    if (b > j->srv->cfg->max_images) {
        snprintf(msg, len, "inputs[0].shape: %lld images exceed the limit of %d per request (--max-images)", b,
                 j->srv->cfg->max_images);
        return GRPC_STATUS_RESOURCE_EXHAUSTED;
    }
    *n = (int)b;
    return GRPC_STATUS_OK;
}

static grpc_status_code parse_image(struct rjob *j, const Inference__ModelInferRequest__InferInputTensor *in,
                                    const ProtobufCBinaryData *raw, char *msg, size_t len)
{
    const struct server_config *cfg = j->srv->cfg;
    if (strcmp(in->datatype, "BYTES") != 0) {
        snprintf(msg, len, "inputs[0].datatype: 'image' is BYTES (one element per FITS file), not '%s'", in->datatype);
        return GRPC_STATUS_INVALID_ARGUMENT;
    }
    if (in->n_shape < 1 || in->n_shape > 2 || (in->n_shape == 2 && in->shape[1] != 1)) {
        snprintf(msg, len, "inputs[0].shape: 'image' takes [N] or [N,1]");
        return GRPC_STATUS_INVALID_ARGUMENT;
    }
    int n;
    grpc_status_code code = batch_of(j, in, &n, msg, len);
    if (code)
        return code;
    const unsigned char *at[4096];
    size_t lens[4096];
    long long estimate = 0;
    if (raw) { /* Triton's BYTES serialisation: a 4-byte little-endian length, then the bytes */
        size_t p = 0;
        for (int i = 0; i < n; i++) {
            if (raw->len - p < 4) {
                snprintf(msg, len, "raw_input_contents[0]: ends inside element %d's 4-byte length", i);
                return GRPC_STATUS_INVALID_ARGUMENT;
            }
            const unsigned char *b = raw->data + p;
            uint32_t l = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
            p += 4;
            if (l > raw->len - p) {
                snprintf(msg, len, "raw_input_contents[0]: element %d claims %u bytes, only %zu remain", i, l,
                         raw->len - p);
                return GRPC_STATUS_INVALID_ARGUMENT;
            }
            at[i] = raw->data + p;
            lens[i] = l;
            p += l;
        }
        if (p != raw->len) {
            snprintf(msg, len, "raw_input_contents[0]: %zu bytes follow the %d elements of shape[0]", raw->len - p, n);
            return GRPC_STATUS_INVALID_ARGUMENT;
        }
    } else {
        size_t have = in->contents ? in->contents->n_bytes_contents : 0;
        if (have != (size_t)n) {
            snprintf(msg, len, "inputs[0].contents.bytes_contents: %zu elements, shape says %d (or send "
                     "raw_input_contents)", have, n);
            return GRPC_STATUS_INVALID_ARGUMENT;
        }
        for (int i = 0; i < n; i++) {
            at[i] = in->contents->bytes_contents[i].data;
            lens[i] = in->contents->bytes_contents[i].len;
        }
    }
    for (int i = 0; i < n; i++)
        estimate += fits_estimate(cfg, lens[i]);
    if (alloc_images(j, n, estimate)) {
        snprintf(msg, len, "the server's memory budget for requests in flight is spent; retry later");
        return GRPC_STATUS_UNAVAILABLE;
    }
    for (int i = 0; i < n; i++) {
        j->images[i].bytes = at[i];
        j->images[i].len = lens[i];
    }
    return GRPC_STATUS_OK;
}

static float bf16_to_float(uint16_t h)
{
    uint32_t bits = (uint32_t)h << 16;
    float x;
    memcpy(&x, &bits, sizeof x);
    return x;
}

static grpc_status_code parse_pixels(struct rjob *j, const Inference__ModelInferRequest__InferInputTensor *in,
                                     const ProtobufCBinaryData *raw, char *msg, size_t len)
{
    const long long S = j->size;
    int bf16 = strcmp(in->datatype, "BF16") == 0;
    if (!bf16 && strcmp(in->datatype, "FP32") != 0) {
        snprintf(msg, len, "inputs[0].datatype: 'pixels' is FP32 (or BF16 as raw contents), not '%s'", in->datatype);
        return GRPC_STATUS_INVALID_ARGUMENT;
    }
    if (in->n_shape != 4 || (in->shape[1] != 1 && in->shape[1] != 3) || in->shape[2] != S || in->shape[3] != S) {
        snprintf(msg, len, "inputs[0].shape: 'pixels' takes [N,3,%lld,%lld] or [N,1,%lld,%lld] for model '%s'", S, S, S,
                 S, job_model(j)->name);
        return GRPC_STATUS_INVALID_ARGUMENT;
    }
    int n;
    grpc_status_code code = batch_of(j, in, &n, msg, len);
    if (code)
        return code;
    const int C = (int)in->shape[1];
    const size_t plane = (size_t)(S * S), per_image = (size_t)C * plane, count = (size_t)n * per_image;
    if (alloc_images(j, n, 0)) {
        snprintf(msg, len, "the server's memory budget for requests in flight is spent; retry later");
        return GRPC_STATUS_UNAVAILABLE;
    }
    if (raw) {
        size_t esize = bf16 ? 2 : 4;
        if (raw->len != count * esize) {
            snprintf(msg, len, "raw_input_contents[0]: %zu bytes, shape needs %zu", raw->len, count * esize);
            return GRPC_STATUS_INVALID_ARGUMENT;
        }
        for (int i = 0; i < n; i++) {
            const unsigned char *src = raw->data + (size_t)i * per_image * esize;
            float *dst = j->images[i].tensor;
            if (bf16)
                for (size_t k = 0; k < per_image; k++)
                    dst[k] = bf16_to_float((uint16_t)(src[2 * k] | src[2 * k + 1] << 8));
            else
                memcpy(dst, src, per_image * sizeof(float));
        }
    } else {
        size_t have = in->contents ? in->contents->n_fp32_contents : 0;
        if (bf16 || have != count) {
            snprintf(msg, len, "inputs[0].contents.fp32_contents: %zu values, shape needs %zu (BF16 goes as "
                     "raw_input_contents)", have, count);
            return GRPC_STATUS_INVALID_ARGUMENT;
        }
        for (int i = 0; i < n; i++)
            memcpy(j->images[i].tensor, in->contents->fp32_contents + (size_t)i * per_image, per_image * sizeof(float));
    }
    for (int i = 0; i < n; i++) {
        float *t = j->images[i].tensor;
        for (size_t k = 0; k < per_image; k++)
            if (!isfinite(t[k])) {
                snprintf(msg, len, "inputs[0]: image %d of 'pixels' holds a non-finite value", i);
                return GRPC_STATUS_INVALID_ARGUMENT;
            }
        if (C == 1) {
            memcpy(t + plane, t, plane * sizeof(float));
            memcpy(t + 2 * plane, t, plane * sizeof(float));
        }
    }
    return GRPC_STATUS_OK;
}

static grpc_status_code parse(struct rjob *j, char *msg, size_t len)
{
    Inference__ModelInferRequest *m = j->msg;
    for (size_t i = 0; i < m->n_parameters; i++) {
        const Inference__InferParameter *p = m->parameters[i]->value;
        if (strcmp(m->parameters[i]->key, "threshold") != 0)
            continue; /* Triton's clients add their own (binary_data_output, …); they change nothing here */
        double t = !p ? -1
                   : p->parameter_choice_case == INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_DOUBLE_PARAM ? p->double_param
                   : p->parameter_choice_case == INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_INT64_PARAM
                       ? (double)p->int64_param
                       : -1;
        if (!(t >= 0 && t <= 1)) {
            snprintf(msg, len, "parameters.threshold: expected a number (double_param) in [0, 1]");
            return GRPC_STATUS_INVALID_ARGUMENT;
        }
        j->threshold = t;
    }
    if (m->n_inputs != 1) {
        snprintf(msg, len, "inputs: %zu given, exactly one is taken ('image' for model '%s', or 'pixels' for '%s"
                 TRITON_PIXELS_SUFFIX "')", m->n_inputs, job_model(j)->name, job_model(j)->name);
        return GRPC_STATUS_INVALID_ARGUMENT;
    }
    if (m->n_raw_input_contents > 1) {
        snprintf(msg, len, "raw_input_contents: %zu entries for one input", m->n_raw_input_contents);
        return GRPC_STATUS_INVALID_ARGUMENT;
    }
    const Inference__ModelInferRequest__InferInputTensor *in = m->inputs[0];
    const ProtobufCBinaryData *raw = m->n_raw_input_contents ? &m->raw_input_contents[0] : NULL;
    if (raw && in->contents && (in->contents->n_bytes_contents || in->contents->n_fp32_contents)) {
        snprintf(msg, len, "inputs[0].contents: data given both there and in raw_input_contents[0]");
        return GRPC_STATUS_INVALID_ARGUMENT;
    }
    for (size_t i = 0; i < m->n_outputs; i++) {
        const char *on = m->outputs[i]->name;
        if (strcmp(on, "continue_score") == 0)
            j->want_score = 1;
        else if (strcmp(on, "logit") == 0)
            j->want_logit = 1;
        else {
            snprintf(msg, len, "outputs[%zu].name: unknown output '%s' (continue_score, logit)", i, on);
            return GRPC_STATUS_INVALID_ARGUMENT;
        }
    }
    if (!m->n_outputs)
        j->want_score = j->want_logit = 1;
    if (j->form == TRITON_FORM_PIXELS && strcmp(in->name, "pixels") != 0) {
        snprintf(msg, len, "inputs[0].name: model '%s' takes the input 'pixels' only (FITS files go to '%s' as "
                 "'image')", m->model_name, job_model(j)->name);
        return GRPC_STATUS_INVALID_ARGUMENT;
    }
    if (strcmp(in->name, "image") == 0)
        return parse_image(j, in, raw, msg, len);
    if (strcmp(in->name, "pixels") == 0)
        return parse_pixels(j, in, raw, msg, len);
    snprintf(msg, len, "inputs[0].name: unknown input '%s' (image or pixels)", in->name);
    return GRPC_STATUS_INVALID_ARGUMENT;
}

/* ---- the answer ---------------------------------------------------------------------------------- */

static void answer(struct rjob *j)
{
    const struct batcher_model_info *mi = job_model(j);
    int64_t shape[2] = {j->n, 1};
    Inference__ModelInferResponse__InferOutputTensor out[2], *outs[2];
    ProtobufCBinaryData raw[2];
    float *vals = malloc((size_t)2 * j->n * sizeof(float));
    if (!vals) {
        job_fail(j, GRPC_STATUS_UNAVAILABLE, "out of memory while building the answer");
        return;
    }
    int k = 0;
    for (int which = 0; which < 2; which++) {
        if (!(which == 0 ? j->want_score : j->want_logit))
            continue;
        inference__model_infer_response__infer_output_tensor__init(&out[k]);
        out[k].name = which == 0 ? "continue_score" : "logit";
        out[k].datatype = "FP32";
        out[k].n_shape = 2;
        out[k].shape = shape;
        float *v = vals + (size_t)k * j->n;
        for (int i = 0; i < j->n; i++) {
            struct stopcal_result r;
            result_from_logit(&r, "", j->images[i].item.logit, j->threshold, NULL); /* scores only */
            v[i] = which == 0 ? (float)r.continue_score : j->images[i].item.logit;
        }
        raw[k].data = (uint8_t *)v; /* little-endian hosts only (x86-64, aarch64), as the engine */
        raw[k].len = (size_t)j->n * sizeof(float);
        outs[k] = &out[k];
        k++;
    }
    /* As over REST: precision says what the scores were computed in ("fp32", "bf16"). */
    enum { N_PARAMS = 5 };
    Inference__InferParameter pv[N_PARAMS];
    Inference__ModelInferResponse__ParametersEntry pe[N_PARAMS], *params[N_PARAMS];
    const char *keys[N_PARAMS] = {"request_id", "model_sha256", "stopcal_version", "precision", "threshold"};
    const char *svals[N_PARAMS - 1] = {j->req->request_id, mi->sha256, STOPCAL_VERSION, mi->precision};
    for (int i = 0; i < N_PARAMS; i++) {
        inference__infer_parameter__init(&pv[i]);
        if (i < N_PARAMS - 1) {
            pv[i].parameter_choice_case = INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_STRING_PARAM;
            pv[i].string_param = (char *)svals[i];
        } else {
            pv[i].parameter_choice_case = INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_DOUBLE_PARAM;
            pv[i].double_param = j->threshold;
        }
        inference__model_infer_response__parameters_entry__init(&pe[i]);
        pe[i].key = (char *)keys[i];
        pe[i].value = &pv[i];
        params[i] = &pe[i];
    }
    char view[300];
    triton_view_name(j->srv->batcher, j->model, j->form, view, sizeof view);
    Inference__ModelInferResponse r = INFERENCE__MODEL_INFER_RESPONSE__INIT;
    r.model_name = view;
    r.model_version = TRITON_MODEL_VERSION;
    r.id = j->msg->id;
    r.n_parameters = N_PARAMS;
    r.parameters = params;
    r.n_outputs = (size_t)k;
    r.outputs = outs;
    r.n_raw_output_contents = (size_t)k;
    r.raw_output_contents = raw;
    size_t n = inference__model_infer_response__get_packed_size(&r);
    unsigned char *buf = malloc(n ? n : 1);
    if (!buf) {
        free(vals);
        job_fail(j, GRPC_STATUS_UNAVAILABLE, "out of memory while building the answer");
        return;
    }
    inference__model_infer_response__pack(&r, buf);
    free(vals);
    rpc_answer(j->req, buf, n);
    job_free(j);
}

/* ---- the pipeline -------------------------------------------------------------------------------- */

static void on_item_done(struct batcher_item *it)
{
    struct rimage *im = it->owner;
    struct rjob *j = im->job;
    if (atomic_fetch_sub(&j->pending, 1) != 1)
        return;
    long failed = 0;
    int worst = BATCHER_OK;
    double first = 0, last = 0;
    for (int i = 0; i < j->n; i++) {
        const struct batcher_item *x = &j->images[i].item;
        if (x->status != BATCHER_OK) {
            failed++;
            if (!worst)
                worst = x->status;
        }
        if (i == 0 || x->t_started < first)
            first = x->t_started;
        if (x->t_finished > last)
            last = x->t_finished;
    }
    metrics_images(j->srv->metrics, j->model, failed, j->n - failed);
    switch (worst) {
    case BATCHER_OK: {
        for (int i = 0; i < j->n; i++) {
            struct stopcal_result r;
            result_from_logit(&r, "", j->images[i].item.logit, j->threshold, NULL); /* scores only */
            metrics_score(j->srv->metrics, j->model, r.continue_score);
        }
        double now = server_now();
        triton_stats_success(j->model, j->form, j->n, now - j->req->t_arrival, first - j->t_prep_done,
                             j->t_prep_done - j->t_body, last - first, now - last);
        answer(j);
        return;
    }
    case BATCHER_EDEADLINE: job_fail(j, GRPC_STATUS_DEADLINE_EXCEEDED, "the request's deadline passed before inference"); return;
    case BATCHER_ENOMEM: job_fail(j, GRPC_STATUS_UNAVAILABLE, "the compute device ran out of memory for this batch; retry"); return;
    case BATCHER_EDEVICE: job_fail(j, GRPC_STATUS_UNAVAILABLE, "the compute device failed; the service is restarting"); return;
    case BATCHER_ESHUTDOWN: job_fail(j, GRPC_STATUS_UNAVAILABLE, "the service is shutting down"); return;
    default: job_fail(j, GRPC_STATUS_INTERNAL, "inference failed (see the server log)"); return;
    }
}

static void enqueue(struct rjob *j)
{
    j->t_prep_done = server_now();
    metrics_stage(j->srv->metrics, j->model, STAGE_PREPROCESS, j->t_prep_done - j->t_body);
    for (int i = 0; i < j->n; i++)
        if (j->images[i].prep_status) {
            metrics_images(j->srv->metrics, j->model, j->n, 0);
            job_fail(j, rpc_code_for_http(j->images[i].prep_status), "inputs[0]: image[%d]: %s", i,
                     j->images[i].prep_err);
            return;
        }
    if (j->t_prep_done > j->req->deadline) {
        metrics_images(j->srv->metrics, j->model, j->n, 0);
        job_fail(j, GRPC_STATUS_DEADLINE_EXCEEDED, "the request's deadline passed before inference");
        return;
    }
    struct batcher_item **items = malloc((size_t)j->n * sizeof *items);
    if (!items) {
        job_fail(j, GRPC_STATUS_UNAVAILABLE, "out of memory; retry later");
        return;
    }
    for (int i = 0; i < j->n; i++) {
        struct rimage *im = &j->images[i];
        im->item.pixels = im->tensor;
        im->item.deadline = j->req->deadline;
        im->item.done = on_item_done;
        im->item.owner = im;
        items[i] = &im->item;
    }
    atomic_store(&j->pending, j->n);
    int n = j->n, model = j->model;
    struct rpc_request *req = j->req;
    struct batcher *e = j->srv->batcher;
    rpc_announce_taken(req); /* batcher_submit withdraws the announcement, whatever happens */
    /* After a successful submit the job may already be answered and freed: touch nothing of it. */
    int rc = batcher_submit(e, model, items, n, 1);
    free(items);
    if (rc == BATCHER_OK)
        return;
    metrics_images(j->srv->metrics, model, n, 0);
    if (rc == BATCHER_EQUEUEFULL)
        job_fail(j, GRPC_STATUS_UNAVAILABLE, "the queue is full (%d images); retry later", j->srv->cfg->max_queue);
    else if (rc == BATCHER_EDEVICE)
        job_fail(j, GRPC_STATUS_UNAVAILABLE, "the compute device failed; the service is restarting");
    else
        job_fail(j, GRPC_STATUS_UNAVAILABLE, "the service is shutting down");
}

static void preprocess_task(void *arg)
{
    struct rimage *im = arg;
    struct rjob *j = im->job;
    const struct server_config *cfg = j->srv->cfg;
    struct image_limits limits = image_limits_default();
    limits.max_bytes = (size_t)cfg->max_body_bytes;
    limits.max_pixels = (uint64_t)cfg->max_image_pixels;
    struct preprocess_stats stats = {0};
    /* noise_seed fixed as on the HTTP side, so the two answer alike */
    int rc = image_to_tensor(im->tensor, im->bytes, im->len, &limits, &job_model(j)->config, 0, &stats, im->prep_err,
                             sizeof im->prep_err);
    im->prep_status = rc == IMAGE_OK ? 0 : rc == IMAGE_ETOOBIG ? 413 : rc == IMAGE_ENOMEM ? 503
                                                                 : rc == IMAGE_ECONFIG ? 500 : 400;
    if (atomic_fetch_sub(&j->pending, 1) == 1)
        enqueue(j);
}

static void parse_task(void *arg)
{
    struct rjob *j = arg;
    struct rpc_request *req = j->req;
    struct server *s = j->srv;
    j->t_body = server_now();
    j->msg = inference__model_infer_request__unpack(NULL, req->msg_len, req->msg);
    if (!j->msg) {
        job_fail(j, GRPC_STATUS_INVALID_ARGUMENT, "the request is not a valid ModelInferRequest message");
        return;
    }
    snprintf(req->model, sizeof req->model, "%s", j->msg->model_name);
    j->model = *j->msg->model_name ? triton_find_model(s->batcher, j->msg->model_name, &j->form) : -1;
    if (j->model < 0) {
        job_fail(j, GRPC_STATUS_NOT_FOUND, "model_name: model '%s' is not loaded (RepositoryIndex lists them)",
                 j->msg->model_name);
        return;
    }
    char why[256];
    if (triton_check_version(j->msg->model_name, j->msg->model_version, why, sizeof why)) {
        job_fail(j, GRPC_STATUS_NOT_FOUND, "model_version: %s", why);
        return;
    }
    if (!batcher_live(s->batcher)) {
        job_fail(j, GRPC_STATUS_UNAVAILABLE, "the compute device failed; the service is restarting");
        return;
    }
    if (!batcher_ready(s->batcher)) {
        job_fail(j, GRPC_STATUS_UNAVAILABLE, "the models are not ready yet");
        return;
    }
    if (batcher_queue_free(s->batcher) <= 0) {
        job_fail(j, GRPC_STATUS_UNAVAILABLE, "the queue is full (%d images); retry later", s->cfg->max_queue);
        return;
    }
    if (j->t_body > req->deadline) {
        job_fail(j, GRPC_STATUS_DEADLINE_EXCEEDED, "the request's deadline passed before it was read");
        return;
    }
    rpc_announce(req, j->model);
    j->size = job_model(j)->config.input_size;
    j->threshold = job_model(j)->config.threshold;
    char msg[512];
    grpc_status_code code = parse(j, msg, sizeof msg);
    if (code) {
        job_fail(j, code, "%s", msg);
        return;
    }
    req->images = j->n;
    if (!j->images[0].bytes) {
        enqueue(j);
        return;
    }
    atomic_store(&j->pending, j->n);
    for (int i = j->n - 1; i >= 1; i--)
        if (workpool_submit(s->pool, preprocess_task, &j->images[i])) {
            j->images[i].prep_status = 503;
            snprintf(j->images[i].prep_err, sizeof j->images[i].prep_err, "the service is shutting down");
            atomic_fetch_sub(&j->pending, 1); /* image 0 is still ahead, so this is never the last */
        }
    preprocess_task(&j->images[0]);
}

void rpc_infer_start(struct rpc_request *req)
{
    struct rjob *j = calloc(1, sizeof *j);
    if (!j) {
        rpc_fail(req, GRPC_STATUS_UNAVAILABLE, "out of memory; retry later");
        return;
    }
    j->req = req;
    j->srv = req->srv;
    j->model = -1;
    if (workpool_submit(req->srv->pool, parse_task, j)) {
        free(j);
        rpc_fail(req, GRPC_STATUS_UNAVAILABLE, "the service is shutting down");
    }
}
