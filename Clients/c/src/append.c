/* libkvdclient appending: inline Append and zero-copy Reserve / write / Commit (all, or some with
 * the rest kept reserved) / Abort, with or without the tokens' ids (prefix reuse). The pipelined
 * API is pipeline.c. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

static kvd_result check_kv_args(kvd_client *c, const char *what, kvd_dtype dtype, uint32_t layers,
                                uint32_t kv_heads, uint32_t tokens, uint32_t head_dim,
                                const void *keys, const void *values, size_t *bytes) {
    if (!keys || !values)
        return kvd__set_err(c, KVD_ERR_ARGUMENT, "kvd: %s: keys or values is NULL", what);
    size_t es = kvd_dtype_size(dtype);
    if (!es)
        return kvd__set_err(c, KVD_ERR_ARGUMENT, "kvd: %s: dtype %d is not F16, BF16 or F32", what,
                            (int)dtype);
    if (!layers || !kv_heads || !tokens || !head_dim)
        return kvd__set_err(c, KVD_ERR_ARGUMENT,
                            "kvd: %s: shape [%u, %u, %u, %u] has a zero dimension (zero tokens to "
                            "append?)", what, layers, kv_heads, tokens, head_dim);
    size_t n = es;
    if (!kvd__mul_size(&n, layers) || !kvd__mul_size(&n, kv_heads) || !kvd__mul_size(&n, tokens) ||
        !kvd__mul_size(&n, head_dim))
        return kvd__set_err(c, KVD_ERR_ARGUMENT, "kvd: %s: tensor size overflows", what);
    *bytes = n;
    return KVD_OK;
}

/* The ids of an append or commit of `tokens` tokens: none, or exactly one per token. Checked here
 * so a wrong count is refused before anything is sent or reserved. */
static kvd_result append_ids(kvd_client *c, const char *what, uint32_t tokens,
                             const uint32_t *ids, size_t n, ProtobufCBinaryData *out) {
    if (n != 0 && n != tokens)
        return kvd__set_err(c, KVD_ERR_ARGUMENT,
                            "kvd: %s: %zu token ids for %u tokens; give one id per token, or none",
                            what, n, tokens);
    return kvd__token_ids(c, what, ids, n, out);
}

/* Inline Append with the session established and the arguments checked (`bytes` per tensor). */
static kvd_result append_inline(kvd_client *c, uint64_t seq, kvd_dtype dtype, uint32_t layers,
                                uint32_t kv_heads, uint32_t tokens, uint32_t head_dim,
                                size_t bytes, const void *keys, const void *values,
                                ProtobufCBinaryData ids, kvd_append_result *out) {
    uint32_t shape[4] = {layers, kv_heads, tokens, head_dim};
    Kvd__V1__Tensor k = KVD__V1__TENSOR__INIT, v = KVD__V1__TENSOR__INIT;
    k.dtype = v.dtype = (Kvd__V1__DType)dtype;
    k.n_shape = v.n_shape = 4;
    k.shape = v.shape = shape;
    k.data.len = v.data.len = bytes;
    k.data.data = (uint8_t *)keys;
    v.data.data = (uint8_t *)values;
    Kvd__V1__AppendRequest ar = KVD__V1__APPEND_REQUEST__INIT;
    ar.sequence_id = seq;
    ar.keys = &k;
    ar.values = &v;
    ar.token_ids = ids;
    Kvd__V1__Request req = KVD__V1__REQUEST__INIT;
    req.body_case = KVD__V1__REQUEST__BODY_APPEND;
    req.append = &ar;
    Kvd__V1__Response *resp;
    kvd_result rc = kvd__rpc(c, &req, KVD__V1__RESPONSE__BODY_APPEND, &resp);
    if (rc) return rc;
    if (out) {
        out->length = resp->append->length;
        out->first_position = resp->append->first_position;
        out->generation = resp->append->generation;
    }
    kvd__v1__response__free_unpacked(resp, NULL);
    return KVD_OK;
}

