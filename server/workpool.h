/* A fixed pool of worker threads running submitted tasks in FIFO order: request parsing and FITS
 * preprocessing run here, in parallel, off the HTTP threads and off the inference thread. */
#ifndef STOPCAL_SERVER_WORKPOOL_H
#define STOPCAL_SERVER_WORKPOOL_H

struct workpool;

/* Start n ≥ 1 threads. Returns 0, or -1 (nothing started). */
int workpool_create(struct workpool **out, int n);

/* Queue fn(arg). Returns 0, or -1 when the pool is stopping or out of memory (fn is then not run and
 * the caller still owns arg). */
int workpool_submit(struct workpool *p, void (*fn)(void *), void *arg);

/* Run every task already queued and join the threads; later submits fail. Idempotent. */
void workpool_shutdown(struct workpool *p);

/* workpool_shutdown, then free the pool. */
void workpool_destroy(struct workpool *p);

#endif
