/* libkvdclient events: a SUB socket on the daemon's events endpoint, decoding kvd.v1.Event. */
#include "internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zmq.h>

#include "kvd/v1/memory.pb-c.h"

struct kvd_events {
    void *zctx, *sock;
    void *monitor;              /* PAIR receiving the SUB socket's handshake events; NULL after */
    char *endpoint, *topic;     /* topic: the subscription prefix */
    size_t topic_len;
    int exact;                  /* 1: drop topics that only start with `topic` */
    int ready;
    Kvd__V1__Event *last;       /* the event last returned: kvd_event's strings point into it */
    char *last_topic;
    char err[512];
};

static kvd_result ev_err(kvd_events *ev, kvd_result rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static kvd_result ev_err(kvd_events *ev, kvd_result rc, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ev->err, sizeof ev->err, fmt, ap);
    va_end(ap);
    return rc;
}

const char *kvd_event_kind_name(kvd_event_kind kind) {
    switch (kind) {
    case KVD_EVENT_UNSPECIFIED: return "KVD_EVENT_UNSPECIFIED";
    case KVD_EVENT_COMPACTED: return "KVD_EVENT_COMPACTED";
    case KVD_EVENT_EVICTED: return "KVD_EVENT_EVICTED";
    case KVD_EVENT_LEASE_EXPIRED: return "KVD_EVENT_LEASE_EXPIRED";
    case KVD_EVENT_RESERVATION_ABORTED: return "KVD_EVENT_RESERVATION_ABORTED";
    case KVD_EVENT_ORPHAN_RELEASED: return "KVD_EVENT_ORPHAN_RELEASED";
    }
    return "KVD_EVENT_?";
}

static void stop_monitor(kvd_events *ev) {
    if (!ev->monitor) return;
    zmq_socket_monitor(ev->sock, NULL, 0);
    zmq_close(ev->monitor);
    ev->monitor = NULL;
}

void kvd_events_free(kvd_events *ev) {
    if (!ev) return;
    if (ev->sock) stop_monitor(ev);
    if (ev->sock) zmq_close(ev->sock);
    if (ev->zctx) zmq_ctx_term(ev->zctx);
    if (ev->last) kvd__v1__event__free_unpacked(ev->last, NULL);
    free(ev->last_topic);
    free(ev->endpoint);
    free(ev->topic);
    free(ev);
}

/* The curve keys: NULL (none) or the three, checked like kvd_client_connect does. */
static const char *check_keys(const kvd_client_options *o, const char *keys[3]) {
    keys[0] = keys[1] = keys[2] = NULL;
    if (!o) return NULL;
    if (o->struct_size == 0 || o->struct_size > sizeof *o)
        return "options.struct_size must be sizeof(kvd_client_options)";
    kvd_client_options full;
    memset(&full, 0, sizeof full);
    memcpy(&full, o, o->struct_size);
    keys[0] = full.curve_server_key;
    keys[1] = full.curve_public_key;
    keys[2] = full.curve_secret_key;
    int given = (keys[0] != NULL) + (keys[1] != NULL) + (keys[2] != NULL);
    if (given == 0) return NULL;
    if (given != 3) return "give curve_server_key, curve_public_key and curve_secret_key together";
    if (!zmq_has("curve")) return "this libzmq has no CURVE support";
    for (int k = 0; k < 3; k++)
        if (!kvd__z85_key_ok(keys[k])) return "a CURVE key is not Z85 (40 characters)";
    return NULL;
}

