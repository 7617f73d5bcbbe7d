/* The v2 model views over REST, as Triton's own tools read them (triton.h has the facts, shared with
 * server/grpc): model metadata and readiness, and Triton's model-configuration, statistics and
 * repository-index extensions. http.c has already found the view ({m} or {m}_pixels, by name or
 * alias: rq->model, rq->form) and checked the version; every answer names the view canonically. */
#include "server.h"

#include "triton.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void view_name(struct server *s, struct request *rq, char *out, size_t len)
{
    triton_view_name(s->batcher, rq->model, rq->form, out, len);
}

/* [-1, dims...]: the metadata's shape, batch first. */
static json_t *shape_json(const struct triton_tensor *t, int with_batch)
{
    json_t *a = json_array();
    if (with_batch)
        json_array_append_new(a, json_integer(-1));
    for (int d = 0; d < t->ndims; d++)
        json_array_append_new(a, json_integer(t->dims[d]));
    return a;
}

static json_t *tensor_metadata(const struct triton_tensor *t)
{
    return json_pack("{s:s, s:s, s:o}", "name", t->name, "datatype", t->datatype, "shape", shape_json(t, 1));
}

static int model_metadata(struct server *s, struct request *rq, struct api_answer *a)
{
    struct triton_view v;
    char name[300];
    triton_describe(s->batcher, rq->model, rq->form, &v);
    view_name(s, rq, name, sizeof name);
    json_t *inputs = json_array(), *outputs = json_array();
    for (int i = 0; i < v.n_inputs; i++)
        json_array_append_new(inputs, tensor_metadata(&v.inputs[i]));
    for (int i = 0; i < v.n_outputs; i++)
        json_array_append_new(outputs, tensor_metadata(&v.outputs[i]));
    a->doc = json_pack("{s:s, s:[s], s:s, s:o, s:o, s:{s:s, s:s, s:s, s:s, s:f}}", "name", name, "versions",
                       TRITON_MODEL_VERSION, "platform", "stopcal", "inputs", inputs, "outputs", outputs, "parameters",
                       "sha256", v.info->sha256, "model_file_version", v.info->config.version, "stopcal_version",
                       STOPCAL_VERSION, "request_id", rq->request_id, "threshold", (double)v.info->config.threshold);
    return 200;
}

static int model_ready(struct server *s, struct request *rq, struct api_answer *a)
{
    char name[300];
    view_name(s, rq, name, sizeof name);
    int ok = server_ready(s);
    a->doc = json_pack("{s:s, s:b}", "name", name, "ready", ok);
    return ok ? 200 : 503;
}

/* ---- model configuration (Triton's model_config.proto as JSON) ---------------------------------- */

static json_t *config_input(const struct triton_tensor *t)
{
    json_t *in = json_pack("{s:s, s:s, s:s, s:o, s:b, s:b, s:b}", "name", t->name, "data_type", t->config_type,
                           "format", "FORMAT_NONE", "dims", shape_json(t, 0), "is_shape_tensor", 0,
                           "allow_ragged_batch", 0, "optional", 0);
    if (in && t->reshape_to_scalar) /* [1] per item on the wire, a scalar to the model */
        json_object_set_new(in, "reshape", json_pack("{s:[]}", "shape"));
    return in;
}

static json_t *config_output(const struct triton_tensor *t)
{
    return json_pack("{s:s, s:s, s:o, s:s, s:b}", "name", t->name, "data_type", t->config_type, "dims",
                     shape_json(t, 0), "label_filename", "", "is_shape_tensor", 0);
}

static int model_config(struct server *s, struct request *rq, struct api_answer *a)
{
    const struct server_config *cfg = s->cfg;
    struct triton_view v;
    char name[300], group[310];
    triton_describe(s->batcher, rq->model, rq->form, &v);
    view_name(s, rq, name, sizeof name);
    snprintf(group, sizeof group, "%s_0", name);
    json_t *inputs = json_array(), *outputs = json_array();
    for (int i = 0; i < v.n_inputs; i++)
        json_array_append_new(inputs, config_input(&v.inputs[i]));
    for (int i = 0; i < v.n_outputs; i++)
        json_array_append_new(outputs, config_output(&v.outputs[i]));
    json_t *doc = json_pack(
        "{s:s, s:s, s:s, s:{s:{s:i}}, s:i, s:o, s:o, s:[{s:s, s:s, s:i, s:[], s:s}], s:{s:{s:s}, s:{s:s},"
        " s:{s:s}, s:{s:s}}, s:[]}",
        "name", name, "platform", "stopcal", "backend", "stopcal", "version_policy", "latest", "num_versions", 1,
        "max_batch_size", cfg->max_images, "input", inputs, "output", outputs, "instance_group", "name", group, "kind",
        strcmp(v.info->backend, "cpu") == 0 ? "KIND_CPU" : "KIND_GPU", "count", 1, "gpus", "host_policy", "",
        "parameters", "model", "string_value", v.info->name, "sha256", "string_value", v.info->sha256,
        "model_file_version", "string_value", v.info->config.version, "stopcal_version", "string_value",
        STOPCAL_VERSION, "model_warmup");
    /* The engine batches across requests unless --max-batch 1: then there is no dynamic_batching, as in
     * a Triton configuration without one. */
    if (doc && cfg->max_batch > 1)
        json_object_set_new(doc, "dynamic_batching",
                            json_pack("{s:[i], s:I, s:b}", "preferred_batch_size", cfg->max_batch,
                                      "max_queue_delay_microseconds", (json_int_t)cfg->max_delay_ms * 1000,
                                      "preserve_ordering", 0));
    a->doc = doc;
    return 200;
}

