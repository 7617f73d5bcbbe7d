/* libstopcal: see stopcal.h. One CURL easy handle per client, behind a mutex; curl_easy_reset
 * between requests keeps the connection cache, so connections are reused. */
#include "stopcal.h"
#include "error_message.h"

#include "image.h"
#include "model.h"
#include "preprocess.h"
#include "result_json.h"

#include <curl/curl.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_URLS 16
#define FILES_PER_REQUEST 8
#define MAX_BACKOFF_MS 30000L

struct stopcal_client {
    pthread_mutex_t mu;
    CURL *curl;
    char *urls[MAX_URLS];
    int n_urls;
    char *auth_header; /* "Authorization: Bearer …" or NULL */
    char *model;
    double threshold;
    long connect_timeout_ms, timeout_ms, backoff_ms;
    int retries;
    int local_preprocess;
    unsigned rng;
    /* local preprocessing: the model's config, fetched once */
    int have_config;
    struct model_config config;
    char config_model[128];
};

struct buf {
    char *data;
    size_t len, cap;
};

const char *stopcal_strerror(int status)
{
    switch (status) {
    case STOPCAL_OK: return "ok";
    case STOPCAL_EINVAL: return "invalid argument";
    case STOPCAL_ENOMEM: return "out of memory";
    case STOPCAL_ECONNECT: return "server unreachable";
    case STOPCAL_ETIMEOUT: return "timed out";
    case STOPCAL_EAUTH: return "authentication failed";
    case STOPCAL_EBUSY: return "server busy";
    case STOPCAL_EHTTP: return "HTTP error";
    case STOPCAL_EPROTO: return "bad answer";
    case STOPCAL_EIMAGE: return "image refused";
    default: return "unknown error";
    }
}

void stopcal_options_default(struct stopcal_options *o)
{
    memset(o, 0, sizeof *o);
    o->threshold = -1;
    o->connect_timeout_ms = 5000;
    o->timeout_ms = 120000;
    o->retries = 3;
    o->backoff_ms = 200;
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;
static void curl_init(void) { curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT); }

static int add_urls(stopcal_client *c, const char *list, char *err, size_t errlen)
{
    const char *p = list;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        while (n && (*p == ' ' || *p == '\t'))
            p++, n--;
        while (n && (p[n - 1] == ' ' || p[n - 1] == '\t' || p[n - 1] == '/'))
            n--;
        if (n) {
            if (c->n_urls == MAX_URLS) {
                error_set(err, errlen, 0, "too many server URLs (at most %d)", MAX_URLS);
                return STOPCAL_EINVAL;
            }
            int scheme = n >= 7 && (!strncmp(p, "http://", 7) || (n >= 8 && !strncmp(p, "https://", 8)));
            char *u = malloc(n + 8);
            if (!u)
                return STOPCAL_ENOMEM;
            snprintf(u, n + 8, "%s%.*s", scheme ? "" : "http://", (int)n, p);
            c->urls[c->n_urls++] = u;
        }
        if (!e)
            break;
        p = e + 1;
    }
    return STOPCAL_OK;
}

static char *read_token_file(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        error_set(err, errlen, 0, "cannot read the API key file %s", path);
        return NULL;
    }
    char line[4096];
    char *r = fgets(line, sizeof line, f);
    fclose(f);
    if (!r) {
        error_set(err, errlen, 0, "the API key file %s is empty", path);
        return NULL;
    }
    line[strcspn(line, "\r\n")] = 0;
    return strdup(line);
}

