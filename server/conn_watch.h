/* Deadlines libmicrohttpd 0.9.75 does not have. Its connection timeout restarts on every byte, so a
 * client sending headers at 1 byte/s, or a body at a trickle, holds a connection (and the body's
 * memory) for ever. conn_watch keeps one entry per open connection (created and removed from
 * MHD's connection notifications) saying what the connection is waiting for and until when; a
 * thread sweeps the entries every 100 ms and shuts down the socket of each one past its deadline
 * (shutdown(2), not close: the descriptor stays libmicrohttpd's, whose next read then sees the end
 * of the stream and closes the connection through its usual path, completion callback included).
 * An entry is removed under the same lock before libmicrohttpd closes the descriptor, so the sweep
 * never touches a descriptor that has been reused. */
#ifndef STOPCAL_SERVER_CONN_WATCH_H
#define STOPCAL_SERVER_CONN_WATCH_H

struct conn_watch;
struct conn_watch_entry;

/* Start the sweeping thread; headers must arrive within header_timeout_s of the connection opening
 * or of the previous answer. Returns 0, or −1 when the thread cannot start. */
int conn_watch_start(struct conn_watch **w, double header_timeout_s);
void conn_watch_stop(struct conn_watch *w);

/* A new connection on socket fd: waiting for headers from now. NULL when out of memory (the
 * connection is then not watched). */
struct conn_watch_entry *conn_watch_add(struct conn_watch *w, int fd);
void conn_watch_remove(struct conn_watch *w, struct conn_watch_entry *e);

/* What the connection waits for now: a request's headers (from now), a body (until the monotonic
 * time deadline), or nothing the client controls (the server is working or answering). Each
 * accepts e == NULL. */
void conn_watch_headers(struct conn_watch *w, struct conn_watch_entry *e);
void conn_watch_body(struct conn_watch *w, struct conn_watch_entry *e, double deadline);
void conn_watch_busy(struct conn_watch *w, struct conn_watch_entry *e);

/* "header_timeout" or "body_timeout" once the sweep has cut the connection, else NULL. */
const char *conn_watch_verdict(struct conn_watch *w, struct conn_watch_entry *e);

/* Connections cut so far, by reason. */
unsigned long long conn_watch_cut(struct conn_watch *w, int body);

#endif
