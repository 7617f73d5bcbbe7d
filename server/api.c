/* The API: what each endpoint answers, and the path of a prediction request after its body has
 * arrived — parse (worker) → preprocess each FITS image (workers, in parallel) → the engine's queue →
 * the batch → the answer (built on the inference thread, queued by the HTTP thread). */
#include "server.h"

#include "fits_job.h"
#include "log.h"
#include "multipart.h"
#include "result_json.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JSON_MAX_DEPTH 16

struct job_image {
    struct engine_item item;
    struct job *job;
    const unsigned char *bytes; /* FITS bytes inside the request body; NULL for pixels */
    size_t len;
    char name[256];
    float *tensor; /* (3, S, S) inside job->tensors */
    int has_rms;
    double rms;
    long nonfinite;
    int prep_status; /* HTTP status of a preprocessing failure; 0 = fine */
    char prep_err[320];
};

struct job {
    struct request *rq;
    struct server *srv;
    int model;
    int size; /* S */
    double threshold;
    int n;
    struct job_image *images;
    float *tensors;
    atomic_int pending; /* preprocessing tasks, then engine items, not finished yet */
    /* v2 only */
    json_t *v2_id;     /* the request's "id", echoed */
    int want_score, want_logit;
    int binary_score, binary_logit;
    double t_body, t_prep_done;
};

static const struct engine_model_info *job_model(const struct job *j) { return engine_model(j->srv->engine, j->model); }

void api_free_job(struct request *rq)
{
    struct job *j = rq->job;
    if (!j)
        return;
    json_decref(j->v2_id);
    free(j->images);
    free(j->tensors);
    free(j);
    rq->job = NULL;
}

/* ---- GET endpoints ---------------------------------------------------------------------------- */

static json_t *model_json(struct server *s, int i)
{
    const struct engine_model_info *m = engine_model(s->engine, i);
    const struct model_config *c = &m->config;
    json_t *config = json_loads(m->config_json, 0, NULL);
    json_t *aliases = json_array();
    for (int k = 0; k < m->n_aliases; k++)
        json_array_append_new(aliases, json_string(m->aliases[k]));
    json_t *doc = json_pack("{s:s, s:s, s:s, s:b, s:s, s:i, s:s, s:f, s:{s:i, s:i, s:i, s:i, s:i, s:s}, s:o}", "name", m->name,
                     "sha256", m->sha256, "version", c->version, "default", i == s->default_model, "backend",
                     m->backend, "input_size", c->input_size, "profile", model_profile_name(c->profile), "threshold",
                     (double)c->threshold, "architecture", "embed_dim", c->embed_dim, "depth", c->depth, "heads",
                     c->num_heads, "registers", c->num_registers, "patch_size", c->patch_size, "ffn",
                     c->ffn == MODEL_FFN_SWIGLU ? "swiglu" : "mlp", "config", config ? config : json_null());
    json_object_set_new(doc, "aliases", aliases);
    return doc;
}

int api_models(struct server *s, struct request *rq, json_t **doc)
{
    json_t *list = json_array();
    for (int i = 0; i < engine_model_count(s->engine); i++)
        json_array_append_new(list, model_json(s, i));
    *doc = json_pack("{s:s, s:o, s:s, s:s, s:b}", "default", engine_model(s->engine, s->default_model)->name,
                     "models", list, "stopcal_version", STOPCAL_VERSION, "request_id", rq->request_id, "fits_input",
                     fits_job_available());
    return 200;
}

int api_server_metadata(struct server *s, struct request *rq, json_t **doc)
{
    (void)s;
    *doc = json_pack("{s:s, s:s, s:[s], s:s}", "name", "stopcald", "version", STOPCAL_VERSION, "extensions",
                     "binary_tensor_data", "request_id", rq->request_id);
    return 200;
}

