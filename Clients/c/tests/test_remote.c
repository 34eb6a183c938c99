/*
 * libkvdclient's remote tier against a real kvd, driven by Tests/e2e/test_c_remote.py (which
 * starts redis-server and the daemon). Model tiny-f16: 2 layers, 2 KV heads, head_dim 8, 4 tokens
 * per page; sequences of 64 tokens (64 pages each).
 *
 *   test_remote on ENDPOINT    a daemon with the remote tier (eviction only, watermarks 0.9/0.8):
 *                              fills sequences until the memory manager evicts some, waits for
 *                              their offloads to ship, restores them with kvd_client_restore (from
 *                              the creating client, whose layout is remembered, and from a second
 *                              client, which learns it), reads them back bit-exact, appends
 *                              zero-copy, checks kvd_client_remote_stats and the refusals (a live
 *                              id, an unknown id, id 0, bad struct sizes). Prints
 *                              "REMOTE offloaded=N restored=N failures=N corrupted=N" last.
 *   test_remote off ENDPOINT   a daemon without it: Restore is KVD_ERR_FAILED_PRECONDITION,
 *                              kvd_client_remote_stats says enabled 0.
 *
 * Prints "ok - name" / "FAIL - name" per case and "N passed, M failed"; exits non-zero on failure.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "harness.h"
#include "kvd_client.h"

#define MODEL "tiny-f16"
#define L 2
#define H 2
#define D 8
#define ES 2      /* bytes per f16 */
#define T 64      /* tokens per filled sequence */
#define MAX_SEQS 1024

static const char *g_endpoint;

/* [L, H, n, D] arrays of random f16 bit patterns (NaNs and infinities included: bit-exactness). */
static uint16_t *random_kv(uint32_t n_tokens, uint64_t seed) {
    size_t n = (size_t)L * H * n_tokens * D;
    uint16_t *a = malloc(n * ES);
    if (!a) abort();
    uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        a[i] = (uint16_t)x;
    }
    return a;
}

/* [L, H, a_tokens + b_tokens, D]: a's tokens then b's, per head. */
static uint16_t *concat_kv(const uint16_t *a, uint32_t a_tokens, const uint16_t *b,
                           uint32_t b_tokens) {
    uint32_t n = a_tokens + b_tokens;
    uint16_t *out = malloc((size_t)L * H * n * D * ES);
    if (!out) abort();
    for (size_t h = 0; h < (size_t)L * H; h++) {
        memcpy(out + h * n * D, a + h * a_tokens * D, (size_t)a_tokens * D * ES);
        memcpy(out + (h * n + a_tokens) * D, b + h * b_tokens * D, (size_t)b_tokens * D * ES);
    }
    return out;
}

/* `seq` holds exactly the n tokens of keys/values, in PAGES and INLINE modes. */
static void check_sequence(kvd_client *c, uint64_t seq, uint32_t n, const uint16_t *keys,
                           const uint16_t *values, const char *what) {
    const kvd_query_mode modes[2] = {KVD_QUERY_PAGES, KVD_QUERY_INLINE};
    size_t need = (size_t)n * D * ES;
    uint8_t *kb = malloc(need), *vb = malloc(need);
    if (!kb || !vb) abort();
    for (int m = 0; m < 2; m++) {
        kvd_query_result *q = NULL;
        kvd_result rc = kvd_client_query(c, seq, modes[m], NULL, 0, &q);
        CHECK_RC(c, rc, KVD_OK);
        if (rc) continue;
        CHECK(q->num_heads == L * H && q->length == n, "%s mode %d: %zu heads, length %" PRIu64,
              what, modes[m], q->num_heads, q->length);
        for (size_t h = 0; h < q->num_heads && h < L * H; h++) {
            size_t needed = 0;
            CHECK(q->heads[h].num_tokens == n, "%s: head %zu has %u tokens, want %u", what, h,
                  q->heads[h].num_tokens, n);
            if (q->heads[h].num_tokens != n) continue;
            CHECK(kvd_query_copy_head(q, h, kb, vb, need, &needed) == KVD_OK && needed == need,
                  "%s: copy_head %zu", what, h);
            CHECK(memcmp(kb, keys + h * n * D, need) == 0, "%s mode %d: K of head %zu differs",
                  what, modes[m], h);
            CHECK(memcmp(vb, values + h * n * D, need) == 0, "%s mode %d: V of head %zu differs",
                  what, modes[m], h);
        }
        kvd_query_result_free(q);
    }
    free(kb);
    free(vb);
}

