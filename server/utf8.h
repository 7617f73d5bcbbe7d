/* Untrusted text (file names, form-field names, URL paths, header values) on its way into a JSON
 * answer or a log line. jansson refuses a string that is not valid UTF-8, and a refused string used
 * to make a whole answer vanish; so every such string passes through here first. */
#ifndef STOPCAL_SERVER_UTF8_H
#define STOPCAL_SERVER_UTF8_H

#include <stddef.h>

/* Copy the NUL-terminated src into out (outlen > 0 bytes) as valid UTF-8 (RFC 3629: no overlong
 * forms, no surrogates, nothing past U+10FFFF): every byte that does not begin a well-formed
 * sequence becomes U+FFFD. A character is never cut to fit; out is always NUL-terminated. Returns
 * the number of bytes replaced. */
size_t utf8_sanitize(char *out, size_t outlen, const char *src);

/* Length of the well-formed UTF-8 sequence at s (1 to 4), or 0 when s[0] does not begin one. */
int utf8_sequence_len(const unsigned char *s);

#endif
