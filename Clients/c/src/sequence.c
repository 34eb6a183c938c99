/* libkvdclient sequences: create (adopting a cached prefix) / pin / release / stats (arena,
 * memory manager, prefix cache, remote tier, one sequence's lease), and the sequence layouts this
 * client knows. */
#include "internal.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

static seq_layout *seq_find(kvd_client *c, uint64_t id) {
    for (size_t i = 0; i < c->n_seqs; i++)
        if (c->seqs[i].id == id) return &c->seqs[i];
    return NULL;
}

static void seq_forget(kvd_client *c, uint64_t id) {
    for (size_t i = 0; i < c->n_seqs; i++)
        if (c->seqs[i].id == id) {
            c->seqs[i] = c->seqs[--c->n_seqs];
            return;
        }
}

/* `created`: this client made the sequence (CreateSequence, Fork), as opposed to learning the
 * layout of someone else's with Stats; only created ones are taken back after a daemon restart. */
static int seq_remember(kvd_client *c, uint64_t id, const kvd_model_layout *m, int created) {
    seq_layout *s = seq_find(c, id);
    if (!s) {
        if (c->n_seqs == c->cap_seqs) {
            size_t cap = c->cap_seqs ? c->cap_seqs * 2 : 16;
            seq_layout *n = realloc(c->seqs, cap * sizeof *n);
            if (!n) return 0;
            c->seqs = n;
            c->cap_seqs = cap;
        }
        s = &c->seqs[c->n_seqs++];
        s->created = 0;
    }
    s->id = id;
    s->created |= created;
    s->layers = m->layers;
    s->kv_heads = m->kv_heads;
    s->head_dim = m->head_dim;
    s->page_tokens = m->page_tokens;
    s->dtype = m->dtype;
    return 1;
}

/* `o` is a whole kvd_sequence_options (zero past the caller's struct_size). */
static kvd_result create_sequence(kvd_client *c, const char *model, const kvd_sequence_options *o,
                                  uint64_t *out_id) {
    kvd_result rc = kvd__enter(c, 0);
    if (rc) return rc;
    if (!model || !*model)
        return kvd__leave(c, kvd__set_err(c, KVD_ERR_ARGUMENT,
                                          "kvd: create_sequence: model is NULL or empty"));
    Kvd__V1__CreateSequenceRequest cr = KVD__V1__CREATE_SEQUENCE_REQUEST__INIT;
    rc = kvd__token_ids(c, "create_sequence: adopt", o->adopt_token_ids, o->adopt_count,
                        &cr.adopt_token_ids);
    if (rc) return kvd__leave(c, rc);
    rc = kvd__ensure_session(c);
    if (rc) return kvd__leave(c, rc);
    cr.model = (char *)model;
    cr.sequence_id = o->sequence_id;
    cr.tenant = (char *)(o->tenant ? o->tenant : "");
    cr.pinned = o->pinned ? 1 : 0;
    Kvd__V1__Request req = KVD__V1__REQUEST__INIT;
    req.body_case = KVD__V1__REQUEST__BODY_CREATE_SEQUENCE;
    req.create_sequence = &cr;
    Kvd__V1__Response *resp;
    rc = kvd__rpc(c, &req, KVD__V1__RESPONSE__BODY_CREATE_SEQUENCE, &resp);
    if (rc) return kvd__leave(c, rc);
    uint64_t id = resp->create_sequence->sequence_id;
    uint64_t adopted = resp->create_sequence->adopted_tokens;
    kvd__v1__response__free_unpacked(resp, NULL);
    const kvd_model_layout *m = kvd_hello_find_model(&c->hello->pub, model);
    if (m && !seq_remember(c, id, m, 1)) return kvd__leave(c, kvd__oom(c));
    if (out_id) *out_id = id;
    /* Adopted tokens are whole pages of the ids sent; anything else would make the caller skip
     * positions it never prefilled. The sequence exists either way: *out_id names it (and so does
     * the message) for the caller to release. */
    if (adopted > o->adopt_count || (m && m->page_tokens && adopted % m->page_tokens))
        return kvd__leave(c, kvd__set_err(c, KVD_ERR_PROTOCOL,
                                          "kvd: create_sequence: sequence %llu adopted %llu "
                                          "tokens of %zu ids, not whole pages of them",
                                          (unsigned long long)id, (unsigned long long)adopted,
                                          o->adopt_count));
    if (o->adopted_tokens) *o->adopted_tokens = adopted;
    return kvd__leave(c, KVD_OK);
}

