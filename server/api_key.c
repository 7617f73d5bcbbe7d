/* The API key file: the whole file, then one token checked byte by byte. */
#include "api_key.h"

#include "error_message.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int is_space(unsigned char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

char *api_key_parse(const unsigned char *bytes, size_t n, size_t *len, char *err, size_t errlen)
{
    size_t begin = 0, end = n;
    while (begin < end && is_space(bytes[begin]))
        begin++;
    while (end > begin && is_space(bytes[end - 1]))
        end--;
    if (begin == end) {
        error_set(err, errlen, 0, "the file holds no token");
        return NULL;
    }
    for (size_t i = begin; i < end; i++)
        if (bytes[i] < 0x21 || bytes[i] == 0x7f) {
            error_set(err, errlen, 0, "the token holds %s at byte %zu (one token, no spaces or line breaks)",
                      bytes[i] == 0 ? "a NUL" : is_space(bytes[i]) ? "whitespace" : "a control character", i);
            return NULL;
        }
    char *key = malloc(end - begin + 1);
    if (!key) {
        error_set(err, errlen, 0, "out of memory");
        return NULL;
    }
    memcpy(key, bytes + begin, end - begin);
    key[end - begin] = '\0';
    *len = end - begin;
    return key;
}

char *api_key_read(const char *path, size_t *len, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        error_set(err, errlen, 0, "%s", strerror(errno));
        return NULL;
    }
    unsigned char *buf = malloc(API_KEY_MAX_FILE_BYTES + 1);
    if (!buf) {
        fclose(f);
        error_set(err, errlen, 0, "out of memory");
        return NULL;
    }
    size_t n = fread(buf, 1, API_KEY_MAX_FILE_BYTES + 1, f);
    int bad = ferror(f);
    fclose(f);
    char *key = NULL;
    if (bad)
        error_set(err, errlen, 0, "read error");
    else if (n > API_KEY_MAX_FILE_BYTES)
        error_set(err, errlen, 0, "larger than %d bytes: not a key file", API_KEY_MAX_FILE_BYTES);
    else
        key = api_key_parse(buf, n, len, err, errlen);
    free(buf);
    return key;
}
