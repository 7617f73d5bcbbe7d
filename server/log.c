/* The log line writer. Timestamps are wall-clock UTC with milliseconds, RFC 3339. */
#include "log.h"

#include "utf8.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

void log_event(const char *level, const char *msg, json_t *fields)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[96];
    snprintf(when, sizeof when, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ts.tv_nsec / 1000000));
    json_t *line = json_pack("{s:s, s:s, s:s}", "ts", when, "level", level, "msg", msg);
    if (line && fields)
        json_object_update(line, fields);
    json_decref(fields);
    char *text = line ? json_dumps(line, JSON_COMPACT | JSON_REAL_PRECISION(6)) : NULL;
    if (text) {
        flockfile(stderr);
        fputs(text, stderr);
        fputc('\n', stderr);
        funlockfile(stderr);
        free(text);
    } else {
        fprintf(stderr, "{\"level\":\"%s\",\"msg\":\"(out of memory while logging)\"}\n", level);
    }
    json_decref(line);
}

void log_msg(const char *level, const char *fmt, ...)
{
    char msg[1024], clean[3 * sizeof msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    utf8_sanitize(clean, sizeof clean, msg); /* messages quote untrusted text; jansson takes UTF-8 only */
    log_event(level, clean, NULL);
}
