/* libkvdclient session: kvd_client_connect / hello / close / free. */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zmq.h>

#define DEFAULT_TIMEOUT_MS 5000

kvd_result kvd_client_connect(const char *endpoint, const kvd_client_options *opts,
                              kvd_client **out, char *error, size_t error_size) {
#define CONNECT_FAIL(code, ...)                                                  \
    do {                                                                         \
        if (error && error_size) snprintf(error, error_size, __VA_ARGS__);       \
        return (code);                                                           \
    } while (0)
    if (error && error_size) error[0] = '\0';
    if (!out) CONNECT_FAIL(KVD_ERR_ARGUMENT, "kvd: kvd_client_connect: out is NULL");
    *out = NULL;
    if (!endpoint || !*endpoint)
        CONNECT_FAIL(KVD_ERR_ARGUMENT, "kvd: kvd_client_connect: endpoint is NULL or empty");
    kvd_client_options o;
    memset(&o, 0, sizeof o);
    if (opts) {
        if (opts->struct_size == 0 || opts->struct_size > sizeof o)
            CONNECT_FAIL(KVD_ERR_ARGUMENT,
                         "kvd: kvd_client_connect: options.struct_size is %zu; set it to "
                         "sizeof(kvd_client_options) (%zu)", opts->struct_size, sizeof o);
        memcpy(&o, opts, opts->struct_size);
    }
    kvd_client *c = calloc(1, sizeof *c);
    if (!c) CONNECT_FAIL(KVD_ERR_SYSTEM, "kvd: out of memory");
    if (!kvd__keepalive_init(c)) {
        free(c);
        CONNECT_FAIL(KVD_ERR_SYSTEM, "kvd: cannot create the client's mutexes");
    }
    atomic_flag_clear(&c->busy);
    c->err_cap = 256;
    c->err = calloc(1, c->err_cap);
    c->endpoint = strdup(endpoint);
    c->client_name = strdup(o.client_name ? o.client_name : "kvd-c");
    c->timeout_ms = o.timeout_ms > 0 ? o.timeout_ms : DEFAULT_TIMEOUT_MS;
    c->proto = o.protocol_version ? o.protocol_version : KVD_PROTOCOL_VERSION;
    c->next_id = 1;
    c->keepalive = !o.disable_keepalive;
    c->tenant = strdup(o.tenant ? o.tenant : "");
    c->token = strdup(o.token ? o.token : "");
    if (!c->err || !c->endpoint || !c->client_name || !c->tenant || !c->token) {
        kvd_client_free(c);
        CONNECT_FAIL(KVD_ERR_SYSTEM, "kvd: out of memory");
    }
    const char *keys[3] = {o.curve_server_key, o.curve_public_key, o.curve_secret_key};
    static const char *const key_names[3] = {"curve_server_key", "curve_public_key",
                                             "curve_secret_key"};
    int given = (keys[0] != NULL) + (keys[1] != NULL) + (keys[2] != NULL);
    if (given) {
        const char *why = NULL;
        if (given != 3) why = "give curve_server_key, curve_public_key and curve_secret_key together";
        else if (!zmq_has("curve")) why = "this libzmq has no CURVE support";
        for (int k = 0; !why && k < 3; k++)
            if (!kvd__z85_key_ok(keys[k])) why = key_names[k];
        if (why) {
            kvd_client_free(c);
            if (given == 3 && zmq_has("curve"))
                CONNECT_FAIL(KVD_ERR_ARGUMENT, "kvd: kvd_client_connect: options.%s is not a Z85 "
                             "CURVE key (40 characters, as in a `kvd keygen` file)", why);
            CONNECT_FAIL(KVD_ERR_ARGUMENT, "kvd: kvd_client_connect: %s", why);
        }
        c->curve = 1;
        memcpy(c->curve_server, keys[0], 41);
        memcpy(c->curve_public, keys[1], 41);
        memcpy(c->curve_secret, keys[2], 41);
    }
    c->zctx = zmq_ctx_new();
    if (!c->zctx) {
        int e = zmq_errno();
        kvd_client_free(c);
        CONNECT_FAIL(KVD_ERR_SYSTEM, "kvd: zmq_ctx_new: %s", zmq_strerror(e));
    }
    kvd_result rc = kvd__open_socket(c);
    if (rc) {
        if (error && error_size) snprintf(error, error_size, "%s", c->err);
        kvd_client_free(c);
        return rc;
    }
    *out = c;
    return KVD_OK;
#undef CONNECT_FAIL
}

kvd_result kvd_client_hello(kvd_client *c, kvd_hello_info **info) {
    kvd_result rc = kvd__enter(c, 0);
    if (rc) return rc;
    if (info) *info = NULL;
    int replaced = 0;
    rc = kvd__do_hello(c, &replaced, 1);
    /* This Hello may be the first reply from a restarted daemon: take the sequences back now
     * rather than at the next call (the rejoin's Hello replaces c->hello with an equal one). */
    if (rc == KVD_OK && c->restarted) rc = kvd__rejoin(c, 1, NULL);
    if (rc == KVD_OK) {
        c->lost = 0;
        if (info) {
            atomic_fetch_add(&c->hello->refs, 1);
            *info = &c->hello->pub;
        }
    }
    return kvd__leave(c, rc);
}

kvd_result kvd_client_close(kvd_client *c) {
    /* Before kvd__enter: a KeepAlive in flight gives up `io` within a few ms instead of waiting
     * for its reply (up to timeout_ms). */
    if (c) kvd__keepalive_request_stop(c);
    kvd_result rc = kvd__enter(c, 1);
    if (rc) return rc;
    kvd__keepalive_stop(c); /* the thread never waits for `io` (it only tries), so joining is safe */
    if (c->sock) zmq_close(c->sock);
    c->sock = NULL;
    if (c->zctx) zmq_ctx_term(c->zctx);
    c->zctx = NULL;
    kvd__arena_unref(c->arena);
    c->arena = NULL;
    kvd__hello_unref(c->hello);
    c->hello = NULL;
    c->attached = 0;
    c->closed = 1;
    c->n_seqs = 0;
    return kvd__leave(c, KVD_OK);
}

void kvd_client_free(kvd_client *c) {
    if (!c) return;
    kvd__keepalive_stop(c);
    if (c->sock) zmq_close(c->sock);
    if (c->zctx) zmq_ctx_term(c->zctx);
    kvd__arena_unref(c->arena);
    kvd__hello_unref(c->hello);
    free(c->seqs);
    free(c->err);
    free(c->endpoint);
    free(c->client_name);
    free(c->stat_model);
    free(c->stat_tenant);
    free(c->missing);
    free(c->tenant);
    if (c->token) explicit_bzero(c->token, strlen(c->token));
    free(c->token);
    explicit_bzero(c->curve_secret, sizeof c->curve_secret);
    kvd__keepalive_destroy(c);
    free(c);
}
