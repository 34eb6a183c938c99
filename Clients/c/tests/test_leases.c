/*
 * libkvdclient's leases, pins, events and memory-manager figures against a real kvd, started by
 * Tests/e2e/test_client_leases.py with a 1 s lease, a 1 s grace and an events endpoint (model
 * tiny-f16: 2 layers, 2 KV heads, head_dim 8, 4 tokens per page).
 *
 *   test_leases ENDPOINT
 *
 * Prints "ok - name" / "FAIL - name" per case and "N passed, M failed"; exits 1 on any failure.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "harness.h"
#include "kvd_client.h"

#define MODEL "tiny-f16"
#define LEASE_MS 1000
#define GRACE_MS 1000
/* The manager notices an expired lease or grace on its next pass; allow it a few seconds beyond. */
#define RELEASE_DEADLINE_MS (LEASE_MS + GRACE_MS + 8000)

static const char *g_endpoint;

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static kvd_client *connect_with(int keepalive) {
    kvd_client_options o;
    memset(&o, 0, sizeof o);
    o.struct_size = sizeof o;
    o.timeout_ms = 5000;
    o.client_name = "kvd-c-leases";
    o.disable_keepalive = !keepalive;
    kvd_client *c = NULL;
    char err[256];
    if (kvd_client_connect(g_endpoint, &o, &c, err, sizeof err) != KVD_OK)
        printf("    connect: %s\n", err);
    return c;
}

/* A new sequence holding `tokens` tokens of zeros; 0 on failure (reported). */
static uint64_t filled(kvd_client *c, uint32_t tokens, const kvd_sequence_options *opts) {
    uint64_t id = 0;
    kvd_result rc = kvd_client_create_sequence_ex(c, MODEL, opts, &id);
    CHECK_RC(c, rc, KVD_OK);
    size_t n = (size_t)2 * 2 * tokens * 8;
    uint16_t *kv = calloc(n, sizeof *kv);
    if (rc == KVD_OK) CHECK_RC(c, kvd_client_append(c, id, KVD_DTYPE_F16, 2, 2, tokens, 8, kv, kv, NULL), KVD_OK);
    free(kv);
    return rc == KVD_OK ? id : 0;
}