static kvd_result open_events(const char *endpoint, const char *topic, int exact,
                              const char *const keys[3], kvd_events **out, char *msg,
                              size_t msg_size) {
    kvd_events *ev = calloc(1, sizeof *ev);
    if (!ev) {
        snprintf(msg, msg_size, "kvd: out of memory");
        return KVD_ERR_SYSTEM;
    }
    ev->endpoint = strdup(endpoint);
    ev->topic = strdup(topic);
    ev->topic_len = strlen(topic);
    ev->exact = exact;
    ev->zctx = zmq_ctx_new();
    kvd_result rc = KVD_ERR_SYSTEM;
    if (!ev->endpoint || !ev->topic || !ev->zctx) {
        snprintf(msg, msg_size, "kvd: out of memory or no ZeroMQ context");
        goto fail;
    }
    ev->sock = zmq_socket(ev->zctx, ZMQ_SUB);
    if (!ev->sock) {
        snprintf(msg, msg_size, "kvd: zmq_socket: %s", zmq_strerror(zmq_errno()));
        goto fail;
    }
    int zero = 0, one = 1;
    zmq_setsockopt(ev->sock, ZMQ_LINGER, &zero, sizeof zero);
    if (strncmp(endpoint, "tcp://[", 7) == 0) zmq_setsockopt(ev->sock, ZMQ_IPV6, &one, sizeof one);
    if (keys[0] && (zmq_setsockopt(ev->sock, ZMQ_CURVE_SERVERKEY, keys[0], 40) != 0 ||
                    zmq_setsockopt(ev->sock, ZMQ_CURVE_PUBLICKEY, keys[1], 40) != 0 ||
                    zmq_setsockopt(ev->sock, ZMQ_CURVE_SECRETKEY, keys[2], 40) != 0)) {
        snprintf(msg, msg_size, "kvd: setting the CURVE keys: %s", zmq_strerror(zmq_errno()));
        goto fail;
    }
    zmq_setsockopt(ev->sock, ZMQ_SUBSCRIBE, ev->topic, ev->topic_len);
    /* The monitor must exist before connecting, or the handshake event could be missed. */
    char mon_ep[64];
    snprintf(mon_ep, sizeof mon_ep, "inproc://kvd-events-monitor-%p", (void *)ev);
    ev->monitor = zmq_socket(ev->zctx, ZMQ_PAIR);
    if (!ev->monitor ||
        zmq_socket_monitor(ev->sock, mon_ep, ZMQ_EVENT_HANDSHAKE_SUCCEEDED) != 0 ||
        zmq_connect(ev->monitor, mon_ep) != 0) {
        snprintf(msg, msg_size, "kvd: monitoring the subscriber: %s", zmq_strerror(zmq_errno()));
        goto fail;
    }
    if (zmq_connect(ev->sock, endpoint) != 0) {
        int e = zmq_errno();
        rc = e == EINVAL || e == EPROTONOSUPPORT ? KVD_ERR_ARGUMENT : KVD_ERR_SYSTEM;
        snprintf(msg, msg_size, "kvd: cannot connect to \"%s\": %s", endpoint, zmq_strerror(e));
        goto fail;
    }
    *out = ev;
    return KVD_OK;
fail:
    kvd_events_free(ev);
    return rc;
}

kvd_result kvd_events_open(const char *endpoint, const char *topic,
                           const kvd_client_options *options, kvd_events **out, char *error,
                           size_t error_size) {
    char msg[512] = "";
    kvd_result rc = KVD_ERR_ARGUMENT;
    const char *keys[3];
    const char *bad = NULL;
    if (out) *out = NULL;
    if (!out) bad = "out is NULL";
    else if (!endpoint || !*endpoint) bad = "endpoint is NULL or empty";
    else bad = check_keys(options, keys);
    if (bad) snprintf(msg, sizeof msg, "kvd: kvd_events_open: %s", bad);
    else rc = open_events(endpoint, topic ? topic : "kvd.", 0, keys, out, msg, sizeof msg);
    if (error && error_size) snprintf(error, error_size, "%s", msg);
    return rc;
}

