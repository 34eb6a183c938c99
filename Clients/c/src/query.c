/* libkvdclient queries: kvd_client_query and reading its result (pages, inline, gathered). */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

/* Everything a result owns lives in `mem`: the unpacked reply (protobuf-c allocates from it) and
 * the head, position, log-weight and page-pointer arrays. Freeing the result releases it whole:
 * no malloc or free per head. */
typedef struct query_box {
    kvd_query_result pub;
    kvd_bump mem;
    arena *a;
} query_box;

void kvd_query_result_free(kvd_query_result *r) {
    if (!r) return;
    query_box *b = (query_box *)r->internal_;
    kvd__arena_unref(b->a);
    kvd__bump_release(&b->mem);
    free(b);
}

/* Expands HeadView.position_runs ((start int32, count uint32) little-endian) into `out`, n int32.
 * Returns NULL when they are well formed, else what is wrong: the bytes come from the daemon, but
 * a malformed reply must not make the client write past `out` or invent positions. */
static const char *expand_runs(const uint8_t *runs, size_t len, uint32_t n, int32_t *out) {
    if (len % 8) return "position runs are not 8-byte entries";
    uint64_t total = 0;
    int64_t next = 0; /* the smallest start the next run may have (ascending, no overlap) */
    for (size_t i = 0; i < len / 8; i++) {
        uint32_t s, cnt;
        memcpy(&s, runs + 8 * i, 4); /* little-endian on every platform kvd runs on */
        memcpy(&cnt, runs + 8 * i + 4, 4);
        int64_t start = (int32_t)s;
        if (cnt == 0 || start < next) return "position runs empty or not ascending";
        if (start + (int64_t)cnt - 1 > INT32_MAX) return "a position run passes 2^31 - 1";
        if (total + cnt > n) return "position runs hold more tokens than num_tokens";
        for (uint32_t k = 0; k < cnt; k++) out[total + k] = (int32_t)(start + k);
        total += cnt;
        next = start + cnt;
    }
    return total == n ? NULL : "position runs hold fewer tokens than num_tokens";
}

