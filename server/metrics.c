/* Fixed-size tables behind one mutex: requests[endpoint][status], one histogram per (model, stage),
 * per model for batch size and score, per endpoint for total latency; and the rendering of the
 * whole /metrics page. Nothing allocates after metrics_create. */
#include "metrics.h"
#ifdef STOPCAL_HAVE_GRPC
#include "rpc.h"
#endif

#include "conn_watch.h"

#include "routes.h"
#include "server.h"

#include <pthread.h>
#include <stdlib.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static const double latency_bounds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                        0.25,   0.5,   1,      2.5,   5,    10,   30,   60};
static const double batch_bounds[] = {1, 2, 4, 8, 16, 32, 64, 128, 256};
static const double score_bounds[] = {0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0};
#define N_LAT (sizeof latency_bounds / sizeof latency_bounds[0])
#define N_BATCH (sizeof batch_bounds / sizeof batch_bounds[0])
#define N_SCORE (sizeof score_bounds / sizeof score_bounds[0])
#define MAX_BUCKETS 16

struct histogram {
    uint64_t buckets[MAX_BUCKETS]; /* non-cumulative; cumulated when rendered */
    uint64_t count;
    double sum;
};

/* Endpoints: the routes, and one "other" for paths no route serves. */
#define MAX_ENDPOINTS 48

struct metrics {
    pthread_mutex_t lock;
    int n_models, n_endpoints;
    char model_names[METRICS_MAX_MODELS][128];
    uint64_t requests[MAX_ENDPOINTS][600];
    struct histogram total[MAX_ENDPOINTS];
    struct histogram stage[METRICS_MAX_MODELS][STAGE_COUNT];
    struct histogram batch[METRICS_MAX_MODELS];
    struct histogram score[METRICS_MAX_MODELS];
    uint64_t images_ok[METRICS_MAX_MODELS], images_failed[METRICS_MAX_MODELS];
};

static const char *endpoint_label(int ep)
{
    const struct route *r = routes_at(ep);
    return r ? r->pattern : "other";
}

struct metrics *metrics_create(int n_models, const char *const *model_names)
{
    _Static_assert(sizeof(((struct metrics *)0)->requests[0]) / sizeof(uint64_t) == 600, "status codes");
    if (routes_count() + 1 > MAX_ENDPOINTS)
        return NULL; /* a broken build: routes.c outgrew the table */
    struct metrics *m = calloc(1, sizeof *m);
    if (!m || pthread_mutex_init(&m->lock, NULL)) {
        free(m);
        return NULL;
    }
    m->n_endpoints = routes_count() + 1;
    m->n_models = n_models < METRICS_MAX_MODELS ? n_models : METRICS_MAX_MODELS;
    for (int i = 0; i < m->n_models; i++)
        snprintf(m->model_names[i], sizeof m->model_names[i], "%s", model_names[i]);
    return m;
}

void metrics_destroy(struct metrics *m)
{
    if (!m)
        return;
    pthread_mutex_destroy(&m->lock);
    free(m);
}

static void observe(struct histogram *h, const double *bounds, size_t n, double v)
{
    size_t i = 0;
    while (i < n && v > bounds[i])
        i++;
    if (i < n)
        h->buckets[i]++;
    h->count++;
    h->sum += v;
}

void metrics_request(struct metrics *M, int ep, int status, double total_seconds)
{
    if (!M)
        return;
    if (status < 100 || status > 599)
        status = 500;
    if (ep < 0 || ep >= M->n_endpoints)
        ep = M->n_endpoints - 1;
    pthread_mutex_lock(&M->lock);
    M->requests[ep][status]++;
    observe(&M->total[ep], latency_bounds, N_LAT, total_seconds);
    pthread_mutex_unlock(&M->lock);
}

void metrics_stage(struct metrics *M, int model, enum metrics_stage stage, double seconds)
{
    if (!M)
        return;
    if (model < 0 || model >= METRICS_MAX_MODELS)
        return;
    pthread_mutex_lock(&M->lock);
    observe(&M->stage[model][stage], latency_bounds, N_LAT, seconds < 0 ? 0 : seconds);
    pthread_mutex_unlock(&M->lock);
}

void metrics_batch(struct metrics *M, int model, int batch_size)
{
    if (!M)
        return;
    if (model < 0 || model >= METRICS_MAX_MODELS)
        return;
    pthread_mutex_lock(&M->lock);
    observe(&M->batch[model], batch_bounds, N_BATCH, batch_size);
    pthread_mutex_unlock(&M->lock);
}

void metrics_score(struct metrics *M, int model, double continue_score)
{
    if (!M)
        return;
    if (model < 0 || model >= METRICS_MAX_MODELS)
        return;
    pthread_mutex_lock(&M->lock);
    observe(&M->score[model], score_bounds, N_SCORE, continue_score);
    pthread_mutex_unlock(&M->lock);
}

