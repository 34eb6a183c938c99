/* A fake kvd for tests that need no daemon: a ROUTER in a thread answering Hello (with a small
 * fake arena in /dev/shm), Stats (with fixed memory, prefix and remote figures, and fixed details
 * of a named sequence: fake_memory_stats / fake_prefix_stats / fake_remote_stats /
 * fake_sequence_stats), CreateSequence (adopting whole 4-token pages of the ids sent), Append,
 * Lookup, Fork, Restore (fake_restore_response; sequence 13 answers for 14), KeepAlive, Pin and
 * METADATA Query (one head of `query_tokens` tokens whose positions are `query_runs` as sent, or
 * 0, 1, ... as `positions` when the request did not ask for runs),
 * and recording what it got. fake_start / fake_stop; read the recorded fields under f->mu.
 * A restart that keeps the segment is faked by changing instance_id (and clearing `bound`) under
 * f->mu; fake_replace_arena makes a new segment as a restart without durability does. */
#ifndef KVD_TEST_FAKE_KVD_H
#define KVD_TEST_FAKE_KVD_H

#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <zmq.h>

#include "kvd/v1/envelope.pb-c.h"

#define FAKE_ARENA_BYTES 4096
#define FAKE_MAX_STAMPS 256

typedef struct fake_kvd {
    /* Set before fake_start. */
    uint64_t lease_ms;
    const char *events_endpoint;   /* NULL = none */
    const char *tenant;            /* NULL = "alpha" */
    int reply_delay_ms;            /* wait this long before each reply, watching for more input */
    int keepalive_error;           /* answer KeepAlive with this error code (0: normally) */
    int drop_keepalive;            /* never answer KeepAlive */
    int stats_error;               /* answer Stats with this error code (0: normally; under mu) */
    int stats_without_details;     /* answer Stats with neither memory figures nor sequence details */
    int bad_prefix_replies;        /* Lookup and adopting CreateSequence answer more tokens than
                                      were sent (inconsistent replies) */
    int with_model;                /* Hello lists model "m" (1 layer, 1 KV head, head_dim 4, f16) */
    int require_hello;             /* refuse anything but Hello while !bound, as kvd refuses a
                                      connection bound to no (token) tenant */
    uint64_t ka_missing;           /* KeepAlive reports this id missing when it was sent (0: the
                                      last id sent, reported as 2^63) */
    /* Query (under mu): the one head's token count and position_runs bytes, sent as they are. */
    uint32_t query_tokens;
    uint8_t query_runs[64];
    size_t query_runs_len;
    int query_asked_runs;          /* recorded: the last Query asked for position runs */
    /* Under mu (a test changes them while the fake runs). */
    uint64_t instance_id;          /* ResponseHeader / HelloResponse instance_id (0: none) */
    uint64_t generation;           /* Hello's arena generation (0: 1) */
    int durable;
    int bound;                     /* a Hello was answered since the last fake restart */
    /* Recorded (under mu). */
    pthread_mutex_t mu;
    int requests, keepalives, overlaps;
    int64_t keepalive_at_ms[FAKE_MAX_STAMPS];
    uint8_t last_raw[1024];        /* the last request's bytes (not Hello, not KeepAlive) */
    size_t last_raw_len;
    uint8_t keepalive_raw[1024];   /* the last KeepAlive's bytes */
    size_t keepalive_raw_len;
    int last_create_pinned;
    int hellos, refusals;          /* Hellos answered; requests refused as not bound */
    uint64_t refused_id, last_id;  /* request ids: the last refused; the last not Hello/KeepAlive */
    uint64_t adopt_ids[16];        /* the last KeepAlive that named sequences: its ids */
    size_t n_adopt;
    int adopt_keepalives;          /* KeepAlives that named sequences */
    /* Private. */
    char endpoint[128], shm_name[64];
    void *ctx, *sock;
    pthread_t thread;
    atomic_int stop;
} fake_kvd;

