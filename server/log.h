/* Structured logging: one JSON object per line on stderr, so a log shipper needs no parser of ours.
 * Lines from different threads never interleave (one fputs under stdio's lock). */
#ifndef STOPCAL_SERVER_LOG_H
#define STOPCAL_SERVER_LOG_H

#include <jansson.h>

/* {"ts", "level", "msg", ...fields}: fields is stolen (may be NULL). */
void log_event(const char *level, const char *msg, json_t *fields);

/* printf-style convenience for a plain message. */
void log_msg(const char *level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
