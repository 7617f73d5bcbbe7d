/* inference.GRPCInferenceService: every RPC but ModelInfer is answered here, on the gRPC thread,
 * from the same facts as the REST endpoints (triton.h, api_triton.c): health, server and model
 * metadata, the model configuration, statistics and the repository index, each naming the view by
 * its canonical name. */
#include "rpc.h"

#include "grpc_service.pb-c.h"
#include "model_config.pb-c.h"
#include "triton.h"

#include <stdlib.h>
#include <string.h>

static void answer_message(struct rpc_request *req, const ProtobufCMessage *m)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    unsigned char *buf = malloc(n ? n : 1);
    if (!buf) {
        rpc_fail(req, GRPC_STATUS_UNAVAILABLE, "out of memory while building the answer");
        return;
    }
    protobuf_c_message_pack(m, buf);
    rpc_answer(req, buf, n);
}


/* The model a request names (a view, an alias) and the version it asks for ("" or "1"). Returns
 * the model's index with *form, or −1 after answering NOT_FOUND. */
static int find_model(struct rpc_request *req, const char *name, const char *version, int *form)
{
    snprintf(req->model, sizeof req->model, "%s", name ? name : "");
    int m = name && *name ? triton_find_model(req->srv->batcher, name, form) : -1;
    if (m < 0) {
        rpc_fail(req, GRPC_STATUS_NOT_FOUND, "name: model '%s' is not loaded (RepositoryIndex lists them)",
                 name ? name : "");
        return -1;
    }
    char why[256];
    if (triton_check_version(name, version, why, sizeof why)) {
        rpc_fail(req, GRPC_STATUS_NOT_FOUND, "version: %s", why);
        return -1;
    }
    return m;
}

