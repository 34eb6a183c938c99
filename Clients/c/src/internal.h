/* libkvdclient private header: structures and helpers the sources share (not installed). */
#ifndef KVD_CLIENT_INTERNAL_H
#define KVD_CLIENT_INTERNAL_H

/*
 * libkvdclient: the kvd C client. One ZeroMQ DEALER socket per client, one request in flight,
 * protobuf-c messages, the arena mapped from /dev/shm with mmap(MAP_SHARED). See kvd_client.h.
 *
 * Every source file includes this header first (it must come before any system header).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#define KVD_CLIENT_BUILDING 1
#include "kvd_client.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "kvd/v1/envelope.pb-c.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "libkvdclient supports little-endian hosts only (kvd's wire and arena data are little-endian)"
#endif

/* ============================================================================================= */
/* Small helpers                                                                                  */

/* a * b * ... with overflow detection: returns 0 on overflow or any zero factor. */
static inline int kvd__mul_size(size_t *acc, uint64_t x) {
    if (x == 0) { *acc = 0; return 1; }
    if (*acc > SIZE_MAX / x) return 0;
    *acc *= (size_t)x;
    return 1;
}

/* Tokens that finish a partly filled first page, whole pages, tail; pages needed. */
static inline uint64_t kvd__pages_needed(uint32_t first_slot, uint64_t n, uint32_t P) {
    uint64_t lead = 0;
    if (first_slot) lead = n < (uint64_t)(P - first_slot) ? n : (uint64_t)(P - first_slot);
    uint64_t rest = n - lead;
    return (lead > 0) + rest / P + (rest % P != 0);
}

/* ============================================================================================= */
/* The mapped arena (shm.c); reference counted: results keep it alive                            */

typedef struct arena {
    atomic_int refs;
    uint8_t *base;
    size_t size;
    dev_t dev;
    ino_t ino;
    char *path;
    uint64_t page_bytes, pages_offset, staging_offset, staging_bytes, generation;
    uint32_t page_count;
} arena;

arena *kvd__arena_ref(arena *a);
void kvd__arena_unref(arena *a);
/* 0 (and *why set) when the mapped segment vanished or was replaced, i.e. the daemon restarted. */
int kvd__arena_current(kvd_client *c, const char **why);
kvd_result kvd__map_arena(kvd_client *c, const Kvd__V1__SharedMemoryInfo *shm, arena **out);

static inline int kvd__in_range(const arena *a, uint64_t off, uint64_t len) {
    return off <= a->size && len <= a->size - off;
}

/* ============================================================================================= */
/* Hello info (hello.c); reference counted: the client keeps one, callers may hold more          */

typedef struct hello_box {
    kvd_hello_info pub;
    atomic_int refs;
    Kvd__V1__Response *resp;
    kvd_model_layout *models;
    kvd_method_info *methods;
    kvd_param_info *params;
    kvd_policy_info *policies;
} hello_box;

void kvd__hello_unref(hello_box *b);
/* Hello; maps the arena when it is new unless may_map is 0 (the keep-alive thread: it must not
 * replace the mapping under the caller), which then fails with KVD_ERR_RESTARTED instead. */
kvd_result kvd__do_hello(kvd_client *c, int *replaced, int may_map);

/* ============================================================================================= */
/* The client                                                                                     */

typedef struct seq_layout {
    uint64_t id;
    uint32_t layers, kv_heads, head_dim, page_tokens;
    kvd_dtype dtype;
    int created;       /* created (or forked) by this client: taken back after a daemon restart */
} seq_layout;

