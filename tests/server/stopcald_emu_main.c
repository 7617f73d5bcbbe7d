/* stopcald on the CUDA backend as the host emulation runs it, for the fault tests: SIGUSR1 injects
 * the emulation's sticky device error (cuda_emu_set_sticky_error), as a GPU that fell off the bus
 * would. A thread of its own takes the signal with sigwait, since the injection takes a lock. The
 * server is stopcald_main.c itself, its main() renamed; --device cuda selects the emulation. */
#include "backend_cuda.h"
#include "cuda_ops.h"

#include <pthread.h>
#include <signal.h>

#define main stopcald_main
#include "../../server/stopcald_main.c"
#undef main

static void *inject_on_usr1(void *arg)
{
    sigset_t *set = arg;
    int sig;
    while (sigwait(set, &sig) == 0)
        if (sig == SIGUSR1) {
            cuda_emu_set_sticky_error(1);
            log_msg("warn", "test hook: sticky device error injected");
        }
    return NULL;
}

/* --device cuda opens the emulated backend: this definition, in an object file, is the one the
 * linker takes, so the GPU backend's is never pulled from stopcald_core's kernels. */
int backend_cuda_create(struct backend *be, int device_index, const struct backend_options *o, char *err,
                        size_t errlen)
{
    (void)device_index;
    return backend_cuda_emu_create(be, o, err, errlen);
}

int main(int argc, char **argv)
{
    static sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    /* Blocked here, so in every thread started later; only the injector takes it. */
    if (pthread_sigmask(SIG_BLOCK, &set, NULL) != 0)
        return 1;
    pthread_t t;
    if (pthread_create(&t, NULL, inject_on_usr1, &set) != 0)
        return 1;
    pthread_detach(t);
    return stopcald_main(argc, argv);
}
