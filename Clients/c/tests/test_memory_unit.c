/*
 * libkvdclient's lease, pin, event and prefix-reuse wire support, without a daemon: a fake kvd
 * (tests/fake_kvd.h) and a fake PUB socket. `make -C Clients/c unit` runs it.
 *
 *   test_memory_unit     every case below; "ok - name" / "FAIL - name", then "N passed, M failed"
 *
 * Covers: KeepAlive and Pin bytes on the wire, the EVICTED code, create-pinned, the keep-alive
 * thread (renews an idle client every lease/3, never interleaves with calls, keeps its errors to
 * itself, stops promptly on close), event decoding (fields, topics, bad messages), and the
 * memory-manager figures (kvd_client_memory_stats, kvd_client_sequence_lease: Stats bytes, every
 * field, a shorter struct_size, bad arguments, replies without the figures); prefix reuse on the
 * wire (Lookup, Fork, adopting CreateSequence and Append with token ids: uint32 little-endian
 * bytes, results, refusals before anything is sent, inconsistent replies) and
 * kvd_client_prefix_stats (every field, a shorter struct_size, a reply without the figures);
 * the remote tier (Restore bytes and every result field, refusals before anything is sent, a reply
 * for another sequence, which restored sequences a rejoin takes back; kvd_client_remote_stats as
 * kvd_client_prefix_stats);
 * rejoining a restarted daemon that kept its segment (instance_id: Hello again, the created
 * sequences adopted, a not-bound refusal sent again once; from the keep-alive thread too) and a
 * restart with a new segment still reported as KVD_ERR_RESTARTED.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <zmq.h>

#include "fake_kvd.h"
#include "harness.h"
#include "kvd/v1/memory.pb-c.h"
#include "kvd_client.h"

static kvd_client *connect_fake(const fake_kvd *f, int keepalive, int timeout_ms) {
    kvd_client_options o;
    memset(&o, 0, sizeof o);
    o.struct_size = sizeof o;
    o.timeout_ms = timeout_ms;
    o.disable_keepalive = !keepalive;
    kvd_client *c = NULL;
    char err[256];
    if (kvd_client_connect(f->endpoint, &o, &c, err, sizeof err) != KVD_OK)
        printf("    connect: %s\n", err);
    return c;
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* The fake's last recorded request bytes, after the request id: the id is the client's business. */
static int raw_after_id(fake_kvd *f, int keepalive, uint8_t *out, size_t *n) {
    pthread_mutex_lock(&f->mu);
    const uint8_t *raw = keepalive ? f->keepalive_raw : f->last_raw;
    size_t len = keepalive ? f->keepalive_raw_len : f->last_raw_len;
    int ok = len > 2 && raw[0] == 0x08 && raw[1] < 0x80; /* field 1 (request_id), one byte */
    if (ok) {
        *n = len - 2;
        memcpy(out, raw + 2, *n);
    }
    pthread_mutex_unlock(&f->mu);
    return ok;
}

static int bytes_equal(const uint8_t *got, size_t n, const uint8_t *want, size_t m) {
    if (n == m && memcmp(got, want, n) == 0) return 1;
    printf("    got ");
    for (size_t i = 0; i < n; i++) printf("%02x ", got[i]);
    printf("\n    want ");
    for (size_t i = 0; i < m; i++) printf("%02x ", want[i]);
    printf("\n");
    return 0;
}

/* ============================================================================================= */

static void test_names(void) {
    CHECK(strcmp(kvd_result_name(KVD_ERR_EVICTED), "KVD_ERR_EVICTED") == 0 && KVD_ERR_EVICTED == 10,
          "EVICTED is code 10");
    CHECK(KVD_ERR_EVICTED == (int)KVD__V1__ERROR_CODE__ERROR_CODE_EVICTED, "matches kvd.v1");
    CHECK(strcmp(kvd_event_kind_name(KVD_EVENT_ORPHAN_RELEASED), "KVD_EVENT_ORPHAN_RELEASED") == 0 &&
          strcmp(kvd_event_kind_name((kvd_event_kind)42), "KVD_EVENT_?") == 0, "kind names");
    CHECK(KVD_EVENT_COMPACTED == (int)KVD__V1__EVENT__KIND__KIND_COMPACTED &&
          KVD_EVENT_EVICTED == (int)KVD__V1__EVENT__KIND__KIND_EVICTED &&
          KVD_EVENT_LEASE_EXPIRED == (int)KVD__V1__EVENT__KIND__KIND_LEASE_EXPIRED &&
          KVD_EVENT_RESERVATION_ABORTED == (int)KVD__V1__EVENT__KIND__KIND_RESERVATION_ABORTED &&
          KVD_EVENT_ORPHAN_RELEASED == (int)KVD__V1__EVENT__KIND__KIND_ORPHAN_RELEASED,
          "kinds match kvd.v1.Event.Kind");
}

/* A daemon error 10 is KVD_ERR_EVICTED with the daemon's message; 11 is still "newer". */
static void test_evicted_error(void) {
    fake_kvd f = {0};
    f.stats_error = 10;
    REQUIRE(fake_start(&f, "evicted"), "fake");
    kvd_client *c = connect_fake(&f, 0, 2000);
    kvd_stats st;
    CHECK_RC(c, kvd_client_stats(c, 5, &st), KVD_ERR_EVICTED);
    CHECK(kvd_client_last_server_code(c) == 10, "server code %d", kvd_client_last_server_code(c));
    CHECK(strstr(kvd_client_last_error(c), "lease expired") != NULL, "%s", kvd_client_last_error(c));
    pthread_mutex_lock(&f.mu); /* the fake's thread reads it under mu */
    f.stats_error = 11;
    pthread_mutex_unlock(&f.mu);
    CHECK_RC(c, kvd_client_stats(c, 5, &st), KVD_ERR_SERVER_OTHER);
    CHECK(strstr(kvd_client_last_error(c), "code 11") != NULL, "%s", kvd_client_last_error(c));
    kvd_client_free(c);
    fake_stop(&f);
}

/* KeepAlive{sequence_ids} and Pin{sequence_id, pinned} exactly as protobuf encodes them. */
static void test_keep_alive_and_pin_bytes(void) {
    fake_kvd f = {0};
    f.lease_ms = 30000;
    REQUIRE(fake_start(&f, "bytes"), "fake");
    kvd_client *c = connect_fake(&f, 0, 2000);
    uint8_t raw[1024];
    size_t n = 0;

    uint64_t adopt[2] = {5, (uint64_t)1 << 63};
    kvd_keep_alive_result r;
    memset(&r, 0xab, sizeof r);
    CHECK_RC(c, kvd_client_keep_alive(c, adopt, 2, &r), KVD_OK);
    /* protocol_version = 1; keep_alive (21) { sequence_ids (1, packed): 5, 2^63 } */
    static const uint8_t want_ka[] = {0x10, 0x01, 0xaa, 0x01, 0x0d, 0x0a, 0x0b, 0x05, 0x80, 0x80,
                                      0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01};
    CHECK(raw_after_id(&f, 1, raw, &n) && bytes_equal(raw, n, want_ka, sizeof want_ka),
          "KeepAlive bytes");
    CHECK(r.lease_ms == 30000 && r.adopted == 1 && r.num_missing == 1 &&
          r.missing[0] == (uint64_t)1 << 63, "result: lease %llu adopted %u missing %zu",
          (unsigned long long)r.lease_ms, r.adopted, r.num_missing);

    CHECK_RC(c, kvd_client_keep_alive(c, NULL, 0, &r), KVD_OK);
    static const uint8_t want_empty[] = {0x10, 0x01, 0xaa, 0x01, 0x00};
    CHECK(raw_after_id(&f, 1, raw, &n) && bytes_equal(raw, n, want_empty, sizeof want_empty),
          "empty KeepAlive bytes");
    CHECK(r.num_missing == 0 && r.adopted == 0, "nothing adopted");
    CHECK_RC(c, kvd_client_keep_alive(c, NULL, 0, NULL), KVD_OK);
    CHECK_RC(c, kvd_client_keep_alive(c, NULL, 3, &r), KVD_ERR_ARGUMENT);

    int pinned = -1;
    uint32_t pages = 99;
    CHECK_RC(c, kvd_client_pin(c, 7, 1, &pinned, &pages), KVD_OK);
    static const uint8_t want_pin[] = {0x10, 0x01, 0xb2, 0x01, 0x04, 0x08, 0x07, 0x10, 0x01};
    CHECK(raw_after_id(&f, 0, raw, &n) && bytes_equal(raw, n, want_pin, sizeof want_pin), "Pin bytes");
    CHECK(pinned == 1 && pages == 3, "pinned %d pages %u", pinned, pages);
    CHECK_RC(c, kvd_client_pin(c, 7, 0, &pinned, &pages), KVD_OK);
    static const uint8_t want_unpin[] = {0x10, 0x01, 0xb2, 0x01, 0x02, 0x08, 0x07};
    CHECK(raw_after_id(&f, 0, raw, &n) && bytes_equal(raw, n, want_unpin, sizeof want_unpin),
          "unpin bytes");
    CHECK(pinned == 0 && pages == 0, "unpinned %d pages %u", pinned, pages);
    CHECK_RC(c, kvd_client_pin(c, 7, 1, NULL, NULL), KVD_OK);
    kvd_client_free(c);
    fake_stop(&f);
}