kvd_result kvd_client_events(kvd_client *c, kvd_events **out) {
    kvd_result rc = kvd__enter(c, 0);
    if (rc) return rc;
    if (!out) return kvd__leave(c, kvd__set_err(c, KVD_ERR_ARGUMENT, "kvd: events: out is NULL"));
    *out = NULL;
    rc = kvd__ensure_session(c);
    if (rc) return kvd__leave(c, rc);
    const kvd_hello_info *h = &c->hello->pub;
    if (!h->events_endpoint[0])
        return kvd__leave(c, kvd__set_err(c, KVD_ERR_FAILED_PRECONDITION,
                                          "kvd: the daemon at %s publishes no events (its "
                                          "memory.events_endpoint is empty)", c->endpoint));
    /* Topics are "kvd.<tenant>"; without a known tenant, every tenant's events. */
    const char *tenant = h->tenant[0] ? h->tenant : c->tenant;
    char *topic = NULL;
    if (asprintf(&topic, "kvd.%s", tenant) < 0) return kvd__leave(c, kvd__oom(c));
    const char *keys[3] = {NULL, NULL, NULL};
    if (c->curve) {
        keys[0] = c->curve_server;
        keys[1] = c->curve_public;
        keys[2] = c->curve_secret;
    }
    char msg[512] = "";
    rc = open_events(h->events_endpoint, topic, tenant[0] != '\0', keys, out, msg, sizeof msg);
    free(topic);
    if (rc) return kvd__leave(c, kvd__set_err(c, rc, "%s", msg));
    return kvd__leave(c, KVD_OK);
}

kvd_result kvd_events_ready(kvd_events *ev, int timeout_ms) {
    if (!ev) return KVD_ERR_ARGUMENT;
    ev->err[0] = '\0';
    if (ev->ready) return KVD_OK;
    int64_t deadline = kvd__now_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    for (;;) {
        int64_t left = deadline - kvd__now_ms();
        zmq_pollitem_t it = {ev->monitor, 0, ZMQ_POLLIN, 0};
        int n = zmq_poll(&it, 1, left > 0 ? (long)left : 0);
        if (n < 0 && zmq_errno() == EINTR) continue;
        if (n < 0) return ev_err(ev, KVD_ERR_SYSTEM, "kvd: zmq_poll: %s", zmq_strerror(zmq_errno()));
        if (n == 0)
            return ev_err(ev, KVD_ERR_TIMEOUT,
                          "kvd: no connection to the events endpoint %s within %d ms; is the "
                          "daemon running (and are the CURVE keys right)?", ev->endpoint,
                          timeout_ms);
        /* A monitor event: frame 1 is u16 event + u32 value, frame 2 the endpoint. */
        uint8_t head[6] = {0};
        int got = zmq_recv(ev->monitor, head, sizeof head, 0);
        int more = 0;
        size_t more_size = sizeof more;
        zmq_getsockopt(ev->monitor, ZMQ_RCVMORE, &more, &more_size);
        if (more) {
            char rest[256];
            zmq_recv(ev->monitor, rest, sizeof rest, 0);
        }
        uint16_t event = (uint16_t)(head[0] | head[1] << 8);
        if (got >= 2 && event == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) {
            ev->ready = 1;
            stop_monitor(ev);
            return KVD_OK;
        }
    }
}

/* Receive one whole message (every frame); 0 with *n_frames set, or -1 (errno in zmq_errno). */
static int recv_message(void *sock, zmq_msg_t frames[2], int *n_frames) {
    *n_frames = 0;
    int more = 1;
    while (more) {
        zmq_msg_t part;
        zmq_msg_init(&part);
        if (zmq_msg_recv(&part, sock, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&part);
            for (int i = 0; i < *n_frames && i < 2; i++) zmq_msg_close(&frames[i]);
            return -1;
        }
        more = zmq_msg_more(&part);
        if (*n_frames < 2) { /* extra frames are counted, then dropped */
            zmq_msg_init(&frames[*n_frames]);
            zmq_msg_move(&frames[*n_frames], &part);
        }
        zmq_msg_close(&part);
        (*n_frames)++;
    }
    return 0;
}

static void fill_event(kvd_events *ev, const Kvd__V1__Event *e, kvd_event *out) {
    kvd_event full;
    memset(&full, 0, sizeof full);
    full.struct_size = out->struct_size;
    full.sequence_number = e->sequence_number;
    full.kind = (kvd_event_kind)e->kind;
    full.topic = ev->last_topic;
    full.tenant = e->tenant ? e->tenant : "";
    full.sequence_id = e->sequence_id;
    full.time_unix_ms = e->time_unix_ms;
    full.generation = e->generation;
    full.pages_freed = e->pages_freed;
    full.bytes_freed = e->bytes_freed;
    full.method = e->method ? e->method : "";
    full.tokens_before = e->tokens_before;
    full.tokens_after = e->tokens_after;
    full.reason = e->reason ? e->reason : "";
    full.used_pages = e->used_pages;
    full.limit_pages = e->limit_pages;
    memcpy(out, &full, out->struct_size); /* only what the caller's struct has room for */
}

