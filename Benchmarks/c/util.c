#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench.h"

/* ------------------------------------------------------------------------------------------- */
/* Small utilities                                                                              */

double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("kvd-bench-client: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

void *xmalloc(size_t n) {
    void *p = NULL;
    if (posix_memalign(&p, 64, n ? n : 1) != 0) die("out of memory (%zu bytes)", n);
    return p;
}

/* Fill with pseudo-random bytes (this also faults every page in). */
void fill_random(void *buf, size_t n, uint64_t seed) {
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
    uint8_t *p = buf;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        memcpy(p + i, &x, 8);
    }
    for (; i < n; i++) p[i] = (uint8_t)(x >> (8 * (i & 7)));
}

/* The transport of an endpoint: "ipc", "tcp", ... */
const char *transport_of(const char *ep) {
    static char buf[4][16];
    static int k;
    const char *s = strstr(ep, "://");
    char *b = buf[k++ & 3];
    size_t n = s ? (size_t)(s - ep) : 0;
    if (!n || n >= sizeof buf[0]) return "?";
    memcpy(b, ep, n);
    b[n] = 0;
    return b;
}
