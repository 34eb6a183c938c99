/* libkvdclient leases: kvd_client_keep_alive and the thread that renews an idle client's lease. */
#include "internal.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* How long the thread sleeps before looking again while the daemon runs without leases (a Hello
 * after a restart may bring them back). */
#define NO_LEASE_RECHECK_MS 1000

int kvd__keepalive_init(kvd_client *c) {
    pthread_condattr_t attr;
    if (pthread_mutex_init(&c->io, NULL) != 0) return 0;
    if (pthread_mutex_init(&c->ka_mu, NULL) != 0) {
        pthread_mutex_destroy(&c->io);
        return 0;
    }
    /* A monotonic clock for the sleeps: wall-clock jumps must not delay or hurry renewals. */
    int ok = pthread_condattr_init(&attr) == 0;
    if (ok) {
        ok = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC) == 0 &&
             pthread_cond_init(&c->ka_cv, &attr) == 0;
        pthread_condattr_destroy(&attr);
    }
    if (!ok) {
        pthread_mutex_destroy(&c->ka_mu);
        pthread_mutex_destroy(&c->io);
        return 0;
    }
    atomic_init(&c->ka_stop, 0);
    atomic_init(&c->last_send_ms, 0);
    return 1;
}

void kvd__keepalive_destroy(kvd_client *c) {
    pthread_cond_destroy(&c->ka_cv);
    pthread_mutex_destroy(&c->ka_mu);
    pthread_mutex_destroy(&c->io);
}

/* Sleep on ka_cv (ka_mu held) until CLOCK_MONOTONIC ms `until`, a signal, or a spurious wake-up;
 * the caller's loop looks at the state again either way. */
static void sleep_until(kvd_client *c, int64_t until) {
    struct timespec ts = {(time_t)(until / 1000), (long)(until % 1000) * 1000000L};
    pthread_cond_timedwait(&c->ka_cv, &c->ka_mu, &ts);
}

/* One KeepAlive, unless a call is in flight (it renews the lease itself) or there is nothing to
 * renew (not attached, closed, or the daemon restarted: the caller's next call re-attaches and
 * reports it). Errors stay in ka_err; the next renewal tries again. */
static void keepalive_once(kvd_client *c) {
    if (pthread_mutex_trylock(&c->io) != 0) return;
    const char *why = NULL;
    if (!c->closed && c->sock && c->attached && kvd__arena_current(c, &why)) {
        c->ka_active = 1;
        Kvd__V1__KeepAliveRequest kr = KVD__V1__KEEP_ALIVE_REQUEST__INIT;
        Kvd__V1__Request req = KVD__V1__REQUEST__INIT;
        req.body_case = KVD__V1__REQUEST__BODY_KEEP_ALIVE;
        req.keep_alive = &kr;
        Kvd__V1__Response *resp = NULL;
        c->ka_last = kvd__rpc(c, &req, KVD__V1__RESPONSE__BODY_KEEP_ALIVE, &resp);
        if (c->ka_last == KVD_OK) c->ka_err[0] = '\0';
        if (resp) kvd__v1__response__free_unpacked(resp, NULL);
        c->ka_active = 0;
    }
    pthread_mutex_unlock(&c->io);
}

static void *keepalive_main(void *arg) {
    kvd_client *c = arg;
    pthread_mutex_lock(&c->ka_mu);
    while (!atomic_load(&c->ka_stop)) {
        int64_t interval = c->ka_interval_ms, now = kvd__now_ms();
        if (interval <= 0) {
            sleep_until(c, now + NO_LEASE_RECHECK_MS);
            continue;
        }
        int64_t due = (int64_t)atomic_load(&c->last_send_ms) + interval;
        if (now < due) {
            sleep_until(c, due);
            continue;
        }
        pthread_mutex_unlock(&c->ka_mu);
        keepalive_once(c);
        pthread_mutex_lock(&c->ka_mu);
        /* Whatever happened (sent, a call was in flight, nothing to renew, failed), wait a whole
         * interval before looking again: never spin. */
        if (!atomic_load(&c->ka_stop)) sleep_until(c, kvd__now_ms() + interval);
    }
    pthread_mutex_unlock(&c->ka_mu);
    return NULL;
}