void metrics_images(struct metrics *M, int model, long n_failed, long n_ok)
{
    if (!M)
        return;
    if (model < 0 || model >= METRICS_MAX_MODELS)
        return;
    pthread_mutex_lock(&M->lock);
    M->images_failed[model] += (uint64_t)n_failed;
    M->images_ok[model] += (uint64_t)n_ok;
    pthread_mutex_unlock(&M->lock);
}

static void render_histogram(struct strbuf *o, const char *name, const char *labels, const struct histogram *h,
                             const double *bounds, size_t n)
{
    uint64_t cum = 0;
    const char *sep = *labels ? "," : "";
    for (size_t i = 0; i < n; i++) {
        cum += h->buckets[i];
        strbuf_printf(o, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, labels, sep, bounds[i], (unsigned long long)cum);
    }
    strbuf_printf(o, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, sep, (unsigned long long)h->count);
    const char *open = *labels ? "{" : "", *close = *labels ? "}" : "";
    strbuf_printf(o, "%s_sum%s%s%s %.9g\n", name, open, labels, close, h->sum);
    strbuf_printf(o, "%s_count%s%s%s %llu\n", name, open, labels, close, (unsigned long long)h->count);
}

static void model_label(const struct metrics *M, char *dst, size_t len, int model)
{
    struct strbuf b = {0};
    strbuf_printf(&b, "model=\"");
    strbuf_label(&b, M->model_names[model]);
    strbuf_printf(&b, "\"");
    snprintf(dst, len, "%s", b.data ? b.data : "");
    strbuf_free(&b);
}

static void render_tables(struct metrics *M, struct strbuf *o)
{
    static const char *const stage_names[STAGE_COUNT] = {"queue", "preprocess", "inference"};
    static const char *const stage_help[STAGE_COUNT] = {
        "Time an image waited for the forward pass after preprocessing.",
        "Time from a complete request body to every image of it preprocessed.",
        "Time of the forward pass an image was part of.",
    };
    char labels[512];
    pthread_mutex_lock(&M->lock);
    strbuf_printf(o, "# HELP stopcal_http_requests_total HTTP requests answered, by endpoint and status code.\n"
                     "# TYPE stopcal_http_requests_total counter\n");
    for (int ep = 0; ep < M->n_endpoints; ep++)
        for (int code = 100; code < 600; code++)
            if (M->requests[ep][code])
                strbuf_printf(o, "stopcal_http_requests_total{endpoint=\"%s\",code=\"%d\"} %llu\n",
                              endpoint_label(ep), code, (unsigned long long)M->requests[ep][code]);
    strbuf_printf(o, "# HELP stopcal_request_duration_seconds Time from request arrival to response, by endpoint.\n"
                     "# TYPE stopcal_request_duration_seconds histogram\n");
    for (int ep = 0; ep < M->n_endpoints; ep++) {
        if (!M->total[ep].count)
            continue;
        snprintf(labels, sizeof labels, "endpoint=\"%s\"", endpoint_label(ep));
        render_histogram(o, "stopcal_request_duration_seconds", labels, &M->total[ep], latency_bounds, N_LAT);
    }
    for (int s = 0; s < STAGE_COUNT; s++) {
        char name[96];
        snprintf(name, sizeof name, "stopcal_%s_duration_seconds", stage_names[s]);
        strbuf_printf(o, "# HELP %s %s\n# TYPE %s histogram\n", name, stage_help[s], name);
        for (int m = 0; m < M->n_models; m++) {
            model_label(M, labels, sizeof labels, m);
            render_histogram(o, name, labels, &M->stage[m][s], latency_bounds, N_LAT);
        }
    }
    strbuf_printf(o, "# HELP stopcal_batch_size Images per forward pass.\n# TYPE stopcal_batch_size histogram\n");
    for (int m = 0; m < M->n_models; m++) {
        model_label(M, labels, sizeof labels, m);
        render_histogram(o, "stopcal_batch_size", labels, &M->batch[m], batch_bounds, N_BATCH);
    }
    strbuf_printf(o, "# HELP stopcal_continue_score Continue scores answered, per model (to see drift).\n"
                     "# TYPE stopcal_continue_score histogram\n");
    for (int m = 0; m < M->n_models; m++) {
        model_label(M, labels, sizeof labels, m);
        render_histogram(o, "stopcal_continue_score", labels, &M->score[m], score_bounds, N_SCORE);
    }
    strbuf_printf(o, "# HELP stopcal_images_total Images scored or refused, per model.\n"
                     "# TYPE stopcal_images_total counter\n");
    for (int m = 0; m < M->n_models; m++) {
        model_label(M, labels, sizeof labels, m);
        strbuf_printf(o, "stopcal_images_total{%s,result=\"ok\"} %llu\n", labels,
                      (unsigned long long)M->images_ok[m]);
        strbuf_printf(o, "stopcal_images_total{%s,result=\"failed\"} %llu\n", labels,
                      (unsigned long long)M->images_failed[m]);
    }
    pthread_mutex_unlock(&M->lock);
}