/* create_sequence_ex carries `pinned`; the plain call does not pin; a bad struct_size is refused. */
static void test_create_pinned(void) {
    fake_kvd f = {0};
    REQUIRE(fake_start(&f, "create"), "fake");
    kvd_client *c = connect_fake(&f, 0, 2000);
    kvd_sequence_options o;
    memset(&o, 0, sizeof o);
    o.struct_size = sizeof o;
    o.sequence_id = 9;
    o.pinned = 1;
    uint64_t id = 0;
    CHECK_RC(c, kvd_client_create_sequence_ex(c, "m", &o, &id), KVD_OK);
    CHECK(id == 9 && fake_count(&f, &f.last_create_pinned) == 1, "pinned create: id %llu",
          (unsigned long long)id);
    CHECK_RC(c, kvd_client_create_sequence(c, "m", 0, NULL, &id), KVD_OK);
    CHECK(id == 77 && fake_count(&f, &f.last_create_pinned) == 0, "plain create is not pinned");
    CHECK_RC(c, kvd_client_create_sequence_ex(c, "m", NULL, &id), KVD_OK);
    CHECK(fake_count(&f, &f.last_create_pinned) == 0, "NULL options: not pinned");
    o.struct_size = 0;
    CHECK_RC(c, kvd_client_create_sequence_ex(c, "m", &o, &id), KVD_ERR_ARGUMENT);
    CHECK(strstr(kvd_client_last_error(c), "struct_size") != NULL, "%s", kvd_client_last_error(c));
    kvd_client_free(c);
    fake_stop(&f);
}

/* Hello's lease starts the thread: an idle client sends a KeepAlive about every lease/3, and no
 * more often; with disable_keepalive, or without a lease, nothing is sent. */
static void test_keepalive_renews_idle_client(void) {
    fake_kvd f = {0};
    f.lease_ms = 300;
    REQUIRE(fake_start(&f, "idle"), "fake");
    kvd_client *c = connect_fake(&f, 1, 2000);
    kvd_hello_info *info = NULL;
    CHECK_RC(c, kvd_client_hello(c, &info), KVD_OK);
    REQUIRE(info, "hello info");
    CHECK(info->lease_ms == 300 && info->orphan_grace_ms == 600 && info->quota_pinned_pages == 7 &&
          info->events_endpoint && info->events_endpoint[0] == '\0', "lease fields in hello info");
    kvd_hello_info_free(info);
    sleep_ms(1000);
    int n = fake_count(&f, &f.keepalives);
    CHECK(n >= 6 && n <= 12, "%d KeepAlives in 1 s of idleness with a 300 ms lease (want ~10)", n);
    pthread_mutex_lock(&f.mu);
    int64_t min_gap = 1 << 30;
    for (int i = 1; i < f.keepalives && i < FAKE_MAX_STAMPS; i++)
        if (f.keepalive_at_ms[i] - f.keepalive_at_ms[i - 1] < min_gap)
            min_gap = f.keepalive_at_ms[i] - f.keepalive_at_ms[i - 1];
    pthread_mutex_unlock(&f.mu);
    CHECK(min_gap >= 80, "KeepAlives %lld ms apart (interval 100 ms)", (long long)min_gap);
    CHECK(kvd_client_last_result(c) == KVD_OK && kvd_client_last_error(c)[0] == '\0',
          "the thread leaves the last result alone");
    kvd_client_free(c);
    int after = fake_count(&f, &f.keepalives);
    sleep_ms(300);
    CHECK(fake_count(&f, &f.keepalives) == after, "free stops the thread");

    c = connect_fake(&f, 0, 2000);
    int before = fake_count(&f, &f.keepalives);
    CHECK_RC(c, kvd_client_hello(c, NULL), KVD_OK);
    sleep_ms(400);
    CHECK(fake_count(&f, &f.keepalives) == before, "disable_keepalive: no KeepAlive");
    kvd_client_free(c);
    fake_stop(&f);

    fake_kvd g = {0}; /* lease_ms 0: leases off */
    REQUIRE(fake_start(&g, "nolease"), "fake");
    c = connect_fake(&g, 1, 2000);
    CHECK_RC(c, kvd_client_hello(c, NULL), KVD_OK);
    sleep_ms(300);
    CHECK(fake_count(&g, &g.keepalives) == 0, "no lease: no KeepAlive");
    kvd_client_free(c);
    fake_stop(&g);
}

/* Calls and KeepAlives share the socket: the fake never sees a second request before it answered
 * the first (it answers 15 ms late, watching for one), although both kinds are sent. */
static void test_keepalive_never_interleaves(void) {
    fake_kvd f = {0};
    f.lease_ms = 60; /* a KeepAlive every 20 ms of idleness */
    f.reply_delay_ms = 15;
    REQUIRE(fake_start(&f, "mutex"), "fake");
    kvd_client *c = connect_fake(&f, 1, 2000);
    CHECK_RC(c, kvd_client_hello(c, NULL), KVD_OK);
    int failures = 0;
    for (int i = 0; i < 40; i++) {
        kvd_stats st;
        if (kvd_client_stats(c, 0, &st) != KVD_OK || st.total_pages != 1) failures++;
        sleep_ms(5 + (i % 4) * 10); /* idle gaps around the keep-alive interval */
    }
    CHECK(failures == 0, "%d calls failed (last: %s)", failures, kvd_client_last_error(c));
    CHECK(fake_count(&f, &f.keepalives) > 0, "the thread did send KeepAlives");
    CHECK(fake_count(&f, &f.overlaps) == 0, "%d requests arrived while another was unanswered",
          fake_count(&f, &f.overlaps));
    kvd_client_free(c);
    fake_stop(&f);
}

/* A failing KeepAlive is the thread's business: the caller's last error and result are untouched. */
static void test_keepalive_errors_stay_private(void) {
    fake_kvd f = {0};
    f.lease_ms = 90;
    f.keepalive_error = 8;
    REQUIRE(fake_start(&f, "kaerr"), "fake");
    kvd_client *c = connect_fake(&f, 1, 2000);
    kvd_stats st;
    CHECK_RC(c, kvd_client_stats(c, 0, &st), KVD_OK);
    sleep_ms(250);
    CHECK(fake_count(&f, &f.keepalives) >= 2, "KeepAlives were sent");
    CHECK(kvd_client_last_result(c) == KVD_OK && kvd_client_last_server_code(c) == 0 &&
          kvd_client_last_error(c)[0] == '\0', "last error now: %s", kvd_client_last_error(c));
    kvd_client_free(c);
    fake_stop(&f);
}

/* A KeepAlive the daemon never answers does not hold up close (the timeout is 5 s); after close
 * the client sends nothing more and its calls say KVD_ERR_CLOSED. */
static void test_close_is_prompt(void) {
    fake_kvd f = {0};
    f.lease_ms = 150;
    f.drop_keepalive = 1;
    REQUIRE(fake_start(&f, "close"), "fake");
    kvd_client *c = connect_fake(&f, 1, 5000);
    CHECK_RC(c, kvd_client_hello(c, NULL), KVD_OK);
    int64_t deadline = fake_now_ms() + 2000;
    while (fake_count(&f, &f.keepalives) == 0 && fake_now_ms() < deadline) sleep_ms(5);
    REQUIRE(fake_count(&f, &f.keepalives) == 1, "a KeepAlive is in flight");
    int64_t t0 = fake_now_ms();
    CHECK_RC(c, kvd_client_close(c), KVD_OK);
    int64_t took = fake_now_ms() - t0;
    CHECK(took < 500, "close took %lld ms", (long long)took);
    kvd_stats st;
    CHECK_RC(c, kvd_client_stats(c, 0, &st), KVD_ERR_CLOSED);
    sleep_ms(200);
    CHECK(fake_count(&f, &f.keepalives) == 1, "nothing sent after close");
    kvd_client_free(c);
    fake_stop(&f);
}

/* ============================================================================================= */
/* Memory-manager figures                                                                         */

/* 1 if bytes [from, to) of `p` are all `v`. */
static int bytes_are(const void *p, size_t from, size_t to, unsigned char v) {
    for (size_t i = from; i < to; i++)
        if (((const unsigned char *)p)[i] != v) return 0;
    return 1;
}

