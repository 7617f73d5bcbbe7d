/* libstopcal driven directly: one client shared by several threads (it must be thread-safe), each
 * thread alternating stopcal_predict_file and stopcal_predict_buffer on the same FITS file.
 * usage: test_libstopcal URL FILE THREADS REQUESTS_PER_THREAD [--local-preprocess]
 * Prints one line per request: "<continue_score %.17g> <name> <model sha256> <request id>"; exit 0
 * when every request succeeded. test_client.py checks the numbers against the server. */
#include "stopcal.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static stopcal_client *client;
static const char *path;
static unsigned char *bytes;
static size_t nbytes;
static int per_thread;
static pthread_mutex_t out_mu = PTHREAD_MUTEX_INITIALIZER;

static void *worker(void *arg)
{
    long failures = 0;
    (void)arg;
    for (int i = 0; i < per_thread; i++) {
        struct stopcal_response r;
        char err[512];
        int rc = i % 2 ? stopcal_predict_buffer(client, "buffer.fits", bytes, nbytes, &r, err, sizeof err)
                       : stopcal_predict_file(client, path, &r, err, sizeof err);
        pthread_mutex_lock(&out_mu);
        if (rc != STOPCAL_OK || r.n_results != 1) {
            fprintf(stderr, "request failed: %s: %s\n", stopcal_strerror(rc), err);
            failures++;
        } else
            printf("%.17g %s %s %s\n", r.results[0].continue_score, r.results[0].name, r.model_sha256, r.request_id);
        pthread_mutex_unlock(&out_mu);
        stopcal_response_free(&r);
    }
    return (void *)failures;
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: test_libstopcal URL FILE THREADS REQUESTS [--local-preprocess]\n");
        return 2;
    }
    path = argv[2];
    int threads = atoi(argv[3]);
    per_thread = atoi(argv[4]);
    if (threads < 1 || threads > 64 || per_thread < 1)
        return 2;
    FILE *f = fopen(path, "rb");
    if (!f)
        return 2;
    fseek(f, 0, SEEK_END);
    nbytes = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    bytes = malloc(nbytes);
    if (!bytes || fread(bytes, 1, nbytes, f) != nbytes)
        return 2;
    fclose(f);
    struct stopcal_options o;
    stopcal_options_default(&o);
    const char *urls[1] = {argv[1]};
    o.urls = urls;
    o.n_urls = 1;
    o.retries = 1;
    o.timeout_ms = 60000;
    o.local_preprocess = argc > 5 && !strcmp(argv[5], "--local-preprocess");
    char err[512];
    if (stopcal_client_new(&client, &o, err, sizeof err) != STOPCAL_OK) {
        fprintf(stderr, "stopcal_client_new: %s\n", err);
        return 2;
    }
    pthread_t t[64];
    long failures = 0;
    for (int i = 0; i < threads; i++)
        pthread_create(&t[i], NULL, worker, NULL);
    for (int i = 0; i < threads; i++) {
        void *ret;
        pthread_join(t[i], &ret);
        failures += (long)ret;
    }
    stopcal_client_free(client);
    free(bytes);
    return failures ? 1 : 0;
}
