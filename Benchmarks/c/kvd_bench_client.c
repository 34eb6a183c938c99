/*
 * kvd-bench-client — the C client's side of kvd's benchmark suite (issue 7, sections 1, 2, 4).
 *
 *   kvd-bench-client rtt   --kvd EP --echo EP [--model M] [--n N] [--block B] [--warmup W]
 *                          [--tokens T] [--samples]
 *   kvd-bench-client data  --kvd EP --echo EP [--model M] [--mib 1,4,16,64] [--repeats R]
 *                          [--warmup W] [--samples]
 *   kvd-bench-client scale --kvd EP [--model M] --clients C [--sequences 1000]
 *                          (--seconds T | --ops N) [--kvd-pid PID] [--append-tokens 16]
 *                          [--max-tokens 64] [--keep 32] [--initial-tokens 32] [--samples]
 *   Common: --timeout-ms MS (per request; default 30000).
 *
 * Every measured row is one JSON object on its own line on stdout, with at least "section",
 * "name", "transport", "bytes" and "unit". Latency rows: p50 / p99 / min / mean / max in µs.
 * Throughput rows: GB/s (1e9 bytes/s) of the best and the median repeat, plus the raw seconds
 * ("seconds" with --samples). Baselines (raw ZeroMQ echo through kvd-echo, memcpy) are measured in
 * the same run, interleaved with the kvd measurements, and the kvd rows carry the ratios.
 * Errors go to stderr; a failed setup exits with status 1, bad usage with 2.
 */
#define _GNU_SOURCE /* asprintf */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <zmq.h>

#include "kvd/v1/envelope.pb-c.h"
#include "kvd_client.h"

/* ------------------------------------------------------------------------------------------- */
/* Small utilities                                                                              */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("kvd-bench-client: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static void *xmalloc(size_t n) {
    void *p = NULL;
    if (posix_memalign(&p, 64, n ? n : 1) != 0) die("out of memory (%zu bytes)", n);
    return p;
}

