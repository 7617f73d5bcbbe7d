/* The libmicrohttpd side of stopcald. Per-request state lives in *req_cls: created when the request
 * line arrives (the URI log callback, which also bounds the query), examined on the first handler
 * call (headers only: framing, route, auth and every limit that the headers already decide, so an
 * oversized or unauthorised body is never read), filled chunk by chunk, handed to a worker with
 * the connection suspended, answered when the worker or the inference thread resumes it, and freed
 * in the completion callback whatever happened.
 *
 * One request in, exactly one answer out: an answer decided at the headers is held until the
 * request is complete (libmicrohttpd closes a connection whose response was queued earlier), unless
 * a large or unframed body would have to be read first; every JSON document has a fallback when it
 * cannot be built; untrusted text is made valid UTF-8 before it reaches jansson (utf8.h). */
#include "server.h"

#include "job.h"
#include "conn_watch.h"
#include "log.h"
#include "model_names.h"
#include "triton.h"
#include "utf8.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

/* An answer decided at the headers waits for a body up to this size (read and dropped) so that the
 * connection stays open; a longer one is refused unread and the connection closed. */
#define DEFER_BODY_BYTES (64LL << 10)
/* More query parameters than this are refused (libmicrohttpd stores each in the connection's
 * 256 KiB memory pool; 20,000 of them exhausted it and the request got no answer at all). */
#define MAX_QUERY_PARAMS 100
/* The most a small POST (answered on the HTTP thread, routes.h) may carry. */
#define SMALL_BODY_BYTES (64LL << 10)

double server_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

int server_reserve(struct request *rq, long long bytes)
{
    struct server *s = rq->srv;
    long long budget = s->cfg->memory_budget_bytes;
    long long cur = atomic_load(&s->memory_in_use);
    do {
        if (cur + bytes > budget)
            return -1;
    } while (!atomic_compare_exchange_weak(&s->memory_in_use, &cur, cur + bytes));
    atomic_fetch_add(&rq->reserved, bytes);
    return 0;
}

int server_ready(struct server *s) { return batcher_ready(s->batcher) && !atomic_load(&s->not_ready); }

static void release_reservation(struct request *rq)
{
    atomic_fetch_sub(&rq->srv->memory_in_use, atomic_exchange(&rq->reserved, 0));
}

json_t *error_json(const char *request_id, const char *msg)
{
    size_t room = 3 * strlen(msg) + 1; /* every byte possibly replaced by 3 */
    char *clean = malloc(room);
    if (!clean)
        return NULL;
    utf8_sanitize(clean, room, msg);
    json_t *doc = json_pack("{s:s, s:s}", "error", clean, "request_id", request_id);
    free(clean);
    return doc;
}

/* The answer when a JSON document could not be built: never no answer at all. */
static char *fallback_body(size_t *len)
{
    static const char text[] = "{\"error\":\"the server could not build the response (out of memory)\"}";
    char *b = strdup(text);
    *len = b ? strlen(b) : 0;
    return b;
}

static char *dump_json(json_t *doc, size_t *len)
{
    char *text = doc ? json_dumps(doc, JSON_COMPACT | JSON_REAL_PRECISION(9)) : NULL;
    json_decref(doc);
    *len = text ? strlen(text) : 0;
    return text;
}

static void withdraw_incoming(struct request *rq)
{
    if (rq->incoming_counted) {
        rq->incoming_counted = 0;
        batcher_incoming(rq->srv->batcher, rq->model, -1);
    }
}

void request_finish(struct request *rq, int status, char *body, size_t len, const char *type, long long header_len)
{
    withdraw_incoming(rq);
    if (!body) { /* the answer could not be built */
        status = 500;
        body = fallback_body(&len);
        type = "application/json";
        header_len = -1;
    }
    rq->out_status = status;
    rq->out_body = body;
    rq->out_len = len;
    rq->out_type = type;
    rq->out_header_len = header_len;
    MHD_resume_connection(rq->conn);
}

