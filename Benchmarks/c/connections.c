#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include <zmq.h>

#include "bench.h"

/* ------------------------------------------------------------------------------------------- */
/* kvd helpers                                                                                  */

kvd_client *kvd_open(const char *ep, int timeout_ms, const char *name) {
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

kvd_model_layout find_model(kvd_client *c, const char *model) {
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

/* ------------------------------------------------------------------------------------------- */
/* Raw ZeroMQ echo: a DEALER to kvd-echo, one frame out, the same frame back (what libkvdclient   */
/* does with kvd: one frame, no delimiter)                                                      */

echo_conn echo_open(const char *ep, int timeout_ms) {
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

void echo_close(echo_conn *e) {
    zmq_close(e->sock);
    zmq_ctx_term(e->ctx);
}

/* One round trip of `n` bytes: zmq_send copies them into a message (as libkvdclient packs its
 * request into one buffer), the echo comes back as one frame of the same size. */
void echo_rt(echo_conn *e, const void *buf, size_t n) {
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

/* A raw round trip to kvd without libkvdclient: pack `r` with a fresh request id, send it as one
 * frame on a plain DEALER, receive the reply frame without decoding it (unless `check`, then it
 * must be a non-error reply to this id). Splits the client library's share from the daemon's. */
size_t raw_kvd_rt(echo_conn *e, Kvd__V1__Request *r, uint64_t *next_id, int check) {
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