/* Fill with pseudo-random bytes (this also faults every page in). */
static void fill_random(void *buf, size_t n, uint64_t seed) {
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
static const char *transport_of(const char *ep) {
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

/* ------------------------------------------------------------------------------------------- */
/* Samples                                                                                      */

typedef struct samples {
    double *v;
    size_t n, cap;
} samples;

static void push(samples *s, double x) {
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

typedef struct summary {
    double min, p50, p99, max, mean, median;
} summary;

/* Nearest-rank percentiles; median is the usual one (mean of the middle two for even n). */
static summary summarize(const samples *s) {
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

/* ------------------------------------------------------------------------------------------- */
/* JSON lines                                                                                   */

static int json_first;

static void jstr_raw(const char *s) {
    putchar('"');
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') printf("\\%c", ch);
        else if (ch < 0x20) printf("\\u%04x", ch);
        else putchar(ch);
    }
    putchar('"');
}

static void jkey(const char *k) {
    if (!json_first) putchar(',');
    json_first = 0;
    jstr_raw(k);
    putchar(':');
}

static void jbegin(const char *section, const char *name, const char *transport, uint64_t bytes,
                   const char *unit) {
    putchar('{');
    json_first = 1;
    jkey("section"); jstr_raw(section);
    jkey("name"); jstr_raw(name);
    jkey("transport"); jstr_raw(transport);
    jkey("bytes"); printf("%" PRIu64, bytes);
    jkey("unit"); jstr_raw(unit);
}

static void jnum(const char *k, double v) {
    jkey(k);
    if (isfinite(v)) printf("%.6g", v);
    else printf("null");
}

static void jint(const char *k, uint64_t v) { jkey(k); printf("%" PRIu64, v); }
static void jstr(const char *k, const char *v) { jkey(k); jstr_raw(v); }

static void jarr(const char *k, const samples *s, double scale) {
    jkey(k);
    putchar('[');
    for (size_t i = 0; i < s->n; i++) printf(i ? ",%.9g" : "%.9g", s->v[i] * scale);
    putchar(']');
}

static void jend(void) {
    puts("}");
    fflush(stdout);
}

/* ------------------------------------------------------------------------------------------- */
/* Options: --key value pairs (and a few flags) after the subcommand                            */

typedef struct opts {
    int argc;
    char **argv;
    const char *const *allowed; /* NULL-terminated; a trailing '!' marks a flag without a value */
} opts;

static void usage(void) {
    fputs("usage:\n"
          "  kvd-bench-client rtt   --kvd EP --echo EP [--model M] [--n N] [--block B] "
          "[--warmup W] [--tokens T] [--samples]\n"
          "  kvd-bench-client data  --kvd EP --echo EP [--model M] [--mib 1,4,16,64] "
          "[--repeats R] [--warmup W] [--samples]\n"
          "  kvd-bench-client scale --kvd EP [--model M] --clients C [--sequences 1000] "
          "(--seconds T | --ops N) [--kvd-pid PID]\n"
          "                         [--append-tokens 16] [--max-tokens 64] [--keep 32] "
          "[--initial-tokens 32] [--samples]\n"
          "  common: --timeout-ms MS (per request, default 30000)\n",
          stderr);
    exit(2);
}

static int is_flag(const opts *o, const char *name, int *known) {
    size_t n = strlen(name);
    for (const char *const *a = o->allowed; *a; a++) {
        if (strncmp(*a, name, n) == 0 && ((*a)[n] == 0 || ((*a)[n] == '!' && (*a)[n + 1] == 0))) {
            *known = 1;
            return (*a)[n] == '!';
        }
    }
    *known = 0;
    return 0;
}

static void opts_check(const opts *o) {
    for (int i = 0; i < o->argc; i++) {
        const char *a = o->argv[i];
        int known;
        if (strncmp(a, "--", 2) != 0) {
            fprintf(stderr, "kvd-bench-client: unexpected argument \"%s\"\n", a);
            usage();
        }
        int flag = is_flag(o, a + 2, &known);
        if (!known) {
            fprintf(stderr, "kvd-bench-client: unknown option %s\n", a);
            usage();
        }
        if (!flag) {
            if (i + 1 >= o->argc) {
                fprintf(stderr, "kvd-bench-client: %s needs a value\n", a);
                usage();
            }
            i++;
        }
    }
}

static const char *opt_str(const opts *o, const char *name, const char *def) {
    const char *found = def;
    for (int i = 0; i < o->argc; i++) {
        int known;
        int flag = is_flag(o, o->argv[i] + 2, &known);
        if (strcmp(o->argv[i] + 2, name) == 0 && !flag) found = o->argv[i + 1];
        if (!flag) i++;
    }
    return found;
}

static int opt_flag(const opts *o, const char *name) {
    for (int i = 0; i < o->argc; i++) {
        int known;
        int flag = is_flag(o, o->argv[i] + 2, &known);
        if (flag && strcmp(o->argv[i] + 2, name) == 0) return 1;
        if (!flag) i++;
    }
    return 0;
}

static const char *opt_required(const opts *o, const char *name) {
    const char *v = opt_str(o, name, NULL);
    if (!v) {
        fprintf(stderr, "kvd-bench-client: --%s is required\n", name);
        usage();
    }
    return v;
}

static long long opt_int(const opts *o, const char *name, long long def, long long min) {
    const char *v = opt_str(o, name, NULL);
    if (!v) return def;
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || *end || end == v || x < min) {
        fprintf(stderr, "kvd-bench-client: --%s %s: expected an integer >= %lld\n", name, v, min);
        usage();
    }
    return x;
}

static double opt_double(const opts *o, const char *name, double def) {
    const char *v = opt_str(o, name, NULL);
    if (!v) return def;
    char *end;
    double x = strtod(v, &end);
    if (*end || end == v || !(x > 0)) {
        fprintf(stderr, "kvd-bench-client: --%s %s: expected a positive number\n", name, v);
        usage();
    }
    return x;
}

/* ------------------------------------------------------------------------------------------- */
/* kvd helpers                                                                                  */

static kvd_client *kvd_open(const char *ep, int timeout_ms, const char *name) {
    kvd_client_options o = {0};
    o.struct_size = sizeof o;
    o.timeout_ms = timeout_ms;
    o.client_name = name;
    kvd_client *c = NULL;
    char err[512];
    kvd_result rc = kvd_client_connect(ep, &o, &c, err, sizeof err);
    if (rc) die("connect %s: %s (%s)", ep, err, kvd_result_name(rc));
    rc = kvd_client_hello(c, NULL);
    if (rc) die("hello %s: %s (%s)", ep, kvd_client_last_error(c), kvd_result_name(rc));
    return c;
}

static kvd_model_layout find_model(kvd_client *c, const char *model) {
    kvd_hello_info *info = NULL;
    kvd_result rc = kvd_client_hello(c, &info);
    if (rc) die("hello: %s (%s)", kvd_client_last_error(c), kvd_result_name(rc));
    const kvd_model_layout *m = kvd_hello_find_model(info, model);
    if (!m) {
        fprintf(stderr, "kvd-bench-client: the daemon has no model \"%s\"; it has:", model);
        for (size_t i = 0; i < info->num_models; i++) fprintf(stderr, " %s", info->models[i].name);
        fputc('\n', stderr);
        exit(1);
    }
    kvd_model_layout L = *m;
    L.name = model; /* the strings die with info */
    L.default_method = NULL;
    kvd_hello_info_free(info);
    if (!kvd_dtype_size(L.dtype)) die("model %s has an unknown dtype %d", model, (int)L.dtype);
    return L;
}

#define CHECK(c, what, expr)                                                                    \
    do {                                                                                        \
        kvd_result rc_ = (expr);                                                                \
        if (rc_) die("%s: %s (%s)", what, kvd_client_last_error(c), kvd_result_name(rc_));      \
    } while (0)

/* ------------------------------------------------------------------------------------------- */
/* Raw ZeroMQ echo: a DEALER to kvd-echo, one frame out, the same frame back (what libkvdclient   */
/* does with kvd: one frame, no delimiter)                                                      */

typedef struct echo_conn {
    void *ctx, *sock;
    const char *ep;
} echo_conn;

static echo_conn echo_open(const char *ep, int timeout_ms) {
    echo_conn e = {zmq_ctx_new(), NULL, ep};
    if (!e.ctx) die("zmq_ctx_new: %s", zmq_strerror(zmq_errno()));
    e.sock = zmq_socket(e.ctx, ZMQ_DEALER);
    if (!e.sock) die("zmq_socket: %s", zmq_strerror(zmq_errno()));
    int zero = 0;
    zmq_setsockopt(e.sock, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(e.sock, ZMQ_RCVTIMEO, &timeout_ms, sizeof timeout_ms);
    zmq_setsockopt(e.sock, ZMQ_SNDTIMEO, &timeout_ms, sizeof timeout_ms);
    if (zmq_connect(e.sock, ep) != 0) die("connect %s: %s", ep, zmq_strerror(zmq_errno()));
    return e;
}

static void echo_close(echo_conn *e) {
    zmq_close(e->sock);
    zmq_ctx_term(e->ctx);
}

/* One round trip of `n` bytes: zmq_send copies them into a message (as libkvdclient packs its
 * request into one buffer), the echo comes back as one frame of the same size. */
static void echo_rt(echo_conn *e, const void *buf, size_t n) {
    if (zmq_send(e->sock, buf, n, 0) < 0)
        die("echo send to %s: %s%s", e->ep, zmq_strerror(zmq_errno()),
            zmq_errno() == EAGAIN ? " (is kvd-echo running?)" : "");
    zmq_msg_t m;
    zmq_msg_init(&m);
    for (;;) {
        if (zmq_msg_recv(&m, e->sock, 0) >= 0) break;
        if (zmq_errno() == EINTR) continue;
        die("echo receive from %s: %s%s", e->ep, zmq_strerror(zmq_errno()),
            zmq_errno() == EAGAIN ? " (timeout; is kvd-echo running?)" : "");
    }
    if (zmq_msg_size(&m) != n || zmq_msg_more(&m))
        die("echo from %s: sent %zu bytes, got %zu back%s", e->ep, n, zmq_msg_size(&m),
            zmq_msg_more(&m) ? " and more frames" : "");
    zmq_msg_close(&m);
}

/* ------------------------------------------------------------------------------------------- */
/* rtt: Stats and metadata-only Query through kvd vs echo of a message of the request's size     */

/* Packed size of the request libkvdclient sends for Stats(0) / Query(seq, METADATA), with a
 * request id of the magnitude the run uses (ids are varints). */
static size_t stats_request_bytes(uint64_t request_id) {
    Kvd__V1__StatsRequest sr = KVD__V1__STATS_REQUEST__INIT;
    Kvd__V1__Request r = KVD__V1__REQUEST__INIT;
    r.request_id = request_id;
    r.protocol_version = KVD_PROTOCOL_VERSION;
    r.body_case = KVD__V1__REQUEST__BODY_STATS;
    r.stats = &sr;
    return kvd__v1__request__get_packed_size(&r);
}

static size_t query_request_bytes(uint64_t request_id, uint64_t seq) {
    Kvd__V1__QueryRequest q = KVD__V1__QUERY_REQUEST__INIT;
    q.sequence_id = seq;
    q.mode = KVD__V1__QUERY_MODE__QUERY_MODE_METADATA;
    Kvd__V1__Request r = KVD__V1__REQUEST__INIT;
    r.request_id = request_id;
    r.protocol_version = KVD_PROTOCOL_VERSION;
    r.body_case = KVD__V1__REQUEST__BODY_QUERY;
    r.query = &q;
    return kvd__v1__request__get_packed_size(&r);
}

/* A raw round trip to kvd without libkvdclient: pack `r` with a fresh request id, send it as one
 * frame on a plain DEALER, receive the reply frame without decoding it (unless `check`, then it
 * must be a non-error reply to this id). Splits the client library's share from the daemon's. */
static size_t raw_kvd_rt(echo_conn *e, Kvd__V1__Request *r, uint64_t *next_id, int check) {
    uint8_t buf[256];
    r->request_id = (*next_id)++;
    size_t n = kvd__v1__request__get_packed_size(r);
    if (n > sizeof buf) die("raw request of %zu bytes", n);
    kvd__v1__request__pack(r, buf);
    if (zmq_send(e->sock, buf, n, 0) < 0) die("raw send to %s: %s", e->ep, zmq_strerror(zmq_errno()));
    zmq_msg_t m;
    zmq_msg_init(&m);
    for (;;) {
        if (zmq_msg_recv(&m, e->sock, 0) >= 0) break;
        if (zmq_errno() == EINTR) continue;
        die("raw receive from %s: %s", e->ep, zmq_strerror(zmq_errno()));
    }
    size_t got = zmq_msg_size(&m);
    if (check) {
        Kvd__V1__Response *resp = kvd__v1__response__unpack(NULL, got, zmq_msg_data(&m));
        if (!resp || !resp->header || resp->header->request_id != r->request_id ||
            resp->body_case == KVD__V1__RESPONSE__BODY_ERROR)
            die("raw request to %s: bad reply%s%s", e->ep,
                resp && resp->error && resp->error->message ? ": " : "",
                resp && resp->error && resp->error->message ? resp->error->message : "");
        kvd__v1__response__free_unpacked(resp, NULL);
    }
    zmq_msg_close(&m);
    return got;
}

static void print_latency(const char *name, const char *transport, size_t bytes,
                          const samples *s, const samples *base, const char *base_name,
                          int with_samples, uint32_t tokens, size_t reply_bytes) {
    summary a = summarize(s);
    jbegin("rtt", name, transport, bytes, "us");
    if (reply_bytes) jint("reply_bytes", reply_bytes);
    jint("n", s->n);
    jnum("p50", a.p50 * 1e6);
    jnum("p99", a.p99 * 1e6);
    jnum("min", a.min * 1e6);
    jnum("mean", a.mean * 1e6);
    jnum("max", a.max * 1e6);
    if (tokens) jint("tokens", tokens);
    if (base) {
        summary b = summarize(base);
        jstr("baseline", base_name);
        jnum("baseline_p50", b.p50 * 1e6);
        jnum("baseline_p99", b.p99 * 1e6);
        jnum("ratio_p50", a.p50 / b.p50);
        jnum("ratio_p99", a.p99 / b.p99);
    }
    if (with_samples) jarr("samples_us", s, 1e6);
    jend();
}

static int cmd_rtt(opts *o) {
    static const char *const allowed[] = {"kvd", "echo", "model", "n", "block", "warmup",
                                          "tokens", "samples!", "timeout-ms", NULL};
    o->allowed = allowed;
    opts_check(o);
    const char *kep = opt_required(o, "kvd"), *eep = opt_required(o, "echo");
    const char *model = opt_str(o, "model", "smollm2-135m");
    long long n = opt_int(o, "n", 10000, 1), block = opt_int(o, "block", 200, 1);
    long long warmup = opt_int(o, "warmup", 1000, 0), tokens = opt_int(o, "tokens", 16, 1);
    int timeout = (int)opt_int(o, "timeout-ms", 30000, 1), with_samples = opt_flag(o, "samples");

    kvd_client *c = kvd_open(kep, timeout, "kvd-bench-client rtt");
    kvd_model_layout L = find_model(c, model);
    echo_conn e = echo_open(eep, timeout);
    echo_rt(&e, "ping", 4); /* fail before creating anything when kvd-echo is not there */
    uint64_t seq = 0;
    CHECK(c, "create_sequence", kvd_client_create_sequence(c, model, 0, "bench-rtt", &seq));
    size_t es = kvd_dtype_size(L.dtype);
    size_t kv_bytes = (size_t)L.layers * L.kv_heads * (size_t)tokens * L.head_dim * es;
    void *k = xmalloc(kv_bytes), *v = xmalloc(kv_bytes);
    fill_random(k, kv_bytes, 1);
    fill_random(v, kv_bytes, 2);
    CHECK(c, "append", kvd_client_append(c, seq, L.dtype, L.layers, L.kv_heads, (uint32_t)tokens,
                                          L.head_dim, k, v, NULL));
    free(k);
    free(v);

    /* Ids count up from here by one per request; size the echo with the middle of the run. */
    uint64_t mid_id = 4 + (uint64_t)(warmup + n);
    size_t stats_bytes = stats_request_bytes(mid_id);
    size_t query_bytes = query_request_bytes(mid_id, seq);
    uint8_t payload[256];
    fill_random(payload, sizeof payload, 3);
    if (stats_bytes > sizeof payload || query_bytes > sizeof payload) die("request size");

    echo_conn raw = echo_open(kep, timeout); /* plain DEALER to kvd, for the raw rows */
    uint64_t raw_id = 1;
    Kvd__V1__StatsRequest raw_sr = KVD__V1__STATS_REQUEST__INIT;
    Kvd__V1__Request raw_stats = KVD__V1__REQUEST__INIT;
    raw_stats.protocol_version = KVD_PROTOCOL_VERSION;
    raw_stats.body_case = KVD__V1__REQUEST__BODY_STATS;
    raw_stats.stats = &raw_sr;
    Kvd__V1__QueryRequest raw_qr = KVD__V1__QUERY_REQUEST__INIT;
    raw_qr.sequence_id = seq;
    raw_qr.mode = KVD__V1__QUERY_MODE__QUERY_MODE_METADATA;
    Kvd__V1__Request raw_query = KVD__V1__REQUEST__INIT;
    raw_query.protocol_version = KVD_PROTOCOL_VERSION;
    raw_query.body_case = KVD__V1__REQUEST__BODY_QUERY;
    raw_query.query = &raw_qr;
    size_t stats_reply = 0, query_reply = 0;
    kvd_stats st;
    kvd_query_result *q = NULL;
    /* Warm up both sides (connections, allocator, caches). */
    for (long long i = 0; i < warmup; i++) {
        CHECK(c, "stats", kvd_client_stats(c, 0, &st));
        CHECK(c, "query metadata", kvd_client_query(c, seq, KVD_QUERY_METADATA, NULL, 0, &q));
        if (q->num_heads != (size_t)L.layers * L.kv_heads || q->heads[0].num_tokens != tokens)
            die("query metadata: %zu heads of %u tokens, expected %u of %lld", q->num_heads,
                q->heads[0].num_tokens, L.layers * L.kv_heads, tokens);
        kvd_query_result_free(q);
        echo_rt(&e, payload, stats_bytes);
        echo_rt(&e, payload, query_bytes);
        stats_reply = raw_kvd_rt(&raw, &raw_stats, &raw_id, 1);
        query_reply = raw_kvd_rt(&raw, &raw_query, &raw_id, 1);
    }
    if (!warmup) {
        stats_reply = raw_kvd_rt(&raw, &raw_stats, &raw_id, 1);
        query_reply = raw_kvd_rt(&raw, &raw_query, &raw_id, 1);
    }
    samples s_stats = {0}, s_query = {0}, e_stats = {0}, e_query = {0}, r_stats = {0},
            r_query = {0};
    while ((long long)s_stats.n < n) {
        long long b = n - (long long)s_stats.n < block ? n - (long long)s_stats.n : block;
        for (long long i = 0; i < b; i++) {
            double t = now_s();
            kvd_result rc = kvd_client_stats(c, 0, &st);
            double dt = now_s() - t;
            if (rc) die("stats: %s (%s)", kvd_client_last_error(c), kvd_result_name(rc));
            push(&s_stats, dt);
        }
        for (long long i = 0; i < b; i++) {
            double t = now_s();
            echo_rt(&e, payload, stats_bytes);
            push(&e_stats, now_s() - t);
        }
        for (long long i = 0; i < b; i++) {
            double t = now_s();
            kvd_result rc = kvd_client_query(c, seq, KVD_QUERY_METADATA, NULL, 0, &q);
            if (rc == KVD_OK) kvd_query_result_free(q);
            double dt = now_s() - t;
            if (rc) die("query metadata: %s (%s)", kvd_client_last_error(c), kvd_result_name(rc));
            push(&s_query, dt);
        }
        for (long long i = 0; i < b; i++) {
            double t = now_s();
            echo_rt(&e, payload, query_bytes);
            push(&e_query, now_s() - t);
        }
        for (long long i = 0; i < b; i++) {
            double t = now_s();
            raw_kvd_rt(&raw, &raw_stats, &raw_id, 0);
            push(&r_stats, now_s() - t);
        }
        for (long long i = 0; i < b; i++) {
            double t = now_s();
            raw_kvd_rt(&raw, &raw_query, &raw_id, 0);
            push(&r_query, now_s() - t);
        }
    }
    /* The raw rows were not checked in the loop; check the connection still answers. */
    raw_kvd_rt(&raw, &raw_stats, &raw_id, 1);
    const char *tk = transport_of(kep), *te = transport_of(eep);
    print_latency("echo_stats_size", te, stats_bytes, &e_stats, NULL, NULL, with_samples, 0, 0);
    print_latency("stats", tk, stats_bytes, &s_stats, &e_stats, "echo_stats_size", with_samples,
                  0, stats_reply);
    print_latency("stats_raw", tk, stats_bytes, &r_stats, &e_stats, "echo_stats_size",
                  with_samples, 0, stats_reply);
    print_latency("echo_query_metadata_size", te, query_bytes, &e_query, NULL, NULL,
                  with_samples, 0, 0);
    print_latency("query_metadata", tk, query_bytes, &s_query, &e_query,
                  "echo_query_metadata_size", with_samples, (uint32_t)tokens, query_reply);
    print_latency("query_metadata_raw", tk, query_bytes, &r_query, &e_query,
                  "echo_query_metadata_size", with_samples, (uint32_t)tokens, query_reply);
    if (strcmp(tk, te) != 0)
        fprintf(stderr, "kvd-bench-client: warning: kvd over %s, echo over %s\n", tk, te);

    CHECK(c, "release", kvd_client_release(c, seq, NULL, NULL));
    echo_close(&e);
    echo_close(&raw);
    kvd_client_free(c);
    free(s_stats.v); free(s_query.v); free(e_stats.v); free(e_query.v);
    free(r_stats.v); free(r_query.v);
    return 0;
}

/* ------------------------------------------------------------------------------------------- */
/* data: append / query throughput vs memcpy and raw echo of the same bytes                      */

/* Minor page faults of this process so far (a data row's client-side faults hint at fresh
 * buffers or shm pages being touched for the first time). */
static long long minflt(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_minflt;
}

static void print_tput(const char *name, const char *transport, uint64_t bytes, uint32_t tokens,
                       const samples *s, const samples *base, const char *base_name,
                       int with_samples, long long faults) {
    summary a = summarize(s);
    jbegin("data", name, transport, bytes, "GB/s");
    jint("tokens", tokens);
    jint("n", s->n);
    jnum("client_minor_faults", s->n ? (double)faults / (double)s->n : 0);
    jnum("gbps_best", (double)bytes / a.min / 1e9);
    jnum("gbps_median", (double)bytes / a.median / 1e9);
    jnum("gbps_worst", (double)bytes / a.max / 1e9);
    jnum("seconds_min", a.min);
    jnum("seconds_median", a.median);
    if (base) {
        summary b = summarize(base);
        jstr("baseline", base_name);
        jnum("baseline_gbps_best", (double)bytes / b.min / 1e9);
        jnum("baseline_gbps_median", (double)bytes / b.median / 1e9);
        /* throughput ratios: kvd / baseline (1.0 = as fast as the baseline) */
        jnum("ratio_best", b.min / a.min);
        jnum("ratio_median", b.median / a.median);
    }
    if (with_samples) jarr("seconds", s, 1.0);
    jend();
}

static int cmd_data(opts *o) {
    static const char *const allowed[] = {"kvd", "echo", "model", "mib", "repeats", "warmup",
                                          "samples!", "timeout-ms", NULL};
    o->allowed = allowed;
    opts_check(o);
    const char *kep = opt_required(o, "kvd"), *eep = opt_required(o, "echo");
    const char *model = opt_str(o, "model", "llama3-8b-slice");
    const char *mib_list = opt_str(o, "mib", "1,4,16,64");
    long long repeats = opt_int(o, "repeats", 5, 1), warmup = opt_int(o, "warmup", 1, 0);
    int timeout = (int)opt_int(o, "timeout-ms", 30000, 1), with_samples = opt_flag(o, "samples");

    /* Parse the sizes first, so a typo fails before anything runs. */
    double sizes[64];
    int nsizes = 0;
    {
        char *copy = strdup(mib_list), *save = NULL;
        if (!copy) die("out of memory");
        for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
            char *end;
            double x = strtod(t, &end);
            if (*end || end == t || !(x > 0) || nsizes == 64) {
                fprintf(stderr, "kvd-bench-client: --mib: bad size \"%s\"\n", t);
                usage();
            }
            sizes[nsizes++] = x;
        }
        free(copy);
        if (!nsizes) usage();
    }

    kvd_client *c = kvd_open(kep, timeout, "kvd-bench-client data");
    kvd_model_layout L = find_model(c, model);
    size_t es = kvd_dtype_size(L.dtype);
    size_t heads = (size_t)L.layers * L.kv_heads;
    size_t token_kv = 2 * heads * L.head_dim * es; /* K+V bytes of one token, all heads */
    echo_conn e = echo_open(eep, timeout);
    echo_rt(&e, "ping", 4); /* fail before creating anything when kvd-echo is not there */
    echo_conn raw = echo_open(kep, timeout); /* plain DEALER to kvd: the raw inline query row */
    uint64_t raw_id = 1;
    const char *tk = transport_of(kep), *te = transport_of(eep);
    if (strcmp(tk, te) != 0)
        fprintf(stderr, "kvd-bench-client: warning: kvd over %s, echo over %s\n", tk, te);

    for (int si = 0; si < nsizes; si++) {
        double want = sizes[si] * 1048576.0;
        if (fmod(want, (double)token_kv) != 0)
            die("%g MiB is not a whole number of tokens of %s (%zu bytes of K+V each)", sizes[si],
                model, token_kv);
        uint32_t tokens = (uint32_t)(want / (double)token_kv);
        size_t S = (size_t)tokens * token_kv, half = S / 2, per_head = half / heads;

        uint8_t *K = xmalloc(half), *V = xmalloc(half), *Ko = xmalloc(half), *Vo = xmalloc(half);
        uint8_t *src = xmalloc(S), *dst = xmalloc(S);
        fill_random(K, half, 11 + si);
        fill_random(V, half, 13 + si);
        memset(Ko, 1, half);
        memset(Vo, 1, half);
        fill_random(src, S, 17 + si);
        memset(dst, 0, S);

        samples m = {0}, ech = {0}, ai = {0}, az = {0}, qi = {0}, qp = {0}, qr = {0};
        /* client minor faults per row, over the kept repeats */
        samples az_res = {0}, az_wr = {0}, az_com = {0}, qp_q = {0}, qp_cp = {0};
        long long fm = 0, fech = 0, fai = 0, faz = 0, fqi = 0, fqp = 0, fqr = 0, f0;
        for (long long r = -warmup; r < repeats; r++) {
            int keep = r >= 0, verify = r == -warmup;
            double t;
            uint64_t seq;

            f0 = minflt();
            t = now_s();
            memcpy(dst, src, S);
            if (keep) push(&m, now_s() - t), fm += minflt() - f0;

            /* append inline, then query inline */
            CHECK(c, "create_sequence", kvd_client_create_sequence(c, model, 0, "bench-data", &seq));
            kvd_append_result ar;
            f0 = minflt();
            t = now_s();
            kvd_result rc = kvd_client_append(c, seq, L.dtype, L.layers, L.kv_heads, tokens,
                                              L.head_dim, K, V, &ar);
            double dt = now_s() - t;
            if (rc) die("append inline of %u tokens (%zu bytes): %s (%s)", tokens, S,
                        kvd_client_last_error(c), kvd_result_name(rc));
            if (ar.length != tokens) die("append inline: length %" PRIu64 " after %u tokens",
                                         ar.length, tokens);
            if (keep) push(&ai, dt), fai += minflt() - f0;

            kvd_query_result *q = NULL;
            f0 = minflt();
            t = now_s();
            rc = kvd_client_query(c, seq, KVD_QUERY_INLINE, NULL, 0, &q);
            dt = now_s() - t;
            if (rc) die("query inline of %u tokens (%zu bytes): %s (%s)", tokens, S,
                        kvd_client_last_error(c), kvd_result_name(rc));
            if (q->num_heads != heads) die("query inline: %zu heads", q->num_heads);
            if (verify)
                for (size_t h = 0; h < heads; h++)
                    if (q->heads[h].num_tokens != tokens ||
                        memcmp(q->heads[h].keys, K + h * per_head, per_head) != 0 ||
                        memcmp(q->heads[h].values, V + h * per_head, per_head) != 0)
                        die("query inline: head %zu differs from what was appended", h);
            t = now_s();
            kvd_query_result_free(q);
            dt += now_s() - t; /* freeing the reply's S bytes is part of the cost */
            if (keep) push(&qi, dt), fqi += minflt() - f0; /* (includes the verify pass) */

            /* the same Query INLINE without libkvdclient: send, receive the reply, no decoding */
            Kvd__V1__QueryRequest rq = KVD__V1__QUERY_REQUEST__INIT;
            rq.sequence_id = seq;
            rq.mode = KVD__V1__QUERY_MODE__QUERY_MODE_INLINE;
            Kvd__V1__Request rr = KVD__V1__REQUEST__INIT;
            rr.protocol_version = KVD_PROTOCOL_VERSION;
            rr.body_case = KVD__V1__REQUEST__BODY_QUERY;
            rr.query = &rq;
            f0 = minflt();
            t = now_s();
            size_t got = raw_kvd_rt(&raw, &rr, &raw_id, 0);
            dt = now_s() - t;
            if (got < S) die("raw query inline: a reply of %zu bytes for %zu bytes of K/V", got, S);
            if (keep) push(&qr, dt), fqr += minflt() - f0;
            if (verify) raw_kvd_rt(&raw, &rr, &raw_id, 1);
            CHECK(c, "release", kvd_client_release(c, seq, NULL, NULL));

            f0 = minflt();
            t = now_s();
            memcpy(dst, src, S);
            if (keep) push(&m, now_s() - t), fm += minflt() - f0;

            /* append zero-copy (Reserve, write the caller's bytes into the pages, Commit), then
             * query pages and copy every head's K/V out into one contiguous caller buffer */
            CHECK(c, "create_sequence", kvd_client_create_sequence(c, model, 0, "bench-data", &seq));
            /* What kvd_client_append_zero_copy does, phase by phase (timed separately too). */
            f0 = minflt();
            t = now_s();
            kvd_reservation *res = NULL;
            rc = kvd_client_reserve(c, seq, tokens, &res);
            double t1 = now_s();
            if (rc) die("reserve of %u tokens (%zu bytes): %s (%s)", tokens, S,
                        kvd_client_last_error(c), kvd_result_name(rc));
            kvd_result wrc = kvd_reservation_write(res, K, V, half);
            double t2 = now_s();
            if (wrc) die("kvd_reservation_write: %s", kvd_result_name(wrc));
            rc = kvd_client_commit(c, res, tokens, &ar);
            kvd_reservation_free(res);
            dt = now_s() - t;
            if (rc) die("commit of %u tokens (%zu bytes): %s (%s)", tokens, S,
                        kvd_client_last_error(c), kvd_result_name(rc));
            if (keep) push(&az_res, t1 - t), push(&az_wr, t2 - t1), push(&az_com, t - t2 + dt);
            if (ar.length != tokens) die("append zero-copy: length %" PRIu64 " after %u tokens",
                                         ar.length, tokens);
            if (keep) push(&az, dt), faz += minflt() - f0;

            if (verify) {
                memset(Ko, 1, half);
                memset(Vo, 1, half);
            }
            f0 = minflt();
            t = now_s();
            rc = kvd_client_query(c, seq, KVD_QUERY_PAGES, NULL, 0, &q);
            if (rc) die("query pages of %u tokens: %s (%s)", tokens, kvd_client_last_error(c),
                        kvd_result_name(rc));
            if (q->num_heads != heads) die("query pages: %zu heads", q->num_heads);
            t1 = now_s();
            for (size_t h = 0; h < heads; h++) {
                size_t need = 0;
                kvd_result crc = kvd_query_copy_head(q, h, Ko + h * per_head, Vo + h * per_head,
                                                     per_head, &need);
                if (crc) die("kvd_query_copy_head %zu: %s (needed %zu, have %zu)", h,
                             kvd_result_name(crc), need, per_head);
            }
            t2 = now_s();
            kvd_query_result_free(q);
            dt = now_s() - t;
            if (keep) push(&qp, dt), fqp += minflt() - f0, push(&qp_q, t1 - t), push(&qp_cp, t2 - t1);
            if (verify && (memcmp(Ko, K, half) != 0 || memcmp(Vo, V, half) != 0))
                die("query pages: the copied K/V differ from what was appended");
            CHECK(c, "release", kvd_client_release(c, seq, NULL, NULL));

            f0 = minflt();
            t = now_s();
            memcpy(dst, src, S);
            if (keep) push(&m, now_s() - t), fm += minflt() - f0;

            /* raw ZeroMQ echo of S bytes */
            f0 = minflt();
            t = now_s();
            echo_rt(&e, src, S);
            if (keep) push(&ech, now_s() - t), fech += minflt() - f0;
        }
        if (memcmp(dst, src, 64) != 0) die("memcpy check"); /* keep the copies observable */

        print_tput("memcpy", "memory", S, tokens, &m, NULL, NULL, with_samples, fm);
        print_tput("echo", te, S, tokens, &ech, NULL, NULL, with_samples, fech);
        print_tput("append_inline", tk, S, tokens, &ai, &ech, "echo", with_samples, fai);
        print_tput("query_inline", tk, S, tokens, &qi, &ech, "echo", with_samples, fqi);
        print_tput("query_inline_raw", tk, S, tokens, &qr, &ech, "echo", with_samples, fqr);
        print_tput("append_zero_copy", tk, S, tokens, &az, &m, "memcpy", with_samples, faz);
        print_tput("query_pages_copy", tk, S, tokens, &qp, &m, "memcpy", with_samples, fqp);
        /* the phases of the two zero-copy rows: round trips vs the copy into / out of shm */
        print_tput("append_zero_copy.reserve_rpc", tk, S, tokens, &az_res, NULL, NULL,
                   with_samples, 0);
        print_tput("append_zero_copy.write", "memory", S, tokens, &az_wr, &m, "memcpy",
                   with_samples, 0);
        print_tput("append_zero_copy.commit_rpc", tk, S, tokens, &az_com, NULL, NULL,
                   with_samples, 0);
        print_tput("query_pages_copy.query_rpc", tk, S, tokens, &qp_q, NULL, NULL, with_samples,
                   0);
        print_tput("query_pages_copy.copy", "memory", S, tokens, &qp_cp, &m, "memcpy",
                   with_samples, 0);
        free(az_res.v); free(az_wr.v); free(az_com.v); free(qp_q.v); free(qp_cp.v);
        free(m.v); free(ech.v); free(ai.v); free(az.v); free(qi.v); free(qp.v); free(qr.v);
        free(K); free(V); free(Ko); free(Vo); free(src); free(dst);
    }
    echo_close(&e);
    echo_close(&raw);
    kvd_client_free(c);
    return 0;
}

/* ------------------------------------------------------------------------------------------- */
/* scale: C threads, one kvd_client each, mixed append / query / compact over their sequences     */

#define MAX_ERRORS_KEPT 8

static struct {
    const char *ep, *model;
    kvd_model_layout L;
    int timeout;
    uint32_t append_tokens, max_tokens, keep, initial_tokens;
    long long ops_per_thread; /* 0: run until stop */
    atomic_int stop, setup_failed;
    pthread_barrier_t start, done_setup;
    pthread_mutex_t err_lock;
    char *errors[MAX_ERRORS_KEPT];
    int n_errors_kept;
} G;

typedef struct worker {
    pthread_t tid;
    int idx;
    size_t first_seq, nseq;
    uint64_t *seqs;
    uint32_t *held;
    uint64_t ops, appends, appends_zc, queries, compacts, requests, errors, cleanup_errors;
    samples lat;
} worker;

static void record_error(worker *w, const char *op, uint64_t seq, kvd_result rc, kvd_client *c) {
    w->errors++;
    pthread_mutex_lock(&G.err_lock);
    if (G.n_errors_kept < MAX_ERRORS_KEPT) {
        char *m = NULL;
        if (asprintf(&m, "client %d, %s of sequence %" PRIu64 ": %s (%s)", w->idx, op, seq,
                     c ? kvd_client_last_error(c) : "", kvd_result_name(rc)) >= 0)
            G.errors[G.n_errors_kept++] = m;
        fprintf(stderr, "kvd-bench-client: scale: %s\n", m ? m : op);
    }
    pthread_mutex_unlock(&G.err_lock);
}

static void *worker_main(void *arg) {
    worker *w = arg;
    const kvd_model_layout *L = &G.L;
    kvd_client *c = NULL;
    size_t es = kvd_dtype_size(L->dtype);
    size_t max_t = G.append_tokens > G.initial_tokens ? G.append_tokens : G.initial_tokens;
    size_t kv = (size_t)L->layers * L->kv_heads * max_t * L->head_dim * es;
    uint8_t *K = xmalloc(kv), *V = xmalloc(kv);
    fill_random(K, kv, 100 + (uint64_t)w->idx);
    fill_random(V, kv, 200 + (uint64_t)w->idx);
    int failed = 0;

    /* Setup (not timed): a client, its sequences, an initial append each. */
    {
        kvd_client_options o = {0};
        o.struct_size = sizeof o;
        o.timeout_ms = G.timeout;
        o.client_name = "kvd-bench-client scale";
        char err[512];
        kvd_result rc = kvd_client_connect(G.ep, &o, &c, err, sizeof err);
        if (rc) {
            fprintf(stderr, "kvd-bench-client: scale: client %d: connect: %s\n", w->idx, err);
            failed = 1;
        }
        for (size_t i = 0; !failed && i < w->nseq; i++) {
            rc = kvd_client_create_sequence(c, G.model, 0, "bench-scale", &w->seqs[i]);
            if (!rc && G.initial_tokens)
                rc = kvd_client_append(c, w->seqs[i], L->dtype, L->layers, L->kv_heads,
                                       G.initial_tokens, L->head_dim, K, V, NULL);
            if (rc) {
                fprintf(stderr, "kvd-bench-client: scale: client %d: setup of sequence %zu: %s "
                        "(%s)\n", w->idx, i, kvd_client_last_error(c), kvd_result_name(rc));
                failed = 1;
            }
            w->held[i] = G.initial_tokens;
        }
    }
    if (failed) atomic_store(&G.setup_failed, 1);
    pthread_barrier_wait(&G.done_setup);
    pthread_barrier_wait(&G.start);

    if (!atomic_load(&G.setup_failed)) {
        uint32_t sinks = 4, recent = G.keep - sinks, window = 8, budget = G.keep - window;
        kvd_param sparams[2] = {kvd_param_int("sinks", sinks), kvd_param_int("recent", recent)};
        kvd_param kparams[2] = {kvd_param_int("budget", budget), kvd_param_int("window", window)};
        uint64_t step = 0;
        while (G.ops_per_thread ? (long long)w->ops < G.ops_per_thread
                                : !atomic_load_explicit(&G.stop, memory_order_relaxed)) {
            size_t i = step % w->nseq;
            uint64_t round = step / w->nseq, seq = w->seqs[i];
            step++;
            double t;
            kvd_result rc;

            /* append 16 tokens, inline and zero-copy on alternate rounds */
            int zc = (int)((round + i) & 1);
            t = now_s();
            rc = zc ? kvd_client_append_zero_copy(c, seq, L->dtype, L->layers, L->kv_heads,
                                                  G.append_tokens, L->head_dim, K, V, NULL)
                    : kvd_client_append(c, seq, L->dtype, L->layers, L->kv_heads,
                                        G.append_tokens, L->head_dim, K, V, NULL);
            push(&w->lat, now_s() - t);
            w->ops++;
            w->appends++;
            w->appends_zc += (uint64_t)zc;
            w->requests += zc ? 2 : 1;
            if (rc) record_error(w, zc ? "append zero-copy" : "append inline", seq, rc, c);
            else w->held[i] += G.append_tokens;

            /* query pages (views into shm); touch the newest token of the first head */
            kvd_query_result *q = NULL;
            t = now_s();
            rc = kvd_client_query(c, seq, KVD_QUERY_PAGES, NULL, 0, &q);
            if (!rc) {
                const kvd_head_view *hv = &q->heads[0];
                if (q->num_heads != (size_t)L->layers * L->kv_heads ||
                    hv->num_tokens != w->held[i]) {
                    w->errors++;
                    pthread_mutex_lock(&G.err_lock);
                    if (G.n_errors_kept < MAX_ERRORS_KEPT &&
                        asprintf(&G.errors[G.n_errors_kept], "client %d, query of sequence %"
                                 PRIu64 ": %zu heads, %u tokens; expected %u", w->idx, seq,
                                 q->num_heads, hv->num_tokens, w->held[i]) >= 0)
                        G.n_errors_kept++;
                    pthread_mutex_unlock(&G.err_lock);
                    w->held[i] = hv->num_tokens;
                } else if (hv->num_tokens) {
                    uint32_t last = hv->num_tokens - 1;
                    volatile const uint8_t *p =
                        (const uint8_t *)hv->key_pages[last / q->page_tokens] +
                        (size_t)(last % q->page_tokens) * L->head_dim * es;
                    (void)*p;
                }
                kvd_query_result_free(q);
            }
            push(&w->lat, now_s() - t);
            w->ops++;
            w->queries++;
            w->requests++;
            if (rc) record_error(w, "query pages", seq, rc, c);

            /* compact when the next append would pass max_tokens: streamingllm and knorm on
             * alternate turns, down to `keep` tokens per head */
            if (w->held[i] + G.append_tokens > G.max_tokens) {
                int kn = (int)(round & 1);
                kvd_compact_options co = {0};
                co.struct_size = sizeof co;
                co.method = kn ? "knorm" : "streamingllm";
                co.params = kn ? kparams : sparams;
                co.num_params = 2;
                kvd_compact_result *cr = NULL;
                t = now_s();
                rc = kvd_client_compact(c, seq, &co, &cr);
                push(&w->lat, now_s() - t);
                w->ops++;
                w->compacts++;
                w->requests++;
                if (rc) {
                    record_error(w, co.method, seq, rc, c);
                } else {
                    w->held[i] = cr->num_heads ? cr->heads[0].kept : 0;
                    kvd_compact_result_free(cr);
                }
            }
        }
    }

    /* Cleanup (not timed). */
    pthread_barrier_wait(&G.start);
    for (size_t i = 0; c && i < w->nseq; i++) {
        if (!w->seqs[i]) continue;
        kvd_result rc = kvd_client_release(c, w->seqs[i], NULL, NULL);
        if (rc) {
            w->cleanup_errors++;
            fprintf(stderr, "kvd-bench-client: scale: client %d: release %" PRIu64 ": %s (%s)\n",
                    w->idx, w->seqs[i], kvd_client_last_error(c), kvd_result_name(rc));
        }
    }
    kvd_client_free(c);
    free(K);
    free(V);
    return NULL;
}

/* utime + stime of a process in seconds, from /proc/PID/stat; < 0 if unreadable. */
static double proc_cpu_s(long pid) {
    char path[64], buf[4096];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')'); /* the command name may contain spaces */
    if (!p) return -1;
    unsigned long long ut = 0, st = 0;
    /* after ")": state(3) ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt
     * utime(14) stime(15) */
    if (sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static double self_cpu_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec * 1e-6;
}

static int cmd_scale(opts *o) {
    static const char *const allowed[] = {"kvd", "model", "clients", "sequences", "seconds",
                                          "ops", "kvd-pid", "append-tokens", "max-tokens", "keep",
                                          "initial-tokens", "samples!", "timeout-ms", NULL};
    o->allowed = allowed;
    opts_check(o);
    G.ep = opt_required(o, "kvd");
    G.model = opt_str(o, "model", "smollm2-135m");
    int clients = (int)opt_int(o, "clients", 1, 1);
    long long nseq = opt_int(o, "sequences", 1000, 1);
    double seconds = opt_double(o, "seconds", 0);
    long long ops = opt_int(o, "ops", 0, 0);
    long pid = (long)opt_int(o, "kvd-pid", 0, 0);
    G.append_tokens = (uint32_t)opt_int(o, "append-tokens", 16, 1);
    G.max_tokens = (uint32_t)opt_int(o, "max-tokens", 64, 2);
    G.keep = (uint32_t)opt_int(o, "keep", 32, 13);
    G.initial_tokens = (uint32_t)opt_int(o, "initial-tokens", 32, 0);
    G.timeout = (int)opt_int(o, "timeout-ms", 30000, 1);
    int with_samples = opt_flag(o, "samples");
    if ((seconds > 0) == (ops > 0)) {
        fprintf(stderr, "kvd-bench-client: scale: give exactly one of --seconds and --ops\n");
        usage();
    }
    if (clients > nseq) die("scale: %d clients for %lld sequences: each client needs one", clients,
                            nseq);
    if (G.keep >= G.max_tokens || G.initial_tokens > G.max_tokens ||
        G.keep + G.append_tokens > G.max_tokens)
        die("scale: need keep (%u) + append-tokens (%u) <= max-tokens (%u) and initial-tokens "
            "<= max-tokens", G.keep, G.append_tokens, G.max_tokens);
    G.ops_per_thread = ops ? (ops + clients - 1) / clients : 0;

    /* Check the arena can hold the worst case before starting. */
    kvd_client *c = kvd_open(G.ep, G.timeout, "kvd-bench-client scale");
    G.L = find_model(c, G.model);
    kvd_stats st;
    CHECK(c, "stats", kvd_client_stats(c, 0, &st));
    uint64_t per_head_pages = (G.max_tokens + G.L.page_tokens - 1) / G.L.page_tokens;
    uint64_t need = (uint64_t)nseq * G.L.layers * G.L.kv_heads * per_head_pages;
    if (need > st.free_pages)
        die("scale: %lld sequences of up to %u tokens need up to %" PRIu64 " pages; the arena "
            "has %u free of %u. Lower --max-tokens or --sequences, or enlarge the arena",
            nseq, G.max_tokens, need, st.free_pages, st.total_pages);
    kvd_client_free(c);

    pthread_mutex_init(&G.err_lock, NULL);
    pthread_barrier_init(&G.done_setup, NULL, (unsigned)clients + 1);
    pthread_barrier_init(&G.start, NULL, (unsigned)clients + 1);
    worker *ws = calloc((size_t)clients, sizeof *ws);
    if (!ws) die("out of memory");
    size_t at = 0;
    for (int i = 0; i < clients; i++) {
        worker *w = &ws[i];
        w->idx = i;
        w->nseq = (size_t)(nseq / clients + (i < nseq % clients));
        w->first_seq = at;
        at += w->nseq;
        w->seqs = calloc(w->nseq, sizeof *w->seqs);
        w->held = calloc(w->nseq, sizeof *w->held);
        if (!w->seqs || !w->held) die("out of memory");
        if (pthread_create(&w->tid, NULL, worker_main, w) != 0) die("pthread_create failed");
    }
    pthread_barrier_wait(&G.done_setup);
    if (atomic_load(&G.setup_failed)) {
        pthread_barrier_wait(&G.start);
        pthread_barrier_wait(&G.start);
        for (int i = 0; i < clients; i++) pthread_join(ws[i].tid, NULL);
        die("scale: setup failed (see above)");
    }
    double d0 = pid ? proc_cpu_s(pid) : -1;
    if (pid && d0 < 0) die("scale: cannot read /proc/%ld/stat", pid);
    double c0 = self_cpu_s(), t0 = now_s();
    pthread_barrier_wait(&G.start);
    if (!ops) {
        struct timespec ts = {(time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9)};
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
        atomic_store(&G.stop, 1);
    }
    /* The workers meet at the start barrier again when done; that is the end of the timing. */
    pthread_barrier_wait(&G.start);
    double wall = now_s() - t0, cpu = self_cpu_s() - c0;
    double d1 = pid ? proc_cpu_s(pid) : -1;
    for (int i = 0; i < clients; i++) pthread_join(ws[i].tid, NULL);

    uint64_t total = 0, app = 0, appzc = 0, qry = 0, cmp = 0, req = 0, err = 0, cerr = 0;
    samples lat = {0};
    for (int i = 0; i < clients; i++) {
        worker *w = &ws[i];
        total += w->ops; app += w->appends; appzc += w->appends_zc; qry += w->queries;
        cmp += w->compacts; req += w->requests; err += w->errors; cerr += w->cleanup_errors;
        for (size_t k = 0; k < w->lat.n; k++) push(&lat, w->lat.v[k]);
    }
    summary ls = summarize(&lat);
    size_t es = kvd_dtype_size(G.L.dtype);
    uint64_t append_bytes = 2ull * G.L.layers * G.L.kv_heads * G.append_tokens * G.L.head_dim * es;
    jbegin("scale", "mixed", transport_of(G.ep), append_bytes, "ops/s");
    jint("clients", (uint64_t)clients);
    jint("sequences", (uint64_t)nseq);
    jstr("model", G.model);
    jint("append_tokens", G.append_tokens);
    jint("max_tokens", G.max_tokens);
    jint("keep", G.keep);
    jint("ops", total);
    jint("appends", app);
    jint("appends_zero_copy", appzc);
    jint("queries", qry);
    jint("compacts", cmp);
    jint("requests", req);
    jint("errors", err);
    jint("cleanup_errors", cerr);
    jnum("wall_s", wall);
    jnum("ops_per_s", (double)total / wall);
    jnum("client_cpu_s", cpu);
    if (pid) {
        double dcpu = d1 - d0;
        jint("kvd_pid", (uint64_t)pid);
        jnum("daemon_cpu_s", dcpu);
        jnum("ops_per_daemon_cpu_s", dcpu > 0 ? (double)total / dcpu : NAN);
        jnum("ops_per_cpu_s", dcpu + cpu > 0 ? (double)total / (dcpu + cpu) : NAN);
    }
    jnum("op_p50_us", ls.p50 * 1e6);
    jnum("op_p99_us", ls.p99 * 1e6);
    jkey("first_errors");
    putchar('[');
    for (int i = 0; i < G.n_errors_kept; i++) {
        if (i) putchar(',');
        jstr_raw(G.errors[i]);
        free(G.errors[i]);
    }
    putchar(']');
    if (with_samples) jarr("op_samples_us", &lat, 1e6);
    jend();

    for (int i = 0; i < clients; i++) {
        free(ws[i].seqs);
        free(ws[i].held);
        free(ws[i].lat.v);
    }
    free(ws);
    free(lat.v);
    return cerr ? 1 : 0;
}

int main(int argc, char **argv) {
    if (argc < 2) usage();
    opts o = {argc - 2, argv + 2, NULL};
    if (strcmp(argv[1], "rtt") == 0) return cmd_rtt(&o);
    if (strcmp(argv[1], "data") == 0) return cmd_data(&o);
    if (strcmp(argv[1], "scale") == 0) return cmd_scale(&o);
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage();
    }
    fprintf(stderr, "kvd-bench-client: unknown subcommand \"%s\"\n", argv[1]);
    usage();
}