void request_fail(struct request *rq, int status, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    size_t len;
    char *body = dump_json(error_json(rq->request_id, msg), &len);
    request_finish(rq, status, body, len, "application/json", -1);
}

/* Queue an answer on the HTTP thread. Takes body. */
static enum MHD_Result queue_answer(struct request *rq, int status, char *body, size_t len, const char *type,
                                    long long header_len)
{
    if (rq->state == RQ_NEW && rq->defer_ok) { /* decided at the headers: answer once the request is in */
        rq->out_status = status;
        rq->out_body = body;
        rq->out_len = len;
        rq->out_type = type;
        rq->out_header_len = header_len;
        rq->state = RQ_DECIDED;
        conn_watch_body(rq->srv->watch, rq->watch, rq->t_arrival + rq->srv->cfg->request_timeout_ms * 1e-3);
        return MHD_YES;
    }
    if (status != 200 && rq->route && rq->route->handler->triton_stats && rq->model >= 0)
        triton_stats_failure(rq->model, rq->form, server_now() - rq->t_arrival);
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body ? body : (char *)"",
                                                             body ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    MHD_add_response_header(r, "X-Request-Id", rq->request_id);
    if (header_len >= 0) {
        char n[32];
        snprintf(n, sizeof n, "%lld", header_len);
        MHD_add_response_header(r, "Inference-Header-Content-Length", n);
    }
    if (status == 503)
        MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, "1");
    if (status == 401)
        MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer realm=\"stopcal\"");
    if (status == 405 && rq->allow[0])
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, rq->allow);
    if (atomic_load(&rq->srv->draining))
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
    enum MHD_Result ok = MHD_queue_response(rq->conn, (unsigned)status, r);
    MHD_destroy_response(r);
    rq->state = RQ_ANSWERED;
    rq->answered_status = status;
    rq->bytes_out = len;
    return ok;
}

static enum MHD_Result answer_json(struct request *rq, int status, json_t *doc)
{
    size_t len;
    char *body = dump_json(doc, &len);
    if (!body) {
        status = 500;
        body = fallback_body(&len);
    }
    return queue_answer(rq, status, body, len, "application/json", -1);
}

static enum MHD_Result answer_error(struct request *rq, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static enum MHD_Result answer_error(struct request *rq, int status, const char *fmt, ...)
{
    char msg[2048]; /* room for a 404 listing the known models */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return answer_json(rq, status, error_json(rq->request_id, msg));
}

/* ---- what the handlers read ------------------------------------------------------------------- */

const char *http_query(struct request *rq, const char *key)
{
    return MHD_lookup_connection_value(rq->conn, MHD_GET_ARGUMENT_KIND, key);
}

const char *http_header(struct request *rq, const char *key)
{
    return MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND, key);
}

static int is_post(const struct route *r) { return r && strcmp(r->method, "POST") == 0; }

/* A client's X-Request-Id is echoed when it is short and printable, else one of ours is made. */
static void set_request_id(struct request *rq, const char *given)
{
    if (given) {
        size_t n = strlen(given);
        int ok = n > 0 && n < sizeof rq->request_id;
        for (size_t i = 0; ok && i < n; i++)
            ok = isalnum((unsigned char)given[i]) || strchr("-_.:/+=", given[i]);
        if (ok) {
            snprintf(rq->request_id, sizeof rq->request_id, "%s", given);
            return;
        }
    }
    unsigned long long n = atomic_fetch_add(&rq->srv->request_counter, 1) + 1;
    unsigned long long x = (n * 0x9E3779B97F4A7C15ULL) ^ rq->srv->id_salt;
    x ^= x >> 31;
    snprintf(rq->request_id, sizeof rq->request_id, "%016llx", x);
}

/* Constant-time comparison: the time taken depends on the lengths only, never on where they differ. */
static int token_matches(const char *given, size_t given_len, const char *want, size_t want_len)
{
    volatile unsigned char diff = (unsigned char)(given_len != want_len);
    for (size_t i = 0; i < want_len; i++) {
        unsigned char g = i < given_len ? (unsigned char)given[i] : 0;
        diff |= (unsigned char)(g ^ (unsigned char)want[i]);
    }
    return diff == 0;
}