static kvd_client *connect_client(const char *name) {
    kvd_client_options o;
    memset(&o, 0, sizeof o);
    o.struct_size = sizeof o;
    o.timeout_ms = 10000;
    o.client_name = name;
    /* No KeepAlive of our own in between: the daemon's request count shows what a call sent. */
    o.disable_keepalive = 1;
    kvd_client *c = NULL;
    char err[256];
    if (kvd_client_connect(g_endpoint, &o, &c, err, sizeof err) != KVD_OK)
        printf("    connect: %s\n", err);
    return c;
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Requests the daemon answered so far (Stats counts itself after reading the figure). */
static uint64_t requests(kvd_client *c) {
    kvd_stats st;
    memset(&st, 0, sizeof st);
    kvd_result rc = kvd_client_stats(c, 0, &st);
    CHECK_RC(c, rc, KVD_OK);
    return st.requests;
}

/* Requests a zero-copy append of `n` tokens to `seq` sent (Reserve + Commit, plus a Stats if the
 * client had to learn the layout), with its result. */
static uint64_t zero_copy_append(kvd_client *c, uint64_t seq, uint32_t n, const uint16_t *k,
                                 const uint16_t *v, kvd_append_result *r) {
    uint64_t before = requests(c);
    CHECK_RC(c, kvd_client_append_zero_copy(c, seq, KVD_DTYPE_F16, L, H, n, D, k, v, r), KVD_OK);
    uint64_t after = requests(c);
    return after - before - 1; /* the first Stats is counted in `after` */
}

static uint64_t g_made[MAX_SEQS];
static size_t g_n_made;

/* A new sequence of T tokens whose K/V is random_kv(T, 2i + 1) / random_kv(T, 2i + 2). */
static int fill_one(kvd_client *c) {
    if (g_n_made == MAX_SEQS) return 0;
    uint64_t id = 0;
    kvd_result rc = kvd_client_create_sequence(c, MODEL, 0, NULL, &id);
    CHECK_RC(c, rc, KVD_OK);
    if (rc) return 0;
    uint64_t i = g_n_made;
    uint16_t *k = random_kv(T, 2 * i + 1), *v = random_kv(T, 2 * i + 2);
    rc = kvd_client_append(c, id, KVD_DTYPE_F16, L, H, T, D, k, v, NULL);
    CHECK_RC(c, rc, KVD_OK);
    free(k);
    free(v);
    g_made[g_n_made++] = id;
    return rc == KVD_OK;
}

static void expected_kv(size_t i, uint16_t **k, uint16_t **v) {
    *k = random_kv(T, 2 * i + 1);
    *v = random_kv(T, 2 * i + 2);
}

static void test_restore_evicted(void) {
    kvd_client *a = connect_client("kvd-c-remote-a");
    REQUIRE(a, "connect");
    kvd_remote_stats rs;
    memset(&rs, 0, sizeof rs);
    rs.struct_size = sizeof rs;
    CHECK_RC(a, kvd_client_remote_stats(a, &rs), KVD_OK);
    CHECK(rs.enabled == 1 && rs.offloaded == 0 && rs.restored == 0 && rs.queued == 0,
          "fresh remote tier: enabled %d offloaded %" PRIu64 " restored %" PRIu64, rs.enabled,
          rs.offloaded, rs.restored);

    /* Fill to 95% of the pages: above the high watermark, the manager evicts idle sequences. */
    for (int i = 0; i < 20; i++) REQUIRE(fill_one(a), "fill");
    kvd_stats st;
    memset(&st, 0, sizeof st);
    CHECK_RC(a, kvd_client_stats(a, 0, &st), KVD_OK);
    uint64_t per = (uint64_t)L * H * T / 4;
    uint64_t used = st.total_pages - st.free_pages;
    uint64_t target = (uint64_t)st.total_pages * 95 / 100;
    uint64_t more = (target > used ? (target - used) / per : 0) + 1;
    for (uint64_t i = 0; i < more; i++) REQUIRE(fill_one(a), "fill");
    sleep_ms(500);
    kvd_memory_stats ms;
    int settled = 0;
    for (int tries = 0; tries < 200 && !settled; tries++) {
        memset(&ms, 0, sizeof ms);
        ms.struct_size = sizeof ms;
        CHECK_RC(a, kvd_client_memory_stats(a, &ms), KVD_OK);
        CHECK_RC(a, kvd_client_stats(a, 0, &st), KVD_OK);
        settled = ms.evictions > 0 &&
                  (uint64_t)(st.total_pages - st.free_pages) * 10 <= (uint64_t)st.total_pages * 8;
        if (!settled) sleep_ms(50);
    }
    REQUIRE(settled, "the manager did not evict within 10 s (%" PRIu64 " evictions)",
            ms.evictions);

    /* Which ones went: their ids answer EVICTED, pointing at Restore. */
    size_t evicted[MAX_SEQS], n_evicted = 0; /* indexes into g_made */
    for (size_t i = 0; i < g_n_made; i++) {
        kvd_result rc = kvd_client_stats(a, g_made[i], &st);
        if (rc == KVD_OK) continue;
        CHECK_RC(a, rc, KVD_ERR_EVICTED);
        CHECK(strstr(kvd_client_last_error(a), "send Restore") != NULL, "%s",
              kvd_client_last_error(a));
        evicted[n_evicted++] = i;
    }
    CHECK(n_evicted == ms.evictions && n_evicted >= 2, "%zu evicted, the manager counts %" PRIu64,
          n_evicted, ms.evictions);
    REQUIRE(n_evicted >= 2, "need two evicted sequences");
    printf("    %zu sequences made, %zu evicted\n", g_n_made, n_evicted);

    /* Their offloads ship. */
    int shipped = 0;
    for (int tries = 0; tries < 200 && !shipped; tries++) {
        CHECK_RC(a, kvd_client_remote_stats(a, &rs), KVD_OK);
        shipped = rs.queued == 0 && rs.offloaded + rs.offload_failures + rs.offload_dropped >=
                                        n_evicted;
        if (!shipped) sleep_ms(50);
    }
    CHECK(shipped && rs.offloaded == n_evicted && rs.offload_failures == 0 &&
          rs.offload_dropped == 0 && rs.queued_bytes == 0,
          "offloaded %" PRIu64 " failures %" PRIu64 " dropped %" PRIu64 " queued %u", rs.offloaded,
          rs.offload_failures, rs.offload_dropped, rs.queued);
    CHECK(rs.offloaded_bytes > rs.offloaded * 2 * (uint64_t)L * H * T * D * ES,
          "offloaded bytes %" PRIu64 " (blobs: K/V plus headers)", rs.offloaded_bytes);

    /* The creating client restores the first: its remembered layout serves a zero-copy append
     * with no extra request. */
    size_t i0 = evicted[0];
    uint64_t s0 = g_made[i0];
    kvd_restore_result r;
    memset(&r, 0, sizeof r);
    CHECK_RC(a, kvd_client_restore(a, s0, &r), KVD_OK);
    CHECK(r.sequence_id == s0 && r.length == T && r.generation == 1 && r.from_remote == 1 &&
          r.restore_us > 0 && r.bytes == 2 * (uint64_t)L * H * T * D * ES,
          "restore: id %" PRIu64 " length %" PRIu64 " generation %" PRIu64 " from_remote %d "
          "us %" PRIu64 " bytes %" PRIu64, r.sequence_id, r.length, r.generation, r.from_remote,
          r.restore_us, r.bytes);
    uint16_t *k0, *v0;
    expected_kv(i0, &k0, &v0);
    check_sequence(a, s0, T, k0, v0, "restored by its creator");
    uint16_t *xk = random_kv(3, 901), *xv = random_kv(3, 902);
    kvd_append_result ar;
    memset(&ar, 0, sizeof ar);
    uint64_t sent = zero_copy_append(a, s0, 3, xk, xv, &ar);
    CHECK(ar.length == T + 3 && ar.first_position == T, "append after restore: length %" PRIu64
          " first position %" PRIu64, ar.length, ar.first_position);
    CHECK(sent == 2, "zero-copy append to a restored sequence the client created sent %" PRIu64
          " requests, want 2 (Reserve, Commit)", sent);
    uint16_t *k0x = concat_kv(k0, T, xk, 3), *v0x = concat_kv(v0, T, xv, 3);
    check_sequence(a, s0, T + 3, k0x, v0x, "restored by its creator, then appended");

    /* Restoring a live id: ALREADY_EXISTS, the daemon's code, nothing changed. */
    CHECK_RC(a, kvd_client_restore(a, s0, &r), KVD_ERR_ALREADY_EXISTS);
    CHECK(kvd_client_last_server_code(a) == 3 && strstr(kvd_client_last_error(a), "live") != NULL,
          "code %d: %s", kvd_client_last_server_code(a), kvd_client_last_error(a));
    /* An id that never was: NOT_FOUND; id 0: refused by the client. */
    CHECK_RC(a, kvd_client_restore(a, 123456789, &r), KVD_ERR_NOT_FOUND);
    CHECK_RC(a, kvd_client_restore(a, 0, &r), KVD_ERR_ARGUMENT);
    check_sequence(a, s0, T + 3, k0x, v0x, "after the refused restores");

    /* Another client of the tenant restores the second: it learns the layout with one Stats for
     * its first zero-copy append, then needs none. */
    kvd_client *b = connect_client("kvd-c-remote-b");
    REQUIRE(b, "connect b");
    size_t i1 = evicted[1];
    uint64_t s1 = g_made[i1];
    memset(&r, 0, sizeof r);
    CHECK_RC(b, kvd_client_restore(b, s1, NULL), KVD_OK);
    uint16_t *k1, *v1;
    expected_kv(i1, &k1, &v1);
    check_sequence(b, s1, T, k1, v1, "restored by another client");
    sent = zero_copy_append(b, s1, 3, xk, xv, &ar);
    CHECK(ar.length == T + 3, "append: length %" PRIu64, ar.length);
    CHECK(sent == 3, "first zero-copy append to a foreign restored sequence sent %" PRIu64
          " requests, want 3 (Stats, Reserve, Commit)", sent);
    sent = zero_copy_append(b, s1, 3, xk, xv, &ar);
    CHECK(sent == 2 && ar.length == T + 6, "second append sent %" PRIu64 ", length %" PRIu64,
          sent, ar.length);
    uint16_t *k1x = concat_kv(k1, T, xk, 3), *v1x = concat_kv(v1, T, xv, 3);
    uint16_t *k1xx = concat_kv(k1x, T + 3, xk, 3), *v1xx = concat_kv(v1x, T + 3, xv, 3);
    check_sequence(b, s1, T + 6, k1xx, v1xx, "restored by another client, then appended");
    CHECK_RC(b, kvd_client_release(b, s1, NULL, NULL), KVD_OK);
    CHECK_RC(a, kvd_client_release(a, s0, NULL, NULL), KVD_OK);

    /* The rest, each released after its check (restoring all at once would push the tenant over
     * the high watermark again). */
    for (size_t j = 2; j < n_evicted; j++) {
        size_t i = evicted[j];
        memset(&r, 0, sizeof r);
        CHECK_RC(a, kvd_client_restore(a, g_made[i], &r), KVD_OK);
        CHECK(r.sequence_id == g_made[i] && r.length == T && r.from_remote == 1,
              "restore %" PRIu64 ": length %" PRIu64 " from_remote %d", g_made[i], r.length,
              r.from_remote);
        uint16_t *k, *v;
        expected_kv(i, &k, &v);
        check_sequence(a, g_made[i], T, k, v, "restored");
        free(k);
        free(v);
        CHECK_RC(a, kvd_client_release(a, g_made[i], NULL, NULL), KVD_OK);
    }

    /* The counts. */
    memset(&rs, 0xab, sizeof rs);
    rs.struct_size = sizeof rs;
    CHECK_RC(a, kvd_client_remote_stats(a, &rs), KVD_OK);
    CHECK(rs.struct_size == sizeof rs && rs.enabled == 1 && rs.offloaded == n_evicted &&
          rs.restored == n_evicted && rs.restore_failures == 0 && rs.restore_corrupted == 0 &&
          rs.offload_failures == 0 && rs.offload_dropped == 0 && rs.last_restore_us > 0 &&
          rs.mean_restore_us > 0 && rs.queued == 0,
          "offloaded %" PRIu64 " restored %" PRIu64 " failures %" PRIu64 " corrupted %" PRIu64
          " last %" PRIu64 " mean %" PRIu64, rs.offloaded, rs.restored, rs.restore_failures,
          rs.restore_corrupted, rs.last_restore_us, rs.mean_restore_us);
    /* A shorter struct (a program built against an older header) gets only its bytes. */
    kvd_remote_stats sh;
    memset(&sh, 0xab, sizeof sh);
    sh.struct_size = offsetof(kvd_remote_stats, restored);
    CHECK_RC(a, kvd_client_remote_stats(a, &sh), KVD_OK);
    CHECK(sh.offloaded == rs.offloaded && sh.restored == 0xababababababababull,
          "short struct: restored %" PRIx64, sh.restored);
    sh.struct_size = sizeof sh + 8;
    CHECK_RC(a, kvd_client_remote_stats(a, &sh), KVD_ERR_ARGUMENT);
    CHECK_RC(a, kvd_client_remote_stats(a, NULL), KVD_ERR_ARGUMENT);
    printf("REMOTE offloaded=%" PRIu64 " restored=%" PRIu64 " failures=%" PRIu64
           " corrupted=%" PRIu64 "\n", rs.offloaded, rs.restored, rs.restore_failures,
           rs.restore_corrupted);

    free(k0), free(v0), free(k0x), free(v0x), free(k1), free(v1), free(k1x), free(v1x);
    free(k1xx), free(v1xx), free(xk), free(xv);
    kvd_client_free(b);
    kvd_client_free(a);
}

static void test_no_remote_tier(void) {
    kvd_client *c = connect_client("kvd-c-remote-off");
    REQUIRE(c, "connect");
    kvd_restore_result r;
    memset(&r, 0xab, sizeof r);
    CHECK_RC(c, kvd_client_restore(c, 42, &r), KVD_ERR_FAILED_PRECONDITION);
    CHECK(kvd_client_last_server_code(c) == 5 &&
          strstr(kvd_client_last_error(c), "remote.enabled") != NULL, "code %d: %s",
          kvd_client_last_server_code(c), kvd_client_last_error(c));
    CHECK(r.sequence_id == 0xababababababababull, "out changed on failure");
    /* Also for a live id: there is no tier to restore from. */
    uint64_t id = 0;
    CHECK_RC(c, kvd_client_create_sequence(c, MODEL, 0, NULL, &id), KVD_OK);
    CHECK_RC(c, kvd_client_restore(c, id, NULL), KVD_ERR_FAILED_PRECONDITION);
    CHECK_RC(c, kvd_client_release(c, id, NULL, NULL), KVD_OK);
    kvd_remote_stats rs;
    memset(&rs, 0xab, sizeof rs);
    rs.struct_size = sizeof rs;
    CHECK_RC(c, kvd_client_remote_stats(c, &rs), KVD_OK);
    CHECK(rs.enabled == 0 && rs.offloaded == 0 && rs.offloaded_bytes == 0 && rs.restored == 0 &&
          rs.offload_failures == 0 && rs.offload_dropped == 0 && rs.restore_failures == 0 &&
          rs.restore_corrupted == 0 && rs.last_restore_us == 0 && rs.mean_restore_us == 0 &&
          rs.queued == 0 && rs.queued_bytes == 0, "no tier: enabled %d, all zero", rs.enabled);
    kvd_client_free(c);
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc != 3 || (strcmp(argv[1], "on") != 0 && strcmp(argv[1], "off") != 0)) {
        fprintf(stderr, "usage: %s on|off ENDPOINT\n", argv[0]);
        return 2;
    }
    g_endpoint = argv[2];
    if (strcmp(argv[1], "on") == 0)
        TEST(test_restore_evicted);
    else
        TEST(test_no_remote_tier);
    return harness_summary();
}