#define UNPACK(type, fn, req)                                                                                    \
    type *msg = fn##__unpack(NULL, (req)->msg_len, (req)->msg);                                                 \
    if (!msg) {                                                                                                  \
        rpc_fail((req), GRPC_STATUS_INVALID_ARGUMENT, "the request is not a valid %s message", #type + 11);      \
        return;                                                                                                  \
    }

static void server_live(struct rpc_request *req)
{
    UNPACK(Inference__ServerLiveRequest, inference__server_live_request, req);
    inference__server_live_request__free_unpacked(msg, NULL);
    Inference__ServerLiveResponse r = INFERENCE__SERVER_LIVE_RESPONSE__INIT;
    r.live = batcher_live(req->srv->batcher);
    answer_message(req, &r.base);
}

static void ready_rpc(struct rpc_request *req)
{
    UNPACK(Inference__ServerReadyRequest, inference__server_ready_request, req);
    inference__server_ready_request__free_unpacked(msg, NULL);
    Inference__ServerReadyResponse r = INFERENCE__SERVER_READY_RESPONSE__INIT;
    r.ready = server_ready(req->srv);
    answer_message(req, &r.base);
}

static void model_ready(struct rpc_request *req)
{
    UNPACK(Inference__ModelReadyRequest, inference__model_ready_request, req);
    int form;
    if (find_model(req, msg->name, msg->version, &form) >= 0) {
        Inference__ModelReadyResponse r = INFERENCE__MODEL_READY_RESPONSE__INIT;
        r.ready = server_ready(req->srv);
        answer_message(req, &r.base);
    }
    inference__model_ready_request__free_unpacked(msg, NULL);
}

static void server_metadata(struct rpc_request *req)
{
    UNPACK(Inference__ServerMetadataRequest, inference__server_metadata_request, req);
    inference__server_metadata_request__free_unpacked(msg, NULL);
    static char *extensions[] = {"binary_tensor_data", "model_configuration", "statistics"};
    Inference__ServerMetadataResponse r = INFERENCE__SERVER_METADATA_RESPONSE__INIT;
    r.name = "stopcald";
    r.version = STOPCAL_VERSION;
    r.n_extensions = sizeof extensions / sizeof extensions[0];
    r.extensions = extensions;
    answer_message(req, &r.base);
}

static void model_metadata(struct rpc_request *req)
{
    UNPACK(Inference__ModelMetadataRequest, inference__model_metadata_request, req);
    int form, m = find_model(req, msg->name, msg->version, &form);
    if (m < 0) {
        inference__model_metadata_request__free_unpacked(msg, NULL);
        return;
    }
    struct triton_view v;
    triton_describe(req->srv->batcher, m, form, &v);
    Inference__ModelMetadataResponse__TensorMetadata tm[3], *in[1], *out[2];
    int64_t shapes[3][4];
    const struct triton_tensor *all[3] = {&v.inputs[0], &v.outputs[0], &v.outputs[1]};
    for (int i = 0; i < 3; i++) {
        inference__model_metadata_response__tensor_metadata__init(&tm[i]);
        tm[i].name = (char *)all[i]->name;
        tm[i].datatype = (char *)all[i]->datatype;
        shapes[i][0] = -1;
        for (int d = 0; d < all[i]->ndims; d++)
            shapes[i][d + 1] = all[i]->dims[d];
        tm[i].n_shape = (size_t)all[i]->ndims + 1;
        tm[i].shape = shapes[i];
    }
    in[0] = &tm[0];
    out[0] = &tm[1];
    out[1] = &tm[2];
    char *versions[] = {TRITON_MODEL_VERSION}, name[300];
    triton_view_name(req->srv->batcher, m, form, name, sizeof name);
    Inference__ModelMetadataResponse r = INFERENCE__MODEL_METADATA_RESPONSE__INIT;
    r.name = name;
    r.n_versions = 1;
    r.versions = versions;
    r.platform = "stopcal";
    r.n_inputs = 1;
    r.inputs = in;
    r.n_outputs = 2;
    r.outputs = out;
    answer_message(req, &r.base);
    inference__model_metadata_request__free_unpacked(msg, NULL);
}

static Inference__DataType data_type(const struct triton_tensor *t)
{
    return strcmp(t->datatype, "BYTES") == 0 ? INFERENCE__DATA_TYPE__TYPE_STRING : INFERENCE__DATA_TYPE__TYPE_FP32;
}

static void model_config(struct rpc_request *req)
{
    UNPACK(Inference__ModelConfigRequest, inference__model_config_request, req);
    int form, m = find_model(req, msg->name, msg->version, &form);
    if (m < 0) {
        inference__model_config_request__free_unpacked(msg, NULL);
        return;
    }
    const struct server_config *cfg = req->srv->cfg;
    struct triton_view v;
    triton_describe(req->srv->batcher, m, form, &v);
    int64_t dims[3][3];
    Inference__ModelTensorReshape scalar = INFERENCE__MODEL_TENSOR_RESHAPE__INIT;
    Inference__ModelInput input = INFERENCE__MODEL_INPUT__INIT, *inputs[1] = {&input};
    Inference__ModelOutput outs[2], *outputs[2] = {&outs[0], &outs[1]};
    input.name = (char *)v.inputs[0].name;
    input.data_type = data_type(&v.inputs[0]);
    input.format = INFERENCE__MODEL_INPUT__FORMAT__FORMAT_NONE;
    for (int d = 0; d < v.inputs[0].ndims; d++)
        dims[0][d] = v.inputs[0].dims[d];
    input.n_dims = (size_t)v.inputs[0].ndims;
    input.dims = dims[0];
    if (v.inputs[0].reshape_to_scalar)
        input.reshape = &scalar;
    for (int o = 0; o < 2; o++) {
        inference__model_output__init(&outs[o]);
        outs[o].name = (char *)v.outputs[o].name;
        outs[o].data_type = data_type(&v.outputs[o]);
        for (int d = 0; d < v.outputs[o].ndims; d++)
            dims[1 + o][d] = v.outputs[o].dims[d];
        outs[o].n_dims = (size_t)v.outputs[o].ndims;
        outs[o].dims = dims[1 + o];
    }
    char name[300], group_name[310];
    triton_view_name(req->srv->batcher, m, form, name, sizeof name);
    snprintf(group_name, sizeof group_name, "%s_0", name);
    Inference__ModelInstanceGroup group = INFERENCE__MODEL_INSTANCE_GROUP__INIT, *groups[1] = {&group};
    group.name = group_name;
    group.kind = strcmp(v.info->backend, "cpu") == 0 ? INFERENCE__MODEL_INSTANCE_GROUP__KIND__KIND_CPU
                                                     : INFERENCE__MODEL_INSTANCE_GROUP__KIND__KIND_GPU;
    group.count = 1;
    Inference__ModelVersionPolicy__Latest latest = INFERENCE__MODEL_VERSION_POLICY__LATEST__INIT;
    latest.num_versions = 1;
    Inference__ModelVersionPolicy policy = INFERENCE__MODEL_VERSION_POLICY__INIT;
    policy.policy_choice_case = INFERENCE__MODEL_VERSION_POLICY__POLICY_CHOICE_LATEST;
    policy.latest = &latest;
    const char *keys[4] = {"model", "sha256", "model_file_version", "stopcal_version"};
    const char *vals[4] = {v.info->name, v.info->sha256, v.info->config.version, STOPCAL_VERSION};
    Inference__ModelParameter pv[4];
    Inference__ModelConfig__ParametersEntry pe[4], *params[4];
    for (int i = 0; i < 4; i++) {
        inference__model_parameter__init(&pv[i]);
        pv[i].string_value = (char *)vals[i];
        inference__model_config__parameters_entry__init(&pe[i]);
        pe[i].key = (char *)keys[i];
        pe[i].value = &pv[i];
        params[i] = &pe[i];
    }
    Inference__ModelConfig c = INFERENCE__MODEL_CONFIG__INIT;
    c.name = name;
    c.platform = "stopcal";
    c.backend = "stopcal";
    c.version_policy = &policy;
    c.max_batch_size = cfg->max_images;
    c.n_input = 1;
    c.input = inputs;
    c.n_output = 2;
    c.output = outputs;
    c.n_instance_group = 1;
    c.instance_group = groups;
    c.n_parameters = 4;
    c.parameters = params;
    /* The engine batches across requests unless --max-batch 1. */
    Inference__ModelDynamicBatching db = INFERENCE__MODEL_DYNAMIC_BATCHING__INIT;
    int32_t preferred = cfg->max_batch;
    if (cfg->max_batch > 1) {
        db.n_preferred_batch_size = 1;
        db.preferred_batch_size = &preferred;
        db.max_queue_delay_microseconds = (uint64_t)cfg->max_delay_ms * 1000;
        c.scheduling_choice_case = INFERENCE__MODEL_CONFIG__SCHEDULING_CHOICE_DYNAMIC_BATCHING;
        c.dynamic_batching = &db;
    }
    Inference__ModelConfigResponse r = INFERENCE__MODEL_CONFIG_RESPONSE__INIT;
    r.config = &c;
    answer_message(req, &r.base);
    inference__model_config_request__free_unpacked(msg, NULL);
}

/* ---- statistics and the index: one entry per view ------------------------------------------------ */

struct view_list {
    int n, cap;
    struct view_ref {
        int model, form;
        char name[300];
    } *v;
};

static void add_view(void *ctx, int model, int form, const char *name)
{
    struct view_list *l = ctx;
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 16;
        struct view_ref *v = realloc(l->v, (size_t)cap * sizeof *v);
        if (!v)
            return;
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n].model = model;
    l->v[l->n].form = form;
    snprintf(l->v[l->n].name, sizeof l->v[l->n].name, "%s", name);
    l->n++;
}

