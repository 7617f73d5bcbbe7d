/* Fixed-size tables behind one mutex: requests[endpoint][status], one histogram per (model, stage),
 * per model for batch size and score, per endpoint for total latency. Nothing allocates after init. */
#include "metrics.h"

#include <pthread.h>
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

static struct {
    pthread_mutex_t lock;
    int n_models;
    char model_names[METRICS_MAX_MODELS][128];
    uint64_t requests[EP_COUNT][600];
    struct histogram total[EP_COUNT];
    struct histogram stage[METRICS_MAX_MODELS][STAGE_COUNT];
    struct histogram batch[METRICS_MAX_MODELS];
    struct histogram score[METRICS_MAX_MODELS];
    uint64_t images_ok[METRICS_MAX_MODELS], images_failed[METRICS_MAX_MODELS];
} M = {.lock = PTHREAD_MUTEX_INITIALIZER};

static const char *const endpoint_labels[EP_COUNT] = {
    [EP_PREDICT] = "/v1/predict",
    [EP_MODELS] = "/v1/models",
    [EP_OPENAPI] = "/v1/openapi.json",
    [EP_HEALTH_LIVE] = "/v2/health/live",
    [EP_HEALTH_READY] = "/v2/health/ready",
    [EP_SERVER_METADATA] = "/v2",
    [EP_MODEL_METADATA] = "/v2/models/{model}",
    [EP_MODEL_READY] = "/v2/models/{model}/ready",
    [EP_MODEL_INFER] = "/v2/models/{model}/infer",
    [EP_METRICS] = "/metrics",
    [EP_UNKNOWN] = "other",
};

const char *metrics_endpoint_label(enum metrics_endpoint ep) { return endpoint_labels[ep]; }

