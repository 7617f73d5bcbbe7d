/* The flag table: one row per option with its environment variable, type, bounds and help text.
 * The environment is applied first, then argv, so the command line wins (ARCHITECTURE.md §6). */
#include "config.h"
#include "error_message.h"

#include "model_names.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

enum opt_kind { OPT_INT, OPT_SIZE, OPT_STR, OPT_MODEL, OPT_ALIAS, OPT_HELP, OPT_VERSION, OPT_HEALTHCHECK };

struct opt_spec {
    const char *name;
    const char *env;
    enum opt_kind kind;
    size_t offset;  /* into struct server_config */
    size_t str_len; /* OPT_STR: the field's size */
    long long lo, hi;
    const char *arg;
    const char *help;
};

#define OFF(f) offsetof(struct server_config, f)
#define STR(f) OFF(f), sizeof(((struct server_config *)0)->f)
#define GIB (1LL << 30)

static const struct opt_spec opts[] = {
    {"model", "STOPCAL_MODEL", OPT_MODEL, 0, 0, 0, 0, "[NAME=]FILE",
     "serve this model (repeatable; STOPCAL_MODEL takes a comma-separated list);\n"
     "default: " STOPCAL_DEFAULT_MODEL_PATH},
    {"alias", "STOPCAL_ALIAS", OPT_ALIAS, 0, 0, 0, 0, "ALIAS=NAME",
     "requests may name the model NAME as ALIAS too, e.g. as a pipeline names it\n"
     "(surf/dino_big_...=my-model; repeatable; STOPCAL_ALIAS takes a comma-separated list)"},
    {"default-model", "STOPCAL_DEFAULT_MODEL", OPT_STR, STR(default_model), 0, 0, "NAME",
     "model used when a request names none (default: the first --model)"},
    {"host", "STOPCAL_HOST", OPT_STR, STR(host), 0, 0, "ADDR", "address to listen on (default 0.0.0.0)"},
    {"port", "STOPCAL_PORT", OPT_INT, OFF(port), 0, 0, 65535, "N", "TCP port; 0 picks a free one (default 8080)"},
    {"grpc-port", "STOPCAL_GRPC_PORT", OPT_INT, OFF(grpc_port), 0, -1, 65535, "N",
     "also serve the Open Inference Protocol v2 over gRPC on this port; 0 picks a free one\n"
     "(default -1: off)"},
    {"device", "STOPCAL_DEVICE", OPT_STR, STR(device), 0, 0, "auto|cpu|cuda:N",
     "compute device; auto tries CUDA when built in, else CPU (default auto)"},
    {"precision", "STOPCAL_PRECISION", OPT_STR, STR(precision), 0, 0, "fp32|bf16|auto",
     "what the forward pass computes in: fp32 (the CPU's default; parity with the fp32\n"
     "reference), bf16 (CPUs with AVX512_BF16; refused elsewhere), auto (bf16 where it runs,\n"
     "is the faster (AMD; Intel stays fp32) and the model allows it, else fp32); default: the model file's runtime.precision, else\n"
     "the device's own (CPU fp32, CUDA bf16, which cannot run fp32)"},
    {"threads", "STOPCAL_THREADS", OPT_INT, OFF(threads), 0, 0, 4096, "N",
     "compute (BLAS/OpenMP) threads; 0 = from the CPUs this process may use"},
    {"workers", "STOPCAL_WORKERS", OPT_INT, OFF(workers), 0, 0, 4096, "N",
     "preprocessing worker threads; 0 = from the CPUs this process may use"},
    {"http-threads", "STOPCAL_HTTP_THREADS", OPT_INT, OFF(http_threads), 0, 1, 64, "N",
     "HTTP I/O threads (default 2)"},
    {"max-batch", "STOPCAL_MAX_BATCH", OPT_INT, OFF(max_batch), 0, 1, 256, "N",
     "most images in one forward pass (default 8)"},
    {"max-delay-ms", "STOPCAL_MAX_DELAY_MS", OPT_INT, OFF(max_delay_ms), 0, 0, 10000, "MS",
     "how long a partial batch may wait for more images while others are arriving (default 5)"},
    {"max-queue", "STOPCAL_MAX_QUEUE", OPT_INT, OFF(max_queue), 0, 1, 1 << 20, "N",
     "images waiting for the batcher before requests get 503 (default 64)"},
    {"max-body-bytes", "STOPCAL_MAX_BODY_BYTES", OPT_SIZE, OFF(max_body_bytes), 0, 1, 64 * GIB, "SIZE",
     "largest request body, suffixes k/M/G (default 256M)"},
    {"max-images", "STOPCAL_MAX_IMAGES", OPT_INT, OFF(max_images), 0, 1, 4096, "N",
     "most images in one request (default 16)"},
    {"max-image-pixels", "STOPCAL_MAX_IMAGE_PIXELS", OPT_SIZE, OFF(max_image_pixels), 0, 1, 1LL << 40, "N",
     "largest decoded FITS image in pixels (default 67108864 = 8192²)"},
    {"memory-budget", "STOPCAL_MEMORY_BUDGET", OPT_SIZE, OFF(memory_budget_bytes), 0, 1 << 20, 1LL << 42,
     "SIZE", "bytes of bodies, decoded images and tensors in flight before 503 (default 2G)"},
    {"max-connections", "STOPCAL_MAX_CONNECTIONS", OPT_INT, OFF(max_connections), 0, 1, 1 << 16, "N",
     "open connections at most (default 256)"},
    {"connection-timeout", "STOPCAL_CONNECTION_TIMEOUT", OPT_INT, OFF(connection_timeout_s), 0, 1, 86400,
     "S", "drop a connection idle or stalled this many seconds (default 30)"},
    {"header-timeout-ms", "STOPCAL_HEADER_TIMEOUT_MS", OPT_INT, OFF(header_timeout_ms), 0, 1, 86400000, "MS",
     "a request's headers must arrive within this long of the connection opening or of the\n"
     "previous answer, else the connection is cut (slow clients; idle keep-alive) (default 10000);\n"
     "a body must arrive before the request's deadline (--request-timeout-ms)"},
    {"request-timeout-ms", "STOPCAL_REQUEST_TIMEOUT_MS", OPT_INT, OFF(request_timeout_ms), 0, 1, 86400000,
     "MS", "deadline per request; past it the answer is 504 (default 60000);\n"
           "a client may ask for less with the X-Request-Timeout-Ms header"},
    {"api-key-file", "STOPCAL_API_KEY_FILE", OPT_STR, STR(api_key_file), 0, 0, "FILE",
     "require 'Authorization: Bearer <token>' with the token in FILE (health stays open)"},
    {"drain-grace-ms", "STOPCAL_DRAIN_GRACE_MS", OPT_INT, OFF(drain_grace_ms), 0, 0, 600000, "MS",
     "after SIGTERM, report not-ready but keep serving this long (default 5000)"},
    {"drain-timeout-ms", "STOPCAL_DRAIN_TIMEOUT_MS", OPT_INT, OFF(drain_timeout_ms), 0, 0, 3600000, "MS",
     "then wait at most this long for in-flight requests (default 60000)"},
    {"debug-infer-delay-ms", "STOPCAL_DEBUG_INFER_DELAY_MS", OPT_INT, OFF(debug_infer_delay_ms), 0, 0,
     60000, "MS", "tests only: sleep this long before every forward pass"},
    {"healthcheck", NULL, OPT_HEALTHCHECK, 0, 0, 0, 0, NULL,
     "probe the stopcald listening on 127.0.0.1:--port and exit 0 when it is ready, 1 when not\n"
     "(a container HEALTHCHECK that needs no curl)"},
    {"help", NULL, OPT_HELP, 0, 0, 0, 0, NULL, "print this help and exit"},
    {"version", NULL, OPT_VERSION, 0, 0, 0, 0, NULL, "print the version and exit"},
};
#define N_OPTS (sizeof opts / sizeof opts[0])