int api_model_metadata(struct server *s, struct request *rq, json_t **doc)
{
    const struct engine_model_info *m = engine_model(s->engine, rq->model);
    const int S = m->config.input_size;
    *doc = json_pack("{s:s, s:[s], s:s, s:[{s:s, s:s, s:[i]}, {s:s, s:s, s:[i,i,i,i]}],"
                     " s:[{s:s, s:s, s:[i,i]}, {s:s, s:s, s:[i,i]}], s:{s:s, s:s, s:s, s:f}}",
                     "name", m->name, "versions", m->config.version, "platform", "stopcal", "inputs", "name", "image",
                     "datatype", "BYTES", "shape", -1, "name", "pixels", "datatype", "FP32", "shape", -1, 3, S, S,
                     "outputs", "name", "continue_score", "datatype", "FP32", "shape", -1, 1, "name", "logit",
                     "datatype", "FP32", "shape", -1, 1, "parameters", "sha256", m->sha256, "stopcal_version",
                     STOPCAL_VERSION, "request_id", rq->request_id, "threshold", (double)m->config.threshold);
    return 200;
}

static int service_ready(struct server *s)
{
    return engine_ready(s->engine) && !atomic_load(&s->not_ready);
}

int api_health(struct server *s, struct request *rq, int ready, json_t **doc)
{
    (void)rq;
    int ok = ready ? service_ready(s) : engine_live(s->engine);
    *doc = json_pack("{s:b}", ready ? "ready" : "live", ok);
    return ok ? 200 : 503;
}

int api_model_ready(struct server *s, struct request *rq, json_t **doc)
{
    int ok = service_ready(s);
    *doc = json_pack("{s:s, s:b}", "name", engine_model(s->engine, rq->model)->name, "ready", ok);
    return ok ? 200 : 503;
}

char *api_metrics_text(struct server *s, size_t *len)
{
    struct strbuf o = {0};
    metrics_render(&o);
    metrics_gauge(&o, "stopcal_build_info", "The stopcald version.");
    strbuf_printf(&o, "stopcal_build_info{version=\"%s\"} 1\n", STOPCAL_VERSION);
    metrics_gauge(&o, "stopcal_live", "1 unless a sticky device error happened.");
    metrics_gauge_value(&o, "stopcal_live", "", engine_live(s->engine));
    metrics_gauge(&o, "stopcal_ready", "1 when the service takes inference requests.");
    metrics_gauge_value(&o, "stopcal_ready", "", service_ready(s));
    metrics_gauge(&o, "stopcal_in_flight_requests", "HTTP requests received and not yet answered.");
    metrics_gauge_value(&o, "stopcal_in_flight_requests", "", atomic_load(&s->in_flight));
    metrics_gauge(&o, "stopcal_open_connections", "Open HTTP connections.");
    metrics_gauge_value(&o, "stopcal_open_connections", "", atomic_load(&s->connections));
    metrics_gauge(&o, "stopcal_memory_in_flight_bytes", "Bytes of bodies, images and tensors held for requests.");
    metrics_gauge_value(&o, "stopcal_memory_in_flight_bytes", "", (double)atomic_load(&s->memory_in_use));
    metrics_gauge(&o, "stopcal_memory_budget_bytes", "The memory budget for requests in flight.");
    metrics_gauge_value(&o, "stopcal_memory_budget_bytes", "", (double)s->cfg->memory_budget_bytes);
    metrics_gauge(&o, "stopcal_threads", "Threads by role.");
    strbuf_printf(&o, "stopcal_threads{role=\"compute\"} %d\nstopcal_threads{role=\"preprocess\"} %d\n"
                      "stopcal_threads{role=\"http\"} %d\n",
                  s->compute_threads, s->workers, s->cfg->http_threads);
    metrics_gauge(&o, "stopcal_queue_depth", "Images waiting for the engine.");
    for (int i = 0; i < engine_model_count(s->engine); i++) {
        struct strbuf l = {0};
        strbuf_printf(&l, "model=\"");
        strbuf_label(&l, engine_model(s->engine, i)->name);
        strbuf_printf(&l, "\"");
        char *lab = strbuf_take(&l, NULL);
        metrics_gauge_value(&o, "stopcal_queue_depth", lab ? lab : "", engine_queue_depth(s->engine, i));
        free(lab);
    }
    metrics_gauge(&o, "stopcal_model_info", "Loaded models: name, weights sha256, version, backend.");
    metrics_gauge(&o, "stopcal_device_memory_bytes", "Bytes held by each model's backend (weights + activations).");
    for (int i = 0; i < engine_model_count(s->engine); i++) {
        const struct engine_model_info *m = engine_model(s->engine, i);
        strbuf_printf(&o, "stopcal_model_info{model=\"");
        strbuf_label(&o, m->name);
        strbuf_printf(&o, "\",sha256=\"%s\",version=\"", m->sha256);
        strbuf_label(&o, m->config.version);
        strbuf_printf(&o, "\",backend=\"%s\",default=\"%s\",input_size=\"%d\"} 1\n", m->backend,
                      i == s->default_model ? "true" : "false", m->config.input_size);
    }
    for (int i = 0; i < engine_model_count(s->engine); i++) {
        const struct engine_model_info *m = engine_model(s->engine, i);
        strbuf_printf(&o, "stopcal_device_memory_bytes{model=\"");
        strbuf_label(&o, m->name);
        strbuf_printf(&o, "\",backend=\"%s\"} %zu\n", m->backend, engine_device_bytes(s->engine, i));
    }
    strbuf_printf(&o, "# HELP stopcal_http_aborted_requests_total Requests dropped before an answer "
                      "(client gone, stalled upload timed out).\n"
                      "# TYPE stopcal_http_aborted_requests_total counter\n"
                      "stopcal_http_aborted_requests_total %llu\n",
                  (unsigned long long)atomic_load(&s->aborted));
    return strbuf_take(&o, len);
}