kvd_result kvd_client_append(kvd_client *c, uint64_t seq, kvd_dtype dtype, uint32_t layers,
                             uint32_t kv_heads, uint32_t tokens, uint32_t head_dim,
                             const void *keys, const void *values, kvd_append_result *out) {
    kvd_result rc = kvd__enter(c, 0);
    if (rc) return rc;
    size_t bytes;
    rc = check_kv_args(c, "append", dtype, layers, kv_heads, tokens, head_dim, keys, values,
                       &bytes);
    if (rc) return kvd__leave(c, rc);
    rc = kvd__ensure_session(c);
    if (rc) return kvd__leave(c, rc);
    ProtobufCBinaryData none = {0, NULL};
    return kvd__leave(c, append_inline(c, seq, dtype, layers, kv_heads, tokens, head_dim, bytes,
                                       keys, values, none, out));
}

typedef struct res_box {
    kvd_reservation pub;
    arena *a;
    kvd_reservation_head *heads;
    uint32_t *ids;
} res_box;

void kvd_reservation_free(kvd_reservation *r) {
    if (!r) return;
    res_box *b = (res_box *)r->internal_;
    kvd__arena_unref(b->a);
    free(b->heads);
    free(b->ids);
    free(b);
}

kvd_result kvd__commit_rpc(kvd_client *c, uint64_t seq, uint64_t rid, uint32_t n, int abort_,
                           int keep, const ProtobufCBinaryData *ids, kvd_append_result *out,
                           uint32_t *remaining) {
    Kvd__V1__CommitRequest cr = KVD__V1__COMMIT_REQUEST__INIT;
    cr.sequence_id = seq;
    cr.reservation_id = rid;
    cr.num_tokens = n;
    cr.abort = abort_ ? 1 : 0;
    cr.keep_reserved = keep ? 1 : 0;
    if (ids) cr.token_ids = *ids;
    Kvd__V1__Request req = KVD__V1__REQUEST__INIT;
    req.body_case = KVD__V1__REQUEST__BODY_COMMIT;
    req.commit = &cr;
    Kvd__V1__Response *resp;
    kvd_result rc = kvd__rpc(c, &req, KVD__V1__RESPONSE__BODY_COMMIT, &resp);
    if (rc) return rc;
    if (out) {
        out->length = resp->commit->length;
        out->first_position = resp->commit->first_position;
        out->generation = resp->commit->generation;
    }
    if (remaining) *remaining = resp->commit->reserved_remaining;
    kvd__v1__response__free_unpacked(resp, NULL);
    return KVD_OK;
}