void config_usage(FILE *to)
{
    fputs("usage: stopcald [--model [NAME=]FILE]... [--port N] [--device auto|cpu|cuda:N] [options]\n"
          "Serves the stop/continue classifier over HTTP: POST /v1/predict (FITS), the Open Inference\n"
          "Protocol v2 under /v2, Prometheus metrics at /metrics, this API at /v1/openapi.json.\n\n",
          to);
    for (size_t i = 0; i < N_OPTS; i++) {
        char left[64];
        snprintf(left, sizeof left, "--%s%s%s", opts[i].name, opts[i].arg ? " " : "",
                 opts[i].arg ? opts[i].arg : "");
        fprintf(to, "  %-34s ", left);
        for (const char *p = opts[i].help; *p; p++) {
            fputc(*p, to);
            if (*p == '\n')
                fprintf(to, "  %-34s ", "");
        }
        if (opts[i].env)
            fprintf(to, " [%s]", opts[i].env);
        fputc('\n', to);
    }
    fputs("\nSignals: SIGTERM/SIGINT drain (not-ready, grace, finish in-flight work, exit 0).\n", to);
}

/* "123", "64k", "256M", "2G" (powers of 1024). */
static int parse_size(const char *text, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (errno || end == text || v < 0)
        return -1;
    long long mul = 1;
    switch (tolower((unsigned char)*end)) {
    case 0: break;
    case 'k': mul = 1LL << 10; end++; break;
    case 'm': mul = 1LL << 20; end++; break;
    case 'g': mul = 1LL << 30; end++; break;
    default: return -1;
    }
    if ((*end == 'b' || *end == 'B') && mul > 1)
        end++;
    if (*end || v > (1LL << 50) / mul)
        return -1;
    *out = v * mul;
    return 0;
}

