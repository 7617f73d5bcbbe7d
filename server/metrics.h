/* Prometheus metrics: request counters by endpoint and status, latency histograms (seconds) for
 * queue, preprocess, inference and total, batch sizes, continue-score histograms per model (drift).
 * The state belongs to the server object (struct server's metrics). Thread-safe; updates take one
 * short mutex. */
#ifndef STOPCAL_SERVER_METRICS_H
#define STOPCAL_SERVER_METRICS_H

#include "strbuf.h"

#define METRICS_MAX_MODELS 16

enum metrics_stage { STAGE_QUEUE, STAGE_PREPROCESS, STAGE_INFERENCE, STAGE_COUNT };

struct metrics;
struct server;

/* One set of counters for a server (its endpoints are the rows of routes.c, labelled by their
 * patterns); model names are copied. NULL when out of memory. */
struct metrics *metrics_create(int n_models, const char *const *model_names);
void metrics_destroy(struct metrics *m);

/* endpoint: routes_index() of the request's route (routes_count() for an unknown path). */
void metrics_request(struct metrics *m, int endpoint, int status, double total_seconds);
void metrics_stage(struct metrics *m, int model, enum metrics_stage stage, double seconds);
void metrics_batch(struct metrics *m, int model, int batch_size);
void metrics_score(struct metrics *m, int model, double continue_score);
void metrics_images(struct metrics *m, int model, long n_failed, long n_ok);

/* The whole /metrics page: these counters and histograms, then the server's gauges (readiness,
 * requests in flight, memory, threads, queues, models). malloc'd, *len set; NULL when out of
 * memory. */
char *metrics_text(struct server *s, size_t *len);

#endif
