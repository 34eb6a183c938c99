/* libkvdclient transport: ZeroMQ socket, request ids, round trip, timeouts, restart detection. */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <zmq.h>

/* While the keep-alive thread waits for its reply it looks at ka_stop this often, so closing the
 * client never waits a whole timeout for a KeepAlive the daemon does not answer. */
#define KA_CANCEL_POLL_MS 50

int64_t kvd__now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

kvd_result kvd__open_socket(kvd_client *c) {
    void *s = zmq_socket(c->zctx, ZMQ_DEALER);
    if (!s)
        return kvd__set_err(c, KVD_ERR_SYSTEM, "kvd: zmq_socket: %s", zmq_strerror(zmq_errno()));
    int zero = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero); /* never block close on unsent requests */
    int one = 1; /* ZeroMQ resolves IPv6 literals ("tcp://[::1]:5557") only when asked to */
    if (strncmp(c->endpoint, "tcp://[", 7) == 0) zmq_setsockopt(s, ZMQ_IPV6, &one, sizeof one);
    /* CURVE before connect: a connection's mechanism is fixed when it is made. */
    if (c->curve && (zmq_setsockopt(s, ZMQ_CURVE_SERVERKEY, c->curve_server, 40) != 0 ||
                     zmq_setsockopt(s, ZMQ_CURVE_PUBLICKEY, c->curve_public, 40) != 0 ||
                     zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, c->curve_secret, 40) != 0)) {
        int e = zmq_errno();
        zmq_close(s);
        return kvd__set_err(c, KVD_ERR_SYSTEM, "kvd: setting the CURVE keys: %s", zmq_strerror(e));
    }
    if (zmq_connect(s, c->endpoint) != 0) {
        int e = zmq_errno();
        zmq_close(s);
        return kvd__set_err(c,
                            e == EINVAL || e == EPROTONOSUPPORT ? KVD_ERR_ARGUMENT : KVD_ERR_SYSTEM,
                            "kvd: cannot connect to \"%s\": %s", c->endpoint, zmq_strerror(e));
    }
    c->sock = s;
    return KVD_OK;
}

static kvd_result reset_socket(kvd_client *c) {
    /* A fresh socket (new identity) drops queued requests and never sees the late reply of a
     * request that timed out. */
    if (c->sock) zmq_close(c->sock);
    c->sock = NULL;
    return kvd__open_socket(c);
}

static void free_packed(void *data, void *hint) {
    (void)hint;
    free(data);
}

kvd_result kvd__server_error(kvd_client *c, const Kvd__V1__Error *e) {
    int code = (int)e->code;
    kvd_result rc = (code >= 1 && code <= KVD_ERR_EVICTED) ? (kvd_result)code : KVD_ERR_SERVER_OTHER;
    const char *msg = e->message && e->message[0] ? e->message : "kvd: (no message)";
    if (rc == KVD_ERR_SERVER_OTHER)
        kvd__set_err(c, rc, "%s [daemon error code %d]", msg, code);
    else
        kvd__set_err(c, rc, "%s", msg);
    if (!c->ka_active) c->last_server_code = code;
    return rc;
}

static const char *body_name(Kvd__V1__Response__BodyCase b) {
    switch (b) {
    case KVD__V1__RESPONSE__BODY_ERROR: return "error";
    case KVD__V1__RESPONSE__BODY_HELLO: return "hello";
    case KVD__V1__RESPONSE__BODY_CREATE_SEQUENCE: return "create_sequence";
    case KVD__V1__RESPONSE__BODY_APPEND: return "append";
    case KVD__V1__RESPONSE__BODY_RESERVE: return "reserve";
    case KVD__V1__RESPONSE__BODY_COMMIT: return "commit";
    case KVD__V1__RESPONSE__BODY_QUERY: return "query";
    case KVD__V1__RESPONSE__BODY_COMPACT: return "compact";
    case KVD__V1__RESPONSE__BODY_RELEASE: return "release";
    case KVD__V1__RESPONSE__BODY_STATS: return "stats";
    case KVD__V1__RESPONSE__BODY_STAGE: return "stage";
    case KVD__V1__RESPONSE__BODY_RANK_LAYERS: return "rank_layers";
    case KVD__V1__RESPONSE__BODY_KEEP_ALIVE: return "keep_alive";
    case KVD__V1__RESPONSE__BODY_PIN: return "pin";
    default: return "nothing";
    }
}

