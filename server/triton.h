/* What Triton's own tools (tritonclient, perf_analyzer) ask of a server beyond the core Open
 * Inference Protocol: model views, versions, the model-configuration, statistics and
 * repository-index extensions. The facts live here once; api_triton.c renders them as JSON for
 * REST and server/grpc renders them as protobuf messages.
 *
 * Views: a generic v2 client sends every input the metadata lists, but infer takes one input form
 * per request. So each loaded model is offered under two names: "{m}" takes the FITS file as BYTES
 * input "image" (and, for existing clients, still accepts "pixels"), "{m}_pixels" takes only the
 * preprocessed FP32/BF16 input "pixels". Aliases (--alias, model_names.h) get the same two views.
 * Answers name the view by its canonical name (the model's own name, plus the suffix for the pixels
 * view), as /v1 and the v2 infer answer always did for an alias. */
#ifndef STOPCAL_SERVER_TRITON_H
#define STOPCAL_SERVER_TRITON_H

#include "batcher.h"

#include <stddef.h>

enum triton_form { TRITON_FORM_IMAGE = 0, TRITON_FORM_PIXELS = 1, TRITON_FORMS };

#define TRITON_PIXELS_SUFFIX "_pixels"

/* Triton's tools take model versions for integers (perf_analyzer parses them with stoll), so every
 * view serves the one version "1"; the model file's own version string ("0.1.0") is reported in
 * the metadata's and the configuration's parameters. */
#define TRITON_MODEL_VERSION "1"

/* The model a request names, by model name, alias, or either followed by TRITON_PIXELS_SUFFIX
 * (*form says which view). A loaded name always wins over a view spelt the same. −1: none. */
int triton_find_model(const struct batcher *e, const char *name, int *form);

/* Every name a v2 client may use, in order: for each model, its name then its aliases, each
 * followed by its pixels view. fn is called with the model, the form and the name. */
void triton_each_view(const struct batcher *e, void (*fn)(void *ctx, int model, int form, const char *name),
                      void *ctx);
/* The same for the canonical names only (one call per view: the statistics of every model). */
void triton_each_canonical_view(const struct batcher *e,
                                void (*fn)(void *ctx, int model, int form, const char *name), void *ctx);

/* The canonical name of a view: the model's name, with TRITON_PIXELS_SUFFIX for the pixels view;
 * where another loaded model is named that, the first alias that still reaches the pixels view,
 * with the suffix (so m's pixels view is "x_pixels" beside a model called "m_pixels"). */
void triton_view_name(const struct batcher *e, int model, int form, char *out, size_t len);

/* The version a request names (NULL or "": none, the one version): 0 when it is served, else −1
 * with "model 'NAME' has no version 'V' (it serves version 1)" in err. */
int triton_check_version(const char *name, const char *version, char *err, size_t errlen);

/* One tensor as the model configuration describes it: dims without the batch dimension. */
struct triton_tensor {
    const char *name;
    const char *datatype; /* v2 name: "BYTES", "FP32" */
    const char *config_type; /* model_config.proto's DataType: "TYPE_STRING", "TYPE_FP32" */
    int ndims;
    long long dims[3];
    int reshape_to_scalar; /* dims [1], a scalar per batch item: reshape {shape: []} (a request may say
                              [batch] or [batch, 1]) */
};

struct triton_view {
    int model, form;
    const struct batcher_model_info *info;
    int n_inputs, n_outputs;
    struct triton_tensor inputs[1], outputs[2];
};

void triton_describe(const struct batcher *e, int model, int form, struct triton_view *v);

/* ---- statistics (Triton's statistics extension) --------------------------------------------- */

struct triton_duration {
    unsigned long long count, ns;
};

struct triton_batch_stat {
    int batch_size;
    unsigned long long count, ns;
};

#define TRITON_MAX_BATCH 256

struct triton_stats {
    unsigned long long last_inference_ms; /* wall clock, ms since the epoch; 0: never */
    unsigned long long inference_count;   /* images answered */
    unsigned long long execution_count;   /* forward passes of the model (both views together) */
    struct triton_duration success, fail, queue, compute_input, compute_infer, compute_output;
    int n_batches;
    struct triton_batch_stat batches[TRITON_MAX_BATCH];
};

/* One forward pass of k images (the engine, after each pass). */
void triton_stats_batch(int model, int k, double seconds);
/* A request answered with scores: its images, and seconds from arrival to the answer, waiting for
 * the engine, preprocessing, in the forward pass and building the answer. */
void triton_stats_success(int model, int form, int images, double total, double queue, double prep, double infer,
                          double output);
/* An inference request answered with an error. */
void triton_stats_failure(int model, int form, double total);
void triton_stats_get(int model, int form, struct triton_stats *out);

#endif