struct stats_entry {
    Inference__ModelStatistics ms;
    Inference__InferStatistics is;
    Inference__StatisticDuration d[8];
    struct triton_stats st;
    Inference__InferBatchStatistics bs[TRITON_MAX_BATCH];
    Inference__StatisticDuration bd[TRITON_MAX_BATCH][2]; /* compute_infer, the zero input/output */
    Inference__InferBatchStatistics *bsp[TRITON_MAX_BATCH];
};

static void fill_duration(Inference__StatisticDuration *d, const struct triton_duration *t)
{
    inference__statistic_duration__init(d);
    d->count = t->count;
    d->ns = t->ns;
}

static void fill_stats(struct stats_entry *e, int model, int form, char *name)
{
    triton_stats_get(model, form, &e->st);
    struct triton_duration zero = {0, 0};
    const struct triton_duration *src[8] = {&e->st.success,       &e->st.fail,          &e->st.queue,
                                            &e->st.compute_input, &e->st.compute_infer, &e->st.compute_output,
                                            &zero,                &zero};
    for (int i = 0; i < 8; i++)
        fill_duration(&e->d[i], src[i]);
    inference__infer_statistics__init(&e->is);
    e->is.success = &e->d[0];
    e->is.fail = &e->d[1];
    e->is.queue = &e->d[2];
    e->is.compute_input = &e->d[3];
    e->is.compute_infer = &e->d[4];
    e->is.compute_output = &e->d[5];
    e->is.cache_hit = &e->d[6];
    e->is.cache_miss = &e->d[7];
    for (int b = 0; b < e->st.n_batches; b++) {
        struct triton_duration infer = {e->st.batches[b].count, e->st.batches[b].ns}, none = {e->st.batches[b].count, 0};
        fill_duration(&e->bd[b][0], &infer);
        fill_duration(&e->bd[b][1], &none);
        inference__infer_batch_statistics__init(&e->bs[b]);
        e->bs[b].batch_size = (uint64_t)e->st.batches[b].batch_size;
        e->bs[b].compute_infer = &e->bd[b][0];
        e->bs[b].compute_input = &e->bd[b][1];
        e->bs[b].compute_output = &e->bd[b][1];
        e->bsp[b] = &e->bs[b];
    }
    inference__model_statistics__init(&e->ms);
    e->ms.name = name;
    e->ms.version = TRITON_MODEL_VERSION;
    e->ms.last_inference = e->st.last_inference_ms;
    e->ms.inference_count = e->st.inference_count;
    e->ms.execution_count = e->st.execution_count;
    e->ms.inference_stats = &e->is;
    e->ms.n_batch_stats = (size_t)e->st.n_batches;
    e->ms.batch_stats = e->bsp;
}

