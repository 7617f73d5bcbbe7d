/* See error_message.h: one place decides how an error message is written, so no caller can overrun its buffer
 * or leave it unterminated. */
#include "error_message.h"

#include <stdio.h>

int error_vset(char *err, size_t errlen, int code, const char *fmt, va_list ap)
{
    if (err && errlen)
        vsnprintf(err, errlen, fmt, ap);
    return code;
}

int error_set(char *err, size_t errlen, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    error_vset(err, errlen, code, fmt, ap);
    va_end(ap);
    return code;
}
