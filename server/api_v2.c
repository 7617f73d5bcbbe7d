/* The Open Inference Protocol v2 (REST), POST /v2/models/{m}/infer: input `image` (BYTES, one
 * FITS file per element through the binary data extension) or `pixels` (FP32 in JSON or binary,
 * BF16 binary; already preprocessed); outputs `continue_score` and `logit`, JSON or binary. The
 * view {m}_pixels (triton.h) takes `pixels` only; {m} lists `image` and still takes both. */
#include "job.h"

#include "triton.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JSON_MAX_DEPTH 16

static int check_v2_headers(struct request *rq, struct failure *f)
{
    const char *ihl = http_header(rq, "Inference-Header-Content-Length");
    if (ihl && (http_parse_count(ihl, &rq->inference_header_len) ||
                (rq->content_length >= 0 && !rq->gzip_body && rq->inference_header_len > rq->content_length)))
        return failf(f, 400, "Inference-Header-Content-Length '%s' is not a byte count within the body", ihl);
    return 0;
}

/* Nesting depth of a JSON text, outside strings; jansson's own limit (2048) is far too deep. */
static int json_depth_ok(const unsigned char *p, size_t n, int max)
{
    int depth = 0, in_string = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = p[i];
        if (in_string) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_string = 0;
        } else if (c == '"') {
            in_string = 1;
        } else if (c == '[' || c == '{') {
            if (++depth > max)
                return 0;
        } else if (c == ']' || c == '}') {
            depth--;
        }
    }
    return 1;
}

/* Flatten nested JSON number arrays into out[0..want); returns the count seen (may exceed want). */
static size_t flatten_numbers(json_t *v, float *out, size_t want, size_t at, int *bad)
{
    if (json_is_array(v)) {
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x) at = flatten_numbers(x, out, want, at, bad);
        return at;
    }
    if (!json_is_number(v)) {
        *bad = 1;
        return at + 1;
    }
    if (at < want)
        out[at] = (float)json_number_value(v);
    return at + 1;
}

static int shape_of(json_t *input, json_int_t *dims, int max_dims, const char *name, struct failure *f)
{
    json_t *shape = json_object_get(input, "shape");
    if (!json_is_array(shape) || json_array_size(shape) == 0 || json_array_size(shape) > (size_t)max_dims)
        return failf(f, 400, "inputs[0] '%s': 'shape' must be an array of 1 to %d integers", name, max_dims);
    for (size_t i = 0; i < json_array_size(shape); i++) {
        json_t *d = json_array_get(shape, i);
        if (!json_is_integer(d) || json_integer_value(d) < 0 || json_integer_value(d) > (1 << 30))
            return failf(f, 400, "inputs[0] '%s': shape[%zu] is not a non-negative integer", name, i);
        dims[i] = json_integer_value(d);
    }
    return (int)json_array_size(shape);
}

