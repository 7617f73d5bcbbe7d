/* Model views, version checks, the model-configuration facts and the statistics counters shared by
 * the REST and gRPC renderings (triton.h). */
#include "triton.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>

int triton_find_model(const struct batcher *e, const char *name, int *form)
{
    *form = TRITON_FORM_IMAGE;
    int m = batcher_find_model(e, name);
    if (m >= 0)
        return m;
    size_t n = strlen(name), k = strlen(TRITON_PIXELS_SUFFIX);
    char base[256];
    if (n <= k || n - k >= sizeof base || strcmp(name + n - k, TRITON_PIXELS_SUFFIX) != 0)
        return -1;
    memcpy(base, name, n - k);
    base[n - k] = 0;
    m = batcher_find_model(e, base);
    if (m >= 0)
        *form = TRITON_FORM_PIXELS;
    return m;
}

/* Whether `name` + suffix reaches this model's pixels view (a loaded name spelt the same hides it);
 * the spelling in pix either way. */
static int pixels_view_reaches(const struct batcher *e, int model, const char *name, char *pix, size_t len)
{
    snprintf(pix, len, "%s%s", name, TRITON_PIXELS_SUFFIX);
    int form;
    return triton_find_model(e, pix, &form) == model && form == TRITON_FORM_PIXELS;
}

static void both_views(const struct batcher *e, int model, const char *name,
                       void (*fn)(void *ctx, int model, int form, const char *name), void *ctx)
{
    char pix[256];
    fn(ctx, model, TRITON_FORM_IMAGE, name);
    if (pixels_view_reaches(e, model, name, pix, sizeof pix))
        fn(ctx, model, TRITON_FORM_PIXELS, pix);
}

void triton_each_view(const struct batcher *e, void (*fn)(void *ctx, int model, int form, const char *name),
                      void *ctx)
{
    for (int i = 0; i < batcher_model_count(e); i++) {
        const struct batcher_model_info *m = batcher_model(e, i);
        both_views(e, i, m->name, fn, ctx);
        for (int k = 0; k < m->n_aliases; k++)
            both_views(e, i, m->aliases[k], fn, ctx);
    }
}

/* The pixels view's canonical name: the model's name + suffix, or where another loaded name is
 * spelt so, the first alias + suffix that still reaches the view, so that an answer never carries
 * a name that means another model. −1 when no spelling reaches it. */
static int pixels_view_name(const struct batcher *e, int model, char *out, size_t len)
{
    const struct batcher_model_info *m = batcher_model(e, model);
    if (pixels_view_reaches(e, model, m->name, out, len))
        return 0;
    for (int k = 0; k < m->n_aliases; k++)
        if (pixels_view_reaches(e, model, m->aliases[k], out, len))
            return 0;
    return -1;
}

void triton_each_canonical_view(const struct batcher *e,
                                void (*fn)(void *ctx, int model, int form, const char *name), void *ctx)
{
    char pix[256];
    for (int i = 0; i < batcher_model_count(e); i++) {
        fn(ctx, i, TRITON_FORM_IMAGE, batcher_model(e, i)->name);
        if (pixels_view_name(e, i, pix, sizeof pix) == 0)
            fn(ctx, i, TRITON_FORM_PIXELS, pix);
    }
}

void triton_view_name(const struct batcher *e, int model, int form, char *out, size_t len)
{
    if (form != TRITON_FORM_PIXELS)
        snprintf(out, len, "%s", batcher_model(e, model)->name);
    else if (pixels_view_name(e, model, out, len) != 0) /* unreachable by name: never asked for */
        snprintf(out, len, "%s%s", batcher_model(e, model)->name, TRITON_PIXELS_SUFFIX);
}

int triton_check_version(const char *name, const char *version, char *err, size_t errlen)
{
    if (!version || !*version || strcmp(version, TRITON_MODEL_VERSION) == 0)
        return 0;
    snprintf(err, errlen, "model '%s' has no version '%.64s' (it serves version " TRITON_MODEL_VERSION ")", name,
             version);
    return -1;
}

