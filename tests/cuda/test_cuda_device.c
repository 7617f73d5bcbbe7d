/* --device cuda:N on any machine: with a device, the backend opens and reports its name; without
 * a driver or device, backend_cuda_create fails with a one-line reason (which `--device auto`
 * logs before falling back to the CPU), leaves nothing allocated, and can be asked again. */
#include "../check.h"

#include "backend_cuda.h"

#include <string.h>

int main(void)
{
    struct backend be;
    char err[256] = "";
    int rc = backend_cuda_create(&be, 0, NULL, err, sizeof err);
    if (rc == 0) {
        printf("  device 0 opened: backend %s\n", be.ops->name);
        CHECK(strcmp(be.ops->name, "cuda") == 0, "backend name %s", be.ops->name);
        backend_destroy(&be);
        char err2[256] = "";
        CHECK(backend_cuda_create(&be, 1000, NULL, err2, sizeof err2) == -1, "cuda:1000 refused");
        CHECK(strstr(err2, "out of range") != NULL, "message: %s", err2);
    } else {
        printf("  no usable CUDA device here: %s\n", err);
        CHECK(rc == -1, "returns -1 (got %d)", rc);
        CHECK(err[0] != '\0' && strchr(err, '\n') == NULL, "one-line message: '%s'", err);
        CHECK(strstr(err, "CUDA") != NULL, "message names CUDA: %s", err);
        CHECK(be.ops == NULL, "backend left empty");
        char again[256] = "";
        CHECK(backend_cuda_create(&be, 0, NULL, again, sizeof again) == -1, "asking again fails the same way");
        CHECK(strcmp(err, again) == 0, "same message: '%s' vs '%s'", err, again);
    }
    return test_report("test_cuda_device");
}