int stopcal_client_new(stopcal_client **out, const struct stopcal_options *opt, char *err, size_t errlen)
{
    *out = NULL;
    struct stopcal_options def;
    if (!opt) {
        stopcal_options_default(&def);
        opt = &def;
    }
    pthread_once(&curl_once, curl_init);
    if (curl_init_rc != CURLE_OK) {
        error_set(err, errlen, 0, "curl_global_init failed");
        return STOPCAL_ENOMEM;
    }
    stopcal_client *c = calloc(1, sizeof *c);
    if (!c)
        return STOPCAL_ENOMEM;
    pthread_mutex_init(&c->mu, NULL);
    int rc = STOPCAL_OK;
    for (int i = 0; i < opt->n_urls && rc == STOPCAL_OK; i++)
        if (opt->urls[i])
            rc = add_urls(c, opt->urls[i], err, errlen);
    if (rc == STOPCAL_OK && c->n_urls == 0) {
        const char *env = getenv("STOPCAL_URL");
        rc = add_urls(c, env && *env ? env : "http://127.0.0.1:8080", err, errlen);
    }
    if (rc == STOPCAL_OK && c->n_urls == 0) {
        error_set(err, errlen, 0, "no server URL given");
        rc = STOPCAL_EINVAL;
    }
    char *token = NULL;
    if (rc == STOPCAL_OK) {
        if (opt->api_key && *opt->api_key)
            token = strdup(opt->api_key);
        else if (opt->api_key_file) {
            token = read_token_file(opt->api_key_file, err, errlen);
            if (!token)
                rc = STOPCAL_EINVAL;
        } else if (getenv("STOPCAL_API_KEY") && *getenv("STOPCAL_API_KEY"))
            token = strdup(getenv("STOPCAL_API_KEY"));
    }
    if (rc == STOPCAL_OK && token) {
        size_t n = strlen(token) + 32;
        c->auth_header = malloc(n);
        if (!c->auth_header)
            rc = STOPCAL_ENOMEM;
        else
            snprintf(c->auth_header, n, "Authorization: Bearer %s", token);
    }
    free(token);
    if (rc == STOPCAL_OK && opt->model && *opt->model && !(c->model = strdup(opt->model)))
        rc = STOPCAL_ENOMEM;
    if (rc == STOPCAL_OK && !(c->curl = curl_easy_init())) {
        error_set(err, errlen, 0, "curl_easy_init failed");
        rc = STOPCAL_ENOMEM;
    }
    if (rc != STOPCAL_OK) {
        stopcal_client_free(c);
        return rc;
    }
    c->threshold = opt->threshold;
    c->connect_timeout_ms = opt->connect_timeout_ms > 0 ? opt->connect_timeout_ms : 5000;
    c->timeout_ms = opt->timeout_ms > 0 ? opt->timeout_ms : 120000;
    c->retries = opt->retries >= 0 ? opt->retries : 0;
    c->backoff_ms = opt->backoff_ms > 0 ? opt->backoff_ms : 200;
    c->local_preprocess = opt->local_preprocess;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    c->rng = (unsigned)(ts.tv_nsec ^ (ts.tv_sec << 16) ^ (uintptr_t)c);
    *out = c;
    return STOPCAL_OK;
}

void stopcal_client_free(stopcal_client *c)
{
    if (!c)
        return;
    if (c->curl)
        curl_easy_cleanup(c->curl);
    for (int i = 0; i < c->n_urls; i++)
        free(c->urls[i]);
    free(c->auth_header);
    free(c->model);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

int stopcal_client_n_urls(const stopcal_client *c) { return c->n_urls; }
const char *stopcal_client_url(const stopcal_client *c, int i) { return i >= 0 && i < c->n_urls ? c->urls[i] : NULL; }

/* ---- one HTTP exchange ----------------------------------------------------------------------- */

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    struct buf *b = ud;
    size_t len = size * n;
    if (b->len + len + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + len + 1)
            cap *= 2;
        char *d = realloc(b->data, cap);
        if (!d)
            return 0;
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, len);
    b->len += len;
    b->data[b->len] = 0;
    return len;
}

struct hdrs {
    long retry_after_s;
};

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    struct hdrs *h = ud;
    size_t len = size * n;
    if (len > 12 && !strncasecmp(p, "Retry-After:", 12)) {
        char tmp[32];
        size_t k = len - 12 < sizeof tmp - 1 ? len - 12 : sizeof tmp - 1;
        memcpy(tmp, p + 12, k);
        tmp[k] = 0;
        long v = strtol(tmp, NULL, 10);
        if (v > 0)
            h->retry_after_s = v;
    }
    return len;
}

/* What a request sends. */
struct request {
    const char *path;          /* "/v1/predict?…" */
    const char *content_type;  /* NULL for GET */
    const void *body;
    size_t body_len;
    long header_len;           /* Inference-Header-Content-Length, or -1 */
    const char *const *files;  /* multipart files (body NULL), with their base names */
    const char *const *names;
    int n_files;
    int retry;                 /* 0: one attempt on one server (health) */
    int server;                /* with retry == 0: which server */
};

struct reply {
    long status;
    struct buf body;
    int server;
};

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

