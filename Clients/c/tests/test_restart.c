/*
 * libkvdclient across a restart of a durable kvd (SIGKILL, then started again on the same config:
 * it adopts its segment), driven by Tests/e2e/test_c_restart.py. Model tiny-f16: 2 layers, 2 KV
 * heads, head_dim 8, 4 tokens per page.
 *
 *   test_restart open ENDPOINT               the open tenant, keep-alive on: an idle client's
 *                                            keep-alive thread rejoins and adopts by itself
 *   test_restart token ENDPOINT TENANT TOKEN a token tenant, keep-alive off: the first call after
 *                                            the restart is refused as not bound, and the client
 *                                            rejoins and sends it again by itself
 *
 * Creates sequence A (5 tokens) and B (7 tokens), prints "A=<id> B=<id>", "instance=<id>" and
 * "READY kill", and waits for a line on stdin while the driver kills and restarts the daemon.
 * Then, on the same client: appends 3 tokens to A inline and 2 zero-copy, reads A (10 tokens) and
 * B back bit-exact, prints "instance=<id>" of the new daemon, and "N passed, M failed".
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "kvd_client.h"

#define MODEL "tiny-f16"
#define L 2
#define H 2
#define D 8
#define ES 2 /* bytes per f16 */

static const char *g_mode, *g_endpoint, *g_tenant, *g_token;