static int64_t fake_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The arena header the clients check: magic, layout 1, generation `gen`, one page. */
static int fake_make_arena(const char *name, uint64_t gen) {
    char path[96];
    snprintf(path, sizeof path, "/dev/shm/%s", name + 1);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) return 0;
    uint8_t h[FAKE_ARENA_BYTES] = {0};
    uint32_t layout = 1, header = 72, pages = 1;
    uint64_t size = FAKE_ARENA_BYTES, page = 1024, pages_off = 1024, stg_off = 2048,
             stg = 1024;
    memcpy(h, "KVDARENA", 8);
    memcpy(h + 8, &layout, 4);
    memcpy(h + 12, &header, 4);
    memcpy(h + 16, &gen, 8);
    memcpy(h + 24, &size, 8);
    memcpy(h + 32, &page, 8);
    memcpy(h + 40, &pages, 4);
    memcpy(h + 48, &pages_off, 8);
    memcpy(h + 56, &stg_off, 8);
    memcpy(h + 64, &stg, 8);
    int ok = write(fd, h, sizeof h) == (ssize_t)sizeof h;
    close(fd);
    return ok;
}

/* What the fake's Stats reports: values that fill every bit width (uint64 above 2^32, a negative
 * sint64), so a truncated or misplaced field shows. Sequence 5 is an orphan; others are not. */
static void fake_memory_stats(Kvd__V1__MemoryStats *m) {
    m->high = 0.875;
    m->low = 0.625;
    m->reservations_aborted = 3;
    m->reservations_aborted_pages = 4;
    m->orphans_released = 5;
    m->orphans_released_pages = 6;
    m->compactions = 7;
    m->compactions_pages = 8;
    m->evictions = 9;
    m->evictions_pages = 10;
    m->reclaim_passes = 11ull << 32;
    m->synchronous_reclaims = 12;
    m->last_reclaim_us = 13000000000ull;
    m->last_reclaim_reached_low = 1;
    m->orphans = 14;
    m->pinned_sequences = 15;
    m->pinned_pages = 4000000000u;
    m->events_published = 17ull << 40;
}

/* Prefix figures that fill every bit width, as fake_memory_stats. */
static void fake_prefix_stats(Kvd__V1__PrefixStats *p) {
    p->enabled = 1;
    p->hits = 31ull << 33;
    p->misses = 32;
    p->cached_blocks = 33ull << 34;
    p->cached_pages = 4000000034u;
    p->unused_pages = 35;
    p->shared_pages = 4000000036u;
    p->pages_saved = 37ull << 35;
    p->bytes_saved = 38ull << 40;
    p->evictions = 39;
    p->evicted_pages = 40ull << 36;
}

/* Remote-tier figures that fill every bit width, as fake_memory_stats. */
static void fake_remote_stats(Kvd__V1__RemoteStats *r) {
    r->enabled = 1;
    r->offloaded = 51ull << 33;
    r->offloaded_bytes = 52ull << 40;
    r->offload_failures = 53;
    r->offload_dropped = 54ull << 34;
    r->restored = 55;
    r->restore_failures = 56ull << 35;
    r->restore_corrupted = 57;
    r->last_restore_us = 58ull << 36;
    r->mean_restore_us = 59;
    r->queued = 4000000060u;
    r->queued_bytes = 61ull << 37;
    r->blocks_published = 62ull << 38;
    r->blocks_publish_failures = 63;
    r->blocks_imported = 64ull << 39;
    r->blocks_rejected = 65;
}

/* Restore's answer for `id`: the same id (sequence 13: 14, a daemon answering for another),
 * values that fill every bit width. */
static void fake_restore_response(uint64_t id, Kvd__V1__RestoreResponse *r) {
    r->sequence_id = id == 13 ? 14 : id;
    r->length = 300;
    r->generation = 1ull << 33;
    r->from_remote = 1;
    r->restore_us = 41ull << 32;
    r->bytes = 42ull << 36;
}

static void fake_sequence_stats(uint64_t id, Kvd__V1__SequenceStats *s) {
    s->sequence_id = id;
    s->model = "m";
    s->tenant = "alpha";
    s->length = 21;
    s->generation = 22;
    s->pages = 23;
    s->tokens_held = 24ull << 33;
    s->idle_ms = 25ull << 34;
    s->lease_remaining_ms = id == 5 ? -1500 : 29000;
    s->orphan = id == 5;
    s->pinned = id != 5;
    s->bytes = 23 * 1024;
    s->manager_compactions = 4000000001u;
}

