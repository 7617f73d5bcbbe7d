/* The worker pool: a mutex-protected singly linked FIFO and a condition variable. Tasks are small
 * heap nodes; the queue is bounded elsewhere (admission control counts images, not tasks). */
#include "workpool.h"

#include <pthread.h>
#include <stdlib.h>

struct task {
    void (*fn)(void *);
    void *arg;
    struct task *next;
};

struct workpool {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    struct task *head, *tail;
    int stopping;
    int n_threads;
    pthread_t *threads;
};

static void *worker_main(void *arg)
{
    struct workpool *p = arg;
    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (!p->head && !p->stopping)
            pthread_cond_wait(&p->wake, &p->lock);
        struct task *t = p->head;
        if (!t)
            break; /* stopping and drained */
        p->head = t->next;
        if (!p->head)
            p->tail = NULL;
        pthread_mutex_unlock(&p->lock);
        t->fn(t->arg);
        free(t);
        pthread_mutex_lock(&p->lock);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

int workpool_create(struct workpool **out, int n)
{
    struct workpool *p = calloc(1, sizeof *p);
    if (!p || n < 1)
        goto fail;
    p->threads = calloc((size_t)n, sizeof *p->threads);
    if (!p->threads)
        goto fail;
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->wake, NULL);
    for (; p->n_threads < n; p->n_threads++)
        if (pthread_create(&p->threads[p->n_threads], NULL, worker_main, p)) {
            workpool_destroy(p);
            return -1;
        }
    *out = p;
    return 0;
fail:
    if (p)
        free(p->threads);
    free(p);
    return -1;
}

int workpool_submit(struct workpool *p, void (*fn)(void *), void *arg)
{
    struct task *t = malloc(sizeof *t);
    if (!t)
        return -1;
    *t = (struct task){fn, arg, NULL};
    pthread_mutex_lock(&p->lock);
    if (p->stopping) {
        pthread_mutex_unlock(&p->lock);
        free(t);
        return -1;
    }
    if (p->tail)
        p->tail->next = t;
    else
        p->head = t;
    p->tail = t;
    pthread_cond_signal(&p->wake);
    pthread_mutex_unlock(&p->lock);
    return 0;
}

void workpool_shutdown(struct workpool *p)
{
    pthread_mutex_lock(&p->lock);
    int joined = p->stopping;
    p->stopping = 1;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);
    if (joined)
        return;
    for (int i = 0; i < p->n_threads; i++)
        pthread_join(p->threads[i], NULL);
}

void workpool_destroy(struct workpool *p)
{
    if (!p)
        return;
    workpool_shutdown(p);
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->wake);
    free(p->threads);
    free(p);
}