/* The stable part of the daemon's PERMISSION_DENIED for a connection that has not said Hello to
 * a tenant (docs/PROTOCOL.md): after a restart, a request that got it is sent again once. */
#define NOT_BOUND_TEXT "not bound to a tenant"

/* Every reply names the daemon process that sent it; another one than last time is a restart.
 * 0 (a daemon older than instance ids) tells nothing. */
static void note_instance(kvd_client *c, uint64_t instance) {
    if (instance == 0) return;
    if (c->instance != 0 && instance != c->instance) c->restarted = 1;
    c->instance = instance;
}

/* Opens the socket if it is closed, then gives `req` the next request id (never 0) and the
 * protocol version: what every request needs before it is packed, answered or pipelined. */
kvd_result kvd__stamp_request(kvd_client *c, Kvd__V1__Request *req) {
    if (!c->sock) {
        kvd_result rc = kvd__open_socket(c);
        if (rc) return rc;
    }
    req->request_id = c->next_id++;
    if (c->next_id == 0) c->next_id = 1;
    req->protocol_version = c->proto;
    return KVD_OK;
}

/* Reads every frame of the waiting message into `part` (initialised here; the caller closes it)
 * and returns whether one came: the Response is the last frame (a ROUTER may prefix others). */
int kvd__recv_last_frame(kvd_client *c, struct zmq_msg_t *part) {
    zmq_msg_init(part);
    int more = 1, got = 0;
    while (more) {
        zmq_msg_close(part);
        zmq_msg_init(part);
        if (zmq_msg_recv(part, c->sock, ZMQ_DONTWAIT) < 0) {
            if (zmq_errno() == EINTR) continue;
            break;
        }
        got = 1;
        more = zmq_msg_more(part);
    }
    return got;
}

/*
 * Send `req` and wait for the matching reply. On success *out is the unpacked response whose body
 * is `want` (free with kvd__v1__response__free_unpacked). Notes the replying daemon's instance
 * (c->restarted) but does not rejoin: kvd__rpc does.
 */
