/* stopcald's configuration: every flag, its STOPCAL_* environment twin and its default, in one
 * table (config.c), so --help, the environment and the parser can never disagree. The command line
 * wins over the environment; the environment wins over the defaults. */
#ifndef STOPCAL_SERVER_CONFIG_H
#define STOPCAL_SERVER_CONFIG_H

#include <stddef.h>
#include <stdio.h>

#define CONFIG_MAX_MODELS 16
#define CONFIG_MAX_ALIASES 64

struct config_model {
    char name[128]; /* empty: take the model file's own name */
    char path[1024];
};

/* --alias ALIAS=NAME: requests may call the model NAME (a name or an alias) ALIAS too. */
struct config_alias {
    char alias[128];
    char target[128];
};

struct server_config {
    struct config_model models[CONFIG_MAX_MODELS];
    int n_models;
    struct config_alias aliases[CONFIG_MAX_ALIASES];
    int n_aliases;
    char default_model[128]; /* empty: the first --model */
    char host[256];
    int port;                 /* 0: an ephemeral port, printed in the "listening" log line */
    int grpc_port;            /* the OIP v2 gRPC service: −1 off, 0 an ephemeral port */
    int healthcheck;          /* --healthcheck: probe a running server on port, then exit */
    char device[64];          /* auto | cpu | cuda:N */
    char precision[8];        /* fp32 | bf16 | auto; "": not asked (the model's, else the device's) */
    int threads;              /* compute (BLAS/OpenMP) threads; 0: derived from the CPU budget */
    int workers;              /* preprocessing workers; 0: derived from the CPU budget */
    int http_threads;         /* libmicrohttpd polling threads */
    int max_batch;            /* images per forward pass */
    int max_delay_ms;         /* how long a partial batch may wait for more while the forward pass is busy */
    int max_queue;            /* images waiting for the batcher, all models together; then 503 */
    long long max_body_bytes; /* one request body */
    int max_images;           /* images per request */
    long long max_image_pixels;
    long long memory_budget_bytes; /* bodies + decoded images + tensors in flight; then 503 */
    int max_connections;
    int connection_timeout_s; /* idle or stalled connections are dropped after this */
    int header_timeout_ms;    /* headers must arrive within this of the connection or the last answer */
    int request_timeout_ms;   /* deadline from arrival; a request past it is answered 504 */
    char api_key_file[1024];
    int drain_grace_ms;       /* after SIGTERM: not-ready, still serving, for this long */
    int drain_timeout_ms;     /* then at most this long for in-flight work to finish */
    int debug_infer_delay_ms; /* tests only: sleep before each forward pass */
};

/* The compile-time default model path (ARCHITECTURE.md §6b: "with no --model, the default model"). */
#ifndef STOPCAL_DEFAULT_MODEL_PATH
#define STOPCAL_DEFAULT_MODEL_PATH "models/demo/stopcal-demo.safetensors"
#endif

/* Fill c from the environment and argv. Returns 0; 1 when --help or --version was printed (exit 0);
 * -1 with a one-line message in err (exit non-zero). */
int config_parse(struct server_config *c, int argc, char **argv, char *err, size_t errlen);

void config_usage(FILE *to);

#endif