/* One Stats{} request (sequence 0); every MemoryStats field lands in its own kvd_memory_stats field. */
static void test_memory_stats(void) {
    fake_kvd f = {0};
    REQUIRE(fake_start(&f, "memstats"), "fake");
    kvd_client *c = connect_fake(&f, 0, 2000);
    REQUIRE(c, "client");
    kvd_memory_stats m;
    memset(&m, 0xab, sizeof m);
    m.struct_size = sizeof m;
    CHECK_RC(c, kvd_client_memory_stats(c, &m), KVD_OK);
    uint8_t raw[1024];
    size_t n = 0;
    static const uint8_t want[] = {0x10, 0x01, 0x92, 0x01, 0x00}; /* protocol 1; stats (18) {} */
    CHECK(raw_after_id(&f, 0, raw, &n) && bytes_equal(raw, n, want, sizeof want), "Stats bytes");
    Kvd__V1__MemoryStats w = KVD__V1__MEMORY_STATS__INIT;
    fake_memory_stats(&w);
    CHECK(m.struct_size == sizeof m, "struct_size kept: %zu", m.struct_size);
    CHECK(m.high == w.high && m.low == w.low, "watermarks %g %g", m.high, m.low);
    CHECK(m.reservations_aborted == 3 && m.reservations_aborted_pages == 4 &&
          m.orphans_released == 5 && m.orphans_released_pages == 6 && m.compactions == 7 &&
          m.compactions_pages == 8 && m.evictions == 9 && m.evictions_pages == 10,
          "action counts %llu %llu %llu %llu %llu %llu %llu %llu",
          (unsigned long long)m.reservations_aborted, (unsigned long long)m.reservations_aborted_pages,
          (unsigned long long)m.orphans_released, (unsigned long long)m.orphans_released_pages,
          (unsigned long long)m.compactions, (unsigned long long)m.compactions_pages,
          (unsigned long long)m.evictions, (unsigned long long)m.evictions_pages);
    CHECK(m.reclaim_passes == w.reclaim_passes && m.synchronous_reclaims == 12 &&
          m.last_reclaim_us == w.last_reclaim_us && m.last_reclaim_reached_low == 1,
          "reclaims %llu %llu %llu %d", (unsigned long long)m.reclaim_passes,
          (unsigned long long)m.synchronous_reclaims, (unsigned long long)m.last_reclaim_us,
          m.last_reclaim_reached_low);
    CHECK(m.orphans == 14 && m.pinned_sequences == 15 && m.pinned_pages == w.pinned_pages &&
          m.events_published == w.events_published, "gauges %u %u %u %llu", m.orphans,
          m.pinned_sequences, m.pinned_pages, (unsigned long long)m.events_published);

    /* A program built against a shorter kvd_memory_stats: only its bytes are written. */
    size_t short_size = offsetof(kvd_memory_stats, pinned_pages);
    memset(&m, 0xab, sizeof m);
    m.struct_size = short_size;
    CHECK_RC(c, kvd_client_memory_stats(c, &m), KVD_OK);
    CHECK(m.struct_size == short_size && m.orphans == 14 && m.pinned_sequences == 15 &&
          m.high == w.high, "short struct: the fields it has are filled");
    CHECK(bytes_are(&m, short_size, sizeof m, 0xab), "short struct: nothing written past struct_size");
    m.struct_size = offsetof(kvd_memory_stats, high) + sizeof m.high; /* the smallest accepted */
    CHECK_RC(c, kvd_client_memory_stats(c, &m), KVD_OK);

    /* Refused before anything is sent; *out untouched. */
    int before = fake_count(&f, &f.requests);
    memset(&m, 0xab, sizeof m);
    size_t bad[] = {0, sizeof(size_t), sizeof m + 1};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        m.struct_size = bad[i];
        CHECK_RC(c, kvd_client_memory_stats(c, &m), KVD_ERR_ARGUMENT);
        CHECK(strstr(kvd_client_last_error(c), "struct_size") != NULL, "%s", kvd_client_last_error(c));
        CHECK(m.struct_size == bad[i] && bytes_are(&m, sizeof m.struct_size, sizeof m, 0xab),
              "out changed by a refused call (struct_size %zu)", bad[i]);
    }
    CHECK_RC(c, kvd_client_memory_stats(c, NULL), KVD_ERR_ARGUMENT);
    CHECK(fake_count(&f, &f.requests) == before, "a refused call sent a request");
    CHECK(kvd_client_memory_stats(NULL, &m) == KVD_ERR_ARGUMENT, "NULL client");

    /* The daemon's errors pass through, and *out stays as it was. */
    pthread_mutex_lock(&f.mu);
    f.stats_error = 9;
    pthread_mutex_unlock(&f.mu);
    m.struct_size = sizeof m;
    CHECK_RC(c, kvd_client_memory_stats(c, &m), KVD_ERR_UNAVAILABLE);
    CHECK(kvd_client_last_server_code(c) == 9 && bytes_are(&m, sizeof m.struct_size, sizeof m, 0xab),
          "daemon error: code %d, out untouched", kvd_client_last_server_code(c));
    kvd_client_close(c);
    CHECK_RC(c, kvd_client_memory_stats(c, &m), KVD_ERR_CLOSED);
    kvd_client_free(c);
    fake_stop(&f);

    /* A daemon that predates the memory manager sends no figures: an error, not zeros. */
    fake_kvd g = {0};
    g.stats_without_details = 1;
    REQUIRE(fake_start(&g, "memold"), "fake");
    c = connect_fake(&g, 0, 2000);
    memset(&m, 0xab, sizeof m);
    m.struct_size = sizeof m;
    CHECK_RC(c, kvd_client_memory_stats(c, &m), KVD_ERR_PROTOCOL);
    CHECK(strstr(kvd_client_last_error(c), "memory") != NULL &&
          bytes_are(&m, sizeof m.struct_size, sizeof m, 0xab), "%s", kvd_client_last_error(c));
    kvd_stats st;
    CHECK_RC(c, kvd_client_stats(c, 0, &st), KVD_OK); /* kvd_client_stats does not need them */
    kvd_client_free(c);
    fake_stop(&g);
}

/* Stats{sequence_id}; every lease field, an orphan's negative remaining lease included. */
static void test_sequence_lease(void) {
    fake_kvd f = {0};
    REQUIRE(fake_start(&f, "lease"), "fake");
    kvd_client *c = connect_fake(&f, 0, 2000);
    REQUIRE(c, "client");
    kvd_sequence_lease l;
    memset(&l, 0xab, sizeof l);
    l.struct_size = sizeof l;
    CHECK_RC(c, kvd_client_sequence_lease(c, 5, &l), KVD_OK);
    uint8_t raw[1024];
    size_t n = 0;
    /* protocol 1; stats (18) { sequence_id (1): 5 } */
    static const uint8_t want[] = {0x10, 0x01, 0x92, 0x01, 0x02, 0x08, 0x05};
    CHECK(raw_after_id(&f, 0, raw, &n) && bytes_equal(raw, n, want, sizeof want), "Stats bytes");
    Kvd__V1__SequenceStats w = KVD__V1__SEQUENCE_STATS__INIT;
    fake_sequence_stats(5, &w);
    CHECK(l.struct_size == sizeof l && l.sequence_id == 5, "id %llu", (unsigned long long)l.sequence_id);
    CHECK(l.idle_ms == w.idle_ms && l.lease_remaining_ms == -1500 && l.orphan == 1 && l.pinned == 0,
          "idle %llu remaining %lld orphan %d pinned %d", (unsigned long long)l.idle_ms,
          (long long)l.lease_remaining_ms, l.orphan, l.pinned);
    CHECK(l.bytes == 23 * 1024 && l.manager_compactions == w.manager_compactions && l.pages == 23 &&
          l.tokens_held == w.tokens_held && l.length == 21 && l.generation == 22,
          "bytes %llu compactions %u pages %u tokens %llu length %llu generation %llu",
          (unsigned long long)l.bytes, l.manager_compactions, l.pages,
          (unsigned long long)l.tokens_held, (unsigned long long)l.length,
          (unsigned long long)l.generation);

    uint64_t big = ((uint64_t)1 << 63) | 8;
    CHECK_RC(c, kvd_client_sequence_lease(c, big, &l), KVD_OK);
    CHECK(l.sequence_id == big && l.lease_remaining_ms == 29000 && l.orphan == 0 && l.pinned == 1,
          "live: id %llx remaining %lld orphan %d pinned %d", (unsigned long long)l.sequence_id,
          (long long)l.lease_remaining_ms, l.orphan, l.pinned);

    /* Shorter struct (up to `pinned`): the rest is not written. */
    size_t short_size = offsetof(kvd_sequence_lease, bytes);
    memset(&l, 0xab, sizeof l);
    l.struct_size = short_size;
    CHECK_RC(c, kvd_client_sequence_lease(c, 5, &l), KVD_OK);
    CHECK(l.orphan == 1 && l.lease_remaining_ms == -1500 && bytes_are(&l, short_size, sizeof l, 0xab),
          "short struct");

    int before = fake_count(&f, &f.requests);
    memset(&l, 0xab, sizeof l);
    l.struct_size = sizeof l;
    CHECK_RC(c, kvd_client_sequence_lease(c, 0, &l), KVD_ERR_ARGUMENT);
    CHECK(strstr(kvd_client_last_error(c), "names no sequence") != NULL, "%s", kvd_client_last_error(c));
    CHECK_RC(c, kvd_client_sequence_lease(c, 5, NULL), KVD_ERR_ARGUMENT);
    l.struct_size = sizeof l + 8;
    CHECK_RC(c, kvd_client_sequence_lease(c, 5, &l), KVD_ERR_ARGUMENT);
    l.struct_size = offsetof(kvd_sequence_lease, sequence_id); /* not even the id */
    CHECK_RC(c, kvd_client_sequence_lease(c, 5, &l), KVD_ERR_ARGUMENT);
    CHECK(fake_count(&f, &f.requests) == before, "a refused call sent a request");
    CHECK(bytes_are(&l, sizeof l.struct_size, sizeof l, 0xab), "out changed by refused calls");

    pthread_mutex_lock(&f.mu);
    f.stats_error = 10;
    pthread_mutex_unlock(&f.mu);
    l.struct_size = sizeof l;
    CHECK_RC(c, kvd_client_sequence_lease(c, 5, &l), KVD_ERR_EVICTED);
    CHECK(strstr(kvd_client_last_error(c), "lease expired") != NULL &&
          bytes_are(&l, sizeof l.struct_size, sizeof l, 0xab), "%s", kvd_client_last_error(c));
    kvd_client_free(c);
    fake_stop(&f);

    fake_kvd g = {0};
    g.stats_without_details = 1;
    REQUIRE(fake_start(&g, "leaseold"), "fake");
    c = connect_fake(&g, 0, 2000);
    CHECK_RC(c, kvd_client_sequence_lease(c, 5, &l), KVD_ERR_PROTOCOL);
    CHECK(strstr(kvd_client_last_error(c), "without its details") != NULL, "%s",
          kvd_client_last_error(c));
    kvd_client_free(c);
    fake_stop(&g);
}