static void model_statistics(struct rpc_request *req)
{
    UNPACK(Inference__ModelStatisticsRequest, inference__model_statistics_request, req);
    struct view_list l = {0};
    if (msg->name && *msg->name) {
        int form, m = find_model(req, msg->name, msg->version, &form);
        if (m < 0) {
            inference__model_statistics_request__free_unpacked(msg, NULL);
            return;
        }
        char name[300];
        triton_view_name(req->srv->batcher, m, form, name, sizeof name);
        add_view(&l, m, form, name);
    } else { /* every view once, by its canonical name (an alias shares its model's counters) */
        triton_each_canonical_view(req->srv->batcher, add_view, &l);
    }
    struct stats_entry *e = calloc((size_t)(l.n ? l.n : 1), sizeof *e);
    Inference__ModelStatistics **list = calloc((size_t)(l.n ? l.n : 1), sizeof *list);
    if (!e || !list || (l.n == 0 && msg->name && *msg->name)) {
        rpc_fail(req, GRPC_STATUS_UNAVAILABLE, "out of memory while building the answer");
    } else {
        for (int i = 0; i < l.n; i++) {
            fill_stats(&e[i], l.v[i].model, l.v[i].form, l.v[i].name);
            list[i] = &e[i].ms;
        }
        Inference__ModelStatisticsResponse r = INFERENCE__MODEL_STATISTICS_RESPONSE__INIT;
        r.n_model_stats = (size_t)l.n;
        r.model_stats = list;
        answer_message(req, &r.base);
    }
    free(e);
    free(list);
    free(l.v);
    inference__model_statistics_request__free_unpacked(msg, NULL);
}

static void repository_index(struct rpc_request *req)
{
    UNPACK(Inference__RepositoryIndexRequest, inference__repository_index_request, req);
    int ready = server_ready(req->srv);
    struct view_list l = {0};
    if (!msg->ready || ready)
        triton_each_view(req->srv->batcher, add_view, &l);
    Inference__RepositoryIndexResponse__ModelIndex *idx = calloc((size_t)(l.n ? l.n : 1), sizeof *idx);
    Inference__RepositoryIndexResponse__ModelIndex **list = calloc((size_t)(l.n ? l.n : 1), sizeof *list);
    if (!idx || !list) {
        rpc_fail(req, GRPC_STATUS_UNAVAILABLE, "out of memory while building the answer");
    } else {
        for (int i = 0; i < l.n; i++) {
            inference__repository_index_response__model_index__init(&idx[i]);
            idx[i].name = l.v[i].name;
            idx[i].version = TRITON_MODEL_VERSION;
            idx[i].state = ready ? "READY" : "UNAVAILABLE";
            idx[i].reason = ready ? "" : "the models are not ready yet (or the service is draining)";
            list[i] = &idx[i];
        }
        Inference__RepositoryIndexResponse r = INFERENCE__REPOSITORY_INDEX_RESPONSE__INIT;
        r.n_models = (size_t)l.n;
        r.models = list;
        answer_message(req, &r.base);
    }
    free(idx);
    free(list);
    free(l.v);
    inference__repository_index_request__free_unpacked(msg, NULL);
}

void rpc_service_dispatch(struct rpc_request *req)
{
    switch (req->method) {
    case RPC_SERVER_LIVE: server_live(req); return;
    case RPC_SERVER_READY: ready_rpc(req); return;
    case RPC_MODEL_READY: model_ready(req); return;
    case RPC_SERVER_METADATA: server_metadata(req); return;
    case RPC_MODEL_METADATA: model_metadata(req); return;
    case RPC_MODEL_CONFIG: model_config(req); return;
    case RPC_MODEL_STATISTICS: model_statistics(req); return;
    case RPC_REPOSITORY_INDEX: repository_index(req); return;
    case RPC_MODEL_INFER: rpc_infer_start(req); return;
    default: rpc_fail(req, GRPC_STATUS_UNIMPLEMENTED, "not a method stopcald serves"); return;
    }
}
