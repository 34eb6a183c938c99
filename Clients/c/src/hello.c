/* libkvdclient Hello: the Hello exchange, (re)attaching to the arena, the hello info it returns. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

void kvd__hello_unref(hello_box *b) {
    if (!b) return;
    if (atomic_fetch_sub(&b->refs, 1) == 1) {
        kvd__v1__response__free_unpacked(b->resp, NULL);
        free(b->models);
        free(b->methods);
        free(b->params);
        free(b->policies);
        free(b);
    }
}

void kvd_hello_info_free(kvd_hello_info *info) {
    if (info) kvd__hello_unref((hello_box *)info->internal_);
}

const kvd_model_layout *kvd_hello_find_model(const kvd_hello_info *info, const char *name) {
    if (!info || !name) return NULL;
    for (size_t i = 0; i < info->num_models; i++)
        if (strcmp(info->models[i].name, name) == 0) return &info->models[i];
    return NULL;
}

uint32_t kvd_hello_layer_window(const kvd_hello_info *info, const char *name, uint32_t layer) {
    const kvd_model_layout *m = kvd_hello_find_model(info, name);
    if (!m) return 0;
    /* models[k] was built from the reply's models[k] (build_hello), which keeps the windows. */
    const Kvd__V1__ModelLayout *pm = ((const hello_box *)info->internal_)->resp->hello->models[m - info->models];
    return layer < pm->n_layer_windows ? pm->layer_windows[layer] : 0;
}

static kvd_result build_hello(kvd_client *c, Kvd__V1__Response *resp, hello_box **out) {
    Kvd__V1__HelloResponse *h = resp->hello;
    hello_box *b = calloc(1, sizeof *b);
    if (!b) return kvd__oom(c);
    atomic_init(&b->refs, 1);
    b->resp = resp;
    kvd_hello_info *i = &b->pub;
    i->internal_ = b;
    i->protocol_version = h->protocol_version;
    i->server_version = h->server_version;
    i->tenant = h->tenant ? h->tenant : "";
    Kvd__V1__SharedMemoryInfo *s = h->shm;
    i->shm_name = s->name;
    i->shm_size_bytes = s->size_bytes;
    i->page_bytes = s->page_bytes;
    i->pages_offset = s->pages_offset;
    i->staging_offset = s->staging_offset;
    i->staging_bytes = s->staging_bytes;
    i->page_count = s->page_count;
    i->layout_version = s->layout_version;
    i->arena_generation = s->arena_generation;
    if (h->limits) {
        i->max_message_bytes = h->limits->max_message_bytes;
        i->max_tokens_per_append = h->limits->max_tokens_per_append;
        i->max_sequences = h->limits->max_sequences;
        i->lease_ms = h->limits->lease_ms;
        i->orphan_grace_ms = h->limits->orphan_grace_ms;
        i->quota_pinned_pages = h->limits->quota_pinned_pages;
    }
    i->events_endpoint = h->events_endpoint ? h->events_endpoint : "";
    i->instance_id = h->instance_id;
    i->durable = h->durable ? 1 : 0;
    size_t nparams = 0;
    for (size_t k = 0; k < h->n_methods; k++) nparams += h->methods[k]->n_params;
    b->models = calloc(h->n_models + 1, sizeof *b->models);
    b->methods = calloc(h->n_methods + 1, sizeof *b->methods);
    b->params = calloc(nparams + 1, sizeof *b->params);
    b->policies = calloc(h->n_policies + 1, sizeof *b->policies);
    if (!b->models || !b->methods || !b->params || !b->policies) {
        b->resp = NULL;
        kvd__hello_unref(b);
        return kvd__oom(c);
    }
    for (size_t k = 0; k < h->n_models; k++) {
        Kvd__V1__ModelLayout *m = h->models[k];
        b->models[k] = (kvd_model_layout){m->name, m->layers, m->kv_heads, m->q_heads, m->head_dim,
                                          (kvd_dtype)m->dtype, m->page_tokens, m->default_method};
    }
    size_t p = 0;
    for (size_t k = 0; k < h->n_methods; k++) {
        Kvd__V1__MethodInfo *m = h->methods[k];
        b->methods[k] = (kvd_method_info){m->name, m->description, m->origin,
                                          m->needs_queries ? 1 : 0, m->n_params, &b->params[p]};
        for (size_t q = 0; q < m->n_params; q++, p++) {
            Kvd__V1__ParamInfo *pi = m->params[q];
            b->params[p] = (kvd_param_info){pi->name, pi->type, pi->default_value, pi->min_value,
                                            pi->max_value, pi->description};
        }
    }
    for (size_t k = 0; k < h->n_policies; k++) {
        Kvd__V1__PolicyInfo *pi = h->policies[k];
        b->policies[k] = (kvd_policy_info){pi->name, pi->method, pi->n_params,
                                           (const char *const *)pi->params};
    }
    i->num_models = h->n_models;
    i->models = b->models;
    i->num_methods = h->n_methods;
    i->methods = b->methods;
    i->num_policies = h->n_policies;
    i->policies = b->policies;
    *out = b;
    return KVD_OK;
}