kvd_result kvd_client_query(kvd_client *c, uint64_t seq, kvd_query_mode mode,
                            const uint32_t *layers, size_t n_layers, kvd_query_result **out) {
    kvd_result rc = kvd__enter(c, 0);
    if (rc) return rc;
    if (!out) return kvd__leave(c, kvd__set_err(c, KVD_ERR_ARGUMENT, "kvd: query: out is NULL"));
    *out = NULL;
    if (mode < KVD_QUERY_PAGES || mode > KVD_QUERY_METADATA)
        return kvd__leave(c, kvd__set_err(c, KVD_ERR_ARGUMENT, "kvd: query: unknown mode %d",
                                          (int)mode));
    if (n_layers && !layers)
        return kvd__leave(c, kvd__set_err(c, KVD_ERR_ARGUMENT,
                                          "kvd: query: layers is NULL, n_layers %zu", n_layers));
    rc = kvd__ensure_session(c);
    if (rc) return kvd__leave(c, rc);
    Kvd__V1__QueryRequest qr = KVD__V1__QUERY_REQUEST__INIT;
    qr.sequence_id = seq;
    qr.mode = (Kvd__V1__QueryMode)mode;
    qr.n_layers = n_layers;
    qr.layers = (uint32_t *)layers;
    /* Positions as runs: 8 bytes per run instead of 4 per token. A daemon that predates the field
     * ignores it and sends `positions`, which is read below as before. */
    qr.position_runs = 1;
    Kvd__V1__Request req = KVD__V1__REQUEST__INIT;
    req.body_case = KVD__V1__REQUEST__BODY_QUERY;
    req.query = &qr;
    query_box *b = calloc(1, sizeof *b);
    if (!b) return kvd__leave(c, kvd__oom(c));
    kvd__bump_init(&b->mem);
    b->pub.internal_ = b;
    Kvd__V1__Response *resp;
    rc = kvd__rpc_with(c, &req, KVD__V1__RESPONSE__BODY_QUERY, &resp, &b->mem.pc);
    if (rc) {
        kvd_query_result_free(&b->pub);
        return kvd__leave(c, rc);
    }
    Kvd__V1__QueryResponse *q = resp->query;
    arena *a = c->arena;
    size_t es = kvd_dtype_size((kvd_dtype)q->dtype);
    uint32_t P = q->page_tokens;
    uint64_t tb = (uint64_t)q->head_dim * es;
    const char *bad = NULL;
    size_t total_tokens = 0, total_pages = 0, max_zero = 0;
    if (!es) bad = "unknown dtype";
    else if (!q->head_dim) bad = "head_dim 0";
    else if (mode == KVD_QUERY_PAGES && (P == 0 || 2 * (uint64_t)P * tb > a->page_bytes))
        bad = "page_tokens does not fit the arena's pages";
    for (size_t h = 0; !bad && h < q->n_heads; h++) {
        Kvd__V1__HeadView *hv = q->heads[h];
        uint64_t n = hv->num_tokens;
        /* Positions come as runs or as one int32 per token; an empty log_weights field means
         * every log-weight is 0. */
        int runs = hv->position_runs.len > 0 || (n > 0 && hv->positions.len == 0);
        if ((!runs && hv->positions.len != 4 * n) ||
            (hv->log_weights.len != 4 * n && hv->log_weights.len != 0))
            bad = "positions / log-weights do not match num_tokens";
        if (runs && hv->position_runs.len / 8 > n) bad = "more position runs than tokens";
        total_tokens += n;
        if (!hv->log_weights.len && n > max_zero) max_zero = n;
        if (mode == KVD_QUERY_PAGES) {
            if (hv->page_ids.len != 4 * kvd__pages_needed(0, n, P))
                bad = "page_ids do not match num_tokens";
            total_pages += hv->page_ids.len / 4;
        } else if (mode == KVD_QUERY_INLINE) {
            if (hv->keys.len != n * tb || hv->values.len != n * tb) bad = "inline K/V size";
        } else if (mode == KVD_QUERY_GATHER) {
            if (n && (!kvd__in_range(a, hv->gather_key_offset, n * tb) ||
                      !kvd__in_range(a, hv->gather_value_offset, n * tb)))
                bad = "gathered K/V outside the arena";
        }
    }
    kvd_head_view *heads = NULL;
    int32_t *positions = NULL;
    float *zeros = NULL;
    const void **ptrs = NULL;
    if (!bad) {
        /* The per-head arrays, from the same memory as the reply: positions are copied (the
         * reply's bytes need not be 4-byte aligned) or expanded from runs; every head without
         * log-weights points at one shared run of zeros. */
        heads = kvd__bump_alloc(&b->mem, (q->n_heads + 1) * sizeof *heads);
        positions = kvd__bump_alloc(&b->mem, (total_tokens + 1) * sizeof(int32_t));
        zeros = kvd__bump_alloc(&b->mem, (max_zero + 1) * sizeof(float));
        ptrs = kvd__bump_alloc(&b->mem, (2 * total_pages + 1) * sizeof(void *));
        if (!heads || !positions || !zeros || !ptrs) {
            kvd_query_result_free(&b->pub);
            return kvd__leave(c, kvd__oom(c));
        }
        memset(heads, 0, (q->n_heads + 1) * sizeof *heads);
        memset(zeros, 0, (max_zero + 1) * sizeof(float));
    }
    size_t tok = 0, pg = 0;
    for (size_t h = 0; !bad && h < q->n_heads; h++) {
        Kvd__V1__HeadView *hv = q->heads[h];
        kvd_head_view *v = &heads[h];
        uint32_t n = hv->num_tokens;
        v->layer = hv->layer;
        v->head = hv->head;
        v->num_tokens = n;
        if (hv->position_runs.len > 0 || (n > 0 && hv->positions.len == 0))
            bad = expand_runs(hv->position_runs.data, hv->position_runs.len, n, positions + tok);
        else
            memcpy(positions + tok, hv->positions.data, (size_t)n * 4);
        v->positions = positions + tok;
        /* Unaligned bytes in the reply are fine for memcpy, not for a float pointer: protobuf-c
         * copies bytes fields into allocations of their own, which are aligned. */
        v->log_weights = hv->log_weights.len ? (const float *)hv->log_weights.data : zeros;
        tok += n;
        if (mode == KVD_QUERY_PAGES) {
            uint32_t np = (uint32_t)(hv->page_ids.len / 4);
            v->num_pages = np;
            v->page_ids = (const uint32_t *)hv->page_ids.data;
            const void **kp = ptrs + 2 * pg, **vp = ptrs + 2 * pg + np;
            for (uint32_t i = 0; i < np; i++) {
                uint32_t p = v->page_ids[i];
                if (p >= a->page_count) {
                    bad = "page id outside the arena";
                    break;
                }
                const uint8_t *base = a->base + a->pages_offset + (uint64_t)p * a->page_bytes;
                kp[i] = base;
                vp[i] = base + (uint64_t)P * tb;
            }
            v->key_pages = kp;
            v->value_pages = vp;
            pg += np;
        } else if (mode == KVD_QUERY_INLINE) {
            v->keys = hv->keys.data;
            v->values = hv->values.data;
        } else if (mode == KVD_QUERY_GATHER) {
            v->keys = a->base + hv->gather_key_offset;
            v->values = a->base + hv->gather_value_offset;
        }
    }
    if (bad) {
        rc = kvd__set_err(c, KVD_ERR_PROTOCOL, "kvd: malformed Query reply for sequence %llu: %s",
                          (unsigned long long)seq, bad);
        kvd_query_result_free(&b->pub);
        return kvd__leave(c, rc);
    }
    if (mode == KVD_QUERY_PAGES || mode == KVD_QUERY_GATHER) b->a = kvd__arena_ref(a);
    b->pub.sequence_id = q->sequence_id;
    b->pub.generation = q->generation;
    b->pub.length = q->length;
    b->pub.mode = mode;
    b->pub.dtype = (kvd_dtype)q->dtype;
    b->pub.head_dim = q->head_dim;
    b->pub.page_tokens = P;
    b->pub.num_heads = q->n_heads;
    b->pub.heads = heads;
    *out = &b->pub;
    return kvd__leave(c, KVD_OK);
}

