/* libkvdclient prefix reuse: token ids on the wire, Lookup and Fork (adopting creates are in
 * sequence.c, ids on Append / Commit in append.c, the prefix figures with the other Stats). */
#include "internal.h"

#include <stdint.h>

/* The wire wants uint32 little-endian; internal.h refuses to compile on a big-endian host, so a
 * uint32_t array already has exactly those bytes and is sent without a copy. */
_Static_assert(sizeof(uint32_t) == 4, "token ids are 4 bytes on the wire");

kvd_result kvd__token_ids(kvd_client *c, const char *what, const uint32_t *ids, size_t n,
                          ProtobufCBinaryData *out) {
    out->len = 0;
    out->data = NULL;
    if (n == 0) return KVD_OK; /* empty bytes = the field is absent: "no ids" on the wire */
    if (!ids)
        return kvd__set_err(c, KVD_ERR_ARGUMENT, "kvd: %s: token_ids is NULL but its count is %zu",
                            what, n);
    if (n > SIZE_MAX / 4)
        return kvd__set_err(c, KVD_ERR_ARGUMENT, "kvd: %s: %zu token ids overflow the byte count",
                            what, n);
    out->data = (uint8_t *)ids; /* only read: protobuf-c's pack copies it into the message */
    out->len = n * 4;
    return KVD_OK;
}

kvd_result kvd_client_lookup(kvd_client *c, const char *model, const uint32_t *ids, size_t n,
                             kvd_lookup_result *out) {
    kvd_result rc = kvd__enter(c, 0);
    if (rc) return rc;
    if (!model || !*model)
        return kvd__leave(c, kvd__set_err(c, KVD_ERR_ARGUMENT,
                                          "kvd: lookup: model is NULL or empty"));
    if (!out) return kvd__leave(c, kvd__set_err(c, KVD_ERR_ARGUMENT, "kvd: lookup: out is NULL"));
    Kvd__V1__LookupRequest lr = KVD__V1__LOOKUP_REQUEST__INIT;
    rc = kvd__token_ids(c, "lookup", ids, n, &lr.token_ids);
    if (rc) return kvd__leave(c, rc);
    rc = kvd__ensure_session(c);
    if (rc) return kvd__leave(c, rc);
    lr.model = (char *)model;
    Kvd__V1__Request req = KVD__V1__REQUEST__INIT;
    req.body_case = KVD__V1__REQUEST__BODY_LOOKUP;
    req.lookup = &lr;
    Kvd__V1__Response *resp;
    rc = kvd__rpc(c, &req, KVD__V1__RESPONSE__BODY_LOOKUP, &resp);
    if (rc) return kvd__leave(c, rc);
    const Kvd__V1__LookupResponse *r = resp->lookup;
    /* The answer is whole pages of the prompt; anything else would make a caller skip tokens it
     * never prefilled, so it is refused rather than passed on. */
    if (r->page_tokens == 0 || r->tokens % r->page_tokens != 0 ||
        r->tokens / r->page_tokens != r->pages_per_head || r->tokens > n) {
        rc = kvd__set_err(c, KVD_ERR_PROTOCOL,
                          "kvd: lookup: inconsistent reply (%llu tokens, %u pages per head, %u "
                          "tokens per page) for %zu token ids",
                          (unsigned long long)r->tokens, r->pages_per_head, r->page_tokens, n);
        kvd__v1__response__free_unpacked(resp, NULL);
        return kvd__leave(c, rc);
    }
    out->tokens = r->tokens;
    out->pages_per_head = r->pages_per_head;
    out->page_tokens = r->page_tokens;
    kvd__v1__response__free_unpacked(resp, NULL);
    return kvd__leave(c, KVD_OK);
}

kvd_result kvd_client_fork(kvd_client *c, uint64_t seq, uint64_t length, uint64_t new_id,
                           kvd_fork_result *out) {
    kvd_result rc = kvd__enter(c, 0);
    if (rc) return rc;
    rc = kvd__ensure_session(c);
    if (rc) return kvd__leave(c, rc);
    Kvd__V1__ForkRequest fr = KVD__V1__FORK_REQUEST__INIT;
    fr.sequence_id = seq;
    fr.length = length;
    fr.new_sequence_id = new_id;
    Kvd__V1__Request req = KVD__V1__REQUEST__INIT;
    req.body_case = KVD__V1__REQUEST__BODY_FORK;
    req.fork = &fr;
    Kvd__V1__Response *resp;
    rc = kvd__rpc(c, &req, KVD__V1__RESPONSE__BODY_FORK, &resp);
    if (rc) return kvd__leave(c, rc);
    kvd_fork_result r = {resp->fork->sequence_id, resp->fork->length, resp->fork->generation};
    kvd__v1__response__free_unpacked(resp, NULL);
    /* The fork exists now whatever happens below: report it even if remembering its layout fails
     * (kvd__layout_of then learns it with Stats when a zero-copy append needs it). */
    kvd__layout_inherit(c, seq, r.sequence_id);
    if (out) *out = r;
    return kvd__leave(c, KVD_OK);
}
