#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

/* ------------------------------------------------------------------------------------------- */
/* Samples                                                                                      */

void push(samples *s, double x) {
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 256;
        s->v = realloc(s->v, s->cap * sizeof *s->v);
        if (!s->v) die("out of memory");
    }
    s->v[s->n++] = x;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentiles; median is the usual one (mean of the middle two for even n). */
summary summarize(const samples *s) {
    summary r = {0};
    if (!s->n) return r;
    double *v = malloc(s->n * sizeof *v);
    if (!v) die("out of memory");
    memcpy(v, s->v, s->n * sizeof *v);
    qsort(v, s->n, sizeof *v, cmp_double);
    size_t n = s->n;
    r.min = v[0];
    r.max = v[n - 1];
    size_t i50 = (size_t)ceil(0.50 * (double)n), i99 = (size_t)ceil(0.99 * (double)n);
    r.p50 = v[(i50 ? i50 : 1) - 1];
    r.p99 = v[(i99 ? i99 : 1) - 1];
    r.median = n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
    double sum = 0;
    for (size_t i = 0; i < n; i++) sum += v[i];
    r.mean = sum / (double)n;
    free(v);
    return r;
}