static const char *json_error_text(const struct buf *b, char *tmp, size_t n)
{
    json_t *doc = b->data ? json_loads(b->data, 0, NULL) : NULL;
    const char *e = doc ? json_string_value(json_object_get(doc, "error")) : NULL;
    if (e)
        snprintf(tmp, n, "%s", e);
    else if (b->data && b->len)
        snprintf(tmp, n, "%.200s", b->data);
    else
        snprintf(tmp, n, "(no body)");
    json_decref(doc);
    return tmp;
}

/* Perform one attempt on server s; returns CURLcode, fills status, body, retry-after. Caller holds mu. */
static CURLcode attempt(stopcal_client *c, const struct request *rq, int s, struct reply *rp, struct hdrs *h,
                        char *curlerr)
{
    CURL *e = c->curl;
    curl_easy_reset(e);
    rp->body.len = 0;
    if (rp->body.data)
        rp->body.data[0] = 0;
    h->retry_after_s = 0;
    size_t ulen = strlen(c->urls[s]) + strlen(rq->path) + 1;
    char *url = malloc(ulen);
    if (!url)
        return CURLE_OUT_OF_MEMORY;
    snprintf(url, ulen, "%s%s", c->urls[s], rq->path);
    struct curl_slist *hl = NULL;
    char tmp[128];
    curl_mime *mime = NULL;
    CURLcode rc = CURLE_OK;
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, c->connect_timeout_ms);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, c->timeout_ms);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &rp->body);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, h);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, curlerr);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "libstopcal/" STOPCAL_VERSION);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    hl = curl_slist_append(hl, "Expect:");
    if (c->auth_header)
        hl = curl_slist_append(hl, c->auth_header);
    if (rq->files) {
        mime = curl_mime_init(e);
        for (int i = 0; i < rq->n_files && rc == CURLE_OK; i++) {
            curl_mimepart *part = curl_mime_addpart(mime);
            curl_mime_name(part, "file");
            rc = curl_mime_filedata(part, rq->files[i]);
            curl_mime_filename(part, rq->names[i]);
            curl_mime_type(part, "application/fits");
        }
        curl_easy_setopt(e, CURLOPT_MIMEPOST, mime);
    } else if (rq->content_type) {
        snprintf(tmp, sizeof tmp, "Content-Type: %s", rq->content_type);
        hl = curl_slist_append(hl, tmp);
        if (rq->header_len >= 0) {
            snprintf(tmp, sizeof tmp, "Inference-Header-Content-Length: %ld", rq->header_len);
            hl = curl_slist_append(hl, tmp);
        }
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, rq->body);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)rq->body_len);
    }
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, hl);
    if (rc == CURLE_OK)
        rc = curl_easy_perform(e);
    rp->status = 0;
    if (rc == CURLE_OK)
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &rp->status);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, NULL);
    curl_easy_setopt(e, CURLOPT_MIMEPOST, NULL);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, NULL);
    curl_slist_free_all(hl);
    curl_mime_free(mime);
    free(url);
    return rc;
}

