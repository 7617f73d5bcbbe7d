/* stopcald's shared state and the per-request record. http.c owns the libmicrohttpd side (accept,
 * bodies, limits, suspend/resume, the completion callback) and dispatches through the route table
 * (routes.c); the handlers (api_v1.c, api_v2.c, api_meta.c) say what each endpoint answers, and
 * job.c walks a prediction from its body to its answer. */
#ifndef STOPCAL_SERVER_SERVER_H
#define STOPCAL_SERVER_SERVER_H

#include "config.h"
#include "batcher.h"
#include "metrics.h"
#include "routes.h"
#include "workpool.h"

#include <jansson.h>
#include <stdatomic.h>
#include <stddef.h>

struct MHD_Daemon;
struct MHD_Connection;
struct conn_watch;
struct conn_watch_entry;
struct job;
struct rpc_server;

struct server {
    const struct server_config *cfg;
    struct batcher *batcher;
    struct metrics *metrics;
    struct workpool *pool;
    struct MHD_Daemon *daemon;
    struct conn_watch *watch; /* header and body deadlines (conn_watch.h) */
    int default_model;
    int port;            /* the bound port */
    struct rpc_server *rpc; /* the gRPC service (server/grpc), NULL when off */
    int grpc_port;       /* its bound port */
    int compute_threads, workers;
    char *api_key;       /* NULL: no auth */
    size_t api_key_len;
    atomic_int draining; /* past the grace period: refuse new requests */
    atomic_int not_ready; /* SIGTERM received */
    atomic_int in_flight;
    atomic_int connections;
    atomic_llong memory_in_use;
    atomic_ullong request_counter;
    atomic_ullong aborted;
    atomic_ullong refused; /* connections closed at accept: --max-connections reached */
    unsigned long long id_salt;
};

/* RQ_DECIDED: answered at the headers, the answer held until libmicrohttpd has the whole request (a
 * response queued before then closes the connection, breaking keep-alive and pipelining). */
enum request_state { RQ_NEW, RQ_DECIDED, RQ_BODY, RQ_WORKING, RQ_ANSWERED };

/* POST /v1/explain's query: ?format=json|fits|png&heads=mean|all&rollout=0|1 (api_explain.c). */
struct explain_options {
    char format[8];
    int all_heads, rollout;
};

struct request {
    struct server *srv;
    struct MHD_Connection *conn;
    enum request_state state;
    const struct route *route; /* NULL: no route serves the path */
    int model;          /* index, or −1 */
    int form;           /* which v2 view of it the path names (triton.h): {m} or {m}_pixels */
    char method[16];
    char path[256];
    char request_id[72];
    char allow[32];     /* the methods the path takes, for a 405's Allow header */
    double t_arrival;   /* CLOCK_MONOTONIC seconds */
    double deadline;

    /* request options, parsed from headers and the query before the body arrives */
    char content_type[256];
    double threshold;   /* < 0: the model's */
    char name[256];     /* /v1/predict ?name= */
    struct explain_options explain; /* /v1/explain only */
    long long inference_header_len; /* Inference-Header-Content-Length, −1 when absent */

    /* the body */
    unsigned char *body;
    size_t body_len, body_cap;
    long long content_length; /* −1: chunked / unknown */
    atomic_llong reserved;    /* memory budget held by this request (preprocessing workers add to it) */
    int defer_ok;             /* an answer decided at the headers may wait for the (small) body */
    long long query_params;   /* more than the query parameter limit: their count, else 0 */
    int gzip_body;            /* Content-Encoding: gzip, decoded by the worker within the budget */
    int reject_status;        /* a limit hit while the body streamed in: answer this at the end */
    char reject_msg[256];
    size_t discarded;

    struct conn_watch_entry *watch; /* this connection's deadlines */
    int incoming_counted; /* announced to the batcher with batcher_incoming(+1) */
    struct job *job;

    /* the answer, filled by whichever thread finished the work, queued by the HTTP thread */
    int out_status;
    char *out_body;
    size_t out_len;
    const char *out_type;
    long long out_header_len; /* binary v2 answers: Inference-Header-Content-Length, else −1 */

    int answered_status;
    size_t bytes_out;
    int images;
};

/* Monotonic seconds. */
double server_now(void);

/* Hold bytes of the memory budget for rq (0 on success, −1 when the budget is spent). */
int server_reserve(struct request *rq, long long bytes);

/* Record the answer for a request being worked on off the HTTP thread and resume its connection;
 * the request must not be touched by the caller afterwards. body is taken (malloc'd). */
void request_finish(struct request *rq, int status, char *body, size_t len, const char *type,
                    long long header_len);
/* request_finish with {"error": msg, "request_id"} as the body. */
void request_fail(struct request *rq, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* A JSON error body: {"error": msg, "request_id": id}. */
json_t *error_json(const char *request_id, const char *msg);

/* 1 when the service takes inference requests: every model's canary passed, the device is
 * healthy, and no SIGTERM arrived. */
int server_ready(struct server *s);

/* http.c: a query argument or a request header of rq (NULL when absent), for the handlers'
 * check_headers; and a non-negative decimal byte count (0, or −1 when text is not one). */
const char *http_query(struct request *rq, const char *key);
const char *http_header(struct request *rq, const char *key);
int http_parse_count(const char *text, long long *out);

/* openapi.c: this API as OpenAPI 3. */
const char *api_openapi_json(void);

/* http.c: start libmicrohttpd on cfg->host:cfg->port (s->port gets the bound port), stop accepting
 * new connections (drain), and stop for good. */
int http_start(struct server *s, char *err, size_t errlen);
void http_quiesce(struct server *s);
void http_stop(struct server *s);

#endif

