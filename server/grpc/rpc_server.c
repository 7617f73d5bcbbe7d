/* gRPC transport on the C core (rpc.h). Each call has two batches in flight from the start: the
 * request message (tag RECV) and the close notification (tag CLOSE, which also tells of a client
 * that gave up); the answer is a third (tag SENT). The call is freed when CLOSE and SENT (or RECV,
 * if it never got as far as an answer) have completed: refs counts them. */
#include "rpc.h"

#include "log.h"

#include <ctype.h>
#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/time.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum tag_kind { TAG_NEW, TAG_RECV, TAG_CLOSE, TAG_SENT, TAG_SHUTDOWN };

struct tag {
    enum tag_kind kind;
    struct rpc_call *c;
};

struct rpc_call {
    struct rpc_server *g;
    struct rpc_request req;
    grpc_call *call;
    grpc_call_details details;
    grpc_metadata_array md;
    grpc_byte_buffer *recv;
    int cancelled;
    atomic_int refs;
    atomic_int answered;
    struct tag t_new, t_recv, t_close, t_sent;
    unsigned char *msg;
    long long reserved;
    int announced_model; /* −1: none */
    /* the answer */
    grpc_byte_buffer *send;
    grpc_status_code code;
    grpc_slice status_details;
    int has_details;
    grpc_metadata out_md[1];
    size_t bytes_out;
};

#define N_CODES 17

struct rpc_server {
    struct server *srv;
    grpc_server *server;
    grpc_completion_queue *cq;
    pthread_t thread;
    int thread_started;
    struct tag t_shutdown;
    atomic_int quiesced, shutdown_done;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    unsigned long long counts[RPC_METHODS + 1][N_CODES];
    double seconds[RPC_METHODS + 1];
};

static const char *const method_names[RPC_METHODS + 1] = {
    [RPC_SERVER_LIVE] = "ServerLive",         [RPC_SERVER_READY] = "ServerReady",
    [RPC_MODEL_READY] = "ModelReady",         [RPC_SERVER_METADATA] = "ServerMetadata",
    [RPC_MODEL_METADATA] = "ModelMetadata",   [RPC_MODEL_INFER] = "ModelInfer",
    [RPC_MODEL_CONFIG] = "ModelConfig",       [RPC_MODEL_STATISTICS] = "ModelStatistics",
    [RPC_REPOSITORY_INDEX] = "RepositoryIndex", [RPC_UNKNOWN] = "other",
};

static const char *const code_names[N_CODES] = {
    "OK",        "CANCELLED",         "UNKNOWN",           "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
    "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
    "UNIMPLEMENTED", "INTERNAL",       "UNAVAILABLE",       "DATA_LOSS",        "UNAUTHENTICATED",
};

const char *rpc_method_name(enum rpc_method m) { return method_names[m <= RPC_UNKNOWN ? m : RPC_UNKNOWN]; }

grpc_status_code rpc_code_for_http(int http_status)
{
    switch (http_status) {
    case 200: return GRPC_STATUS_OK;
    case 400:
    case 415: return GRPC_STATUS_INVALID_ARGUMENT;
    case 401: return GRPC_STATUS_UNAUTHENTICATED;
    case 404: return GRPC_STATUS_NOT_FOUND;
    case 413: return GRPC_STATUS_RESOURCE_EXHAUSTED;
    case 501: return GRPC_STATUS_UNIMPLEMENTED;
    case 503: return GRPC_STATUS_UNAVAILABLE;
    case 504: return GRPC_STATUS_DEADLINE_EXCEEDED;
    default: return GRPC_STATUS_INTERNAL;
    }
}

/* ---- the call's life ----------------------------------------------------------------------------- */

static void post_request_call(struct rpc_server *g);

static void call_unref(struct rpc_call *c)
{
    if (atomic_fetch_sub(&c->refs, 1) != 1)
        return;
    struct server *s = c->g->srv;
    if (c->announced_model >= 0)
        batcher_incoming(s->batcher, c->announced_model, -1);
    atomic_fetch_sub(&s->memory_in_use, c->reserved);
    if (c->recv)
        grpc_byte_buffer_destroy(c->recv);
    if (c->send)
        grpc_byte_buffer_destroy(c->send);
    if (c->has_details)
        grpc_slice_unref(c->status_details);
    grpc_metadata_array_destroy(&c->md);
    grpc_call_details_destroy(&c->details);
    if (c->call)
        grpc_call_unref(c->call);
    free(c->msg);
    free(c);
    atomic_fetch_sub(&s->in_flight, 1);
}

