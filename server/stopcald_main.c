/* stopcald: the HTTP/JSON inference service (ARCHITECTURE.md §6, §6b). main() owns the lifecycle: load the
 * models, size the threads from the CPUs this process may use, start the engine (whose canary makes
 * the service ready) and the HTTP server, then wait for SIGTERM/SIGINT and drain: not-ready at once,
 * keep serving for a grace period, stop accepting, finish the work in flight, exit 0. */
#include "api_key.h"
#include "config.h"
#include "batcher.h"
#include "healthcheck.h"
#include "log.h"
#include "model_names.h"
#include "server.h"
#include "threads.h"
#include "workpool.h"
#ifdef STOPCAL_HAVE_GRPC
#include "rpc.h"
#endif

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("stopcald: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

/* SIGTERM/SIGINT reach main through a pipe: libraries start threads of their own (BLAS, the CUDA
 * runtime) whose signal masks we do not control, so the handler may run on any thread. */
static int signal_pipe[2] = {-1, -1};

static void on_stop_signal(int sig)
{
    int saved = errno;
    unsigned char c = (unsigned char)sig;
    if (write(signal_pipe[1], &c, 1) < 0) {
        /* the pipe is full: a signal is already pending, which is all main needs to know */
    }
    errno = saved;
}

/* Wait up to ms (−1: for ever) for SIGTERM/SIGINT; returns 1 if one came. */
static int wait_signal(long ms)
{
    struct pollfd p = {.fd = signal_pipe[0], .events = POLLIN};
    int n;
    while ((n = poll(&p, 1, ms > INT32_MAX ? INT32_MAX : (int)ms)) < 0 && errno == EINTR)
        ;
    if (n <= 0)
        return 0;
    unsigned char c;
    return read(signal_pipe[0], &c, 1) == 1;
}

/* Poll until no request is in flight; a second signal cuts the wait short. */
static int wait_idle(struct server *s, long ms)
{
    for (long waited = 0; waited < ms; waited += 10) {
        if (atomic_load(&s->in_flight) == 0)
            return 1;
        if (wait_signal(10))
            return 0;
    }
    return atomic_load(&s->in_flight) == 0;
}

int main(int argc, char **argv)
{
    static struct server_config cfg;
    char err[1024];
    int rc = config_parse(&cfg, argc, argv, err, sizeof err);
    if (rc > 0)
        return 0;
    if (rc < 0)
        die("%s", err);
    if (cfg.healthcheck) {
        if (healthcheck_probe(cfg.port, 3000, err, sizeof err) == 0)
            return 0;
        fprintf(stderr, "stopcald: healthcheck: %s\n", err);
        return 1;
    }

    if (pipe2(signal_pipe, O_CLOEXEC | O_NONBLOCK))
        die("pipe: %s", strerror(errno));
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    static struct server srv;
    srv.cfg = &cfg;
    srv.id_salt = (unsigned long long)time(NULL) * 0x2545F4914F6CDD1DULL ^ (unsigned long long)getpid() << 32;

    /* BLAS/OpenMP threads and preprocessing workers share the CPUs this process may use. */
    const int cpus = threads_available_cpus();
    int workers = cfg.workers ? cfg.workers : (cpus >= 4 ? cpus / 4 : 1);
    int compute = cfg.threads ? cfg.threads : (cpus - workers > 1 ? cpus - workers : 1);
    if (cfg.workers && !cfg.threads)
        compute = cpus - workers > 1 ? cpus - workers : 1;
    if (compute + workers > cpus && cpus > 1)
        log_msg("warn", "%d compute + %d preprocessing threads oversubscribe the %d CPUs this process may use",
                compute, workers, cpus);

    struct batcher_options eo = {.max_batch = cfg.max_batch,
                                .max_delay_ms = cfg.max_delay_ms,
                                .max_queue = cfg.max_queue,
                                .threads = compute,
                                .device = cfg.device,
                                .precision = cfg.precision,
                                .debug_delay_ms = cfg.debug_infer_delay_ms};
    if (batcher_create(&srv.batcher, &eo, err, sizeof err))
        die("%s", err);
    const char *names[CONFIG_MAX_MODELS];
    int on_gpu = 0;
    for (int i = 0; i < cfg.n_models; i++) {
        struct stat st;
        if (stat(cfg.models[i].path, &st) != 0) {
            if (strcmp(cfg.models[i].path, STOPCAL_DEFAULT_MODEL_PATH) == 0)
                die("the default model %s does not exist; pass --model FILE or set STOPCAL_MODEL", cfg.models[i].path);
            die("model file %s: %s", cfg.models[i].path, strerror(errno));
        }
        if (batcher_load_model(srv.batcher, cfg.models[i].name, cfg.models[i].path, err, sizeof err) < 0)
            die("%s", err);
        names[i] = batcher_model(srv.batcher, i)->name;
        on_gpu |= strcmp(batcher_model(srv.batcher, i)->backend, "cpu") != 0;
    }
    /* With the forward pass on a GPU the host cores are free for preprocessing. */
    if (on_gpu && !cfg.workers)
        workers = cpus > 1 ? cpus - 1 : 1;
    if (model_aliases_apply(srv.batcher, &cfg, err, sizeof err))
        die("%s", err);
    srv.default_model = 0;
    if (cfg.default_model[0] && (srv.default_model = batcher_find_model(srv.batcher, cfg.default_model)) < 0)
        die("--default-model %s: no model of that name is loaded", cfg.default_model);
    srv.compute_threads = compute;
    srv.workers = workers;
    if (cfg.api_key_file[0]) {
        char why[256];
        srv.api_key = api_key_read(cfg.api_key_file, &srv.api_key_len, why, sizeof why);
        if (!srv.api_key)
            die("--api-key-file %s: %s", cfg.api_key_file, why);
    }
    srv.metrics = metrics_create(cfg.n_models, names);
    if (!srv.metrics)
        die("out of memory for the metrics");
    batcher_set_metrics(srv.batcher, srv.metrics);

    if (workpool_create(&srv.pool, workers))
        die("cannot start %d preprocessing workers", workers);
    if (batcher_start(srv.batcher, err, sizeof err))
        die("%s", err);
    if (http_start(&srv, err, sizeof err)) {
        /* The inference thread is running its canary passes: join it before exit() runs the
         * BLAS/OpenMP destructors under it (a taken port used to end in SIGSEGV). */
        batcher_stop(srv.batcher);
        die("%s", err);
    }
    if (cfg.grpc_port >= 0) {
#ifdef STOPCAL_HAVE_GRPC
        if (rpc_start(&srv, err, sizeof err)) {
            http_stop(&srv);
            batcher_stop(srv.batcher);
            die("%s", err);
        }
#else
        http_stop(&srv);
        batcher_stop(srv.batcher);
        die("--grpc-port: this stopcald was built without gRPC (libgrpc-dev, libprotobuf-c-dev and "
            "protobuf-c-compiler were missing when it was configured)");
#endif
    }
    json_t *models = json_array();
    for (int i = 0; i < cfg.n_models; i++)
        json_array_append_new(models, json_string(names[i]));
    log_event("info", "listening",
              json_pack("{s:s, s:i, s:i, s:o, s:s, s:s, s:i, s:i, s:i, s:i, s:i}", "host", cfg.host, "port",
                        srv.port, "grpc_port", srv.rpc ? srv.grpc_port : -1, "models", models, "default_model", names[srv.default_model], "device", cfg.device, "cpus",
                        cpus, "compute_threads", compute, "preprocess_workers", workers, "max_batch", cfg.max_batch,
                        "max_queue", cfg.max_queue));

    while (!wait_signal(-1))
        ;
    atomic_store(&srv.not_ready, 1);
    log_event("info", "draining: not ready, still serving",
              json_pack("{s:i, s:i}", "grace_ms", cfg.drain_grace_ms, "in_flight", atomic_load(&srv.in_flight)));
    int hurry = wait_signal(cfg.drain_grace_ms);
    atomic_store(&srv.draining, 1);
    http_quiesce(&srv);
#ifdef STOPCAL_HAVE_GRPC
    rpc_quiesce(&srv);
#endif
    int idle = !hurry && wait_idle(&srv, cfg.drain_timeout_ms);
    if (!idle)
        log_msg("warn", "draining: %d requests still in flight; failing them", atomic_load(&srv.in_flight));
    batcher_stop(srv.batcher);
    workpool_shutdown(srv.pool);
    wait_idle(&srv, 2000);
    http_stop(&srv);
#ifdef STOPCAL_HAVE_GRPC
    rpc_stop(&srv);
#endif
    workpool_destroy(srv.pool);
    batcher_destroy(srv.batcher);
    metrics_destroy(srv.metrics);
    free(srv.api_key);
    log_msg("info", "stopped");
    return 0;
}