kvd_result kvd_client_create_sequence(kvd_client *c, const char *model, uint64_t sequence_id,
                                      const char *tenant, uint64_t *out_id) {
    kvd_sequence_options o;
    memset(&o, 0, sizeof o);
    o.sequence_id = sequence_id;
    o.tenant = tenant;
    return create_sequence(c, model, &o, out_id);
}

kvd_result kvd_client_create_sequence_ex(kvd_client *c, const char *model,
                                         const kvd_sequence_options *opts, uint64_t *out_id) {
    kvd_sequence_options o;
    memset(&o, 0, sizeof o);
    if (opts) {
        if (opts->struct_size == 0 || opts->struct_size > sizeof o) {
            kvd_result rc = kvd__enter(c, 0);
            if (rc) return rc;
            return kvd__leave(c, kvd__set_err(c, KVD_ERR_ARGUMENT,
                                              "kvd: create_sequence_ex: options.struct_size is "
                                              "%zu; set it to sizeof(kvd_sequence_options) (%zu)",
                                              opts->struct_size, sizeof o));
        }
        memcpy(&o, opts, opts->struct_size);
    }
    return create_sequence(c, model, &o, out_id);
}

kvd_result kvd_client_release(kvd_client *c, uint64_t seq, uint32_t *pages_freed,
                              uint64_t *bytes_freed) {
    kvd_result rc = kvd__enter(c, 0);
    if (rc) return rc;
    rc = kvd__ensure_session(c);
    if (rc) return kvd__leave(c, rc);
    Kvd__V1__ReleaseRequest rr = KVD__V1__RELEASE_REQUEST__INIT;
    rr.sequence_id = seq;
    Kvd__V1__Request req = KVD__V1__REQUEST__INIT;
    req.body_case = KVD__V1__REQUEST__BODY_RELEASE;
    req.release = &rr;
    Kvd__V1__Response *resp;
    rc = kvd__rpc(c, &req, KVD__V1__RESPONSE__BODY_RELEASE, &resp);
    if (rc) return kvd__leave(c, rc);
    if (pages_freed) *pages_freed = resp->release->pages_freed;
    if (bytes_freed) *bytes_freed = resp->release->bytes_freed;
    kvd__v1__response__free_unpacked(resp, NULL);
    seq_forget(c, seq);
    return kvd__leave(c, KVD_OK);
}

kvd_result kvd_client_pin(kvd_client *c, uint64_t seq, int pinned, int *out_pinned,
                          uint32_t *out_pinned_pages) {
    kvd_result rc = kvd__enter(c, 0);
    if (rc) return rc;
    rc = kvd__ensure_session(c);
    if (rc) return kvd__leave(c, rc);
    Kvd__V1__PinRequest pr = KVD__V1__PIN_REQUEST__INIT;
    pr.sequence_id = seq;
    pr.pinned = pinned ? 1 : 0;
    Kvd__V1__Request req = KVD__V1__REQUEST__INIT;
    req.body_case = KVD__V1__REQUEST__BODY_PIN;
    req.pin = &pr;
    Kvd__V1__Response *resp;
    rc = kvd__rpc(c, &req, KVD__V1__RESPONSE__BODY_PIN, &resp);
    if (rc) return kvd__leave(c, rc);
    if (out_pinned) *out_pinned = resp->pin->pinned ? 1 : 0;
    if (out_pinned_pages) *out_pinned_pages = resp->pin->pinned_pages;
    kvd__v1__response__free_unpacked(resp, NULL);
    return kvd__leave(c, KVD_OK);
}

static kvd_result stats_rpc(kvd_client *c, uint64_t seq, Kvd__V1__Response **resp) {
    Kvd__V1__StatsRequest sr = KVD__V1__STATS_REQUEST__INIT;
    sr.sequence_id = seq;
    Kvd__V1__Request req = KVD__V1__REQUEST__INIT;
    req.body_case = KVD__V1__REQUEST__BODY_STATS;
    req.stats = &sr;
    return kvd__rpc(c, &req, KVD__V1__RESPONSE__BODY_STATS, resp);
}