int rpc_reserve(struct rpc_request *req, long long bytes)
{
    struct server *s = req->srv;
    long long cur = atomic_load(&s->memory_in_use);
    do {
        if (cur + bytes > s->cfg->memory_budget_bytes)
            return -1;
    } while (!atomic_compare_exchange_weak(&s->memory_in_use, &cur, cur + bytes));
    req->call->reserved += bytes;
    return 0;
}

void rpc_announce(struct rpc_request *req, int model)
{
    struct rpc_call *c = req->call;
    if (c->announced_model < 0) {
        c->announced_model = model;
        batcher_incoming(req->srv->batcher, model, +1);
    }
}

void rpc_announce_taken(struct rpc_request *req) { req->call->announced_model = -1; }

static void log_call(struct rpc_call *c)
{
    struct rpc_request *r = &c->req;
    double total = server_now() - r->t_arrival;
    struct rpc_server *g = c->g;
    pthread_mutex_lock(&g->lock);
    g->counts[r->method][c->code < N_CODES ? c->code : GRPC_STATUS_UNKNOWN]++;
    g->seconds[r->method] += total;
    pthread_mutex_unlock(&g->lock);
    json_t *f = json_pack("{s:s, s:s, s:s, s:s, s:i, s:s, s:i, s:I, s:I, s:f}", "request_id", r->request_id,
                          "protocol", "grpc", "method", rpc_method_name(r->method), "grpc_status",
                          code_names[c->code < N_CODES ? c->code : GRPC_STATUS_UNKNOWN], "grpc_code", (int)c->code,
                          "model", r->model, "images", r->images, "bytes_in", (json_int_t)r->msg_len, "bytes_out",
                          (json_int_t)c->bytes_out, "duration_ms", total * 1e3);
    int bad = c->code == GRPC_STATUS_INTERNAL || c->code == GRPC_STATUS_UNAVAILABLE || c->code == GRPC_STATUS_UNKNOWN ||
              c->code == GRPC_STATUS_DEADLINE_EXCEEDED;
    log_event(bad ? "warn" : "info", "request", f);
}

/* Queue the answer: initial metadata (x-request-id), the message when OK, the status. */
static void send_answer(struct rpc_call *c, grpc_status_code code, unsigned char *msg, size_t len, const char *details)
{
    if (atomic_exchange(&c->answered, 1)) {
        free(msg);
        return;
    }
    c->code = code;
    if (c->announced_model >= 0) {
        batcher_incoming(c->g->srv->batcher, c->announced_model, -1);
        c->announced_model = -1;
    }
    grpc_op ops[3];
    int n = 0;
    memset(ops, 0, sizeof ops);
    c->out_md[0].key = grpc_slice_from_static_string("x-request-id");
    c->out_md[0].value = grpc_slice_from_static_string(c->req.request_id);
    ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[n].data.send_initial_metadata.count = 1;
    ops[n].data.send_initial_metadata.metadata = c->out_md;
    n++;
    if (code == GRPC_STATUS_OK && msg) {
        grpc_slice sl = grpc_slice_from_copied_buffer((const char *)msg, len);
        c->send = grpc_raw_byte_buffer_create(&sl, 1);
        grpc_slice_unref(sl);
        c->bytes_out = len;
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n].data.send_message.send_message = c->send;
        n++;
    }
    free(msg);
    c->status_details = grpc_slice_from_copied_string(details ? details : "");
    c->has_details = 1;
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = code;
    ops[n].data.send_status_from_server.status_details = &c->status_details;
    ops[n].data.send_status_from_server.trailing_metadata_count = 0;
    n++;
    log_call(c);
    c->t_sent = (struct tag){TAG_SENT, c};
    if (grpc_call_start_batch(c->call, ops, (size_t)n, &c->t_sent, NULL) != GRPC_CALL_OK) {
        log_msg("warn", "gRPC: could not send the answer to %s", c->req.request_id);
        call_unref(c); /* the SENT reference: its tag will never come */
    }
}

void rpc_answer(struct rpc_request *req, unsigned char *msg, size_t len)
{
    send_answer(req->call, GRPC_STATUS_OK, msg, len, NULL);
}

