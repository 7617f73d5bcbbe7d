/* The endpoints that describe the service, answered on the HTTP thread: /v1/models, the OpenAPI
 * document, the v2 server metadata, health and readiness, /metrics (the v2 model views: api_triton.c). */
#include "server.h"

#include "routes.h"
#include "triton.h"

#include <stdlib.h>
#include <string.h>

static json_t *model_json(struct server *s, int i)
{
    const struct batcher_model_info *m = batcher_model(s->batcher, i);
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
    /* what this model's answers are computed in, resolved once when its backend was created */
    json_object_set_new(doc, "precision", json_string(m->precision));
    return doc;
}

struct views_ctx {
    json_t *list;
    int model;
};

static void add_view_name(void *ctx, int model, int form, const char *name)
{
    (void)form;
    struct views_ctx *c = ctx;
    if (model == c->model)
        json_array_append_new(c->list, json_string(name));
}

static int list_models(struct server *s, struct request *rq, struct api_answer *a)
{
    json_t *list = json_array();
    for (int i = 0; i < batcher_model_count(s->batcher); i++) {
        json_t *m = model_json(s, i);
        /* Every name a v2 client may use for it: one view per input form, aliases too (triton.h). */
        struct views_ctx c = {json_array(), i};
        triton_each_view(s->batcher, add_view_name, &c);
        json_object_set_new(m, "v2_models", c.list);
        json_array_append_new(list, m);
    }
    a->doc = json_pack("{s:s, s:o, s:s, s:s, s:b}", "default", batcher_model(s->batcher, s->default_model)->name,
                     "models", list, "stopcal_version", STOPCAL_VERSION, "request_id", rq->request_id, "fits_input",
                     1);
    return 200;
}

static int server_metadata(struct server *s, struct request *rq, struct api_answer *a)
{
    (void)s;
    a->doc = json_pack("{s:s, s:s, s:[s,s,s], s:s}", "name", "stopcald", "version", STOPCAL_VERSION, "extensions",
                     "binary_tensor_data", "model_configuration", "statistics", "request_id", rq->request_id);
    return 200;
}

static int health(struct server *s, int ready, struct api_answer *a)
{
    int ok = ready ? server_ready(s) : batcher_live(s->batcher);
    a->doc = json_pack("{s:b}", ready ? "ready" : "live", ok);
    return ok ? 200 : 503;
}

static int health_live(struct server *s, struct request *rq, struct api_answer *a)
{
    (void)rq;
    return health(s, 0, a);
}

static int health_ready(struct server *s, struct request *rq, struct api_answer *a)
{
    (void)rq;
    return health(s, 1, a);
}

static int openapi(struct server *s, struct request *rq, struct api_answer *a)
{
    (void)s, (void)rq;
    a->text = strdup(api_openapi_json());
    a->len = a->text ? strlen(a->text) : 0;
    a->type = "application/json";
    return 200;
}

static int metrics_page(struct server *s, struct request *rq, struct api_answer *a)
{
    (void)rq;
    a->text = metrics_text(s, &a->len);
    a->type = "text/plain; version=0.0.4; charset=utf-8";
    return 200;
}

const struct api_handler api_list_models = {.get = list_models};
const struct api_handler api_openapi = {.get = openapi};
const struct api_handler api_server_metadata = {.get = server_metadata};
const struct api_handler api_health_live = {.get = health_live};
const struct api_handler api_health_ready = {.get = health_ready};
const struct api_handler api_metrics = {.get = metrics_page};