static int authorised(struct server *s, struct MHD_Connection *c)
{
    if (!s->api_key)
        return 1;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h || strncasecmp(h, "Bearer ", 7) != 0)
        return 0;
    const char *tok = h + 7;
    while (*tok == ' ')
        tok++;
    return token_matches(tok, strlen(tok), s->api_key, s->api_key_len);
}

int http_parse_count(const char *text, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (errno || end == text || *end || v < 0)
        return -1;
    *out = v;
    return 0;
}

static int media_type_is(const char *ct, const char *type)
{
    size_t n = strlen(type);
    return strncasecmp(ct, type, n) == 0 && (ct[n] == 0 || ct[n] == ';' || ct[n] == ' ');
}

/* ---- the first call: headers only -------------------------------------------------------------- */

static enum MHD_Result answer_here(struct server *s, struct request *rq)
{
    struct api_answer a = {0};
    const struct api_handler *h = rq->route->handler;
    int status = is_post(rq->route) ? h->post(s, rq, &a) : h->get(s, rq, &a);
    if (a.text)
        return queue_answer(rq, status, a.text, a.len, a.type, -1);
    return answer_json(rq, status, a.doc);
}

static int media_type_accepted(const struct api_handler *h, const char *ct)
{
    if (!h->media_types)
        return 1;
    for (const char *const *t = h->media_types; *t; t++)
        if (**t ? media_type_is(ct, *t) : !*ct)
            return 1;
    return 0;
}

struct framing {
    int n_length, n_encoding; /* Content-Length and Transfer-Encoding headers seen */
    int lengths_differ;
    const char *length, *encoding;
};

static enum MHD_Result count_framing(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    (void)kind;
    struct framing *f = cls;
    if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0) {
        if (f->n_length++ && strcmp(f->length, value ? value : ""))
            f->lengths_differ = 1;
        else
            f->length = value ? value : "";
    } else if (strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING) == 0) {
        f->n_encoding++;
        f->encoding = value ? value : "";
    }
    return MHD_YES;
}

/* How the body is delimited, checked before anything else: a message with two readings (two
 * different lengths; a length and an encoding) is refused, as a proxy in front may read it the
 * other way (request smuggling). Sets rq->defer_ok. Returns 0, or a status with msg filled. */
static int check_framing(struct request *rq, struct MHD_Connection *c, char *msg, size_t msglen)
{
    struct framing f = {0};
    MHD_get_connection_values(c, MHD_HEADER_KIND, count_framing, &f);
    long long cl = -1;
    rq->defer_ok = f.n_encoding == 0 && (f.n_length == 0 || (!http_parse_count(f.length, &cl) && cl <= DEFER_BODY_BYTES));
    if (f.lengths_differ) {
        snprintf(msg, msglen, "%d Content-Length headers with different values", f.n_length);
        return 400;
    }
    if (f.n_length && f.n_encoding) {
        snprintf(msg, msglen, "both Content-Length and Transfer-Encoding: the body's length is ambiguous");
        return 400;
    }
    if (f.n_encoding > 1) {
        snprintf(msg, msglen, "%d Transfer-Encoding headers (send one: chunked)", f.n_encoding);
        return 400;
    }
    if (f.n_encoding && strcasecmp(f.encoding, "chunked") != 0) {
        snprintf(msg, msglen, "Transfer-Encoding '%.200s' is not supported (only chunked; compress with "
                              "Content-Encoding: gzip)", f.encoding);
        return 501;
    }
    return 0;
}

/* A small POST (a handler with post: the repository index): its body is read as any other, within
 * SMALL_BODY_BYTES, and answered on the HTTP thread; it never reaches the batcher, so none of the
 * inference checks apply (an index is answered while the models load, or drain). */
