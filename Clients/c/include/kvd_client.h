/*
 * kvd_client.h — C client for kvd, the KV-cache daemon (protocol version 1).
 *
 * Link with `pkg-config --cflags --libs kvdclient` (libkvdclient.so or, with --static,
 * libkvdclient.a plus libzmq and libprotobuf-c). The header needs only the C standard library;
 * it can be included from C11 and C++ (every declaration is extern "C").
 *
 * ---------------------------------------------------------------------------------------------
 * Results and errors
 *   Every call returns a kvd_result. KVD_OK is 0. Codes 1..10 are the daemon's kvd.v1.ErrorCode
 *   values (the request changed nothing on the daemon); codes >= 100 are found by the client.
 *   After any failed call on a client, kvd_client_last_error(client) is a message saying what went
 *   wrong ("kvd: ..."); it is owned by the client and valid until the next call on that client.
 *   The library never exits, never prints, never raises signals (SIGPIPE is not used by libzmq).
 *
 * Ownership
 *   Every object the library returns through a `**out` parameter is owned by the caller and has a
 *   free function named after it (kvd_client_free, kvd_hello_info_free, kvd_reservation_free,
 *   kvd_query_result_free, kvd_compact_result_free, kvd_events_free). Free functions accept NULL. Pointers inside
 *   a returned object (strings, arrays) belong to that object and live until it is freed. Input
 *   pointers are only read during the call; the library keeps no reference to them.
 *
 * Shared memory
 *   kvd keeps K/V in a POSIX shared-memory arena that the client maps read-write (MAP_SHARED) at
 *   Hello. Query results (PAGES and GATHER modes) and reservations point straight into it. Every
 *   such object holds a reference on the mapping, so its pointers stay dereferenceable until the
 *   object is freed, even after kvd_client_close or a daemon restart. The *contents* are only
 *   meaningful while the sequence's generation is the one the object was returned with (any
 *   compaction, release or restart changes or frees the tokens).
 *
 * Daemon restarts
 *   Before and after every request the client checks that /dev/shm/<name> is still the segment it
 *   mapped. If it was replaced or removed (the daemon restarted or stopped), the call returns
 *   KVD_ERR_RESTARTED ("the daemon restarted; its sequences are gone") after re-attaching: it says
 *   Hello to the new daemon and maps the new arena, so the *next* call works normally. Sequences of
 *   the old daemon are lost and must be recreated; the client never silently sends a request that
 *   names an old sequence to a new daemon. If the new daemon is not up yet the call returns
 *   KVD_ERR_TIMEOUT and the next call tries again.
 *   A durable daemon (kvd_hello_info.durable) killed and restarted keeps its segment, sequences
 *   and K/V; only its process is new (every reply carries its instance_id). The client then
 *   rejoins by itself, before the call returns (or in the keep-alive thread when idle): Hello again,
 *   and KeepAlive adopting the sequences it created. A request the new daemon refused because the
 *   connection was bound to no tenant yet is sent once more. A request in flight when the daemon
 *   died (KVD_ERR_TIMEOUT) may or may not have taken effect, and open reservations are gone: re-read
 *   the sequence before retrying, reserve again. See README.md.
 *
 * Timeouts
 *   Every request waits at most kvd_client_options.timeout_ms for its reply (default 5000 ms);
 *   then it returns KVD_ERR_TIMEOUT and replaces its socket, so a late reply is never mistaken for
 *   the answer to a later request. A daemon that is not running gives KVD_ERR_TIMEOUT, never a hang.
 *
 * Tenants and CURVE
 *   kvd_client_options.tenant / .token are sent in every Hello. For a tcp endpoint the daemon
 *   secures with CURVE, set .curve_server_key / .curve_public_key / .curve_secret_key (Z85, e.g.
 *   read with kvd_curve_load_key from `kvd keygen` files); they are applied to every socket the
 *   client opens. A daemon that refuses the keys never answers: KVD_ERR_TIMEOUT.
 *
 * Leases and keep-alive
 *   A daemon with leases (kvd_hello_info.lease_ms > 0) releases what a connection owns once the
 *   connection has sent nothing for the lease plus orphan_grace_ms (then its sequences answer
 *   KVD_ERR_EVICTED). Any request renews the lease. Unless kvd_client_options.disable_keepalive is
 *   set, the client starts a thread at Hello that sends a KeepAlive whenever the client has sent
 *   nothing for a third of the lease; kvd_client_close and kvd_client_free stop and join it. After
 *   a timeout the client uses a new socket, which the daemon sees as a new connection owning
 *   nothing (and bound to no tenant): kvd_client_hello, then kvd_client_keep_alive(adopt) takes
 *   the sequences back.
 *
 * Thread safety
 *   A kvd_client is NOT thread-safe (ZeroMQ sockets are not): use one client per thread, or
 *   serialise calls on a client yourself. Using one client from two threads at once is detected
 *   and the second call fails with KVD_ERR_BUSY (without touching the last error message). The
 *   client's own keep-alive thread is serialised with calls by a mutex (a call may wait for a
 *   KeepAlive in flight) and never changes the last error or result. A kvd_events subscriber is
 *   used by one thread at a time.
 *   Different clients are fully independent. Returned objects (hello info, query results,
 *   reservations, compact results) are immutable: they may be read from any number of threads and
 *   freed from any thread, also after their client was freed. kvd_result_name and the float
 *   conversion helpers are thread-safe.
 *
 * Byte order: K, V, positions and log-weights are little-endian; the library supports
 * little-endian hosts only (it refuses to compile elsewhere).
 */
#ifndef KVD_CLIENT_H
#define KVD_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) && defined(KVD_CLIENT_BUILDING)
#define KVD_API __attribute__((visibility("default")))
#else
#define KVD_API
#endif

#define KVD_CLIENT_VERSION "0.1.0"
/** The kvd wire protocol version this library speaks. */
#define KVD_PROTOCOL_VERSION 1u

/* ------------------------------------------------------------------------------------------- */
/* Result codes                                                                                 */

