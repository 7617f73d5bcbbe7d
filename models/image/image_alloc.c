/* Allocation of the big buffers (decoded pixels): 2 MiB-aligned and madvise(MADV_HUGEPAGE)'d, so that a
 * 16–32 MiB image costs a handful of page faults instead of thousands. Purely a speed matter: without
 * transparent huge pages (or off Linux) it is an ordinary aligned allocation. */
#include <stdlib.h>
#include <sys/mman.h>

#include "image_internal.h"

#define HUGE_PAGE ((size_t)2 << 20)

void *image_alloc_large(size_t bytes)
{
    if (bytes < 2 * HUGE_PAGE)
        return malloc(bytes ? bytes : 1);
    void *p = NULL;
    size_t rounded = (bytes + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1);
    if (rounded < bytes || posix_memalign(&p, HUGE_PAGE, rounded) != 0)
        return NULL;
#ifdef MADV_HUGEPAGE
    (void)madvise(p, rounded, MADV_HUGEPAGE); /* advice only: failure changes nothing but speed */
#endif
    return p;
}
