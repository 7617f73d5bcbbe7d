/* The API key file: the whole file, then one token checked byte by byte. */
#include "api_key.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static char *fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return NULL;
}

static int is_space(unsigned char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

char *api_key_parse(const unsigned char *bytes, size_t n, size_t *len, char *err, size_t errlen)
{
    size_t begin = 0, end = n;
    while (begin < end && is_space(bytes[begin]))
        begin++;
    while (end > begin && is_space(bytes[end - 1]))
        end--;
    if (begin == end)
        return fail(err, errlen, "the file holds no token");
    for (size_t i = begin; i < end; i++)
        if (bytes[i] < 0x21 || bytes[i] == 0x7f)
            return fail(err, errlen, "the token holds %s at byte %zu (one token, no spaces or line breaks)",
                        bytes[i] == 0 ? "a NUL" : is_space(bytes[i]) ? "whitespace" : "a control character", i);
    char *key = malloc(end - begin + 1);
    if (!key)
        return fail(err, errlen, "out of memory");
    memcpy(key, bytes + begin, end - begin);
    key[end - begin] = '\0';
    *len = end - begin;
    return key;
}

char *api_key_read(const char *path, size_t *len, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return fail(err, errlen, "%s", strerror(errno));
    unsigned char *buf = malloc(API_KEY_MAX_FILE_BYTES + 1);
    if (!buf) {
        fclose(f);
        return fail(err, errlen, "out of memory");
    }
    size_t n = fread(buf, 1, API_KEY_MAX_FILE_BYTES + 1, f);
    int bad = ferror(f);
    fclose(f);
    char *key = NULL;
    if (bad)
        fail(err, errlen, "read error");
    else if (n > API_KEY_MAX_FILE_BYTES)
        fail(err, errlen, "larger than %d bytes: not a key file", API_KEY_MAX_FILE_BYTES);
    else
        key = api_key_parse(buf, n, len, err, errlen);
    free(buf);
    return key;
}
