/* libkvdclient compaction: kvd_client_compact and the staging buffer (kvd_client_stage). */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

static kvd_result stage_rpc(kvd_client *c, uint64_t seq, uint64_t bytes, uint64_t *offset,
                            uint64_t *size) {
    Kvd__V1__StageRequest sr = KVD__V1__STAGE_REQUEST__INIT;
    sr.sequence_id = seq;
    sr.bytes = bytes;
    Kvd__V1__Request req = KVD__V1__REQUEST__INIT;
    req.body_case = KVD__V1__REQUEST__BODY_STAGE;
    req.stage = &sr;
    Kvd__V1__Response *resp;
    kvd_result rc = kvd__rpc(c, &req, KVD__V1__RESPONSE__BODY_STAGE, &resp);
    if (rc) return rc;
    *offset = resp->stage->offset;
    *size = resp->stage->bytes;
    kvd__v1__response__free_unpacked(resp, NULL);
    if (*size < bytes || !kvd__in_range(c->arena, *offset, *size))
        return kvd__set_err(c, KVD_ERR_PROTOCOL, "kvd: Stage returned a buffer outside the arena");
    return KVD_OK;
}

kvd_result kvd_client_stage(kvd_client *c, uint64_t seq, uint64_t bytes, void **ptr,
                            uint64_t *offset, uint64_t *size) {
    kvd_result rc = kvd__enter(c, 0);
    if (rc) return rc;
    rc = kvd__ensure_session(c);
    if (rc) return kvd__leave(c, rc);
    uint64_t off, sz;
    rc = stage_rpc(c, seq, bytes, &off, &sz);
    if (rc) return kvd__leave(c, rc);
    if (ptr) *ptr = c->arena->base + off;
    if (offset) *offset = off;
    if (size) *size = sz;
    return kvd__leave(c, KVD_OK);
}

typedef struct compact_box {
    kvd_compact_result pub;
    Kvd__V1__Response *resp;
    kvd_head_count *heads;
} compact_box;

void kvd_compact_result_free(kvd_compact_result *r) {
    if (!r) return;
    compact_box *b = (compact_box *)r->internal_;
    kvd__v1__response__free_unpacked(b->resp, NULL);
    free(b->heads);
    free(b);
}

