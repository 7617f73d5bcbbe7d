/* libFuzzer target over multipart/form-data: the first line of the input is the Content-Type, the
 * rest the body → multipart_boundary, multipart_parse. Parts must lie inside the body and their
 * names be NUL-terminated; refusals must say why. Built and run by run_fuzz.sh. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "multipart.h"

#define FUZZ_MAX_PARTS 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nl = memchr(data, '\n', size);
    size_t ct_len = nl ? (size_t)(nl - data) : size;
    char *content_type = malloc(ct_len + 1);
    if (!content_type)
        abort();
    memcpy(content_type, data, ct_len);
    content_type[ct_len] = '\0'; /* a NUL inside cuts it short, as a C string header would */
    /* The body in its own allocation, so ASan sees a read one byte past it. */
    size_t body_len = nl ? size - ct_len - 1 : 0;
    unsigned char *body = malloc(body_len ? body_len : 1);
    if (!body)
        abort();
    if (body_len)
        memcpy(body, nl + 1, body_len);

    char boundary[256], err[256];
    err[0] = '\0';
    if (multipart_boundary(content_type, boundary, sizeof boundary, err, sizeof err) != 0) {
        if (err[0] == '\0')
            abort();
    } else {
        if (memchr(boundary, '\0', sizeof boundary) == NULL)
            abort();
        static struct multipart_part parts[FUZZ_MAX_PARTS];
        int too_many = 0;
        err[0] = '\0';
        int n = multipart_parse(body, body_len, boundary, parts, FUZZ_MAX_PARTS, &too_many, err, sizeof err);
        if (n < 0) {
            if (err[0] == '\0')
                abort();
        } else {
            if (n < 1 || n > FUZZ_MAX_PARTS)
                abort();
            for (int i = 0; i < n; i++) {
                const struct multipart_part *p = &parts[i];
                if (p->data < body || p->len > body_len || (size_t)(p->data - body) > body_len - p->len)
                    abort(); /* a part outside the body */
                if (!memchr(p->name, '\0', sizeof p->name) || !memchr(p->filename, '\0', sizeof p->filename))
                    abort();
            }
        }
    }
    free(body);
    free(content_type);
    return 0;
}
