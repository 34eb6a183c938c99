/*
 * libkvdclient: the kvd C client. One ZeroMQ DEALER socket per client, one request in flight,
 * protobuf-c messages, the arena mapped from /dev/shm with mmap(MAP_SHARED). See kvd_client.h.
 */
#define _GNU_SOURCE
#define KVD_CLIENT_BUILDING 1
#include "kvd_client.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <zmq.h>

#include "kvd/v1/envelope.pb-c.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "libkvdclient supports little-endian hosts only (kvd's wire and arena data are little-endian)"
#endif

#define DEFAULT_TIMEOUT_MS 5000
#define ARENA_MAGIC "KVDARENA"
#define ARENA_HEADER_MIN 72

/* ============================================================================================= */
/* Small helpers                                                                                  */

const char *kvd_result_name(kvd_result code) {
    switch (code) {
    case KVD_OK: return "KVD_OK";
    case KVD_ERR_INVALID_ARGUMENT: return "KVD_ERR_INVALID_ARGUMENT";
    case KVD_ERR_NOT_FOUND: return "KVD_ERR_NOT_FOUND";
    case KVD_ERR_ALREADY_EXISTS: return "KVD_ERR_ALREADY_EXISTS";
    case KVD_ERR_RESOURCE_EXHAUSTED: return "KVD_ERR_RESOURCE_EXHAUSTED";
    case KVD_ERR_FAILED_PRECONDITION: return "KVD_ERR_FAILED_PRECONDITION";
    case KVD_ERR_PERMISSION_DENIED: return "KVD_ERR_PERMISSION_DENIED";
    case KVD_ERR_UNIMPLEMENTED: return "KVD_ERR_UNIMPLEMENTED";
    case KVD_ERR_INTERNAL: return "KVD_ERR_INTERNAL";
    case KVD_ERR_UNAVAILABLE: return "KVD_ERR_UNAVAILABLE";
    case KVD_ERR_SERVER_OTHER: return "KVD_ERR_SERVER_OTHER";
    case KVD_ERR_TIMEOUT: return "KVD_ERR_TIMEOUT";
    case KVD_ERR_CLOSED: return "KVD_ERR_CLOSED";
    case KVD_ERR_ARGUMENT: return "KVD_ERR_ARGUMENT";
    case KVD_ERR_BUFFER_TOO_SMALL: return "KVD_ERR_BUFFER_TOO_SMALL";
    case KVD_ERR_PROTOCOL: return "KVD_ERR_PROTOCOL";
    case KVD_ERR_SYSTEM: return "KVD_ERR_SYSTEM";
    case KVD_ERR_RESTARTED: return "KVD_ERR_RESTARTED";
    case KVD_ERR_BUSY: return "KVD_ERR_BUSY";
    }
    return "KVD_ERR_?";
}

size_t kvd_dtype_size(kvd_dtype dtype) {
    switch (dtype) {
    case KVD_DTYPE_F16: case KVD_DTYPE_BF16: return 2;
    case KVD_DTYPE_F32: return 4;
    default: return 0;
    }
}

uint16_t kvd_f32_to_f16(float x) {
    uint32_t f;
    memcpy(&f, &x, 4);
    uint32_t sign = (f >> 16) & 0x8000u, exp = (f >> 23) & 0xffu, man = f & 0x7fffffu;
    if (exp == 0xff) return (uint16_t)(sign | 0x7c00u | (man ? (0x200u | (man >> 13)) : 0));
    int e = (int)exp - 127 + 15;
    if (e >= 31) return (uint16_t)(sign | 0x7c00u);
    if (e <= 0) {
        if (e < -10) return (uint16_t)sign;
        uint32_t m = man | 0x800000u, shift = (uint32_t)(14 - e);
        uint32_t r = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (r & 1))) r++;
        return (uint16_t)(sign | r);
    }
    uint32_t r = ((uint32_t)e << 10) | (man >> 13), rem = man & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (r & 1))) r++;
    return (uint16_t)(sign | r);
}