/* ============================================================================================= */
/* Events                                                                                         */

typedef struct fake_pub {
    char endpoint[128];
    void *ctx, *sock;
} fake_pub;

static int pub_start(fake_pub *p, const char *tag) {
    snprintf(p->endpoint, sizeof p->endpoint, "ipc:///tmp/kvd-c-unit-%d-%s.sock", (int)getpid(), tag);
    p->ctx = zmq_ctx_new();
    p->sock = zmq_socket(p->ctx, ZMQ_PUB);
    int zero = 0;
    zmq_setsockopt(p->sock, ZMQ_LINGER, &zero, sizeof zero);
    return zmq_bind(p->sock, p->endpoint) == 0;
}

static void pub_stop(fake_pub *p) {
    zmq_close(p->sock);
    zmq_ctx_term(p->ctx);
    unlink(p->endpoint + 6);
}

static void pub_send(fake_pub *p, const char *topic, const void *data, size_t n) {
    zmq_send(p->sock, topic, strlen(topic), ZMQ_SNDMORE);
    zmq_send(p->sock, data, n, 0);
}

static size_t pack_event(uint8_t *buf, uint64_t number, const char *tenant, uint64_t seq) {
    Kvd__V1__Event e = KVD__V1__EVENT__INIT;
    e.sequence_number = number;
    e.kind = KVD__V1__EVENT__KIND__KIND_COMPACTED;
    e.tenant = (char *)tenant;
    e.sequence_id = seq;
    e.time_unix_ms = 1764500000123ull;
    e.generation = 4;
    e.pages_freed = 12;
    e.bytes_freed = 12 * 4096;
    e.method = "streamingllm";
    e.tokens_before = 400;
    e.tokens_after = 96;
    e.reason = "arena 93% used, above memory.high 0.90";
    e.used_pages = 150;
    e.limit_pages = 160;
    return kvd__v1__event__pack(&e, buf);
}

/* Subscribed and ready: every field decodes; other topics, garbage, a wrong frame count; a
 * caller struct shorter than kvd_event gets only what fits. */
static void test_events_decode(void) {
    fake_pub p;
    REQUIRE(pub_start(&p, "pub"), "pub");
    kvd_events *ev = NULL;
    char err[256];
    CHECK(kvd_events_open(p.endpoint, "kvd.alpha", NULL, &ev, err, sizeof err) == KVD_OK, "%s", err);
    REQUIRE(ev, "subscriber");
    CHECK(kvd_events_ready(ev, 3000) == KVD_OK, "ready: %s", kvd_events_last_error(ev));
    sleep_ms(50); /* the subscription follows the handshake */
    uint8_t buf[512];
    size_t n = pack_event(buf, 41, "alpha", 123);
    pub_send(&p, "kvd.beta", buf, n);
    pub_send(&p, "kvd.alpha", buf, n);
    kvd_event e;
    memset(&e, 0, sizeof e);
    e.struct_size = sizeof e;
    REQUIRE(kvd_events_next(ev, 2000, &e) == KVD_OK, "next: %s", kvd_events_last_error(ev));
    CHECK(e.sequence_number == 41 && e.kind == KVD_EVENT_COMPACTED && e.sequence_id == 123 &&
          e.time_unix_ms == 1764500000123ull && e.generation == 4 && e.pages_freed == 12 &&
          e.bytes_freed == 12 * 4096 && e.tokens_before == 400 && e.tokens_after == 96 &&
          e.used_pages == 150 && e.limit_pages == 160, "numbers");
    CHECK(strcmp(e.topic, "kvd.alpha") == 0 && strcmp(e.tenant, "alpha") == 0 &&
          strcmp(e.method, "streamingllm") == 0 && strstr(e.reason, "memory.high") != NULL,
          "strings: %s %s %s %s", e.topic, e.tenant, e.method, e.reason);
    CHECK(kvd_events_next(ev, 100, &e) == KVD_ERR_TIMEOUT, "kvd.beta was not delivered");

    pub_send(&p, "kvd.alphabet", buf, n); /* a prefix subscription gets this one */
    CHECK(kvd_events_next(ev, 2000, &e) == KVD_OK && strcmp(e.topic, "kvd.alphabet") == 0,
          "prefix match");
    pub_send(&p, "kvd.alpha", "\xff\xff\xff", 3);
    CHECK(kvd_events_next(ev, 2000, &e) == KVD_ERR_PROTOCOL &&
          strstr(kvd_events_last_error(ev), "undecodable") != NULL, "%s", kvd_events_last_error(ev));
    zmq_send(p.sock, "kvd.alpha", 9, 0); /* a topic alone */
    CHECK(kvd_events_next(ev, 2000, &e) == KVD_ERR_PROTOCOL &&
          strstr(kvd_events_last_error(ev), "1 frames") != NULL, "%s", kvd_events_last_error(ev));

    struct { kvd_event head; uint64_t guard; } small;
    memset(&small, 0, sizeof small);
    small.guard = 0x5a5a5a5a5a5a5a5aull;
    small.head.struct_size = offsetof(kvd_event, generation);
    small.head.generation = 777;
    pub_send(&p, "kvd.alpha", buf, n);
    CHECK(kvd_events_next(ev, 2000, &small.head) == KVD_OK && small.head.sequence_id == 123 &&
          small.head.generation == 777 && small.guard == 0x5a5a5a5a5a5a5a5aull,
          "a short struct gets only its fields");
    e.struct_size = 0;
    CHECK(kvd_events_next(ev, 0, &e) == KVD_ERR_ARGUMENT, "struct_size 0");
    CHECK(kvd_events_next(ev, 0, NULL) == KVD_ERR_ARGUMENT, "NULL out");
    kvd_events_free(ev);
    kvd_events_free(NULL);
    pub_stop(&p);

    CHECK(kvd_events_open(NULL, NULL, NULL, &ev, err, sizeof err) == KVD_ERR_ARGUMENT && !ev,
          "NULL endpoint");
    kvd_client_options o;
    memset(&o, 0, sizeof o);
    o.struct_size = sizeof o;
    o.curve_server_key = "x";
    CHECK(kvd_events_open("ipc:///tmp/x.sock", NULL, &o, &ev, err, sizeof err) == KVD_ERR_ARGUMENT &&
          strstr(err, "together") != NULL, "%s", err);
    CHECK(kvd_events_open("nope://x", NULL, NULL, &ev, err, sizeof err) == KVD_ERR_ARGUMENT, "%s", err);
    /* Nobody publishing: ready times out, next too. */
    char ep[128];
    snprintf(ep, sizeof ep, "ipc:///tmp/kvd-c-unit-%d-nobody.sock", (int)getpid());
    REQUIRE(kvd_events_open(ep, NULL, NULL, &ev, err, sizeof err) == KVD_OK, "%s", err);
    int64_t t0 = fake_now_ms();
    CHECK(kvd_events_ready(ev, 150) == KVD_ERR_TIMEOUT, "ready without a publisher");
    CHECK(fake_now_ms() - t0 < 1500, "ready waited %lld ms", (long long)(fake_now_ms() - t0));
    CHECK(kvd_events_next(ev, 50, &small.head) == KVD_ERR_TIMEOUT, "next without a publisher");
    kvd_events_free(ev);
}

