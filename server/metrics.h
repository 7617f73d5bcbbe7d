/* Prometheus metrics: request counters by endpoint and status, latency histograms (seconds) for
 * queue, preprocess, inference and total, batch sizes, continue-score histograms per model (drift).
 * Gauges that live elsewhere (queue depth, in flight, memory) are rendered by the caller with
 * metrics_gauge(). Thread-safe; updates take one short mutex. */
#ifndef STOPCAL_SERVER_METRICS_H
#define STOPCAL_SERVER_METRICS_H

#include "strbuf.h"

#define METRICS_MAX_MODELS 16

enum metrics_endpoint {
    EP_PREDICT,
    EP_MODELS,
    EP_OPENAPI,
    EP_HEALTH_LIVE,
    EP_HEALTH_READY,
    EP_SERVER_METADATA,
    EP_MODEL_METADATA,
    EP_MODEL_READY,
    EP_MODEL_INFER,
    EP_METRICS,
    EP_UNKNOWN,
    EP_COUNT
};

enum metrics_stage { STAGE_QUEUE, STAGE_PREPROCESS, STAGE_INFERENCE, STAGE_COUNT };

/* The route pattern used as the "endpoint" label ("/v2/models/{model}/infer"). */
const char *metrics_endpoint_label(enum metrics_endpoint ep);

/* Model names are copied; call once before serving. */
void metrics_init(int n_models, const char *const *model_names);

void metrics_request(enum metrics_endpoint ep, int status, double total_seconds);
void metrics_stage(int model, enum metrics_stage stage, double seconds);
void metrics_batch(int model, int batch_size);
void metrics_score(int model, double continue_score);
void metrics_images(int model, long n_failed, long n_ok);

/* Append the counters and histograms in the text exposition format. */
void metrics_render(struct strbuf *out);

/* Append one gauge family header (call once per name), then values with metrics_gauge_value. */
void metrics_gauge(struct strbuf *out, const char *name, const char *help);
/* labels: "" or 'model="x"' (already escaped). */
void metrics_gauge_value(struct strbuf *out, const char *name, const char *labels, double value);

#endif