/* The request with failover and retries. On STOPCAL_OK rp->status is 2xx. Caller holds mu. */
static int exchange(stopcal_client *c, const struct request *rq, struct reply *rp, char *err, size_t errlen)
{
    int rounds = rq->retry ? c->retries + 1 : 1;
    int last = STOPCAL_ECONNECT;
    char last_msg[512] = "";
    for (int round = 0; round < rounds; round++) {
        long retry_after_ms = 0;
        int first = rq->retry ? 0 : rq->server, count = rq->retry ? c->n_urls : 1;
        for (int k = 0; k < count; k++) {
            int s = first + k;
            struct hdrs h;
            char curlerr[CURL_ERROR_SIZE] = "";
            CURLcode cc = attempt(c, rq, s, rp, &h, curlerr);
            rp->server = s;
            if (cc == CURLE_OUT_OF_MEMORY) {
                error_set(err, errlen, 0, "out of memory");
                return STOPCAL_ENOMEM;
            }
            if (cc == CURLE_READ_ERROR && rq->files) {
                error_set(err, errlen, 0, "cannot read a file to send: %s", curlerr[0] ? curlerr : curl_easy_strerror(cc));
                return STOPCAL_EINVAL;
            }
            if (cc != CURLE_OK) {
                last = cc == CURLE_OPERATION_TIMEDOUT ? STOPCAL_ETIMEOUT : STOPCAL_ECONNECT;
                snprintf(last_msg, sizeof last_msg, "%s: %s", c->urls[s], curlerr[0] ? curlerr : curl_easy_strerror(cc));
                continue;
            }
            if (rp->status == 429 || rp->status == 503) {
                char tmp[256];
                last = STOPCAL_EBUSY;
                snprintf(last_msg, sizeof last_msg, "%s answered HTTP %ld: %s", c->urls[s], rp->status,
                         json_error_text(&rp->body, tmp, sizeof tmp));
                if (h.retry_after_s * 1000 > retry_after_ms)
                    retry_after_ms = h.retry_after_s * 1000;
                continue;
            }
            if (rp->status >= 200 && rp->status < 300)
                return STOPCAL_OK;
            char tmp[256];
            json_error_text(&rp->body, tmp, sizeof tmp);
            if (rp->status == 401 || rp->status == 403) {
                error_set(err, errlen, 0, "%s refused the request (HTTP %ld, authentication): %s; set STOPCAL_API_KEY or "
                       "--api-key-file to the server's token", c->urls[s], rp->status, tmp);
                return STOPCAL_EAUTH;
            }
            error_set(err, errlen, 0, "%s answered HTTP %ld: %s", c->urls[s], rp->status, tmp);
            return STOPCAL_EHTTP;
        }
        if (round + 1 < rounds) {
            long shift = round < 16 ? round : 16;
            long base = c->backoff_ms << shift;
            if (base > MAX_BACKOFF_MS)
                base = MAX_BACKOFF_MS;
            c->rng = c->rng * 1103515245u + 12345u;
            long wait = base / 2 + (long)((c->rng >> 8) % (unsigned long)(base + 1)); /* base × [0.5, 1.5] */
            if (wait < retry_after_ms)
                wait = retry_after_ms;
            if (wait > MAX_BACKOFF_MS)
                wait = MAX_BACKOFF_MS;
            sleep_ms(wait);
        }
    }
    if (rounds > 1)
        error_set(err, errlen, 0, "%s (after %d attempts)", last_msg, rounds);
    else
        error_set(err, errlen, 0, "%s", last_msg);
    return last;
}

/* ---- answers -------------------------------------------------------------------------------- */

static void copy_str(char *dst, size_t n, json_t *v)
{
    const char *s = json_string_value(v);
    snprintf(dst, n, "%s", s ? s : "");
}

static double num(json_t *v, double dflt) { return json_is_number(v) ? json_number_value(v) : dflt; }

/* Append the results of a /v1/predict answer to resp. */
static int parse_v1(const struct buf *b, struct stopcal_response *resp, char *err, size_t errlen)
{
    json_error_t je;
    json_t *doc = json_loads(b->data ? b->data : "", 0, &je);
    json_t *results = doc ? json_object_get(doc, "results") : NULL;
    if (!json_is_array(results)) {
        error_set(err, errlen, 0, "the server's answer is not a predict result: %s", doc ? "no \"results\"" : je.text);
        json_decref(doc);
        return STOPCAL_EPROTO;
    }
    json_t *model = json_object_get(doc, "model");
    copy_str(resp->model_name, sizeof resp->model_name, json_object_get(model, "name"));
    copy_str(resp->model_sha256, sizeof resp->model_sha256, json_object_get(model, "sha256"));
    copy_str(resp->request_id, sizeof resp->request_id, json_object_get(doc, "request_id"));
    size_t n = json_array_size(results);
    struct stopcal_image_result *r = realloc(resp->results, (resp->n_results + n + 1) * sizeof *r);
    if (!r) {
        json_decref(doc);
        return STOPCAL_ENOMEM;
    }
    resp->results = r;
    for (size_t i = 0; i < n; i++) {
        json_t *o = json_array_get(results, i);
        struct stopcal_image_result *x = &r[resp->n_results++];
        memset(x, 0, sizeof *x);
        copy_str(x->name, sizeof x->name, json_object_get(o, "name"));
        x->continue_score = num(json_object_get(o, "continue_score"), NAN);
        x->stop_probability = num(json_object_get(o, "stop_probability"), NAN);
        x->logit = num(json_object_get(o, "logit"), NAN);
        x->threshold = num(json_object_get(o, "threshold"), NAN);
        const char *d = json_string_value(json_object_get(o, "decision"));
        x->stop = d && !strcmp(d, "stop");
        x->has_rms = json_is_number(json_object_get(o, "rms"));
        x->rms = num(json_object_get(o, "rms"), 0);
        x->nonfinite_pixels = (long)num(json_object_get(o, "nonfinite_pixels"), 0);
        copy_str(x->precision, sizeof x->precision, json_object_get(o, "precision"));
    }
    json_decref(doc);
    return STOPCAL_OK;
}