kvd_result kvd_events_next(kvd_events *ev, int timeout_ms, kvd_event *out) {
    if (!ev) return KVD_ERR_ARGUMENT;
    ev->err[0] = '\0';
    if (!out || out->struct_size < offsetof(kvd_event, sequence_number) + sizeof(uint64_t) ||
        out->struct_size > sizeof *out)
        return ev_err(ev, KVD_ERR_ARGUMENT,
                      "kvd: events_next: out is NULL or out->struct_size is not sizeof(kvd_event)");
    int64_t deadline = kvd__now_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    for (;;) {
        long wait = -1;
        if (timeout_ms >= 0) {
            int64_t left = deadline - kvd__now_ms();
            wait = left > 0 ? (long)left : 0;
        }
        zmq_pollitem_t it = {ev->sock, 0, ZMQ_POLLIN, 0};
        int n = zmq_poll(&it, 1, wait);
        if (n < 0 && zmq_errno() == EINTR) continue;
        if (n < 0) return ev_err(ev, KVD_ERR_SYSTEM, "kvd: zmq_poll: %s", zmq_strerror(zmq_errno()));
        if (n == 0) return ev_err(ev, KVD_ERR_TIMEOUT, "kvd: no event within %d ms", timeout_ms);
        zmq_msg_t frames[2];
        int nf = 0;
        if (recv_message(ev->sock, frames, &nf) != 0) {
            if (zmq_errno() == EAGAIN || zmq_errno() == EINTR) continue;
            return ev_err(ev, KVD_ERR_SYSTEM, "kvd: receiving an event: %s",
                          zmq_strerror(zmq_errno()));
        }
        if (nf != 2) {
            for (int i = 0; i < nf && i < 2; i++) zmq_msg_close(&frames[i]);
            return ev_err(ev, KVD_ERR_PROTOCOL,
                          "kvd: an event of %d frames from %s; expected topic + event", nf,
                          ev->endpoint);
        }
        size_t tlen = zmq_msg_size(&frames[0]);
        if (ev->exact && (tlen != ev->topic_len ||
                          memcmp(zmq_msg_data(&frames[0]), ev->topic, tlen) != 0)) {
            zmq_msg_close(&frames[0]); /* another tenant whose name starts with ours */
            zmq_msg_close(&frames[1]);
            continue;
        }
        Kvd__V1__Event *e = kvd__v1__event__unpack(NULL, zmq_msg_size(&frames[1]),
                                                   zmq_msg_data(&frames[1]));
        size_t size = zmq_msg_size(&frames[1]);
        char *topic = malloc(tlen + 1);
        if (topic) {
            memcpy(topic, zmq_msg_data(&frames[0]), tlen);
            topic[tlen] = '\0';
        }
        zmq_msg_close(&frames[0]);
        zmq_msg_close(&frames[1]);
        if (!e || !topic) {
            free(topic);
            if (e) kvd__v1__event__free_unpacked(e, NULL);
            if (!e)
                return ev_err(ev, KVD_ERR_PROTOCOL, "kvd: undecodable event (%zu bytes) from %s",
                              size, ev->endpoint);
            return ev_err(ev, KVD_ERR_SYSTEM, "kvd: out of memory");
        }
        if (ev->last) kvd__v1__event__free_unpacked(ev->last, NULL);
        free(ev->last_topic);
        ev->last = e;
        ev->last_topic = topic;
        fill_event(ev, e, out);
        return KVD_OK;
    }
}

const char *kvd_events_last_error(const kvd_events *ev) {
    return ev ? ev->err : "kvd: the event subscriber is NULL";
}