float kvd_f16_to_f32(uint16_t h) {
    uint32_t sign = ((uint32_t)h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, f;
    if (exp == 0) {
        if (man == 0) {
            f = sign;
        } else {
            int e = 1;
            while (!(man & 0x400u)) { man <<= 1; e--; }
            f = sign | ((uint32_t)(e + 112) << 23) | ((man & 0x3ffu) << 13);
        }
    } else if (exp == 31) {
        f = sign | 0x7f800000u | (man << 13);
    } else {
        f = sign | ((exp + 112) << 23) | (man << 13);
    }
    float x;
    memcpy(&x, &f, 4);
    return x;
}

uint16_t kvd_f32_to_bf16(float x) {
    uint32_t f;
    memcpy(&f, &x, 4);
    if ((f & 0x7f800000u) == 0x7f800000u && (f & 0x7fffffu)) return (uint16_t)((f >> 16) | 0x40u);
    f += 0x7fffu + ((f >> 16) & 1u);
    return (uint16_t)(f >> 16);
}

float kvd_bf16_to_f32(uint16_t h) {
    uint32_t f = (uint32_t)h << 16;
    float x;
    memcpy(&x, &f, 4);
    return x;
}

kvd_param kvd_param_int(const char *name, int64_t v) {
    kvd_param p;
    memset(&p, 0, sizeof p);
    p.name = name; p.type = KVD_PARAM_INT; p.value.i = v;
    return p;
}
kvd_param kvd_param_float(const char *name, double v) {
    kvd_param p;
    memset(&p, 0, sizeof p);
    p.name = name; p.type = KVD_PARAM_FLOAT; p.value.f = v;
    return p;
}
kvd_param kvd_param_string(const char *name, const char *v) {
    kvd_param p;
    memset(&p, 0, sizeof p);
    p.name = name; p.type = KVD_PARAM_STRING; p.value.s = v;
    return p;
}
kvd_param kvd_param_bool(const char *name, int v) {
    kvd_param p;
    memset(&p, 0, sizeof p);
    p.name = name; p.type = KVD_PARAM_BOOL; p.value.b = v ? 1 : 0;
    return p;
}

/* a * b * ... with overflow detection: returns 0 on overflow or any zero factor. */
static int mul_size(size_t *acc, uint64_t x) {
    if (x == 0) { *acc = 0; return 1; }
    if (*acc > SIZE_MAX / x) return 0;
    *acc *= (size_t)x;
    return 1;
}

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Tokens that finish a partly filled first page, whole pages, tail; pages needed. */
static uint64_t pages_needed(uint32_t first_slot, uint64_t n, uint32_t P) {
    uint64_t lead = 0;
    if (first_slot) lead = n < (uint64_t)(P - first_slot) ? n : (uint64_t)(P - first_slot);
    uint64_t rest = n - lead;
    return (lead > 0) + rest / P + (rest % P != 0);
}

/* ============================================================================================= */
/* The mapped arena (reference counted: results keep it alive)                                   */

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

static arena *arena_ref(arena *a) {
    if (a) atomic_fetch_add(&a->refs, 1);
    return a;
}

static void arena_unref(arena *a) {
    if (!a) return;
    if (atomic_fetch_sub(&a->refs, 1) == 1) {
        if (a->base) munmap(a->base, a->size);
        free(a->path);
        free(a);
    }
}

/* ============================================================================================= */
/* Hello info (reference counted: the client keeps one, callers may hold more)                   */

typedef struct hello_box {
    kvd_hello_info pub;
    atomic_int refs;
    Kvd__V1__Response *resp;
    kvd_model_layout *models;
    kvd_method_info *methods;
    kvd_param_info *params;
    kvd_policy_info *policies;
} hello_box;

static void hello_unref(hello_box *b) {
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
    if (info) hello_unref((hello_box *)info->internal_);
}

const kvd_model_layout *kvd_hello_find_model(const kvd_hello_info *info, const char *name) {
    if (!info || !name) return NULL;
    for (size_t i = 0; i < info->num_models; i++)
        if (strcmp(info->models[i].name, name) == 0) return &info->models[i];
    return NULL;
}

/* ============================================================================================= */
/* The client                                                                                     */

typedef struct seq_layout {
    uint64_t id;
    uint32_t layers, kv_heads, head_dim, page_tokens;
    kvd_dtype dtype;
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
};

static kvd_result set_err(kvd_client *c, kvd_result code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static kvd_result set_err(kvd_client *c, kvd_result code, const char *fmt, ...) {
    c->last = code;
    c->last_server_code = 0;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(c->err, c->err_cap, fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t)n >= c->err_cap) {
        char *bigger = realloc(c->err, (size_t)n + 1);
        if (bigger) {
            c->err = bigger;
            c->err_cap = (size_t)n + 1;
            va_start(ap, fmt);
            vsnprintf(c->err, c->err_cap, fmt, ap);
            va_end(ap);
        }
    }
    return code;
}

static kvd_result oom(kvd_client *c) {
    return set_err(c, KVD_ERR_SYSTEM, "kvd: out of memory");
}

/* Every public call on a client starts with enter() and ends with leave(). */
static kvd_result enter(kvd_client *c, int allow_closed) {
    if (!c) return KVD_ERR_ARGUMENT;
    if (atomic_flag_test_and_set(&c->busy)) return KVD_ERR_BUSY;
    c->last = KVD_OK;
    c->last_server_code = 0;
    c->err[0] = '\0';
    if (c->closed && !allow_closed) {
        set_err(c, KVD_ERR_CLOSED, "kvd: the client is closed (kvd_client_close was called)");
        atomic_flag_clear(&c->busy);
        return KVD_ERR_CLOSED;
    }
    return KVD_OK;
}

static kvd_result leave(kvd_client *c, kvd_result rc) {
    if (rc == KVD_OK) {
        c->last = KVD_OK;
        c->last_server_code = 0;
        c->err[0] = '\0';
    } else {
        c->last = rc;
    }
    atomic_flag_clear(&c->busy);
    return rc;
}

const char *kvd_client_last_error(const kvd_client *c) {
    if (!c) return "kvd: the client is NULL";
    return c->err;
}

kvd_result kvd_client_last_result(const kvd_client *c) {
    return c ? c->last : KVD_ERR_ARGUMENT;
}

int kvd_client_last_server_code(const kvd_client *c) {
    return c ? c->last_server_code : 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* Sequence layouts known to this client                                                          */

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

static int seq_remember(kvd_client *c, uint64_t id, const kvd_model_layout *m) {
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
    }
    s->id = id;
    s->layers = m->layers;
    s->kv_heads = m->kv_heads;
    s->head_dim = m->head_dim;
    s->page_tokens = m->page_tokens;
    s->dtype = m->dtype;
    return 1;
}

/* ---------------------------------------------------------------------------------------------- */
/* Transport                                                                                      */

static kvd_result open_socket(kvd_client *c) {
    void *s = zmq_socket(c->zctx, ZMQ_DEALER);
    if (!s) return set_err(c, KVD_ERR_SYSTEM, "kvd: zmq_socket: %s", zmq_strerror(zmq_errno()));
    int zero = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero); /* never block close on unsent requests */
    if (zmq_connect(s, c->endpoint) != 0) {
        int e = zmq_errno();
        zmq_close(s);
        return set_err(c, e == EINVAL || e == EPROTONOSUPPORT ? KVD_ERR_ARGUMENT : KVD_ERR_SYSTEM,
                       "kvd: cannot connect to \"%s\": %s", c->endpoint, zmq_strerror(e));
    }
    c->sock = s;
    return KVD_OK;
}

static kvd_result reset_socket(kvd_client *c) {
    /* A fresh socket (new identity) drops queued requests and never sees the late reply of a
     * request that timed out. */
    if (c->sock) zmq_close(c->sock);
    c->sock = NULL;
    return open_socket(c);
}

static void free_packed(void *data, void *hint) {
    (void)hint;
    free(data);
}

static kvd_result map_server_error(kvd_client *c, const Kvd__V1__Error *e) {
    int code = (int)e->code;
    kvd_result rc = (code >= 1 && code <= 9) ? (kvd_result)code : KVD_ERR_SERVER_OTHER;
    const char *msg = e->message && e->message[0] ? e->message : "kvd: (no message)";
    if (rc == KVD_ERR_SERVER_OTHER)
        set_err(c, rc, "%s [daemon error code %d]", msg, code);
    else
        set_err(c, rc, "%s", msg);
    c->last_server_code = code;
    return rc;
}

static const char *body_name(Kvd__V1__Response__BodyCase b) {
    switch (b) {
    case KVD__V1__RESPONSE__BODY_ERROR: return "error";
    case KVD__V1__RESPONSE__BODY_HELLO: return "hello";
    case KVD__V1__RESPONSE__BODY_CREATE_SEQUENCE: return "create_sequence";
    case KVD__V1__RESPONSE__BODY_APPEND: return "append";
    case KVD__V1__RESPONSE__BODY_RESERVE: return "reserve";
    case KVD__V1__RESPONSE__BODY_COMMIT: return "commit";
    case KVD__V1__RESPONSE__BODY_QUERY: return "query";
    case KVD__V1__RESPONSE__BODY_COMPACT: return "compact";
    case KVD__V1__RESPONSE__BODY_RELEASE: return "release";
    case KVD__V1__RESPONSE__BODY_STATS: return "stats";
    case KVD__V1__RESPONSE__BODY_STAGE: return "stage";
    default: return "nothing";
    }
}

static int arena_current(kvd_client *c, const char **why);
static kvd_result reattach_after_loss(kvd_client *c, const char *why);

/*
 * Send `req` and wait for the matching reply. On success *out is the unpacked response whose body
 * is `want` (free with kvd__v1__response__free_unpacked).
 */