kvd_result kvd__reservation_from(kvd_client *c, uint64_t seq, const seq_layout *Lp, uint32_t n,
                                 Kvd__V1__Response *resp, kvd_reservation **out, uint64_t *rid) {
    kvd_result rc = KVD_OK;
    seq_layout L = *Lp;
    Kvd__V1__ReserveResponse *r = resp->reserve;
    *rid = r->reservation_id;
    arena *a = c->arena;
    size_t heads = (size_t)L.layers * L.kv_heads;
    size_t es = kvd_dtype_size(L.dtype);
    uint64_t token_bytes = (uint64_t)L.head_dim * es;
    uint32_t P = r->page_tokens;
    res_box *b = calloc(1, sizeof *b);
    size_t total_ids = 0;
    const char *bad = NULL;
    if (!b) {
        rc = kvd__oom(c);
        goto abort_it;
    }
    if (r->n_heads != heads) bad = "head count differs from the model's";
    else if (P == 0 || P != L.page_tokens) bad = "page_tokens differs from the model's";
    else if (2 * (uint64_t)P * token_bytes > a->page_bytes) bad = "pages too small for the model";
    else if (r->num_tokens != n) bad = "reserved token count differs from the request";
    for (size_t h = 0; !bad && h < r->n_heads; h++) {
        if (r->heads[h]->page_ids.len % 4) bad = "page_ids length is not a multiple of 4";
        total_ids += r->heads[h]->page_ids.len / 4;
    }
    if (!bad) {
        b->heads = calloc(heads, sizeof *b->heads);
        b->ids = malloc((total_ids ? total_ids : 1) * sizeof *b->ids);
        if (!b->heads || !b->ids) {
            rc = kvd__oom(c);
            goto abort_it;
        }
    }
    size_t at = 0;
    for (size_t h = 0; !bad && h < r->n_heads; h++) {
        Kvd__V1__HeadSlots *hs = r->heads[h];
        if (hs->layer >= L.layers || hs->head >= L.kv_heads) {
            bad = "head outside the model";
            break;
        }
        kvd_reservation_head *dst = &b->heads[(size_t)hs->layer * L.kv_heads + hs->head];
        if (dst->page_ids) { bad = "a head appears twice"; break; }
        uint32_t np = (uint32_t)(hs->page_ids.len / 4);
        if (hs->first_slot >= P || np != kvd__pages_needed(hs->first_slot, n, P)) {
            bad = "page count does not match first_slot and the token count";
            break;
        }
        memcpy(b->ids + at, hs->page_ids.data, (size_t)np * 4);
        for (uint32_t q = 0; q < np; q++)
            if (b->ids[at + q] >= a->page_count) bad = "page id outside the arena";
        *dst = (kvd_reservation_head){hs->layer, hs->head, hs->first_slot, np, b->ids + at};
        at += np;
    }
    if (bad) {
        rc = kvd__set_err(c, KVD_ERR_PROTOCOL, "kvd: malformed Reserve reply for sequence %llu: %s",
                          (unsigned long long)seq, bad);
        goto abort_it;
    }
    b->a = kvd__arena_ref(a);
    b->pub = (kvd_reservation){seq, r->reservation_id, n, P, L.layers, L.kv_heads, L.head_dim,
                               L.dtype, heads, b->heads, b};
    kvd__v1__response__free_unpacked(resp, NULL);
    *out = &b->pub;
    return KVD_OK;
abort_it:
    kvd__v1__response__free_unpacked(resp, NULL);
    if (b) {
        free(b->heads);
        free(b->ids);
        free(b);
    }
    return rc;
}

/* Reserve with the session established; on a malformed reply the reservation is aborted. */
static kvd_result reserve_locked(kvd_client *c, uint64_t seq, uint32_t n, kvd_reservation **out) {
    seq_layout L;
    kvd_result rc = kvd__layout_of(c, seq, &L);
    if (rc) return rc;
    Kvd__V1__ReserveRequest rr = KVD__V1__RESERVE_REQUEST__INIT;
    rr.sequence_id = seq;
    rr.num_tokens = n;
    Kvd__V1__Request req = KVD__V1__REQUEST__INIT;
    req.body_case = KVD__V1__REQUEST__BODY_RESERVE;
    req.reserve = &rr;
    Kvd__V1__Response *resp;
    rc = kvd__rpc(c, &req, KVD__V1__RESPONSE__BODY_RESERVE, &resp);
    if (rc) return rc;
    uint64_t rid;
    rc = kvd__reservation_from(c, seq, &L, n, resp, out, &rid);
    if (rc) {
        char *keep = strdup(c->err);
        kvd__commit_rpc(c, seq, rid, 0, 1, 0, NULL, NULL, NULL);
        if (keep) {
            kvd__set_err(c, rc, "%s", keep);
            free(keep);
        }
    }
    return rc;
}

kvd_result kvd_client_reserve(kvd_client *c, uint64_t seq, uint32_t n, kvd_reservation **out) {
    kvd_result rc = kvd__enter(c, 0);
    if (rc) return rc;
    if (!out) return kvd__leave(c, kvd__set_err(c, KVD_ERR_ARGUMENT, "kvd: reserve: out is NULL"));
    *out = NULL;
    if (!n) return kvd__leave(c, kvd__set_err(c, KVD_ERR_ARGUMENT, "kvd: reserve: zero tokens"));
    rc = kvd__ensure_session(c);
    if (rc) return kvd__leave(c, rc);
    return kvd__leave(c, reserve_locked(c, seq, n, out));
}