static void metrics_gauge(struct strbuf *o, const char *name, const char *help)
{
    strbuf_printf(o, "# HELP %s %s\n# TYPE %s gauge\n", name, help, name);
}

static void metrics_gauge_value(struct strbuf *o, const char *name, const char *labels, double value)
{
    if (*labels)
        strbuf_printf(o, "%s{%s} %.17g\n", name, labels, value);
    else
        strbuf_printf(o, "%s %.17g\n", name, value);
}

char *metrics_text(struct server *s, size_t *len)
{
    struct strbuf o = {0};
    render_tables(s->metrics, &o);
    metrics_gauge(&o, "stopcal_build_info", "The stopcald version.");
    strbuf_printf(&o, "stopcal_build_info{version=\"%s\"} 1\n", STOPCAL_VERSION);
    metrics_gauge(&o, "stopcal_live", "1 unless a sticky device error happened.");
    metrics_gauge_value(&o, "stopcal_live", "", batcher_live(s->batcher));
    metrics_gauge(&o, "stopcal_ready", "1 when the service takes inference requests.");
    metrics_gauge_value(&o, "stopcal_ready", "", server_ready(s));
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
    metrics_gauge(&o, "stopcal_queue_depth", "Images waiting for the batcher.");
    for (int i = 0; i < batcher_model_count(s->batcher); i++) {
        struct strbuf l = {0};
        strbuf_printf(&l, "model=\"");
        strbuf_label(&l, batcher_model(s->batcher, i)->name);
        strbuf_printf(&l, "\"");
        char *lab = strbuf_take(&l, NULL);
        metrics_gauge_value(&o, "stopcal_queue_depth", lab ? lab : "", batcher_queue_depth(s->batcher, i));
        free(lab);
    }
    metrics_gauge(&o, "stopcal_model_info", "Loaded models: name, weights sha256, version, backend.");
    metrics_gauge(&o, "stopcal_device_memory_bytes", "Bytes held by each model's backend (weights + activations).");
    for (int i = 0; i < batcher_model_count(s->batcher); i++) {
        const struct batcher_model_info *m = batcher_model(s->batcher, i);
        strbuf_printf(&o, "stopcal_model_info{model=\"");
        strbuf_label(&o, m->name);
        strbuf_printf(&o, "\",sha256=\"%s\",version=\"", m->sha256);
        strbuf_label(&o, m->config.version);
        strbuf_printf(&o, "\",backend=\"%s\",default=\"%s\",input_size=\"%d\"} 1\n", m->backend,
                      i == s->default_model ? "true" : "false", m->config.input_size);
    }
    for (int i = 0; i < batcher_model_count(s->batcher); i++) {
        const struct batcher_model_info *m = batcher_model(s->batcher, i);
        strbuf_printf(&o, "stopcal_device_memory_bytes{model=\"");
        strbuf_label(&o, m->name);
        strbuf_printf(&o, "\",backend=\"%s\"} %zu\n", m->backend, batcher_device_bytes(s->batcher, i));
    }
    strbuf_printf(&o, "# HELP stopcal_http_refused_connections_total Connections closed at accept "
                      "(--max-connections reached).\n"
                      "# TYPE stopcal_http_refused_connections_total counter\n"
                      "stopcal_http_refused_connections_total %llu\n",
                  (unsigned long long)atomic_load(&s->refused));
    strbuf_printf(&o, "# HELP stopcal_http_cut_connections_total Connections cut for missing a deadline "
                      "(headers: --header-timeout-ms; body: the request's deadline).\n"
                      "# TYPE stopcal_http_cut_connections_total counter\n"
                      "stopcal_http_cut_connections_total{phase=\"headers\"} %llu\n"
                      "stopcal_http_cut_connections_total{phase=\"body\"} %llu\n",
                  conn_watch_cut(s->watch, 0), conn_watch_cut(s->watch, 1));
    strbuf_printf(&o, "# HELP stopcal_http_aborted_requests_total Requests dropped before an answer "
                      "(client gone, stalled upload timed out).\n"
                      "# TYPE stopcal_http_aborted_requests_total counter\n"
                      "stopcal_http_aborted_requests_total %llu\n",
                  (unsigned long long)atomic_load(&s->aborted));
#ifdef STOPCAL_HAVE_GRPC
    rpc_metrics_render(s, &o);
#endif
    return strbuf_take(&o, len);
}
