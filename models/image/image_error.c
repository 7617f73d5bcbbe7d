/* Error messages for the image library: one formatter, so every failure path reads the same way and
 * never overruns the caller's buffer. */
#include "image_internal.h"

#include <stdarg.h>
#include <stdio.h>

int image_fail(char *err, size_t errlen, int code, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return code;
}