static kvd_result rpc(kvd_client *c, Kvd__V1__Request *req, Kvd__V1__Response__BodyCase want,
                      Kvd__V1__Response **out) {
    *out = NULL;
    if (!c->sock) {
        kvd_result rc = open_socket(c);
        if (rc) return rc;
    }
    req->request_id = c->next_id++;
    if (c->next_id == 0) c->next_id = 1;
    req->protocol_version = c->proto;

    size_t size = kvd__v1__request__get_packed_size(req);
    if (c->hello && want != KVD__V1__RESPONSE__BODY_HELLO && c->hello->pub.max_message_bytes &&
        size > c->hello->pub.max_message_bytes)
        return set_err(c, KVD_ERR_ARGUMENT,
                       "kvd: the request is %zu bytes, more than the daemon's max_message_bytes "
                       "(%llu); append fewer tokens at once or use kvd_client_append_zero_copy",
                       size, (unsigned long long)c->hello->pub.max_message_bytes);
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf) return oom(c);
    kvd__v1__request__pack(req, buf);

    int64_t deadline = now_ms() + c->timeout_ms;
    zmq_msg_t msg;
    if (zmq_msg_init_data(&msg, buf, size, free_packed, NULL) != 0) {
        free(buf);
        return set_err(c, KVD_ERR_SYSTEM, "kvd: zmq_msg_init_data: %s", zmq_strerror(zmq_errno()));
    }
    for (;;) { /* send without ever blocking past the deadline */
        if (zmq_msg_send(&msg, c->sock, ZMQ_DONTWAIT) >= 0) break;
        int e = zmq_errno();
        if (e == EINTR) continue;
        if (e != EAGAIN) {
            zmq_msg_close(&msg);
            return set_err(c, KVD_ERR_SYSTEM, "kvd: sending to %s: %s", c->endpoint, zmq_strerror(e));
        }
        int64_t left = deadline - now_ms();
        zmq_pollitem_t it = {c->sock, 0, ZMQ_POLLOUT, 0};
        if (left <= 0 || zmq_poll(&it, 1, (long)left) == 0) {
            zmq_msg_close(&msg);
            reset_socket(c);
            return set_err(c, KVD_ERR_TIMEOUT,
                           "kvd: could not send to %s within %d ms; is the daemon running?",
                           c->endpoint, c->timeout_ms);
        }
    }

    for (;;) {
        int64_t left = deadline - now_ms();
        zmq_pollitem_t it = {c->sock, 0, ZMQ_POLLIN, 0};
        int n = left > 0 ? zmq_poll(&it, 1, (long)left) : 0;
        if (n < 0 && zmq_errno() == EINTR) continue;
        if (n < 0) return set_err(c, KVD_ERR_SYSTEM, "kvd: zmq_poll: %s", zmq_strerror(zmq_errno()));
        if (n == 0) {
            reset_socket(c);
            const char *why = NULL;
            if (c->attached && !arena_current(c, &why))
                return set_err(c, KVD_ERR_TIMEOUT,
                               "kvd: no reply from %s within %d ms, and %s: the daemon stopped or "
                               "is restarting",
                               c->endpoint, c->timeout_ms, why);
            return set_err(c, KVD_ERR_TIMEOUT,
                           "kvd: no reply from %s within %d ms; is the daemon running?",
                           c->endpoint, c->timeout_ms);
        }
        /* Read every frame of the message; the Response is the last one. */
        zmq_msg_t part;
        zmq_msg_init(&part);
        int more = 1, got = 0;
        while (more) {
            zmq_msg_close(&part);
            zmq_msg_init(&part);
            if (zmq_msg_recv(&part, c->sock, ZMQ_DONTWAIT) < 0) {
                int e = zmq_errno();
                if (e == EINTR) continue;
                break;
            }
            got = 1;
            more = zmq_msg_more(&part);
        }
        if (!got) {
            zmq_msg_close(&part);
            continue;
        }
        Kvd__V1__Response *resp =
            kvd__v1__response__unpack(NULL, zmq_msg_size(&part), zmq_msg_data(&part));
        size_t got_size = zmq_msg_size(&part);
        zmq_msg_close(&part);
        if (!resp)
            return set_err(c, KVD_ERR_PROTOCOL, "kvd: undecodable reply (%zu bytes) from %s",
                           got_size, c->endpoint);
        uint64_t rid = resp->header ? resp->header->request_id : 0;
        int ours = rid == req->request_id ||
                   (rid == 0 && resp->body_case == KVD__V1__RESPONSE__BODY_ERROR);
        if (!ours) { /* a late reply to a request that timed out earlier */
            kvd__v1__response__free_unpacked(resp, NULL);
            continue;
        }
        if (!resp->header) {
            kvd__v1__response__free_unpacked(resp, NULL);
            return set_err(c, KVD_ERR_PROTOCOL, "kvd: reply from %s has no header", c->endpoint);
        }
        /* A reply sent by a daemon that replaced the arena we mapped: do not trust it. */
        const char *why = NULL;
        if (want != KVD__V1__RESPONSE__BODY_HELLO && c->attached && !arena_current(c, &why)) {
            kvd__v1__response__free_unpacked(resp, NULL);
            return reattach_after_loss(c, why);
        }
        uint32_t pv = resp->header->protocol_version;
        if (pv != 0 && pv != KVD_PROTOCOL_VERSION && resp->body_case != KVD__V1__RESPONSE__BODY_ERROR) {
            kvd__v1__response__free_unpacked(resp, NULL);
            return set_err(c, KVD_ERR_PROTOCOL,
                           "kvd: the daemon answered in protocol version %u; this client speaks %u",
                           pv, KVD_PROTOCOL_VERSION);
        }
        if (resp->body_case == KVD__V1__RESPONSE__BODY_ERROR) {
            kvd_result rc = resp->error ? map_server_error(c, resp->error)
                                        : set_err(c, KVD_ERR_PROTOCOL, "kvd: empty error reply");
            kvd__v1__response__free_unpacked(resp, NULL);
            return rc;
        }
        if (resp->body_case != want) {
            Kvd__V1__Response__BodyCase b = resp->body_case;
            kvd__v1__response__free_unpacked(resp, NULL);
            return set_err(c, KVD_ERR_PROTOCOL, "kvd: asked for %s, the daemon replied with %s",
                           body_name(want), body_name(b));
        }
        *out = resp;
        return KVD_OK;
    }
}

/* ---------------------------------------------------------------------------------------------- */
/* Session: Hello, arena mapping, restart detection                                               */

static int arena_current(kvd_client *c, const char **why) {
    struct stat st;
    if (!c->arena) return 1;
    if (stat(c->arena->path, &st) != 0) {
        *why = "its shared memory segment vanished";
        return 0;
    }
    if (st.st_dev != c->arena->dev || st.st_ino != c->arena->ino) {
        *why = "its shared memory segment was replaced";
        return 0;
    }
    return 1;
}

