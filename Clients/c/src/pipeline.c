/* libkvdclient pipelined appends (kvd_pipeline_*): K/V copied into reserved slots, Commit
 * {keep_reserved} sent without waiting, replies matched by request id when someone collects them.
 *
 * kvd__rpc_once drops a reply whose id is not the one it waits for, so before any other request of
 * the client goes out, kvd__pipelines_collect takes every reply still owed to a pipeline off the
 * socket. Replies may arrive in another order than the requests (kvd answers cheap requests on its
 * socket thread, others from workers): they are matched by id, never by position. */
#include "internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zmq.h>

typedef struct pending_commit {
    uint64_t rid, step, last_step, first;
    uint32_t tokens;
} pending_commit;

struct kvd_pipeline {
    kvd_client *c;
    struct kvd_pipeline *next;
    uint64_t seq;
    uint32_t ahead, window;
    seq_layout L;
    size_t heads, token_bytes;
    kvd_reservation *res;   /* the open reservation, or NULL */
    uint32_t used;          /* its tokens committed (sent) so far */
    uint64_t reserve_rid;   /* a Reserve sent and not answered (0: none) */
    uint64_t reserve_step;
    uint32_t reserve_tokens;
    pending_commit *commits; /* unanswered commits, oldest first; `window` + 2 slots (an append
                              * may add one past the window, the next request's flush one more) */
    uint32_t n_commits;
    uint32_t every;          /* commit_every: tokens per Commit (1: one per append) */
    uint32_t unsent;         /* tokens written into `res` whose Commit is not sent yet */
    int unsent_has_ids;
    uint64_t unsent_first_step, unsent_last_step;
    uint32_t *ids_buf;       /* their token ids */
    size_t ids_cap;
    uint64_t steps, sent_length, confirmed_length;
    kvd_result failed;       /* a refused commit: sticky */
    uint64_t failed_step;
    char *failed_msg;
    kvd_result deferred;     /* a failure nobody was told about yet */
    char *deferred_msg;
};

static void set_msg(char **slot, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_msg(char **slot, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *m = NULL;
    if (vasprintf(&m, fmt, ap) < 0) m = NULL;
    va_end(ap);
    free(*slot);
    *slot = m;
}

static const char *strip_kvd(const char *m) {
    if (!m) return "(no message)";
    return strncmp(m, "kvd: ", 5) == 0 ? m + 5 : m;
}

static kvd_result map_code(const Kvd__V1__Error *e) {
    int code = e ? (int)e->code : 0;
    return (code >= 1 && code <= KVD_ERR_EVICTED) ? (kvd_result)code : KVD_ERR_SERVER_OTHER;
}

/* Send without waiting for the reply; never blocks past the client's timeout. */
static kvd_result send_req(kvd_client *c, Kvd__V1__Request *req) {
    kvd_result stamped = kvd__stamp_request(c, req);
    if (stamped) return stamped;
    size_t size = kvd__v1__request__get_packed_size(req);
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf) return kvd__oom(c);
    kvd__v1__request__pack(req, buf);
    int64_t deadline = kvd__now_ms() + c->timeout_ms;
    for (;;) {
        if (zmq_send(c->sock, buf, size, ZMQ_DONTWAIT) >= 0) break;
        int e = zmq_errno();
        if (e == EINTR) continue;
        int64_t left = deadline - kvd__now_ms();
        zmq_pollitem_t it = {c->sock, 0, ZMQ_POLLOUT, 0};
        if (e != EAGAIN || left <= 0 || zmq_poll(&it, 1, (long)left) == 0) {
            free(buf);
            return kvd__set_err(c, e == EAGAIN ? KVD_ERR_TIMEOUT : KVD_ERR_SYSTEM,
                                "kvd: sending a pipelined request to %s: %s", c->endpoint,
                                e == EAGAIN ? "timed out" : zmq_strerror(e));
        }
    }
    free(buf);
    atomic_store(&c->last_send_ms, kvd__now_ms());
    return KVD_OK;
}

