/* strbuf: vsnprintf into a doubling buffer. */
#include "strbuf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int reserve(struct strbuf *b, size_t extra)
{
    if (b->oom)
        return -1;
    if (b->len + extra + 1 <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < b->len + extra + 1)
        cap *= 2;
    char *d = realloc(b->data, cap);
    if (!d) {
        b->oom = 1;
        return -1;
    }
    b->data = d;
    b->cap = cap;
    return 0;
}

void strbuf_printf(struct strbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || reserve(b, (size_t)n))
        return;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void strbuf_label(struct strbuf *b, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\')
            strbuf_printf(b, "\\\\");
        else if (*s == '"')
            strbuf_printf(b, "\\\"");
        else if (*s == '\n')
            strbuf_printf(b, "\\n");
        else
            strbuf_printf(b, "%c", *s);
    }
}

char *strbuf_take(struct strbuf *b, size_t *len)
{
    if (b->oom || reserve(b, 0)) {
        strbuf_free(b);
        return NULL;
    }
    b->data[b->len] = 0;
    char *d = b->data;
    if (len)
        *len = b->len;
    memset(b, 0, sizeof *b);
    return d;
}

void strbuf_free(struct strbuf *b)
{
    free(b->data);
    memset(b, 0, sizeof *b);
}