struct kvd_client {
    char *endpoint;
    char *client_name;
    int timeout_ms;
    uint32_t proto;
    void *zctx;
    void *sock;
    uint64_t next_id;
    int closed;
    arena *arena;
    hello_box *hello;
    int attached;      /* Hello done and the arena is the one mapped */
    int lost;          /* the daemon restarted; report KVD_ERR_RESTARTED once re-attached */
    seq_layout *seqs;
    size_t n_seqs, cap_seqs;
    char *err;
    size_t err_cap;
    kvd_result last;
    int last_server_code;
    char *stat_model, *stat_tenant;
    atomic_flag busy;
    /* Credentials, kept for the client's lifetime: every socket it opens (also after a timeout)
     * uses the CURVE keys, every Hello (also after a restart) the tenant and token. */
    char *tenant, *token;              /* never NULL ("" when not given) */
    int curve;                         /* 1: the three keys below are set */
    char curve_server[41], curve_public[41], curve_secret[41];
    /* Leases (keepalive.c). Every use of the socket holds `io`: calls from kvd__enter to
     * kvd__leave, the keep-alive thread around its KeepAlive. */
    pthread_mutex_t io;
    int keepalive;                     /* 1: start the keep-alive thread when Hello has a lease */
    atomic_llong last_send_ms;         /* CLOCK_MONOTONIC ms of the last request sent */
    uint64_t *missing;                 /* kvd_keep_alive_result.missing storage */
    size_t missing_cap;
    /* The keep-alive thread: it sleeps on ka_cv (under ka_mu) until the client has been idle for
     * ka_interval_ms; ka_stop makes it (and a KeepAlive it is waiting for) finish. */
    pthread_mutex_t ka_mu;
    pthread_cond_t ka_cv;
    pthread_t ka_thread;
    int ka_started;
    int64_t ka_interval_ms;            /* lease / 3 from the last Hello; 0 = no leases */
    atomic_int ka_stop;
    /* Set (under io) while the keep-alive thread runs a KeepAlive: kvd__set_err then records in
     * ka_err/ka_last instead of the caller-visible last error, and kvd__rpc neither re-attaches
     * after a restart nor waits past ka_stop. */
    int ka_active;
    kvd_result ka_last;
    char ka_err[256];
    /* Daemon restarts that adopt the segment (rejoin.c). `instance` is the last non-zero
     * ResponseHeader.instance_id seen; a reply with another one sets `restarted` until a rejoin
     * (Hello, then KeepAlive-adopt of the created sequences) has finished. Under `io`. */
    uint64_t instance;
    int restarted;
    /* Open pipelines (pipeline.c), whose replies every other request collects first. Under `io`. */
    struct kvd_pipeline *pipes;
};