/* Hello + (re)map. Sets c->attached. If the arena changed from a previous one, forgets sequences
 * and sets *replaced. */
kvd_result kvd__do_hello(kvd_client *c, int *replaced, int may_map) {
    if (replaced) *replaced = 0;
    Kvd__V1__HelloRequest hr = KVD__V1__HELLO_REQUEST__INIT;
    uint32_t versions[1] = {c->proto};
    hr.n_protocol_versions = 1;
    hr.protocol_versions = versions;
    hr.client_name = c->client_name;
    hr.tenant = c->tenant;
    hr.token = c->token;
    Kvd__V1__Request req = KVD__V1__REQUEST__INIT;
    req.body_case = KVD__V1__REQUEST__BODY_HELLO;
    req.hello = &hr;
    Kvd__V1__Response *resp;
    kvd_result rc = kvd__rpc(c, &req, KVD__V1__RESPONSE__BODY_HELLO, &resp);
    if (rc) return rc;
    Kvd__V1__HelloResponse *h = resp->hello;
    if (h->protocol_version != KVD_PROTOCOL_VERSION) {
        rc = kvd__set_err(c, KVD_ERR_PROTOCOL,
                          "kvd: protocol version mismatch: the daemon (version %s) chose protocol "
                          "version %u, this client speaks %u",
                          h->server_version ? h->server_version : "?", h->protocol_version,
                          KVD_PROTOCOL_VERSION);
        kvd__v1__response__free_unpacked(resp, NULL);
        return rc;
    }
    if (!h->shm) {
        kvd__v1__response__free_unpacked(resp, NULL);
        return kvd__set_err(c, KVD_ERR_PROTOCOL, "kvd: Hello reply without shared memory info");
    }
    const char *why = NULL;
    int same = c->arena && strcmp(c->hello->pub.shm_name, h->shm->name) == 0 &&
               c->arena->generation == h->shm->arena_generation && kvd__arena_current(c, &why);
    arena *fresh = NULL;
    if (!same && !may_map) {
        /* The keep-alive thread: c->hello must keep describing the mapped arena, so this Hello is
         * dropped; the caller's next call finds the new segment and re-attaches. */
        kvd__v1__response__free_unpacked(resp, NULL);
        return kvd__set_err(c, KVD_ERR_RESTARTED,
                            "kvd: the daemon at %s restarted with a new shared memory segment",
                            c->endpoint);
    }
    if (!same) {
        rc = kvd__map_arena(c, h->shm, &fresh);
        if (rc) {
            kvd__v1__response__free_unpacked(resp, NULL);
            return rc;
        }
    }
    hello_box *box = NULL;
    rc = build_hello(c, resp, &box);
    if (rc) {
        kvd__v1__response__free_unpacked(resp, NULL);
        kvd__arena_unref(fresh);
        return rc;
    }
    if (fresh) {
        if (c->arena) {
            if (replaced) *replaced = 1;
            c->n_seqs = 0; /* the old daemon's sequences are gone */
            c->restarted = 0; /* so there is nothing to take back, and this Hello bound us */
        }
        kvd__arena_unref(c->arena);
        c->arena = fresh;
    }
    kvd__hello_unref(c->hello);
    c->hello = box;
    c->attached = 1;
    return kvd__keepalive_follow(c, box->pub.lease_ms);
}
