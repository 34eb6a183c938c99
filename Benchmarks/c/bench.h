/*
 * bench.h — what the files of kvd-bench-client share: small utilities, samples and their summary,
 * the JSON-lines writer, option parsing, and the connections to kvd and kvd-echo.
 * main.c dispatches to the subcommands in rtt.c, data.c and scale.c.
 */
#ifndef KVD_BENCH_H
#define KVD_BENCH_H

#include <stddef.h>
#include <stdint.h>

#include "kvd/v1/envelope.pb-c.h"
#include "kvd_client.h"

/* Small utilities (util.c) */
double now_s(void);
_Noreturn void die(const char *fmt, ...);
void *xmalloc(size_t n);
void fill_random(void *buf, size_t n, uint64_t seed);
const char *transport_of(const char *ep);

/* Samples (samples.c) */
typedef struct samples {
    double *v;
    size_t n, cap;
} samples;

void push(samples *s, double x);

typedef struct summary {
    double min, p50, p99, max, mean, median;
} summary;

summary summarize(const samples *s);

/* JSON lines (json.c) */
void jstr_raw(const char *s);
void jkey(const char *k);
void jbegin(const char *section, const char *name, const char *transport, uint64_t bytes,
            const char *unit);
void jnum(const char *k, double v);
void jint(const char *k, uint64_t v);
void jstr(const char *k, const char *v);
void jarr(const char *k, const samples *s, double scale);
void jend(void);

/* Options: --key value pairs (and a few flags) after the subcommand (options.c; usage in main.c) */
typedef struct opts {
    int argc;
    char **argv;
    const char *const *allowed; /* NULL-terminated; a trailing '!' marks a flag without a value */
} opts;

_Noreturn void usage(void);
void opts_check(const opts *o);
const char *opt_str(const opts *o, const char *name, const char *def);
int opt_flag(const opts *o, const char *name);
const char *opt_required(const opts *o, const char *name);
long long opt_int(const opts *o, const char *name, long long def, long long min);
double opt_double(const opts *o, const char *name, double def);

/* kvd helpers (connections.c) */
kvd_client *kvd_open(const char *ep, int timeout_ms, const char *name);
kvd_model_layout find_model(kvd_client *c, const char *model);

#define CHECK(c, what, expr)                                                                    \
    do {                                                                                        \
        kvd_result rc_ = (expr);                                                                \
        if (rc_) die("%s: %s (%s)", what, kvd_client_last_error(c), kvd_result_name(rc_));      \
    } while (0)

/* Raw ZeroMQ: a DEALER to kvd-echo or to kvd (connections.c) */
typedef struct echo_conn {
    void *ctx, *sock;
    const char *ep;
} echo_conn;

echo_conn echo_open(const char *ep, int timeout_ms);
void echo_close(echo_conn *e);
void echo_rt(echo_conn *e, const void *buf, size_t n);
size_t raw_kvd_rt(echo_conn *e, Kvd__V1__Request *r, uint64_t *next_id, int check);

/* The subcommands (rtt.c, data.c, scale.c, append.c) */
int cmd_rtt(opts *o);
int cmd_data(opts *o);
int cmd_scale(opts *o);
int cmd_append(opts *o);

#endif