kvd_result kvd__rpc_once(kvd_client *c, Kvd__V1__Request *req, Kvd__V1__Response__BodyCase want,
                         Kvd__V1__Response **out, int *not_bound, ProtobufCAllocator *alloc) {
    *out = NULL;
    if (not_bound) *not_bound = 0;
    if (c->pipes) {
        /* Pipelined replies first: this loop would drop them as late (pipeline.c). */
        kvd_result rc = kvd__pipelines_collect(c);
        if (rc) return rc;
    }
    kvd_result stamped = kvd__stamp_request(c, req);
    if (stamped) return stamped;

    size_t size = kvd__v1__request__get_packed_size(req);
    if (c->hello && want != KVD__V1__RESPONSE__BODY_HELLO && c->hello->pub.max_message_bytes &&
        size > c->hello->pub.max_message_bytes)
        return kvd__set_err(c, KVD_ERR_ARGUMENT,
                            "kvd: the request is %zu bytes, more than the daemon's "
                            "max_message_bytes (%llu); append fewer tokens at once or use "
                            "kvd_client_append_zero_copy",
                            size, (unsigned long long)c->hello->pub.max_message_bytes);
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf) return kvd__oom(c);
    kvd__v1__request__pack(req, buf);

    int64_t deadline = kvd__now_ms() + c->timeout_ms;
    zmq_msg_t msg;
    if (zmq_msg_init_data(&msg, buf, size, free_packed, NULL) != 0) {
        free(buf);
        return kvd__set_err(c, KVD_ERR_SYSTEM, "kvd: zmq_msg_init_data: %s",
                            zmq_strerror(zmq_errno()));
    }
    for (;;) { /* send without ever blocking past the deadline */
        if (zmq_msg_send(&msg, c->sock, ZMQ_DONTWAIT) >= 0) {
            atomic_store(&c->last_send_ms, kvd__now_ms()); /* the keep-alive thread's idle clock */
            break;
        }
        int e = zmq_errno();
        if (e == EINTR) continue;
        if (e != EAGAIN) {
            zmq_msg_close(&msg);
            return kvd__set_err(c, KVD_ERR_SYSTEM, "kvd: sending to %s: %s", c->endpoint,
                                zmq_strerror(e));
        }
        int64_t left = deadline - kvd__now_ms();
        zmq_pollitem_t it = {c->sock, 0, ZMQ_POLLOUT, 0};
        if (left <= 0 || zmq_poll(&it, 1, (long)left) == 0) {
            zmq_msg_close(&msg);
            reset_socket(c);
            return kvd__set_err(c, KVD_ERR_TIMEOUT,
                                "kvd: could not send to %s within %d ms; is the daemon running?",
                                c->endpoint, c->timeout_ms);
        }
    }

    for (;;) {
        int64_t left = deadline - kvd__now_ms();
        if (c->ka_active && left > KA_CANCEL_POLL_MS) left = KA_CANCEL_POLL_MS;
        zmq_pollitem_t it = {c->sock, 0, ZMQ_POLLIN, 0};
        int n = left > 0 ? zmq_poll(&it, 1, (long)left) : 0;
        if (n < 0 && zmq_errno() == EINTR) continue;
        if (n < 0)
            return kvd__set_err(c, KVD_ERR_SYSTEM, "kvd: zmq_poll: %s", zmq_strerror(zmq_errno()));
        if (n == 0 && c->ka_active && atomic_load(&c->ka_stop))
            return kvd__set_err(c, KVD_ERR_CLOSED, "kvd: the client is closing");
        if (n == 0 && kvd__now_ms() < deadline) continue; /* a slice of the wait, not the timeout */
        if (n == 0) {
            reset_socket(c);
            const char *why = NULL;
            if (c->attached && !kvd__arena_current(c, &why))
                return kvd__set_err(c, KVD_ERR_TIMEOUT,
                                    "kvd: no reply from %s within %d ms, and %s: the daemon "
                                    "stopped or is restarting",
                                    c->endpoint, c->timeout_ms, why);
            return kvd__set_err(c, KVD_ERR_TIMEOUT,
                                "kvd: no reply from %s within %d ms; is the daemon running?%s",
                                c->endpoint, c->timeout_ms,
                                c->curve ? " Is curve_server_key its public key, and does a "
                                           "tenant list this client's curve_public_key? (a "
                                           "refused CURVE client gets no reply)" : "");
        }
        zmq_msg_t part;
        if (!kvd__recv_last_frame(c, &part)) {
            zmq_msg_close(&part);
            continue;
        }
        Kvd__V1__Response *resp =
            kvd__v1__response__unpack(alloc, zmq_msg_size(&part), zmq_msg_data(&part));
        size_t got_size = zmq_msg_size(&part);
        zmq_msg_close(&part);
        if (!resp)
            return kvd__set_err(c, KVD_ERR_PROTOCOL, "kvd: undecodable reply (%zu bytes) from %s",
                                got_size, c->endpoint);
        uint64_t rid = resp->header ? resp->header->request_id : 0;
        int ours = rid == req->request_id ||
                   (rid == 0 && resp->body_case == KVD__V1__RESPONSE__BODY_ERROR);
        if (!ours) { /* a late reply to a request that timed out earlier */
            kvd__v1__response__free_unpacked(resp, alloc);
            continue;
        }
        if (!resp->header) {
            kvd__v1__response__free_unpacked(resp, alloc);
            return kvd__set_err(c, KVD_ERR_PROTOCOL, "kvd: reply from %s has no header",
                                c->endpoint);
        }
        note_instance(c, resp->header->instance_id);
        /* A reply sent by a daemon that replaced the arena we mapped: do not trust it. */
        const char *why = NULL;
        if (want != KVD__V1__RESPONSE__BODY_HELLO && c->attached && !kvd__arena_current(c, &why)) {
            kvd__v1__response__free_unpacked(resp, alloc);
            /* The keep-alive thread leaves the re-attach to the caller's next call, which then
             * reports KVD_ERR_RESTARTED as documented. */
            if (c->ka_active)
                return kvd__set_err(c, KVD_ERR_RESTARTED, "kvd: the daemon restarted (%s)", why);
            return kvd__reattach_after_loss(c, why);
        }
        uint32_t pv = resp->header->protocol_version;
        if (pv != 0 && pv != KVD_PROTOCOL_VERSION &&
            resp->body_case != KVD__V1__RESPONSE__BODY_ERROR) {
            kvd__v1__response__free_unpacked(resp, alloc);
            return kvd__set_err(c, KVD_ERR_PROTOCOL,
                                "kvd: the daemon answered in protocol version %u; this client "
                                "speaks %u", pv, KVD_PROTOCOL_VERSION);
        }
        if (resp->body_case == KVD__V1__RESPONSE__BODY_ERROR) {
            const Kvd__V1__Error *e = resp->error;
            if (not_bound && e && e->code == KVD__V1__ERROR_CODE__ERROR_CODE_PERMISSION_DENIED &&
                e->message && strstr(e->message, NOT_BOUND_TEXT))
                *not_bound = 1;
            kvd_result rc = resp->error
                                ? kvd__server_error(c, resp->error)
                                : kvd__set_err(c, KVD_ERR_PROTOCOL, "kvd: empty error reply");
            kvd__v1__response__free_unpacked(resp, alloc);
            return rc;
        }
        if (resp->body_case != want) {
            Kvd__V1__Response__BodyCase b = resp->body_case;
            kvd__v1__response__free_unpacked(resp, alloc);
            return kvd__set_err(c, KVD_ERR_PROTOCOL,
                                "kvd: asked for %s, the daemon replied with %s", body_name(want),
                                body_name(b));
        }
        *out = resp;
        return KVD_OK;
    }
}

