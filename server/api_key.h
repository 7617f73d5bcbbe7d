/* The API key file (--api-key-file): one bearer token, surrounding whitespace ignored. Read whole
 * and checked byte by byte, so a token is used exactly as written or refused, never cut short. */
#ifndef STOPCAL_SERVER_API_KEY_H
#define STOPCAL_SERVER_API_KEY_H

#include <stddef.h>

/* Largest key file read (a token is a few dozen bytes; this only bounds a wrong --api-key-file). */
#define API_KEY_MAX_FILE_BYTES (1 << 20)

/* The token in bytes[0..n): leading and trailing whitespace dropped; refused when nothing is left
 * or the token holds whitespace, a control character or a NUL (a multi-line file is not one
 * token). Returns a malloc'd NUL-terminated copy with its length in *len, or NULL with err. */
char *api_key_parse(const unsigned char *bytes, size_t n, size_t *len, char *err, size_t errlen);

/* api_key_parse of the whole file at path (at most API_KEY_MAX_FILE_BYTES). NULL with err. */
char *api_key_read(const char *path, size_t *len, char *err, size_t errlen);

#endif
