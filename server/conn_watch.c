/* The header and body deadlines (see conn_watch.h for why they exist and how a connection is cut). */
#include "conn_watch.h"

#include "server.h"

#include <pthread.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>

enum watch_phase { WATCH_HEADERS, WATCH_BODY, WATCH_BUSY, WATCH_CUT };

struct conn_watch_entry {
    int fd;
    enum watch_phase phase;
    double deadline;
    const char *verdict;
    struct conn_watch_entry *prev, *next;
};

struct conn_watch {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    pthread_t thread;
    int stop;
    double header_timeout_s;
    struct conn_watch_entry *head;
    unsigned long long cut_headers, cut_body;
};

static void *sweep(void *arg)
{
    struct conn_watch *w = arg;
    pthread_mutex_lock(&w->lock);
    while (!w->stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 100 * 1000 * 1000;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&w->wake, &w->lock, &ts);
        double now = server_now();
        for (struct conn_watch_entry *e = w->head; e; e = e->next) {
            if ((e->phase != WATCH_HEADERS && e->phase != WATCH_BODY) || now <= e->deadline)
                continue;
            int body = e->phase == WATCH_BODY;
            e->verdict = body ? "body_timeout" : "header_timeout";
            e->phase = WATCH_CUT;
            if (body)
                w->cut_body++;
            else
                w->cut_headers++;
            shutdown(e->fd, SHUT_RDWR); /* failure means the peer is gone already: nothing to cut */
        }
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

int conn_watch_start(struct conn_watch **out, double header_timeout_s)
{
    struct conn_watch *w = calloc(1, sizeof *w);
    if (!w)
        return -1;
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->wake, NULL);
    w->header_timeout_s = header_timeout_s;
    if (pthread_create(&w->thread, NULL, sweep, w)) {
        pthread_cond_destroy(&w->wake);
        pthread_mutex_destroy(&w->lock);
        free(w);
        return -1;
    }
    *out = w;
    return 0;
}

void conn_watch_stop(struct conn_watch *w)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->lock);
    w->stop = 1;
    pthread_cond_signal(&w->wake);
    pthread_mutex_unlock(&w->lock);
    pthread_join(w->thread, NULL);
    while (w->head) { /* only when libmicrohttpd was stopped first and missed no notification */
        struct conn_watch_entry *e = w->head;
        w->head = e->next;
        free(e);
    }
    pthread_cond_destroy(&w->wake);
    pthread_mutex_destroy(&w->lock);
    free(w);
}

struct conn_watch_entry *conn_watch_add(struct conn_watch *w, int fd)
{
    struct conn_watch_entry *e = calloc(1, sizeof *e);
    if (!e)
        return NULL;
    e->fd = fd;
    e->phase = WATCH_HEADERS;
    e->deadline = server_now() + w->header_timeout_s;
    pthread_mutex_lock(&w->lock);
    e->next = w->head;
    if (w->head)
        w->head->prev = e;
    w->head = e;
    pthread_mutex_unlock(&w->lock);
    return e;
}

void conn_watch_remove(struct conn_watch *w, struct conn_watch_entry *e)
{
    if (!e)
        return;
    pthread_mutex_lock(&w->lock);
    if (e->prev)
        e->prev->next = e->next;
    else
        w->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    pthread_mutex_unlock(&w->lock);
    free(e);
}

static void set_phase(struct conn_watch *w, struct conn_watch_entry *e, enum watch_phase p, double deadline)
{
    if (!e)
        return;
    pthread_mutex_lock(&w->lock);
    if (e->phase != WATCH_CUT) {
        e->phase = p;
        e->deadline = deadline;
    }
    pthread_mutex_unlock(&w->lock);
}

void conn_watch_headers(struct conn_watch *w, struct conn_watch_entry *e)
{
    set_phase(w, e, WATCH_HEADERS, server_now() + w->header_timeout_s);
}

void conn_watch_body(struct conn_watch *w, struct conn_watch_entry *e, double deadline)
{
    set_phase(w, e, WATCH_BODY, deadline);
}

void conn_watch_busy(struct conn_watch *w, struct conn_watch_entry *e) { set_phase(w, e, WATCH_BUSY, 0); }

const char *conn_watch_verdict(struct conn_watch *w, struct conn_watch_entry *e)
{
    if (!e)
        return NULL;
    pthread_mutex_lock(&w->lock);
    const char *v = e->verdict;
    pthread_mutex_unlock(&w->lock);
    return v;
}

unsigned long long conn_watch_cut(struct conn_watch *w, int body)
{
    if (!w)
        return 0;
    pthread_mutex_lock(&w->lock);
    unsigned long long n = body ? w->cut_body : w->cut_headers;
    pthread_mutex_unlock(&w->lock);
    return n;
}