static uint8_t *slot_ptr(const kvd_reservation *r, size_t h, uint32_t t, int value) {
    if (!r || h >= r->num_heads || t >= r->num_tokens) return NULL;
    const res_box *b = (const res_box *)r->internal_;
    const kvd_reservation_head *hd = &r->heads[h];
    uint64_t abs = (uint64_t)hd->first_slot + t;
    uint32_t page = hd->page_ids[abs / r->page_tokens];
    uint64_t tb = (uint64_t)r->head_dim * kvd_dtype_size(r->dtype);
    uint64_t off = b->a->pages_offset + (uint64_t)page * b->a->page_bytes +
                   (abs % r->page_tokens) * tb + (value ? (uint64_t)r->page_tokens * tb : 0);
    return b->a->base + off;
}

void *kvd_reservation_key(const kvd_reservation *r, size_t h, uint32_t t) {
    return slot_ptr(r, h, t, 0);
}

void *kvd_reservation_value(const kvd_reservation *r, size_t h, uint32_t t) {
    return slot_ptr(r, h, t, 1);
}

/* Writes of at least this many bytes (K and V together) go through streaming stores: the runs are
 * page-sized blocks one page apart, and ordinary stores first read every destination cache line
 * (read-for-ownership), which made a 16-64 MiB write ~15-50% slower than one contiguous memcpy of
 * the same bytes; streaming stores skip that read. Smaller writes (decode steps) stay in cache
 * with memcpy. */
#define STREAM_MIN_BYTES ((size_t)1 << 20)

#if defined(__SSE2__)
#include <emmintrin.h>
/* `n` bytes with non-temporal stores; `dst` 16-byte aligned, `n` a multiple of 16. */
static void copy_streaming(uint8_t *dst, const uint8_t *src, size_t n) {
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        __m128i a = _mm_loadu_si128((const __m128i *)(src + i));
        __m128i b = _mm_loadu_si128((const __m128i *)(src + i + 16));
        __m128i c = _mm_loadu_si128((const __m128i *)(src + i + 32));
        __m128i d = _mm_loadu_si128((const __m128i *)(src + i + 48));
        _mm_stream_si128((__m128i *)(dst + i), a);
        _mm_stream_si128((__m128i *)(dst + i + 16), b);
        _mm_stream_si128((__m128i *)(dst + i + 32), c);
        _mm_stream_si128((__m128i *)(dst + i + 48), d);
    }
    for (; i < n; i += 16)
        _mm_stream_si128((__m128i *)(dst + i), _mm_loadu_si128((const __m128i *)(src + i)));
}
#endif

static void copy_run(uint8_t *dst, const uint8_t *src, size_t n, int stream) {
#if defined(__SSE2__)
    if (stream && ((uintptr_t)dst & 15) == 0 && (n & 15) == 0) {
        copy_streaming(dst, src, n);
        return;
    }
#else
    (void)stream;
#endif
    memcpy(dst, src, n);
}

kvd_result kvd_reservation_write(const kvd_reservation *r, const void *keys, const void *values,
                                 size_t bytes) {
    if (!r || !keys || !values) return KVD_ERR_ARGUMENT;
    size_t tb = (size_t)r->head_dim * kvd_dtype_size(r->dtype);
    size_t per_head = tb * r->num_tokens;
    if (bytes < per_head * r->num_heads) return KVD_ERR_BUFFER_TOO_SMALL;
    const uint8_t *ks = keys, *vs = values;
    int stream = per_head * r->num_heads >= STREAM_MIN_BYTES / 2;
    for (size_t h = 0; h < r->num_heads; h++) {
        uint32_t t = 0;
        while (t < r->num_tokens) {
            uint32_t slot = (uint32_t)(((uint64_t)r->heads[h].first_slot + t) % r->page_tokens);
            uint32_t run = r->page_tokens - slot;
            if (run > r->num_tokens - t) run = r->num_tokens - t;
            copy_run(slot_ptr(r, h, t, 0), ks + h * per_head + (size_t)t * tb, (size_t)run * tb,
                     stream);
            copy_run(slot_ptr(r, h, t, 1), vs + h * per_head + (size_t)t * tb, (size_t)run * tb,
                     stream);
            t += run;
        }
    }
#if defined(__SSE2__)
    /* Streaming stores are weakly ordered: make them visible before the Commit that publishes them
     * can be sent. */
    if (stream) _mm_sfence();
#endif
    return KVD_OK;
}