static int add_model(struct server_config *c, const char *spec, char *err, size_t errlen)
{
    if (c->n_models >= CONFIG_MAX_MODELS)
        return error_set(err, errlen, -1, "--model: at most %d models", CONFIG_MAX_MODELS);
    struct config_model *m = &c->models[c->n_models];
    memset(m, 0, sizeof *m);
    const char *eq = strchr(spec, '=');
    const char *path = spec;
    if (eq) {
        size_t n = (size_t)(eq - spec);
        if (n == 0 || n >= sizeof m->name)
            return error_set(err, errlen, -1, "--model %s: NAME must be 1 to %zu characters", spec, sizeof m->name - 1);
        memcpy(m->name, spec, n);
        char why[256];
        if (model_name_check(m->name, why, sizeof why))
            return error_set(err, errlen, -1, "--model %s: NAME %s", spec, why);
        path = eq + 1;
    }
    if (!*path || strlen(path) >= sizeof m->path)
        return error_set(err, errlen, -1, "--model %s: expected [NAME=]FILE", spec);
    snprintf(m->path, sizeof m->path, "%s", path);
    c->n_models++;
    return 0;
}

static int add_alias(struct server_config *c, const char *spec, char *err, size_t errlen)
{
    if (c->n_aliases >= CONFIG_MAX_ALIASES)
        return error_set(err, errlen, -1, "--alias: at most %d aliases", CONFIG_MAX_ALIASES);
    struct config_alias *a = &c->aliases[c->n_aliases];
    const char *eq = strchr(spec, '=');
    char why[256];
    if (!eq || eq == spec || !eq[1] || (size_t)(eq - spec) >= sizeof a->alias || strlen(eq + 1) >= sizeof a->target)
        return error_set(err, errlen, -1, "--alias %s: expected ALIAS=NAME, each 1 to %zu characters", spec,
                    sizeof a->alias - 1);
    memcpy(a->alias, spec, (size_t)(eq - spec));
    a->alias[eq - spec] = 0;
    snprintf(a->target, sizeof a->target, "%s", eq + 1);
    if (model_name_check(a->alias, why, sizeof why))
        return error_set(err, errlen, -1, "--alias %s: ALIAS %s", spec, why);
    c->n_aliases++;
    return 0;
}

static int apply(struct server_config *c, const struct opt_spec *o, const char *value, const char *source,
                 char *err, size_t errlen)
{
    char *base = (char *)c;
    switch (o->kind) {
    case OPT_INT: {
        char *end;
        errno = 0;
        long long v = strtoll(value, &end, 10);
        if (errno || end == value || *end || v < o->lo || v > o->hi)
            return error_set(err, errlen, -1, "%s %s: expected an integer in [%lld, %lld]", source, value, o->lo, o->hi);
        *(int *)(base + o->offset) = (int)v;
        return 0;
    }
    case OPT_SIZE: {
        long long v;
        if (parse_size(value, &v) || v < o->lo || v > o->hi)
            return error_set(err, errlen, -1, "%s %s: expected a size in [%lld, %lld] bytes (suffix k, M or G)", source,
                        value, o->lo, o->hi);
        *(long long *)(base + o->offset) = v;
        return 0;
    }
    case OPT_STR:
        if (strlen(value) >= o->str_len)
            return error_set(err, errlen, -1, "%s: value too long", source);
        snprintf(base + o->offset, o->str_len, "%s", value);
        return 0;
    case OPT_MODEL: return add_model(c, value, err, errlen);
    case OPT_ALIAS: return add_alias(c, value, err, errlen);
    default: return 0;
    }
}