static void tensor(struct triton_tensor *t, const char *name, const char *dtype, const char *ctype, int ndims,
                   long long d0, long long d1, long long d2, int reshape)
{
    t->name = name;
    t->datatype = dtype;
    t->config_type = ctype;
    t->ndims = ndims;
    t->dims[0] = d0;
    t->dims[1] = d1;
    t->dims[2] = d2;
    t->reshape_to_scalar = reshape;
}

void triton_describe(const struct batcher *e, int model, int form, struct triton_view *v)
{
    memset(v, 0, sizeof *v);
    v->model = model;
    v->form = form;
    v->info = batcher_model(e, model);
    const long long S = v->info->config.input_size;
    v->n_inputs = 1;
    if (form == TRITON_FORM_PIXELS) /* [batch, 3, S, S]; one channel [batch, 1, S, S] is accepted too */
        tensor(&v->inputs[0], "pixels", "FP32", "TYPE_FP32", 3, 3, S, S, 0);
    else /* one FITS file per element: [batch] */
        tensor(&v->inputs[0], "image", "BYTES", "TYPE_STRING", 1, 1, 0, 0, 1);
    v->n_outputs = 2;
    tensor(&v->outputs[0], "continue_score", "FP32", "TYPE_FP32", 1, 1, 0, 0, 0);
    tensor(&v->outputs[1], "logit", "FP32", "TYPE_FP32", 1, 1, 0, 0, 0);
}

/* ---- statistics -------------------------------------------------------------------------------- */

#define STATS_MAX_MODELS 64

static struct {
    pthread_mutex_t lock;
    struct triton_stats view[STATS_MAX_MODELS][TRITON_FORMS];
    unsigned long long executions[STATS_MAX_MODELS];
    struct triton_duration batch[STATS_MAX_MODELS][TRITON_MAX_BATCH + 1];
} T = {.lock = PTHREAD_MUTEX_INITIALIZER};

static unsigned long long ns(double seconds) { return seconds > 0 ? (unsigned long long)(seconds * 1e9) : 0; }

static void add(struct triton_duration *d, double seconds)
{
    d->count++;
    d->ns += ns(seconds);
}

static int in_range(int model, int form) { return model >= 0 && model < STATS_MAX_MODELS && form >= 0 && form < TRITON_FORMS; }

void triton_stats_batch(int model, int k, double seconds)
{
    if (!in_range(model, 0) || k < 1 || k > TRITON_MAX_BATCH)
        return;
    pthread_mutex_lock(&T.lock);
    T.executions[model]++;
    add(&T.batch[model][k], seconds);
    pthread_mutex_unlock(&T.lock);
}

void triton_stats_success(int model, int form, int images, double total, double queue, double prep, double infer,
                          double output)
{
    if (!in_range(model, form))
        return;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    pthread_mutex_lock(&T.lock);
    struct triton_stats *s = &T.view[model][form];
    s->last_inference_ms = (unsigned long long)tv.tv_sec * 1000 + (unsigned long long)tv.tv_usec / 1000;
    s->inference_count += (unsigned long long)images;
    add(&s->success, total);
    add(&s->queue, queue);
    add(&s->compute_input, prep);
    add(&s->compute_infer, infer);
    add(&s->compute_output, output);
    pthread_mutex_unlock(&T.lock);
}

void triton_stats_failure(int model, int form, double total)
{
    if (!in_range(model, form))
        return;
    pthread_mutex_lock(&T.lock);
    add(&T.view[model][form].fail, total);
    pthread_mutex_unlock(&T.lock);
}

void triton_stats_get(int model, int form, struct triton_stats *out)
{
    memset(out, 0, sizeof *out);
    if (!in_range(model, form))
        return;
    pthread_mutex_lock(&T.lock);
    *out = T.view[model][form];
    out->execution_count = T.executions[model];
    for (int k = 1; k <= TRITON_MAX_BATCH; k++)
        if (T.batch[model][k].count) {
            struct triton_batch_stat *b = &out->batches[out->n_batches++];
            b->batch_size = k;
            b->count = T.batch[model][k].count;
            b->ns = T.batch[model][k].ns;
        }
    pthread_mutex_unlock(&T.lock);
}