size_t kvd_query_head_bytes(const kvd_query_result *r, size_t h) {
    if (!r || h >= r->num_heads) return 0;
    return (size_t)r->heads[h].num_tokens * r->head_dim * kvd_dtype_size(r->dtype);
}

kvd_result kvd_query_copy_head(const kvd_query_result *r, size_t h, void *keys, void *values,
                               size_t capacity, size_t *needed) {
    if (needed) *needed = 0;
    if (!r || h >= r->num_heads || r->mode == KVD_QUERY_METADATA) return KVD_ERR_ARGUMENT;
    size_t need = kvd_query_head_bytes(r, h);
    if (needed) *needed = need;
    if (capacity < need) return KVD_ERR_BUFFER_TOO_SMALL;
    const kvd_head_view *v = &r->heads[h];
    if (r->mode != KVD_QUERY_PAGES) {
        if (keys && need) memcpy(keys, v->keys, need);
        if (values && need) memcpy(values, v->values, need);
        return KVD_OK;
    }
    size_t tb = (size_t)r->head_dim * kvd_dtype_size(r->dtype);
    uint32_t left = v->num_tokens;
    size_t at = 0;
    for (uint32_t i = 0; i < v->num_pages && left; i++) {
        uint32_t cnt = left < r->page_tokens ? left : r->page_tokens;
        if (keys) memcpy((uint8_t *)keys + at, v->key_pages[i], cnt * tb);
        if (values) memcpy((uint8_t *)values + at, v->value_pages[i], cnt * tb);
        at += cnt * tb;
        left -= cnt;
    }
    return KVD_OK;
}

const kvd_head_view *kvd_query_find_head(const kvd_query_result *r, uint32_t layer, uint32_t head) {
    if (!r) return NULL;
    for (size_t i = 0; i < r->num_heads; i++)
        if (r->heads[i].layer == layer && r->heads[i].head == head) return &r->heads[i];
    return NULL;
}