static void url_escape_append(char *dst, size_t n, const char *s)
{
    size_t k = strlen(dst);
    for (; *s && k + 4 < n; s++) {
        unsigned char ch = (unsigned char)*s;
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || strchr("-._~", ch))
            dst[k++] = (char)ch;
        else
            k += (size_t)snprintf(dst + k, n - k, "%%%02X", ch);
    }
    dst[k] = 0;
}

static void v1_path(const stopcal_client *c, const char *name, char *path, size_t n)
{
    snprintf(path, n, "/v1/predict?");
    if (name) {
        strncat(path, "name=", n - strlen(path) - 1);
        url_escape_append(path, n, name);
        strncat(path, "&", n - strlen(path) - 1);
    }
    if (c->model) {
        strncat(path, "model=", n - strlen(path) - 1);
        url_escape_append(path, n, c->model);
        strncat(path, "&", n - strlen(path) - 1);
    }
    if (c->threshold >= 0) {
        size_t k = strlen(path);
        snprintf(path + k, n - k, "threshold=%.17g&", c->threshold);
    }
    path[strlen(path) - 1] = 0; /* the trailing '?' or '&' */
}

static const char *base_name(const char *path)
{
    const char *s = strrchr(path, '/');
    return s && s[1] ? s + 1 : path;
}

static void finish(stopcal_client *c, struct stopcal_response *resp, const struct reply *rp)
{
    snprintf(resp->server_url, sizeof resp->server_url, "%s", c->urls[rp->server]);
}

/* Sends a /v1/predict request and appends its results to resp. */
static int v1_predict(stopcal_client *c, const struct request *rq, struct stopcal_response *resp, char *err,
                      size_t errlen)
{
    struct reply rp = {0};
    int rc = exchange(c, rq, &rp, err, errlen);
    if (rc == STOPCAL_OK)
        rc = parse_v1(&rp.body, resp, err, errlen);
    if (rc == STOPCAL_OK)
        finish(c, resp, &rp);
    free(rp.body.data);
    return rc;
}

/* ---- local preprocessing -------------------------------------------------------------------- */

static int fetch_config(stopcal_client *c, char *err, size_t errlen)
{
    if (c->have_config)
        return STOPCAL_OK;
    struct request rq = {.path = "/v1/models", .header_len = -1, .retry = 1};
    struct reply rp = {0};
    int rc = exchange(c, &rq, &rp, err, errlen);
    if (rc == STOPCAL_OK) {
        json_t *doc = json_loads(rp.body.data ? rp.body.data : "", 0, NULL);
        const char *want = c->model ? c->model : json_string_value(json_object_get(doc, "default"));
        json_t *models = json_object_get(doc, "models"), *m;
        size_t i;
        rc = STOPCAL_EPROTO;
        error_set(err, errlen, 0, "GET /v1/models does not list the model %s", want ? want : "(default)");
        json_array_foreach(models, i, m)
        {
            const char *nm = json_string_value(json_object_get(m, "name"));
            int match = want && nm && !strcmp(nm, want);
            size_t k;
            json_t *alias;
            json_array_foreach(json_object_get(m, "aliases"), k, alias) /* the name a pipeline knows */
                match |= want && json_is_string(alias) && !strcmp(json_string_value(alias), want);
            if (!match)
                continue;
            char *cfg = json_dumps(json_object_get(m, "config"), JSON_COMPACT);
            char perr[256];
            if (cfg && model_config_parse(&c->config, cfg, perr, sizeof perr) == 0) {
                snprintf(c->config_model, sizeof c->config_model, "%s", nm);
                c->have_config = 1;
                rc = STOPCAL_OK;
            } else
                error_set(err, errlen, 0, "the model configuration from GET /v1/models is not usable: %s",
                       cfg ? perr : "no \"config\"");
            free(cfg);
            break;
        }
        json_decref(doc);
    }
    free(rp.body.data);
    return rc;
}

