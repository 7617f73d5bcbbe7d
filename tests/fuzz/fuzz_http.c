/* libFuzzer target over stopcald's request handling as a client reaches it: the input is raw bytes
 * on one TCP connection to the real server (libmicrohttpd, http.c's header, query and limit
 * decisions, the v1 multipart and v2 JSON + binary-extension parsing, preprocessing and the
 * batcher on a tiny CPU model), started once in this process on a loopback port. A crash, sanitizer
 * report or (at exit) leak is a finding; so is a server that stops answering: every input is
 * followed by a health probe that must get 200. Built and run by run_fuzz.sh with
 * STOPCAL_FUZZ_MODEL naming the model file. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "config.h"
#include "batcher.h"
#include "metrics.h"
#include "server.h"
#include "workpool.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct server_config cfg;
static struct server srv;

static void die(const char *what, const char *err)
{
    fprintf(stderr, "fuzz_http: %s: %s\n", what, err);
    exit(1);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    const char *model = getenv("STOPCAL_FUZZ_MODEL");
    if (!model)
        die("setup", "STOPCAL_FUZZ_MODEL is not set");
    char spec[1100];
    snprintf(spec, sizeof spec, "m=%s", model);
    /* Small limits, so the ceilings are inside what the fuzzer reaches. */
    char *args[] = {"stopcald", "--host", "127.0.0.1", "--port", "0", "--model", spec, "--threads", "1",
                    "--workers", "1", "--max-body-bytes", "256k", "--max-images", "4", "--max-queue", "8",
                    "--memory-budget", "64M", "--connection-timeout", "2", "--request-timeout-ms", "3000",
                    NULL};
    char err[1024];
    if (config_parse(&cfg, (int)(sizeof args / sizeof *args) - 1, args, err, sizeof err) != 0)
        die("config", err);
    srv.cfg = &cfg;
    struct batcher_options eo = {.max_batch = 4, .max_delay_ms = 1, .max_queue = cfg.max_queue, .threads = 1,
                                 .device = "cpu"};
    if (batcher_create(&srv.batcher, &eo, err, sizeof err) ||
        batcher_load_model(srv.batcher, "m", model, err, sizeof err) < 0)
        die("batcher", err);
    const char *names[] = {batcher_model(srv.batcher, 0)->name};
    srv.metrics = metrics_create(1, names);
    if (!srv.metrics)
        die("metrics", "out of memory");
    batcher_set_metrics(srv.batcher, srv.metrics);
    srv.compute_threads = 1;
    srv.workers = 1;
    if (workpool_create(&srv.pool, 1))
        die("workpool", "cannot start");
    if (batcher_start(srv.batcher, err, sizeof err) || http_start(&srv, err, sizeof err))
        die("start", err);
    for (int i = 0; i < 600 && !batcher_ready(srv.batcher); i++)
        usleep(10000);
    if (!batcher_ready(srv.batcher))
        die("start", "the batcher did not become ready");
    return 0;
}

/* Send bytes on a new connection, half-close, and read whatever comes back until the server closes
 * (or timeout_ms of silence). Returns the bytes read into buf (at most cap), or -1 on a socket error. */
static long exchange(const void *bytes, size_t n, char *buf, size_t cap, int timeout_ms)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)srv.port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    size_t sent = 0;
    while (sent < n) {
        ssize_t w = send(fd, (const char *)bytes + sent, n - sent, MSG_NOSIGNAL);
        if (w <= 0)
            break; /* the server may close early on a refused request: fine */
        sent += (size_t)w;
    }
    shutdown(fd, SHUT_WR);
    size_t got = 0;
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, timeout_ms) <= 0)
            break;
        char sink[4096];
        char *dst = got < cap ? buf + got : sink;
        size_t room = got < cap ? cap - got : sizeof sink;
        ssize_t r = recv(fd, dst, room, 0);
        if (r <= 0)
            break;
        if (got < cap)
            got += (size_t)r;
    }
    close(fd);
    return (long)got;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char buf[65536];
    /* 300 ms of silence ends the exchange: an answer to a complete request comes well within it (a
     * tiny model), and an incomplete one would otherwise hold each run for the connection timeout. */
    if (exchange(data, size, buf, sizeof buf, 300) < 0)
        abort();
    /* Whatever the input did, the next client is still served. */
    static const char probe[] = "GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    long n = exchange(probe, sizeof probe - 1, buf, sizeof buf - 1, 10000);
    if (n < 12 || memcmp(buf, "HTTP/1.1 200", 12) != 0) {
        fprintf(stderr, "fuzz_http: the server no longer answers a health probe after this input\n");
        abort();
    }
    return 0;
}