kvd_result kvd_client_commit(kvd_client *c, const kvd_reservation *r, uint32_t n,
                             kvd_append_result *out) {
    return kvd_client_commit_ex(c, r, n, NULL, 0, out);
}

kvd_result kvd_client_commit_ex(kvd_client *c, const kvd_reservation *r, uint32_t n,
                                const uint32_t *token_ids, size_t num_token_ids,
                                kvd_append_result *out) {
    kvd_result rc = kvd__enter(c, 0);
    if (rc) return rc;
    if (!r)
        return kvd__leave(c, kvd__set_err(c, KVD_ERR_ARGUMENT,
                                          "kvd: commit: reservation is NULL"));
    uint32_t count = n ? n : r->num_tokens;
    ProtobufCBinaryData ids;
    /* Checked against the count committed (the daemon refuses a count above the reservation). */
    rc = append_ids(c, "commit", count, token_ids, num_token_ids, &ids);
    if (rc) return kvd__leave(c, rc);
    rc = kvd__ensure_session(c);
    if (rc) return kvd__leave(c, rc);
    return kvd__leave(c, kvd__commit_rpc(c, r->sequence_id, r->reservation_id, count, 0, 0, &ids, out, NULL));
}

kvd_result kvd_client_commit_keep(kvd_client *c, const kvd_reservation *r, uint32_t n,
                                  const uint32_t *token_ids, size_t num_token_ids,
                                  kvd_append_result *out, uint32_t *remaining) {
    kvd_result rc = kvd__enter(c, 0);
    if (rc) return rc;
    if (!r)
        return kvd__leave(c, kvd__set_err(c, KVD_ERR_ARGUMENT,
                                          "kvd: commit_keep: reservation is NULL"));
    if (!n)
        return kvd__leave(c, kvd__set_err(c, KVD_ERR_ARGUMENT,
                                          "kvd: commit_keep: zero tokens; commit at least 1"));
    ProtobufCBinaryData ids;
    rc = append_ids(c, "commit_keep", n, token_ids, num_token_ids, &ids);
    if (rc) return kvd__leave(c, rc);
    rc = kvd__ensure_session(c);
    if (rc) return kvd__leave(c, rc);
    return kvd__leave(c, kvd__commit_rpc(c, r->sequence_id, r->reservation_id, n, 0, 1, &ids, out,
                                         remaining));
}

kvd_result kvd_client_abort(kvd_client *c, const kvd_reservation *r) {
    kvd_result rc = kvd__enter(c, 0);
    if (rc) return rc;
    if (!r)
        return kvd__leave(c, kvd__set_err(c, KVD_ERR_ARGUMENT,
                                          "kvd: abort: reservation is NULL"));
    rc = kvd__ensure_session(c);
    if (rc) return kvd__leave(c, rc);
    return kvd__leave(c, kvd__commit_rpc(c, r->sequence_id, r->reservation_id, 0, 1, 0, NULL, NULL, NULL));
}

/* Reserve / write / Commit with the session established and the arguments checked; the shape is
 * checked against the model first (the daemon cannot see zero-copy bytes). */