static enum MHD_Result small_post_headers(struct server *s, struct request *rq, struct MHD_Connection *c)
{
    const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    rq->content_length = -1;
    if (cl && http_parse_count(cl, &rq->content_length))
        return answer_error(rq, 400, "Content-Length '%s' is not a byte count", cl);
    if (rq->content_length > SMALL_BODY_BYTES)
        return answer_error(rq, 413, "body of %lld bytes exceeds the %lld bytes %s takes", rq->content_length,
                            SMALL_BODY_BYTES, rq->route->pattern);
    const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    snprintf(rq->content_type, sizeof rq->content_type, "%s", ct ? ct : "");
    const char *enc = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_ENCODING);
    if (enc && strcasecmp(enc, "identity"))
        return answer_error(rq, 415, "Content-Encoding '%s' is not supported here (identity only)", enc);
    if (!media_type_accepted(rq->route->handler, rq->content_type))
        return answer_error(rq, 415, "Content-Type '%s' is not accepted: %s", rq->content_type,
                            rq->route->handler->media_hint);
    rq->deadline = rq->t_arrival + s->cfg->request_timeout_ms * 1e-3;
    rq->state = RQ_BODY;
    conn_watch_body(s->watch, rq->watch, rq->deadline);
    return MHD_YES;
}

static enum MHD_Result on_headers(struct server *s, struct request *rq, struct MHD_Connection *c, const char *url,
                                  const char *method)
{
    const struct server_config *cfg = s->cfg;
    char model[128] = "", version[64] = "";
    set_request_id(rq, MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Request-Id"));
    char framing_msg[320];
    int framing = check_framing(rq, c, framing_msg, sizeof framing_msg);
    if (framing) {
        rq->defer_ok = 0; /* the body cannot be read safely: answer now and close */
        return answer_error(rq, framing, "%s", framing_msg);
    }
    if (rq->query_params)
        return answer_error(rq, 400, "%lld query parameters; at most %d are accepted", rq->query_params,
                            MAX_QUERY_PARAMS);
    rq->route = routes_match(method, url, model, sizeof model, version, sizeof version, rq->allow,
                             sizeof rq->allow);
    if (atomic_load(&s->draining))
        return answer_error(rq, 503, "the service is shutting down");
    if (!rq->route && rq->allow[0])
        return answer_error(rq, 405, "%s does not accept %s (it takes %s)", url, method, rq->allow);
    if (!rq->route)
        return answer_error(rq, 404, "no such endpoint: %s", url);
    if (!rq->route->open && !authorised(s, c))
        return answer_error(rq, 401, "missing or wrong bearer token (Authorization: Bearer <token>)");

    rq->model = s->default_model;
    rq->form = TRITON_FORM_IMAGE;
    const char *qmodel = rq->route->query_model ? MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "model") : NULL;
    const char *want = model[0] ? model : qmodel;
    if (want) {
        /* A v2 path names a model view (triton.h); ?model= names a model. */
        rq->model = model[0] ? triton_find_model(s->batcher, want, &rq->form) : batcher_find_model(s->batcher, want);
        if (rq->model < 0) {
            char known[1024];
            model_names_known(s->batcher, known, sizeof known);
            return answer_error(rq, 404, "model '%s' is not loaded; known models: %s; GET /v1/models lists them",
                                want, known);
        }
    }
    char why[256];
    if (triton_check_version(want ? want : "", version, why, sizeof why))
        return answer_error(rq, 404, "%s", why);
    const struct api_handler *h = rq->route->handler;
    if (!is_post(rq->route))
        return answer_here(s, rq);
    if (h->post) /* a small request answered here once its body is in, never queued for inference */
        return small_post_headers(s, rq, c);

    /* A POST: decide every limit the headers already tell. */
    const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    rq->content_length = -1;
    if (cl && http_parse_count(cl, &rq->content_length))
        return answer_error(rq, 400, "Content-Length '%s' is not a byte count", cl);
    if (rq->content_length > cfg->max_body_bytes)
        return answer_error(rq, 413, "body of %lld bytes exceeds the limit of %lld bytes (--max-body-bytes)",
                            rq->content_length, cfg->max_body_bytes);
    const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    snprintf(rq->content_type, sizeof rq->content_type, "%s", ct ? ct : "");
    const char *enc = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_ENCODING);
    if (enc && strcasecmp(enc, "identity") && strcasecmp(enc, "gzip"))
        return answer_error(rq, 415, "Content-Encoding '%s' is not supported (gzip or identity)", enc);
    rq->gzip_body = enc && strcasecmp(enc, "gzip") == 0;
    if (!media_type_accepted(h, rq->content_type))
        return answer_error(rq, 415, "Content-Type '%s' is not accepted: %s", rq->content_type, h->media_hint);
    rq->threshold = -1;
    rq->inference_header_len = -1;
    struct failure f = {0};
    if (h->check_headers && h->check_headers(rq, &f))
        return answer_error(rq, f.status, "%s", f.msg);
    double timeout_ms = cfg->request_timeout_ms;
    const char *rt = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Request-Timeout-Ms");
    if (rt) {
        long long v;
        if (http_parse_count(rt, &v) || v == 0)
            return answer_error(rq, 400, "X-Request-Timeout-Ms '%s': expected a positive number of milliseconds", rt);
        if (v < timeout_ms)
            timeout_ms = (double)v;
    }
    rq->deadline = rq->t_arrival + timeout_ms * 1e-3;

    if (!batcher_live(s->batcher))
        return answer_error(rq, 503, "the compute device failed; the service is restarting");
    if (!batcher_ready(s->batcher))
        return answer_error(rq, 503, "the models are not ready yet");
    if (batcher_queue_free(s->batcher) <= 0)
        return answer_error(rq, 503, "the queue is full (%d images); retry later", cfg->max_queue);
    /* The budget is reserved as the body arrives (on_body), so that uploads announcing a large body
     * and trickling it cannot hold the budget; one that could never fit is refused now. */
    if (rq->content_length > cfg->memory_budget_bytes)
        return answer_error(rq, 503, "a body of %lld bytes exceeds the server's memory budget for requests in "
                                     "flight (--memory-budget %lld)", rq->content_length, cfg->memory_budget_bytes);
    if (atomic_load(&s->memory_in_use) >= cfg->memory_budget_bytes)
        return answer_error(rq, 503, "the server's memory budget for requests in flight is spent; retry later");
    rq->state = RQ_BODY;
    conn_watch_body(s->watch, rq->watch, rq->deadline);
    rq->incoming_counted = 1;
    batcher_incoming(s->batcher, rq->model, +1);
    return MHD_YES;
}