/* [L, H, T, D] arrays of random f16 bit patterns (NaNs and infinities included: bit-exactness). */
static uint16_t *random_kv(uint32_t T, uint64_t seed) {
    size_t n = (size_t)L * H * T * D;
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

/* Tokens [from, from + n) of a [L, H, T, D] array, as a new [L, H, n, D] array. */
static uint16_t *tokens_of(const uint16_t *a, uint32_t T, uint32_t from, uint32_t n) {
    uint16_t *out = malloc((size_t)L * H * n * D * ES);
    if (!out) abort();
    for (size_t h = 0; h < (size_t)L * H; h++)
        memcpy(out + h * n * D, a + (h * T + from) * D, (size_t)n * D * ES);
    return out;
}

/* `seq` holds exactly the T tokens of keys/values, in PAGES and INLINE modes. */
static void check_sequence(kvd_client *c, uint64_t seq, uint32_t T, const uint16_t *keys,
                           const uint16_t *values, const char *what) {
    const kvd_query_mode modes[2] = {KVD_QUERY_PAGES, KVD_QUERY_INLINE};
    size_t need = (size_t)T * D * ES;
    uint8_t *kb = malloc(need), *vb = malloc(need);
    if (!kb || !vb) abort();
    for (int m = 0; m < 2; m++) {
        kvd_query_result *q = NULL;
        kvd_result rc = kvd_client_query(c, seq, modes[m], NULL, 0, &q);
        CHECK_RC(c, rc, KVD_OK);
        if (rc) continue;
        CHECK(q->num_heads == L * H && q->length == T, "%s mode %d: %zu heads, length %" PRIu64,
              what, modes[m], q->num_heads, q->length);
        for (size_t h = 0; h < q->num_heads && h < L * H; h++) {
            size_t needed = 0;
            CHECK(q->heads[h].num_tokens == T, "%s: head %zu has %u tokens, want %u", what, h,
                  q->heads[h].num_tokens, T);
            if (q->heads[h].num_tokens != T) continue;
            CHECK(kvd_query_copy_head(q, h, kb, vb, need, &needed) == KVD_OK && needed == need,
                  "%s: copy_head %zu", what, h);
            CHECK(memcmp(kb, keys + h * T * D, need) == 0, "%s mode %d: K of head %zu differs",
                  what, modes[m], h);
            CHECK(memcmp(vb, values + h * T * D, need) == 0, "%s mode %d: V of head %zu differs",
                  what, modes[m], h);
        }
        kvd_query_result_free(q);
    }
    free(kb);
    free(vb);
}

static kvd_client *connect_client(void) {
    kvd_client_options o;
    memset(&o, 0, sizeof o);
    o.struct_size = sizeof o;
    /* Short: a KeepAlive that went to the killed daemon is given up (and retried) quickly, well
     * within the restarted daemon's lease of the sequences it restored. */
    o.timeout_ms = 1000;
    o.client_name = "kvd-c-restart";
    o.tenant = g_tenant;
    o.token = g_token;
    /* The token run tests the caller's path: no keep-alive thread that could rejoin first. */
    o.disable_keepalive = strcmp(g_mode, "token") == 0;
    kvd_client *c = NULL;
    char err[256];
    if (kvd_client_connect(g_endpoint, &o, &c, err, sizeof err) != KVD_OK)
        printf("    connect: %s\n", err);
    return c;
}

static void test_restart_is_transparent(void) {
    kvd_client *c = connect_client();
    REQUIRE(c, "connect");
    kvd_hello_info *before = NULL;
    CHECK_RC(c, kvd_client_hello(c, &before), KVD_OK);
    REQUIRE(before, "hello");
    CHECK(before->durable == 1 && before->instance_id != 0, "durable %d instance %" PRIu64,
          before->durable, before->instance_id);
    uint64_t a = 0, b = 0;
    CHECK_RC(c, kvd_client_create_sequence(c, MODEL, 0, NULL, &a), KVD_OK);
    CHECK_RC(c, kvd_client_create_sequence(c, MODEL, 0, NULL, &b), KVD_OK);
    uint16_t *ak = random_kv(10, 1), *av = random_kv(10, 2);
    uint16_t *bk = random_kv(7, 3), *bv = random_kv(7, 4);
    uint16_t *k1 = tokens_of(ak, 10, 0, 5), *v1 = tokens_of(av, 10, 0, 5);
    uint16_t *k2 = tokens_of(ak, 10, 5, 3), *v2 = tokens_of(av, 10, 5, 3);
    uint16_t *k3 = tokens_of(ak, 10, 8, 2), *v3 = tokens_of(av, 10, 8, 2);
    CHECK_RC(c, kvd_client_append(c, a, KVD_DTYPE_F16, L, H, 5, D, k1, v1, NULL), KVD_OK);
    CHECK_RC(c, kvd_client_append(c, b, KVD_DTYPE_F16, L, H, 7, D, bk, bv, NULL), KVD_OK);
    printf("A=%" PRIu64 " B=%" PRIu64 "\n", a, b);
    printf("instance=%" PRIu64 "\n", before->instance_id);
    printf("READY kill\n");
    fflush(stdout);
    char line[64];
    if (!fgets(line, sizeof line, stdin)) exit(3);

    /* The same client, never reconnected by hand: the first call goes to the new daemon. */
    kvd_append_result r;
    memset(&r, 0, sizeof r);
    CHECK_RC(c, kvd_client_append(c, a, KVD_DTYPE_F16, L, H, 3, D, k2, v2, &r), KVD_OK);
    CHECK(r.length == 8 && r.first_position == 5, "inline append: length %" PRIu64
          " first position %" PRIu64, r.length, r.first_position);
    CHECK_RC(c, kvd_client_append_zero_copy(c, a, KVD_DTYPE_F16, L, H, 2, D, k3, v3, &r), KVD_OK);
    CHECK(r.length == 10 && r.first_position == 8, "zero-copy append: length %" PRIu64,
          r.length);
    check_sequence(c, a, 10, ak, av, "A");
    check_sequence(c, b, 7, bk, bv, "B");
    kvd_hello_info *after = NULL;
    CHECK_RC(c, kvd_client_hello(c, &after), KVD_OK);
    if (after) {
        CHECK(after->instance_id != 0 && after->instance_id != before->instance_id,
              "instance %" PRIu64 " -> %" PRIu64, before->instance_id, after->instance_id);
        CHECK(after->durable == 1 && after->arena_generation == before->arena_generation &&
              strcmp(after->shm_name, before->shm_name) == 0, "the same segment, adopted");
        if (g_tenant[0])
            CHECK(strcmp(after->tenant, g_tenant) == 0, "tenant \"%s\"", after->tenant);
        printf("instance=%" PRIu64 "\n", after->instance_id);
    }
    kvd_hello_info_free(after);
    kvd_hello_info_free(before);
    free(ak), free(av), free(bk), free(bv);
    free(k1), free(v1), free(k2), free(v2), free(k3), free(v3);
    kvd_client_free(c);
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 3 && strcmp(argv[1], "open") == 0) {
        g_tenant = g_token = "";
    } else if (argc == 5 && strcmp(argv[1], "token") == 0) {
        g_tenant = argv[3];
        g_token = argv[4];
    } else {
        fprintf(stderr, "usage: %s open ENDPOINT | token ENDPOINT TENANT TOKEN\n", argv[0]);
        return 2;
    }
    g_mode = argv[1];
    g_endpoint = argv[2];
    TEST(test_restart_is_transparent);
    return harness_summary();
}
