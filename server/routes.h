/* Every endpoint stopcald serves, one row each (routes.c): its method, its path pattern (which is
 * also its "endpoint" label in the metrics), whether it needs the API key, and its handler. Adding
 * an endpoint is one row there and one handler (api_v1.c, api_v2.c, api_meta.c, api_triton.c). */
#ifndef STOPCAL_SERVER_ROUTES_H
#define STOPCAL_SERVER_ROUTES_H

#include <jansson.h>
#include <stddef.h>

struct server;
struct request;
struct job;
struct failure;

/* A GET answer, built on the HTTP thread: a JSON document, or text (malloc'd) of a media type. */
struct api_answer {
    json_t *doc;
    char *text;
    size_t len;
    const char *type;
};

/* What an endpoint does. GET endpoints set get; POST endpoints that infer the rest; small POST
 * endpoints (a JSON body of at most 64 KiB, answered on the HTTP thread) post and media_types. */
struct api_handler {
    int (*get)(struct server *s, struct request *rq, struct api_answer *out); /* → HTTP status */
    int (*post)(struct server *s, struct request *rq, struct api_answer *out); /* rq->body is in */
    int triton_stats; /* its failures count in the model view's Triton statistics (triton.h) */
    /* Content-Types a body may have (NULL-terminated; "" stands for none sent), and the advice a
     * 415 answer gives. */
    const char *const *media_types;
    const char *media_hint;
    /* Checks of the query and headers before the body is read (http_query, http_header); 0, or −1
     * with the answer in f. May be NULL. */
    int (*check_headers)(struct request *rq, struct failure *f);
    /* The body into images (a worker thread); 0, or −1 with the answer in f. */
    int (*parse)(struct job *j, struct failure *f);
    /* The answer once every image is scored (the inference thread): calls request_finish. */
    void (*answer)(struct job *j);
};

struct route {
    const char *method;  /* "GET" (HEAD answered alike) or "POST" */
    const char *pattern; /* "/v2/models/{model}/versions/{version}/infer": {model} takes one or more
                          * segments (model names may hold '/'), {version} one */
    int open;            /* answered without the API key (probes) */
    int query_model;     /* ?model= names the model */
    const struct api_handler *handler;
};

/* The route for method and path. {model} and {version} are copied into model / version ("" when
 * the pattern has none). NULL when no route serves this path with this method: then *allow lists
 * the methods that path does take ("" when the path is unknown, a 404). */
const struct route *routes_match(const char *method, const char *path, char *model, size_t model_len,
                                 char *version, size_t version_len, char *allow, size_t allow_len);

/* The table, for the metrics labels and the OpenAPI check: index i < routes_count(). */
int routes_count(void);
const struct route *routes_at(int i);
/* r's index; routes_count() (the "other" label) for NULL. */
int routes_index(const struct route *r);

#endif