typedef enum kvd_result {
    KVD_OK = 0,
    /* The daemon's codes (kvd.v1.ErrorCode); the request changed nothing. */
    KVD_ERR_INVALID_ARGUMENT = 1,   /* the daemon refused a value; the message names it */
    KVD_ERR_NOT_FOUND = 2,          /* unknown model, sequence, method, policy or reservation */
    KVD_ERR_ALREADY_EXISTS = 3,     /* sequence id in use */
    KVD_ERR_RESOURCE_EXHAUSTED = 4, /* arena / staging area / max_sequences full */
    KVD_ERR_FAILED_PRECONDITION = 5,/* e.g. a reservation is open; missing observation queries */
    KVD_ERR_PERMISSION_DENIED = 6,
    KVD_ERR_UNIMPLEMENTED = 7,      /* e.g. no common protocol version at Hello */
    KVD_ERR_INTERNAL = 8,           /* a bug in kvd */
    KVD_ERR_UNAVAILABLE = 9,        /* the daemon is shutting down */
    KVD_ERR_EVICTED = 10,           /* kvd's memory manager took the sequence back (evicted under
                                       memory pressure, or released after its lease expired); its
                                       K/V is gone: create it again and re-run prefill */
    KVD_ERR_SERVER_OTHER = 99,      /* an error code newer than this library (see the message) */
    /* Found by the client. */
    KVD_ERR_TIMEOUT = 100,          /* no reply within the timeout: daemon not running or stuck */
    KVD_ERR_CLOSED = 101,           /* the client was closed with kvd_client_close */
    KVD_ERR_ARGUMENT = 102,         /* a NULL pointer, zero size, shape/dtype mismatch, ... */
    KVD_ERR_BUFFER_TOO_SMALL = 103, /* a caller buffer is too small; the needed size is returned */
    KVD_ERR_PROTOCOL = 104,         /* protocol version mismatch, undecodable or unexpected reply */
    KVD_ERR_SYSTEM = 105,           /* an OS or ZeroMQ call failed, or out of memory */
    KVD_ERR_RESTARTED = 106,        /* the daemon restarted; its sequences are gone (re-attached) */
    KVD_ERR_BUSY = 107              /* the client is in use by another thread right now */
} kvd_result;

/** Constant name of a code, e.g. "KVD_ERR_TIMEOUT" ("KVD_ERR_?" for unknown values). Static. */
KVD_API const char *kvd_result_name(kvd_result code);

/* ------------------------------------------------------------------------------------------- */
/* Types                                                                                        */

/** Element type of K and V (values are kvd.v1.DType). */
typedef enum kvd_dtype {
    KVD_DTYPE_UNSPECIFIED = 0,
    KVD_DTYPE_F16 = 1,   /* IEEE binary16 */
    KVD_DTYPE_BF16 = 2,  /* bfloat16 */
    KVD_DTYPE_F32 = 3    /* IEEE binary32 */
} kvd_dtype;

/** Bytes per element of a dtype; 0 for unknown values. */
KVD_API size_t kvd_dtype_size(kvd_dtype dtype);

/** Conversion helpers (round to nearest even; NaN stays NaN). */
KVD_API uint16_t kvd_f32_to_f16(float x);
KVD_API float kvd_f16_to_f32(uint16_t h);
KVD_API uint16_t kvd_f32_to_bf16(float x);
KVD_API float kvd_bf16_to_f32(uint16_t h);

typedef struct kvd_client kvd_client;

/** Options of kvd_client_connect. Zero-initialise, set struct_size = sizeof(kvd_client_options).
 *  Strings are copied by kvd_client_connect. */
typedef struct kvd_client_options {
    size_t struct_size;          /* sizeof(kvd_client_options); lets the struct grow compatibly */
    int timeout_ms;              /* reply timeout per request; <= 0 means 5000 */
    const char *client_name;     /* sent in Hello for the daemon's logs; NULL means "kvd-c" */
    uint32_t protocol_version;   /* version to offer; 0 means KVD_PROTOCOL_VERSION (for tests) */
    /* ---- Credentials. Added after the fields above: a program built against the shorter struct
     * passes its smaller struct_size and gets none (the library reads only struct_size bytes). */
    const char *tenant;          /* sent in every Hello: the tenant to bind this connection to;
                                    NULL or "" = the daemon's open tenant, or the CURVE key's */
    const char *token;           /* the tenant's token (its password), sent in Hello; NULL = none */
    /* CURVE, for a tcp endpoint the daemon secures with it: the daemon's public key and this
     * client's key pair, as Z85 text (40 characters; kvd_curve_load_key reads `kvd keygen`
     * files). All three or none (KVD_ERR_ARGUMENT otherwise, also for a malformed key). A daemon
     * that refuses the connection (no tenant lists the key, wrong server key) never answers:
     * requests end in KVD_ERR_TIMEOUT. */
    const char *curve_server_key;
    const char *curve_public_key;
    const char *curve_secret_key;
    /* ---- Leases. Added after the credentials (a smaller struct_size gets the default, on). */
    int disable_keepalive;       /* 0 (default): when Hello reports a lease, a thread sends a
                                    KeepAlive whenever the client has sent nothing for a third of
                                    it. 1: no thread; any call renews, or kvd_client_keep_alive. */
} kvd_client_options;

/** One model layout from Hello. */
typedef struct kvd_model_layout {
    const char *name;
    uint32_t layers, kv_heads, q_heads, head_dim;
    kvd_dtype dtype;
    uint32_t page_tokens;
    const char *default_method;
} kvd_model_layout;

/** One parameter of a compaction method. All strings as sent by the daemon. */
typedef struct kvd_param_info {
    const char *name, *type, *default_value, *min_value, *max_value, *description;
} kvd_param_info;

typedef struct kvd_method_info {
    const char *name, *description, *origin;
    int needs_queries;                 /* 1 if Compact needs observation queries */
    size_t num_params;
    const kvd_param_info *params;
} kvd_method_info;

typedef struct kvd_policy_info {
    const char *name, *method;
    size_t num_params;
    const char *const *params;         /* "name=value" */
} kvd_policy_info;

/** What Hello returned. Read-only; free with kvd_hello_info_free. */
typedef struct kvd_hello_info {
    uint32_t protocol_version;         /* chosen by the daemon */
    const char *server_version;
    /* shared memory */
    const char *shm_name;              /* e.g. "/kvd-default" */
    uint64_t shm_size_bytes, page_bytes, pages_offset, staging_offset, staging_bytes;
    uint32_t page_count, layout_version;
    uint64_t arena_generation;
    /* limits */
    uint64_t max_message_bytes;
    uint32_t max_tokens_per_append, max_sequences;
    size_t num_models;
    const kvd_model_layout *models;
    size_t num_methods;
    const kvd_method_info *methods;
    size_t num_policies;
    const kvd_policy_info *policies;
    void *internal_;                   /* private */
    /* Added later (after internal_, so existing fields keep their offsets): */
    const char *tenant;                /* the tenant this connection is bound to ("" if unnamed) */
    uint64_t lease_ms;                 /* lease of what a connection owns; 0 = leases are off */
    uint64_t orphan_grace_ms;          /* how long an orphan (lease expired) is kept */
    uint32_t quota_pinned_pages;       /* this tenant's pinned-page quota (0 = only quota_pages) */
    const char *events_endpoint;       /* PUB endpoint of memory-manager events; "" = none */
    /* Added with daemon restarts (after events_endpoint; older programs never read them): */
    uint64_t instance_id;              /* random per daemon process; another value in a later
                                          Hello means the daemon restarted (0: a daemon older
                                          than instance ids) */
    int durable;                       /* 1: the tenant's segment is journaled, so a killed and
                                          restarted daemon keeps its sequences (docs/DURABILITY.md) */
} kvd_hello_info;

/** The model called `name` in `info`, or NULL. The pointer lives as long as `info`. */
KVD_API const kvd_model_layout *kvd_hello_find_model(const kvd_hello_info *info, const char *name);