static int apply_env(struct server_config *c, char *err, size_t errlen)
{
    for (size_t i = 0; i < N_OPTS; i++) {
        const char *v = opts[i].env ? getenv(opts[i].env) : NULL;
        if (!v || !*v)
            continue;
        if (opts[i].kind == OPT_MODEL || opts[i].kind == OPT_ALIAS) {
            char list[8192];
            if (strlen(v) >= sizeof list)
                return error_set(err, errlen, -1, "%s: value too long", opts[i].env);
            snprintf(list, sizeof list, "%s", v);
            for (char *save = NULL, *tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
                if ((opts[i].kind == OPT_MODEL ? add_model : add_alias)(c, tok, err, errlen))
                    return -1;
            continue;
        }
        if (apply(c, &opts[i], v, opts[i].env, err, errlen))
            return -1;
    }
    return 0;
}

int config_parse(struct server_config *c, int argc, char **argv, char *err, size_t errlen)
{
    *c = (struct server_config){
        .port = 8080,
        .grpc_port = -1,
        .http_threads = 2,
        .max_batch = 8,
        .max_delay_ms = 5,
        .max_queue = 64,
        .max_body_bytes = 256LL << 20,
        .max_images = 16,
        .max_image_pixels = 8192LL * 8192,
        .memory_budget_bytes = 2 * GIB,
        .max_connections = 256,
        .connection_timeout_s = 30,
        .header_timeout_ms = 10000,
        .request_timeout_ms = 60000,
        .drain_grace_ms = 5000,
        .drain_timeout_ms = 60000,
    };
    snprintf(c->host, sizeof c->host, "0.0.0.0");
    snprintf(c->device, sizeof c->device, "auto");
    if (apply_env(c, err, errlen))
        return -1;

    struct option longopts[N_OPTS + 1];
    for (size_t i = 0; i < N_OPTS; i++)
        longopts[i] = (struct option){opts[i].name, opts[i].arg ? required_argument : no_argument, NULL, (int)i};
    longopts[N_OPTS] = (struct option){0, 0, 0, 0};
    int cli_models = 0, cli_aliases = 0, idx;
    optind = 1;
    opterr = 0;
    while ((idx = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        if (idx == '?' || idx < 0 || (size_t)idx >= N_OPTS)
            return error_set(err, errlen, -1, "unknown or incomplete option %s (see --help)", argv[optind - 1]);
        const struct opt_spec *o = &opts[idx];
        if (o->kind == OPT_HELP) {
            config_usage(stdout);
            return 1;
        }
        if (o->kind == OPT_VERSION) {
            printf("stopcald %s\n", STOPCAL_VERSION);
            return 1;
        }
        if (o->kind == OPT_HEALTHCHECK) {
            c->healthcheck = 1;
            continue;
        }
        if (o->kind == OPT_MODEL && !cli_models++)
            c->n_models = 0; /* the command line replaces STOPCAL_MODEL */
        if (o->kind == OPT_ALIAS && !cli_aliases++)
            c->n_aliases = 0; /* and STOPCAL_ALIAS */
        char source[80];
        snprintf(source, sizeof source, "--%s", o->name);
        if (apply(c, o, optarg, source, err, errlen))
            return -1;
    }
    if (optind < argc)
        return error_set(err, errlen, -1, "unexpected argument '%s' (models go with --model)", argv[optind]);
    if (c->n_models == 0)
        add_model(c, STOPCAL_DEFAULT_MODEL_PATH, err, errlen);
    if (c->max_images > c->max_queue)
        return error_set(err, errlen, -1, "--max-images %d exceeds --max-queue %d: such a request could never run",
                    c->max_images, c->max_queue);
    if (strcmp(c->device, "auto") && strcmp(c->device, "cpu") && strncmp(c->device, "cuda", 4))
        return error_set(err, errlen, -1, "--device %s: expected auto, cpu or cuda:N", c->device);
    if (c->precision[0] && strcmp(c->precision, "fp32") && strcmp(c->precision, "bf16") &&
        strcmp(c->precision, "auto"))
        return error_set(err, errlen, -1, "--precision %s: expected fp32, bf16 or auto", c->precision);
    return 0;
}
