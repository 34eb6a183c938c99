/* libkvdclient rejoin: carrying on with a daemon that restarted and adopted its segment
 * (docs/DURABILITY.md). Its sequences and K/V are as committed and the mapping stays valid, but
 * tenant bindings, leases and request-id windows start afresh: say Hello again, take the created
 * sequences back with KeepAlive, and send a request refused as "not bound" once more. A restart
 * with a new segment is not this: the existing re-attach path reports KVD_ERR_RESTARTED. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

/* Ids per KeepAlive, as the Python client; fewer when the daemon's max_message_bytes is small (an
 * id takes at most 10 bytes of varint; the rest of the request stays under the overhead). */
#define ADOPT_CHUNK 4096
#define ADOPT_ID_BYTES 10
#define ADOPT_OVERHEAD 64

static size_t adopt_chunk(const kvd_client *c) {
    uint64_t max = c->hello ? c->hello->pub.max_message_bytes : 0;
    if (max == 0) return ADOPT_CHUNK;
    if (max < ADOPT_OVERHEAD + ADOPT_ID_BYTES) return 1; /* the daemon would refuse any; try */
    uint64_t fit = (max - ADOPT_OVERHEAD) / ADOPT_ID_BYTES;
    return fit < ADOPT_CHUNK ? (size_t)fit : ADOPT_CHUNK;
}

/* KeepAlive {sequence_ids: every created sequence}, in chunks: the restarted daemon's leases are
 * owned by nobody and would run out. Ids it reports missing are forgotten. */
static kvd_result adopt_created(kvd_client *c) {
    size_t n = 0;
    uint64_t *ids = kvd__created_ids(c, &n); /* a copy: forgetting ids edits c->seqs */
    if (n && !ids) return kvd__oom(c);
    size_t chunk = adopt_chunk(c);
    kvd_result rc = KVD_OK;
    for (size_t start = 0; start < n && rc == KVD_OK; start += chunk) {
        Kvd__V1__KeepAliveRequest kr = KVD__V1__KEEP_ALIVE_REQUEST__INIT;
        kr.n_sequence_ids = n - start < chunk ? n - start : chunk;
        kr.sequence_ids = ids + start;
        Kvd__V1__Request req = KVD__V1__REQUEST__INIT;
        req.body_case = KVD__V1__REQUEST__BODY_KEEP_ALIVE;
        req.keep_alive = &kr;
        Kvd__V1__Response *resp = NULL;
        /* kvd__rpc_once, not kvd__rpc: a restart seen here stays pending for the next call
         * instead of starting a rejoin inside this one. */
        rc = kvd__rpc_once(c, &req, KVD__V1__RESPONSE__BODY_KEEP_ALIVE, &resp, NULL, NULL);
        if (rc) break;
        const Kvd__V1__KeepAliveResponse *k = resp->keep_alive;
        for (size_t i = 0; i < k->n_missing; i++) kvd__layout_forget(c, k->missing[i]);
        kvd__v1__response__free_unpacked(resp, NULL);
    }
    free(ids);
    return rc;
}

kvd_result kvd__rejoin(kvd_client *c, int may_map, int *replaced) {
    int fresh = 0;
    if (replaced) *replaced = 0;
    /* Hello never rejoins inside kvd__rpc, so this does not recurse. */
    kvd_result rc = kvd__do_hello(c, &fresh, may_map);
    if (rc) return rc; /* c->restarted stays set: the next call tries again */
    c->restarted = 0;  /* bound to the daemon that answered; a later change sets it again */
    if (fresh) {       /* a new segment: do_hello forgot the sequences, there is nothing to adopt */
        if (replaced) *replaced = 1;
        return KVD_OK;
    }
    rc = adopt_created(c);
    if (rc) c->restarted = 1;
    return rc;
}

static kvd_result sequences_gone(kvd_client *c) {
    return kvd__set_err(c, KVD_ERR_RESTARTED,
                        "kvd: the daemon at %s restarted with a new shared memory segment; its "
                        "sequences are gone. The client has re-attached to the new daemon: create "
                        "the sequences again", c->endpoint);
}

kvd_result kvd__rejoin_pending(kvd_client *c) {
    if (!c->restarted) return KVD_OK;
    int replaced = 0;
    kvd_result rc = kvd__rejoin(c, 1, &replaced);
    if (rc) return rc;
    return replaced ? sequences_gone(c) : KVD_OK;
}

kvd_result kvd__rpc(kvd_client *c, Kvd__V1__Request *req, Kvd__V1__Response__BodyCase want,
                    Kvd__V1__Response **out) {
    return kvd__rpc_with(c, req, want, out, NULL);
}

kvd_result kvd__rpc_with(kvd_client *c, Kvd__V1__Request *req, Kvd__V1__Response__BodyCase want,
                         Kvd__V1__Response **out, ProtobufCAllocator *alloc) {
    int not_bound = 0;
    kvd_result rc = kvd__rpc_once(c, req, want, out, &not_bound, alloc);
    /* Hello is the rejoin's first step and binds by itself (kvd_client_hello finishes the rejoin).
     * Codes from KVD_ERR_TIMEOUT on are the client's: no reply (why wait for a Hello too?), a
     * closing client, or KVD_ERR_RESTARTED, a new segment, which the re-attach path handles. */
    if (!c->restarted || want == KVD__V1__RESPONSE__BODY_HELLO || rc >= KVD_ERR_TIMEOUT)
        return rc;
    /* The rejoin's errors must not replace the message of a daemon error the caller gets. */
    char *saved = NULL;
    int saved_code = c->last_server_code;
    if (rc && !not_bound && !c->ka_active) saved = strdup(c->err);
    int replaced = 0;
    /* The keep-alive thread never maps: the caller may be using views of the arena right now. */
    kvd_result joined = kvd__rejoin(c, !c->ka_active, &replaced);
    if (joined == KVD_OK && replaced) {
        if (*out) kvd__v1__response__free_unpacked(*out, alloc);
        *out = NULL;
        rc = sequences_gone(c);
    } else if (joined == KVD_OK && not_bound) {
        /* Refused before doing anything; once more with a new request id (kvd__rpc_once gives
         * one). A second refusal is the answer. */
        rc = kvd__rpc_once(c, req, want, out, NULL, alloc);
    } else if (joined != KVD_OK && (rc == KVD_OK || !not_bound)) {
        /* The request's own result stands (it took effect, or failed for its own reason); the
         * next call tries the rejoin again. */
        if (rc && saved) {
            kvd__set_err(c, rc, "%s", saved);
            c->last_server_code = saved_code;
        }
    } else if (joined != KVD_OK) {
        rc = joined; /* not bound and no Hello: why the Hello failed is the answer */
    }
    free(saved);
    return rc;
}
