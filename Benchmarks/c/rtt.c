#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

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

int cmd_rtt(opts *o) {
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
    /* The same query asking for position runs (what libkvdclient sends since they exist). */
    Kvd__V1__QueryRequest raw_qr_runs = raw_qr;
    raw_qr_runs.position_runs = 1;
    Kvd__V1__Request raw_query_runs = raw_query;
    raw_query_runs.query = &raw_qr_runs;
    size_t stats_reply = 0, query_reply = 0, runs_reply = 0;
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
        runs_reply = raw_kvd_rt(&raw, &raw_query_runs, &raw_id, 1);
    }
    if (!warmup) {
        stats_reply = raw_kvd_rt(&raw, &raw_stats, &raw_id, 1);
        query_reply = raw_kvd_rt(&raw, &raw_query, &raw_id, 1);
        runs_reply = raw_kvd_rt(&raw, &raw_query_runs, &raw_id, 1);
    }
    samples s_stats = {0}, s_query = {0}, e_stats = {0}, e_query = {0}, r_stats = {0},
            r_query = {0}, r_runs = {0};
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
        for (long long i = 0; i < b; i++) {
            double t = now_s();
            raw_kvd_rt(&raw, &raw_query_runs, &raw_id, 0);
            push(&r_runs, now_s() - t);
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
    /* Its request is 2 bytes longer than the echo's message (the flag); the reply is shorter. */
    print_latency("query_metadata_runs_raw", tk, query_bytes + 2, &r_runs, &e_query,
                  "echo_query_metadata_size", with_samples, (uint32_t)tokens, runs_reply);
    if (strcmp(tk, te) != 0)
        fprintf(stderr, "kvd-bench-client: warning: kvd over %s, echo over %s\n", tk, te);

    CHECK(c, "release", kvd_client_release(c, seq, NULL, NULL));
    echo_close(&e);
    echo_close(&raw);
    kvd_client_free(c);
    free(s_stats.v); free(s_query.v); free(e_stats.v); free(e_query.v);
    free(r_stats.v); free(r_query.v); free(r_runs.v);
    return 0;
}