static void fake_send(fake_kvd *f, zmq_msg_t *id, const Kvd__V1__Response *resp) {
    uint8_t buf[2048];
    size_t n = kvd__v1__response__pack(resp, buf);
    zmq_msg_send(id, f->sock, ZMQ_SNDMORE);
    zmq_send(f->sock, buf, n, 0);
}

static void fake_answer(fake_kvd *f, zmq_msg_t *id, const Kvd__V1__Request *req) {
    Kvd__V1__ResponseHeader hdr = KVD__V1__RESPONSE_HEADER__INIT;
    hdr.protocol_version = 1;
    hdr.server_version = "0.0.0-fake";
    hdr.request_id = req->request_id;
    Kvd__V1__Response resp = KVD__V1__RESPONSE__INIT;
    resp.header = &hdr;
    Kvd__V1__Error err = KVD__V1__ERROR__INIT;
    Kvd__V1__HelloResponse hello = KVD__V1__HELLO_RESPONSE__INIT;
    Kvd__V1__SharedMemoryInfo shm = KVD__V1__SHARED_MEMORY_INFO__INIT;
    Kvd__V1__Limits limits = KVD__V1__LIMITS__INIT;
    Kvd__V1__StatsResponse stats = KVD__V1__STATS_RESPONSE__INIT;
    Kvd__V1__MemoryStats memory = KVD__V1__MEMORY_STATS__INIT;
    Kvd__V1__SequenceStats sequence = KVD__V1__SEQUENCE_STATS__INIT;
    Kvd__V1__CreateSequenceResponse created = KVD__V1__CREATE_SEQUENCE_RESPONSE__INIT;
    Kvd__V1__KeepAliveResponse ka = KVD__V1__KEEP_ALIVE_RESPONSE__INIT;
    Kvd__V1__PinResponse pin = KVD__V1__PIN_RESPONSE__INIT;
    Kvd__V1__PrefixStats prefix = KVD__V1__PREFIX_STATS__INIT;
    Kvd__V1__AppendResponse appended = KVD__V1__APPEND_RESPONSE__INIT;
    Kvd__V1__LookupResponse lookup = KVD__V1__LOOKUP_RESPONSE__INIT;
    Kvd__V1__ForkResponse forked = KVD__V1__FORK_RESPONSE__INIT;
    Kvd__V1__RestoreResponse restored = KVD__V1__RESTORE_RESPONSE__INIT;
    Kvd__V1__RemoteStats remote = KVD__V1__REMOTE_STATS__INIT;
    Kvd__V1__QueryResponse queried = KVD__V1__QUERY_RESPONSE__INIT;
    Kvd__V1__HeadView head = KVD__V1__HEAD_VIEW__INIT;
    Kvd__V1__HeadView *heads[1] = {&head};
    uint8_t runs[64];
    int32_t positions[16];
    Kvd__V1__ModelLayout model = KVD__V1__MODEL_LAYOUT__INIT;
    Kvd__V1__ModelLayout *models[1] = {&model};
    uint64_t whole; /* tokens of whole 4-token pages among the ids sent */
    uint64_t missing[1] = {(uint64_t)1 << 63};
    pthread_mutex_lock(&f->mu);
    hdr.instance_id = f->instance_id;
    uint64_t generation = f->generation ? f->generation : 1;
    int durable = f->durable;
    int refuse = f->require_hello && !f->bound && req->body_case != KVD__V1__REQUEST__BODY_HELLO;
    if (req->body_case == KVD__V1__REQUEST__BODY_HELLO) {
        f->bound = 1;
        f->hellos++;
    }
    if (refuse) {
        f->refusals++;
        f->refused_id = req->request_id;
    }
    pthread_mutex_unlock(&f->mu);
    if (refuse) {
        err.code = KVD__V1__ERROR_CODE__ERROR_CODE_PERMISSION_DENIED;
        err.message = "kvd: this connection is not bound to a tenant; send Hello with the "
                      "tenant's token first";
        resp.body_case = KVD__V1__RESPONSE__BODY_ERROR;
        resp.error = &err;
        fake_send(f, id, &resp);
        return;
    }
    switch (req->body_case) {
    case KVD__V1__REQUEST__BODY_HELLO:
        shm.name = f->shm_name;
        shm.size_bytes = FAKE_ARENA_BYTES;
        shm.page_bytes = 1024;
        shm.page_count = 1;
        shm.pages_offset = 1024;
        shm.staging_offset = 2048;
        shm.staging_bytes = 1024;
        shm.layout_version = 1;
        shm.arena_generation = generation;
        hello.instance_id = hdr.instance_id;
        hello.durable = durable;
        if (f->with_model) {
            model.name = "m";
            model.layers = 1;
            model.kv_heads = 1;
            model.q_heads = 1;
            model.head_dim = 4;
            model.dtype = KVD__V1__DTYPE__DTYPE_F16;
            model.page_tokens = 4;
            hello.n_models = 1;
            hello.models = models;
        }
        limits.lease_ms = f->lease_ms;
        limits.orphan_grace_ms = 2 * f->lease_ms;
        limits.quota_pinned_pages = 7;
        hello.protocol_version = 1;
        hello.server_version = "0.0.0-fake";
        hello.shm = &shm;
        hello.limits = &limits;
        hello.tenant = (char *)(f->tenant ? f->tenant : "alpha");
        hello.events_endpoint = (char *)(f->events_endpoint ? f->events_endpoint : "");
        resp.body_case = KVD__V1__RESPONSE__BODY_HELLO;
        resp.hello = &hello;
        break;
    case KVD__V1__REQUEST__BODY_KEEP_ALIVE:
        if (f->drop_keepalive) return;
        if (f->keepalive_error) {
            err.code = (Kvd__V1__ErrorCode)f->keepalive_error;
            err.message = "kvd: fake keep-alive failure";
            resp.body_case = KVD__V1__RESPONSE__BODY_ERROR;
            resp.error = &err;
            break;
        }
        ka.lease_ms = f->lease_ms;
        ka.adopted = (uint32_t)(req->keep_alive->n_sequence_ids ? req->keep_alive->n_sequence_ids - 1 : 0);
        ka.n_missing = req->keep_alive->n_sequence_ids ? 1 : 0; /* "the last one is unknown" */
        ka.missing = missing;
        if (f->ka_missing) { /* that id, if it was sent */
            ka.n_missing = 0;
            for (size_t i = 0; i < req->keep_alive->n_sequence_ids; i++)
                if (req->keep_alive->sequence_ids[i] == f->ka_missing) ka.n_missing = 1;
            missing[0] = f->ka_missing;
            ka.adopted = (uint32_t)(req->keep_alive->n_sequence_ids - ka.n_missing);
        }
        resp.body_case = KVD__V1__RESPONSE__BODY_KEEP_ALIVE;
        resp.keep_alive = &ka;
        break;
    case KVD__V1__REQUEST__BODY_PIN:
        pin.pinned = req->pin->pinned;
        pin.pinned_pages = req->pin->pinned ? 3 : 0;
        resp.body_case = KVD__V1__RESPONSE__BODY_PIN;
        resp.pin = &pin;
        break;
    case KVD__V1__REQUEST__BODY_CREATE_SEQUENCE:
        created.sequence_id = req->create_sequence->sequence_id ? req->create_sequence->sequence_id : 77;
        whole = req->create_sequence->adopt_token_ids.len / 16 * 4;
        created.adopted_tokens = whole + (f->bad_prefix_replies ? 4 : 0);
        resp.body_case = KVD__V1__RESPONSE__BODY_CREATE_SEQUENCE;
        resp.create_sequence = &created;
        break;
    case KVD__V1__REQUEST__BODY_APPEND:
        appended.length = req->append->keys && req->append->keys->n_shape == 4
                              ? req->append->keys->shape[2] : 0;
        appended.generation = 1;
        resp.body_case = KVD__V1__RESPONSE__BODY_APPEND;
        resp.append = &appended;
        break;
    case KVD__V1__REQUEST__BODY_LOOKUP:
        whole = req->lookup->token_ids.len / 16 * 4;
        lookup.tokens = whole + (f->bad_prefix_replies ? 4 : 0);
        lookup.pages_per_head = (uint32_t)(lookup.tokens / 4);
        lookup.page_tokens = 4;
        resp.body_case = KVD__V1__RESPONSE__BODY_LOOKUP;
        resp.lookup = &lookup;
        break;
    case KVD__V1__REQUEST__BODY_FORK:
        forked.sequence_id = req->fork->new_sequence_id ? req->fork->new_sequence_id : 78;
        forked.length = req->fork->length;
        forked.generation = 1;
        resp.body_case = KVD__V1__RESPONSE__BODY_FORK;
        resp.fork = &forked;
        break;
    case KVD__V1__REQUEST__BODY_QUERY:
        pthread_mutex_lock(&f->mu);
        f->query_asked_runs = req->query->position_runs;
        head.num_tokens = f->query_tokens;
        memcpy(runs, f->query_runs, f->query_runs_len);
        head.position_runs.len = f->query_runs_len;
        pthread_mutex_unlock(&f->mu);
        if (!req->query->position_runs) { /* an old daemon, or a client that did not ask */
            head.position_runs.len = 0;
            if (head.num_tokens > 16) head.num_tokens = 16;
            for (uint32_t i = 0; i < head.num_tokens; i++) positions[i] = (int32_t)i;
            head.positions.data = (uint8_t *)positions;
            head.positions.len = 4 * head.num_tokens;
        }
        head.position_runs.data = runs;
        queried.sequence_id = req->query->sequence_id;
        queried.generation = 1;
        queried.dtype = KVD__V1__DTYPE__DTYPE_F16;
        queried.head_dim = 4;
        queried.page_tokens = 4;
        queried.n_heads = 1;
        queried.heads = heads;
        resp.body_case = KVD__V1__RESPONSE__BODY_QUERY;
        resp.query = &queried;
        break;
    case KVD__V1__REQUEST__BODY_RESTORE:
        fake_restore_response(req->restore->sequence_id, &restored);
        resp.body_case = KVD__V1__RESPONSE__BODY_RESTORE;
        resp.restore = &restored;
        break;
    default: /* Stats and anything else */
        pthread_mutex_lock(&f->mu);
        err.code = (Kvd__V1__ErrorCode)f->stats_error; /* a test may change it meanwhile */
        pthread_mutex_unlock(&f->mu);
        if (err.code) {
            err.message = "kvd: sequence 5 was released 2 s after its lease expired";
            resp.body_case = KVD__V1__RESPONSE__BODY_ERROR;
            resp.error = &err;
        } else {
            stats.total_pages = 1;
            if (req->body_case == KVD__V1__REQUEST__BODY_STATS && !f->stats_without_details) {
                fake_memory_stats(&memory);
                stats.memory = &memory;
                fake_prefix_stats(&prefix);
                stats.prefix = &prefix;
                fake_remote_stats(&remote);
                stats.remote = &remote;
                if (req->stats->sequence_id) {
                    fake_sequence_stats(req->stats->sequence_id, &sequence);
                    stats.sequence = &sequence;
                }
            }
            resp.body_case = KVD__V1__RESPONSE__BODY_STATS;
            resp.stats = &stats;
        }
        break;
    }
    fake_send(f, id, &resp);
}