void rpc_fail(struct rpc_request *req, grpc_status_code code, const char *fmt, ...)
{
    char text[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    send_answer(req->call, code, NULL, 0, text);
}

/* ---- a new call -------------------------------------------------------------------------------- */

static const char *md_value(struct rpc_call *c, const char *key, size_t *len)
{
    for (size_t i = 0; i < c->md.count; i++)
        if (grpc_slice_str_cmp(c->md.metadata[i].key, key) == 0) {
            *len = GRPC_SLICE_LENGTH(c->md.metadata[i].value);
            return (const char *)GRPC_SLICE_START_PTR(c->md.metadata[i].value);
        }
    return NULL;
}

/* A client's x-request-id is echoed when it is short and printable, else one of ours is made (the
 * same rule and generator as the HTTP side, so ids never collide between the two). */
static void set_request_id(struct rpc_call *c)
{
    struct server *s = c->g->srv;
    size_t n = 0;
    const char *given = md_value(c, "x-request-id", &n);
    int ok = given && n > 0 && n < sizeof c->req.request_id;
    for (size_t i = 0; ok && i < n; i++)
        ok = isalnum((unsigned char)given[i]) || strchr("-_.:/+=", given[i]);
    if (ok) {
        memcpy(c->req.request_id, given, n);
        c->req.request_id[n] = 0;
        return;
    }
    unsigned long long k = atomic_fetch_add(&s->request_counter, 1) + 1;
    unsigned long long x = (k * 0x9E3779B97F4A7C15ULL) ^ s->id_salt;
    x ^= x >> 31;
    snprintf(c->req.request_id, sizeof c->req.request_id, "%016llx", x);
}

static int token_ok(struct rpc_call *c)
{
    struct server *s = c->g->srv;
    if (!s->api_key)
        return 1;
    size_t n = 0;
    const char *h = md_value(c, "authorization", &n);
    if (!h || n < 7 || strncasecmp(h, "Bearer ", 7) != 0)
        return 0;
    h += 7, n -= 7;
    while (n && *h == ' ')
        h++, n--;
    /* constant time in the contents: the time depends on the lengths only */
    volatile unsigned char diff = (unsigned char)(n != s->api_key_len);
    for (size_t i = 0; i < s->api_key_len; i++)
        diff |= (unsigned char)((i < n ? (unsigned char)h[i] : 0) ^ (unsigned char)s->api_key[i]);
    return diff == 0;
}

static enum rpc_method method_of(struct rpc_call *c)
{
    static const char prefix[] = "/inference.GRPCInferenceService/";
    size_t n = GRPC_SLICE_LENGTH(c->details.method);
    const char *m = (const char *)GRPC_SLICE_START_PTR(c->details.method);
    if (n <= sizeof prefix - 1 || memcmp(m, prefix, sizeof prefix - 1) != 0)
        return RPC_UNKNOWN;
    m += sizeof prefix - 1, n -= sizeof prefix - 1;
    for (int i = 0; i < RPC_METHODS; i++)
        if (strlen(method_names[i]) == n && memcmp(method_names[i], m, n) == 0)
            return (enum rpc_method)i;
    return RPC_UNKNOWN;
}

static double deadline_of(struct rpc_call *c, double now)
{
    double d = now + c->g->srv->cfg->request_timeout_ms * 1e-3;
    gpr_timespec dl = c->details.deadline;
    if (gpr_time_cmp(dl, gpr_inf_future(dl.clock_type)) != 0) {
        gpr_timespec left = gpr_time_sub(dl, gpr_now(dl.clock_type));
        double l = (double)left.tv_sec + left.tv_nsec * 1e-9;
        if (now + l < d)
            d = now + l;
    }
    return d;
}

static void on_new_call(struct rpc_call *c)
{
    struct rpc_server *g = c->g;
    struct server *s = g->srv;
    atomic_fetch_add(&s->in_flight, 1);
    if (!atomic_load(&g->quiesced))
        post_request_call(g);
    c->req.srv = s;
    c->req.call = c;
    c->req.t_arrival = server_now();
    c->req.deadline = deadline_of(c, c->req.t_arrival);
    c->req.method = method_of(c);
    set_request_id(c);
    atomic_store(&c->refs, 2); /* RECV (then the answer) + CLOSE */
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    op.data.recv_close_on_server.cancelled = &c->cancelled;
    c->t_close = (struct tag){TAG_CLOSE, c};
    if (grpc_call_start_batch(c->call, &op, 1, &c->t_close, NULL) != GRPC_CALL_OK)
        atomic_fetch_sub(&c->refs, 1);
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &c->recv;
    c->t_recv = (struct tag){TAG_RECV, c};
    if (grpc_call_start_batch(c->call, &op, 1, &c->t_recv, NULL) != GRPC_CALL_OK)
        call_unref(c);
}

static void on_request_message(struct rpc_call *c, int ok)
{
    struct server *s = c->g->srv;
    if (!ok || !c->recv) {
        rpc_fail(&c->req, GRPC_STATUS_INVALID_ARGUMENT, "no request message arrived");
        return;
    }
    grpc_byte_buffer_reader rd;
    if (!grpc_byte_buffer_reader_init(&rd, c->recv)) {
        rpc_fail(&c->req, GRPC_STATUS_INVALID_ARGUMENT, "the request message could not be read");
        return;
    }
    grpc_slice all = grpc_byte_buffer_reader_readall(&rd);
    grpc_byte_buffer_reader_destroy(&rd);
    grpc_byte_buffer_destroy(c->recv);
    c->recv = NULL;
    size_t n = GRPC_SLICE_LENGTH(all);
    c->req.msg_len = n;
    if (rpc_reserve(&c->req, (long long)n)) {
        grpc_slice_unref(all);
        rpc_fail(&c->req, GRPC_STATUS_UNAVAILABLE, "the server's memory budget for requests in flight is spent; retry later");
        return;
    }
    c->msg = malloc(n ? n : 1);
    if (!c->msg) {
        grpc_slice_unref(all);
        rpc_fail(&c->req, GRPC_STATUS_UNAVAILABLE, "out of memory for the request; retry later");
        return;
    }
    memcpy(c->msg, GRPC_SLICE_START_PTR(all), n);
    grpc_slice_unref(all);
    c->req.msg = c->msg;
    if (atomic_load(&s->draining)) {
        rpc_fail(&c->req, GRPC_STATUS_UNAVAILABLE, "the service is shutting down");
        return;
    }
    if (c->req.method == RPC_UNKNOWN) {
        rpc_fail(&c->req, GRPC_STATUS_UNIMPLEMENTED, "%.*s is not a method stopcald serves",
                 (int)GRPC_SLICE_LENGTH(c->details.method), (const char *)GRPC_SLICE_START_PTR(c->details.method));
        return;
    }
    if (c->req.method != RPC_SERVER_LIVE && c->req.method != RPC_SERVER_READY && !token_ok(c)) {
        rpc_fail(&c->req, GRPC_STATUS_UNAUTHENTICATED,
                 "missing or wrong bearer token (metadata 'authorization: Bearer <token>')");
        return;
    }
    rpc_service_dispatch(&c->req);
}

static void post_request_call(struct rpc_server *g)
{
    struct rpc_call *c = calloc(1, sizeof *c);
    if (!c) {
        log_msg("error", "gRPC: out of memory; no longer accepting calls");
        return;
    }
    c->g = g;
    c->announced_model = -1;
    grpc_metadata_array_init(&c->md);
    grpc_call_details_init(&c->details);
    c->t_new = (struct tag){TAG_NEW, c};
    if (grpc_server_request_call(g->server, &c->call, &c->details, &c->md, g->cq, g->cq, &c->t_new) != GRPC_CALL_OK) {
        grpc_metadata_array_destroy(&c->md);
        grpc_call_details_destroy(&c->details);
        free(c);
    }
}

static void *cq_thread(void *arg)
{
    struct rpc_server *g = arg;
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(g->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
        if (ev.type != GRPC_OP_COMPLETE)
            continue;
        struct tag *t = ev.tag;
        switch (t->kind) {
        case TAG_NEW:
            if (ev.success) {
                on_new_call(t->c);
            } else { /* the server is shutting down: this slot never got a call */
                grpc_metadata_array_destroy(&t->c->md);
                grpc_call_details_destroy(&t->c->details);
                free(t->c);
            }
            break;
        case TAG_RECV: on_request_message(t->c, ev.success); break;
        case TAG_CLOSE:
        case TAG_SENT: call_unref(t->c); break;
        case TAG_SHUTDOWN:
            pthread_mutex_lock(&g->lock);
            atomic_store(&g->shutdown_done, 1);
            pthread_cond_broadcast(&g->cond);
            pthread_mutex_unlock(&g->lock);
            break;
        }
    }
    return NULL;
}

/* ---- start and stop ------------------------------------------------------------------------------ */

int rpc_start(struct server *s, char *err, size_t errlen)
{
    const struct server_config *cfg = s->cfg;
    struct rpc_server *g = calloc(1, sizeof *g);
    if (!g) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    g->srv = s;
    pthread_mutex_init(&g->lock, NULL);
    pthread_cond_init(&g->cond, NULL);
    g->t_shutdown.kind = TAG_SHUTDOWN;
    grpc_init();
    /* The body limit is the message limit: gRPC answers RESOURCE_EXHAUSTED itself past it. */
    grpc_arg args[2];
    memset(args, 0, sizeof args);
    args[0].type = GRPC_ARG_INTEGER;
    args[0].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[0].value.integer = cfg->max_body_bytes > INT_MAX ? INT_MAX : (int)cfg->max_body_bytes;
    args[1].type = GRPC_ARG_INTEGER;
    args[1].key = GRPC_ARG_MAX_CONCURRENT_STREAMS;
    args[1].value.integer = cfg->max_connections;
    grpc_channel_args ch = {2, args};
    g->server = grpc_server_create(&ch, NULL);
    g->cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(g->server, g->cq, NULL);
    char addr[300];
    snprintf(addr, sizeof addr, strchr(cfg->host, ':') ? "[%s]:%d" : "%s:%d", cfg->host, cfg->grpc_port);
    grpc_server_credentials *creds = grpc_insecure_server_credentials_create();
    int port = grpc_server_add_http2_port(g->server, addr, creds);
    grpc_server_credentials_release(creds);
    if (port <= 0) {
        snprintf(err, errlen, "gRPC: cannot listen on %s (address in use, or not allowed)", addr);
        grpc_server_destroy(g->server);
        grpc_completion_queue_shutdown(g->cq);
        while (grpc_completion_queue_next(g->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type != GRPC_QUEUE_SHUTDOWN)
            ;
        grpc_completion_queue_destroy(g->cq);
        grpc_shutdown_blocking();
        free(g);
        return -1;
    }
    s->grpc_port = port;
    grpc_server_start(g->server);
    /* A few calls waiting at once, so that a burst does not wait on the loop to re-arm. */
    for (int i = 0; i < 8; i++)
        post_request_call(g);
    if (pthread_create(&g->thread, NULL, cq_thread, g)) {
        snprintf(err, errlen, "gRPC: cannot start its thread");
        s->rpc = g;
        rpc_stop(s);
        return -1;
    }
    g->thread_started = 1;
    s->rpc = g;
    return 0;
}

void rpc_quiesce(struct server *s)
{
    struct rpc_server *g = s->rpc;
    if (!g || atomic_exchange(&g->quiesced, 1))
        return;
    grpc_server_shutdown_and_notify(g->server, g->cq, &g->t_shutdown);
}

void rpc_stop(struct server *s)
{
    struct rpc_server *g = s->rpc;
    if (!g)
        return;
    rpc_quiesce(s);
    grpc_server_cancel_all_calls(g->server);
    if (g->thread_started) {
        pthread_mutex_lock(&g->lock);
        while (!atomic_load(&g->shutdown_done))
            pthread_cond_wait(&g->cond, &g->lock);
        pthread_mutex_unlock(&g->lock);
    }
    grpc_server_destroy(g->server);
    grpc_completion_queue_shutdown(g->cq);
    if (g->thread_started)
        pthread_join(g->thread, NULL);
    else
        while (grpc_completion_queue_next(g->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type != GRPC_QUEUE_SHUTDOWN)
            ;
    grpc_completion_queue_destroy(g->cq);
    grpc_shutdown_blocking();
    pthread_mutex_destroy(&g->lock);
    pthread_cond_destroy(&g->cond);
    free(g);
    s->rpc = NULL;
}

void rpc_metrics_render(struct server *s, struct strbuf *out)
{
    struct rpc_server *g = s->rpc;
    if (!g)
        return;
    unsigned long long counts[RPC_METHODS + 1][N_CODES];
    double seconds[RPC_METHODS + 1];
    pthread_mutex_lock(&g->lock);
    memcpy(counts, g->counts, sizeof counts);
    memcpy(seconds, g->seconds, sizeof seconds);
    pthread_mutex_unlock(&g->lock);
    strbuf_printf(out, "# HELP stopcal_grpc_requests_total gRPC calls answered, by method and status code.\n"
                       "# TYPE stopcal_grpc_requests_total counter\n");
    for (int m = 0; m <= RPC_METHODS; m++)
        for (int k = 0; k < N_CODES; k++)
            if (counts[m][k])
                strbuf_printf(out, "stopcal_grpc_requests_total{method=\"%s\",code=\"%s\"} %llu\n", method_names[m],
                              code_names[k], counts[m][k]);
    strbuf_printf(out, "# HELP stopcal_grpc_request_seconds_total Time from a call's arrival to its answer, "
                       "summed per method.\n"
                       "# TYPE stopcal_grpc_request_seconds_total counter\n");
    for (int m = 0; m <= RPC_METHODS; m++)
        strbuf_printf(out, "stopcal_grpc_request_seconds_total{method=\"%s\"} %.6f\n", method_names[m], seconds[m]);
}