static kvd_result append_zero_copy(kvd_client *c, const char *what, uint64_t seq, kvd_dtype dtype,
                                   uint32_t layers, uint32_t kv_heads, uint32_t tokens,
                                   uint32_t head_dim, size_t bytes, const void *keys,
                                   const void *values, ProtobufCBinaryData ids,
                                   kvd_append_result *out) {
    seq_layout L;
    kvd_result rc = kvd__layout_of(c, seq, &L);
    if (rc) return rc;
    if (L.layers != layers || L.kv_heads != kv_heads || L.head_dim != head_dim || L.dtype != dtype)
        return kvd__set_err(c, KVD_ERR_ARGUMENT,
                            "kvd: %s: sequence %llu's model needs [%u, %u, tokens, %u] of dtype "
                            "%d; got [%u, %u, %u, %u] of dtype %d",
                            what, (unsigned long long)seq, L.layers, L.kv_heads, L.head_dim,
                            (int)L.dtype, layers, kv_heads, tokens, head_dim, (int)dtype);
    kvd_reservation *r;
    rc = reserve_locked(c, seq, tokens, &r);
    if (rc) return rc;
    rc = kvd_reservation_write(r, keys, values, bytes);
    if (rc)
        kvd__set_err(c, rc, "kvd: %s: writing the reservation failed", what);
    else
        rc = kvd__commit_rpc(c, seq, r->reservation_id, tokens, 0, 0, &ids, out, NULL);
    if (rc) {
        /* Whatever failed after the Reserve, the reservation must not stay open (it would block
         * the sequence's next append until its lease ran out): abort it, keeping the first error.
         * After a timed-out Commit that did land, the abort is refused and changes nothing. */
        char *keep = strdup(c->err);
        kvd__commit_rpc(c, seq, r->reservation_id, 0, 1, 0, NULL, NULL, NULL);
        if (keep) { kvd__set_err(c, rc, "%s", keep); free(keep); }
    }
    kvd_reservation_free(r);
    return rc;
}

kvd_result kvd_client_append_zero_copy(kvd_client *c, uint64_t seq, kvd_dtype dtype,
                                       uint32_t layers, uint32_t kv_heads, uint32_t tokens,
                                       uint32_t head_dim, const void *keys, const void *values,
                                       kvd_append_result *out) {
    kvd_result rc = kvd__enter(c, 0);
    if (rc) return rc;
    size_t bytes;
    rc = check_kv_args(c, "append_zero_copy", dtype, layers, kv_heads, tokens, head_dim, keys,
                       values, &bytes);
    if (rc) return kvd__leave(c, rc);
    rc = kvd__ensure_session(c);
    if (rc) return kvd__leave(c, rc);
    ProtobufCBinaryData none = {0, NULL};
    return kvd__leave(c, append_zero_copy(c, "append_zero_copy", seq, dtype, layers, kv_heads,
                                          tokens, head_dim, bytes, keys, values, none, out));
}

kvd_result kvd_client_append_ex(kvd_client *c, uint64_t seq, kvd_dtype dtype, uint32_t layers,
                                uint32_t kv_heads, uint32_t tokens, uint32_t head_dim,
                                const void *keys, const void *values,
                                const kvd_append_options *opts, kvd_append_result *out) {
    kvd_result rc = kvd__enter(c, 0);
    if (rc) return rc;
    kvd_append_options o;
    memset(&o, 0, sizeof o);
    if (opts) {
        if (opts->struct_size == 0 || opts->struct_size > sizeof o)
            return kvd__leave(c, kvd__set_err(c, KVD_ERR_ARGUMENT,
                                              "kvd: append_ex: options.struct_size is %zu; set "
                                              "it to sizeof(kvd_append_options) (%zu)",
                                              opts->struct_size, sizeof o));
        memcpy(&o, opts, opts->struct_size); /* fields past the caller's struct stay zero */
    }
    size_t bytes;
    rc = check_kv_args(c, "append_ex", dtype, layers, kv_heads, tokens, head_dim, keys, values,
                       &bytes);
    if (rc) return kvd__leave(c, rc);
    ProtobufCBinaryData ids;
    rc = append_ids(c, "append_ex", tokens, o.token_ids, o.num_token_ids, &ids);
    if (rc) return kvd__leave(c, rc);
    rc = kvd__ensure_session(c);
    if (rc) return kvd__leave(c, rc);
    if (o.zero_copy)
        rc = append_zero_copy(c, "append_ex", seq, dtype, layers, kv_heads, tokens, head_dim,
                              bytes, keys, values, ids, out);
    else
        rc = append_inline(c, seq, dtype, layers, kv_heads, tokens, head_dim, bytes, keys, values,
                           ids, out);
    return kvd__leave(c, rc);
}