static void fake_record(fake_kvd *f, const Kvd__V1__Request *req, const void *raw, size_t n) {
    pthread_mutex_lock(&f->mu);
    f->requests++;
    if (req->body_case != KVD__V1__REQUEST__BODY_HELLO &&
        req->body_case != KVD__V1__REQUEST__BODY_KEEP_ALIVE)
        f->last_id = req->request_id;
    if (req->body_case == KVD__V1__REQUEST__BODY_KEEP_ALIVE && req->keep_alive->n_sequence_ids) {
        size_t k = req->keep_alive->n_sequence_ids;
        f->n_adopt = k < 16 ? k : 16;
        memcpy(f->adopt_ids, req->keep_alive->sequence_ids, f->n_adopt * sizeof *f->adopt_ids);
        f->adopt_keepalives++;
    }
    if (req->body_case == KVD__V1__REQUEST__BODY_KEEP_ALIVE) {
        if (f->keepalives < FAKE_MAX_STAMPS) f->keepalive_at_ms[f->keepalives] = fake_now_ms();
        f->keepalives++;
        if (n <= sizeof f->keepalive_raw) {
            memcpy(f->keepalive_raw, raw, n);
            f->keepalive_raw_len = n;
        }
    } else if (req->body_case != KVD__V1__REQUEST__BODY_HELLO && n <= sizeof f->last_raw) {
        memcpy(f->last_raw, raw, n);
        f->last_raw_len = n;
    }
    if (req->body_case == KVD__V1__REQUEST__BODY_CREATE_SEQUENCE)
        f->last_create_pinned = req->create_sequence->pinned;
    pthread_mutex_unlock(&f->mu);
}

