#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

/* ------------------------------------------------------------------------------------------- */
/* append: the per-decode-step cost of appending one token to every (layer, head), four ways,   */
/* against one raw ZeroMQ round trip through kvd-echo measured in the same run                 */

enum { M_ECHO, M_INLINE, M_RESERVE_COMMIT, M_KEEP, M_PIPELINED, M_PIPELINED8, M_COUNT };
static const char *const MODE_NAMES[M_COUNT] = {"echo", "inline", "reserve_commit", "keep_reserved",
                                                "pipelined", "pipelined_every8"};

typedef struct mode_state {
    uint64_t seq;
    uint64_t length;
    kvd_reservation *res; /* keep_reserved: the open reservation and how much of it is used */
    uint32_t used;
    kvd_pipeline *pipe;
} mode_state;

/* A fresh sequence for a mode (its old one released), outside the timed blocks: a sequence then
 * never grows past `max_len` tokens. */
static void renew(kvd_client *c, const char *model, mode_state *m, int mode, uint32_t window,
                  uint32_t ahead) {
    if (m->pipe) CHECK(c, "pipeline close", kvd_pipeline_close(m->pipe));
    m->pipe = NULL;
    if (m->res) {
        CHECK(c, "abort", kvd_client_abort(c, m->res));
        kvd_reservation_free(m->res);
        m->res = NULL;
    }
    if (m->seq) CHECK(c, "release", kvd_client_release(c, m->seq, NULL, NULL));
    CHECK(c, "create_sequence", kvd_client_create_sequence(c, model, 0, "bench-append", &m->seq));
    m->length = 0;
    if (mode == M_PIPELINED || mode == M_PIPELINED8)
        CHECK(c, "pipeline open", kvd_pipeline_open(c, m->seq, ahead, window, &m->pipe));
    if (mode == M_PIPELINED8) CHECK(c, "commit_every", kvd_pipeline_set_commit_every(m->pipe, 8));
}

int cmd_append(opts *o) {
    static const char *const allowed[] = {"kvd", "echo", "model", "steps", "block", "warmup",
                                          "window", "ahead", "max-len", "timeout-ms", NULL};
    o->allowed = allowed;
    opts_check(o);
    const char *kep = opt_required(o, "kvd"), *eep = opt_required(o, "echo");
    const char *model = opt_str(o, "model", "smollm2-135m");
    long long steps = opt_int(o, "steps", 4000, 1), block = opt_int(o, "block", 200, 1);
    long long warmup = opt_int(o, "warmup", 400, 0), window = opt_int(o, "window", 4, 1);
    long long ahead = opt_int(o, "ahead", 64, 1), max_len = opt_int(o, "max-len", 2048, 1);
    int timeout = (int)opt_int(o, "timeout-ms", 30000, 1);

    kvd_client *c = kvd_open(kep, timeout, "kvd-bench-client append");
    kvd_model_layout L = find_model(c, model);
    echo_conn e = echo_open(eep, timeout);
    size_t es = kvd_dtype_size(L.dtype), heads = (size_t)L.layers * L.kv_heads;
    size_t tb = (size_t)L.head_dim * es, step_bytes = heads * tb;
    uint8_t *k = xmalloc(step_bytes), *v = xmalloc(step_bytes);
    fill_random(k, step_bytes, 1);
    fill_random(v, step_bytes, 2);
    /* The echo carries a message of a keep_reserved Commit's size: what the pipelined and
     * keep_reserved modes send per step. */
    uint8_t payload[64];
    fill_random(payload, sizeof payload, 3);
    size_t echo_bytes = 24;

    mode_state ms[M_COUNT] = {{0}};
    for (int m = M_INLINE; m < M_COUNT; m++) renew(c, model, &ms[m], m, (uint32_t)window, (uint32_t)ahead);
    samples per_step[M_COUNT] = {{0}};
    long long total = warmup + steps;
    for (long long done = 0; done < total; done += block) {
        int timed = done >= warmup;
        for (int m = 0; m < M_COUNT; m++) {
            mode_state *s = &ms[m];
            if (m != M_ECHO && s->length + (uint64_t)block > (uint64_t)max_len)
                renew(c, model, s, m, (uint32_t)window, (uint32_t)ahead);
            double t0 = now_s();
            for (long long i = 0; i < block; i++) {
                switch (m) {
                case M_ECHO:
                    echo_rt(&e, payload, echo_bytes);
                    break;
                case M_INLINE:
                    CHECK(c, "append", kvd_client_append(c, s->seq, L.dtype, L.layers, L.kv_heads, 1,
                                                         L.head_dim, k, v, NULL));
                    break;
                case M_RESERVE_COMMIT:
                    CHECK(c, "append zero copy",
                          kvd_client_append_zero_copy(c, s->seq, L.dtype, L.layers, L.kv_heads, 1,
                                                      L.head_dim, k, v, NULL));
                    break;
                case M_KEEP:
                    if (!s->res) {
                        CHECK(c, "reserve", kvd_client_reserve(c, s->seq, (uint32_t)ahead, &s->res));
                        s->used = 0;
                    }
                    for (size_t h = 0; h < heads; h++) {
                        if (!s->res->heads[h].num_pages) continue;
                        memcpy(kvd_reservation_key(s->res, h, s->used), k + h * tb, tb);
                        memcpy(kvd_reservation_value(s->res, h, s->used), v + h * tb, tb);
                    }
                    CHECK(c, "commit keep", kvd_client_commit_keep(c, s->res, 1, NULL, 0, NULL, NULL));
                    if (++s->used == s->res->num_tokens) {
                        kvd_reservation_free(s->res); /* the last commit closed it */
                        s->res = NULL;
                    }
                    break;
                case M_PIPELINED:
                case M_PIPELINED8:
                    CHECK(c, "pipeline append", kvd_pipeline_append(s->pipe, k, v, 1, NULL, 0));
                    break;
                }
            }
            if (s->pipe) CHECK(c, "pipeline flush", kvd_pipeline_flush(s->pipe));
            double dt = now_s() - t0;
            s->length += (uint64_t)block;
            if (timed) push(&per_step[m], dt / (double)block);
        }
    }
    summary echo = summarize(&per_step[M_ECHO]);
    for (int m = 0; m < M_COUNT; m++) {
        summary a = summarize(&per_step[m]);
        jbegin("append", MODE_NAMES[m], transport_of(kep), m == M_ECHO ? echo_bytes : step_bytes * 2, "us");
        jstr("model", model);
        jint("blocks", per_step[m].n);
        jint("block", (uint64_t)block);
        jint("window", (uint64_t)window);
        jnum("median", a.median * 1e6);
        jnum("min", a.min * 1e6);
        jnum("max", a.max * 1e6);
        jnum("baseline_median", echo.median * 1e6);
        jnum("ratio", a.median / echo.median);
        jend();
    }
    for (int m = M_INLINE; m < M_COUNT; m++) {
        mode_state *s = &ms[m];
        if (s->pipe) CHECK(c, "pipeline close", kvd_pipeline_close(s->pipe));
        if (s->res) {
            CHECK(c, "abort", kvd_client_abort(c, s->res));
            kvd_reservation_free(s->res);
        }
        CHECK(c, "release", kvd_client_release(c, s->seq, NULL, NULL));
    }
    for (int m = 0; m < M_COUNT; m++) free(per_step[m].v);
    free(k);
    free(v);
    echo_close(&e);
    kvd_client_free(c);
    return 0;
}
