/* The engine: the loaded models, their backends and the dynamic batcher. One inference thread owns
 * every struct vit and struct backend (vit_forward is not thread-safe, and on the CPU two forward
 * passes at once would only fight over the same cores); requests hand it preprocessed tensors
 * through per-model queues, and it runs them in batches of up to max_batch images.
 *
 * Batching rule (ARCHITECTURE.md §6): a batch is dispatched at once when the engine is idle; it waits (at
 * most max_delay_ms after its oldest image was queued) only while more images for the same model
 * are known to be on their way — requests whose bodies are being received or preprocessed,
 * announced with engine_incoming(). */
#ifndef STOPCAL_SERVER_ENGINE_H
#define STOPCAL_SERVER_ENGINE_H

#include "model.h"

#include <stddef.h>

enum engine_status {
    ENGINE_OK = 0,
    ENGINE_EDEADLINE,  /* the request's deadline passed before its image reached the engine: 504 */
    ENGINE_ENOMEM,     /* the backend could not allocate for this batch: 503 for this batch only */
    ENGINE_EDEVICE,    /* sticky device error: the service is no longer live: 503 */
    ENGINE_ESHUTDOWN,  /* the engine stopped before running the image: 503 */
    ENGINE_EQUEUEFULL, /* engine_submit: no room for all of the images: 503 + Retry-After */
    ENGINE_EFAILED,    /* any other forward-pass failure: 500 */
};

/* One image on its way through the engine. The submitter owns the item and its pixels; the engine
 * touches neither after calling done(). */
struct engine_item {
    const float *pixels; /* (3, S, S) fp32, S = the model's input size */
    double deadline;     /* CLOCK_MONOTONIC seconds; 0 = none */
    void (*done)(struct engine_item *it); /* called once, on the inference thread */
    void *owner;
    /* set by the engine */
    int status; /* enum engine_status */
    float logit;
    int batch_size;
    double t_enqueued, t_started, t_finished; /* CLOCK_MONOTONIC seconds */
};

#define ENGINE_MAX_ALIASES 16

/* What a loaded model is, for metadata endpoints; read-only once engine_start has returned. */
struct engine_model_info {
    char name[128];
    char sha256[65];
    char path[1024];
    struct model_config config;
    char *config_json; /* the stopcal.config string as stored in the file */
    const char *backend; /* "cpu", "cuda" */
    char aliases[ENGINE_MAX_ALIASES][128]; /* other names requests may use (model_names.h) */
    int n_aliases;
};

struct engine_options {
    int max_batch;
    int max_delay_ms;
    int max_queue; /* images queued, all models together */
    int threads;   /* compute threads for the CPU backend (≥ 1) */
    const char *device; /* auto | cpu | cuda:N */
    int debug_delay_ms;
};

struct engine;

/* Returns 0, or -1 with err. */
int engine_create(struct engine **out, const struct engine_options *o, char *err, size_t errlen);

/* Open a model file, create its backend and upload its weights. name NULL or "": the model's own
 * name. Returns the model's index, or -1 with err (a missing file, a bad file, a duplicate name). */
int engine_load_model(struct engine *e, const char *name, const char *path, char *err, size_t errlen);

int engine_model_count(const struct engine *e);
const struct engine_model_info *engine_model(const struct engine *e, int index);
/* Index of the model with this name or alias, or -1. */
int engine_find_model(const struct engine *e, const char *name);
/* Let requests call model by alias too (before engine_start). An alias already naming model is
 * accepted again; one naming another model, or a model's own name, is refused. Returns 0, or -1
 * with err. */
int engine_add_alias(struct engine *e, int model, const char *alias, char *err, size_t errlen);

/* Where the inference thread records batch sizes and stage times (call before engine_start). */
struct metrics;
void engine_set_metrics(struct engine *e, struct metrics *m);

/* Start the inference thread; it first runs one canary forward pass per model and only then
 * reports ready. Returns 0, or -1 with err. */
int engine_start(struct engine *e, char *err, size_t errlen);

int engine_ready(struct engine *e); /* every canary passed and the device is healthy */
int engine_live(struct engine *e);  /* no sticky device error */

/* Queue all n items for model, or none of them. withdraw_incoming: also withdraw the request's
 * engine_incoming(+1) announcement, in the same step (whatever the outcome). Returns ENGINE_OK,
 * ENGINE_EQUEUEFULL, ENGINE_EDEVICE or ENGINE_ESHUTDOWN; done() is only ever called for items of an
 * ENGINE_OK submit. */
int engine_submit(struct engine *e, int model, struct engine_item **items, int n, int withdraw_incoming);

/* Announce (+1) or withdraw (−1) a request for model whose images are not queued yet. */
void engine_incoming(struct engine *e, int model, int delta);

/* Images queued for model (−1: all models), and how many more fit. */
int engine_queue_depth(struct engine *e, int model);
int engine_queue_free(struct engine *e);

/* Bytes the model's backend holds (weights + activations), as of its last forward pass. */
size_t engine_device_bytes(struct engine *e, int model);

/* Fail every queued image with ENGINE_ESHUTDOWN, refuse new ones, join the inference thread. */
void engine_stop(struct engine *e);
void engine_destroy(struct engine *e);

#endif
