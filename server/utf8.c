/* UTF-8 validation and replacement (RFC 3629, table 3-7 of the Unicode standard). */
#include "utf8.h"

#include <string.h>

int utf8_sequence_len(const unsigned char *s)
{
    unsigned char c = s[0];
    if (c < 0x80)
        return 1;
    /* Second-byte ranges exclude overlong forms (E0, F0), surrogates (ED) and > U+10FFFF (F4). */
    unsigned char lo = 0x80, hi = 0xBF;
    int n;
    if (c >= 0xC2 && c <= 0xDF)
        n = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        if (c == 0xE0)
            lo = 0xA0;
        if (c == 0xED)
            hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        if (c == 0xF0)
            lo = 0x90;
        if (c == 0xF4)
            hi = 0x8F;
    } else
        return 0;
    if (s[1] < lo || s[1] > hi)
        return 0; /* also stops at the NUL terminator */
    for (int i = 2; i < n; i++)
        if (s[i] < 0x80 || s[i] > 0xBF)
            return 0;
    return n;
}

size_t utf8_sanitize(char *out, size_t outlen, const char *src)
{
    static const char replacement[] = "\xEF\xBF\xBD"; /* U+FFFD */
    const unsigned char *s = (const unsigned char *)src;
    size_t at = 0, replaced = 0;
    while (*s) {
        int n = utf8_sequence_len(s);
        const char *piece = n ? (const char *)s : replacement;
        size_t len = n ? (size_t)n : 3;
        if (at + len + 1 > outlen)
            break;
        memcpy(out + at, piece, len);
        at += len;
        s += n ? n : 1;
        replaced += !n;
    }
    out[at] = 0;
    return replaced;
}