/** The sliding attention window of `layer` of model `name` in tokens (Hello's
 *  ModelLayout.layer_windows): 0 for a full-attention layer, and also for an unknown model or a
 *  layer out of range. kvd keeps only positions >= length - window (whole pages) in a sliding layer
 *  (docs/MEMORY.md, "Sliding windows"). A function rather than a kvd_model_layout member, so the
 *  layout array's element size stays what programs built against older headers expect. */
KVD_API uint32_t kvd_hello_layer_window(const kvd_hello_info *info, const char *name, uint32_t layer);

/** Result of an Append or Commit. */
typedef struct kvd_append_result {
    uint64_t length;          /* logical length after the call */
    uint64_t first_position;  /* original position of the first added token */
    uint64_t generation;      /* sequence generation after the call */
} kvd_append_result;

/** A Reserve's slots; free with kvd_reservation_free (this does not abort it; Commit does). */
typedef struct kvd_reservation_head {
    uint32_t layer, head;
    uint32_t first_slot;      /* slot of the first reserved token in pages[0] */
    uint32_t num_pages;
    const uint32_t *page_ids; /* in token order */
} kvd_reservation_head;

typedef struct kvd_reservation {
    uint64_t sequence_id, reservation_id;
    uint32_t num_tokens;      /* reserved tokens */
    uint32_t page_tokens;     /* P */
    uint32_t layers, kv_heads, head_dim;
    kvd_dtype dtype;
    size_t num_heads;         /* layers * kv_heads, layer-major */
    const kvd_reservation_head *heads;
    void *internal_;          /* private */
} kvd_reservation;

/** Query modes (kvd.v1.QueryMode). */
typedef enum kvd_query_mode {
    KVD_QUERY_PAGES = 1,      /* page views into shared memory, no K/V copy */
    KVD_QUERY_INLINE = 2,     /* K/V bytes in the reply (owned by the result) */
    KVD_QUERY_GATHER = 3,     /* daemon copies K/V contiguously into the staging buffer */
    KVD_QUERY_METADATA = 4    /* counts, positions, log-weights only */
} kvd_query_mode;

/** What one (layer, KV head) holds. */
typedef struct kvd_head_view {
    uint32_t layer, head;
    uint32_t num_tokens;
    const int32_t *positions;        /* num_tokens original positions, ascending */
    const float *log_weights;        /* num_tokens; add to the attention logits */
    /* PAGES: token t is row (t % page_tokens) of page t / page_tokens. */
    uint32_t num_pages;
    const uint32_t *page_ids;
    const void *const *key_pages;    /* per page: its K block [page_tokens, head_dim] (in shm) */
    const void *const *value_pages;  /* per page: its V block [page_tokens, head_dim] (in shm) */
    /* INLINE (in the result) and GATHER (in shm): [num_tokens, head_dim] contiguous. NULL else. */
    const void *keys;
    const void *values;
} kvd_head_view;

/** A Query's result; free with kvd_query_result_free. */
typedef struct kvd_query_result {
    uint64_t sequence_id, generation, length;
    kvd_query_mode mode;
    kvd_dtype dtype;
    uint32_t head_dim, page_tokens;
    size_t num_heads;                /* layer-major */
    const kvd_head_view *heads;
    void *internal_;                 /* private */
} kvd_query_result;

/** Compaction parameter (kvd.v1.Param). */
typedef enum kvd_param_type {
    KVD_PARAM_INT = 1, KVD_PARAM_FLOAT = 2, KVD_PARAM_STRING = 3, KVD_PARAM_BOOL = 4
} kvd_param_type;

typedef struct kvd_param {
    const char *name;
    kvd_param_type type;
    union { int64_t i; double f; const char *s; int b; } value;
} kvd_param;

/** Options of kvd_client_compact. Zero-initialise, set struct_size. */
typedef struct kvd_compact_options {
    size_t struct_size;              /* sizeof(kvd_compact_options) */
    const char *method;              /* method name (NULL/""): else policy */
    const char *policy;              /* policy name (NULL/""): else rules / model default */
    const kvd_param *params;         /* overrides; may be NULL when num_params is 0 */
    size_t num_params;
    /* Observation queries [layers, q_heads, window, head_dim], row-major; NULL for none. */
    const void *queries;
    kvd_dtype queries_dtype;         /* the model's dtype or KVD_DTYPE_F32 */
    uint32_t queries_shape[4];
    int queries_in_shm;              /* 1: Stage + copy into the staging buffer instead of inline */
} kvd_compact_options;

typedef struct kvd_head_count {
    uint32_t layer, head, before, kept;
} kvd_head_count;

/** A Compact's result; free with kvd_compact_result_free. */
typedef struct kvd_compact_result {
    uint64_t sequence_id, generation;
    const char *method, *policy, *chosen_by;
    size_t num_heads;                /* layer-major */
    const kvd_head_count *heads;
    size_t num_budgets;
    const uint32_t *budgets;
    uint32_t pages_freed;
    uint64_t bytes_freed, elapsed_ns;
    void *internal_;                 /* private */
} kvd_compact_result;

/** Stats (kvd.v1.StatsResponse). */
typedef struct kvd_stats {
    uint32_t total_pages, free_pages;
    uint64_t page_bytes;
    uint32_t sequences;
    uint64_t staging_bytes, staging_used_bytes, requests, errors;
    int has_sequence;                /* 1 when sequence_id was non-zero */
    struct {
        uint64_t sequence_id;
        const char *model, *tenant;  /* owned by the client; valid until its next call */
        uint64_t length, generation;
        uint32_t pages;
        uint64_t tokens_held;
        uint32_t reserved_tokens;
        uint64_t staging_bytes;
    } sequence;
} kvd_stats;

/* ------------------------------------------------------------------------------------------- */
/* Session                                                                                      */

/**
 * Create a client for `endpoint` (e.g. "ipc:///tmp/kvd-default.sock", "tcp://127.0.0.1:5557").
 * No request is sent: the first call (or kvd_client_hello) says Hello and maps the arena.
 * `options` may be NULL (defaults). On success *out is a client to free with kvd_client_free.
 * On failure *out is NULL and, if `error` is not NULL, a message is written there (truncated to
 * error_size bytes, NUL-terminated).
 */
KVD_API kvd_result kvd_client_connect(const char *endpoint, const kvd_client_options *options,
                                      kvd_client **out, char *error, size_t error_size);

/**
 * Read a CURVE key (Z85, 40 characters: the first non-empty line) from a file written by
 * `kvd keygen` (NAME.pub or NAME.key) into `out` (NUL-terminated), for kvd_client_options.
 * KVD_ERR_SYSTEM if the file cannot be read, KVD_ERR_ARGUMENT if it holds no valid key; then a
 * message goes to `error` (may be NULL; truncated to error_size bytes). The key never appears in
 * a message. Thread-safe.
 */
KVD_API kvd_result kvd_curve_load_key(const char *path, char out[41], char *error,
                                      size_t error_size);