static int parse_image_input(struct job *j, json_t *input, const unsigned char *bin, size_t bin_len, int has_bin,
                             struct failure *f)
{
    const struct server_config *cfg = j->srv->cfg;
    const char *dtype = json_string_value(json_object_get(input, "datatype"));
    if (!dtype || strcmp(dtype, "BYTES") != 0)
        return failf(f, 400, "inputs[0] 'image': datatype must be BYTES (one element per FITS file)");
    json_int_t dims[2];
    int nd = shape_of(input, dims, 2, "image", f);
    if (nd < 0)
        return -1;
    if (nd == 2 && dims[1] != 1)
        return failf(f, 400, "inputs[0] 'image': shape must be [N] or [N,1]");
    if (dims[0] < 1)
        return failf(f, 400, "inputs[0] 'image': no images (shape[0] = 0)");
    if (dims[0] > cfg->max_images)
        return failf(f, 413, "inputs[0] 'image': %lld images exceed the limit of %d per request (--max-images)",
                     (long long)dims[0], cfg->max_images);
    if (!has_bin)
        return failf(f, 400, "inputs[0] 'image': FITS bytes must travel through the binary data extension "
                             "(parameters.binary_data_size + Inference-Header-Content-Length)");
    int n = (int)dims[0];
    /* Triton's BYTES serialisation: a 4-byte little-endian length, then the bytes, per element. */
    size_t at = 0;
    long long estimate = 0;
    size_t offsets[4096], lengths[4096];
    for (int i = 0; i < n; i++) {
        if (bin_len - at < 4)
            return failf(f, 400, "inputs[0] 'image': binary data ends inside element %d's length prefix", i);
        uint32_t len = (uint32_t)bin[at] | (uint32_t)bin[at + 1] << 8 | (uint32_t)bin[at + 2] << 16 |
                       (uint32_t)bin[at + 3] << 24;
        at += 4;
        if (len > bin_len - at)
            return failf(f, 400, "inputs[0] 'image': element %d claims %u bytes, only %zu remain", i, len,
                         bin_len - at);
        offsets[i] = at;
        lengths[i] = len;
        estimate += job_fits_decode_estimate(cfg, len);
        at += len;
    }
    if (at != bin_len)
        return failf(f, 400, "inputs[0] 'image': %zu bytes of binary data follow the %d elements of shape[0]",
                     bin_len - at, n);
    if (job_alloc_images(j, n, estimate, f))
        return -1;
    for (int i = 0; i < n; i++) {
        j->images[i].bytes = bin + offsets[i];
        j->images[i].len = lengths[i];
        snprintf(j->images[i].name, sizeof j->images[i].name, "image[%d]", i);
    }
    return 0;
}

static float bf16_to_float(uint16_t h)
{
    uint32_t bits = (uint32_t)h << 16;
    float x;
    memcpy(&x, &bits, sizeof x);
    return x;
}

static int parse_pixels_input(struct job *j, json_t *input, const unsigned char *bin, size_t bin_len, int has_bin,
                              struct failure *f)
{
    const struct server_config *cfg = j->srv->cfg;
    const int S = j->size;
    const char *dtype = json_string_value(json_object_get(input, "datatype"));
    int bf16 = dtype && strcmp(dtype, "BF16") == 0;
    if (!dtype || (!bf16 && strcmp(dtype, "FP32") != 0))
        return failf(f, 400, "inputs[0] 'pixels': datatype must be FP32 (JSON or binary) or BF16 (binary)");
    json_int_t d[4];
    int nd = shape_of(input, d, 4, "pixels", f);
    if (nd < 0)
        return -1;
    if (nd != 4 || (d[1] != 1 && d[1] != 3) || d[2] != S || d[3] != S)
        return failf(f, 400, "inputs[0] 'pixels': shape must be [N,3,%d,%d] or [N,1,%d,%d] for model '%s'", S, S, S,
                     S, job_model(j)->name);
    if (d[0] < 1)
        return failf(f, 400, "inputs[0] 'pixels': no images (shape[0] = 0)");
    if (d[0] > cfg->max_images)
        return failf(f, 413, "inputs[0] 'pixels': %lld images exceed the limit of %d per request (--max-images)",
                     (long long)d[0], cfg->max_images);
    const int n = (int)d[0], C = (int)d[1];
    const size_t plane = (size_t)S * S, per_image = (size_t)C * plane, count = (size_t)n * per_image;
    if (job_alloc_images(j, n, 0, f))
        return -1;
    /* Read into the image's first C planes, then replicate a single channel. */
    for (int i = 0; i < n; i++)
        snprintf(j->images[i].name, sizeof j->images[i].name, "pixels[%d]", i);
    if (has_bin) {
        size_t esize = bf16 ? 2 : 4;
        if (bin_len != count * esize)
            return failf(f, 400, "inputs[0] 'pixels': binary_data_size is %zu bytes, shape needs %zu", bin_len,
                         count * esize);
        for (int i = 0; i < n; i++) {
            const unsigned char *src = bin + (size_t)i * per_image * esize;
            float *dst = j->images[i].tensor;
            if (bf16) {
                for (size_t k = 0; k < per_image; k++)
                    dst[k] = bf16_to_float((uint16_t)(src[2 * k] | src[2 * k + 1] << 8));
            } else {
                memcpy(dst, src, per_image * sizeof(float));
            }
        }
    } else {
        if (bf16)
            return failf(f, 400, "inputs[0] 'pixels': BF16 is accepted as binary data only");
        json_t *data = json_object_get(input, "data");
        if (!json_is_array(data))
            return failf(f, 400, "inputs[0] 'pixels': 'data' (an array of numbers) or parameters.binary_data_size "
                                 "is required");
        int bad = 0;
        float *scratch = malloc(count * sizeof(float));
        if (!scratch)
            return failf(f, 503, "out of memory; retry later");
        size_t seen = flatten_numbers(data, scratch, count, 0, &bad);
        if (bad || seen != count) {
            free(scratch);
            return failf(f, 400, "inputs[0] 'pixels': 'data' holds %zu %s, shape needs %zu numbers", seen,
                         bad ? "values, not all numbers," : "numbers", count);
        }
        for (int i = 0; i < n; i++)
            memcpy(j->images[i].tensor, scratch + (size_t)i * per_image, per_image * sizeof(float));
        free(scratch);
    }
    for (int i = 0; i < n; i++) {
        float *t = j->images[i].tensor;
        for (size_t k = 0; k < per_image; k++)
            if (!isfinite(t[k]))
                return failf(f, 400, "inputs[0] 'pixels': image %d holds a non-finite value", i);
        if (C == 1) {
            memcpy(t + plane, t, plane * sizeof(float));
            memcpy(t + 2 * plane, t, plane * sizeof(float));
        }
    }
    return 0;
}

