/* libstopcal: the C client of stopcald (ARCHITECTURE.md §6).
 *
 * A client holds one or more server base URLs ("http://host:8080"), one libcurl easy handle (so the
 * TCP connection is reused from request to request) and the options below. Every function taking a
 * client may be called from several threads at once: requests on one client are serialised behind
 * its mutex. For parallel requests, create one client per thread.
 *
 * Resilience: each request tries the servers in the order given. A connection failure (refused,
 * unresolvable, reset, no answer, timeout) or an HTTP 429/503 moves on to the next server; when every
 * server has failed, the client sleeps (exponential backoff from backoff_ms, doubled per round, with
 * ±50 % jitter, and at least the server's Retry-After when it sent one, capped at 30 s) and starts
 * over, up to `retries` more rounds. Any other HTTP answer is final.
 *
 * Authentication: `Authorization: Bearer <token>` with the token from options.api_key, else the first
 * line of options.api_key_file, else the environment variable STOPCAL_API_KEY; none when all are unset.
 *
 * Local preprocessing (options.local_preprocess): the FITS file is decoded and preprocessed on the
 * client with the same library the server uses (models/image), with the model's input size and
 * profile fetched once from GET /v1/models, and the tensor travels to POST /v2/models/{m}/infer as
 * FP32 through the binary data extension. The scores are the server-side preprocessing's.
 *
 * Every function returns STOPCAL_OK (0) or a negative enum stopcal_status, with a one-line message in
 * err (errlen bytes, always NUL-terminated; err may be NULL). */
#ifndef STOPCAL_CLIENT_H
#define STOPCAL_CLIENT_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

enum stopcal_status {
    STOPCAL_OK = 0,
    STOPCAL_EINVAL = -1,   /* bad argument or option (no URL, unreadable file, bad threshold) */
    STOPCAL_ENOMEM = -2,   /* out of memory */
    STOPCAL_ECONNECT = -3, /* no server could be reached (after every retry) */
    STOPCAL_ETIMEOUT = -4, /* the last attempt ran past the timeout */
    STOPCAL_EAUTH = -5,    /* HTTP 401/403: missing or wrong bearer token */
    STOPCAL_EBUSY = -6,    /* HTTP 429/503 on every attempt */
    STOPCAL_EHTTP = -7,    /* any other HTTP error answer (4xx/5xx); the server's "error" is in err */
    STOPCAL_EPROTO = -8,   /* the answer could not be understood */
    STOPCAL_EIMAGE = -9,   /* local preprocessing refused the FITS file */
};

struct stopcal_options {
    const char *const *urls;  /* server base URLs, tried in this order; each may itself be a
                               * comma-separated list. NULL/0: $STOPCAL_URL, else http://127.0.0.1:8080 */
    int n_urls;
    const char *api_key;      /* bearer token, or NULL */
    const char *api_key_file; /* file whose first line is the token, or NULL */
    const char *model;        /* model name, or NULL for the server's default */
    double threshold;         /* decision threshold; < 0 (the default) = the model's own */
    long connect_timeout_ms;  /* per attempt, default 5000 */
    long timeout_ms;          /* whole request per attempt, default 120000 */
    int retries;              /* extra rounds over all servers, default 3 */
    long backoff_ms;          /* first backoff, default 200 */
    int local_preprocess;     /* 1: preprocess FITS on the client and send pixels over v2 */
};

/* The defaults listed above. */
void stopcal_options_default(struct stopcal_options *o);

/* One image's answer: the result object of ARCHITECTURE.md §6. */
struct stopcal_image_result {
    char name[256];
    double continue_score;   /* sigmoid(logit): the reference's "continue" score */
    double stop_probability; /* 1 − continue_score */
    int stop;                /* decision: continue_score < threshold */
    double logit;
    double threshold;
    int has_rms;             /* 0 when the server did not report rms */
    double rms;
    long nonfinite_pixels;
    char precision[8];       /* what the server computed in ("fp32", "bf16"); "" when it did not say */
};

struct stopcal_response {
    char model_name[128];
    char model_sha256[65];
    char request_id[128];
    char server_url[512];    /* the server that answered */
    int n_results;
    struct stopcal_image_result *results; /* owned; release with stopcal_response_free */
};

typedef struct stopcal_client stopcal_client;

/* New client (curl_global_init is done once, thread-safely). */
int stopcal_client_new(stopcal_client **out, const struct stopcal_options *opt, char *err, size_t errlen);
void stopcal_client_free(stopcal_client *c);

/* Score one FITS file (gzip allowed); its result's name is the file's base name. */
int stopcal_predict_file(stopcal_client *c, const char *path, struct stopcal_response *resp, char *err,
                         size_t errlen);
/* Score n files; results in the order given (sent in requests of at most 8 files). */
int stopcal_predict_files(stopcal_client *c, const char *const *paths, int n, struct stopcal_response *resp,
                          char *err, size_t errlen);
/* Score FITS bytes held in memory; name labels the result. */
int stopcal_predict_buffer(stopcal_client *c, const char *name, const void *data, size_t len,
                           struct stopcal_response *resp, char *err, size_t errlen);
void stopcal_response_free(struct stopcal_response *resp);

/* GET /v2/health/ready on server i (0 ≤ i < stopcal_client_n_urls), no retries: 1 ready, 0 not
 * ready (an HTTP answer other than 200), or a negative status when unreachable. */
int stopcal_health(stopcal_client *c, int i, char *err, size_t errlen);
int stopcal_client_n_urls(const stopcal_client *c);
const char *stopcal_client_url(const stopcal_client *c, int i);

/* GET /v1/models (with failover and retries): the JSON text, malloc'd, in *json (caller frees). */
int stopcal_models(stopcal_client *c, char **json, char *err, size_t errlen);

/* Where the model looked (POST /v1/explain) for one FITS file: format "json" (the result object
 * with its "explain" member), "fits" (the attention map on the image's own pixel grid, with its
 * WCS) or "png" (the image with the map overlaid); all_heads: one map per head (json, fits);
 * rollout: the attention rollout over all blocks instead of the last block's CLS attention. The
 * answer's bytes in *body (*len bytes, malloc'd, NUL-terminated; the caller frees). */
int stopcal_explain_file(stopcal_client *c, const char *path, const char *format, int all_heads, int rollout,
                         char **body, size_t *len, char *err, size_t errlen);

/* A short English name of a status. */
const char *stopcal_strerror(int status);

#ifdef __cplusplus
}
#endif

#endif
