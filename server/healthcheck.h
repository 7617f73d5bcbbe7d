/* stopcald --healthcheck: ask a running stopcald on loopback whether it is ready, so a container
 * image needs no curl for its HEALTHCHECK. */
#ifndef STOPCAL_HEALTHCHECK_H
#define STOPCAL_HEALTHCHECK_H

#include <stddef.h>

/* GET /v2/health/ready on 127.0.0.1:port within timeout_ms. Returns 0 when the answer is 200,
 * -1 otherwise with the reason (refused, timed out, the status received) in err. */
int healthcheck_probe(int port, int timeout_ms, char *err, size_t errlen);

#endif