void metrics_init(int n_models, const char *const *model_names)
{
    pthread_mutex_lock(&M.lock);
    M.n_models = n_models < METRICS_MAX_MODELS ? n_models : METRICS_MAX_MODELS;
    for (int i = 0; i < M.n_models; i++)
        snprintf(M.model_names[i], sizeof M.model_names[i], "%s", model_names[i]);
    pthread_mutex_unlock(&M.lock);
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

void metrics_request(enum metrics_endpoint ep, int status, double total_seconds)
{
    if (status < 100 || status > 599)
        status = 500;
    pthread_mutex_lock(&M.lock);
    M.requests[ep][status]++;
    observe(&M.total[ep], latency_bounds, N_LAT, total_seconds);
    pthread_mutex_unlock(&M.lock);
}

void metrics_stage(int model, enum metrics_stage stage, double seconds)
{
    if (model < 0 || model >= METRICS_MAX_MODELS)
        return;
    pthread_mutex_lock(&M.lock);
    observe(&M.stage[model][stage], latency_bounds, N_LAT, seconds < 0 ? 0 : seconds);
    pthread_mutex_unlock(&M.lock);
}

void metrics_batch(int model, int batch_size)
{
    if (model < 0 || model >= METRICS_MAX_MODELS)
        return;
    pthread_mutex_lock(&M.lock);
    observe(&M.batch[model], batch_bounds, N_BATCH, batch_size);
    pthread_mutex_unlock(&M.lock);
}

void metrics_score(int model, double continue_score)
{
    if (model < 0 || model >= METRICS_MAX_MODELS)
        return;
    pthread_mutex_lock(&M.lock);
    observe(&M.score[model], score_bounds, N_SCORE, continue_score);
    pthread_mutex_unlock(&M.lock);
}

void metrics_images(int model, long n_failed, long n_ok)
{
    if (model < 0 || model >= METRICS_MAX_MODELS)
        return;
    pthread_mutex_lock(&M.lock);
    M.images_failed[model] += (uint64_t)n_failed;
    M.images_ok[model] += (uint64_t)n_ok;
    pthread_mutex_unlock(&M.lock);
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

static void model_label(char *dst, size_t len, int model)
{
    struct strbuf b = {0};
    strbuf_printf(&b, "model=\"");
    strbuf_label(&b, M.model_names[model]);
    strbuf_printf(&b, "\"");
    snprintf(dst, len, "%s", b.data ? b.data : "");
    strbuf_free(&b);
}

void metrics_render(struct strbuf *o)
{
    static const char *const stage_names[STAGE_COUNT] = {"queue", "preprocess", "inference"};
    static const char *const stage_help[STAGE_COUNT] = {
        "Time an image waited for the engine after preprocessing.",
        "Time from a complete request body to every image of it preprocessed.",
        "Time of the forward pass an image was part of.",
    };
    char labels[512];
    pthread_mutex_lock(&M.lock);
    strbuf_printf(o, "# HELP stopcal_http_requests_total HTTP requests answered, by endpoint and status code.\n"
                     "# TYPE stopcal_http_requests_total counter\n");
    for (int ep = 0; ep < EP_COUNT; ep++)
        for (int code = 100; code < 600; code++)
            if (M.requests[ep][code])
                strbuf_printf(o, "stopcal_http_requests_total{endpoint=\"%s\",code=\"%d\"} %llu\n",
                              endpoint_labels[ep], code, (unsigned long long)M.requests[ep][code]);
    strbuf_printf(o, "# HELP stopcal_request_duration_seconds Time from request arrival to response, by endpoint.\n"
                     "# TYPE stopcal_request_duration_seconds histogram\n");
    for (int ep = 0; ep < EP_COUNT; ep++) {
        if (!M.total[ep].count)
            continue;
        snprintf(labels, sizeof labels, "endpoint=\"%s\"", endpoint_labels[ep]);
        render_histogram(o, "stopcal_request_duration_seconds", labels, &M.total[ep], latency_bounds, N_LAT);
    }
    for (int s = 0; s < STAGE_COUNT; s++) {
        char name[96];
        snprintf(name, sizeof name, "stopcal_%s_duration_seconds", stage_names[s]);
        strbuf_printf(o, "# HELP %s %s\n# TYPE %s histogram\n", name, stage_help[s], name);
        for (int m = 0; m < M.n_models; m++) {
            model_label(labels, sizeof labels, m);
            render_histogram(o, name, labels, &M.stage[m][s], latency_bounds, N_LAT);
        }
    }
    strbuf_printf(o, "# HELP stopcal_batch_size Images per forward pass.\n# TYPE stopcal_batch_size histogram\n");
    for (int m = 0; m < M.n_models; m++) {
        model_label(labels, sizeof labels, m);
        render_histogram(o, "stopcal_batch_size", labels, &M.batch[m], batch_bounds, N_BATCH);
    }
    strbuf_printf(o, "# HELP stopcal_continue_score Continue scores answered, per model (to see drift).\n"
                     "# TYPE stopcal_continue_score histogram\n");
    for (int m = 0; m < M.n_models; m++) {
        model_label(labels, sizeof labels, m);
        render_histogram(o, "stopcal_continue_score", labels, &M.score[m], score_bounds, N_SCORE);
    }
    strbuf_printf(o, "# HELP stopcal_images_total Images scored or refused, per model.\n"
                     "# TYPE stopcal_images_total counter\n");
    for (int m = 0; m < M.n_models; m++) {
        model_label(labels, sizeof labels, m);
        strbuf_printf(o, "stopcal_images_total{%s,result=\"ok\"} %llu\n", labels,
                      (unsigned long long)M.images_ok[m]);
        strbuf_printf(o, "stopcal_images_total{%s,result=\"failed\"} %llu\n", labels,
                      (unsigned long long)M.images_failed[m]);
    }
    pthread_mutex_unlock(&M.lock);
}

void metrics_gauge(struct strbuf *o, const char *name, const char *help)
{
    strbuf_printf(o, "# HELP %s %s\n# TYPE %s gauge\n", name, help, name);
}

void metrics_gauge_value(struct strbuf *o, const char *name, const char *labels, double value)
{
    if (*labels)
        strbuf_printf(o, "%s{%s} %.17g\n", name, labels, value);
    else
        strbuf_printf(o, "%s %.17g\n", name, value);
}