/* kvd_client_events: Hello's endpoint, the tenant's exact topic; none configured is refused. */
static void test_client_events(void) {
    fake_pub p;
    REQUIRE(pub_start(&p, "cpub"), "pub");
    fake_kvd f = {0};
    f.events_endpoint = p.endpoint;
    f.tenant = "alpha";
    REQUIRE(fake_start(&f, "cev"), "fake");
    kvd_client *c = connect_fake(&f, 0, 2000);
    kvd_events *ev = NULL;
    CHECK_RC(c, kvd_client_events(c, &ev), KVD_OK);
    REQUIRE(ev, "subscriber");
    CHECK(kvd_events_ready(ev, 3000) == KVD_OK, "ready: %s", kvd_events_last_error(ev));
    sleep_ms(50);
    uint8_t buf[512];
    pub_send(&p, "kvd.alphabet", buf, pack_event(buf, 1, "alphabet", 1));
    pub_send(&p, "kvd.alpha", buf, pack_event(buf, 2, "alpha", 2));
    kvd_event e;
    memset(&e, 0, sizeof e);
    e.struct_size = sizeof e;
    CHECK(kvd_events_next(ev, 2000, &e) == KVD_OK && e.sequence_number == 2 &&
          strcmp(e.topic, "kvd.alpha") == 0, "only the tenant's own topic (got %llu %s)",
          (unsigned long long)e.sequence_number, e.topic ? e.topic : "-");
    kvd_events_free(ev);
    kvd_client_free(c);
    fake_stop(&f);
    pub_stop(&p);

    fake_kvd g = {0}; /* no events endpoint */
    REQUIRE(fake_start(&g, "noev"), "fake");
    c = connect_fake(&g, 0, 2000);
    ev = (kvd_events *)1;
    CHECK_RC(c, kvd_client_events(c, &ev), KVD_ERR_FAILED_PRECONDITION);
    CHECK(ev == NULL && strstr(kvd_client_last_error(c), "publishes no events") != NULL, "%s",
          kvd_client_last_error(c));
    kvd_client_free(c);
    fake_stop(&g);
}

/* ============================================================================================= */
/* Prefix reuse on the wire (the real daemon's semantics: tests/test_kvd_client.c "prefix")      */

/* The fake's last recorded request, decoded (free with kvd__v1__request__free_unpacked). */
static Kvd__V1__Request *last_request(fake_kvd *f) {
    pthread_mutex_lock(&f->mu);
    Kvd__V1__Request *r = kvd__v1__request__unpack(NULL, f->last_raw_len, f->last_raw);
    pthread_mutex_unlock(&f->mu);
    return r;
}

/* Ids whose four bytes all differ, one above 2^31: the wire must carry them little-endian. */
static const uint32_t wire_ids[9] = {0x01020304u, 0xfffffffeu, 5, 6, 7, 8, 9, 10, 11};
static const uint8_t wire_ids_le[8] = {0x04, 0x03, 0x02, 0x01, 0xfe, 0xff, 0xff, 0xff};

static int ids_on_wire(ProtobufCBinaryData b, size_t n) {
    if (b.len != 4 * n || memcmp(b.data, wire_ids_le, 8) != 0) return 0;
    for (size_t i = 2; i < n; i++)
        if (b.data[4 * i] != wire_ids[i] || b.data[4 * i + 1] || b.data[4 * i + 2] || b.data[4 * i + 3])
            return 0;
    return 1;
}

static void test_prefix_wire(void) {
    fake_kvd f = {0};
    REQUIRE(fake_start(&f, "prefix"), "fake");
    kvd_client *c = connect_fake(&f, 0, 2000);
    REQUIRE(c, "client");
    uint8_t raw[1024];
    size_t n = 0;

    /* Lookup: exact bytes; the reply's whole pages. */
    kvd_lookup_result lr = {9, 9, 9};
    CHECK_RC(c, kvd_client_lookup(c, "m", wire_ids, 5, &lr), KVD_OK);
    /* protocol_version = 1; lookup (23) { model "m", token_ids: 5 ids, uint32 LE } */
    static const uint8_t want_lookup[] = {
        0x10, 0x01, 0xba, 0x01, 0x19, 0x0a, 0x01, 0x6d, 0x12, 0x14, 0x04, 0x03, 0x02, 0x01,
        0xfe, 0xff, 0xff, 0xff, 0x05, 0x00, 0x00, 0x00, 0x06, 0x00, 0x00, 0x00, 0x07, 0x00,
        0x00, 0x00};
    CHECK(raw_after_id(&f, 0, raw, &n) && bytes_equal(raw, n, want_lookup, sizeof want_lookup),
          "Lookup bytes");
    CHECK(lr.tokens == 4 && lr.pages_per_head == 1 && lr.page_tokens == 4, "lookup %llu %u %u",
          (unsigned long long)lr.tokens, lr.pages_per_head, lr.page_tokens);
    CHECK_RC(c, kvd_client_lookup(c, "m", NULL, 0, &lr), KVD_OK);
    CHECK(lr.tokens == 0, "no ids: %llu", (unsigned long long)lr.tokens);
    /* Refused before anything is sent. */
    int before = fake_count(&f, &f.requests);
    CHECK_RC(c, kvd_client_lookup(c, "m", NULL, 3, &lr), KVD_ERR_ARGUMENT);
    CHECK_RC(c, kvd_client_lookup(c, "m", wire_ids, SIZE_MAX / 4 + 1, &lr), KVD_ERR_ARGUMENT);
    CHECK(strstr(kvd_client_last_error(c), "overflow") != NULL, "%s", kvd_client_last_error(c));
    CHECK_RC(c, kvd_client_lookup(c, NULL, wire_ids, 5, &lr), KVD_ERR_ARGUMENT);
    CHECK_RC(c, kvd_client_lookup(c, "m", wire_ids, 5, NULL), KVD_ERR_ARGUMENT);
    CHECK(fake_count(&f, &f.requests) == before, "a refused lookup sent a request");

    /* Fork: exact bytes, every result field. */
    kvd_fork_result fr = {0, 0, 0};
    CHECK_RC(c, kvd_client_fork(c, 5, 300, (uint64_t)1 << 63, &fr), KVD_OK);
    static const uint8_t want_fork[] = {0x10, 0x01, 0xc2, 0x01, 0x10, 0x08, 0x05, 0x10, 0xac,
                                        0x02, 0x18, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
                                        0x80, 0x80, 0x01};
    CHECK(raw_after_id(&f, 0, raw, &n) && bytes_equal(raw, n, want_fork, sizeof want_fork),
          "Fork bytes");
    CHECK(fr.sequence_id == (uint64_t)1 << 63 && fr.length == 300 && fr.generation == 1,
          "fork result %llu %llu %llu", (unsigned long long)fr.sequence_id,
          (unsigned long long)fr.length, (unsigned long long)fr.generation);
    CHECK_RC(c, kvd_client_fork(c, 5, 0, 0, NULL), KVD_OK);

    /* Adopting create: the ids, and adopted_tokens back; without ids, none on the wire. */
    kvd_sequence_options o;
    memset(&o, 0, sizeof o);
    o.struct_size = sizeof o;
    o.adopt_token_ids = wire_ids;
    o.adopt_count = 9;
    uint64_t adopted = 99, id = 0;
    o.adopted_tokens = &adopted;
    CHECK_RC(c, kvd_client_create_sequence_ex(c, "m", &o, &id), KVD_OK);
    Kvd__V1__Request *r = last_request(&f);
    CHECK(r && r->body_case == KVD__V1__REQUEST__BODY_CREATE_SEQUENCE &&
          ids_on_wire(r->create_sequence->adopt_token_ids, 9), "adopt ids on the wire");
    kvd__v1__request__free_unpacked(r, NULL);
    CHECK(id == 77 && adopted == 8, "adopted %llu", (unsigned long long)adopted);
    CHECK_RC(c, kvd_client_create_sequence(c, "m", 0, NULL, &id), KVD_OK);
    r = last_request(&f);
    CHECK(r && r->create_sequence->adopt_token_ids.len == 0, "plain create sends no ids");
    kvd__v1__request__free_unpacked(r, NULL);

    /* Append with ids, inline: the ids follow the tensors; a wrong count is never sent. */
    uint16_t kv[2 * 8] = {0};
    kvd_append_options ao;
    memset(&ao, 0, sizeof ao);
    ao.struct_size = sizeof ao;
    ao.token_ids = wire_ids;
    ao.num_token_ids = 2;
    kvd_append_result ar;
    CHECK_RC(c, kvd_client_append_ex(c, 3, KVD_DTYPE_F16, 1, 1, 2, 8, kv, kv, &ao, &ar), KVD_OK);
    r = last_request(&f);
    CHECK(r && r->body_case == KVD__V1__REQUEST__BODY_APPEND && r->append->sequence_id == 3 &&
          ids_on_wire(r->append->token_ids, 2) && r->append->keys->data.len == sizeof kv,
          "append ids on the wire");
    kvd__v1__request__free_unpacked(r, NULL);
    CHECK(ar.length == 2, "append result %llu", (unsigned long long)ar.length);
    CHECK_RC(c, kvd_client_append(c, 3, KVD_DTYPE_F16, 1, 1, 2, 8, kv, kv, NULL), KVD_OK);
    r = last_request(&f);
    CHECK(r && r->append->token_ids.len == 0, "plain append sends no ids");
    kvd__v1__request__free_unpacked(r, NULL);
    /* A program built against a header without token ids: its struct_size ends before them. */
    ao.struct_size = offsetof(kvd_append_options, token_ids);
    CHECK_RC(c, kvd_client_append_ex(c, 3, KVD_DTYPE_F16, 1, 1, 2, 8, kv, kv, &ao, NULL), KVD_OK);
    r = last_request(&f);
    CHECK(r && r->append->token_ids.len == 0, "an older struct_size sends no ids");
    kvd__v1__request__free_unpacked(r, NULL);
    ao.struct_size = sizeof ao;
    before = fake_count(&f, &f.requests);
    ao.num_token_ids = 1;
    CHECK_RC(c, kvd_client_append_ex(c, 3, KVD_DTYPE_F16, 1, 1, 2, 8, kv, kv, &ao, NULL),
             KVD_ERR_ARGUMENT);
    ao.struct_size = 0;
    CHECK_RC(c, kvd_client_append_ex(c, 3, KVD_DTYPE_F16, 1, 1, 2, 8, kv, kv, &ao, NULL),
             KVD_ERR_ARGUMENT);
    CHECK(fake_count(&f, &f.requests) == before, "a refused append sent a request");
    kvd_client_free(c);
    fake_stop(&f);

    /* Replies that claim more tokens than were sent are refused (the caller would skip
     * positions it never prefilled); an adopting create still names its sequence. */
    fake_kvd g = {0};
    g.bad_prefix_replies = 1;
    REQUIRE(fake_start(&g, "prefixbad"), "fake");
    c = connect_fake(&g, 0, 2000);
    REQUIRE(c, "client");
    lr = (kvd_lookup_result){9, 9, 9};
    CHECK_RC(c, kvd_client_lookup(c, "m", wire_ids, 5, &lr), KVD_ERR_PROTOCOL);
    CHECK(lr.tokens == 9 && lr.pages_per_head == 9, "out unchanged");
    adopted = 99;
    id = 0;
    CHECK_RC(c, kvd_client_create_sequence_ex(c, "m", &o, &id), KVD_ERR_PROTOCOL);
    CHECK(id == 77 && adopted == 99 && strstr(kvd_client_last_error(c), "sequence 77") != NULL,
          "%s", kvd_client_last_error(c));
    kvd_client_free(c);
    fake_stop(&g);
}