/* Preprocess each buffer locally and send all of them in one v2 request. */
static int predict_local(stopcal_client *c, const char *const *names, const unsigned char *const *bytes,
                         const size_t *lens, int n, struct stopcal_response *resp, char *err, size_t errlen)
{
    int rc = fetch_config(c, err, errlen);
    if (rc != STOPCAL_OK)
        return rc;
    size_t S = (size_t)c->config.input_size, plane = S * S;
    float *t3 = malloc(3 * plane * sizeof *t3);
    struct preprocess_stats *st = calloc((size_t)n, sizeof *st);
    int one_channel = 1;
    /* First pass decides the channel count: one channel when every image's three planes are equal. */
    float *all = malloc((size_t)n * 3 * plane * sizeof *all);
    if (!t3 || !st || !all) {
        free(t3), free(st), free(all);
        return STOPCAL_ENOMEM;
    }
    for (int i = 0; i < n; i++) {
        char ierr[256];
        int ir = image_to_tensor(all + (size_t)i * 3 * plane, bytes[i], lens[i], NULL, &c->config, 0, &st[i], ierr,
                                 sizeof ierr);
        if (ir != IMAGE_OK) {
            error_set(err, errlen, 0, "%s: %s", names[i], ierr);
            free(t3), free(st), free(all);
            return ir == IMAGE_ENOMEM ? STOPCAL_ENOMEM : STOPCAL_EIMAGE;
        }
        const float *p = all + (size_t)i * 3 * plane;
        if (memcmp(p, p + plane, plane * sizeof *p) || memcmp(p, p + 2 * plane, plane * sizeof *p))
            one_channel = 0;
    }
    free(t3);
    size_t ch = one_channel ? 1 : 3, nfloat = (size_t)n * ch * plane;
    if (one_channel)
        for (int i = 1; i < n; i++)
            memmove(all + (size_t)i * plane, all + (size_t)i * 3 * plane, plane * sizeof *all);
    json_t *hdr = json_pack("{s:[{s:s, s:s, s:[I,I,I,I], s:{s:I}}]}", "inputs", "name", "pixels", "datatype", "FP32",
                            "shape", (json_int_t)n, (json_int_t)ch, (json_int_t)S, (json_int_t)S, "parameters",
                            "binary_data_size", (json_int_t)(nfloat * 4));
    if (hdr && c->threshold >= 0)
        json_object_set_new(hdr, "parameters", json_pack("{s:f}", "threshold", c->threshold));
    char *htext = hdr ? json_dumps(hdr, JSON_COMPACT) : NULL;
    json_decref(hdr);
    size_t hlen = htext ? strlen(htext) : 0;
    unsigned char *body = htext ? malloc(hlen + nfloat * 4) : NULL;
    if (!body) {
        free(htext), free(st), free(all);
        return STOPCAL_ENOMEM;
    }
    memcpy(body, htext, hlen);
    for (size_t i = 0; i < nfloat; i++) { /* little-endian FP32 */
        uint32_t u;
        memcpy(&u, &all[i], 4);
        unsigned char *d = body + hlen + 4 * i;
        d[0] = (unsigned char)u, d[1] = (unsigned char)(u >> 8), d[2] = (unsigned char)(u >> 16), d[3] = (unsigned char)(u >> 24);
    }
    free(htext);
    free(all);
    char path[512] = "/v2/models/";
    url_escape_append(path, sizeof path, c->config_model);
    strncat(path, "/infer", sizeof path - strlen(path) - 1);
    struct request rq = {.path = path, .content_type = "application/octet-stream", .body = body,
                         .body_len = hlen + nfloat * 4, .header_len = (long)hlen, .retry = 1};
    struct reply rp = {0};
    rc = exchange(c, &rq, &rp, err, errlen);
    free(body);
    if (rc == STOPCAL_OK) {
        json_t *doc = json_loads(rp.body.data ? rp.body.data : "", 0, NULL);
        json_t *outs = json_object_get(doc, "outputs"), *o, *logits = NULL;
        size_t i;
        json_array_foreach(outs, i, o)
        {
            const char *on = json_string_value(json_object_get(o, "name"));
            if (on && !strcmp(on, "logit"))
                logits = json_object_get(o, "data");
        }
        json_t *params = json_object_get(doc, "parameters");
        if (json_array_size(logits) != (size_t)n) {
            error_set(err, errlen, 0, "the v2 answer has no logit for every image");
            rc = STOPCAL_EPROTO;
        } else {
            struct stopcal_image_result *r = realloc(resp->results, (size_t)(resp->n_results + n) * sizeof *r);
            if (!r)
                rc = STOPCAL_ENOMEM;
            else {
                resp->results = r;
                double thr = c->threshold >= 0 ? c->threshold : num(json_object_get(params, "threshold"), c->config.threshold);
                for (int k = 0; k < n; k++) {
                    struct stopcal_image_result *x = &r[resp->n_results++];
                    memset(x, 0, sizeof *x);
                    snprintf(x->name, sizeof x->name, "%s", names[k]);
                    double logit = (double)(float)num(json_array_get(logits, (size_t)k), NAN);
                    x->logit = logit;
                    x->continue_score = result_continue_score(logit); /* as the server scores */
                    x->stop_probability = 1.0 - x->continue_score;
                    x->threshold = thr;
                    x->stop = x->continue_score < thr;
                    x->has_rms = 1;
                    x->rms = st[k].rms;
                    x->nonfinite_pixels = (long)st[k].nonfinite_pixels;
                }
                copy_str(resp->model_name, sizeof resp->model_name, json_object_get(doc, "model_name"));
                copy_str(resp->model_sha256, sizeof resp->model_sha256, json_object_get(params, "model_sha256"));
                copy_str(resp->request_id, sizeof resp->request_id, json_object_get(params, "request_id"));
                finish(c, resp, &rp);
            }
        }
        json_decref(doc);
    }
    free(rp.body.data);
    free(st);
    return rc;
}