/* ---- shared helpers for prediction requests ---------------------------------------------------- */

struct failure {
    int status;
    char msg[512];
};

static int failf(struct failure *f, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int failf(struct failure *f, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(f->msg, sizeof f->msg, fmt, ap);
    va_end(ap);
    f->status = status;
    return -1;
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

/* Room for n images of the model: the tensors, and for FITS a bound on the decoded pixels. */
static int alloc_images(struct job *j, int n, long long extra_bytes, struct failure *f)
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
static long long fits_decode_estimate(const struct server_config *cfg, size_t len)
{
    long long px = (long long)len;
    if (px > cfg->max_image_pixels)
        px = cfg->max_image_pixels;
    return 8 * px;
}

/* ---- /v1/predict ------------------------------------------------------------------------------ */

static int parse_v1(struct job *j, struct failure *f)
{
    struct request *rq = j->rq;
    const struct server_config *cfg = j->srv->cfg;
    if (rq->body_len == 0)
        return failf(f, 400, "empty body: send one FITS file, or multipart/form-data with FITS files");
    if (strncasecmp(rq->content_type, "multipart/form-data", 19) != 0) {
        if (alloc_images(j, 1, fits_decode_estimate(cfg, rq->body_len), f))
            return -1;
        j->images[0].bytes = rq->body;
        j->images[0].len = rq->body_len;
        snprintf(j->images[0].name, sizeof j->images[0].name, "%s", rq->name);
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
        estimate += fits_decode_estimate(cfg, parts[i].len);
    }
    if (alloc_images(j, n, estimate, f)) {
        free(parts);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        j->images[i].bytes = parts[i].data;
        j->images[i].len = parts[i].len;
        snprintf(j->images[i].name, sizeof j->images[i].name, "%s", parts[i].filename);
    }
    free(parts);
    return 0;
}

/* ---- /v2/models/{m}/infer --------------------------------------------------------------------- */

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
        estimate += fits_decode_estimate(cfg, len);
        at += len;
    }
    if (at != bin_len)
        return failf(f, 400, "inputs[0] 'image': %zu bytes of binary data follow the %d elements of shape[0]",
                     bin_len - at, n);
    if (alloc_images(j, n, estimate, f))
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
    if (alloc_images(j, n, 0, f))
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
        failf(f, 400, "'inputs' must be an array holding exactly one input, 'image' or 'pixels'");
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
    if (strcmp(name, "image") == 0)
        rc = parse_image_input(j, input, bin, bin_len, has_bin, f);
    else if (strcmp(name, "pixels") == 0)
        rc = parse_pixels_input(j, input, bin, bin_len, has_bin, f);
    else
        failf(f, 400, "inputs[0]: unknown input '%s' (image or pixels)", name);
out:
    json_decref(root);
    return rc;
}

/* ---- answers ----------------------------------------------------------------------------------- */

