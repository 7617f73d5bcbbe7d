/* A growing text buffer for building responses (Prometheus text, multipart scans). */
#ifndef STOPCAL_SERVER_STRBUF_H
#define STOPCAL_SERVER_STRBUF_H

#include <stddef.h>

struct strbuf {
    char *data; /* NUL-terminated, owned; NULL until the first append */
    size_t len, cap;
    int oom;    /* an append failed: the text is incomplete */
};

void strbuf_printf(struct strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Append s as a Prometheus label value: backslash, double quote and newline escaped. */
void strbuf_label(struct strbuf *b, const char *s);
/* Hand the text to the caller (malloc'd, NUL-terminated) or NULL if any append failed; b is reset. */
char *strbuf_take(struct strbuf *b, size_t *len);
void strbuf_free(struct strbuf *b);

#endif
