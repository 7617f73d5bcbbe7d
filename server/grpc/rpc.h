/* The Open Inference Protocol v2 over gRPC (inference.GRPCInferenceService, Triton's
 * grpc_service.proto, compiled at build time with protoc-c): stopcald's second front door, beside
 * the HTTP one and onto the same batcher, limits, token, metrics and drain.
 *
 * rpc_server.c is the transport, on gRPC's C core: one completion-queue thread accepts calls,
 * reads each request message, checks the bearer token and hands the call to rpc_service.c; the
 * answer goes back from whichever thread finished the work (grpc_call_start_batch is thread-safe).
 * rpc_service.c answers the metadata, configuration, statistics and index RPCs on the spot;
 * rpc_infer.c runs ModelInfer through preprocessing workers and the batcher like a REST request. */
#ifndef STOPCAL_SERVER_GRPC_RPC_H
#define STOPCAL_SERVER_GRPC_RPC_H

#include "server.h"
#include "strbuf.h"

#include <grpc/grpc.h>
#include <grpc/status.h>
#include <stddef.h>

struct rpc_call;

/* Start the service on cfg->host:cfg->grpc_port (s->grpc_port gets the bound port). */
int rpc_start(struct server *s, char *err, size_t errlen);
/* Stop taking new calls; calls in progress go on (SIGTERM's drain). */
void rpc_quiesce(struct server *s);
/* Cancel what is left, stop the thread, free everything. */
void rpc_stop(struct server *s);
/* The gRPC request counters, for /metrics. */
void rpc_metrics_render(struct server *s, struct strbuf *out);

/* ---- between the transport and the service ------------------------------------------------------ */

enum rpc_method {
    RPC_SERVER_LIVE,
    RPC_SERVER_READY,
    RPC_MODEL_READY,
    RPC_SERVER_METADATA,
    RPC_MODEL_METADATA,
    RPC_MODEL_INFER,
    RPC_MODEL_CONFIG,
    RPC_MODEL_STATISTICS,
    RPC_REPOSITORY_INDEX,
    RPC_METHODS,
    RPC_UNKNOWN = RPC_METHODS
};

const char *rpc_method_name(enum rpc_method m);

/* What the service sees of a call. */
struct rpc_request {
    struct server *srv;
    struct rpc_call *call;
    enum rpc_method method;
    const unsigned char *msg; /* the serialized request message */
    size_t msg_len;
    char request_id[72];
    double t_arrival, deadline; /* CLOCK_MONOTONIC seconds */
    /* set by the service, for the log line */
    char model[160];
    int images;
};

/* The service: answer req with rpc_answer() or rpc_fail(), now or later from any thread. */
void rpc_service_dispatch(struct rpc_request *req);

/* Send the serialized response (taken, malloc'd) with status OK. */
void rpc_answer(struct rpc_request *req, unsigned char *msg, size_t len);
/* Send an error status with its message. */
void rpc_fail(struct rpc_request *req, grpc_status_code code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* The gRPC status for a REST status of the same meaning (400 → INVALID_ARGUMENT, 503 → UNAVAILABLE…). */
grpc_status_code rpc_code_for_http(int http_status);

/* Hold bytes of the server's memory budget for the call (released when it ends): 0, or −1 when the
 * budget is spent. */
int rpc_reserve(struct rpc_request *req, long long bytes);
/* Count the call as images on their way to model (batcher_incoming), until it is answered. */
void rpc_announce(struct rpc_request *req, int model);
/* batcher_submit withdrew the announcement itself. */
void rpc_announce_taken(struct rpc_request *req);

/* rpc_infer.c */
void rpc_infer_start(struct rpc_request *req);

#endif