static void test_hello_reports_the_lease(void) {
    kvd_client *c = connect_with(0);
    REQUIRE(c, "client");
    kvd_hello_info *info = NULL;
    CHECK_RC(c, kvd_client_hello(c, &info), KVD_OK);
    REQUIRE(info, "hello info");
    CHECK(info->lease_ms == LEASE_MS && info->orphan_grace_ms == GRACE_MS, "lease %llu grace %llu",
          (unsigned long long)info->lease_ms, (unsigned long long)info->orphan_grace_ms);
    CHECK(strncmp(info->events_endpoint, "ipc://", 6) == 0, "events endpoint \"%s\"",
          info->events_endpoint);
    kvd_hello_info_free(info);
    kvd_client_free(c);
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* kvd_client_memory_stats and kvd_client_sequence_lease agree with kvd_client_stats and with Pin;
 * naming a sequence renews its lease (lease_remaining_ms about the whole lease), idle_ms counts
 * from the request before. Runs before the other cases leave sequences behind. */
static void test_memory_figures(void) {
    kvd_client *c = connect_with(1);
    REQUIRE(c, "client");
    kvd_memory_stats m0, m;
    memset(&m0, 0, sizeof m0);
    m0.struct_size = sizeof m0;
    CHECK_RC(c, kvd_client_memory_stats(c, &m0), KVD_OK);
    CHECK(m0.low > 0 && m0.low < m0.high && m0.high <= 1, "watermarks %g %g", m0.low, m0.high);
    CHECK(m0.pinned_sequences == 0 && m0.pinned_pages == 0 && m0.orphans == 0 &&
          m0.orphans_released == 0, "a fresh daemon: %u pinned, %u pages, %u orphans, %llu released",
          m0.pinned_sequences, m0.pinned_pages, m0.orphans, (unsigned long long)m0.orphans_released);

    uint64_t seq = filled(c, 9, NULL);
    REQUIRE(seq, "sequence");
    kvd_stats st;
    CHECK_RC(c, kvd_client_stats(c, seq, &st), KVD_OK);
    sleep_ms(300);
    kvd_sequence_lease l;
    memset(&l, 0, sizeof l);
    l.struct_size = sizeof l;
    CHECK_RC(c, kvd_client_sequence_lease(c, seq, &l), KVD_OK);
    CHECK(l.sequence_id == seq && l.pages == st.sequence.pages && l.pages > 0 && l.length == 9 &&
          l.generation == st.sequence.generation && l.tokens_held == st.sequence.tokens_held &&
          l.bytes == (uint64_t)l.pages * st.page_bytes,
          "lease vs stats: pages %u/%u length %llu tokens %llu/%llu bytes %llu", l.pages,
          st.sequence.pages, (unsigned long long)l.length, (unsigned long long)l.tokens_held,
          (unsigned long long)st.sequence.tokens_held, (unsigned long long)l.bytes);
    CHECK(l.idle_ms >= 250 && l.idle_ms < 5000, "idle %llu ms after 300 ms", (unsigned long long)l.idle_ms);
    CHECK(l.lease_remaining_ms > LEASE_MS / 2 && l.lease_remaining_ms <= LEASE_MS && !l.orphan,
          "remaining %lld ms, orphan %d", (long long)l.lease_remaining_ms, l.orphan);
    CHECK(!l.pinned && l.manager_compactions == 0, "pinned %d compactions %u", l.pinned,
          l.manager_compactions);
    CHECK_RC(c, kvd_client_sequence_lease(c, seq, &l), KVD_OK);
    CHECK(l.idle_ms < 250, "idle %llu ms right after the previous call", (unsigned long long)l.idle_ms);

    uint32_t pinned_pages = 0;
    CHECK_RC(c, kvd_client_pin(c, seq, 1, NULL, &pinned_pages), KVD_OK);
    CHECK_RC(c, kvd_client_sequence_lease(c, seq, &l), KVD_OK);
    CHECK(l.pinned == 1, "pinned %d", l.pinned);
    memset(&m, 0, sizeof m);
    m.struct_size = sizeof m;
    CHECK_RC(c, kvd_client_memory_stats(c, &m), KVD_OK);
    CHECK(m.pinned_sequences == m0.pinned_sequences + 1 && m.pinned_pages == m0.pinned_pages + l.pages &&
          m.pinned_pages == pinned_pages, "%u pinned sequences, %u pages (Pin said %u), want %u pages",
          m.pinned_sequences, m.pinned_pages, pinned_pages, m0.pinned_pages + l.pages);
    CHECK(m.high == m0.high && m.low == m0.low && m.reclaim_passes >= m0.reclaim_passes,
          "watermarks moved or passes went back");
    CHECK_RC(c, kvd_client_pin(c, seq, 0, NULL, NULL), KVD_OK);
    CHECK_RC(c, kvd_client_memory_stats(c, &m), KVD_OK);
    CHECK(m.pinned_sequences == m0.pinned_sequences && m.pinned_pages == m0.pinned_pages,
          "after unpin: %u sequences %u pages", m.pinned_sequences, m.pinned_pages);

    CHECK_RC(c, kvd_client_release(c, seq, NULL, NULL), KVD_OK);
    memset(&l, 0xab, sizeof l);
    l.struct_size = sizeof l;
    CHECK_RC(c, kvd_client_sequence_lease(c, seq, &l), KVD_ERR_NOT_FOUND);
    CHECK(l.struct_size == sizeof l && l.pages == 0xabababab, "out changed by a failed call");
    kvd_client_free(c);
}

/* Pin and unpin report the tenant's pinned pages; a sequence created pinned counts from the start. */
static void test_pin_round_trip(void) {
    kvd_client *c = connect_with(1);
    REQUIRE(c, "client");
    uint64_t plain = filled(c, 9, NULL);
    kvd_stats st;
    CHECK_RC(c, kvd_client_stats(c, plain, &st), KVD_OK);
    uint32_t pages = st.sequence.pages, pinned_pages = 99;
    int pinned = -1;
    CHECK_RC(c, kvd_client_pin(c, plain, 1, &pinned, &pinned_pages), KVD_OK);
    CHECK(pinned == 1 && pinned_pages == pages, "pinned %d, %u pinned pages, want %u", pinned,
          pinned_pages, pages);
    CHECK_RC(c, kvd_client_pin(c, plain, 0, &pinned, &pinned_pages), KVD_OK);
    CHECK(pinned == 0 && pinned_pages == 0, "unpinned %d, %u pinned pages", pinned, pinned_pages);

    kvd_sequence_options o;
    memset(&o, 0, sizeof o);
    o.struct_size = sizeof o;
    o.pinned = 1;
    uint64_t born = filled(c, 5, &o);
    CHECK_RC(c, kvd_client_stats(c, born, &st), KVD_OK);
    uint32_t born_pages = st.sequence.pages;
    /* Pinning `plain` again: the tenant's pinned pages now include `born`'s, pinned at creation. */
    CHECK_RC(c, kvd_client_pin(c, plain, 1, &pinned, &pinned_pages), KVD_OK);
    CHECK(pinned_pages == pages + born_pages, "%u pinned pages, want %u + %u", pinned_pages, pages,
          born_pages);
    CHECK_RC(c, kvd_client_pin(c, plain ^ 0x5a5a5a5aull, 1, NULL, NULL), KVD_ERR_NOT_FOUND);
    kvd_client_free(c);
}

/*
 * Three owners idle at once while an observer watches the events (it never names their sequences:
 * a request naming a sequence touches it and makes the requester its owner): `kept` (keep-alive
 * on) and `adopted` (created without keep-alive, adopted by the keep-alive client) survive lease +
 * grace; `lost` (no keep-alive) is released — LEASE_EXPIRED then ORPHAN_RELEASED — and answers
 * KVD_ERR_EVICTED.
 */
static void test_lease_lifecycle(void) {
    kvd_client *keeper = connect_with(1), *loser = connect_with(0), *giver = connect_with(0);
    kvd_client *observer = connect_with(0);
    REQUIRE(keeper && loser && giver && observer, "clients");
    kvd_hello_info *info = NULL;
    CHECK_RC(observer, kvd_client_hello(observer, &info), KVD_OK);
    REQUIRE(info, "hello info");
    char topic[128];
    snprintf(topic, sizeof topic, "kvd.%s", info->tenant);
    kvd_hello_info_free(info);
    kvd_events *ev = NULL;
    CHECK_RC(observer, kvd_client_events(observer, &ev), KVD_OK);
    REQUIRE(ev, "subscriber");
    CHECK(kvd_events_ready(ev, 5000) == KVD_OK, "ready: %s", kvd_events_last_error(ev));
    struct timespec settle = {0, 50 * 1000000L}; /* the subscription follows the handshake */
    nanosleep(&settle, NULL);

    uint64_t kept = filled(keeper, 9, NULL), lost = filled(loser, 9, NULL);
    uint64_t adopted = filled(giver, 9, NULL);
    uint64_t adopt[2] = {adopted, adopted ^ 0x5a5a5a5aull};
    kvd_keep_alive_result r;
    CHECK_RC(keeper, kvd_client_keep_alive(keeper, adopt, 2, &r), KVD_OK);
    CHECK(r.lease_ms == LEASE_MS && r.adopted == 1 && r.num_missing == 1 && r.missing[0] == adopt[1],
          "adopt: lease %llu adopted %u missing %zu", (unsigned long long)r.lease_ms, r.adopted,
          r.num_missing);
    kvd_client_free(giver);

    /* Nobody makes a call from here on: only the keeper's thread renews. */
    int expired = 0, released = 0, in_order = 0, about_kept = 0;
    kvd_event e;
    memset(&e, 0, sizeof e);
    e.struct_size = sizeof e;
    int64_t deadline = now_ms() + RELEASE_DEADLINE_MS, linger_until = 0;
    while (now_ms() < (linger_until ? linger_until : deadline)) {
        if (kvd_events_next(ev, 50, &e) != KVD_OK) continue;
        if (e.sequence_id == kept || e.sequence_id == adopted) about_kept++;
        if (e.sequence_id != lost) continue;
        if (e.kind == KVD_EVENT_LEASE_EXPIRED) expired = 1;
        if (e.kind == KVD_EVENT_ORPHAN_RELEASED && !released) {
            released = 1;
            in_order = expired;
            CHECK(e.pages_freed > 0 && e.reason[0] && strcmp(e.topic, topic) == 0,
                  "release event: %u pages, reason \"%s\", topic %s", e.pages_freed, e.reason,
                  e.topic);
            /* `kept` and `adopted` are as old: they would be released about now without renewal. */
            linger_until = now_ms() + 1000;
        }
    }
    CHECK(released && in_order, "events for the sequence without keep-alive: expired %d released %d",
          expired, released);
    CHECK(about_kept == 0, "%d events about the renewed sequences", about_kept);
    kvd_stats st;
    CHECK_RC(keeper, kvd_client_stats(keeper, kept, &st), KVD_OK);
    CHECK_RC(keeper, kvd_client_stats(keeper, adopted, &st), KVD_OK);
    CHECK(st.sequence.length == 9, "adopted length %llu", (unsigned long long)st.sequence.length);
    CHECK_RC(loser, kvd_client_stats(loser, lost, &st), KVD_ERR_EVICTED);
    CHECK(kvd_client_last_server_code(loser) == 10 && strstr(kvd_client_last_error(loser), "lease") != NULL,
          "code %d: %s", kvd_client_last_server_code(loser), kvd_client_last_error(loser));

    int64_t t0 = now_ms();
    CHECK_RC(keeper, kvd_client_close(keeper), KVD_OK);
    CHECK(now_ms() - t0 < 500, "close took %lld ms", (long long)(now_ms() - t0));
    kvd_events_free(ev);
    kvd_client_free(keeper);
    kvd_client_free(loser);
    kvd_client_free(observer);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s ENDPOINT\n", argv[0]);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    g_endpoint = argv[1];
    TEST(test_hello_reports_the_lease);
    TEST(test_memory_figures);
    TEST(test_pin_round_trip);
    TEST(test_lease_lifecycle);
    return harness_summary();
}