static int binary_flag(json_t *obj, const char *key, int dflt)
{
    json_t *v = json_object_get(json_object_get(obj, "parameters"), key);
    return json_is_boolean(v) ? json_is_true(v) : dflt;
}

static int parse_v2(struct job *j, struct failure *f)
{
    struct request *rq = j->rq;
    size_t hlen = rq->inference_header_len >= 0 ? (size_t)rq->inference_header_len : rq->body_len;
    if (hlen > rq->body_len)
        return failf(f, 400, "Inference-Header-Content-Length %zu exceeds the body's %zu bytes", hlen, rq->body_len);
    if (hlen == 0)
        return failf(f, 400, "empty body: expected an inference request (JSON)");
    if (!json_depth_ok(rq->body, hlen, JSON_MAX_DEPTH))
        return failf(f, 400, "JSON nested deeper than %d levels", JSON_MAX_DEPTH);
    /* jansson's tree costs several times the text; count it against the budget. */
    if (server_reserve(rq, 8 * (long long)hlen))
        return failf(f, 503, "the server's memory budget for requests in flight is spent; retry later");
    json_error_t e;
    json_t *root = json_loadb((const char *)rq->body, hlen, JSON_REJECT_DUPLICATES, &e);
    if (!root)
        return failf(f, 400, "invalid JSON at line %d, column %d: %s", e.line, e.column, e.text);
    int rc = -1;
    if (!json_is_object(root)) {
        failf(f, 400, "the inference request must be a JSON object");
        goto out;
    }
    json_t *id = json_object_get(root, "id");
    if (id && !json_is_string(id)) {
        failf(f, 400, "'id' must be a string");
        goto out;
    }
    j->v2_id = json_incref(id);
    json_t *params = json_object_get(root, "parameters");
    if (params && !json_is_object(params)) {
        failf(f, 400, "'parameters' must be an object");
        goto out;
    }
    json_t *th = json_object_get(params, "threshold");
    if (th) {
        double t = json_number_value(th);
        if (!json_is_number(th) || !(t >= 0 && t <= 1)) {
            failf(f, 400, "parameters.threshold: expected a number in [0, 1]");
            goto out;
        }
        j->threshold = t;
    }
    int binary_default = binary_flag(root, "binary_data_output", 0);
    json_t *inputs = json_object_get(root, "inputs");
    if (!json_is_array(inputs) || json_array_size(inputs) != 1) {
        failf(f, 400, "'inputs' must be an array holding exactly one input: 'image' for model '%s', 'pixels' for "
              "'%s" TRITON_PIXELS_SUFFIX "'", job_model(j)->name, job_model(j)->name);
        goto out;
    }
    json_t *input = json_array_get(inputs, 0);
    const char *name = json_string_value(json_object_get(input, "name"));
    if (!json_is_object(input) || !name) {
        failf(f, 400, "inputs[0] must be an object with a 'name'");
        goto out;
    }
    json_t *bds = json_object_get(json_object_get(input, "parameters"), "binary_data_size");
    const unsigned char *bin = rq->body + hlen;
    size_t bin_len = rq->body_len - hlen;
    int has_bin = bds != NULL;
    if (has_bin && (!json_is_integer(bds) || json_integer_value(bds) < 0 ||
                    (size_t)json_integer_value(bds) != bin_len)) {
        failf(f, 400, "inputs[0] '%s': parameters.binary_data_size must equal the %zu bytes after the JSON header",
              name, bin_len);
        goto out;
    }
    if (!has_bin && bin_len) {
        failf(f, 400, "%zu bytes of binary data follow the JSON header but no input claims them", bin_len);
        goto out;
    }
    json_t *outputs = json_object_get(root, "outputs");
    if (outputs) {
        size_t i;
        json_t *o;
        if (!json_is_array(outputs)) {
            failf(f, 400, "'outputs' must be an array");
            goto out;
        }
        json_array_foreach(outputs, i, o)
        {
            const char *on = json_string_value(json_object_get(o, "name"));
            if (on && strcmp(on, "continue_score") == 0) {
                j->want_score = 1;
                j->binary_score = binary_flag(o, "binary_data", binary_default);
            } else if (on && strcmp(on, "logit") == 0) {
                j->want_logit = 1;
                j->binary_logit = binary_flag(o, "binary_data", binary_default);
            } else {
                failf(f, 400, "outputs[%zu]: unknown output '%s' (continue_score, logit)", i, on ? on : "");
                goto out;
            }
        }
    } else {
        j->want_score = j->want_logit = 1;
        j->binary_score = j->binary_logit = binary_default;
    }
    if (rq->form == TRITON_FORM_PIXELS && strcmp(name, "pixels") != 0)
        failf(f, 400, "inputs[0] '%s': model '%s" TRITON_PIXELS_SUFFIX "' takes the input 'pixels' only (FITS "
              "files go to '%s' as 'image')", name, job_model(j)->name, job_model(j)->name);
    else if (strcmp(name, "image") == 0)
        rc = parse_image_input(j, input, bin, bin_len, has_bin, f);
    else if (strcmp(name, "pixels") == 0)
        rc = parse_pixels_input(j, input, bin, bin_len, has_bin, f);
    else
        failf(f, 400, "inputs[0]: unknown input '%s' (image or pixels)", name);
out:
    json_decref(root);
    return rc;
}