static void *fake_main(void *arg) {
    fake_kvd *f = arg;
    while (!atomic_load(&f->stop)) {
        zmq_pollitem_t it = {f->sock, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 20) <= 0) continue;
        zmq_msg_t id, body;
        zmq_msg_init(&id);
        zmq_msg_init(&body);
        if (zmq_msg_recv(&id, f->sock, 0) < 0 || zmq_msg_recv(&body, f->sock, 0) < 0) {
            zmq_msg_close(&id);
            zmq_msg_close(&body);
            continue;
        }
        Kvd__V1__Request *req =
            kvd__v1__request__unpack(NULL, zmq_msg_size(&body), zmq_msg_data(&body));
        if (req) fake_record(f, req, zmq_msg_data(&body), zmq_msg_size(&body));
        zmq_msg_close(&body);
        if (req && f->reply_delay_ms > 0) {
            /* A client with one request in flight sends nothing more before our reply. */
            zmq_pollitem_t more = {f->sock, 0, ZMQ_POLLIN, 0};
            if (zmq_poll(&more, 1, f->reply_delay_ms) > 0) {
                pthread_mutex_lock(&f->mu);
                f->overlaps++;
                pthread_mutex_unlock(&f->mu);
            }
        }
        if (req) fake_answer(f, &id, req);
        zmq_msg_close(&id);
        if (req) kvd__v1__request__free_unpacked(req, NULL);
    }
    return NULL;
}