kvd_result kvd_client_stats(kvd_client *c, uint64_t seq, kvd_stats *out) {
    kvd_result rc = kvd__enter(c, 0);
    if (rc) return rc;
    if (!out) return kvd__leave(c, kvd__set_err(c, KVD_ERR_ARGUMENT, "kvd: stats: out is NULL"));
    rc = kvd__ensure_session(c);
    if (rc) return kvd__leave(c, rc);
    Kvd__V1__Response *resp;
    rc = stats_rpc(c, seq, &resp);
    if (rc) return kvd__leave(c, rc);
    Kvd__V1__StatsResponse *s = resp->stats;
    memset(out, 0, sizeof *out);
    out->total_pages = s->total_pages;
    out->free_pages = s->free_pages;
    out->page_bytes = s->page_bytes;
    out->sequences = s->sequences;
    out->staging_bytes = s->staging_bytes;
    out->staging_used_bytes = s->staging_used_bytes;
    out->requests = s->requests;
    out->errors = s->errors;
    if (s->sequence) {
        Kvd__V1__SequenceStats *q = s->sequence;
        free(c->stat_model);
        free(c->stat_tenant);
        c->stat_model = strdup(q->model ? q->model : "");
        c->stat_tenant = strdup(q->tenant ? q->tenant : "");
        out->has_sequence = 1;
        out->sequence.sequence_id = q->sequence_id;
        out->sequence.model = c->stat_model ? c->stat_model : "";
        out->sequence.tenant = c->stat_tenant ? c->stat_tenant : "";
        out->sequence.length = q->length;
        out->sequence.generation = q->generation;
        out->sequence.pages = q->pages;
        out->sequence.tokens_held = q->tokens_held;
        out->sequence.reserved_tokens = q->reserved_tokens;
        out->sequence.staging_bytes = q->staging_bytes;
    }
    kvd__v1__response__free_unpacked(resp, NULL);
    return kvd__leave(c, KVD_OK);
}

/* A caller's struct that starts with struct_size: it must hold at least the first field after it
 * and be no larger than this library's (a program built against a newer header). */
#define OUT_STRUCT_OK(out, type, first)                                                        \
    ((out) && (out)->struct_size >= offsetof(type, first) + sizeof((out)->first) &&            \
     (out)->struct_size <= sizeof(type))

/* The start of the tenant-wide, struct_size-versioned Stats reads: the caller's struct checked
 * (`ok`, `given` its struct_size), the session made, the tenant's Stats fetched into *resp (the
 * caller frees it). Returns the error to leave with, if any. */
static kvd_result versioned_stats(kvd_client *c, const char *what, const char *type, int ok,
                                  size_t given, size_t full, Kvd__V1__Response **resp) {
    if (!ok)
        return kvd__set_err(c, KVD_ERR_ARGUMENT,
                            "kvd: %s: out is NULL or out->struct_size is %zu; set it to sizeof(%s) "
                            "(%zu)", what, given, type, full);
    kvd_result rc = kvd__ensure_session(c);
    if (rc) return rc;
    return stats_rpc(c, 0, resp);
}

kvd_result kvd_client_memory_stats(kvd_client *c, kvd_memory_stats *out) {
    kvd_result rc = kvd__enter(c, 0);
    if (rc) return rc;
    Kvd__V1__Response *resp;
    rc = versioned_stats(c, "memory_stats", "kvd_memory_stats",
                         OUT_STRUCT_OK(out, kvd_memory_stats, high),
                         out ? out->struct_size : (size_t)0, sizeof *out, &resp);
    if (rc) return kvd__leave(c, rc);
    const Kvd__V1__MemoryStats *m = resp->stats->memory;
    if (!m) {
        kvd__v1__response__free_unpacked(resp, NULL);
        return kvd__leave(c, kvd__set_err(c, KVD_ERR_PROTOCOL,
                                          "kvd: memory_stats: the daemon's Stats reply has no "
                                          "memory figures (a kvd older than the memory manager?)"));
    }
    kvd_memory_stats full;
    memset(&full, 0, sizeof full);
    full.struct_size = out->struct_size;
    full.high = m->high;
    full.low = m->low;
    full.reservations_aborted = m->reservations_aborted;
    full.reservations_aborted_pages = m->reservations_aborted_pages;
    full.orphans_released = m->orphans_released;
    full.orphans_released_pages = m->orphans_released_pages;
    full.compactions = m->compactions;
    full.compactions_pages = m->compactions_pages;
    full.evictions = m->evictions;
    full.evictions_pages = m->evictions_pages;
    full.reclaim_passes = m->reclaim_passes;
    full.synchronous_reclaims = m->synchronous_reclaims;
    full.last_reclaim_us = m->last_reclaim_us;
    full.last_reclaim_reached_low = m->last_reclaim_reached_low ? 1 : 0;
    full.orphans = m->orphans;
    full.pinned_sequences = m->pinned_sequences;
    full.pinned_pages = m->pinned_pages;
    full.events_published = m->events_published;
    kvd__v1__response__free_unpacked(resp, NULL);
    memcpy(out, &full, full.struct_size); /* only what the caller's struct has room for */
    return kvd__leave(c, KVD_OK);
}