/* Triton's statistics for the view: seconds from arrival to now, waiting for the engine,
 * preprocessing, in the forward pass, and building the answer. */
static void count_success(struct job *j)
{
    double first = 0, last = 0, now = server_now();
    for (int i = 0; i < j->n; i++) {
        const struct batcher_item *x = &j->images[i].item;
        if (i == 0 || x->t_started < first)
            first = x->t_started;
        if (x->t_finished > last)
            last = x->t_finished;
    }
    triton_stats_success(j->model, j->rq->form, j->n, now - j->rq->t_arrival, first - j->t_prep_done,
                         j->t_prep_done - j->t_body, last - first, now - last);
}

static void answer_v2(struct job *j)
{
    const struct batcher_model_info *m = job_model(j);
    char view[300];
    triton_view_name(j->srv->batcher, j->model, j->rq->form, view, sizeof view);
    count_success(j);
    json_t *outputs = json_array();
    size_t bin_bytes = 0;
    for (int which = 0; which < 2; which++) {
        int want = which == 0 ? j->want_score : j->want_logit;
        int binary = which == 0 ? j->binary_score : j->binary_logit;
        if (!want)
            continue;
        json_t *o = json_pack("{s:s, s:s, s:[i,i]}", "name", which == 0 ? "continue_score" : "logit", "datatype",
                              "FP32", "shape", j->n, 1);
        if (!o || json_array_append_new(outputs, o)) {
            json_decref(outputs);
            request_fail(j->rq, 500, "could not build the outputs (out of memory)");
            return;
        }
        if (binary) {
            json_object_set_new(o, "parameters", json_pack("{s:I}", "binary_data_size", (json_int_t)(4 * j->n)));
            bin_bytes += 4 * (size_t)j->n;
        } else {
            json_t *data = json_array();
            for (int i = 0; i < j->n; i++) {
                struct stopcal_result r;
                job_fill_result(j, i, &r);
                json_array_append_new(data, json_real(which == 0 ? (double)(float)r.continue_score
                                                                 : (double)j->images[i].item.logit));
            }
            if (!data || json_array_size(data) != (size_t)j->n || json_object_set_new(o, "data", data)) {
                json_decref(outputs);
                request_fail(j->rq, 500, "could not build the outputs of %d images (out of memory)", j->n);
                return;
            }
        }
    }
    /* precision: what the scores were computed in, as every native result object says it. */
    json_t *doc = json_pack("{s:s, s:s, s:o, s:{s:s, s:s, s:s, s:s, s:f, s:s}}", "model_name", view,
                            "model_version", TRITON_MODEL_VERSION, "outputs", outputs, "parameters", "request_id",
                            j->rq->request_id, "stopcal_version", STOPCAL_VERSION, "model_sha256", m->sha256,
                            "model_file_version", m->config.version, "threshold", j->threshold, "precision",
                            m->precision);
    if (doc && j->v2_id)
        json_object_set(doc, "id", j->v2_id);
    char *text = doc ? json_dumps(doc, JSON_COMPACT | JSON_REAL_PRECISION(9)) : NULL;
    json_decref(doc);
    if (!text || !bin_bytes) {
        request_finish(j->rq, 200, text, text ? strlen(text) : 0, "application/json", -1);
        return;
    }
    size_t hlen = strlen(text);
    char *body = realloc(text, hlen + bin_bytes);
    if (!body) {
        free(text);
        request_finish(j->rq, 500, NULL, 0, NULL, -1);
        return;
    }
    size_t at = hlen;
    for (int which = 0; which < 2; which++) {
        if (!(which == 0 ? j->want_score && j->binary_score : j->want_logit && j->binary_logit))
            continue;
        for (int i = 0; i < j->n; i++) {
            struct stopcal_result r;
            job_fill_result(j, i, &r);
            float v = which == 0 ? (float)r.continue_score : j->images[i].item.logit;
            memcpy(body + at, &v, 4);
            at += 4;
        }
    }
    request_finish(j->rq, 200, body, at, "application/octet-stream", (long long)hlen);
}

static const char *const v2_media_types[] = {"", "application/json", "application/octet-stream",
                                             "application/vnd.sagemaker-triton.binary+json", NULL};

const struct api_handler api_v2_infer = {
    .triton_stats = 1,
    .media_types = v2_media_types,
    .media_hint = "send application/json, or application/octet-stream with Inference-Header-Content-Length",
    .check_headers = check_v2_headers,
    .parse = parse_v2,
    .answer = answer_v2,
};
