/* The batcher and its inference thread. Queues are per-model rings of item pointers under one
 * mutex; the thread serves the model whose oldest image has waited longest. Everything the forward
 * pass needs (batch buffer, logits, the backends' activation memory) is allocated before the canary,
 * so a steady-state batch allocates nothing. */
#include "batcher.h"
#include "triton.h"

#include "backend.h"
#include "backend_registry.h"
#include "log.h"
#include "metrics.h"
#include "threads.h"
#include "vit.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BATCHER_MAX_MODELS METRICS_MAX_MODELS

struct batcher_slot {
    struct batcher_model_info info;
    struct backend be;
    int have_backend;
    struct vit *vit;
    struct batcher_item **ring; /* capacity max_queue */
    int head, count;
    int incoming;              /* requests announced but not queued yet */
    atomic_size_t device_bytes;
};

struct batcher {
    struct batcher_options opt;
    struct metrics *metrics; /* the server's; NULL: none kept */
    char device[64];
    char precision[8];
    struct batcher_slot slots[BATCHER_MAX_MODELS];
    int n_models;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    int queued_total;
    int stopping;
    int started;
    pthread_t thread;
    atomic_int ready, live;
    float *batch_pixels; /* (max_batch, 3, Smax, Smax) */
    float *logits;       /* (max_batch) */
};

