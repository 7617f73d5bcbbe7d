/* The multipart scanner. Strict where ambiguity could mix two files up (every part needs its
 * delimiter, headers and a Content-Disposition), lenient about preamble and epilogue. */
#include "multipart.h"
#include "error_message.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

static int fail(char *err, size_t errlen, const char *msg)
{
    return error_set(err, errlen, -1, "multipart body: %s", msg);
}

/* Value of parameter `key` in a header value "a; k1=v1; k2=\"v2\"" into out. Returns 0 if found. */
static int header_param(const char *value, const char *key, char *out, size_t outlen)
{
    size_t klen = strlen(key);
    const char *p = value;
    while ((p = strchr(p, ';')) != NULL) {
        p++;
        while (*p == ' ' || *p == '\t')
            p++;
        if (strncasecmp(p, key, klen) != 0 || p[klen] != '=')
            continue;
        p += klen + 1;
        size_t n = 0;
        if (*p == '"') {
            p++;
            while (*p && *p != '"') {
                if (*p == '\\' && p[1])
                    p++;
                if (n + 1 < outlen)
                    out[n++] = *p;
                p++;
            }
        } else {
            while (*p && *p != ';' && *p != ' ' && *p != '\t') {
                if (n + 1 < outlen)
                    out[n++] = *p;
                p++;
            }
        }
        out[n] = 0;
        return 0;
    }
    return -1;
}

int multipart_boundary(const char *content_type, char *boundary, size_t len, char *err, size_t errlen)
{
    if (header_param(content_type, "boundary", boundary, len) || !boundary[0] || strlen(boundary) > 70) {
        error_set(err, errlen, -1, "Content-Type multipart/form-data needs a boundary parameter of 1 to 70 characters");
        return -1;
    }
    return 0;
}

static const unsigned char *find(const unsigned char *hay, size_t haylen, const char *needle, size_t nlen)
{
    return memmem(hay, haylen, needle, nlen);
}

int multipart_parse(const unsigned char *body, size_t len, const char *boundary, struct multipart_part *parts,
                    int max_parts, int *too_many, char *err, size_t errlen)
{
    char delim[80];
    int dlen = snprintf(delim, sizeof delim, "\r\n--%s", boundary);
    *too_many = 0;
    const unsigned char *end = body + len;
    /* The first delimiter may start the body without the leading CRLF. */
    const unsigned char *p;
    if (len >= (size_t)dlen - 2 && memcmp(body, delim + 2, (size_t)dlen - 2) == 0)
        p = body + dlen - 2;
    else if ((p = find(body, len, delim, (size_t)dlen)) != NULL)
        p += dlen;
    else
        return fail(err, errlen, "no boundary delimiter found");
    int n = 0;
    for (;;) {
        if (end - p >= 2 && p[0] == '-' && p[1] == '-')
            break; /* the close delimiter */
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        if (end - p < 2 || p[0] != '\r' || p[1] != '\n')
            return fail(err, errlen, "malformed delimiter line");
        p += 2;
        const unsigned char *hend = find(p, (size_t)(end - p), "\r\n\r\n", 4);
        const unsigned char *dstart;
        if (end - p >= 2 && p[0] == '\r' && p[1] == '\n') {
            hend = p; /* no headers at all */
            dstart = p + 2;
        } else if (!hend) {
            return fail(err, errlen, "part headers are not terminated");
        } else {
            dstart = hend + 4;
        }
        if (n == max_parts) {
            *too_many = 1;
            error_set(err, errlen, -1, "more than %d files in one request", max_parts);
            return -1;
        }
        struct multipart_part *part = &parts[n];
        memset(part, 0, sizeof *part);
        int disposition = 0;
        for (const unsigned char *line = p; line < hend;) {
            const unsigned char *eol = find(line, (size_t)(hend - line), "\r\n", 2);
            if (!eol)
                eol = hend;
            char h[1024];
            size_t hl = (size_t)(eol - line) < sizeof h - 1 ? (size_t)(eol - line) : sizeof h - 1;
            memcpy(h, line, hl);
            h[hl] = 0;
            if (strncasecmp(h, "Content-Disposition:", 20) == 0) {
                const char *v = h + 20;
                while (*v == ' ' || *v == '\t')
                    v++;
                if (strncasecmp(v, "form-data", 9) != 0)
                    return fail(err, errlen, "a part's Content-Disposition is not form-data");
                disposition = 1;
                header_param(v, "name", part->name, sizeof part->name);
                char fname[1024] = "";
                if (header_param(v, "filename", fname, sizeof fname) == 0) {
                    const char *base = fname;
                    for (const char *c = fname; *c; c++)
                        if (*c == '/' || *c == '\\')
                            base = c + 1;
                    if (!*base)
                        base = "file";
                    /* Refused rather than cut: a shortened name could make two files' results look alike. */
                    size_t n = strlen(base);
                    if (n >= sizeof part->filename)
                        return error_set(err, errlen, -1, "multipart body: a part's filename is %zu bytes long "
                                         "(at most %zu)", n, sizeof part->filename - 1);
                    memcpy(part->filename, base, n + 1);
                }
            }
            line = eol + 2;
        }
        if (!disposition)
            return fail(err, errlen, "a part has no Content-Disposition header");
        const unsigned char *next = find(dstart, (size_t)(end - dstart), delim, (size_t)dlen);
        if (!next)
            return fail(err, errlen, "the last part is not closed by the boundary");
        part->data = dstart;
        part->len = (size_t)(next - dstart);
        n++;
        p = next + dlen;
    }
    if (n == 0)
        return fail(err, errlen, "no parts");
    return n;
}