static void commit_failed(kvd_pipeline *p, const pending_commit *pc, kvd_result rc,
                          const char *why) {
    if (p->failed) return; /* a consequence of the first refusal, already on its way */
    p->failed = rc;
    p->failed_step = pc->step;
    char steps[64];
    if (pc->last_step == pc->step)
        snprintf(steps, sizeof steps, "step %llu", (unsigned long long)pc->step);
    else
        snprintf(steps, sizeof steps, "steps %llu-%llu", (unsigned long long)pc->step,
                 (unsigned long long)pc->last_step);
    set_msg(&p->failed_msg,
            "kvd: pipelined append %s of sequence %llu failed: commit of %u token(s) at "
            "position %llu: %s (nothing of that step was published; the last confirmed length "
            "is %llu)",
            steps, (unsigned long long)p->seq, pc->tokens, (unsigned long long)pc->first,
            strip_kvd(why), (unsigned long long)p->confirmed_length);
    if (!p->deferred) {
        p->deferred = rc;
        set_msg(&p->deferred_msg, "%s", p->failed_msg ? p->failed_msg : "kvd: pipelined commit failed");
    }
}

static void reserve_failed(kvd_pipeline *p, kvd_result rc, const char *why) {
    if (p->deferred) return;
    p->deferred = rc;
    set_msg(&p->deferred_msg,
            "kvd: pipelined append step %llu of sequence %llu failed: reserve of %u token(s): %s "
            "(nothing of that step was published; the last confirmed length is %llu)",
            (unsigned long long)p->reserve_step, (unsigned long long)p->seq, p->reserve_tokens,
            strip_kvd(why), (unsigned long long)p->confirmed_length);
}

static int take_commit(kvd_pipeline *p, uint64_t rid, pending_commit *out) {
    for (uint32_t i = 0; i < p->n_commits; i++) {
        if (p->commits[i].rid != rid) continue;
        *out = p->commits[i];
        memmove(p->commits + i, p->commits + i + 1, (p->n_commits - i - 1) * sizeof *p->commits);
        p->n_commits--;
        return 1;
    }
    return 0;
}

static void on_reply(kvd_client *c, Kvd__V1__Response *resp) {
    uint64_t rid = resp->header ? resp->header->request_id : 0;
    for (kvd_pipeline *p = c->pipes; p; p = p->next) {
        int is_error = resp->body_case == KVD__V1__RESPONSE__BODY_ERROR;
        const char *why = is_error && resp->error ? resp->error->message : NULL;
        pending_commit pc;
        if (rid != 0 && rid == p->reserve_rid) {
            p->reserve_rid = 0;
            if (is_error) {
                reserve_failed(p, map_code(resp->error), why);
            } else if (resp->body_case != KVD__V1__RESPONSE__BODY_RESERVE) {
                reserve_failed(p, KVD_ERR_PROTOCOL, "the daemon did not answer with a reserve");
            } else {
                uint64_t res_id;
                char *keep = strdup(c->err);
                kvd_result rc = kvd__reservation_from(c, p->seq, &p->L, p->reserve_tokens, resp,
                                                      &p->res, &res_id);
                resp = NULL; /* freed by kvd__reservation_from */
                if (rc) {
                    reserve_failed(p, rc, c->err);
                    p->res = NULL;
                }
                if (keep) {
                    snprintf(c->err, c->err_cap, "%s", keep);
                    free(keep);
                }
                p->used = 0;
            }
            if (resp) kvd__v1__response__free_unpacked(resp, NULL);
            return;
        }
        if (rid != 0 && take_commit(p, rid, &pc)) {
            if (is_error)
                commit_failed(p, &pc, map_code(resp->error), why);
            else if (resp->body_case != KVD__V1__RESPONSE__BODY_COMMIT)
                commit_failed(p, &pc, KVD_ERR_PROTOCOL, "the daemon did not answer with a commit");
            else
                p->confirmed_length = resp->commit->length;
            kvd__v1__response__free_unpacked(resp, NULL);
            return;
        }
    }
    kvd__v1__response__free_unpacked(resp, NULL); /* a late reply to a request that timed out */
}

static int due(const kvd_client *c) {
    for (const kvd_pipeline *p = c->pipes; p; p = p->next)
        if (p->reserve_rid || p->n_commits) return 1;
    return 0;
}

static kvd_result send_pending(kvd_pipeline *p);

/* Nothing came within the timeout: whether those requests applied is unknown. A fresh socket
 * keeps their late replies away from later requests. */
static void lost_all(kvd_client *c) {
    if (c->sock) zmq_close(c->sock);
    c->sock = NULL;
    kvd__open_socket(c);
    for (kvd_pipeline *p = c->pipes; p; p = p->next) {
        const char *why = "no reply within the timeout; is the daemon running?";
        if (p->reserve_rid) {
            p->reserve_rid = 0;
            reserve_failed(p, KVD_ERR_TIMEOUT, why);
        }
        while (p->n_commits) {
            pending_commit pc = p->commits[0];
            take_commit(p, pc.rid, &pc);
            commit_failed(p, &pc, KVD_ERR_TIMEOUT, why);
        }
    }
}