/* ---- public entry points -------------------------------------------------------------------- */

static int predict_files_locked(stopcal_client *c, const char *const *paths, int n, struct stopcal_response *resp,
                                char *err, size_t errlen)
{
    for (int at = 0; at < n; at += FILES_PER_REQUEST) {
        int m = n - at < FILES_PER_REQUEST ? n - at : FILES_PER_REQUEST;
        const char *names[FILES_PER_REQUEST];
        for (int i = 0; i < m; i++) {
            if (!paths[at + i]) {
                error_set(err, errlen, 0, "NULL path");
                return STOPCAL_EINVAL;
            }
            names[i] = base_name(paths[at + i]);
        }
        int rc, before = resp->n_results;
        if (c->local_preprocess) {
            unsigned char *bytes[FILES_PER_REQUEST] = {0};
            size_t lens[FILES_PER_REQUEST] = {0};
            rc = STOPCAL_OK;
            for (int i = 0; i < m && rc == STOPCAL_OK; i++) {
                char ierr[256];
                int ir = image_read_file(paths[at + i], IMAGE_DEFAULT_MAX_BYTES, &bytes[i], &lens[i], ierr, sizeof ierr);
                if (ir != IMAGE_OK) {
                    error_set(err, errlen, 0, "%s: %s", paths[at + i], ierr);
                    rc = ir == IMAGE_ENOMEM ? STOPCAL_ENOMEM : STOPCAL_EINVAL;
                }
            }
            if (rc == STOPCAL_OK)
                rc = predict_local(c, names, (const unsigned char *const *)bytes, lens, m, resp, err, errlen);
            for (int i = 0; i < m; i++)
                free(bytes[i]);
        } else {
            FILE *f;
            for (int i = 0; i < m; i++) {
                if (!(f = fopen(paths[at + i], "rb"))) {
                    error_set(err, errlen, 0, "cannot open %s", paths[at + i]);
                    return STOPCAL_EINVAL;
                }
                fclose(f);
            }
            char path[1024];
            v1_path(c, NULL, path, sizeof path);
            struct request rq = {.path = path, .header_len = -1, .files = paths + at, .names = names, .n_files = m,
                                 .retry = 1};
            rc = v1_predict(c, &rq, resp, err, errlen);
        }
        if (rc != STOPCAL_OK)
            return rc;
        /* N files in, N results out: a shorter answer is an error, never a shorter table. */
        if (resp->n_results - before != m) {
            error_set(err, errlen, 0, "the server answered %d results for %d files", resp->n_results - before, m);
            return STOPCAL_EPROTO;
        }
    }
    return STOPCAL_OK;
}

int stopcal_predict_files(stopcal_client *c, const char *const *paths, int n, struct stopcal_response *resp,
                          char *err, size_t errlen)
{
    memset(resp, 0, sizeof *resp);
    if (!c || !paths || n <= 0) {
        error_set(err, errlen, 0, "no files to score");
        return STOPCAL_EINVAL;
    }
    pthread_mutex_lock(&c->mu);
    int rc = predict_files_locked(c, paths, n, resp, err, errlen);
    pthread_mutex_unlock(&c->mu);
    if (rc != STOPCAL_OK)
        stopcal_response_free(resp);
    return rc;
}

int stopcal_predict_file(stopcal_client *c, const char *path, struct stopcal_response *resp, char *err,
                         size_t errlen)
{
    return stopcal_predict_files(c, &path, 1, resp, err, errlen);
}