/**
 * Negotiate the protocol and map the shared-memory arena (also done implicitly by the first call
 * that needs it). If `info` is not NULL, *info receives the Hello details (free with
 * kvd_hello_info_free). Fails with KVD_ERR_UNIMPLEMENTED when the daemon speaks no version this
 * client offers, or KVD_ERR_PROTOCOL when it answers with a version this client does not speak.
 * A Hello that shows a new arena (daemon restarted) remaps it and returns KVD_OK.
 */
KVD_API kvd_result kvd_client_hello(kvd_client *client, kvd_hello_info **info);

KVD_API void kvd_hello_info_free(kvd_hello_info *info);

/** Last error message of `client` (owned by it, valid until its next call); "" after success.
 *  Never NULL; for a NULL client a static text. */
KVD_API const char *kvd_client_last_error(const kvd_client *client);

/** Result code of the client's last call (KVD_OK after success). */
KVD_API kvd_result kvd_client_last_result(const kvd_client *client);

/** The daemon's raw kvd.v1.ErrorCode of the last failed call (0 if it was not a daemon error). */
KVD_API int kvd_client_last_server_code(const kvd_client *client);

/**
 * Close the socket and drop the client's reference on the arena mapping. Later calls on the client
 * fail with KVD_ERR_CLOSED (and a message); objects returned earlier stay valid. Idempotent.
 * The client must still be freed with kvd_client_free.
 */
KVD_API kvd_result kvd_client_close(kvd_client *client);

/** Close (if needed) and free the client. NULL is a no-op. */
KVD_API void kvd_client_free(kvd_client *client);

/* ------------------------------------------------------------------------------------------- */
/* Sequences                                                                                    */

/** Create an empty sequence of `model`. `sequence_id` 0 lets the daemon choose; `tenant` may be
 *  NULL. *out_id (may be NULL) receives the id. */
KVD_API kvd_result kvd_client_create_sequence(kvd_client *client, const char *model,
                                              uint64_t sequence_id, const char *tenant,
                                              uint64_t *out_id);

/** Options of kvd_client_create_sequence_ex. Zero-initialise, set struct_size. */
typedef struct kvd_sequence_options {
    size_t struct_size;          /* sizeof(kvd_sequence_options) */
    uint64_t sequence_id;        /* 0: the daemon chooses */
    const char *tenant;          /* label for Stats; NULL = the tenant's name */
    int pinned;                  /* 1: create it pinned (see kvd_client_pin) */
    /* ---- Prefix reuse. Added after `pinned`: a program built against the shorter struct passes
     * its smaller struct_size and adopts nothing (the library reads only struct_size bytes). */
    const uint32_t *adopt_token_ids; /* the prompt's token ids: the sequence starts with the K/V
                                        of their longest cached prefix (whole pages, shared with
                                        the prefix cache; see kvd_client_lookup) */
    size_t adopt_count;          /* ids in adopt_token_ids; 0 = start empty (ids may be NULL) */
    uint64_t *adopted_tokens;    /* out, may be NULL: written on success with the tokens adopted
                                    (the new sequence's length: a multiple of the model's
                                    page_tokens, 0 on a miss). Append the rest of the prompt from
                                    that position on. */
} kvd_sequence_options;

/** kvd_client_create_sequence with options (`options` may be NULL: defaults). KVD_ERR_ARGUMENT
 *  for adopt_count > 0 with NULL adopt_token_ids; the daemon refuses more ids than its
 *  max_sequence_tokens (KVD_ERR_INVALID_ARGUMENT). */
KVD_API kvd_result kvd_client_create_sequence_ex(kvd_client *client, const char *model,
                                                 const kvd_sequence_options *options,
                                                 uint64_t *out_id);

/** Free every page, reservation and staging buffer of a sequence. Out pointers may be NULL. */
KVD_API kvd_result kvd_client_release(kvd_client *client, uint64_t sequence_id,
                                      uint32_t *pages_freed, uint64_t *bytes_freed);

/** Arena statistics, plus `sequence_id`'s details when it is non-zero. */
KVD_API kvd_result kvd_client_stats(kvd_client *client, uint64_t sequence_id, kvd_stats *out);

/* ------------------------------------------------------------------------------------------- */
/* Leases, pins and the memory manager's figures                                                */

/** What a KeepAlive did. */
typedef struct kvd_keep_alive_result {
    uint64_t lease_ms;           /* the lease this renewal bought; 0 = the daemon has no leases */
    uint32_t adopted;            /* sequences of `adopt` that are now this connection's */
    size_t num_missing;
    const uint64_t *missing;     /* sequences of `adopt` that do not exist (never created,
                                    released or evicted); owned by the client, valid until its
                                    next call */
} kvd_keep_alive_result;

/**
 * Renew the lease of everything this connection owns (any call does; this one does nothing else)
 * and adopt the `n_adopt` sequences in `adopt` (may be NULL when n_adopt is 0): they become this
 * connection's, e.g. after a reconnect or when another process hands them over. Unknown ids are
 * listed in out->missing, not an error. `out` may be NULL.
 */
KVD_API kvd_result kvd_client_keep_alive(kvd_client *client, const uint64_t *adopt,
                                         size_t n_adopt, kvd_keep_alive_result *out);

/**
 * Pin (`pinned` 1) or unpin (0) a sequence: the memory manager never compacts or evicts a pinned
 * sequence (an orphan past its grace period is still released). Pinned pages count against the
 * tenant's quota_pinned_pages. *out_pinned and *out_pinned_pages (the tenant's pages in pinned
 * sequences now) may be NULL.
 */
KVD_API kvd_result kvd_client_pin(kvd_client *client, uint64_t sequence_id, int pinned,
                                  int *out_pinned, uint32_t *out_pinned_pages);

/** The memory manager's figures for this client's tenant (kvd.v1.MemoryStats), counted since the
 *  daemon started. Set struct_size = sizeof(kvd_memory_stats) before the call: the library fills
 *  only that many bytes, so the struct can grow compatibly (kvd_stats cannot). Each action's count
 *  comes with the pages it gave back. */
typedef struct kvd_memory_stats {
    size_t struct_size;
    double high, low;                   /* watermarks, fractions of the tenant's pages (its quota
                                           when it has one) */
    uint64_t reservations_aborted;      /* open reservations dropped because their lease ended */
    uint64_t reservations_aborted_pages;
    uint64_t orphans_released;          /* orphans released after the grace period */
    uint64_t orphans_released_pages;
    uint64_t compactions;               /* idle sequences compacted under pressure */
    uint64_t compactions_pages;
    uint64_t evictions;                 /* whole sequences evicted under pressure */
    uint64_t evictions_pages;
    uint64_t reclaim_passes;            /* passes run (background, and for an Append or Reserve
                                           that did not fit) */
    uint64_t synchronous_reclaims;      /* ... of them on behalf of such an Append or Reserve */
    uint64_t last_reclaim_us;           /* the last pressure episode: from the first background
                                           pass above `high` to the pass that reached `low` */
    int last_reclaim_reached_low;       /* 1: the latest episode has reached `low` */
    uint32_t orphans;                   /* sequences whose lease has expired, right now */
    uint32_t pinned_sequences;          /* pinned sequences and their pages, right now */
    uint32_t pinned_pages;
    uint64_t events_published;          /* events about this tenant's sequences sent on the events endpoint */
} kvd_memory_stats;