/* Take one reply off the socket (or declare everything due lost after the timeout). */
static kvd_result take_one(kvd_client *c) {
    if (!c->sock) {
        lost_all(c);
        return KVD_OK;
    }
    zmq_pollitem_t it = {c->sock, 0, ZMQ_POLLIN, 0};
    int64_t deadline = kvd__now_ms() + c->timeout_ms;
    for (;;) {
        int64_t left = deadline - kvd__now_ms();
        int n = left > 0 ? zmq_poll(&it, 1, (long)left) : 0;
        if (n < 0 && zmq_errno() == EINTR) continue;
        if (n < 0)
            return kvd__set_err(c, KVD_ERR_SYSTEM, "kvd: zmq_poll: %s", zmq_strerror(zmq_errno()));
        if (n == 0) {
            lost_all(c);
            return KVD_OK;
        }
        break;
    }
    zmq_msg_t part;
    if (kvd__recv_last_frame(c, &part)) {
        Kvd__V1__Response *resp =
            kvd__v1__response__unpack(NULL, zmq_msg_size(&part), zmq_msg_data(&part));
        if (resp) on_reply(c, resp);
    }
    zmq_msg_close(&part);
    return KVD_OK;
}

/* Collect until `p`'s request `rid` is answered (rid 0: until nothing is due), then report (once)
 * the first failure nobody was told about, unless this is the keep-alive thread. */
static kvd_result collect(kvd_client *c, kvd_pipeline *p, uint64_t rid) {
    /* Before another request (rid 0), written tokens whose Commit waits for more (commit_every)
     * go out first: that request then sees them committed. */
    for (kvd_pipeline *q = c->pipes; rid == 0 && q; q = q->next) {
        kvd_result rc = send_pending(q);
        if (rc) return rc;
    }
    for (;;) {
        int waiting;
        if (rid == 0) {
            waiting = due(c);
        } else {
            waiting = rid == p->reserve_rid;
            for (uint32_t i = 0; !waiting && i < p->n_commits; i++) waiting = p->commits[i].rid == rid;
        }
        if (!waiting) break;
        kvd_result rc = take_one(c);
        if (rc) return rc;
    }
    if (c->ka_active) return KVD_OK;
    for (kvd_pipeline *q = c->pipes; q; q = q->next) {
        if (!q->deferred) continue;
        kvd_result rc = q->deferred;
        kvd__set_err(c, rc, "%s", q->deferred_msg ? q->deferred_msg : "kvd: a pipelined step failed");
        q->deferred = KVD_OK;
        return rc;
    }
    return KVD_OK;
}

kvd_result kvd__pipelines_collect(kvd_client *c) {
    return collect(c, NULL, 0);
}

static kvd_result sticky(kvd_pipeline *p) {
    if (!p->failed) return KVD_OK;
    return kvd__set_err(p->c, p->failed, "%s",
                        p->failed_msg ? p->failed_msg : "kvd: a pipelined commit failed");
}

static kvd_result send_reserve(kvd_pipeline *p, uint32_t tokens, uint64_t step) {
    Kvd__V1__ReserveRequest rr = KVD__V1__RESERVE_REQUEST__INIT;
    rr.sequence_id = p->seq;
    rr.num_tokens = tokens;
    Kvd__V1__Request req = KVD__V1__REQUEST__INIT;
    req.body_case = KVD__V1__REQUEST__BODY_RESERVE;
    req.reserve = &rr;
    kvd_result rc = send_req(p->c, &req);
    if (rc) return rc;
    p->reserve_rid = req.request_id;
    p->reserve_step = step;
    p->reserve_tokens = tokens;
    return KVD_OK;
}

/* Send the Commit of the tokens written and not committed yet, if any. */
static kvd_result send_pending(kvd_pipeline *p) {
    if (!p->unsent || !p->res) return KVD_OK;
    Kvd__V1__CommitRequest cr = KVD__V1__COMMIT_REQUEST__INIT;
    cr.sequence_id = p->seq;
    cr.reservation_id = p->res->reservation_id;
    cr.num_tokens = p->unsent;
    cr.keep_reserved = 1;
    if (p->unsent_has_ids) {
        cr.token_ids.data = (uint8_t *)p->ids_buf;
        cr.token_ids.len = (size_t)p->unsent * 4;
    }
    Kvd__V1__Request req = KVD__V1__REQUEST__INIT;
    req.body_case = KVD__V1__REQUEST__BODY_COMMIT;
    req.commit = &cr;
    kvd_result rc = send_req(p->c, &req);
    if (rc) return rc;
    p->commits[p->n_commits++] = (pending_commit){req.request_id, p->unsent_first_step,
                                                  p->unsent_last_step, p->sent_length, p->unsent};
    p->sent_length += p->unsent;
    p->unsent = 0;
    if (p->used == p->res->num_tokens) {
        /* kvd closed the reservation with this commit: ask for the next one right behind it. */
        kvd_reservation_free(p->res);
        p->res = NULL;
        return send_reserve(p, p->ahead, p->unsent_last_step + 1);
    }
    return KVD_OK;
}