static void test_prefix_stats(void) {
    fake_kvd f = {0};
    REQUIRE(fake_start(&f, "pstats"), "fake");
    kvd_client *c = connect_fake(&f, 0, 2000);
    REQUIRE(c, "client");
    kvd_prefix_stats p;
    memset(&p, 0xab, sizeof p);
    p.struct_size = sizeof p;
    CHECK_RC(c, kvd_client_prefix_stats(c, &p), KVD_OK);
    Kvd__V1__PrefixStats w = KVD__V1__PREFIX_STATS__INIT;
    fake_prefix_stats(&w);
    CHECK(p.struct_size == sizeof p && p.enabled == 1 && p.hits == w.hits && p.misses == 32 &&
          p.cached_blocks == w.cached_blocks && p.cached_pages == w.cached_pages &&
          p.unused_pages == 35 && p.shared_pages == w.shared_pages &&
          p.pages_saved == w.pages_saved && p.bytes_saved == w.bytes_saved &&
          p.evictions == 39 && p.evicted_pages == w.evicted_pages, "every field at full width");
    /* A program built against a shorter kvd_prefix_stats: only its bytes are written. */
    size_t short_size = offsetof(kvd_prefix_stats, pages_saved);
    memset(&p, 0xab, sizeof p);
    p.struct_size = short_size;
    CHECK_RC(c, kvd_client_prefix_stats(c, &p), KVD_OK);
    CHECK(p.shared_pages == w.shared_pages && bytes_are(&p, short_size, sizeof p, 0xab),
          "short struct: nothing written past struct_size");
    int before = fake_count(&f, &f.requests);
    size_t bad[] = {0, sizeof(size_t), sizeof p + 1};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        memset(&p, 0xab, sizeof p);
        p.struct_size = bad[i];
        CHECK_RC(c, kvd_client_prefix_stats(c, &p), KVD_ERR_ARGUMENT);
        CHECK(bytes_are(&p, sizeof p.struct_size, sizeof p, 0xab), "out changed (size %zu)", bad[i]);
    }
    CHECK_RC(c, kvd_client_prefix_stats(c, NULL), KVD_ERR_ARGUMENT);
    CHECK(fake_count(&f, &f.requests) == before, "a refused call sent a request");
    kvd_client_free(c);
    fake_stop(&f);

    /* A daemon older than prefix reuse sends no figures: an error, not zeros. */
    fake_kvd g = {0};
    g.stats_without_details = 1;
    REQUIRE(fake_start(&g, "pstatsold"), "fake");
    c = connect_fake(&g, 0, 2000);
    REQUIRE(c, "client");
    memset(&p, 0xab, sizeof p);
    p.struct_size = sizeof p;
    CHECK_RC(c, kvd_client_prefix_stats(c, &p), KVD_ERR_PROTOCOL);
    CHECK(strstr(kvd_client_last_error(c), "prefix") != NULL &&
          bytes_are(&p, sizeof p.struct_size, sizeof p, 0xab), "%s", kvd_client_last_error(c));
    kvd_client_free(c);
    fake_stop(&g);
}

/* ============================================================================================= */
/* The remote tier                                                                                */

static int adopted_were(fake_kvd *f, const uint64_t *want, size_t n);

static void test_remote_restore_wire(void) {
    fake_kvd f = {0};
    f.with_model = 1;
    f.instance_id = 0x1111;
    f.durable = 1;
    f.ka_missing = 99; /* never sent: nothing is reported missing */
    REQUIRE(fake_start(&f, "restore"), "fake");
    kvd_client *c = connect_fake(&f, 0, 2000);
    REQUIRE(c, "client");
    uint8_t raw[1024];
    size_t n = 0;
    uint64_t id = 0;
    CHECK_RC(c, kvd_client_create_sequence(c, "m", 10, NULL, &id), KVD_OK);

    /* Restore: exact bytes; every result field at full width. */
    kvd_restore_result r;
    memset(&r, 0xab, sizeof r);
    CHECK_RC(c, kvd_client_restore(c, 10, &r), KVD_OK);
    /* protocol_version = 1; restore (25) { sequence_id 10 } */
    static const uint8_t want[] = {0x10, 0x01, 0xca, 0x01, 0x02, 0x08, 0x0a};
    CHECK(raw_after_id(&f, 0, raw, &n) && bytes_equal(raw, n, want, sizeof want), "Restore bytes");
    Kvd__V1__RestoreResponse w = KVD__V1__RESTORE_RESPONSE__INIT;
    fake_restore_response(10, &w);
    CHECK(r.sequence_id == 10 && r.length == 300 && r.generation == w.generation &&
          r.from_remote == 1 && r.restore_us == w.restore_us && r.bytes == w.bytes,
          "restore result %llu %llu %llu %d %llu %llu", (unsigned long long)r.sequence_id,
          (unsigned long long)r.length, (unsigned long long)r.generation, r.from_remote,
          (unsigned long long)r.restore_us, (unsigned long long)r.bytes);
    /* A sequence this client never created: `out` may be NULL. */
    CHECK_RC(c, kvd_client_restore(c, (uint64_t)1 << 63, NULL), KVD_OK);

    /* Refused before anything is sent. */
    int before = fake_count(&f, &f.requests);
    memset(&r, 0xab, sizeof r);
    CHECK_RC(c, kvd_client_restore(c, 0, &r), KVD_ERR_ARGUMENT);
    CHECK(strstr(kvd_client_last_error(c), "restore") != NULL && bytes_are(&r, 0, sizeof r, 0xab),
          "%s", kvd_client_last_error(c));
    CHECK(fake_count(&f, &f.requests) == before, "a refused restore sent a request");
    CHECK_RC(NULL, kvd_client_restore(NULL, 10, &r), KVD_ERR_ARGUMENT);

    /* A reply for another sequence than the one asked for is refused, naming both. */
    CHECK_RC(c, kvd_client_restore(c, 13, &r), KVD_ERR_PROTOCOL);
    CHECK(strstr(kvd_client_last_error(c), "13") != NULL &&
          strstr(kvd_client_last_error(c), "14") != NULL && bytes_are(&r, 0, sizeof r, 0xab),
          "%s", kvd_client_last_error(c));

    /* After a durable restart the client takes back what it created and restored (its layout is
     * known), and nothing it restored without knowing the layout (it was never remembered). */
    fake_restart(&f, 0x2222);
    kvd_stats st;
    memset(&st, 0, sizeof st);
    CHECK_RC(c, kvd_client_stats(c, 0, &st), KVD_OK);
    const uint64_t mine[1] = {10};
    CHECK(fake_count(&f, &f.adopt_keepalives) == 1 && adopted_were(&f, mine, 1), "adopted 10 only");
    kvd_client_free(c);
    fake_stop(&f);
}