/**
 * The memory manager's figures for this client's tenant (one Stats request naming no sequence, so
 * it renews only this connection's lease). KVD_ERR_ARGUMENT when `out` is NULL or its struct_size
 * does not cover `high` or exceeds this library's sizeof(kvd_memory_stats) (a program built against
 * a newer header); KVD_ERR_PROTOCOL when the daemon's reply has no memory figures (a kvd older
 * than the memory manager). On failure *out is unchanged.
 */
KVD_API kvd_result kvd_client_memory_stats(kvd_client *client, kvd_memory_stats *out);

/** One sequence as the memory manager sees it (kvd.v1.SequenceStats). Set struct_size =
 *  sizeof(kvd_sequence_lease) before the call: the library fills only that many bytes. */
typedef struct kvd_sequence_lease {
    size_t struct_size;
    uint64_t sequence_id;
    uint64_t idle_ms;                   /* ms since a request last touched it, before this call */
    int64_t lease_remaining_ms;         /* ms until its lease ends; negative: an orphan; 0 when
                                           the daemon runs without leases */
    int orphan;                         /* 1: its lease had ended (it is an orphan) */
    int pinned;                         /* 1: never compacted or evicted by the memory manager */
    uint64_t bytes;                     /* bytes of the pages it holds (pages * page_bytes) */
    uint32_t manager_compactions;       /* times the memory manager compacted it */
    uint32_t pages;                     /* pages it holds, an open reservation's included */
    uint64_t tokens_held;               /* tokens held, summed over every (layer, head) */
    uint64_t length;                    /* logical length */
    uint64_t generation;                /* layout generation (a compaction bumps it) */
} kvd_sequence_lease;

/**
 * The lease and memory-manager state of `sequence_id` (a Stats request naming it). Like any request
 * naming a sequence, this one touches it first: it renews its lease and makes this connection its
 * owner (an orphan it names is owned again), so lease_remaining_ms is measured after that renewal
 * (about the whole lease) and orphan is normally 0; idle_ms is the time before this call. Watch a
 * sequence without renewing it with kvd_client_memory_stats (orphans) or the events instead.
 * KVD_ERR_ARGUMENT for sequence_id 0, a NULL `out` or a struct_size that does not cover
 * `sequence_id` or exceeds sizeof(kvd_sequence_lease); the daemon's KVD_ERR_NOT_FOUND /
 * KVD_ERR_EVICTED for a sequence that is gone. On failure *out is unchanged.
 */
KVD_API kvd_result kvd_client_sequence_lease(kvd_client *client, uint64_t sequence_id,
                                             kvd_sequence_lease *out);

/* ------------------------------------------------------------------------------------------- */
/* Memory-manager events                                                                        */

/** What the memory manager did (kvd.v1.Event.Kind). */
typedef enum kvd_event_kind {
    KVD_EVENT_UNSPECIFIED = 0,
    KVD_EVENT_COMPACTED = 1,            /* compacted under memory pressure (generation bumped) */
    KVD_EVENT_EVICTED = 2,              /* evicted whole under pressure; now KVD_ERR_EVICTED */
    KVD_EVENT_LEASE_EXPIRED = 3,        /* its owner sent nothing within the lease: an orphan */
    KVD_EVENT_RESERVATION_ABORTED = 4,  /* an open reservation of an expired lease was dropped */
    KVD_EVENT_ORPHAN_RELEASED = 5       /* released after the grace period; now KVD_ERR_EVICTED */
} kvd_event_kind;

/** Constant name of a kind, e.g. "KVD_EVENT_EVICTED" ("KVD_EVENT_?" for unknown values). */
KVD_API const char *kvd_event_kind_name(kvd_event_kind kind);

/** One event (kvd.v1.Event). Set struct_size = sizeof(kvd_event) before kvd_events_next: the
 *  library fills only that many bytes, so the struct can grow compatibly. The strings are owned
 *  by the subscriber and valid until its next kvd_events_next or kvd_events_free. */
typedef struct kvd_event {
    size_t struct_size;
    uint64_t sequence_number;    /* from 1 per daemon run; a gap means events were missed */
    kvd_event_kind kind;
    const char *topic;           /* "kvd.<tenant>" */
    const char *tenant;
    uint64_t sequence_id;
    uint64_t time_unix_ms;       /* wall clock */
    uint64_t generation;         /* the sequence's generation after the action */
    uint32_t pages_freed;
    uint64_t bytes_freed;
    const char *method;          /* compaction: the method run ("" otherwise) */
    uint64_t tokens_before, tokens_after;
    const char *reason;          /* why, in words */
    uint32_t used_pages, limit_pages; /* the tenant's pages in use after the action, its limit */
} kvd_event;

typedef struct kvd_events kvd_events;

/**
 * Subscribe to the events published on `endpoint` (kvd_hello_info.events_endpoint) whose topic
 * starts with `topic` (NULL = "kvd.", every tenant; "kvd.<tenant>" for one — a prefix, so
 * "kvd.a" also matches tenant "ab"). Only the CURVE keys of `options` (may be NULL) are used:
 * give the client's when the daemon secures tcp with CURVE. No I/O happens here. On failure *out
 * is NULL and a message goes to `error` (may be NULL; truncated to error_size bytes).
 *
 * PUB/SUB delivers nothing published before the subscription reached the daemon: call
 * kvd_events_ready before relying on an event, and watch sequence_number for gaps (a slow
 * subscriber loses events too).
 */
KVD_API kvd_result kvd_events_open(const char *endpoint, const char *topic,
                                   const kvd_client_options *options, kvd_events **out,
                                   char *error, size_t error_size);

/** Subscribe to this client's tenant ("kvd.<tenant>", exactly) on the endpoint its Hello names,
 *  with its CURVE keys. KVD_ERR_FAILED_PRECONDITION when the daemon publishes no events. */
KVD_API kvd_result kvd_client_events(kvd_client *client, kvd_events **out);

/** Wait until the connection to the daemon is established (ZeroMQ handshake done; the
 *  subscription follows within milliseconds). KVD_ERR_TIMEOUT after `timeout_ms`. */
KVD_API kvd_result kvd_events_ready(kvd_events *events, int timeout_ms);

/** The next event into *out. Waits up to `timeout_ms` (< 0: forever; 0: only look):
 *  KVD_ERR_TIMEOUT when none came, KVD_ERR_PROTOCOL for an undecodable message. */
KVD_API kvd_result kvd_events_next(kvd_events *events, int timeout_ms, kvd_event *out);

/** Last error message of `events` ("" after success; never NULL). */
KVD_API const char *kvd_events_last_error(const kvd_events *events);

/** Close the subscription and free it. NULL is a no-op. */
KVD_API void kvd_events_free(kvd_events *events);

/* ------------------------------------------------------------------------------------------- */
/* Appending                                                                                    */