/* `m` tokens were written at the reservation's next slots: commit them now, or with the next
 * ones (commit_every). */
static kvd_result wrote(kvd_pipeline *p, uint32_t m, const uint32_t *ids, uint64_t step) {
    kvd_result rc;
    if (p->unsent && (ids != NULL) != p->unsent_has_ids && (rc = send_pending(p)))
        return rc; /* one Commit carries ids for all its tokens or none */
    if (!p->unsent) {
        p->unsent_has_ids = ids != NULL;
        p->unsent_first_step = step;
    }
    if (ids) {
        size_t need = (size_t)p->unsent + m;
        if (need > p->ids_cap) {
            uint32_t *b = realloc(p->ids_buf, need * sizeof *b);
            if (!b) return kvd__oom(p->c);
            p->ids_buf = b;
            p->ids_cap = need;
        }
        memcpy(p->ids_buf + p->unsent, ids, (size_t)m * sizeof *ids);
    }
    p->unsent += m;
    p->unsent_last_step = step;
    p->used += m;
    if (p->unsent >= p->every || p->used == p->res->num_tokens) return send_pending(p);
    return KVD_OK;
}

kvd_result kvd_pipeline_open(kvd_client *c, uint64_t seq, uint32_t ahead, uint32_t window,
                             kvd_pipeline **out) {
    if (!out) return KVD_ERR_ARGUMENT;
    *out = NULL;
    kvd_stats st;
    kvd_result rc = kvd_client_stats(c, seq, &st); /* Hello, the sequence exists, its length */
    if (rc) return rc;
    rc = kvd__enter(c, 0);
    if (rc) return rc;
    if (!ahead || !window)
        return kvd__leave(c, kvd__set_err(c, KVD_ERR_ARGUMENT,
                                          "kvd: pipeline_open: reserve_ahead (%u) and "
                                          "max_in_flight (%u) must be at least 1", ahead, window));
    kvd_pipeline *p = calloc(1, sizeof *p);
    if (!p || !(p->commits = calloc((size_t)window + 2, sizeof *p->commits))) {
        free(p);
        return kvd__leave(c, kvd__oom(c));
    }
    rc = kvd__layout_of(c, seq, &p->L);
    if (rc) {
        free(p->commits);
        free(p);
        return kvd__leave(c, rc);
    }
    p->c = c;
    p->seq = seq;
    p->ahead = ahead;
    p->window = window;
    p->every = 1;
    p->heads = (size_t)p->L.layers * p->L.kv_heads;
    p->token_bytes = (size_t)p->L.head_dim * kvd_dtype_size(p->L.dtype);
    p->sent_length = p->confirmed_length = st.sequence.length;
    p->next = c->pipes;
    c->pipes = p;
    *out = p;
    return kvd__leave(c, KVD_OK);
}