kvd_result kvd_client_prefix_stats(kvd_client *c, kvd_prefix_stats *out) {
    kvd_result rc = kvd__enter(c, 0);
    if (rc) return rc;
    Kvd__V1__Response *resp;
    rc = versioned_stats(c, "prefix_stats", "kvd_prefix_stats",
                         OUT_STRUCT_OK(out, kvd_prefix_stats, enabled),
                         out ? out->struct_size : (size_t)0, sizeof *out, &resp);
    if (rc) return kvd__leave(c, rc);
    const Kvd__V1__PrefixStats *p = resp->stats->prefix;
    if (!p) {
        kvd__v1__response__free_unpacked(resp, NULL);
        return kvd__leave(c, kvd__set_err(c, KVD_ERR_PROTOCOL,
                                          "kvd: prefix_stats: the daemon's Stats reply has no "
                                          "prefix figures (a kvd older than prefix reuse?)"));
    }
    kvd_prefix_stats full;
    memset(&full, 0, sizeof full);
    full.struct_size = out->struct_size;
    full.enabled = p->enabled ? 1 : 0;
    full.hits = p->hits;
    full.misses = p->misses;
    full.cached_blocks = p->cached_blocks;
    full.cached_pages = p->cached_pages;
    full.unused_pages = p->unused_pages;
    full.shared_pages = p->shared_pages;
    full.pages_saved = p->pages_saved;
    full.bytes_saved = p->bytes_saved;
    full.evictions = p->evictions;
    full.evicted_pages = p->evicted_pages;
    kvd__v1__response__free_unpacked(resp, NULL);
    memcpy(out, &full, full.struct_size); /* only what the caller's struct has room for */
    return kvd__leave(c, KVD_OK);
}

kvd_result kvd_client_remote_stats(kvd_client *c, kvd_remote_stats *out) {
    kvd_result rc = kvd__enter(c, 0);
    if (rc) return rc;
    Kvd__V1__Response *resp;
    rc = versioned_stats(c, "remote_stats", "kvd_remote_stats",
                         OUT_STRUCT_OK(out, kvd_remote_stats, enabled),
                         out ? out->struct_size : (size_t)0, sizeof *out, &resp);
    if (rc) return kvd__leave(c, rc);
    const Kvd__V1__RemoteStats *r = resp->stats->remote;
    if (!r) {
        kvd__v1__response__free_unpacked(resp, NULL);
        return kvd__leave(c, kvd__set_err(c, KVD_ERR_PROTOCOL,
                                          "kvd: remote_stats: the daemon's Stats reply has no "
                                          "remote figures (a kvd older than the remote tier?)"));
    }
    kvd_remote_stats full;
    memset(&full, 0, sizeof full);
    full.struct_size = out->struct_size;
    full.enabled = r->enabled ? 1 : 0;
    full.offloaded = r->offloaded;
    full.offloaded_bytes = r->offloaded_bytes;
    full.offload_failures = r->offload_failures;
    full.offload_dropped = r->offload_dropped;
    full.restored = r->restored;
    full.restore_failures = r->restore_failures;
    full.restore_corrupted = r->restore_corrupted;
    full.last_restore_us = r->last_restore_us;
    full.mean_restore_us = r->mean_restore_us;
    full.queued = r->queued;
    full.queued_bytes = r->queued_bytes;
    full.blocks_published = r->blocks_published;
    full.blocks_publish_failures = r->blocks_publish_failures;
    full.blocks_imported = r->blocks_imported;
    full.blocks_rejected = r->blocks_rejected;
    kvd__v1__response__free_unpacked(resp, NULL);
    memcpy(out, &full, full.struct_size); /* only what the caller's struct has room for */
    return kvd__leave(c, KVD_OK);
}