static kvd_result map_arena(kvd_client *c, const Kvd__V1__SharedMemoryInfo *shm, arena **out) {
    *out = NULL;
    const char *name = shm->name ? shm->name : "";
    while (*name == '/') name++;
    if (!*name || strchr(name, '/'))
        return set_err(c, KVD_ERR_PROTOCOL, "kvd: bad shared memory name \"%s\" in Hello",
                       shm->name ? shm->name : "");
    arena *a = calloc(1, sizeof *a);
    if (!a) return oom(c);
    atomic_init(&a->refs, 1);
    if (asprintf(&a->path, "/dev/shm/%s", name) < 0) {
        free(a);
        return oom(c);
    }
    kvd_result rc = KVD_OK;
    int fd = open(a->path, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        rc = set_err(c, KVD_ERR_SYSTEM,
                     "kvd: cannot open shared memory %s: %s; is the client on the daemon's host "
                     "and user?", a->path, strerror(errno));
        goto fail;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        rc = set_err(c, KVD_ERR_SYSTEM, "kvd: fstat %s: %s", a->path, strerror(errno));
        close(fd);
        goto fail;
    }
    if (shm->size_bytes < ARENA_HEADER_MIN || (uint64_t)st.st_size < shm->size_bytes ||
        shm->size_bytes > SIZE_MAX) {
        rc = set_err(c, KVD_ERR_PROTOCOL, "kvd: %s has %lld bytes, Hello said %llu", a->path,
                     (long long)st.st_size, (unsigned long long)shm->size_bytes);
        close(fd);
        goto fail;
    }
    a->size = (size_t)shm->size_bytes;
    void *p = mmap(NULL, a->size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED) {
        rc = set_err(c, KVD_ERR_SYSTEM, "kvd: mmap %s: %s", a->path, strerror(errno));
        goto fail;
    }
    a->base = p;
    a->dev = st.st_dev;
    a->ino = st.st_ino;
    a->page_bytes = shm->page_bytes;
    a->page_count = shm->page_count;
    a->pages_offset = shm->pages_offset;
    a->staging_offset = shm->staging_offset;
    a->staging_bytes = shm->staging_bytes;
    a->generation = shm->arena_generation;
    uint64_t gen;
    uint32_t layout;
    memcpy(&layout, a->base + 8, 4);
    memcpy(&gen, a->base + 16, 8);
    if (memcmp(a->base, ARENA_MAGIC, 8) != 0 || layout != 1) {
        rc = set_err(c, KVD_ERR_PROTOCOL, "kvd: %s is not a kvd arena of layout version 1",
                     a->path);
        goto fail;
    }
    if (gen != shm->arena_generation) {
        rc = set_err(c, KVD_ERR_RESTARTED,
                     "kvd: %s has arena generation %llu, Hello said %llu: the daemon restarted "
                     "during Hello; try again", a->path, (unsigned long long)gen,
                     (unsigned long long)shm->arena_generation);
        goto fail;
    }
    uint64_t pages_end = a->page_bytes * (uint64_t)a->page_count;
    if (a->page_bytes == 0 || pages_end / a->page_bytes != a->page_count ||
        a->pages_offset > a->size || pages_end > a->size - a->pages_offset ||
        a->staging_offset > a->size || a->staging_bytes > a->size - a->staging_offset) {
        rc = set_err(c, KVD_ERR_PROTOCOL, "kvd: Hello describes pages or staging outside %s",
                     a->path);
        goto fail;
    }
    *out = a;
    return KVD_OK;
fail:
    arena_unref(a);
    return rc;
}

