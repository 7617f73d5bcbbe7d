/* multipart/form-data (RFC 7578) over a body already in memory: the boundary from Content-Type, then
 * each part's Content-Disposition name/filename and its bytes, pointing into the body (no copies). */
#ifndef STOPCAL_SERVER_MULTIPART_H
#define STOPCAL_SERVER_MULTIPART_H

#include <stddef.h>

struct multipart_part {
    const unsigned char *data; /* into the body */
    size_t len;
    char name[128];     /* the form field name */
    char filename[256]; /* the file's base name; empty for a plain field */
};

/* The boundary parameter of a multipart Content-Type. Returns 0, or -1 with err. */
int multipart_boundary(const char *content_type, char *boundary, size_t len, char *err, size_t errlen);

/* Split body into parts. Returns the number of parts (≥ 1), or -1 with err: malformed, or more
 * than max_parts parts (err says so, and *too_many is set). */
int multipart_parse(const unsigned char *body, size_t len, const char *boundary, struct multipart_part *parts,
                    int max_parts, int *too_many, char *err, size_t errlen);

#endif
