/* image_read_file: a file's bytes by plain open()/read(), under the byte ceiling. The name goes to the
 * kernel verbatim and never to cfitsio, so brackets, "mem://" or "-" mean nothing special here. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "image.h"
#include "error_message.h"
#include "image_internal.h"

static const char *errno_text(int e, char *buf, size_t n)
{
#if defined(_GNU_SOURCE)
    return strerror_r(e, buf, n); /* GNU variant: returns the message (maybe static, maybe buf) */
#else
    if (strerror_r(e, buf, n) != 0)
        snprintf(buf, n, "errno %d", e);
    return buf;
#endif
}

int image_read_file(const char *path, size_t max_bytes, unsigned char **bytes, size_t *len, char *err,
                    size_t errlen)
{
    char ebuf[128];
    if (max_bytes > SIZE_MAX / 2)
        max_bytes = SIZE_MAX / 2; /* keeps max_bytes + 1 and the doubling below from wrapping */
    *bytes = NULL;
    *len = 0;
    if (!path || !*path)
        return error_set(err, errlen, IMAGE_EIO, "empty file name");
    int fd;
    do
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    while (fd < 0 && errno == EINTR);
    if (fd < 0) {
        int e = errno;
        return error_set(err, errlen, IMAGE_EIO, "cannot open '%s': %s", path, errno_text(e, ebuf, sizeof ebuf));
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return error_set(err, errlen, IMAGE_EIO, "cannot stat '%s': %s", path, errno_text(e, ebuf, sizeof ebuf));
    }
    if (S_ISDIR(st.st_mode)) {
        close(fd);
        return error_set(err, errlen, IMAGE_EIO, "'%s' is a directory", path);
    }
    size_t cap;
    if (S_ISREG(st.st_mode)) {
        if ((unsigned long long)st.st_size > max_bytes) {
            close(fd);
            return error_set(err, errlen, IMAGE_ETOOBIG, "'%s' is %lld bytes, over the ceiling of %zu bytes",
                              path, (long long)st.st_size, max_bytes);
        }
        cap = (size_t)st.st_size + 1; /* +1 notices a file that grew since fstat */
    } else {
        cap = 64 * 1024; /* pipe or device: grow as it comes */
    }
    if (cap > max_bytes + 1 && max_bytes < SIZE_MAX)
        cap = max_bytes + 1;
    unsigned char *buf = malloc(cap ? cap : 1);
    if (!buf) {
        close(fd);
        return error_set(err, errlen, IMAGE_ENOMEM, "out of memory for %zu bytes", cap);
    }
    size_t n = 0;
    int rc = IMAGE_OK;
    for (;;) {
        if (n == cap) {
            if (n > max_bytes) {
                rc = error_set(err, errlen, IMAGE_ETOOBIG, "'%s' is longer than the ceiling of %zu bytes", path,
                                max_bytes);
                break;
            }
            size_t next = cap * 2;
            if (next > max_bytes + 1 || next < cap)
                next = max_bytes + 1;
            unsigned char *grown = realloc(buf, next);
            if (!grown) {
                rc = error_set(err, errlen, IMAGE_ENOMEM, "out of memory for %zu bytes", next);
                break;
            }
            buf = grown;
            cap = next;
        }
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            int e = errno;
            rc = error_set(err, errlen, IMAGE_EIO, "cannot read '%s': %s", path, errno_text(e, ebuf, sizeof ebuf));
            break;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    if (rc == IMAGE_OK && n > max_bytes)
        rc = error_set(err, errlen, IMAGE_ETOOBIG, "'%s' is longer than the ceiling of %zu bytes", path, max_bytes);
    if (rc != IMAGE_OK) {
        free(buf);
        return rc;
    }
    *bytes = buf;
    *len = n;
    return IMAGE_OK;
}