static void fill_result(const struct job *j, int i, struct stopcal_result *r)
{
    const struct job_image *im = &j->images[i];
    result_from_logit(r, im->name, im->item.logit, j->threshold);
    r->has_rms = im->has_rms;
    r->rms = im->rms;
    r->nonfinite_pixels = im->nonfinite;
}

static void timing(const struct job *j, double *queue, double *infer)
{
    double first_start = 0, last_end = 0;
    for (int i = 0; i < j->n; i++) {
        const struct engine_item *it = &j->images[i].item;
        if (i == 0 || it->t_started < first_start)
            first_start = it->t_started;
        if (it->t_finished > last_end)
            last_end = it->t_finished;
    }
    *queue = first_start - j->t_prep_done;
    *infer = last_end - first_start;
}

static void answer_v1(struct job *j)
{
    const struct engine_model_info *m = job_model(j);
    json_t *results = json_array();
    for (int i = 0; i < j->n; i++) {
        struct stopcal_result r;
        fill_result(j, i, &r);
        json_array_append_new(results, result_to_json(&r));
    }
    double queue, infer, now = server_now();
    timing(j, &queue, &infer);
    json_t *doc = json_pack("{s:{s:s, s:s}, s:s, s:s, s:o, s:{s:f, s:f, s:f, s:f}}", "model", "name", m->name,
                            "sha256", m->sha256, "stopcal_version", STOPCAL_VERSION, "request_id",
                            j->rq->request_id, "results", results, "timing_ms", "queue", queue * 1e3, "preprocess",
                            (j->t_prep_done - j->t_body) * 1e3, "inference", infer * 1e3, "total",
                            (now - j->rq->t_arrival) * 1e3);
    char *text = doc ? json_dumps(doc, JSON_COMPACT | JSON_REAL_PRECISION(9)) : NULL;
    json_decref(doc);
    request_finish(j->rq, 200, text, text ? strlen(text) : 0, "application/json", -1);
}

static void answer_v2(struct job *j)
{
    const struct engine_model_info *m = job_model(j);
    json_t *outputs = json_array();
    size_t bin_bytes = 0;
    for (int which = 0; which < 2; which++) {
        int want = which == 0 ? j->want_score : j->want_logit;
        int binary = which == 0 ? j->binary_score : j->binary_logit;
        if (!want)
            continue;
        json_t *o = json_pack("{s:s, s:s, s:[i,i]}", "name", which == 0 ? "continue_score" : "logit", "datatype",
                              "FP32", "shape", j->n, 1);
        if (binary) {
            json_object_set_new(o, "parameters", json_pack("{s:I}", "binary_data_size", (json_int_t)(4 * j->n)));
            bin_bytes += 4 * (size_t)j->n;
        } else {
            json_t *data = json_array();
            for (int i = 0; i < j->n; i++) {
                struct stopcal_result r;
                fill_result(j, i, &r);
                json_array_append_new(data, json_real(which == 0 ? (double)(float)r.continue_score
                                                                 : (double)j->images[i].item.logit));
            }
            json_object_set_new(o, "data", data);
        }
        json_array_append_new(outputs, o);
    }
    json_t *doc = json_pack("{s:s, s:s, s:o, s:{s:s, s:s, s:s, s:f}}", "model_name", m->name, "model_version",
                            m->config.version, "outputs", outputs, "parameters", "request_id", j->rq->request_id,
                            "stopcal_version", STOPCAL_VERSION, "model_sha256", m->sha256, "threshold", j->threshold);
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
            fill_result(j, i, &r);
            float v = which == 0 ? (float)r.continue_score : j->images[i].item.logit;
            memcpy(body + at, &v, 4);
            at += 4;
        }
    }
    request_finish(j->rq, 200, body, at, "application/octet-stream", (long long)hlen);
}

/* ---- the pipeline ------------------------------------------------------------------------------ */