kvd_result kvd__reattach_after_loss(kvd_client *c, const char *why) {
    c->attached = 0;
    c->lost = 1;
    c->n_seqs = 0;
    kvd_result rc = kvd__do_hello(c, NULL, 1);
    if (rc) {
        char *inner = strdup(c->err);
        kvd__set_err(c, rc,
                     "kvd: the daemon at %s restarted or stopped (%s); re-attaching failed: %s",
                     c->endpoint, why, inner ? inner : "?");
        free(inner);
        return rc;
    }
    c->lost = 0;
    return kvd__set_err(c, KVD_ERR_RESTARTED,
                        "kvd: the daemon at %s restarted (%s); its sequences are gone. The "
                        "client has re-attached to the new daemon: create the sequences again",
                        c->endpoint, why);
}

/* At the start of every call that talks to the daemon: Hello if needed, detect restarts. */
kvd_result kvd__ensure_session(kvd_client *c) {
    const char *why = NULL;
    if (c->attached && !kvd__arena_current(c, &why)) return kvd__reattach_after_loss(c, why);
    if (!c->attached) {
        kvd_result rc = kvd__do_hello(c, NULL, 1);
        if (rc) {
            if (c->lost) {
                char *inner = strdup(c->err);
                kvd__set_err(c, rc, "kvd: the daemon at %s restarted or stopped; re-attaching "
                             "failed: %s", c->endpoint, inner ? inner : "?");
                free(inner);
            }
            return rc;
        }
        if (c->lost) {
            c->lost = 0;
            return kvd__set_err(c, KVD_ERR_RESTARTED,
                                "kvd: the daemon at %s restarted; its sequences are gone. The "
                                "client has re-attached to the new daemon: create the sequences "
                                "again", c->endpoint);
        }
    }
    return kvd__rejoin_pending(c);
}
