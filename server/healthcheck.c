/* The readiness probe behind stopcald --healthcheck: one plain HTTP/1.0 request over a blocking
 * socket with send/receive timeouts; no libcurl, no MHD. */
#include "healthcheck.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

int healthcheck_probe(int port, int timeout_ms, char *err, size_t errlen)
{
    if (port <= 0 || port > 65535) {
        snprintf(err, errlen, "port %d: give the port the server listens on (--port or STOPCAL_PORT)", port);
        return -1;
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    static const char request[] = "GET /v2/health/ready HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    char reply[64] = "";
    int rc = -1;
    if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) != 0) {
        snprintf(err, errlen, "setsockopt: %s", strerror(errno));
    } else if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        snprintf(err, errlen, "127.0.0.1:%d: %s", port, strerror(errno));
    } else if (send(fd, request, sizeof request - 1, MSG_NOSIGNAL) != (ssize_t)(sizeof request - 1)) {
        snprintf(err, errlen, "127.0.0.1:%d: sending the request failed: %s", port, strerror(errno));
    } else {
        /* The status line is all we need: "HTTP/1.x 200 ...". */
        size_t got = 0;
        ssize_t n;
        while (got < sizeof reply - 1 && (n = recv(fd, reply + got, sizeof reply - 1 - got, 0)) > 0)
            got += (size_t)n;
        reply[got] = 0;
        int status = 0;
        if (sscanf(reply, "HTTP/1.%*d %d", &status) == 1 && status == 200)
            rc = 0;
        else if (status)
            snprintf(err, errlen, "not ready (HTTP %d)", status);
        else
            snprintf(err, errlen, "127.0.0.1:%d: no HTTP answer%s", port, got ? "" : " (timed out or closed)");
    }
    close(fd);
    return rc;
}