kvd_result kvd_pipeline_append(kvd_pipeline *p, const void *keys, const void *values,
                               uint32_t tokens, const uint32_t *ids, size_t n_ids) {
    if (!p) return KVD_ERR_ARGUMENT;
    kvd_client *c = p->c;
    kvd_result rc = kvd__enter(c, 0);
    if (rc) return rc;
    if (!keys || !values || !tokens)
        return kvd__leave(c, kvd__set_err(c, KVD_ERR_ARGUMENT,
                                          "kvd: pipeline_append: keys/values NULL or zero tokens"));
    if (n_ids != 0 && (n_ids != tokens || !ids))
        return kvd__leave(c, kvd__set_err(c, KVD_ERR_ARGUMENT,
                                          "kvd: pipeline_append: %zu token ids for %u tokens; give "
                                          "one id per token, or none", n_ids, tokens));
    rc = sticky(p);
    if (rc) return kvd__leave(c, rc);
    uint64_t step = p->steps;
    const uint8_t *ks = keys, *vs = values;
    size_t per_head = p->token_bytes * tokens;
    uint32_t done = 0;
    while (done < tokens) {
        /* Room in the window first: an older step's refusal surfaces before this one sends. */
        while (p->n_commits >= p->window) {
            rc = collect(c, p, p->commits[0].rid);
            if (!rc) rc = sticky(p);
            if (rc) return kvd__leave(c, rc);
        }
        if (!p->res) {
            if (!p->reserve_rid) {
                uint32_t want = tokens - done > p->ahead ? tokens - done : p->ahead;
                rc = send_reserve(p, want, step);
                if (rc) return kvd__leave(c, rc);
            }
            rc = collect(c, p, p->reserve_rid);
            if (!rc) rc = sticky(p);
            if (!rc && !p->res)
                rc = kvd__set_err(c, KVD_ERR_PROTOCOL, "kvd: pipelined reserve gave no slots");
            if (rc) return kvd__leave(c, rc);
        }
        uint32_t left = p->res->num_tokens - p->used;
        uint32_t m = tokens - done < left ? tokens - done : left;
        for (size_t h = 0; h < p->heads; h++) {
            if (p->res->heads[h].num_pages == 0) continue; /* an aliased layer stores nothing */
            for (uint32_t t = 0; t < m; t++) {
                size_t src = h * per_head + (size_t)(done + t) * p->token_bytes;
                memcpy(kvd_reservation_key(p->res, h, p->used + t), ks + src, p->token_bytes);
                memcpy(kvd_reservation_value(p->res, h, p->used + t), vs + src, p->token_bytes);
            }
        }
        rc = wrote(p, m, n_ids ? ids + done : NULL, step);
        if (rc) return kvd__leave(c, rc);
        done += m;
    }
    p->steps++;
    return kvd__leave(c, KVD_OK);
}

kvd_result kvd_pipeline_flush(kvd_pipeline *p) {
    if (!p) return KVD_ERR_ARGUMENT;
    kvd_result rc = kvd__enter(p->c, 0);
    if (rc) return rc;
    rc = collect(p->c, p, 0);
    if (!rc) rc = sticky(p);
    return kvd__leave(p->c, rc);
}

kvd_result kvd_pipeline_set_commit_every(kvd_pipeline *p, uint32_t n) {
    if (!p) return KVD_ERR_ARGUMENT;
    kvd_result rc = kvd__enter(p->c, 0);
    if (rc) return rc;
    if (!n)
        return kvd__leave(p->c, kvd__set_err(p->c, KVD_ERR_ARGUMENT,
                                             "kvd: pipeline_set_commit_every: 0; give at least 1"));
    rc = send_pending(p); /* what was written so far goes under the old setting */
    if (!rc) p->every = n;
    return kvd__leave(p->c, rc);
}

void kvd_pipeline_status_get(const kvd_pipeline *p, kvd_pipeline_status *out) {
    if (!p || !out) return;
    *out = (kvd_pipeline_status){p->steps, p->sent_length, p->confirmed_length, p->n_commits,
                                 p->res ? p->res->num_tokens - p->used : 0, p->failed != 0,
                                 p->failed_step, p->unsent};
}

kvd_result kvd_pipeline_close(kvd_pipeline *p) {
    if (!p) return KVD_OK;
    kvd_client *c = p->c;
    kvd_result rc = kvd__enter(c, 1);
    if (rc) return rc;
    kvd_result first = c->closed ? KVD_OK : collect(c, p, 0);
    char *first_msg = first ? strdup(c->err) : NULL;
    if (p->res && !c->closed) {
        kvd_result a = kvd__commit_rpc(c, p->seq, p->res->reservation_id, 0, 1, 0, NULL, NULL, NULL);
        if (a && !first && !p->failed) { /* after a refusal the reservation is often gone */
            first = a;
            first_msg = strdup(c->err);
        }
    }
    if (!first && p->deferred) {
        first = p->deferred;
        first_msg = p->deferred_msg ? strdup(p->deferred_msg) : NULL;
    }
    for (kvd_pipeline **q = &c->pipes; *q; q = &(*q)->next)
        if (*q == p) {
            *q = p->next;
            break;
        }
    if (p->res) kvd_reservation_free(p->res);
    free(p->commits);
    free(p->ids_buf);
    free(p->failed_msg);
    free(p->deferred_msg);
    free(p);
    if (first) kvd__set_err(c, first, "%s", first_msg ? first_msg : "kvd: a pipelined step failed");
    free(first_msg);
    return kvd__leave(c, first);
}