/* errors.c */
kvd_result kvd__set_err(kvd_client *c, kvd_result code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
kvd_result kvd__oom(kvd_client *c);
kvd_result kvd__enter(kvd_client *c, int allow_closed);
kvd_result kvd__leave(kvd_client *c, kvd_result rc);

/* curve.c: 1 if `key` is a canonical 40-character Z85 key. */
int kvd__z85_key_ok(const char *key);

/* bump.c: an allocator whose memory is released all at once (kvd__bump_release); its `pc` is
 * handed to protobuf-c, whose frees of it are no-ops. Embedded in the object it serves (the
 * allocator's data points at it, so it must not move after kvd__bump_init). */
typedef struct kvd_bump {
    ProtobufCAllocator pc;
    struct bump_chunk *chunks;
} kvd_bump;
void kvd__bump_init(kvd_bump *b);
void *kvd__bump_alloc(kvd_bump *b, size_t size); /* 16-byte aligned; NULL when out of memory */
void kvd__bump_release(kvd_bump *b);

/* transport.c */
kvd_result kvd__open_socket(kvd_client *c);
kvd_result kvd__stamp_request(kvd_client *c, Kvd__V1__Request *req);
struct zmq_msg_t; /* <zmq.h>; only the transport files need its definition */
int kvd__recv_last_frame(kvd_client *c, struct zmq_msg_t *part);
/* One round trip, nothing else: kvd__rpc without the rejoin. *not_bound (may be NULL) is set to 1
 * when the daemon refused the request because this connection is bound to no tenant. The reply is
 * unpacked with `alloc` (NULL: malloc), and must be freed with it. */
kvd_result kvd__rpc_once(kvd_client *c, Kvd__V1__Request *req, Kvd__V1__Response__BodyCase want,
                         Kvd__V1__Response **out, int *not_bound, ProtobufCAllocator *alloc);
kvd_result kvd__reattach_after_loss(kvd_client *c, const char *why);
kvd_result kvd__ensure_session(kvd_client *c);

/* rejoin.c. kvd__rpc: send `req` and wait for the matching reply (kvd__rpc_once); when a reply
 * shows the daemon restarted, rejoin it first, and send a request it refused as not bound once
 * more. On success *out is the unpacked response whose body is `want` (free with
 * kvd__v1__response__free_unpacked). */
kvd_result kvd__rpc(kvd_client *c, Kvd__V1__Request *req, Kvd__V1__Response__BodyCase want,
                    Kvd__V1__Response **out);
/* kvd__rpc unpacking the reply with `alloc` (see kvd__rpc_once). */
kvd_result kvd__rpc_with(kvd_client *c, Kvd__V1__Request *req, Kvd__V1__Response__BodyCase want,
                         Kvd__V1__Response **out, ProtobufCAllocator *alloc);
/* After a restart that kept the segment, say Hello again and take back the created sequences
 * (forgetting those the daemon no longer has). If that Hello shows a new segment, it is mapped
 * (may_map) and *replaced set (may be NULL): the sequences are gone, nothing is taken back;
 * without may_map it fails with KVD_ERR_RESTARTED and leaves that to the caller's next call. */
kvd_result kvd__rejoin(kvd_client *c, int may_map, int *replaced);
/* kvd__ensure_session's part: finish a rejoin an earlier reply asked for (c->restarted). */
kvd_result kvd__rejoin_pending(kvd_client *c);

/* sequence.c */
kvd_result kvd__layout_of(kvd_client *c, uint64_t seq, seq_layout *out);
/* A malloc'd copy of the ids of the sequences this client created (*n of them; NULL when none or
 * out of memory: *n tells which), and forgetting one the daemon no longer has. */
uint64_t *kvd__created_ids(kvd_client *c, size_t *n);
void kvd__layout_forget(kvd_client *c, uint64_t seq);
/* A fork has its source's layout: remember it when the source's is known (0 on out of memory). */
int kvd__layout_inherit(kvd_client *c, uint64_t from, uint64_t to);
/* A restored sequence is this client's again: when its layout is known, mark it created (taken
 * back after a restart); an unknown one is left to kvd__layout_of. */
void kvd__layout_claim(kvd_client *c, uint64_t seq);

/* append.c. Commit (keep: keep_reserved; abort_: drop what is still reserved) of reservation
 * `rid`; `ids`, `out` and `remaining` may be NULL. */
kvd_result kvd__commit_rpc(kvd_client *c, uint64_t seq, uint64_t rid, uint32_t n, int abort_,
                           int keep, const ProtobufCBinaryData *ids, kvd_append_result *out,
                           uint32_t *remaining);
/* A reservation from a Reserve reply of `n` tokens for layout L (frees `resp`). On a malformed
 * reply: KVD_ERR_PROTOCOL, and *rid names the reservation for the caller to abort. */
kvd_result kvd__reservation_from(kvd_client *c, uint64_t seq, const seq_layout *L, uint32_t n,
                                 Kvd__V1__Response *resp, kvd_reservation **out, uint64_t *rid);

/* pipeline.c: take every pipelined reply still due (kvd__rpc_once calls it before sending), then
 * report (once) a pipelined failure not yet reported. In the keep-alive thread failures wait. */
kvd_result kvd__pipelines_collect(kvd_client *c);
/* Map a daemon Error to a kvd_result (transport.c), setting the message. */
kvd_result kvd__server_error(kvd_client *c, const Kvd__V1__Error *e);

/* prefix.c: `n` token ids as the wire's bytes field (uint32 little-endian, 4 bytes each). The
 * bytes are the caller's array itself (no copy; see the byte-order check above), so `out` is
 * valid while `ids` is. KVD_ERR_ARGUMENT (message naming `what`) for NULL ids with n > 0 or a
 * byte count that overflows size_t. */
kvd_result kvd__token_ids(kvd_client *c, const char *what, const uint32_t *ids, size_t n,
                          ProtobufCBinaryData *out);

/* keepalive.c: set up at connect; after each Hello, follow its lease (starting the thread on the
 * first lease); stop and join the thread (kvd__keepalive_stop is safe to call repeatedly). */
int kvd__keepalive_init(kvd_client *c);
kvd_result kvd__keepalive_follow(kvd_client *c, uint64_t lease_ms);
void kvd__keepalive_request_stop(kvd_client *c);
void kvd__keepalive_stop(kvd_client *c);
void kvd__keepalive_destroy(kvd_client *c);
int64_t kvd__now_ms(void);

#endif
