/* The one formatter for error messages written into a caller's buffer, used by every part of stopcal
 * (the model reader, the image library, the engine and its backends, the server, the C client).
 * It lives in models/ because models/ is the bottom of the dependency order (ARCHITECTURE.md §1):
 * everything else already links it, and it links nothing. */
#ifndef STOPCAL_ERROR_MESSAGE_H
#define STOPCAL_ERROR_MESSAGE_H

#include <stdarg.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* printf into err (errlen bytes, always NUL-terminated, truncated if long; err may be NULL or errlen
 * 0, then nothing is written). Returns code, so a failure path reads
 * `return error_set(err, errlen, -1, "bad %s", what);`. */
int error_set(char *err, size_t errlen, int code, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
int error_vset(char *err, size_t errlen, int code, const char *fmt, va_list ap)
    __attribute__((format(printf, 4, 0)));

#ifdef __cplusplus
}
#endif

#endif