static kvd_result build_hello(kvd_client *c, Kvd__V1__Response *resp, hello_box **out) {
    Kvd__V1__HelloResponse *h = resp->hello;
    hello_box *b = calloc(1, sizeof *b);
    if (!b) return oom(c);
    atomic_init(&b->refs, 1);
    b->resp = resp;
    kvd_hello_info *i = &b->pub;
    i->internal_ = b;
    i->protocol_version = h->protocol_version;
    i->server_version = h->server_version;
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
    }
    size_t nparams = 0;
    for (size_t k = 0; k < h->n_methods; k++) nparams += h->methods[k]->n_params;
    b->models = calloc(h->n_models + 1, sizeof *b->models);
    b->methods = calloc(h->n_methods + 1, sizeof *b->methods);
    b->params = calloc(nparams + 1, sizeof *b->params);
    b->policies = calloc(h->n_policies + 1, sizeof *b->policies);
    if (!b->models || !b->methods || !b->params || !b->policies) {
        b->resp = NULL;
        hello_unref(b);
        return oom(c);
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
static kvd_result do_hello(kvd_client *c, int *replaced) {
    if (replaced) *replaced = 0;
    Kvd__V1__HelloRequest hr = KVD__V1__HELLO_REQUEST__INIT;
    uint32_t versions[1] = {c->proto};
    hr.n_protocol_versions = 1;
    hr.protocol_versions = versions;
    hr.client_name = c->client_name;
    Kvd__V1__Request req = KVD__V1__REQUEST__INIT;
    req.body_case = KVD__V1__REQUEST__BODY_HELLO;
    req.hello = &hr;
    Kvd__V1__Response *resp;
    kvd_result rc = rpc(c, &req, KVD__V1__RESPONSE__BODY_HELLO, &resp);
    if (rc) return rc;
    Kvd__V1__HelloResponse *h = resp->hello;
    if (h->protocol_version != KVD_PROTOCOL_VERSION) {
        rc = set_err(c, KVD_ERR_PROTOCOL,
                     "kvd: protocol version mismatch: the daemon (version %s) chose protocol "
                     "version %u, this client speaks %u",
                     h->server_version ? h->server_version : "?", h->protocol_version,
                     KVD_PROTOCOL_VERSION);
        kvd__v1__response__free_unpacked(resp, NULL);
        return rc;
    }
    if (!h->shm) {
        kvd__v1__response__free_unpacked(resp, NULL);
        return set_err(c, KVD_ERR_PROTOCOL, "kvd: Hello reply without shared memory info");
    }
    const char *why = NULL;
    int same = c->arena && strcmp(c->hello->pub.shm_name, h->shm->name) == 0 &&
               c->arena->generation == h->shm->arena_generation && arena_current(c, &why);
    arena *fresh = NULL;
    if (!same) {
        rc = map_arena(c, h->shm, &fresh);
        if (rc) {
            kvd__v1__response__free_unpacked(resp, NULL);
            return rc;
        }
    }
    hello_box *box = NULL;
    rc = build_hello(c, resp, &box);
    if (rc) {
        kvd__v1__response__free_unpacked(resp, NULL);
        arena_unref(fresh);
        return rc;
    }
    if (fresh) {
        if (c->arena) {
            if (replaced) *replaced = 1;
            c->n_seqs = 0; /* the old daemon's sequences are gone */
        }
        arena_unref(c->arena);
        c->arena = fresh;
    }
    hello_unref(c->hello);
    c->hello = box;
    c->attached = 1;
    return KVD_OK;
}

static kvd_result reattach_after_loss(kvd_client *c, const char *why) {
    c->attached = 0;
    c->lost = 1;
    c->n_seqs = 0;
    kvd_result rc = do_hello(c, NULL);
    if (rc) {
        char *inner = strdup(c->err);
        set_err(c, rc, "kvd: the daemon at %s restarted or stopped (%s); re-attaching failed: %s",
                c->endpoint, why, inner ? inner : "?");
        free(inner);
        return rc;
    }
    c->lost = 0;
    return set_err(c, KVD_ERR_RESTARTED,
                   "kvd: the daemon at %s restarted (%s); its sequences are gone. The client has "
                   "re-attached to the new daemon: create the sequences again", c->endpoint, why);
}

/* At the start of every call that talks to the daemon: Hello if needed, detect restarts. */
static kvd_result ensure_session(kvd_client *c) {
    const char *why = NULL;
    if (c->attached && !arena_current(c, &why)) return reattach_after_loss(c, why);
    if (!c->attached) {
        kvd_result rc = do_hello(c, NULL);
        if (rc) {
            if (c->lost) {
                char *inner = strdup(c->err);
                set_err(c, rc, "kvd: the daemon at %s restarted or stopped; re-attaching "
                        "failed: %s", c->endpoint, inner ? inner : "?");
                free(inner);
            }
            return rc;
        }
        if (c->lost) {
            c->lost = 0;
            return set_err(c, KVD_ERR_RESTARTED,
                           "kvd: the daemon at %s restarted; its sequences are gone. The client "
                           "has re-attached to the new daemon: create the sequences again",
                           c->endpoint);
        }
    }
    return KVD_OK;
}

/* ---------------------------------------------------------------------------------------------- */
/* Public: connect, hello, close, free                                                            */

kvd_result kvd_client_connect(const char *endpoint, const kvd_client_options *opts,
                              kvd_client **out, char *error, size_t error_size) {
#define CONNECT_FAIL(code, ...)                                                  \
    do {                                                                         \
        if (error && error_size) snprintf(error, error_size, __VA_ARGS__);       \
        return (code);                                                           \
    } while (0)
    if (error && error_size) error[0] = '\0';
    if (!out) CONNECT_FAIL(KVD_ERR_ARGUMENT, "kvd: kvd_client_connect: out is NULL");
    *out = NULL;
    if (!endpoint || !*endpoint)
        CONNECT_FAIL(KVD_ERR_ARGUMENT, "kvd: kvd_client_connect: endpoint is NULL or empty");
    kvd_client_options o;
    memset(&o, 0, sizeof o);
    if (opts) {
        if (opts->struct_size == 0 || opts->struct_size > sizeof o)
            CONNECT_FAIL(KVD_ERR_ARGUMENT,
                         "kvd: kvd_client_connect: options.struct_size is %zu; set it to "
                         "sizeof(kvd_client_options) (%zu)", opts->struct_size, sizeof o);
        memcpy(&o, opts, opts->struct_size);
    }
    kvd_client *c = calloc(1, sizeof *c);
    if (!c) CONNECT_FAIL(KVD_ERR_SYSTEM, "kvd: out of memory");
    atomic_flag_clear(&c->busy);
    c->err_cap = 256;
    c->err = calloc(1, c->err_cap);
    c->endpoint = strdup(endpoint);
    c->client_name = strdup(o.client_name ? o.client_name : "kvd-c");
    c->timeout_ms = o.timeout_ms > 0 ? o.timeout_ms : DEFAULT_TIMEOUT_MS;
    c->proto = o.protocol_version ? o.protocol_version : KVD_PROTOCOL_VERSION;
    c->next_id = 1;
    if (!c->err || !c->endpoint || !c->client_name) {
        kvd_client_free(c);
        CONNECT_FAIL(KVD_ERR_SYSTEM, "kvd: out of memory");
    }
    c->zctx = zmq_ctx_new();
    if (!c->zctx) {
        int e = zmq_errno();
        kvd_client_free(c);
        CONNECT_FAIL(KVD_ERR_SYSTEM, "kvd: zmq_ctx_new: %s", zmq_strerror(e));
    }
    kvd_result rc = open_socket(c);
    if (rc) {
        if (error && error_size) snprintf(error, error_size, "%s", c->err);
        kvd_client_free(c);
        return rc;
    }
    *out = c;
    return KVD_OK;
#undef CONNECT_FAIL
}

kvd_result kvd_client_hello(kvd_client *c, kvd_hello_info **info) {
    kvd_result rc = enter(c, 0);
    if (rc) return rc;
    if (info) *info = NULL;
    int replaced = 0;
    rc = do_hello(c, &replaced);
    if (rc == KVD_OK) {
        c->lost = 0;
        if (info) {
            atomic_fetch_add(&c->hello->refs, 1);
            *info = &c->hello->pub;
        }
    }
    return leave(c, rc);
}

kvd_result kvd_client_close(kvd_client *c) {
    kvd_result rc = enter(c, 1);
    if (rc) return rc;
    if (c->sock) zmq_close(c->sock);
    c->sock = NULL;
    if (c->zctx) zmq_ctx_term(c->zctx);
    c->zctx = NULL;
    arena_unref(c->arena);
    c->arena = NULL;
    hello_unref(c->hello);
    c->hello = NULL;
    c->attached = 0;
    c->closed = 1;
    c->n_seqs = 0;
    return leave(c, KVD_OK);
}

void kvd_client_free(kvd_client *c) {
    if (!c) return;
    if (c->sock) zmq_close(c->sock);
    if (c->zctx) zmq_ctx_term(c->zctx);
    arena_unref(c->arena);
    hello_unref(c->hello);
    free(c->seqs);
    free(c->err);
    free(c->endpoint);
    free(c->client_name);
    free(c->stat_model);
    free(c->stat_tenant);
    free(c);
}

/* ---------------------------------------------------------------------------------------------- */
/* Sequences, stats                                                                               */

kvd_result kvd_client_create_sequence(kvd_client *c, const char *model, uint64_t sequence_id,
                                      const char *tenant, uint64_t *out_id) {
    kvd_result rc = enter(c, 0);
    if (rc) return rc;
    if (!model || !*model)
        return leave(c, set_err(c, KVD_ERR_ARGUMENT, "kvd: create_sequence: model is NULL or empty"));
    rc = ensure_session(c);
    if (rc) return leave(c, rc);
    Kvd__V1__CreateSequenceRequest cr = KVD__V1__CREATE_SEQUENCE_REQUEST__INIT;
    cr.model = (char *)model;
    cr.sequence_id = sequence_id;
    cr.tenant = (char *)(tenant ? tenant : "");
    Kvd__V1__Request req = KVD__V1__REQUEST__INIT;
    req.body_case = KVD__V1__REQUEST__BODY_CREATE_SEQUENCE;
    req.create_sequence = &cr;
    Kvd__V1__Response *resp;
    rc = rpc(c, &req, KVD__V1__RESPONSE__BODY_CREATE_SEQUENCE, &resp);
    if (rc) return leave(c, rc);
    uint64_t id = resp->create_sequence->sequence_id;
    kvd__v1__response__free_unpacked(resp, NULL);
    const kvd_model_layout *m = kvd_hello_find_model(&c->hello->pub, model);
    if (m && !seq_remember(c, id, m)) return leave(c, oom(c));
    if (out_id) *out_id = id;
    return leave(c, KVD_OK);
}

kvd_result kvd_client_release(kvd_client *c, uint64_t seq, uint32_t *pages_freed,
                              uint64_t *bytes_freed) {
    kvd_result rc = enter(c, 0);
    if (rc) return rc;
    rc = ensure_session(c);
    if (rc) return leave(c, rc);
    Kvd__V1__ReleaseRequest rr = KVD__V1__RELEASE_REQUEST__INIT;
    rr.sequence_id = seq;
    Kvd__V1__Request req = KVD__V1__REQUEST__INIT;
    req.body_case = KVD__V1__REQUEST__BODY_RELEASE;
    req.release = &rr;
    Kvd__V1__Response *resp;
    rc = rpc(c, &req, KVD__V1__RESPONSE__BODY_RELEASE, &resp);
    if (rc) return leave(c, rc);
    if (pages_freed) *pages_freed = resp->release->pages_freed;
    if (bytes_freed) *bytes_freed = resp->release->bytes_freed;
    kvd__v1__response__free_unpacked(resp, NULL);
    seq_forget(c, seq);
    return leave(c, KVD_OK);
}

static kvd_result stats_rpc(kvd_client *c, uint64_t seq, Kvd__V1__Response **resp) {
    Kvd__V1__StatsRequest sr = KVD__V1__STATS_REQUEST__INIT;
    sr.sequence_id = seq;
    Kvd__V1__Request req = KVD__V1__REQUEST__INIT;
    req.body_case = KVD__V1__REQUEST__BODY_STATS;
    req.stats = &sr;
    return rpc(c, &req, KVD__V1__RESPONSE__BODY_STATS, resp);
}

kvd_result kvd_client_stats(kvd_client *c, uint64_t seq, kvd_stats *out) {
    kvd_result rc = enter(c, 0);
    if (rc) return rc;
    if (!out) return leave(c, set_err(c, KVD_ERR_ARGUMENT, "kvd: stats: out is NULL"));
    rc = ensure_session(c);
    if (rc) return leave(c, rc);
    Kvd__V1__Response *resp;
    rc = stats_rpc(c, seq, &resp);
    if (rc) return leave(c, rc);
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
    return leave(c, KVD_OK);
}

/* The layout of a sequence: remembered from CreateSequence, else learnt with Stats. */
static kvd_result layout_of(kvd_client *c, uint64_t seq, seq_layout *out) {
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
        return set_err(c, KVD_ERR_PROTOCOL, "kvd: Stats of sequence %llu without its details",
                       (unsigned long long)seq);
    }
    const kvd_model_layout *m = kvd_hello_find_model(&c->hello->pub, resp->stats->sequence->model);
    if (!m) {
        rc = set_err(c, KVD_ERR_PROTOCOL, "kvd: sequence %llu has model \"%s\", which Hello did "
                     "not list", (unsigned long long)seq, resp->stats->sequence->model);
        kvd__v1__response__free_unpacked(resp, NULL);
        return rc;
    }
    kvd__v1__response__free_unpacked(resp, NULL);
    if (!seq_remember(c, seq, m)) return oom(c);
    *out = *seq_find(c, seq);
    return KVD_OK;
}

