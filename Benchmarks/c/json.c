#include <inttypes.h>
#include <math.h>
#include <stdio.h>

#include "bench.h"

/* ------------------------------------------------------------------------------------------- */
/* JSON lines                                                                                   */

static int json_first;

void jstr_raw(const char *s) {
    putchar('"');
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') printf("\\%c", ch);
        else if (ch < 0x20) printf("\\u%04x", ch);
        else putchar(ch);
    }
    putchar('"');
}

void jkey(const char *k) {
    if (!json_first) putchar(',');
    json_first = 0;
    jstr_raw(k);
    putchar(':');
}

void jbegin(const char *section, const char *name, const char *transport, uint64_t bytes,
                   const char *unit) {
    putchar('{');
    json_first = 1;
    jkey("section"); jstr_raw(section);
    jkey("name"); jstr_raw(name);
    jkey("transport"); jstr_raw(transport);
    jkey("bytes"); printf("%" PRIu64, bytes);
    jkey("unit"); jstr_raw(unit);
}

void jnum(const char *k, double v) {
    jkey(k);
    if (isfinite(v)) printf("%.6g", v);
    else printf("null");
}

void jint(const char *k, uint64_t v) { jkey(k); printf("%" PRIu64, v); }
void jstr(const char *k, const char *v) { jkey(k); jstr_raw(v); }

void jarr(const char *k, const samples *s, double scale) {
    jkey(k);
    putchar('[');
    for (size_t i = 0; i < s->n; i++) printf(i ? ",%.9g" : "%.9g", s->v[i] * scale);
    putchar(']');
}

void jend(void) {
    puts("}");
    fflush(stdout);
}