/**
 * Append `tokens` tokens inline. `keys` and `values` are row-major
 * [layers, kv_heads, tokens, head_dim] arrays of `dtype` (the model's), each
 * layers*kv_heads*tokens*head_dim*kvd_dtype_size(dtype) bytes, read during the call only.
 * All or nothing. `out` may be NULL.
 */
KVD_API kvd_result kvd_client_append(kvd_client *client, uint64_t sequence_id, kvd_dtype dtype,
                                     uint32_t layers, uint32_t kv_heads, uint32_t tokens,
                                     uint32_t head_dim, const void *keys, const void *values,
                                     kvd_append_result *out);

/**
 * The same, zero-copy: Reserve, copy every head's tokens straight into the arena pages, Commit
 * (Commit{abort} if anything fails after the Reserve). The shape is checked against the model
 * before anything is reserved. Bit-identical to kvd_client_append.
 */
KVD_API kvd_result kvd_client_append_zero_copy(kvd_client *client, uint64_t sequence_id,
                                               kvd_dtype dtype, uint32_t layers,
                                               uint32_t kv_heads, uint32_t tokens,
                                               uint32_t head_dim, const void *keys,
                                               const void *values, kvd_append_result *out);

/** Options of kvd_client_append_ex. Zero-initialise, set struct_size. */
typedef struct kvd_append_options {
    size_t struct_size;          /* sizeof(kvd_append_options) */
    int zero_copy;               /* 1: Reserve, write into the arena, Commit (as
                                    kvd_client_append_zero_copy); 0: inline (kvd_client_append) */
    const uint32_t *token_ids;   /* the appended tokens' ids, one per token, for prefix reuse (sent
                                    on the Append, or on the Commit with zero_copy); NULL = none */
    size_t num_token_ids;        /* ids in token_ids: 0 (none) or exactly `tokens` */
} kvd_append_options;

/**
 * kvd_client_append / kvd_client_append_zero_copy with options (`options` may be NULL: inline,
 * no ids). With token ids, kvd indexes every page this append fills in the tenant's prefix cache
 * (Lookup, adopting creates), as long as the sequence was never compacted and every earlier
 * append carried ids: an append without ids stops the indexing of that sequence for good.
 * A count other than `tokens` is KVD_ERR_ARGUMENT, found before anything is sent or reserved.
 */
KVD_API kvd_result kvd_client_append_ex(kvd_client *client, uint64_t sequence_id,
                                        kvd_dtype dtype, uint32_t layers, uint32_t kv_heads,
                                        uint32_t tokens, uint32_t head_dim, const void *keys,
                                        const void *values, const kvd_append_options *options,
                                        kvd_append_result *out);

/**
 * Reserve `num_tokens` slots in every (layer, head) of a sequence. *out describes where each
 * token goes (free with kvd_reservation_free). Write with kvd_reservation_key/value or
 * kvd_reservation_write, then kvd_client_commit (or kvd_client_abort).
 */
KVD_API kvd_result kvd_client_reserve(kvd_client *client, uint64_t sequence_id,
                                      uint32_t num_tokens, kvd_reservation **out);

/** Where token `token` (0 .. num_tokens-1) of head `head_index` (layer * kv_heads + head) goes:
 *  head_dim elements of K (resp. V) in the arena. NULL if an index is out of range. */
KVD_API void *kvd_reservation_key(const kvd_reservation *r, size_t head_index, uint32_t token);
KVD_API void *kvd_reservation_value(const kvd_reservation *r, size_t head_index, uint32_t token);

/** Copy `keys`/`values` [layers, kv_heads, num_tokens, head_dim] (the reservation's shape and
 *  dtype, `bytes` each) into the reserved slots. KVD_ERR_ARGUMENT / BUFFER_TOO_SMALL otherwise. */
KVD_API kvd_result kvd_reservation_write(const kvd_reservation *r, const void *keys,
                                         const void *values, size_t bytes);

/** Make the first `num_tokens` (1 .. reserved; 0 means all) reserved tokens visible. */
KVD_API kvd_result kvd_client_commit(kvd_client *client, const kvd_reservation *r,
                                     uint32_t num_tokens, kvd_append_result *out);

/** kvd_client_commit with the committed tokens' ids (`num_token_ids` of them, exactly as many as
 *  are committed; token_ids may be NULL when num_token_ids is 0), for prefix reuse as in
 *  kvd_client_append_ex. A wrong count is KVD_ERR_ARGUMENT before anything is sent: the
 *  reservation stays open (commit again, or abort). */
KVD_API kvd_result kvd_client_commit_ex(kvd_client *client, const kvd_reservation *r,
                                        uint32_t num_tokens, const uint32_t *token_ids,
                                        size_t num_token_ids, kvd_append_result *out);

/** Commit the next `num_tokens` (>= 1) tokens of `r` that are not committed yet and keep the rest
 *  reserved (Commit.keep_reserved): a decoder reserves once and commits one token per step. Token
 *  t of the reservation stays where kvd_reservation_key/value(r, h, t) say; the caller counts
 *  what it committed. `*remaining` (may be NULL): tokens still reserved, 0 when this commit closed
 *  the reservation. More than remain is KVD_ERR_FAILED_PRECONDITION, and nothing changes. */
KVD_API kvd_result kvd_client_commit_keep(kvd_client *client, const kvd_reservation *r,
                                          uint32_t num_tokens, const uint32_t *token_ids,
                                          size_t num_token_ids, kvd_append_result *out,
                                          uint32_t *remaining);

/** Drop what is still reserved (tokens committed with kvd_client_commit_keep stay). */
KVD_API kvd_result kvd_client_abort(kvd_client *client, const kvd_reservation *r);

/*
 * Pipelined appends: no round trip per decode step. A pipeline reserves `reserve_ahead` tokens,
 * copies each step's K/V straight into the reserved slots and sends Commit{keep_reserved} without
 * waiting; up to `max_in_flight` commits may be unanswered. Their replies are collected when the
 * window is full, by kvd_pipeline_flush / kvd_pipeline_close, and before any other request of the
 * same client goes out; a step the daemon refused is returned by whichever call collected it (its
 * message names the step and the position), and after a refused commit every later
 * kvd_pipeline_append returns the same error. A refused Reserve (arena full) is reported once; the
 * next append asks again. When a reservation is used up, the next Reserve goes out right behind
 * the commit that used it up. kvd applies one sequence's requests in the order they arrive, so
 * commits apply in the order sent. Several pipelines (one per sequence) may share a client; the
 * client's threading rules apply. Close every pipeline before kvd_client_free.
 */
typedef struct kvd_pipeline kvd_pipeline;

/** Where a pipeline stands (kvd_pipeline_status). */
typedef struct kvd_pipeline_status {
    uint64_t steps;             /* kvd_pipeline_append calls that sent their commits */
    uint64_t sent_length;       /* the sequence's length once every commit sent applies */
    uint64_t confirmed_length;  /* length in the last successful commit reply */
    uint32_t in_flight;         /* commits sent and not answered yet */
    uint32_t reserved;          /* tokens reserved and not committed yet */
    int failed;                 /* 1: a commit was refused (failed_step says which) */
    uint64_t failed_step;       /* its first step (a Commit may carry several: commit_every) */
    uint32_t unsent;            /* tokens written whose Commit waits for more (commit_every) */
} kvd_pipeline_status;