static double now_mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static struct timespec to_timespec(double t)
{
    struct timespec ts;
    ts.tv_sec = (time_t)t;
    ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

int batcher_create(struct batcher **out, const struct batcher_options *o, char *err, size_t errlen)
{
    struct batcher *e = calloc(1, sizeof *e);
    if (!e) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    e->opt = *o;
    snprintf(e->device, sizeof e->device, "%s", o->device ? o->device : "auto");
    e->opt.device = e->device;
    snprintf(e->precision, sizeof e->precision, "%s", o->precision ? o->precision : "");
    e->opt.precision = e->precision[0] ? e->precision : NULL;
    pthread_mutex_init(&e->lock, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&e->wake, &attr);
    pthread_condattr_destroy(&attr);
    atomic_store(&e->live, 1);
    *out = e;
    return 0;
}

/* auto: an accelerator when built in and a device answers, else the CPU with one log line. */
static int create_backend(struct batcher *e, struct backend *be, const struct model_config *cfg,
                          struct batcher_model_info *info, char *err, size_t errlen)
{
    char note[768];
    struct backend_options o;
    backend_options_from_env(&o);
    o.threads = e->opt.threads;
    o.precision = e->opt.precision; /* the server's flag and its STOPCAL_PRECISION twin */
    o.model_precision = model_precision_name(cfg->precision);
    if (backend_create_for_device(be, e->device, &o, note, sizeof note, err, errlen))
        return -1;
    static atomic_int said;
    if (note[0] && !atomic_exchange(&said, 1))
        log_msg("info", "%s", note);
    info->backend = be->ops->name;
    info->precision = backend_precision_name(be->precision);
    return 0;
}

int batcher_load_model(struct batcher *e, const char *name, const char *path, char *err, size_t errlen)
{
    if (e->n_models >= BATCHER_MAX_MODELS) {
        snprintf(err, errlen, "at most %d models", BATCHER_MAX_MODELS);
        return -1;
    }
    struct batcher_slot *s = &e->slots[e->n_models];
    memset(s, 0, sizeof *s);
    struct model m;
    char why[512];
    if (model_open(&m, path, why, sizeof why)) {
        snprintf(err, errlen, "%s: %s", path, why);
        return -1;
    }
    snprintf(s->info.name, sizeof s->info.name, "%s", name && *name ? name : m.config.name);
    if (!s->info.name[0])
        snprintf(s->info.name, sizeof s->info.name, "model%d", e->n_models);
    if (batcher_find_model(e, s->info.name) >= 0) {
        snprintf(err, errlen, "%s: a model named '%s' is already loaded (use --model NAME=FILE)", path,
                 s->info.name);
        model_close(&m);
        return -1;
    }
    const char *unverified = model_digest_note(&m);
    if (unverified)
        log_msg("warn", "model %s: %s", path, unverified);
    snprintf(s->info.sha256, sizeof s->info.sha256, "%s", m.sha256);
    snprintf(s->info.path, sizeof s->info.path, "%s", path);
    s->info.config = m.config;
    s->info.config_json = strdup(m.config_json ? m.config_json : "{}");
    s->ring = calloc((size_t)e->opt.max_queue, sizeof *s->ring);
    if (!s->info.config_json || !s->ring) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    if (create_backend(e, &s->be, &m.config, &s->info, why, sizeof why)) {
        snprintf(err, errlen, "%s", why);
        goto fail;
    }
    s->have_backend = 1;
    if (vit_create(&s->vit, &m, &s->be, why, sizeof why)) {
        snprintf(err, errlen, "loading %s: %s", path, why);
        goto fail;
    }
    model_close(&m); /* the weights now live in the backend */
    return e->n_models++;
fail:
    if (s->have_backend)
        backend_destroy(&s->be);
    free(s->ring);
    free(s->info.config_json);
    memset(s, 0, sizeof *s);
    model_close(&m);
    return -1;
}

int batcher_model_count(const struct batcher *e) { return e->n_models; }

const struct batcher_model_info *batcher_model(const struct batcher *e, int index)
{
    return index >= 0 && index < e->n_models ? &e->slots[index].info : NULL;
}

int batcher_find_model(const struct batcher *e, const char *name)
{
    for (int i = 0; i < e->n_models; i++)
        if (strcmp(e->slots[i].info.name, name) == 0)
            return i;
    for (int i = 0; i < e->n_models; i++)
        for (int k = 0; k < e->slots[i].info.n_aliases; k++)
            if (strcmp(e->slots[i].info.aliases[k], name) == 0)
                return i;
    return -1;
}

int batcher_add_alias(struct batcher *e, int model, const char *alias, char *err, size_t errlen)
{
    struct batcher_model_info *m = &e->slots[model].info;
    int now = batcher_find_model(e, alias);
    if (now == model && strcmp(m->name, alias) != 0)
        return 0;
    if (now >= 0) {
        snprintf(err, errlen, "'%s' already names the model '%s'", alias, e->slots[now].info.name);
        return -1;
    }
    if (m->n_aliases >= BATCHER_MAX_ALIASES || strlen(alias) >= sizeof m->aliases[0]) {
        snprintf(err, errlen, "at most %d aliases of at most %zu characters per model", BATCHER_MAX_ALIASES,
                 sizeof m->aliases[0] - 1);
        return -1;
    }
    snprintf(m->aliases[m->n_aliases++], sizeof m->aliases[0], "%s", alias);
    return 0;
}

static int status_from_backend(struct batcher *e, int rc, const char *what, const char *err)
{
    if (rc == BACKEND_ENOMEM) {
        log_msg("warn", "%s: out of memory for this batch: %s", what, err);
        return BATCHER_ENOMEM;
    }
    if (rc == BACKEND_EDEVICE) {
        if (atomic_exchange(&e->live, 0))
            log_msg("error", "%s: sticky device error, the service is no longer live: %s", what, err);
        atomic_store(&e->ready, 0);
        return BATCHER_EDEVICE;
    }
    log_msg("error", "%s: forward pass failed: %s", what, err);
    return BATCHER_EFAILED;
}

/* Reserve every model's buffers at max_batch and run one image of zeros through it. */
static int run_canaries(struct batcher *e)
{
    char err[512];
    for (int i = 0; i < e->n_models; i++) {
        struct batcher_slot *s = &e->slots[i];
        const int S = s->info.config.input_size;
        int rc = vit_reserve(s->vit, e->opt.max_batch, S, err, sizeof err);
        if (rc == 0) {
            memset(e->batch_pixels, 0, (size_t)3 * S * S * sizeof(float));
            rc = vit_forward(s->vit, e->batch_pixels, 1, S, e->logits, err, sizeof err);
        }
        atomic_store(&s->device_bytes, s->be.ops->bytes_in_use(&s->be));
        if (rc) {
            status_from_backend(e, rc, s->info.name, err);
            log_msg("error", "model %s: canary inference failed; the service stays not-ready", s->info.name);
            return -1;
        }
        json_t *f = json_pack("{s:s, s:s, s:f}", "model", s->info.name, "backend", s->info.backend, "logit",
                              (double)e->logits[0]);
        log_event("info", "canary inference passed", f);
    }
    return 0;
}

/* The model whose oldest queued image has waited longest, or −1. Called with the lock held. */
static int pick_model(struct batcher *e)
{
    int best = -1;
    double oldest = 0;
    for (int i = 0; i < e->n_models; i++) {
        struct batcher_slot *s = &e->slots[i];
        if (!s->count)
            continue;
        double t = s->ring[s->head]->t_enqueued;
        if (best < 0 || t < oldest) {
            best = i;
            oldest = t;
        }
    }
    return best;
}

/* One image through an explain pass (vit_explain), on the inference thread like any batch. */
static void run_explain(struct batcher *e, int model, struct batcher_item *it)
{
    struct batcher_slot *s = &e->slots[model];
    const int S = s->info.config.input_size;
    it->batch_size = 1;
    it->status = BATCHER_EDEVICE;
    it->logit = 0;
    if (!atomic_load(&e->live))
        return;
    char err[512] = "";
    double t0 = now_mono();
    int rc = vit_explain(s->vit, it->pixels, S, &it->logit, it->explain->cls, it->explain->rollout, err, sizeof err);
    double t1 = now_mono();
    it->status = rc ? status_from_backend(e, rc, s->info.name, err) : BATCHER_OK;
    it->t_started = t0;
    it->t_finished = t1;
    metrics_batch(e->metrics, model, 1);
    metrics_stage(e->metrics, model, STAGE_QUEUE, t0 - it->t_enqueued);
    metrics_stage(e->metrics, model, STAGE_INFERENCE, t1 - t0);
    atomic_store(&s->device_bytes, s->be.ops->bytes_in_use(&s->be));
}

static void run_batch(struct batcher *e, int model, struct batcher_item **items, int n)
{
    struct batcher_slot *s = &e->slots[model];
    const int S = s->info.config.input_size;
    const size_t plane = (size_t)3 * S * S;
    if (e->opt.debug_delay_ms > 0) {
        struct timespec ts = {e->opt.debug_delay_ms / 1000, (long)(e->opt.debug_delay_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    /* Deadlines are checked before inference: an expired image does not take a batch slot. */
    double now = now_mono();
    struct batcher_item *run[n > 0 ? n : 1], *explained[n > 0 ? n : 1];
    int k = 0, x = 0;
    for (int i = 0; i < n; i++) {
        items[i]->t_started = now;
        if (items[i]->deadline > 0 && now > items[i]->deadline) {
            items[i]->status = BATCHER_EDEADLINE;
            items[i]->t_finished = now;
            continue;
        }
        if (items[i]->explain) { /* opt-in: its own pass, never inside an ordinary batch */
            explained[x++] = items[i];
            continue;
        }
        memcpy(e->batch_pixels + (size_t)k * plane, items[i]->pixels, plane * sizeof(float));
        run[k++] = items[i];
    }
    if (k > 0) {
        int status = BATCHER_EDEVICE;
        if (atomic_load(&e->live)) {
            char err[512] = "";
            double t0 = now_mono();
            int rc = vit_forward(s->vit, e->batch_pixels, k, S, e->logits, err, sizeof err);
            double t1 = now_mono();
            status = rc ? status_from_backend(e, rc, s->info.name, err) : BATCHER_OK;
            metrics_batch(e->metrics, model, k);
            triton_stats_batch(model, k, t1 - t0);
            for (int i = 0; i < k; i++) {
                run[i]->t_started = t0;
                run[i]->t_finished = t1;
                metrics_stage(e->metrics, model, STAGE_QUEUE, t0 - run[i]->t_enqueued);
                metrics_stage(e->metrics, model, STAGE_INFERENCE, t1 - t0);
            }
            atomic_store(&s->device_bytes, s->be.ops->bytes_in_use(&s->be));
        }
        for (int i = 0; i < k; i++) {
            run[i]->status = status;
            run[i]->batch_size = k;
            run[i]->logit = status == BATCHER_OK ? e->logits[i] : 0;
        }
    }
    for (int i = 0; i < x; i++)
        run_explain(e, model, explained[i]);
    for (int i = 0; i < n; i++)
        items[i]->done(items[i]);
}

static void *batcher_main(void *arg)
{
    struct batcher *e = arg;
    /* OpenMP's thread count is per calling thread: set it on the thread that runs the passes. */
    threads_set_compute_threads(e->opt.threads);
    if (run_canaries(e) == 0)
        atomic_store(&e->ready, atomic_load(&e->live));
    const double max_delay = e->opt.max_delay_ms * 1e-3;
    struct batcher_item **batch = calloc((size_t)e->opt.max_batch, sizeof *batch);
    pthread_mutex_lock(&e->lock);
    while (!e->stopping && batch) {
        int m = pick_model(e);
        if (m < 0) {
            pthread_cond_wait(&e->wake, &e->lock);
            continue;
        }
        struct batcher_slot *s = &e->slots[m];
        if (s->count < e->opt.max_batch && s->incoming > 0) {
            double until = s->ring[s->head]->t_enqueued + max_delay;
            if (now_mono() < until) {
                struct timespec ts = to_timespec(until);
                pthread_cond_timedwait(&e->wake, &e->lock, &ts);
                continue;
            }
        }
        int n = s->count < e->opt.max_batch ? s->count : e->opt.max_batch;
        for (int i = 0; i < n; i++) {
            batch[i] = s->ring[s->head];
            s->head = (s->head + 1) % e->opt.max_queue;
        }
        s->count -= n;
        e->queued_total -= n;
        pthread_mutex_unlock(&e->lock);
        run_batch(e, m, batch, n);
        pthread_mutex_lock(&e->lock);
    }
    pthread_mutex_unlock(&e->lock);
    free(batch);
    return NULL;
}

void batcher_set_metrics(struct batcher *e, struct metrics *m) { e->metrics = m; }

int batcher_start(struct batcher *e, char *err, size_t errlen)
{
    int smax = 0;
    for (int i = 0; i < e->n_models; i++)
        if (e->slots[i].info.config.input_size > smax)
            smax = e->slots[i].info.config.input_size;
    e->batch_pixels = malloc((size_t)e->opt.max_batch * 3 * smax * smax * sizeof(float));
    e->logits = malloc((size_t)e->opt.max_batch * sizeof(float));
    if (!e->batch_pixels || !e->logits) {
        snprintf(err, errlen, "out of memory for a batch of %d images of %d²", e->opt.max_batch, smax);
        return -1;
    }
    if (pthread_create(&e->thread, NULL, batcher_main, e)) {
        snprintf(err, errlen, "cannot start the inference thread");
        return -1;
    }
    e->started = 1;
    return 0;
}

int batcher_ready(struct batcher *e) { return atomic_load(&e->ready); }
int batcher_live(struct batcher *e) { return atomic_load(&e->live); }

int batcher_submit(struct batcher *e, int model, struct batcher_item **items, int n, int withdraw_incoming)
{
    struct batcher_slot *s = &e->slots[model];
    pthread_mutex_lock(&e->lock);
    if (withdraw_incoming)
        s->incoming--;
    int rc = BATCHER_OK;
    if (!atomic_load(&e->live))
        rc = BATCHER_EDEVICE;
    else if (e->stopping || !e->started)
        rc = BATCHER_ESHUTDOWN;
    else if (e->queued_total + n > e->opt.max_queue)
        rc = BATCHER_EQUEUEFULL;
    if (rc == BATCHER_OK) {
        double now = now_mono();
        for (int i = 0; i < n; i++) {
            items[i]->t_enqueued = now;
            items[i]->status = BATCHER_OK;
            s->ring[(s->head + s->count) % e->opt.max_queue] = items[i];
            s->count++;
        }
        e->queued_total += n;
    }
    if (rc == BATCHER_OK || withdraw_incoming)
        pthread_cond_signal(&e->wake);
    pthread_mutex_unlock(&e->lock);
    return rc;
}

void batcher_incoming(struct batcher *e, int model, int delta)
{
    if (model < 0 || model >= e->n_models)
        return;
    pthread_mutex_lock(&e->lock);
    e->slots[model].incoming += delta;
    if (delta < 0)
        pthread_cond_signal(&e->wake); /* a waiting partial batch may go now */
    pthread_mutex_unlock(&e->lock);
}

int batcher_queue_depth(struct batcher *e, int model)
{
    pthread_mutex_lock(&e->lock);
    int n = model < 0 ? e->queued_total : e->slots[model].count;
    pthread_mutex_unlock(&e->lock);
    return n;
}

int batcher_queue_free(struct batcher *e)
{
    pthread_mutex_lock(&e->lock);
    int n = e->opt.max_queue - e->queued_total;
    pthread_mutex_unlock(&e->lock);
    return n;
}

size_t batcher_device_bytes(struct batcher *e, int model) { return atomic_load(&e->slots[model].device_bytes); }

void batcher_stop(struct batcher *e)
{
    pthread_mutex_lock(&e->lock);
    e->stopping = 1;
    pthread_cond_broadcast(&e->wake);
    pthread_mutex_unlock(&e->lock);
    if (e->started)
        pthread_join(e->thread, NULL);
    e->started = 0;
    atomic_store(&e->ready, 0);
    /* The thread is gone: fail what is still queued, from this thread. */
    for (int m = 0; m < e->n_models; m++) {
        struct batcher_slot *s = &e->slots[m];
        while (s->count > 0) {
            struct batcher_item *it = s->ring[s->head];
            s->head = (s->head + 1) % e->opt.max_queue;
            s->count--;
            e->queued_total--;
            it->status = BATCHER_ESHUTDOWN;
            it->done(it);
        }
    }
}

void batcher_destroy(struct batcher *e)
{
    if (!e)
        return;
    if (e->started)
        batcher_stop(e);
    for (int i = 0; i < e->n_models; i++) {
        struct batcher_slot *s = &e->slots[i];
        vit_destroy(s->vit);
        if (s->have_backend)
            backend_destroy(&s->be);
        free(s->ring);
        free(s->info.config_json);
    }
    pthread_mutex_destroy(&e->lock);
    pthread_cond_destroy(&e->wake);
    free(e->batch_pixels);
    free(e->logits);
    free(e);
}