/* Zero-initialise *f, set the configuration fields, then fake_start(f, "tag"). */
static int fake_start(fake_kvd *f, const char *tag) {
    pthread_mutex_init(&f->mu, NULL);
    atomic_init(&f->stop, 0);
    snprintf(f->endpoint, sizeof f->endpoint, "ipc:///tmp/kvd-c-unit-%d-%s.sock", (int)getpid(), tag);
    snprintf(f->shm_name, sizeof f->shm_name, "/kvd-c-unit-%d-%s", (int)getpid(), tag);
    if (!fake_make_arena(f->shm_name, 1)) return 0;
    f->ctx = zmq_ctx_new();
    f->sock = zmq_socket(f->ctx, ZMQ_ROUTER);
    int zero = 0;
    zmq_setsockopt(f->sock, ZMQ_LINGER, &zero, sizeof zero);
    if (zmq_bind(f->sock, f->endpoint) != 0) return 0;
    return pthread_create(&f->thread, NULL, fake_main, f) == 0;
}

/* A restart without durability: a new segment object (new inode) of generation `gen`, which Hello
 * reports from now on, and a new instance. */
static int fake_replace_arena(fake_kvd *f, uint64_t gen) {
    shm_unlink(f->shm_name);
    int ok = fake_make_arena(f->shm_name, gen);
    pthread_mutex_lock(&f->mu);
    f->generation = gen;
    f->instance_id++;
    f->bound = 0;
    pthread_mutex_unlock(&f->mu);
    return ok;
}

/* A restart that adopts the segment: only the instance changes, and nobody is bound. */
static void fake_restart(fake_kvd *f, uint64_t instance) {
    pthread_mutex_lock(&f->mu);
    f->instance_id = instance;
    f->bound = 0;
    pthread_mutex_unlock(&f->mu);
}

static void fake_stop(fake_kvd *f) {
    atomic_store(&f->stop, 1);
    pthread_join(f->thread, NULL);
    zmq_close(f->sock);
    zmq_ctx_term(f->ctx);
    unlink(f->endpoint + 6);
    shm_unlink(f->shm_name);
    pthread_mutex_destroy(&f->mu);
}

static int fake_count(fake_kvd *f, const int *field) {
    pthread_mutex_lock(&f->mu);
    int n = *field;
    pthread_mutex_unlock(&f->mu);
    return n;
}

#endif