kvd_result kvd_client_sequence_lease(kvd_client *c, uint64_t seq, kvd_sequence_lease *out) {
    kvd_result rc = kvd__enter(c, 0);
    if (rc) return rc;
    if (!OUT_STRUCT_OK(out, kvd_sequence_lease, sequence_id))
        return kvd__leave(c, kvd__set_err(c, KVD_ERR_ARGUMENT,
                                          "kvd: sequence_lease: out is NULL or out->struct_size "
                                          "is %zu; set it to sizeof(kvd_sequence_lease) (%zu)",
                                          out ? out->struct_size : (size_t)0, sizeof *out));
    if (seq == 0)
        return kvd__leave(c, kvd__set_err(c, KVD_ERR_ARGUMENT,
                                          "kvd: sequence_lease: sequence id 0 names no sequence"));
    rc = kvd__ensure_session(c);
    if (rc) return kvd__leave(c, rc);
    Kvd__V1__Response *resp;
    rc = stats_rpc(c, seq, &resp);
    if (rc) return kvd__leave(c, rc);
    const Kvd__V1__SequenceStats *q = resp->stats->sequence;
    if (!q || q->sequence_id != seq) {
        rc = kvd__set_err(c, KVD_ERR_PROTOCOL,
                          "kvd: sequence_lease: Stats of sequence %llu answered %s",
                          (unsigned long long)seq, q ? "for another sequence" : "without its details");
        kvd__v1__response__free_unpacked(resp, NULL);
        return kvd__leave(c, rc);
    }
    kvd_sequence_lease full;
    memset(&full, 0, sizeof full);
    full.struct_size = out->struct_size;
    full.sequence_id = q->sequence_id;
    full.idle_ms = q->idle_ms;
    full.lease_remaining_ms = q->lease_remaining_ms;
    full.orphan = q->orphan ? 1 : 0;
    full.pinned = q->pinned ? 1 : 0;
    full.bytes = q->bytes;
    full.manager_compactions = q->manager_compactions;
    full.pages = q->pages;
    full.tokens_held = q->tokens_held;
    full.length = q->length;
    full.generation = q->generation;
    kvd__v1__response__free_unpacked(resp, NULL);
    memcpy(out, &full, full.struct_size);
    return kvd__leave(c, KVD_OK);
}

/* The layout of a sequence: remembered from CreateSequence, else learnt with Stats. */
kvd_result kvd__layout_of(kvd_client *c, uint64_t seq, seq_layout *out) {
    seq_layout *s = seq_find(c, seq);
    if (s) {
        *out = *s;
        return KVD_OK;
    }
    Kvd__V1__Response *resp;
    kvd_result rc = stats_rpc(c, seq, &resp);
    if (rc) return rc;
    if (!resp->stats->sequence) {
        kvd__v1__response__free_unpacked(resp, NULL);
        return kvd__set_err(c, KVD_ERR_PROTOCOL, "kvd: Stats of sequence %llu without its details",
                            (unsigned long long)seq);
    }
    const kvd_model_layout *m = kvd_hello_find_model(&c->hello->pub, resp->stats->sequence->model);
    if (!m) {
        rc = kvd__set_err(c, KVD_ERR_PROTOCOL,
                          "kvd: sequence %llu has model \"%s\", which Hello did not list",
                          (unsigned long long)seq, resp->stats->sequence->model);
        kvd__v1__response__free_unpacked(resp, NULL);
        return rc;
    }
    kvd__v1__response__free_unpacked(resp, NULL);
    if (!seq_remember(c, seq, m, 0)) return kvd__oom(c);
    *out = *seq_find(c, seq);
    return KVD_OK;
}

int kvd__layout_inherit(kvd_client *c, uint64_t from, uint64_t to) {
    seq_layout *s = seq_find(c, from);
    if (!s) return 1; /* unknown source: the fork's layout is learnt like any foreign sequence's */
    const kvd_model_layout m = {.layers = s->layers, .kv_heads = s->kv_heads,
                                .head_dim = s->head_dim, .dtype = s->dtype,
                                .page_tokens = s->page_tokens};
    return seq_remember(c, to, &m, 1); /* may move c->seqs: `s` is not used after this */
}

void kvd__layout_claim(kvd_client *c, uint64_t seq) {
    seq_layout *s = seq_find(c, seq);
    if (s) s->created = 1; /* an existing entry: nothing to allocate */
}

uint64_t *kvd__created_ids(kvd_client *c, size_t *n) {
    size_t k = 0;
    for (size_t i = 0; i < c->n_seqs; i++) k += c->seqs[i].created != 0;
    *n = k;
    if (k == 0) return NULL;
    uint64_t *ids = malloc(k * sizeof *ids); /* k <= n_seqs, whose array of larger items exists */
    if (!ids) return NULL;
    k = 0;
    for (size_t i = 0; i < c->n_seqs; i++)
        if (c->seqs[i].created) ids[k++] = c->seqs[i].id;
    return ids;
}

void kvd__layout_forget(kvd_client *c, uint64_t seq) {
    seq_forget(c, seq);
}
