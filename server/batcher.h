/* The batcher: the loaded models, their backends and the dynamic batching in front of them. One inference thread owns
 * every struct vit and struct backend (vit_forward is not thread-safe, and on the CPU two forward
 * passes at once would only fight over the same cores); requests hand it preprocessed tensors
 * through per-model queues, and it runs them in batches of up to max_batch images.
 *
 * Batching rule (ARCHITECTURE.md §6): a batch is dispatched at once when the inference thread is idle; it waits (at
 * most max_delay_ms after its oldest image was queued) only while more images for the same model
 * are known to be on their way — requests whose bodies are being received or preprocessed,
 * announced with batcher_incoming(). */
#ifndef STOPCAL_SERVER_BATCHER_H
#define STOPCAL_SERVER_BATCHER_H

#include "model.h"

#include <stddef.h>

enum batcher_status {
    BATCHER_OK = 0,
    BATCHER_EDEADLINE,  /* the request's deadline passed before its image reached the forward pass: 504 */
    BATCHER_ENOMEM,     /* the backend could not allocate for this batch: 503 for this batch only */
    BATCHER_EDEVICE,    /* sticky device error: the service is no longer live: 503 */
    BATCHER_ESHUTDOWN,  /* the batcher stopped before running the image: 503 */
    BATCHER_EQUEUEFULL, /* batcher_submit: no room for all of the images: 503 + Retry-After */
    BATCHER_EFAILED,    /* any other forward-pass failure: 500 */
};

/* One image on its way through the batcher. The submitter owns the item and its pixels; the batcher
 * touches neither after calling done(). */
/* An explain pass for one image (vit_explain): rows the submitter provides and the batcher fills. */
struct batcher_explain {
    float *cls;     /* (heads, T): the last block's CLS attention, token order */
    float *rollout; /* (T) the rollout's CLS row, or NULL for none */
};

struct batcher_item {
    const float *pixels; /* (3, S, S) fp32, S = the model's input size */
    struct batcher_explain *explain; /* NULL: an ordinary image; else run alone through an explain pass */
    double deadline;     /* CLOCK_MONOTONIC seconds; 0 = none */
    void (*done)(struct batcher_item *it); /* called once, on the inference thread */
    void *owner;
    /* set by the batcher */
    int status; /* enum batcher_status */
    float logit;
    int batch_size;
    double t_enqueued, t_started, t_finished; /* CLOCK_MONOTONIC seconds */
};

#define BATCHER_MAX_ALIASES 16

/* What a loaded model is, for metadata endpoints; read-only once batcher_start has returned. */
struct batcher_model_info {
    char name[128];
    char sha256[65];
    char path[1024];
    struct model_config config;
    char *config_json; /* the stopcal.config string as stored in the file */
    const char *backend; /* "cpu", "cuda" */
    const char *precision; /* what its backend computes in: "fp32", "bf16" (backend.h) */
    char aliases[BATCHER_MAX_ALIASES][128]; /* other names requests may use (model_names.h) */
    int n_aliases;
};

struct batcher_options {
    int max_batch;
    int max_delay_ms;
    int max_queue; /* images queued, all models together */
    int threads;   /* compute threads for the CPU backend (≥ 1) */
    const char *device; /* auto | cpu | cuda:N */
    const char *precision; /* fp32 | bf16 | auto, NULL or "": not asked (backend_options.precision) */
    int debug_delay_ms;
};

struct batcher;

/* Returns 0, or -1 with err. */
int batcher_create(struct batcher **out, const struct batcher_options *o, char *err, size_t errlen);

/* Open a model file, create its backend and upload its weights. name NULL or "": the model's own
 * name. Returns the model's index, or -1 with err (a missing file, a bad file, a duplicate name). */
int batcher_load_model(struct batcher *e, const char *name, const char *path, char *err, size_t errlen);

int batcher_model_count(const struct batcher *e);
const struct batcher_model_info *batcher_model(const struct batcher *e, int index);
/* Index of the model with this name or alias, or -1. */
int batcher_find_model(const struct batcher *e, const char *name);
/* Let requests call model by alias too (before batcher_start). An alias already naming model is
 * accepted again; one naming another model, or a model's own name, is refused. Returns 0, or -1
 * with err. */
int batcher_add_alias(struct batcher *e, int model, const char *alias, char *err, size_t errlen);

/* Where the inference thread records batch sizes and stage times (call before batcher_start). */
struct metrics;
void batcher_set_metrics(struct batcher *e, struct metrics *m);

/* Start the inference thread; it first runs one canary forward pass per model and only then
 * reports ready. Returns 0, or -1 with err. */
int batcher_start(struct batcher *e, char *err, size_t errlen);

int batcher_ready(struct batcher *e); /* every canary passed and the device is healthy */
int batcher_live(struct batcher *e);  /* no sticky device error */

/* Queue all n items for model, or none of them. withdraw_incoming: also withdraw the request's
 * batcher_incoming(+1) announcement, in the same step (whatever the outcome). Returns BATCHER_OK,
 * BATCHER_EQUEUEFULL, BATCHER_EDEVICE or BATCHER_ESHUTDOWN; done() is only ever called for items of an
 * BATCHER_OK submit. */
int batcher_submit(struct batcher *e, int model, struct batcher_item **items, int n, int withdraw_incoming);

/* Announce (+1) or withdraw (−1) a request for model whose images are not queued yet. */
void batcher_incoming(struct batcher *e, int model, int delta);

/* Images queued for model (−1: all models), and how many more fit. */
int batcher_queue_depth(struct batcher *e, int model);
int batcher_queue_free(struct batcher *e);

/* Bytes the model's backend holds (weights + activations), as of its last forward pass. */
size_t batcher_device_bytes(struct batcher *e, int model);

/* Fail every queued image with BATCHER_ESHUTDOWN, refuse new ones, join the inference thread. */
void batcher_stop(struct batcher *e);
void batcher_destroy(struct batcher *e);

#endif