/* ---- statistics ------------------------------------------------------------------------------------ */

static json_t *duration(const struct triton_duration *d)
{
    return json_pack("{s:I, s:I}", "count", (json_int_t)d->count, "ns", (json_int_t)d->ns);
}

static json_t *view_stats(int model, int form, const char *name)
{
    struct triton_stats *st = malloc(sizeof *st); /* ~6 KiB of batch sizes: not on the HTTP thread's stack */
    if (!st)
        return NULL;
    triton_stats_get(model, form, st);
    struct triton_duration zero = {0, 0};
    json_t *batches = json_array();
    for (int b = 0; b < st->n_batches; b++) {
        struct triton_duration infer = {st->batches[b].count, st->batches[b].ns}, none = {st->batches[b].count, 0};
        json_array_append_new(batches, json_pack("{s:i, s:o, s:o, s:o}", "batch_size", st->batches[b].batch_size,
                                                 "compute_input", duration(&none), "compute_infer", duration(&infer),
                                                 "compute_output", duration(&none)));
    }
    json_t *doc = json_pack("{s:s, s:s, s:I, s:I, s:I, s:{s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o}, s:o, s:[]}",
                            "name", name, "version", TRITON_MODEL_VERSION, "last_inference",
                            (json_int_t)st->last_inference_ms, "inference_count", (json_int_t)st->inference_count,
                            "execution_count", (json_int_t)st->execution_count, "inference_stats", "success",
                            duration(&st->success), "fail", duration(&st->fail), "queue", duration(&st->queue),
                            "compute_input", duration(&st->compute_input), "compute_infer",
                            duration(&st->compute_infer), "compute_output", duration(&st->compute_output),
                            "cache_hit", duration(&zero), "cache_miss", duration(&zero), "batch_stats", batches,
                            "memory_usage");
    free(st);
    return doc;
}

static void add_view_stats(void *ctx, int model, int form, const char *name)
{
    json_array_append_new(ctx, view_stats(model, form, name));
}

static int model_stats(struct server *s, struct request *rq, struct api_answer *a)
{
    char name[300];
    view_name(s, rq, name, sizeof name);
    a->doc = json_pack("{s:[o]}", "model_stats", view_stats(rq->model, rq->form, name));
    return 200;
}

/* Every view once, by its canonical name (an alias shares its model's counters). */
static int all_stats(struct server *s, struct request *rq, struct api_answer *a)
{
    (void)rq;
    json_t *list = json_array();
    triton_each_canonical_view(s->batcher, add_view_stats, list);
    a->doc = json_pack("{s:o}", "model_stats", list);
    return 200;
}

/* ---- repository index ------------------------------------------------------------------------------ */

struct index_ctx {
    json_t *list;
    int ready;
};

static void add_index(void *ctx, int model, int form, const char *name)
{
    (void)model, (void)form;
    struct index_ctx *c = ctx;
    json_t *e = json_pack("{s:s, s:s, s:s}", "name", name, "version", TRITON_MODEL_VERSION, "state",
                          c->ready ? "READY" : "UNAVAILABLE");
    if (e && !c->ready)
        json_object_set_new(e, "reason", json_string("the models are not ready yet (or the service is draining)"));
    json_array_append_new(c->list, e);
}

/* POST /v2/repository/index, body {} or {"ready": true|false} (or none): every name a client may use
 * (models, aliases, and the pixels view of each), as Triton answers it, a bare array. */
static int repository_index(struct server *s, struct request *rq, struct api_answer *a)
{
    int only_ready = 0;
    if (rq->body_len) {
        json_error_t e;
        json_t *body = json_loadb((const char *)rq->body, rq->body_len, JSON_REJECT_DUPLICATES, &e);
        json_t *ready = json_object_get(body, "ready");
        if (!json_is_object(body) || (ready && !json_is_boolean(ready))) {
            json_decref(body);
            a->doc = error_json(rq->request_id, "the body must be a JSON object, {} or {\"ready\": true|false}");
            return 400;
        }
        only_ready = json_is_true(ready);
        json_decref(body);
    }
    struct index_ctx c = {json_array(), server_ready(s)};
    if (!only_ready || c.ready)
        triton_each_view(s->batcher, add_index, &c);
    a->doc = c.list;
    return 200;
}

const struct api_handler api_model_metadata = {.get = model_metadata};
const struct api_handler api_model_ready = {.get = model_ready};
const struct api_handler api_model_config = {.get = model_config};
const struct api_handler api_model_stats = {.get = model_stats};
const struct api_handler api_all_stats = {.get = all_stats};
const struct api_handler api_repository_index = {.post = repository_index}; /* any Content-Type, as Triton */
