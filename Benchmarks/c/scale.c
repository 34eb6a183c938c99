#define _GNU_SOURCE /* asprintf */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

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

int cmd_scale(opts *o) {
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
