#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "bench.h"

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

int cmd_data(opts *o) {
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