/* ---------------------------------------------------------------------------------------------- */
/* Appending                                                                                      */

static kvd_result check_kv_args(kvd_client *c, const char *what, kvd_dtype dtype, uint32_t layers,
                                uint32_t kv_heads, uint32_t tokens, uint32_t head_dim,
                                const void *keys, const void *values, size_t *bytes) {
    if (!keys || !values)
        return set_err(c, KVD_ERR_ARGUMENT, "kvd: %s: keys or values is NULL", what);
    size_t es = kvd_dtype_size(dtype);
    if (!es)
        return set_err(c, KVD_ERR_ARGUMENT, "kvd: %s: dtype %d is not F16, BF16 or F32", what,
                       (int)dtype);
    if (!layers || !kv_heads || !tokens || !head_dim)
        return set_err(c, KVD_ERR_ARGUMENT,
                       "kvd: %s: shape [%u, %u, %u, %u] has a zero dimension (zero tokens to "
                       "append?)", what, layers, kv_heads, tokens, head_dim);
    size_t n = es;
    if (!mul_size(&n, layers) || !mul_size(&n, kv_heads) || !mul_size(&n, tokens) ||
        !mul_size(&n, head_dim))
        return set_err(c, KVD_ERR_ARGUMENT, "kvd: %s: tensor size overflows", what);
    *bytes = n;
    return KVD_OK;
}

kvd_result kvd_client_append(kvd_client *c, uint64_t seq, kvd_dtype dtype, uint32_t layers,
                             uint32_t kv_heads, uint32_t tokens, uint32_t head_dim,
                             const void *keys, const void *values, kvd_append_result *out) {
    kvd_result rc = enter(c, 0);
    if (rc) return rc;
    size_t bytes;
    rc = check_kv_args(c, "append", dtype, layers, kv_heads, tokens, head_dim, keys, values, &bytes);
    if (rc) return leave(c, rc);
    rc = ensure_session(c);
    if (rc) return leave(c, rc);
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
    Kvd__V1__Request req = KVD__V1__REQUEST__INIT;
    req.body_case = KVD__V1__REQUEST__BODY_APPEND;
    req.append = &ar;
    Kvd__V1__Response *resp;
    rc = rpc(c, &req, KVD__V1__RESPONSE__BODY_APPEND, &resp);
    if (rc) return leave(c, rc);
    if (out) {
        out->length = resp->append->length;
        out->first_position = resp->append->first_position;
        out->generation = resp->append->generation;
    }
    kvd__v1__response__free_unpacked(resp, NULL);
    return leave(c, KVD_OK);
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
    arena_unref(b->a);
    free(b->heads);
    free(b->ids);
    free(b);
}

static kvd_result commit_rpc(kvd_client *c, uint64_t seq, uint64_t rid, uint32_t n, int abort_,
                             kvd_append_result *out) {
    Kvd__V1__CommitRequest cr = KVD__V1__COMMIT_REQUEST__INIT;
    cr.sequence_id = seq;
    cr.reservation_id = rid;
    cr.num_tokens = n;
    cr.abort = abort_ ? 1 : 0;
    Kvd__V1__Request req = KVD__V1__REQUEST__INIT;
    req.body_case = KVD__V1__REQUEST__BODY_COMMIT;
    req.commit = &cr;
    Kvd__V1__Response *resp;
    kvd_result rc = rpc(c, &req, KVD__V1__RESPONSE__BODY_COMMIT, &resp);
    if (rc) return rc;
    if (out) {
        out->length = resp->commit->length;
        out->first_position = resp->commit->first_position;
        out->generation = resp->commit->generation;
    }
    kvd__v1__response__free_unpacked(resp, NULL);
    return KVD_OK;
}

/* Reserve with the session established; on a malformed reply the reservation is aborted. */
static kvd_result reserve_locked(kvd_client *c, uint64_t seq, uint32_t n, kvd_reservation **out) {
    seq_layout L;
    kvd_result rc = layout_of(c, seq, &L);
    if (rc) return rc;
    Kvd__V1__ReserveRequest rr = KVD__V1__RESERVE_REQUEST__INIT;
    rr.sequence_id = seq;
    rr.num_tokens = n;
    Kvd__V1__Request req = KVD__V1__REQUEST__INIT;
    req.body_case = KVD__V1__REQUEST__BODY_RESERVE;
    req.reserve = &rr;
    Kvd__V1__Response *resp;
    rc = rpc(c, &req, KVD__V1__RESPONSE__BODY_RESERVE, &resp);
    if (rc) return rc;
    Kvd__V1__ReserveResponse *r = resp->reserve;
    arena *a = c->arena;
    size_t heads = (size_t)L.layers * L.kv_heads;
    size_t es = kvd_dtype_size(L.dtype);
    uint64_t token_bytes = (uint64_t)L.head_dim * es;
    uint32_t P = r->page_tokens;
    res_box *b = calloc(1, sizeof *b);
    size_t total_ids = 0;
    const char *bad = NULL;
    if (!b) {
        rc = oom(c);
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
            rc = oom(c);
            goto abort_it;
        }
    }
    size_t at = 0;
    for (size_t h = 0; !bad && h < r->n_heads; h++) {
        Kvd__V1__HeadSlots *hs = r->heads[h];
        if (hs->layer >= L.layers || hs->head >= L.kv_heads) { bad = "head outside the model"; break; }
        kvd_reservation_head *dst = &b->heads[(size_t)hs->layer * L.kv_heads + hs->head];
        if (dst->page_ids) { bad = "a head appears twice"; break; }
        uint32_t np = (uint32_t)(hs->page_ids.len / 4);
        if (hs->first_slot >= P || np != pages_needed(hs->first_slot, n, P)) {
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
        rc = set_err(c, KVD_ERR_PROTOCOL, "kvd: malformed Reserve reply for sequence %llu: %s",
                     (unsigned long long)seq, bad);
        goto abort_it;
    }
    b->a = arena_ref(a);
    b->pub = (kvd_reservation){seq, r->reservation_id, n, P, L.layers, L.kv_heads, L.head_dim,
                               L.dtype, heads, b->heads, b};
    kvd__v1__response__free_unpacked(resp, NULL);
    *out = &b->pub;
    return KVD_OK;
abort_it: {
        uint64_t rid = r->reservation_id;
        kvd__v1__response__free_unpacked(resp, NULL);
        if (b) {
            free(b->heads);
            free(b->ids);
            free(b);
        }
        char *keep = strdup(c->err);
        commit_rpc(c, seq, rid, 0, 1, NULL);
        if (keep) {
            set_err(c, rc, "%s", keep);
            free(keep);
        }
        return rc;
    }
}

