#include "kvd_kernels.h"

// Hardware prefetchers stop at 4 KiB boundaries, and a head's keys are 4 KiB blocks one page apart
// (K then V inside each page): reading them page by page waits on memory at every block unless the
// next block is asked for ahead.
void kvd_prefetch(const void *p, size_t bytes) {
    const char *c = (const char *)p;
    for (size_t i = 0; i < bytes; i += 64) __builtin_prefetch(c + i, 0, 3);
}