/* ---- the body --------------------------------------------------------------------------------- */

static void reject_body(struct request *rq, int status, const char *msg)
{
    rq->reject_status = status;
    snprintf(rq->reject_msg, sizeof rq->reject_msg, "%s", msg);
    free(rq->body);
    rq->body = NULL;
    rq->body_len = rq->body_cap = 0;
    release_reservation(rq);
}

/* Returns MHD_NO to drop the connection (a body longer than its Content-Length). A rejected body
 * is read and dropped to its end (its Content-Length is within --max-body-bytes; a chunked one is
 * bounded by the request's deadline, see conn_watch.h), so that the client gets its answer rather
 * than a reset. */
static enum MHD_Result on_body(struct request *rq, const char *data, size_t n)
{
    const struct server_config *cfg = rq->srv->cfg;
    if (rq->reject_status) {
        rq->discarded += n;
        return MHD_YES;
    }
    int small = rq->route && rq->route->handler->post;
    if ((long long)(rq->body_len + n) > (small ? SMALL_BODY_BYTES : cfg->max_body_bytes)) {
        char msg[160];
        if (small)
            snprintf(msg, sizeof msg, "body exceeds the %lld bytes %s takes", SMALL_BODY_BYTES, rq->route->pattern);
        else
            snprintf(msg, sizeof msg, "body exceeds the limit of %lld bytes (--max-body-bytes)", cfg->max_body_bytes);
        reject_body(rq, 413, msg);
        rq->discarded = n;
        return MHD_YES;
    }
    if (rq->content_length >= 0 && (long long)(rq->body_len + n) > rq->content_length)
        return MHD_NO; /* more than announced: a broken client */
    if (rq->body_len + n > rq->body_cap) {
        /* Grow geometrically, reserving each step: what an upload holds follows what it has sent. */
        size_t limit = rq->content_length >= 0 ? (size_t)rq->content_length
                       : small                 ? (size_t)SMALL_BODY_BYTES
                                               : (size_t)cfg->max_body_bytes;
        size_t cap = rq->body_cap ? rq->body_cap * 2 : 64 * 1024;
        while (cap < rq->body_len + n)
            cap *= 2;
        if (cap > limit)
            cap = limit;
        if (server_reserve(rq, (long long)(cap - rq->body_cap))) {
            reject_body(rq, 503, "the server's memory budget for requests in flight is spent; retry later");
            rq->discarded = n;
            return MHD_YES;
        }
        unsigned char *b = realloc(rq->body, cap ? cap : 1);
        if (!b) {
            reject_body(rq, 503, "out of memory for the request body; retry later");
            rq->discarded = n;
            return MHD_YES;
        }
        rq->body = b;
        rq->body_cap = cap;
    }
    memcpy(rq->body + rq->body_len, data, n);
    rq->body_len += n;
    return MHD_YES;
}