static void on_item_done(struct engine_item *it)
{
    struct job_image *im = it->owner;
    struct job *j = im->job;
    if (atomic_fetch_sub(&j->pending, 1) != 1)
        return;
    /* The last image of the request: answer it. */
    long failed = 0;
    int worst = ENGINE_OK;
    for (int i = 0; i < j->n; i++)
        if (j->images[i].item.status != ENGINE_OK) {
            failed++;
            if (!worst)
                worst = j->images[i].item.status;
        }
    metrics_images(j->model, failed, j->n - failed);
    switch (worst) {
    case ENGINE_OK:
        for (int i = 0; i < j->n; i++) {
            struct stopcal_result r;
            fill_result(j, i, &r);
            metrics_score(j->model, r.continue_score);
        }
        if (j->rq->ep == EP_PREDICT)
            answer_v1(j);
        else
            answer_v2(j);
        return;
    case ENGINE_EDEADLINE: request_fail(j->rq, 504, "the request's deadline passed before inference"); return;
    case ENGINE_ENOMEM: request_fail(j->rq, 503, "the compute device ran out of memory for this batch; retry"); return;
    case ENGINE_EDEVICE: request_fail(j->rq, 503, "the compute device failed; the service is restarting"); return;
    case ENGINE_ESHUTDOWN: request_fail(j->rq, 503, "the service is shutting down"); return;
    default: request_fail(j->rq, 500, "inference failed (see the server log)"); return;
    }
}

static void enqueue(struct job *j)
{
    struct request *rq = j->rq;
    j->t_prep_done = server_now();
    metrics_stage(j->model, STAGE_PREPROCESS, j->t_prep_done - j->t_body);
    rq->incoming_counted = 0; /* engine_submit withdraws it */
    if (j->t_prep_done > rq->deadline) {
        engine_incoming(j->srv->engine, j->model, -1);
        metrics_images(j->model, j->n, 0);
        request_fail(rq, 504, "the request's deadline passed before inference");
        return;
    }
    struct engine_item **items = malloc((size_t)j->n * sizeof *items);
    if (!items) {
        engine_incoming(j->srv->engine, j->model, -1);
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
    struct engine *e = j->srv->engine;
    /* After a successful submit the job may already be answered and freed: touch nothing of it. */
    int rc = engine_submit(e, model, items, n, 1);
    free(items);
    if (rc == ENGINE_OK)
        return;
    metrics_images(model, n, 0);
    if (rc == ENGINE_EQUEUEFULL)
        request_fail(rq, 503, "the queue is full (%d images); retry later", j->srv->cfg->max_queue);
    else if (rc == ENGINE_EDEVICE)
        request_fail(rq, 503, "the compute device failed; the service is restarting");
    else
        request_fail(rq, 503, "the service is shutting down");
}

static void after_preprocessing(struct job *j)
{
    for (int i = 0; i < j->n; i++) {
        struct job_image *im = &j->images[i];
        if (im->prep_status) {
            metrics_images(j->model, j->n, 0);
            request_fail(j->rq, im->prep_status, "%s: %s", im->name, im->prep_err);
            return;
        }
    }
    enqueue(j);
}

static void preprocess_task(void *arg)
{
    struct job_image *im = arg;
    struct job *j = im->job;
    const struct server_config *cfg = j->srv->cfg;
    struct fits_job_result res = {0};
    int rc = fits_job_to_tensor(im->tensor, im->bytes, im->len, (size_t)cfg->max_body_bytes,
                                (uint64_t)cfg->max_image_pixels, &job_model(j)->config, &res, im->prep_err,
                                sizeof im->prep_err);
    static const int http_status[] = {[FITS_JOB_OK] = 0,
                                      [FITS_JOB_EINVAL] = 400,
                                      [FITS_JOB_ETOOBIG] = 413,
                                      [FITS_JOB_ENOMEM] = 503,
                                      [FITS_JOB_EUNAVAILABLE] = 501,
                                      [FITS_JOB_EINTERNAL] = 500};
    im->prep_status = rc >= 0 && rc <= FITS_JOB_EINTERNAL ? http_status[rc] : 500;
    im->has_rms = rc == FITS_JOB_OK;
    im->rms = res.rms;
    im->nonfinite = res.nonfinite_pixels;
    if (atomic_fetch_sub(&j->pending, 1) == 1)
        after_preprocessing(j);
}

void api_start_job(void *arg)
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
    if ((rq->ep == EP_PREDICT ? parse_v1(j, &f) : parse_v2(j, &f)) != 0) {
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