kvd_result kvd__keepalive_follow(kvd_client *c, uint64_t lease_ms) {
    pthread_mutex_lock(&c->ka_mu);
    c->ka_interval_ms = (int64_t)(lease_ms / 3);
    if (lease_ms > 0 && lease_ms / 3 == 0) c->ka_interval_ms = 1;
    pthread_cond_signal(&c->ka_cv); /* a new interval: the thread recomputes its wake-up */
    int start = c->keepalive && !c->ka_started && lease_ms > 0 && !atomic_load(&c->ka_stop);
    int err = 0;
    if (start) {
        /* Block every signal in the thread: the program's handlers run on its own threads. */
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        err = pthread_create(&c->ka_thread, NULL, keepalive_main, c);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (err == 0) c->ka_started = 1;
    }
    pthread_mutex_unlock(&c->ka_mu);
    if (err)
        return kvd__set_err(c, KVD_ERR_SYSTEM, "kvd: cannot start the keep-alive thread: %s",
                            strerror(err));
    return KVD_OK;
}

void kvd__keepalive_request_stop(kvd_client *c) {
    pthread_mutex_lock(&c->ka_mu);
    atomic_store(&c->ka_stop, 1);
    pthread_cond_signal(&c->ka_cv);
    pthread_mutex_unlock(&c->ka_mu);
}

void kvd__keepalive_stop(kvd_client *c) {
    kvd__keepalive_request_stop(c);
    if (c->ka_started) {
        pthread_join(c->ka_thread, NULL);
        c->ka_started = 0;
    }
}

kvd_result kvd_client_keep_alive(kvd_client *c, const uint64_t *adopt, size_t n_adopt,
                                 kvd_keep_alive_result *out) {
    kvd_result rc = kvd__enter(c, 0);
    if (rc) return rc;
    if (n_adopt && !adopt)
        return kvd__leave(c, kvd__set_err(c, KVD_ERR_ARGUMENT,
                                          "kvd: keep_alive: adopt is NULL but n_adopt is %zu",
                                          n_adopt));
    rc = kvd__ensure_session(c);
    if (rc) return kvd__leave(c, rc);
    Kvd__V1__KeepAliveRequest kr = KVD__V1__KEEP_ALIVE_REQUEST__INIT;
    kr.n_sequence_ids = n_adopt;
    kr.sequence_ids = (uint64_t *)adopt; /* protobuf-c only reads it while packing */
    Kvd__V1__Request req = KVD__V1__REQUEST__INIT;
    req.body_case = KVD__V1__REQUEST__BODY_KEEP_ALIVE;
    req.keep_alive = &kr;
    Kvd__V1__Response *resp;
    rc = kvd__rpc(c, &req, KVD__V1__RESPONSE__BODY_KEEP_ALIVE, &resp);
    if (rc) return kvd__leave(c, rc);
    Kvd__V1__KeepAliveResponse *k = resp->keep_alive;
    if (k->n_missing > c->missing_cap) {
        uint64_t *grown = realloc(c->missing, k->n_missing * sizeof *grown);
        if (!grown) {
            kvd__v1__response__free_unpacked(resp, NULL);
            return kvd__leave(c, kvd__oom(c));
        }
        c->missing = grown;
        c->missing_cap = k->n_missing;
    }
    if (k->n_missing) memcpy(c->missing, k->missing, k->n_missing * sizeof *c->missing);
    if (out) {
        out->lease_ms = k->lease_ms;
        out->adopted = k->adopted;
        out->num_missing = k->n_missing;
        out->missing = c->missing;
    }
    kvd__v1__response__free_unpacked(resp, NULL);
    return kvd__leave(c, KVD_OK);
}
