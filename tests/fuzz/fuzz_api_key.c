/* libFuzzer target over the API key file: bytes → api_key_parse. An accepted token must be the
 * input with surrounding whitespace removed, exactly (never cut short), and hold no byte a bearer
 * token cannot; a refusal must say why. Built and run by run_fuzz.sh. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "api_key.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256];
    err[0] = '\0';
    size_t len = 0;
    char *key = api_key_parse(data, size, &len, err, sizeof err);
    if (!key) {
        if (err[0] == '\0')
            abort();
        return 0;
    }
    if (len == 0 || len > size || strlen(key) != len)
        abort();
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)key[i] <= ' ' || (unsigned char)key[i] == 0x7f)
            abort();
    /* The token is a substring of the input, and only whitespace surrounds it. */
    const uint8_t *at = NULL;
    for (size_t i = 0; i + len <= size && !at; i++)
        if (memcmp(data + i, key, len) == 0)
            at = data + i;
    if (!at)
        abort();
    for (const uint8_t *p = data; p < at; p++)
        if (!strchr(" \t\n\r\v\f", *p) || *p == 0)
            abort();
    for (const uint8_t *p = at + len; p < data + size; p++)
        if (!strchr(" \t\n\r\v\f", *p) || *p == 0)
            abort();
    free(key);
    return 0;
}
