/* libkvdclient errors: result code names, the per-client last error, enter/leave of calls. */
#include "internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    case KVD_ERR_EVICTED: return "KVD_ERR_EVICTED";
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

kvd_result kvd__set_err(kvd_client *c, kvd_result code, const char *fmt, ...) {
    va_list ap;
    if (c->ka_active) { /* the keep-alive thread: never the caller's last error */
        c->ka_last = code;
        va_start(ap, fmt);
        vsnprintf(c->ka_err, sizeof c->ka_err, fmt, ap);
        va_end(ap);
        return code;
    }
    c->last = code;
    c->last_server_code = 0;
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

kvd_result kvd__oom(kvd_client *c) {
    return kvd__set_err(c, KVD_ERR_SYSTEM, "kvd: out of memory");
}

/* Every public call on a client starts with kvd__enter() and ends with kvd__leave(). `busy`
 * refuses a second caller thread at once (KVD_ERR_BUSY); `io` then waits for a KeepAlive of the
 * client's own thread that may be in flight. */
kvd_result kvd__enter(kvd_client *c, int allow_closed) {
    if (!c) return KVD_ERR_ARGUMENT;
    if (atomic_flag_test_and_set(&c->busy)) return KVD_ERR_BUSY;
    pthread_mutex_lock(&c->io);
    c->last = KVD_OK;
    c->last_server_code = 0;
    c->err[0] = '\0';
    if (c->closed && !allow_closed) {
        kvd__set_err(c, KVD_ERR_CLOSED, "kvd: the client is closed (kvd_client_close was called)");
        pthread_mutex_unlock(&c->io);
        atomic_flag_clear(&c->busy);
        return KVD_ERR_CLOSED;
    }
    return KVD_OK;
}

kvd_result kvd__leave(kvd_client *c, kvd_result rc) {
    if (rc == KVD_OK) {
        c->last = KVD_OK;
        c->last_server_code = 0;
        c->err[0] = '\0';
    } else {
        c->last = rc;
    }
    pthread_mutex_unlock(&c->io);
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