/* ---- the handler ------------------------------------------------------------------------------ */

static struct request *request_new(struct server *s, struct MHD_Connection *c)
{
    struct request *rq = calloc(1, sizeof *rq);
    if (!rq)
        return NULL;
    rq->srv = s;
    rq->conn = c;
    rq->model = -1;
    rq->t_arrival = server_now();
    snprintf(rq->method, sizeof rq->method, "?");
    atomic_fetch_add(&s->in_flight, 1);
    return rq;
}

/* The request line has arrived (libmicrohttpd has not parsed the query yet): the request's record
 * starts here, and a query with too many parameters is cut off before libmicrohttpd stores them;
 * on_headers then refuses the request. The URI is libmicrohttpd's own writable read buffer, passed
 * as const; the byte after '?' is the only one written. */
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *c)
{
    struct request *rq = request_new(cls, c);
    const char *q = strchr(uri, '?');
    if (rq && q) {
        long long n = 1;
        for (const char *p = q + 1; *p; p++)
            n += *p == '&' || *p == ';';
        if (n > MAX_QUERY_PARAMS) {
            rq->query_params = n;
            ((char *)q)[1] = 0;
        }
    }
    return rq;
}

static int hex_value(char h) { return isdigit((unsigned char)h) ? h - '0' : tolower((unsigned char)h) - 'a' + 10; }

/* %XX decoding in place, as libmicrohttpd's own, except that %00 stays as it is: a decoded NUL
 * would end the C string early, and /v2/health/live%00junk was served as /v2/health/live. */