/** Open a pipeline on `sequence_id` (one Stats round trip: model and length). reserve_ahead >= 1
 *  (at most the daemon's max_tokens_per_append), max_in_flight >= 1. */
KVD_API kvd_result kvd_pipeline_open(kvd_client *client, uint64_t sequence_id,
                                     uint32_t reserve_ahead, uint32_t max_in_flight,
                                     kvd_pipeline **out);
/** Copy `keys`/`values` [layers, kv_heads, tokens, head_dim] in the model's dtype into reserved
 *  slots and send their Commit without waiting. `token_ids`: NULL/0 or one per token. More tokens
 *  than are left reserved go in two commits (each all or nothing). */
KVD_API kvd_result kvd_pipeline_append(kvd_pipeline *p, const void *keys, const void *values,
                                       uint32_t tokens, const uint32_t *token_ids,
                                       size_t num_token_ids);
/** Wait for every reply; the first failure not reported yet (or the refused commit again). */
KVD_API kvd_result kvd_pipeline_flush(kvd_pipeline *p);
/** One Commit per `n` tokens (default 1: one per append): tokens become visible to other clients
 *  in batches of n — and before any other request of this client, at flush and when the
 *  reservation is used up — for 1/n of the messages. */
KVD_API kvd_result kvd_pipeline_set_commit_every(kvd_pipeline *p, uint32_t n);
KVD_API void kvd_pipeline_status_get(const kvd_pipeline *p, kvd_pipeline_status *out);
/** Flush, abort what is still reserved (its pages go back to the arena) and free `p` (also on an
 *  error, which is the first failure not reported before). NULL is a no-op. */
KVD_API kvd_result kvd_pipeline_close(kvd_pipeline *p);

KVD_API void kvd_reservation_free(kvd_reservation *r);

/* ------------------------------------------------------------------------------------------- */
/* Prefix reuse (docs/PREFIX.md)                                                                */
/*
 * Token ids are uint32 and travel as little-endian bytes (this library is little-endian only, so
 * the caller's array is sent as it is). Pages are indexed by appends that carry ids
 * (kvd_client_append_ex, kvd_client_commit_ex); Lookup finds the longest cached prefix in whole
 * pages; an adopting create (kvd_sequence_options.adopt_token_ids) starts a sequence on those pages
 * (shared, held once); Fork copies a live sequence's first tokens (whole pages shared). A shared
 * page is never written: appends and compactions copy first, so no sequence sees another's data.
 */

/** What Lookup found (kvd.v1.LookupResponse). */
typedef struct kvd_lookup_result {
    uint64_t tokens;             /* tokens of the longest cached prefix: a multiple of page_tokens,
                                    0 on a miss */
    uint32_t pages_per_head;     /* pages each (layer, head) would share: tokens / page_tokens */
    uint32_t page_tokens;        /* tokens per page of the model */
} kvd_lookup_result;

/**
 * The longest prefix of `token_ids` (`n_tokens` ids; may be NULL when n_tokens is 0) whose K/V
 * this tenant's prefix cache holds for `model`, in whole pages. Changes nothing but the blocks'
 * recency. KVD_ERR_ARGUMENT for a NULL/empty model, NULL ids with n_tokens > 0 or a NULL `out`;
 * the daemon's KVD_ERR_NOT_FOUND for an unknown model. On failure *out is unchanged.
 */
KVD_API kvd_result kvd_client_lookup(kvd_client *client, const char *model,
                                     const uint32_t *token_ids, size_t n_tokens,
                                     kvd_lookup_result *out);

/** What Fork created (kvd.v1.ForkResponse). */
typedef struct kvd_fork_result {
    uint64_t sequence_id;        /* the new sequence */
    uint64_t length;             /* its length (the requested one) */
    uint64_t generation;         /* its layout generation (starts at 1) */
} kvd_fork_result;

/**
 * Create a sequence holding the first `length` tokens (0 .. the source's length) of `sequence_id`:
 * whole pages are shared copy-on-write, a partly filled last page is copied. `new_sequence_id` 0
 * lets the daemon choose (same rules as create). `out` may be NULL. The daemon's errors:
 * KVD_ERR_INVALID_ARGUMENT for a length past the source's; KVD_ERR_FAILED_PRECONDITION for a
 * source that was compacted or aliased, or has an open reservation; KVD_ERR_ALREADY_EXISTS,
 * KVD_ERR_RESOURCE_EXHAUSTED as for create. On failure nothing changed.
 */
KVD_API kvd_result kvd_client_fork(kvd_client *client, uint64_t sequence_id, uint64_t length,
                                   uint64_t new_sequence_id, kvd_fork_result *out);

/** This tenant's prefix cache (kvd.v1.PrefixStats). Set struct_size = sizeof(kvd_prefix_stats)
 *  before the call: the library fills only that many bytes, so the struct can grow compatibly. */
typedef struct kvd_prefix_stats {
    size_t struct_size;
    int enabled;                 /* 0 when the daemon's prefix.enabled is false */
    uint64_t hits, misses;       /* blocks found / not found by Lookup and adopting creates */
    uint64_t cached_blocks;      /* blocks indexed now */
    uint32_t cached_pages;       /* pages the index references ... */
    uint32_t unused_pages;       /* ... of them held by no sequence (cache only; dropped first
                                    under memory pressure) ... */
    uint32_t shared_pages;       /* ... and held by two or more sequences */
    uint64_t pages_saved;        /* page copies sharing avoids now (sum of holders - 1) */
    uint64_t bytes_saved;        /* their bytes */
    uint64_t evictions;          /* blocks dropped from the index by the memory manager */
    uint64_t evicted_pages;      /* pages they freed */
} kvd_prefix_stats;

/**
 * This tenant's prefix-cache figures (one Stats request naming no sequence). KVD_ERR_ARGUMENT
 * when `out` is NULL or its struct_size does not cover `enabled` or exceeds
 * sizeof(kvd_prefix_stats); KVD_ERR_PROTOCOL when the reply has no prefix figures (a kvd older
 * than prefix reuse). On failure *out is unchanged.
 */
KVD_API kvd_result kvd_client_prefix_stats(kvd_client *client, kvd_prefix_stats *out);

/* ------------------------------------------------------------------------------------------- */
/* The remote tier (docs/REMOTE.md)                                                             */
/*
 * With the daemon's remote.enabled, the memory manager ships each sequence it evicts to Redis;
 * the id then answers KVD_ERR_EVICTED saying "send Restore", and kvd_client_restore brings it
 * back under the same id, bit-exact.
 */

