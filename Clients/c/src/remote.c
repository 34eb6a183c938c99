/* libkvdclient remote tier: Restore of a sequence the memory manager evicted to the remote store
 * (the remote figures are with the other Stats, in sequence.c). docs/REMOTE.md. */
#include "internal.h"

#include <stdint.h>

kvd_result kvd_client_restore(kvd_client *c, uint64_t seq, kvd_restore_result *out) {
    kvd_result rc = kvd__enter(c, 0);
    if (rc) return rc;
    if (seq == 0)
        return kvd__leave(c, kvd__set_err(c, KVD_ERR_ARGUMENT,
                                          "kvd: restore: sequence id 0 names no sequence"));
    rc = kvd__ensure_session(c);
    if (rc) return kvd__leave(c, rc);
    Kvd__V1__RestoreRequest rr = KVD__V1__RESTORE_REQUEST__INIT;
    rr.sequence_id = seq;
    Kvd__V1__Request req = KVD__V1__REQUEST__INIT;
    req.body_case = KVD__V1__REQUEST__BODY_RESTORE;
    req.restore = &rr;
    Kvd__V1__Response *resp;
    rc = kvd__rpc(c, &req, KVD__V1__RESPONSE__BODY_RESTORE, &resp);
    if (rc) return kvd__leave(c, rc);
    const Kvd__V1__RestoreResponse *r = resp->restore;
    kvd_restore_result res = {r->sequence_id, r->length, r->generation, r->from_remote ? 1 : 0,
                              r->restore_us, r->bytes};
    kvd__v1__response__free_unpacked(resp, NULL);
    /* Restore brings a sequence back under the id asked for; another id would be a daemon bug
     * the caller could not act on (it would not know which sequence it now owns). */
    if (res.sequence_id != seq)
        return kvd__leave(c, kvd__set_err(c, KVD_ERR_PROTOCOL,
                                          "kvd: restore: asked for sequence %llu, the daemon "
                                          "answered for sequence %llu",
                                          (unsigned long long)seq,
                                          (unsigned long long)res.sequence_id));
    /* The sequence is this connection's now. Its layout is the one it had before the eviction:
     * when this client knows it (it created or forked the sequence), it is kept and the sequence
     * counts as created (taken back after a durable daemon's restart); otherwise the reply, which
     * names no model, leaves it to kvd__layout_of to learn with Stats when a zero-copy append
     * needs it, as for any sequence this client did not create. */
    kvd__layout_claim(c, seq);
    if (out) *out = res;
    return kvd__leave(c, KVD_OK);
}