static size_t on_unescape(void *cls, struct MHD_Connection *c, char *text)
{
    (void)cls, (void)c;
    char *w = text;
    for (const char *r = text; *r;) {
        if (r[0] == '%' && isxdigit((unsigned char)r[1]) && isxdigit((unsigned char)r[2])) {
            int v = hex_value(r[1]) * 16 + hex_value(r[2]);
            if (v) {
                *w++ = (char)v;
                r += 3;
                continue;
            }
        }
        *w++ = *r++;
    }
    *w = 0;
    return (size_t)(w - text);
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                 const char *version, const char *upload_data, size_t *upload_data_size,
                                 void **req_cls)
{
    (void)version;
    struct server *s = cls;
    struct request *rq = *req_cls;
    if (!rq && !(rq = request_new(s, c)))
        return MHD_NO;
    *req_cls = rq;
    if (rq->state == RQ_NEW) { /* the first call: the headers are in */
        utf8_sanitize(rq->method, sizeof rq->method, method);
        utf8_sanitize(rq->path, sizeof rq->path, url);
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
        rq->watch = ci ? ci->socket_context : NULL;
        conn_watch_busy(s->watch, rq->watch);
        return on_headers(s, rq, c, url, method);
    }
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (rq->state != RQ_BODY) {
            rq->discarded += n; /* answered at the headers: the body is dropped */
            return MHD_YES;
        }
        return on_body(rq, upload_data, n);
    }
    switch (rq->state) {
    case RQ_DECIDED: {
        char *body = rq->out_body;
        rq->out_body = NULL;
        conn_watch_busy(s->watch, rq->watch);
        return queue_answer(rq, rq->out_status, body, rq->out_len, rq->out_type, rq->out_header_len);
    }
    case RQ_BODY:
        conn_watch_busy(s->watch, rq->watch);
        if (rq->reject_status)
            return answer_error(rq, rq->reject_status, "%s", rq->reject_msg);
        if (rq->route->handler->post)
            return answer_here(s, rq);
        rq->state = RQ_WORKING;
        MHD_suspend_connection(c);
        if (workpool_submit(s->pool, job_start, rq)) {
            MHD_resume_connection(c);
            rq->state = RQ_BODY;
            return answer_error(rq, 503, "the service is shutting down");
        }
        return MHD_YES;
    case RQ_WORKING:
        if (!rq->out_status)
            return MHD_YES;
        {
            char *body = rq->out_body;
            rq->out_body = NULL;
            return queue_answer(rq, rq->out_status, body, rq->out_len, rq->out_type, rq->out_header_len);
        }
    default: return MHD_YES;
    }
}

static const char *termination_name(enum MHD_RequestTerminationCode toe)
{
    switch (toe) {
    case MHD_REQUEST_TERMINATED_COMPLETED_OK: return "completed";
    case MHD_REQUEST_TERMINATED_WITH_ERROR: return "error";
    case MHD_REQUEST_TERMINATED_TIMEOUT_REACHED: return "timeout";
    case MHD_REQUEST_TERMINATED_DAEMON_SHUTDOWN: return "shutdown";
    case MHD_REQUEST_TERMINATED_READ_ERROR: return "read_error";
    case MHD_REQUEST_TERMINATED_CLIENT_ABORT: return "client_abort";
    default: return "other";
    }
}

static void on_completed(void *cls, struct MHD_Connection *c, void **req_cls, enum MHD_RequestTerminationCode toe)
{
    (void)c;
    struct server *s = cls;
    struct request *rq = *req_cls;
    if (!rq)
        return;
    *req_cls = NULL;
    const char *cut = conn_watch_verdict(s->watch, rq->watch);
    conn_watch_headers(s->watch, rq->watch); /* a kept-alive connection waits for its next request */
    double total = server_now() - rq->t_arrival;
    if (rq->answered_status)
        metrics_request(s->metrics, routes_index(rq->route), rq->answered_status, total);
    else
        atomic_fetch_add(&s->aborted, 1);
    const struct batcher_model_info *mi = batcher_model(s->batcher, rq->model);
    int infers = is_post(rq->route) && !rq->route->handler->post;
    json_t *f = json_pack("{s:s, s:s, s:s, s:i, s:s, s:i, s:I, s:I, s:f, s:s}", "request_id", rq->request_id,
                          "method", rq->method, "path", rq->path, "status", rq->answered_status, "model",
                          mi && infers ? mi->name : "", "images", rq->images, "bytes_in",
                          (json_int_t)(rq->body_len + rq->discarded), "bytes_out", (json_int_t)rq->bytes_out,
                          "duration_ms", total * 1e3, "termination", cut ? cut : termination_name(toe));
    log_event(rq->answered_status >= 500 || !rq->answered_status ? "warn" : "info", "request", f);
    withdraw_incoming(rq);
    job_free(rq);
    free(rq->body);
    free(rq->out_body);
    release_reservation(rq);
    free(rq);
    atomic_fetch_sub(&s->in_flight, 1);
}

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    struct server *s = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        atomic_fetch_add(&s->connections, 1);
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        *socket_context = ci ? conn_watch_add(s->watch, ci->connect_fd) : NULL;
    } else {
        atomic_fetch_sub(&s->connections, 1);
        conn_watch_remove(s->watch, *socket_context);
        *socket_context = NULL;
    }
}