kvd_result kvd_client_reserve(kvd_client *c, uint64_t seq, uint32_t n, kvd_reservation **out) {
    kvd_result rc = enter(c, 0);
    if (rc) return rc;
    if (!out) return leave(c, set_err(c, KVD_ERR_ARGUMENT, "kvd: reserve: out is NULL"));
    *out = NULL;
    if (!n) return leave(c, set_err(c, KVD_ERR_ARGUMENT, "kvd: reserve: zero tokens"));
    rc = ensure_session(c);
    if (rc) return leave(c, rc);
    return leave(c, reserve_locked(c, seq, n, out));
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

kvd_result kvd_reservation_write(const kvd_reservation *r, const void *keys, const void *values,
                                 size_t bytes) {
    if (!r || !keys || !values) return KVD_ERR_ARGUMENT;
    size_t tb = (size_t)r->head_dim * kvd_dtype_size(r->dtype);
    size_t per_head = tb * r->num_tokens;
    if (bytes < per_head * r->num_heads) return KVD_ERR_BUFFER_TOO_SMALL;
    const uint8_t *ks = keys, *vs = values;
    for (size_t h = 0; h < r->num_heads; h++) {
        uint32_t t = 0;
        while (t < r->num_tokens) {
            uint32_t slot = (uint32_t)(((uint64_t)r->heads[h].first_slot + t) % r->page_tokens);
            uint32_t run = r->page_tokens - slot;
            if (run > r->num_tokens - t) run = r->num_tokens - t;
            memcpy(slot_ptr(r, h, t, 0), ks + h * per_head + (size_t)t * tb, (size_t)run * tb);
            memcpy(slot_ptr(r, h, t, 1), vs + h * per_head + (size_t)t * tb, (size_t)run * tb);
            t += run;
        }
    }
    return KVD_OK;
}

kvd_result kvd_client_commit(kvd_client *c, const kvd_reservation *r, uint32_t n,
                             kvd_append_result *out) {
    kvd_result rc = enter(c, 0);
    if (rc) return rc;
    if (!r) return leave(c, set_err(c, KVD_ERR_ARGUMENT, "kvd: commit: reservation is NULL"));
    rc = ensure_session(c);
    if (rc) return leave(c, rc);
    return leave(c, commit_rpc(c, r->sequence_id, r->reservation_id, n ? n : r->num_tokens, 0, out));
}

kvd_result kvd_client_abort(kvd_client *c, const kvd_reservation *r) {
    kvd_result rc = enter(c, 0);
    if (rc) return rc;
    if (!r) return leave(c, set_err(c, KVD_ERR_ARGUMENT, "kvd: abort: reservation is NULL"));
    rc = ensure_session(c);
    if (rc) return leave(c, rc);
    return leave(c, commit_rpc(c, r->sequence_id, r->reservation_id, 0, 1, NULL));
}

kvd_result kvd_client_append_zero_copy(kvd_client *c, uint64_t seq, kvd_dtype dtype,
                                       uint32_t layers, uint32_t kv_heads, uint32_t tokens,
                                       uint32_t head_dim, const void *keys, const void *values,
                                       kvd_append_result *out) {
    kvd_result rc = enter(c, 0);
    if (rc) return rc;
    size_t bytes;
    rc = check_kv_args(c, "append_zero_copy", dtype, layers, kv_heads, tokens, head_dim, keys,
                       values, &bytes);
    if (rc) return leave(c, rc);
    rc = ensure_session(c);
    if (rc) return leave(c, rc);
    seq_layout L;
    rc = layout_of(c, seq, &L);
    if (rc) return leave(c, rc);
    if (L.layers != layers || L.kv_heads != kv_heads || L.head_dim != head_dim || L.dtype != dtype)
        return leave(c, set_err(c, KVD_ERR_ARGUMENT,
                                "kvd: append_zero_copy: sequence %llu's model needs [%u, %u, "
                                "tokens, %u] of dtype %d; got [%u, %u, %u, %u] of dtype %d",
                                (unsigned long long)seq, L.layers, L.kv_heads, L.head_dim,
                                (int)L.dtype, layers, kv_heads, tokens, head_dim, (int)dtype));
    kvd_reservation *r;
    rc = reserve_locked(c, seq, tokens, &r);
    if (rc) return leave(c, rc);
    rc = kvd_reservation_write(r, keys, values, bytes);
    if (rc) {
        set_err(c, rc, "kvd: append_zero_copy: writing the reservation failed");
        char *keep = strdup(c->err);
        commit_rpc(c, seq, r->reservation_id, 0, 1, NULL);
        if (keep) { set_err(c, rc, "%s", keep); free(keep); }
        kvd_reservation_free(r);
        return leave(c, rc);
    }
    rc = commit_rpc(c, seq, r->reservation_id, tokens, 0, out);
    kvd_reservation_free(r);
    return leave(c, rc);
}

/* ---------------------------------------------------------------------------------------------- */
/* Query                                                                                          */

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
    arena_unref(b->a);
    free(b->heads);
    free(b->positions);
    free(b->log_weights);
    free(b->ids);
    free(b->ptrs);
    free(b);
}

static int in_range(const arena *a, uint64_t off, uint64_t len) {
    return off <= a->size && len <= a->size - off;
}