/* Query position runs (QueryRequest.position_runs): the client asks for them, expands them into
 * `positions`, and refuses malformed ones with KVD_ERR_PROTOCOL instead of reading or writing past
 * what the reply holds. */
static void set_runs(fake_kvd *f, uint32_t tokens, const int64_t *pairs, size_t n_pairs) {
    pthread_mutex_lock(&f->mu);
    f->query_tokens = tokens;
    for (size_t i = 0; i < n_pairs; i++) {
        uint32_t start = (uint32_t)pairs[2 * i], count = (uint32_t)pairs[2 * i + 1];
        memcpy(f->query_runs + 8 * i, &start, 4);
        memcpy(f->query_runs + 8 * i + 4, &count, 4);
    }
    f->query_runs_len = 8 * n_pairs;
    pthread_mutex_unlock(&f->mu);
}

static void test_query_position_runs(void) {
    fake_kvd f = {0};
    REQUIRE(fake_start(&f, "runs"), "fake");
    kvd_client *c = connect_fake(&f, 0, 2000);
    REQUIRE(c, "client");
    kvd_query_result *q = NULL;

    const int64_t two[] = {0, 3, 10, 2}; /* StreamingLLM's shape: sinks, then the recent window */
    set_runs(&f, 5, two, 2);
    CHECK_RC(c, kvd_client_query(c, 7, KVD_QUERY_METADATA, NULL, 0, &q), KVD_OK);
    CHECK(fake_count(&f, &f.query_asked_runs) == 1, "the client asks for runs");
    if (q) {
        const int32_t want[] = {0, 1, 2, 10, 11};
        CHECK(q->num_heads == 1 && q->heads[0].num_tokens == 5 &&
              memcmp(q->heads[0].positions, want, sizeof want) == 0, "expanded runs");
        CHECK(q->heads[0].log_weights[0] == 0.0f && q->heads[0].log_weights[4] == 0.0f,
              "no log-weights: zeros");
    }
    kvd_query_result_free(q);
    q = NULL;

    const int64_t top[] = {2147483645, 3}; /* ends at 2^31 - 1 */
    set_runs(&f, 3, top, 1);
    CHECK_RC(c, kvd_client_query(c, 7, KVD_QUERY_METADATA, NULL, 0, &q), KVD_OK);
    if (q) CHECK(q->heads[0].positions[2] == 2147483647, "last position %d", q->heads[0].positions[2]);
    kvd_query_result_free(q);
    q = NULL;

    /* Malformed: (tokens, runs, what the error says). */
    struct { uint32_t tokens; int64_t pairs[4]; size_t n; const char *why; } bad[] = {
        {4, {0, 5}, 1, "more tokens"},              /* counts past num_tokens */
        {6, {0, 5}, 1, "fewer tokens"},             /* counts short of num_tokens */
        {3, {2147483646, 3}, 1, "2^31"},            /* runs past int32 */
        {2, {-1, 2}, 1, "not ascending"},           /* negative start */
        {4, {10, 2, 11, 2}, 2, "not ascending"},    /* overlapping */
        {4, {5, 0, 6, 4}, 2, "empty"},              /* an empty run */
        {3, {0, 0}, 0, "fewer tokens"},             /* no runs, no positions */
        {1, {0, 0xffffffffLL, 0, 0xffffffffLL}, 2, "more position runs"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        set_runs(&f, bad[i].tokens, bad[i].pairs, bad[i].n);
        q = (kvd_query_result *)&f; /* must come back NULL */
        CHECK_RC(c, kvd_client_query(c, 7, KVD_QUERY_METADATA, NULL, 0, &q), KVD_ERR_PROTOCOL);
        CHECK(q == NULL && strstr(kvd_client_last_error(c), bad[i].why) != NULL, "case %zu: %s", i,
              kvd_client_last_error(c));
    }
    /* A length that is not whole 8-byte runs. */
    set_runs(&f, 1, two, 1);
    pthread_mutex_lock(&f.mu);
    f.query_runs_len = 7;
    pthread_mutex_unlock(&f.mu);
    CHECK_RC(c, kvd_client_query(c, 7, KVD_QUERY_METADATA, NULL, 0, &q), KVD_ERR_PROTOCOL);
    CHECK(strstr(kvd_client_last_error(c), "8-byte") != NULL, "%s", kvd_client_last_error(c));
    kvd_client_free(c);
    fake_stop(&f);
}

static void test_remote_stats(void) {
    fake_kvd f = {0};
    REQUIRE(fake_start(&f, "rstats"), "fake");
    kvd_client *c = connect_fake(&f, 0, 2000);
    REQUIRE(c, "client");
    kvd_remote_stats p;
    memset(&p, 0xab, sizeof p);
    p.struct_size = sizeof p;
    CHECK_RC(c, kvd_client_remote_stats(c, &p), KVD_OK);
    uint8_t raw[1024];
    size_t n = 0;
    static const uint8_t want[] = {0x10, 0x01, 0x92, 0x01, 0x00}; /* protocol 1; stats (18) {} */
    CHECK(raw_after_id(&f, 0, raw, &n) && bytes_equal(raw, n, want, sizeof want), "Stats bytes");
    Kvd__V1__RemoteStats w = KVD__V1__REMOTE_STATS__INIT;
    fake_remote_stats(&w);
    CHECK(p.struct_size == sizeof p && p.enabled == 1 && p.offloaded == w.offloaded &&
          p.offloaded_bytes == w.offloaded_bytes && p.offload_failures == 53 &&
          p.offload_dropped == w.offload_dropped && p.restored == 55 &&
          p.restore_failures == w.restore_failures && p.restore_corrupted == 57 &&
          p.last_restore_us == w.last_restore_us && p.mean_restore_us == 59 &&
          p.queued == w.queued && p.queued_bytes == w.queued_bytes &&
              p.blocks_published == w.blocks_published && p.blocks_publish_failures == 63 &&
              p.blocks_imported == w.blocks_imported && p.blocks_rejected == 65,
          "every field at full width");
    /* A program built against a shorter kvd_remote_stats: only its bytes are written. */
    size_t short_size = offsetof(kvd_remote_stats, restored);
    memset(&p, 0xab, sizeof p);
    p.struct_size = short_size;
    CHECK_RC(c, kvd_client_remote_stats(c, &p), KVD_OK);
    CHECK(p.offload_dropped == w.offload_dropped && bytes_are(&p, short_size, sizeof p, 0xab),
          "short struct: nothing written past struct_size");
    int before = fake_count(&f, &f.requests);
    size_t bad[] = {0, sizeof(size_t), sizeof p + 1};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        memset(&p, 0xab, sizeof p);
        p.struct_size = bad[i];
        CHECK_RC(c, kvd_client_remote_stats(c, &p), KVD_ERR_ARGUMENT);
        CHECK(strstr(kvd_client_last_error(c), "sizeof(kvd_remote_stats)") != NULL &&
              bytes_are(&p, sizeof p.struct_size, sizeof p, 0xab), "out changed (size %zu): %s",
              bad[i], kvd_client_last_error(c));
    }
    CHECK_RC(c, kvd_client_remote_stats(c, NULL), KVD_ERR_ARGUMENT);
    CHECK(fake_count(&f, &f.requests) == before, "a refused call sent a request");
    kvd_client_free(c);
    fake_stop(&f);

    /* A daemon older than the remote tier sends no figures: an error, not zeros. */
    fake_kvd g = {0};
    g.stats_without_details = 1;
    REQUIRE(fake_start(&g, "rstatsold"), "fake");
    c = connect_fake(&g, 0, 2000);
    REQUIRE(c, "client");
    memset(&p, 0xab, sizeof p);
    p.struct_size = sizeof p;
    CHECK_RC(c, kvd_client_remote_stats(c, &p), KVD_ERR_PROTOCOL);
    CHECK(strstr(kvd_client_last_error(c), "remote") != NULL &&
          bytes_are(&p, sizeof p.struct_size, sizeof p, 0xab), "%s", kvd_client_last_error(c));
    kvd_client_free(c);
    fake_stop(&g);
}

/* ============================================================================================= */
/* Daemon restarts                                                                                */

/* 1 if the last KeepAlive that named sequences named exactly `want` (in this order). */
static int adopted_were(fake_kvd *f, const uint64_t *want, size_t n) {
    pthread_mutex_lock(&f->mu);
    int ok = f->n_adopt == n && memcmp(f->adopt_ids, want, n * sizeof *want) == 0;
    if (!ok) {
        printf("    adopted:");
        for (size_t i = 0; i < f->n_adopt; i++) printf(" %llu", (unsigned long long)f->adopt_ids[i]);
        printf("\n");
    }
    pthread_mutex_unlock(&f->mu);
    return ok;
}