kvd_result kvd_client_compact(kvd_client *c, uint64_t seq, const kvd_compact_options *opts,
                              kvd_compact_result **out) {
    kvd_result rc = kvd__enter(c, 0);
    if (rc) return rc;
    if (out) *out = NULL;
    kvd_compact_options o;
    memset(&o, 0, sizeof o);
    if (opts) {
        if (opts->struct_size == 0 || opts->struct_size > sizeof o)
            return kvd__leave(c, kvd__set_err(c, KVD_ERR_ARGUMENT,
                                              "kvd: compact: options.struct_size is %zu; set "
                                              "it to sizeof(kvd_compact_options) (%zu)",
                                              opts->struct_size, sizeof o));
        memcpy(&o, opts, opts->struct_size);
    }
    if (o.num_params && !o.params)
        return kvd__leave(c, kvd__set_err(c, KVD_ERR_ARGUMENT,
                                          "kvd: compact: params is NULL, num_params %zu",
                                          o.num_params));
    for (size_t i = 0; i < o.num_params; i++) {
        const kvd_param *p = &o.params[i];
        if (!p->name || !*p->name)
            return kvd__leave(c, kvd__set_err(c, KVD_ERR_ARGUMENT,
                                              "kvd: compact: parameter %zu has no name", i));
        if (p->type < KVD_PARAM_INT || p->type > KVD_PARAM_BOOL ||
            (p->type == KVD_PARAM_STRING && !p->value.s))
            return kvd__leave(c, kvd__set_err(c, KVD_ERR_ARGUMENT,
                                              "kvd: compact: parameter %s has a bad type or a "
                                              "NULL string", p->name));
    }
    size_t qbytes = 0;
    if (o.queries) {
        size_t es = kvd_dtype_size(o.queries_dtype);
        qbytes = es;
        if (!es)
            return kvd__leave(c, kvd__set_err(c, KVD_ERR_ARGUMENT,
                                              "kvd: compact: queries_dtype %d is not F16, "
                                              "BF16 or F32", (int)o.queries_dtype));
        for (int d = 0; d < 4; d++)
            if (!o.queries_shape[d] || !kvd__mul_size(&qbytes, o.queries_shape[d]))
                return kvd__leave(c, kvd__set_err(c, KVD_ERR_ARGUMENT,
                                                  "kvd: compact: queries_shape [%u, %u, %u, "
                                                  "%u] has a zero dimension or overflows",
                                                  o.queries_shape[0], o.queries_shape[1],
                                                  o.queries_shape[2], o.queries_shape[3]));
    }
    rc = kvd__ensure_session(c);
    if (rc) return kvd__leave(c, rc);

    Kvd__V1__Param *params = calloc(o.num_params + 1, sizeof *params);
    Kvd__V1__Param **pp = calloc(o.num_params + 1, sizeof *pp);
    if (!params || !pp) {
        free(params);
        free(pp);
        return kvd__leave(c, kvd__oom(c));
    }
    for (size_t i = 0; i < o.num_params; i++) {
        const kvd_param *p = &o.params[i];
        Kvd__V1__Param init = KVD__V1__PARAM__INIT;
        params[i] = init;
        params[i].name = (char *)p->name;
        switch (p->type) {
        case KVD_PARAM_INT:
            params[i].value_case = KVD__V1__PARAM__VALUE_INT_VALUE;
            params[i].int_value = p->value.i;
            break;
        case KVD_PARAM_FLOAT:
            params[i].value_case = KVD__V1__PARAM__VALUE_FLOAT_VALUE;
            params[i].float_value = p->value.f;
            break;
        case KVD_PARAM_STRING:
            params[i].value_case = KVD__V1__PARAM__VALUE_STRING_VALUE;
            params[i].string_value = (char *)p->value.s;
            break;
        case KVD_PARAM_BOOL:
            params[i].value_case = KVD__V1__PARAM__VALUE_BOOL_VALUE;
            params[i].bool_value = p->value.b ? 1 : 0;
            break;
        }
        pp[i] = &params[i];
    }
    Kvd__V1__CompactRequest cr = KVD__V1__COMPACT_REQUEST__INIT;
    cr.sequence_id = seq;
    cr.method = (char *)(o.method ? o.method : "");
    cr.policy = (char *)(o.policy ? o.policy : "");
    cr.n_params = o.num_params;
    cr.params = pp;
    Kvd__V1__Tensor qt = KVD__V1__TENSOR__INIT;
    Kvd__V1__SharedTensor qs = KVD__V1__SHARED_TENSOR__INIT;
    if (o.queries && o.queries_in_shm) {
        uint64_t off, sz;
        rc = stage_rpc(c, seq, qbytes, &off, &sz);
        if (rc) {
            free(params);
            free(pp);
            return kvd__leave(c, rc);
        }
        memcpy(c->arena->base + off, o.queries, qbytes);
        qs.dtype = (Kvd__V1__DType)o.queries_dtype;
        qs.n_shape = 4;
        qs.shape = o.queries_shape;
        qs.offset = off;
        cr.observation_case = KVD__V1__COMPACT_REQUEST__OBSERVATION_QUERIES_SHM;
        cr.queries_shm = &qs;
    } else if (o.queries) {
        qt.dtype = (Kvd__V1__DType)o.queries_dtype;
        qt.n_shape = 4;
        qt.shape = o.queries_shape;
        qt.data.len = qbytes;
        qt.data.data = (uint8_t *)o.queries;
        cr.observation_case = KVD__V1__COMPACT_REQUEST__OBSERVATION_QUERIES;
        cr.queries = &qt;
    }
    Kvd__V1__Request req = KVD__V1__REQUEST__INIT;
    req.body_case = KVD__V1__REQUEST__BODY_COMPACT;
    req.compact = &cr;
    Kvd__V1__Response *resp;
    rc = kvd__rpc(c, &req, KVD__V1__RESPONSE__BODY_COMPACT, &resp);
    free(params);
    free(pp);
    if (rc) return kvd__leave(c, rc);
    if (!out) {
        kvd__v1__response__free_unpacked(resp, NULL);
        return kvd__leave(c, KVD_OK);
    }
    Kvd__V1__CompactResponse *r = resp->compact;
    compact_box *b = calloc(1, sizeof *b);
    kvd_head_count *heads = calloc(r->n_heads + 1, sizeof *heads);
    if (!b || !heads) {
        free(b);
        free(heads);
        kvd__v1__response__free_unpacked(resp, NULL);
        return kvd__leave(c, kvd__oom(c));
    }
    for (size_t i = 0; i < r->n_heads; i++)
        heads[i] = (kvd_head_count){r->heads[i]->layer, r->heads[i]->head, r->heads[i]->before,
                                    r->heads[i]->kept};
    b->resp = resp;
    b->heads = heads;
    b->pub = (kvd_compact_result){r->sequence_id, r->generation, r->method, r->policy,
                                  r->chosen_by, r->n_heads, heads, r->n_budgets, r->budgets,
                                  r->pages_freed, r->bytes_freed, r->elapsed_ns, b};
    *out = &b->pub;
    return kvd__leave(c, KVD_OK);
}
