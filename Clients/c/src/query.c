/* libkvdclient queries: kvd_client_query and reading its result (pages, inline, gathered). */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

typedef struct query_box {
    kvd_query_result pub;
    Kvd__V1__Response *resp;
    arena *a;
    kvd_head_view *heads;
    int32_t *positions;
    float *log_weights;
    uint32_t *ids;
    const void **ptrs;
} query_box;

void kvd_query_result_free(kvd_query_result *r) {
    if (!r) return;
    query_box *b = (query_box *)r->internal_;
    kvd__v1__response__free_unpacked(b->resp, NULL);
    kvd__arena_unref(b->a);
    free(b->heads);
    free(b->positions);
    free(b->log_weights);
    free(b->ids);
    free(b->ptrs);
    free(b);
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
    Kvd__V1__Request req = KVD__V1__REQUEST__INIT;
    req.body_case = KVD__V1__REQUEST__BODY_QUERY;
    req.query = &qr;
    Kvd__V1__Response *resp;
    rc = kvd__rpc(c, &req, KVD__V1__RESPONSE__BODY_QUERY, &resp);
    if (rc) return kvd__leave(c, rc);
    Kvd__V1__QueryResponse *q = resp->query;
    arena *a = c->arena;
    query_box *b = calloc(1, sizeof *b);
    if (!b) {
        kvd__v1__response__free_unpacked(resp, NULL);
        return kvd__leave(c, kvd__oom(c));
    }
    b->resp = resp;
    b->pub.internal_ = b;
    size_t es = kvd_dtype_size((kvd_dtype)q->dtype);
    uint32_t P = q->page_tokens;
    uint64_t tb = (uint64_t)q->head_dim * es;
    const char *bad = NULL;
    size_t total_tokens = 0, total_pages = 0;
    if (!es) bad = "unknown dtype";
    else if (!q->head_dim) bad = "head_dim 0";
    else if (mode == KVD_QUERY_PAGES && (P == 0 || 2 * (uint64_t)P * tb > a->page_bytes))
        bad = "page_tokens does not fit the arena's pages";
    for (size_t h = 0; !bad && h < q->n_heads; h++) {
        Kvd__V1__HeadView *hv = q->heads[h];
        uint64_t n = hv->num_tokens;
        /* An empty log_weights field means every log-weight is 0. */
        if (hv->positions.len != 4 * n || (hv->log_weights.len != 4 * n && hv->log_weights.len != 0))
            bad = "positions / log-weights do not match num_tokens";
        total_tokens += n;
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
    if (!bad) {
        b->heads = calloc(q->n_heads + 1, sizeof *b->heads);
        b->positions = malloc((total_tokens + 1) * sizeof(int32_t));
        b->log_weights = malloc((total_tokens + 1) * sizeof(float));
        b->ids = malloc((total_pages + 1) * sizeof(uint32_t));
        b->ptrs = malloc((2 * total_pages + 1) * sizeof(void *));
        if (!b->heads || !b->positions || !b->log_weights || !b->ids || !b->ptrs) {
            kvd_query_result_free(&b->pub);
            return kvd__leave(c, kvd__oom(c));
        }
    }
    size_t tok = 0, pg = 0;
    for (size_t h = 0; !bad && h < q->n_heads; h++) {
        Kvd__V1__HeadView *hv = q->heads[h];
        kvd_head_view *v = &b->heads[h];
        uint32_t n = hv->num_tokens;
        v->layer = hv->layer;
        v->head = hv->head;
        v->num_tokens = n;
        memcpy(b->positions + tok, hv->positions.data, (size_t)n * 4);
        if (hv->log_weights.len)
            memcpy(b->log_weights + tok, hv->log_weights.data, (size_t)n * 4);
        else
            memset(b->log_weights + tok, 0, (size_t)n * 4);
        v->positions = b->positions + tok;
        v->log_weights = b->log_weights + tok;
        tok += n;
        if (mode == KVD_QUERY_PAGES) {
            uint32_t np = (uint32_t)(hv->page_ids.len / 4);
            memcpy(b->ids + pg, hv->page_ids.data, (size_t)np * 4);
            v->num_pages = np;
            v->page_ids = b->ids + pg;
            const void **kp = b->ptrs + 2 * pg, **vp = b->ptrs + 2 * pg + np;
            for (uint32_t i = 0; i < np; i++) {
                uint32_t p = b->ids[pg + i];
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
    b->pub.heads = b->heads;
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
