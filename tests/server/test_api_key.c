/* The API key file reader (server/api_key.c): a token is used whole or refused, never cut short
 * (the first reader kept the first 4095 bytes of a longer one, and stopped at a NUL). */
#include "../check.h"

#include "api_key.h"

#include <stdio.h>
#include <string.h>

static char *read_bytes(const char *dir, const char *name, const void *bytes, size_t n, size_t *len, char *err,
                        size_t errlen)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL, "cannot write %s", path);
    if (!f)
        return NULL;
    CHECK(fwrite(bytes, 1, n, f) == n, "short write");
    fclose(f);
    err[0] = '\0';
    return api_key_read(path, len, err, errlen);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: test_api_key TMPDIR\n");
        return 2;
    }
    const char *dir = argv[1];
    char err[256];
    size_t len = 0;

    char *key = read_bytes(dir, "plain", "  s3cret-Token_42 \r\n\n", 21, &len, err, sizeof err);
    CHECK(key && strcmp(key, "s3cret-Token_42") == 0 && len == 15, "surrounding whitespace dropped: %s", err);
    free(key);

    static char long_token[20001];
    for (int i = 0; i < 20000; i++)
        long_token[i] = (char)('a' + i % 26);
    key = read_bytes(dir, "long", long_token, 20000, &len, err, sizeof err);
    CHECK(key && len == 20000 && memcmp(key, long_token, 20000) == 0, "a 20000-byte token is kept whole (%zu): %s",
          len, err);
    free(key);

    static const struct {
        const char *name, *bytes;
        size_t n;
        const char *why;
    } refused[] = {
        {"empty", "", 0, "no token"},
        {"blank", " \n\t\r\n", 5, "no token"},
        {"nul", "abc\0def\n", 8, "NUL"},
        {"two-lines", "first\nsecond\n", 13, "whitespace"},
        {"inner-space", "two words", 9, "whitespace"},
        {"control", "tok\x01" "en", 6, "control"},
    };
    for (size_t i = 0; i < sizeof refused / sizeof *refused; i++) {
        key = read_bytes(dir, refused[i].name, refused[i].bytes, refused[i].n, &len, err, sizeof err);
        CHECK(key == NULL && strstr(err, refused[i].why), "%s: refused saying '%s', got '%s'", refused[i].name,
              refused[i].why, key ? key : err);
        free(key);
    }

    err[0] = '\0';
    key = api_key_read("/nonexistent/stopcal-key", &len, err, sizeof err);
    CHECK(key == NULL && strstr(err, "No such file"), "a missing file: %s", err);
    return test_report("api_key");
}