static uint64_t fake_u64(fake_kvd *f, const uint64_t *field) {
    pthread_mutex_lock(&f->mu);
    uint64_t v = *field;
    pthread_mutex_unlock(&f->mu);
    return v;
}

/* A caller's call after a restart that kept the segment: the client says Hello again, adopts the
 * sequences it created, and sends the request the new daemon refused as not bound once more. */
static void test_rejoin_after_restart(void) {
    fake_kvd f = {0};
    f.with_model = 1;
    f.require_hello = 1;
    f.instance_id = 0x1111;
    f.durable = 1;
    f.ka_missing = 11;
    REQUIRE(fake_start(&f, "rejoin"), "fake");
    kvd_client *c = connect_fake(&f, 0, 2000);
    REQUIRE(c, "client");
    kvd_hello_info *info = NULL;
    CHECK_RC(c, kvd_client_hello(c, &info), KVD_OK);
    REQUIRE(info, "hello info");
    CHECK(info->instance_id == 0x1111 && info->durable == 1, "instance %llx durable %d",
          (unsigned long long)info->instance_id, info->durable);
    kvd_hello_info_free(info);
    uint64_t id = 0;
    for (uint64_t s = 10; s <= 12; s++)
        CHECK_RC(c, kvd_client_create_sequence(c, "m", s, NULL, &id), KVD_OK);
    CHECK(fake_count(&f, &f.hellos) == 1 && fake_count(&f, &f.keepalives) == 0, "before");

    fake_restart(&f, 0x2222);
    kvd_stats st;
    memset(&st, 0, sizeof st);
    CHECK_RC(c, kvd_client_stats(c, 0, &st), KVD_OK);
    CHECK(st.total_pages == 1, "the resent Stats' answer");
    CHECK(fake_count(&f, &f.hellos) == 2, "%d Hellos", fake_count(&f, &f.hellos));
    CHECK(fake_count(&f, &f.refusals) == 1, "%d refusals", fake_count(&f, &f.refusals));
    uint64_t refused = fake_u64(&f, &f.refused_id), last = fake_u64(&f, &f.last_id);
    CHECK(last != refused && last > refused, "resent as %llu after %llu was refused",
          (unsigned long long)last, (unsigned long long)refused);
    const uint64_t all[3] = {10, 11, 12};
    CHECK(fake_count(&f, &f.adopt_keepalives) == 1 && adopted_were(&f, all, 3), "adopted 10 11 12");

    /* 11 was reported missing: forgotten, so the next rejoin does not name it. */
    fake_restart(&f, 0x3333);
    CHECK_RC(c, kvd_client_pin(c, 10, 1, NULL, NULL), KVD_OK);
    const uint64_t kept[2] = {10, 12};
    CHECK(fake_count(&f, &f.adopt_keepalives) == 2 && adopted_were(&f, kept, 2), "adopted 10 12");
    CHECK(fake_count(&f, &f.refusals) == 2 && fake_count(&f, &f.hellos) == 3, "second restart");

    /* An open tenant: the request is answered, then the client rejoins all the same. */
    pthread_mutex_lock(&f.mu);
    f.require_hello = 0;
    pthread_mutex_unlock(&f.mu);
    fake_restart(&f, 0x4444);
    CHECK_RC(c, kvd_client_stats(c, 0, &st), KVD_OK);
    CHECK(fake_count(&f, &f.refusals) == 2 && fake_count(&f, &f.hellos) == 4 &&
          fake_count(&f, &f.adopt_keepalives) == 3, "open tenant: Hello and adopt, no resend");

    /* Hello itself sees the restart: kvd_client_hello finishes the rejoin. */
    fake_restart(&f, 0x5555);
    CHECK_RC(c, kvd_client_hello(c, &info), KVD_OK);
    CHECK(info && info->instance_id == 0x5555, "hello info after the restart");
    kvd_hello_info_free(info);
    CHECK(fake_count(&f, &f.adopt_keepalives) == 4 && adopted_were(&f, kept, 2), "adopted at Hello");
    int hellos = fake_count(&f, &f.hellos);
    CHECK_RC(c, kvd_client_stats(c, 0, &st), KVD_OK);
    CHECK(fake_count(&f, &f.hellos) == hellos && fake_count(&f, &f.adopt_keepalives) == 4,
          "no rejoin without a restart");

    /* A daemon error during a rejoin's round is the caller's answer, message and all. */
    pthread_mutex_lock(&f.mu);
    f.stats_error = 2;
    pthread_mutex_unlock(&f.mu);
    fake_restart(&f, 0x6666);
    CHECK_RC(c, kvd_client_stats(c, 5, &st), KVD_ERR_NOT_FOUND);
    CHECK(strstr(kvd_client_last_error(c), "sequence 5 was released") != NULL &&
          kvd_client_last_server_code(c) == 2, "%s", kvd_client_last_error(c));
    CHECK(fake_count(&f, &f.adopt_keepalives) == 5, "adopted after an error reply too");
    kvd_client_free(c);
    fake_stop(&f);
}

/* The keep-alive thread of an idle client rejoins by itself (without mapping anything), keeping
 * its errors to itself; a restart with a new segment is still KVD_ERR_RESTARTED for the caller,
 * and the thread leaves it alone. */
static void test_rejoin_from_keepalive_thread(void) {
    fake_kvd f = {0};
    f.with_model = 1;
    f.require_hello = 1;
    f.instance_id = 1;
    f.lease_ms = 150; /* a KeepAlive every 50 ms of idleness */
    REQUIRE(fake_start(&f, "karejoin"), "fake");
    kvd_client *c = connect_fake(&f, 1, 2000);
    REQUIRE(c, "client");
    uint64_t id = 0;
    CHECK_RC(c, kvd_client_create_sequence(c, "m", 40, NULL, &id), KVD_OK);
    fake_restart(&f, 2);
    int64_t deadline = fake_now_ms() + 2000;
    while (fake_count(&f, &f.adopt_keepalives) == 0 && fake_now_ms() < deadline) sleep_ms(10);
    const uint64_t want[1] = {40};
    CHECK(fake_count(&f, &f.adopt_keepalives) == 1 && adopted_were(&f, want, 1),
          "the thread adopted 40");
    CHECK(fake_count(&f, &f.hellos) == 2 && fake_count(&f, &f.refusals) == 1, "hellos %d refusals %d",
          fake_count(&f, &f.hellos), fake_count(&f, &f.refusals));
    CHECK(kvd_client_last_result(c) == KVD_OK && kvd_client_last_error(c)[0] == '\0',
          "the caller's last error: %s", kvd_client_last_error(c));
    kvd_hello_info *info = NULL;
    kvd_stats st;
    CHECK_RC(c, kvd_client_stats(c, 0, &st), KVD_OK);
    CHECK(fake_count(&f, &f.refusals) == 1 && fake_count(&f, &f.hellos) == 2,
          "the caller's call needs no rejoin");

    /* A new segment: the thread sends nothing to it; the caller's call re-attaches and says so. */
    int before = fake_count(&f, &f.keepalives);
    REQUIRE(fake_replace_arena(&f, 7), "new segment");
    sleep_ms(250);
    CHECK(fake_count(&f, &f.keepalives) == before && fake_count(&f, &f.hellos) == 2,
          "the thread left a replaced segment alone (%d KeepAlives, %d Hellos)",
          fake_count(&f, &f.keepalives) - before, fake_count(&f, &f.hellos));
    CHECK_RC(c, kvd_client_stats(c, 0, &st), KVD_ERR_RESTARTED);
    CHECK(strstr(kvd_client_last_error(c), "sequences are gone") != NULL, "%s",
          kvd_client_last_error(c));
    CHECK_RC(c, kvd_client_hello(c, &info), KVD_OK);
    CHECK(info && info->arena_generation == 7, "the new segment is mapped");
    kvd_hello_info_free(info);
    CHECK(fake_count(&f, &f.adopt_keepalives) == 1, "nothing adopted from a new segment");
    kvd_client_free(c);
    fake_stop(&f);
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    TEST(test_names);
    TEST(test_evicted_error);
    TEST(test_keep_alive_and_pin_bytes);
    TEST(test_create_pinned);
    TEST(test_keepalive_renews_idle_client);
    TEST(test_keepalive_never_interleaves);
    TEST(test_keepalive_errors_stay_private);
    TEST(test_close_is_prompt);
    TEST(test_memory_stats);
    TEST(test_sequence_lease);
    TEST(test_events_decode);
    TEST(test_client_events);
    TEST(test_prefix_wire);
    TEST(test_prefix_stats);
    TEST(test_remote_restore_wire);
    TEST(test_remote_stats);
    TEST(test_query_position_runs);
    TEST(test_rejoin_after_restart);
    TEST(test_rejoin_from_keepalive_thread);
    return harness_summary();
}