kvd_result kvd_client_query(kvd_client *c, uint64_t seq, kvd_query_mode mode,
                            const uint32_t *layers, size_t n_layers, kvd_query_result **out) {
    kvd_result rc = enter(c, 0);
    if (rc) return rc;
    if (!out) return leave(c, set_err(c, KVD_ERR_ARGUMENT, "kvd: query: out is NULL"));
    *out = NULL;
    if (mode < KVD_QUERY_PAGES || mode > KVD_QUERY_METADATA)
        return leave(c, set_err(c, KVD_ERR_ARGUMENT, "kvd: query: unknown mode %d", (int)mode));
    if (n_layers && !layers)
        return leave(c, set_err(c, KVD_ERR_ARGUMENT, "kvd: query: layers is NULL, n_layers %zu",
                                n_layers));
    rc = ensure_session(c);
    if (rc) return leave(c, rc);
    Kvd__V1__QueryRequest qr = KVD__V1__QUERY_REQUEST__INIT;
    qr.sequence_id = seq;
    qr.mode = (Kvd__V1__QueryMode)mode;
    qr.n_layers = n_layers;
    qr.layers = (uint32_t *)layers;
    Kvd__V1__Request req = KVD__V1__REQUEST__INIT;
    req.body_case = KVD__V1__REQUEST__BODY_QUERY;
    req.query = &qr;
    Kvd__V1__Response *resp;
    rc = rpc(c, &req, KVD__V1__RESPONSE__BODY_QUERY, &resp);
    if (rc) return leave(c, rc);
    Kvd__V1__QueryResponse *q = resp->query;
    arena *a = c->arena;
    query_box *b = calloc(1, sizeof *b);
    if (!b) {
        kvd__v1__response__free_unpacked(resp, NULL);
        return leave(c, oom(c));
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
        if (hv->positions.len != 4 * n || hv->log_weights.len != 4 * n)
            bad = "positions / log-weights do not match num_tokens";
        total_tokens += n;
        if (mode == KVD_QUERY_PAGES) {
            if (hv->page_ids.len != 4 * pages_needed(0, n, P)) bad = "page_ids do not match num_tokens";
            total_pages += hv->page_ids.len / 4;
        } else if (mode == KVD_QUERY_INLINE) {
            if (hv->keys.len != n * tb || hv->values.len != n * tb) bad = "inline K/V size";
        } else if (mode == KVD_QUERY_GATHER) {
            if (n && (!in_range(a, hv->gather_key_offset, n * tb) ||
                      !in_range(a, hv->gather_value_offset, n * tb)))
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
            return leave(c, oom(c));
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
        memcpy(b->log_weights + tok, hv->log_weights.data, (size_t)n * 4);
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
        rc = set_err(c, KVD_ERR_PROTOCOL, "kvd: malformed Query reply for sequence %llu: %s",
                     (unsigned long long)seq, bad);
        kvd_query_result_free(&b->pub);
        return leave(c, rc);
    }
    if (mode == KVD_QUERY_PAGES || mode == KVD_QUERY_GATHER) b->a = arena_ref(a);
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
    return leave(c, KVD_OK);
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

/* ---------------------------------------------------------------------------------------------- */
/* Compaction, staging                                                                            */

static kvd_result stage_rpc(kvd_client *c, uint64_t seq, uint64_t bytes, uint64_t *offset,
                            uint64_t *size) {
    Kvd__V1__StageRequest sr = KVD__V1__STAGE_REQUEST__INIT;
    sr.sequence_id = seq;
    sr.bytes = bytes;
    Kvd__V1__Request req = KVD__V1__REQUEST__INIT;
    req.body_case = KVD__V1__REQUEST__BODY_STAGE;
    req.stage = &sr;
    Kvd__V1__Response *resp;
    kvd_result rc = rpc(c, &req, KVD__V1__RESPONSE__BODY_STAGE, &resp);
    if (rc) return rc;
    *offset = resp->stage->offset;
    *size = resp->stage->bytes;
    kvd__v1__response__free_unpacked(resp, NULL);
    if (*size < bytes || !in_range(c->arena, *offset, *size))
        return set_err(c, KVD_ERR_PROTOCOL, "kvd: Stage returned a buffer outside the arena");
    return KVD_OK;
}

kvd_result kvd_client_stage(kvd_client *c, uint64_t seq, uint64_t bytes, void **ptr,
                            uint64_t *offset, uint64_t *size) {
    kvd_result rc = enter(c, 0);
    if (rc) return rc;
    rc = ensure_session(c);
    if (rc) return leave(c, rc);
    uint64_t off, sz;
    rc = stage_rpc(c, seq, bytes, &off, &sz);
    if (rc) return leave(c, rc);
    if (ptr) *ptr = c->arena->base + off;
    if (offset) *offset = off;
    if (size) *size = sz;
    return leave(c, KVD_OK);
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
    kvd_result rc = enter(c, 0);
    if (rc) return rc;
    if (out) *out = NULL;
    kvd_compact_options o;
    memset(&o, 0, sizeof o);
    if (opts) {
        if (opts->struct_size == 0 || opts->struct_size > sizeof o)
            return leave(c, set_err(c, KVD_ERR_ARGUMENT,
                                    "kvd: compact: options.struct_size is %zu; set it to "
                                    "sizeof(kvd_compact_options) (%zu)", opts->struct_size,
                                    sizeof o));
        memcpy(&o, opts, opts->struct_size);
    }
    if (o.num_params && !o.params)
        return leave(c, set_err(c, KVD_ERR_ARGUMENT, "kvd: compact: params is NULL, num_params %zu",
                                o.num_params));
    for (size_t i = 0; i < o.num_params; i++) {
        const kvd_param *p = &o.params[i];
        if (!p->name || !*p->name)
            return leave(c, set_err(c, KVD_ERR_ARGUMENT, "kvd: compact: parameter %zu has no name", i));
        if (p->type < KVD_PARAM_INT || p->type > KVD_PARAM_BOOL ||
            (p->type == KVD_PARAM_STRING && !p->value.s))
            return leave(c, set_err(c, KVD_ERR_ARGUMENT,
                                    "kvd: compact: parameter %s has a bad type or a NULL string",
                                    p->name));
    }
    size_t qbytes = 0;
    if (o.queries) {
        size_t es = kvd_dtype_size(o.queries_dtype);
        qbytes = es;
        if (!es)
            return leave(c, set_err(c, KVD_ERR_ARGUMENT,
                                    "kvd: compact: queries_dtype %d is not F16, BF16 or F32",
                                    (int)o.queries_dtype));
        for (int d = 0; d < 4; d++)
            if (!o.queries_shape[d] || !mul_size(&qbytes, o.queries_shape[d]))
                return leave(c, set_err(c, KVD_ERR_ARGUMENT,
                                        "kvd: compact: queries_shape [%u, %u, %u, %u] has a zero "
                                        "dimension or overflows", o.queries_shape[0],
                                        o.queries_shape[1], o.queries_shape[2], o.queries_shape[3]));
    }
    rc = ensure_session(c);
    if (rc) return leave(c, rc);

    Kvd__V1__Param *params = calloc(o.num_params + 1, sizeof *params);
    Kvd__V1__Param **pp = calloc(o.num_params + 1, sizeof *pp);
    if (!params || !pp) {
        free(params);
        free(pp);
        return leave(c, oom(c));
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
            return leave(c, rc);
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
    rc = rpc(c, &req, KVD__V1__RESPONSE__BODY_COMPACT, &resp);
    free(params);
    free(pp);
    if (rc) return leave(c, rc);
    if (!out) {
        kvd__v1__response__free_unpacked(resp, NULL);
        return leave(c, KVD_OK);
    }
    Kvd__V1__CompactResponse *r = resp->compact;
    compact_box *b = calloc(1, sizeof *b);
    kvd_head_count *heads = calloc(r->n_heads + 1, sizeof *heads);
    if (!b || !heads) {
        free(b);
        free(heads);
        kvd__v1__response__free_unpacked(resp, NULL);
        return leave(c, oom(c));
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
    return leave(c, KVD_OK);
}