int stopcal_predict_buffer(stopcal_client *c, const char *name, const void *data, size_t len,
                           struct stopcal_response *resp, char *err, size_t errlen)
{
    memset(resp, 0, sizeof *resp);
    if (!c || !data || !len) {
        error_set(err, errlen, 0, "empty buffer");
        return STOPCAL_EINVAL;
    }
    if (!name)
        name = "body";
    pthread_mutex_lock(&c->mu);
    int rc;
    if (c->local_preprocess) {
        const unsigned char *b = data;
        rc = predict_local(c, &name, &b, &len, 1, resp, err, errlen);
    } else {
        char path[1024];
        v1_path(c, name, path, sizeof path);
        struct request rq = {.path = path, .content_type = "application/fits", .body = data, .body_len = len,
                             .header_len = -1, .retry = 1};
        rc = v1_predict(c, &rq, resp, err, errlen);
    }
    pthread_mutex_unlock(&c->mu);
    if (rc != STOPCAL_OK)
        stopcal_response_free(resp);
    return rc;
}

void stopcal_response_free(struct stopcal_response *resp)
{
    if (!resp)
        return;
    free(resp->results);
    memset(resp, 0, sizeof *resp);
}

int stopcal_health(stopcal_client *c, int i, char *err, size_t errlen)
{
    if (!c || i < 0 || i >= c->n_urls) {
        error_set(err, errlen, 0, "no server %d", i);
        return STOPCAL_EINVAL;
    }
    pthread_mutex_lock(&c->mu);
    struct request rq = {.path = "/v2/health/ready", .header_len = -1, .retry = 0, .server = i};
    struct reply rp = {0};
    int rc = exchange(c, &rq, &rp, err, errlen);
    if (rc == STOPCAL_OK)
        rc = rp.status == 200;
    else if (rc == STOPCAL_EHTTP || rc == STOPCAL_EBUSY || rc == STOPCAL_EAUTH)
        rc = 0;
    free(rp.body.data);
    pthread_mutex_unlock(&c->mu);
    return rc;
}

int stopcal_explain_file(stopcal_client *c, const char *path, const char *format, int all_heads, int rollout,
                         char **body, size_t *len, char *err, size_t errlen)
{
    *body = NULL;
    *len = 0;
    if (!c || !path || !format || (strcmp(format, "json") && strcmp(format, "fits") && strcmp(format, "png"))) {
        error_set(err, errlen, 0, "explain: format must be json, fits or png");
        return STOPCAL_EINVAL;
    }
    FILE *f = fopen(path, "rb");
    if (!f) {
        error_set(err, errlen, 0, "cannot open %s", path);
        return STOPCAL_EINVAL;
    }
    fclose(f);
    char query[1024];
    v1_path(c, NULL, query, sizeof query); /* /v1/predict[?model=…&threshold=…] */
    const char *rest = strchr(query, '?');
    char url[1200];
    snprintf(url, sizeof url, "/v1/explain?format=%s&heads=%s&rollout=%d%s%s", format, all_heads ? "all" : "mean",
             rollout ? 1 : 0, rest ? "&" : "", rest ? rest + 1 : "");
    const char *name = base_name(path);
    struct request rq = {.path = url, .header_len = -1, .files = &path, .names = &name, .n_files = 1, .retry = 1};
    struct reply rp = {0};
    pthread_mutex_lock(&c->mu);
    int rc = exchange(c, &rq, &rp, err, errlen);
    pthread_mutex_unlock(&c->mu);
    if (rc != STOPCAL_OK || !rp.body.data) {
        free(rp.body.data);
        if (rc == STOPCAL_OK) {
            error_set(err, errlen, 0, "the server answered an empty body");
            rc = STOPCAL_EPROTO;
        }
        return rc;
    }
    *body = rp.body.data;
    *len = rp.body.len;
    return STOPCAL_OK;
}

int stopcal_models(stopcal_client *c, char **json, char *err, size_t errlen)
{
    *json = NULL;
    pthread_mutex_lock(&c->mu);
    struct request rq = {.path = "/v1/models", .header_len = -1, .retry = 1};
    struct reply rp = {0};
    int rc = exchange(c, &rq, &rp, err, errlen);
    pthread_mutex_unlock(&c->mu);
    if (rc == STOPCAL_OK) {
        *json = rp.body.data ? rp.body.data : strdup("{}");
        return *json ? STOPCAL_OK : STOPCAL_ENOMEM;
    }
    free(rp.body.data);
    return rc;
}