/* Past --max-connections a new connection is closed at once: libmicrohttpd's own limit (set higher,
 * see http_start) would stop accepting and leave clients hanging in the listen backlog. */
static enum MHD_Result on_accept(void *cls, const struct sockaddr *addr, socklen_t addrlen)
{
    (void)addr, (void)addrlen;
    struct server *s = cls;
    if (atomic_load(&s->connections) < s->cfg->max_connections)
        return MHD_YES;
    atomic_fetch_add(&s->refused, 1);
    return MHD_NO;
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
        msg[--n] = 0;
    log_msg("warn", "libmicrohttpd: %s", msg); /* log_msg makes it valid UTF-8 */
}

int http_start(struct server *s, char *err, size_t errlen)
{
    const struct server_config *cfg = s->cfg;
    struct sockaddr_in a4;
    struct sockaddr_in6 a6;
    struct sockaddr *addr;
    unsigned flags = MHD_USE_AUTO_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    memset(&a4, 0, sizeof a4);
    memset(&a6, 0, sizeof a6);
    if (inet_pton(AF_INET, cfg->host, &a4.sin_addr) == 1) {
        a4.sin_family = AF_INET;
        a4.sin_port = htons((uint16_t)cfg->port);
        addr = (struct sockaddr *)&a4;
    } else if (inet_pton(AF_INET6, cfg->host, &a6.sin6_addr) == 1) {
        a6.sin6_family = AF_INET6;
        a6.sin6_port = htons((uint16_t)cfg->port);
        addr = (struct sockaddr *)&a6;
        flags |= MHD_USE_IPv6;
    } else {
        snprintf(err, errlen, "--host %s: not a numeric IPv4 or IPv6 address", cfg->host);
        return -1;
    }
    if (conn_watch_start(&s->watch, cfg->header_timeout_ms * 1e-3)) {
        snprintf(err, errlen, "cannot start the connection deadline thread");
        return -1;
    }
    /* libmicrohttpd splits its limit between its threads and stops accepting when a thread's share is
     * full; each share is set above --max-connections so that on_accept, which counts them all, is
     * what refuses. */
    unsigned threads = (unsigned)(cfg->http_threads > 1 ? cfg->http_threads : 1);
    unsigned mhd_limit = ((unsigned)cfg->max_connections + 16) * threads;
    s->daemon = MHD_start_daemon(
        flags, (uint16_t)cfg->port, on_accept, s, on_access, s, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, s,
        MHD_OPTION_SOCK_ADDR, addr,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned)(cfg->http_threads > 1 ? cfg->http_threads : 0),
        MHD_OPTION_CONNECTION_LIMIT, mhd_limit, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)cfg->connection_timeout_s, MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)256 * 1024,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_NOTIFY_CONNECTION, on_connection, s,
        MHD_OPTION_URI_LOG_CALLBACK, on_uri, s, MHD_OPTION_UNESCAPE_CALLBACK, on_unescape, s,
        MHD_OPTION_END);
    if (!s->daemon) {
        conn_watch_stop(s->watch);
        s->watch = NULL;
        snprintf(err, errlen, "cannot listen on %s:%d (address in use, or not allowed)", cfg->host, cfg->port);
        return -1;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    s->port = info ? info->port : cfg->port;
    return 0;
}

void http_quiesce(struct server *s)
{
    if (!s->daemon)
        return;
    MHD_socket fd = MHD_quiesce_daemon(s->daemon);
    if (fd != MHD_INVALID_SOCKET)
        close(fd);
}

void http_stop(struct server *s)
{
    if (s->daemon)
        MHD_stop_daemon(s->daemon);
    s->daemon = NULL;
    conn_watch_stop(s->watch); /* after the daemon: its connections are gone, none still notifies */
    s->watch = NULL;
}