/** What Restore brought back (kvd.v1.RestoreResponse). */
typedef struct kvd_restore_result {
    uint64_t sequence_id;        /* the restored sequence (the id asked for) */
    uint64_t length;             /* its length and generation, as when it was evicted */
    uint64_t generation;
    int from_remote;             /* 1: read from the remote store; 0: taken from the daemon's queue
                                    of offloads not shipped yet */
    uint64_t restore_us;         /* from the request's start to the sequence being served, us */
    uint64_t bytes;              /* K/V bytes restored */
} kvd_restore_result;

/**
 * Bring back `sequence_id`, which the memory manager evicted to the remote tier: same id, length,
 * generation, positions, log-weights and K/V, in fresh pages of this client's tenant, owned by this
 * connection. It needs room for all its pages (the memory manager may make room, as for an
 * append). `out` may be NULL. KVD_ERR_ARGUMENT for sequence id 0 (nothing is sent). The daemon's
 * errors: KVD_ERR_FAILED_PRECONDITION when it has no remote tier (remote.enabled is false);
 * KVD_ERR_ALREADY_EXISTS when the id is live; KVD_ERR_NOT_FOUND / KVD_ERR_EVICTED when it was never
 * offloaded, the store no longer has it (TTL, flushed) or its copy is corrupted (then it is lost:
 * create it again and re-run prefill); KVD_ERR_UNAVAILABLE when the store does not answer (nothing
 * changed: try again); KVD_ERR_RESOURCE_EXHAUSTED when no room can be made.
 *
 * Layout: the reply does not name the model. A sequence this client created (or forked) keeps its
 * remembered layout through the eviction, so zero-copy appends to it after the restore need no
 * extra request, and it is taken back after a durable daemon's restart like any created one. For a
 * sequence this client did not create, the layout is learnt with one Stats request the first time
 * a zero-copy append needs it (as for any sequence of another client), and a durable daemon's
 * restart does not take it back by itself (kvd_client_keep_alive adopts it).
 */
KVD_API kvd_result kvd_client_restore(kvd_client *client, uint64_t sequence_id,
                                      kvd_restore_result *out);

/** This tenant's remote tier (kvd.v1.RemoteStats), counted since the daemon started. Set
 *  struct_size = sizeof(kvd_remote_stats) before the call: the library fills only that many
 *  bytes, so the struct can grow compatibly. */
typedef struct kvd_remote_stats {
    size_t struct_size;
    int enabled;                 /* 0 when the daemon's remote.enabled is false (all zero then) */
    uint64_t offloaded;          /* sequences shipped to the remote store ... */
    uint64_t offloaded_bytes;    /* ... and their bytes (blob sizes) */
    uint64_t offload_failures;   /* offloads that failed (store down, full or slow) ... */
    uint64_t offload_dropped;    /* ... or were dropped because the queue was full: those
                                    sequences were evicted as without a remote tier */
    uint64_t restored;           /* restores served */
    uint64_t restore_failures;   /* restores that failed (copy missing, store down) */
    uint64_t restore_corrupted;  /* restores that found a corrupted copy (never served) */
    uint64_t last_restore_us;    /* latency of the restores served: the last one ... */
    uint64_t mean_restore_us;    /* ... and the mean, microseconds */
    uint32_t queued;             /* offloads waiting to be shipped now ... */
    uint64_t queued_bytes;       /* ... and their bytes */
    /* Prompt blocks shared with other daemons (remote.share_prefixes): */
    uint64_t blocks_published;        /* published to the store ... */
    uint64_t blocks_publish_failures; /* ... or not (store failure, or the queue was full) */
    uint64_t blocks_imported;         /* taken from the store on a local miss ... */
    uint64_t blocks_rejected;         /* ... or refused when taken (never served) */
} kvd_remote_stats;

/**
 * This tenant's remote-tier figures (one Stats request naming no sequence). KVD_ERR_ARGUMENT when
 * `out` is NULL or its struct_size does not cover `enabled` or exceeds sizeof(kvd_remote_stats);
 * KVD_ERR_PROTOCOL when the reply has no remote figures (a kvd older than the remote tier). A
 * daemon without a remote tier answers KVD_OK with enabled 0. On failure *out is unchanged.
 */
KVD_API kvd_result kvd_client_remote_stats(kvd_client *client, kvd_remote_stats *out);

/* ------------------------------------------------------------------------------------------- */
/* Reading                                                                                      */

/**
 * Read a sequence. `layers` (n_layers entries) selects layers; NULL/0 means all. *out must be
 * freed with kvd_query_result_free. Views into shared memory (PAGES, GATHER) are valid while the
 * sequence keeps `generation` (and a GATHER's until the next gather/stage of the sequence).
 */
KVD_API kvd_result kvd_client_query(kvd_client *client, uint64_t sequence_id, kvd_query_mode mode,
                                    const uint32_t *layers, size_t n_layers,
                                    kvd_query_result **out);

/** Bytes of one head's K (= of its V): num_tokens * head_dim * dtype size. */
KVD_API size_t kvd_query_head_bytes(const kvd_query_result *r, size_t head_index);

/**
 * Copy head `head_index`'s K and V as contiguous [num_tokens, head_dim] into caller buffers of
 * `capacity` bytes each (either may be NULL to skip it). *needed (may be NULL) receives the bytes
 * required; KVD_ERR_BUFFER_TOO_SMALL when capacity is less (nothing is copied), KVD_ERR_ARGUMENT
 * for a bad index or a METADATA result.
 */
KVD_API kvd_result kvd_query_copy_head(const kvd_query_result *r, size_t head_index, void *keys,
                                       void *values, size_t capacity, size_t *needed);

/** The head for (layer, head), or NULL. */
KVD_API const kvd_head_view *kvd_query_find_head(const kvd_query_result *r, uint32_t layer,
                                                 uint32_t head);

KVD_API void kvd_query_result_free(kvd_query_result *r);

/* ------------------------------------------------------------------------------------------- */
/* Compaction                                                                                   */

/** Convenience constructors for kvd_param (name is not copied). */
KVD_API kvd_param kvd_param_int(const char *name, int64_t v);
KVD_API kvd_param kvd_param_float(const char *name, double v);
KVD_API kvd_param kvd_param_string(const char *name, const char *v);
KVD_API kvd_param kvd_param_bool(const char *name, int v);

/** Compact a sequence with a method or a named policy, parameters and observation queries.
 *  `options` may be NULL (rules / model default). *out (may be NULL) must be freed with
 *  kvd_compact_result_free. */
KVD_API kvd_result kvd_client_compact(kvd_client *client, uint64_t sequence_id,
                                      const kvd_compact_options *options,
                                      kvd_compact_result **out);

KVD_API void kvd_compact_result_free(kvd_compact_result *r);

/** The sequence's staging buffer, at least `bytes`: *ptr (in shm; valid until Release, the next
 *  Stage or gather of the sequence, a restart, or kvd_client_close/free), *offset in the arena,
 *  *size. Outs may be NULL. */
KVD_API kvd_result kvd_client_stage(kvd_client *client, uint64_t sequence_id, uint64_t bytes,
                                    void **ptr, uint64_t *offset, uint64_t *size);

#ifdef __cplusplus
}
#endif

#endif /* KVD_CLIENT_H */
