/*
 * Tests of libkvdclient against a real kvd (started by Tests/e2e/test_c_client.py on the e2e test
 * configuration: models tiny-f16/tiny-bf16/tiny-f32 [2 layers, 2 KV heads, 4 q heads, head_dim 8,
 * 4 tokens per page], wide-f32, and the policies "stream_small" and "snap_small").
 *
 *   test_kvd_client all ENDPOINT            every call, bit-exactness, every bad-input case
 *   test_kvd_client write-cross ENDPOINT DIR  append known data from C for Python to read
 *   test_kvd_client read-cross ENDPOINT DIR   read data Python appended, compare with DIR files
 *   test_kvd_client prefix ENDPOINT         only the prefix-reuse cases (also part of "all")
 *   test_kvd_client prefix-write ENDPOINT DIR  append with token ids from C for Python to reuse
 *   test_kvd_client prefix-read ENDPOINT DIR   look up, adopt and fork what Python appended with ids
 *   test_kvd_client restart ENDPOINT        interactive: waits for lines on stdin while the driver
 *                                           stops / restarts the daemon
 *   test_kvd_client curve ENDPOINT SERVER_PUB CLIENT_BASE OTHER_BASE
 *                                           a CURVE tcp endpoint (Tests/e2e/test_endpoints_curve.py):
 *                                           round trip with CLIENT_BASE.{pub,key} (tenant "alpha"),
 *                                           no reply with OTHER_BASE's key, the wrong server key,
 *                                           or no CURVE
 * Prints "ok - ..." / "FAIL - ..." per case and "N passed, M failed"; exits 1 on any failure.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <zmq.h>

#include "harness.h"
#include "kvd/v1/envelope.pb-c.h"
#include "kvd_client.h"

#define L 2
#define H 2
#define D 8
#define P 4
#define QH 4

static const char *g_endpoint;

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void) {
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_state = x;
}

/* Random bit patterns (NaNs with payloads, infinities, -0, subnormals): bit-exactness for real. */
static void *random_bits(size_t bytes) {
    uint8_t *p = malloc(bytes);
    for (size_t i = 0; i < bytes; i++) p[i] = (uint8_t)(rnd() >> 24);
    return p;
}

/* Finite values in [-4, 4) in `dtype`, for compaction tests. */
static void *random_finite(kvd_dtype dtype, size_t n) {
    size_t es = kvd_dtype_size(dtype);
    uint8_t *p = malloc(n * es);
    for (size_t i = 0; i < n; i++) {
        float f = (float)((double)(rnd() >> 11) / 9007199254740992.0 * 8.0 - 4.0);
        if (dtype == KVD_DTYPE_F32) memcpy(p + 4 * i, &f, 4);
        else {
            uint16_t h = dtype == KVD_DTYPE_F16 ? kvd_f32_to_f16(f) : kvd_f32_to_bf16(f);
            memcpy(p + 2 * i, &h, 2);
        }
    }
    return p;
}

static kvd_client *connect_ok(int timeout_ms) {
    kvd_client_options o;
    memset(&o, 0, sizeof o);
    o.struct_size = sizeof o;
    o.timeout_ms = timeout_ms;
    o.client_name = "kvd-c-tests";
    kvd_client *c = NULL;
    char err[256];
    kvd_result rc = kvd_client_connect(g_endpoint, &o, &c, err, sizeof err);
    if (rc != KVD_OK) printf("    connect failed: %s %s\n", kvd_result_name(rc), err);
    return c;
}

/* Head h's K (or V) of a [L, H, T, D] tensor of element size es. */
static const uint8_t *head_of(const void *t, size_t h, uint32_t T, size_t es) {
    return (const uint8_t *)t + h * (size_t)T * D * es;
}

/* The sequence holds exactly keys/values [L, H, T, D] with positions 0..T-1 and log-weights +0,
 * in PAGES, INLINE and GATHER mode. */
static void check_sequence(kvd_client *c, uint64_t seq, kvd_dtype dt, uint32_t T,
                           const void *keys, const void *values, const char *what) {
    size_t es = kvd_dtype_size(dt);
    kvd_query_mode modes[3] = {KVD_QUERY_PAGES, KVD_QUERY_INLINE, KVD_QUERY_GATHER};
    for (int m = 0; m < 3; m++) {
        kvd_query_result *q = NULL;
        kvd_result rc = kvd_client_query(c, seq, modes[m], NULL, 0, &q);
        CHECK_RC(c, rc, KVD_OK);
        if (rc) continue;
        CHECK(q->num_heads == L * H, "%s mode %d: %zu heads", what, modes[m], q->num_heads);
        CHECK(q->dtype == dt && q->head_dim == D && q->length == T, "%s: result header", what);
        size_t need = (size_t)T * D * es;
        uint8_t *kb = malloc(need + 1), *vb = malloc(need + 1);
        for (size_t h = 0; h < q->num_heads && h < L * H; h++) {
            const kvd_head_view *v = &q->heads[h];
            CHECK(v->layer == h / H && v->head == h % H, "%s: head order", what);
            CHECK(v->num_tokens == T, "%s: head %zu has %u tokens, want %u", what, h,
                  v->num_tokens, T);
            if (v->num_tokens != T) continue;
            for (uint32_t t = 0; t < T; t++) {
                uint32_t lw;
                memcpy(&lw, &v->log_weights[t], 4);
                CHECK(v->positions[t] == (int32_t)t && lw == 0, "%s: position/log-weight %u", what, t);
            }
            size_t needed = 0;
            CHECK(kvd_query_copy_head(q, h, kb, vb, need, &needed) == KVD_OK && needed == need,
                  "%s: copy_head", what);
            CHECK(memcmp(kb, head_of(keys, h, T, es), need) == 0, "%s mode %d: K of head %zu differs",
                  what, modes[m], h);
            CHECK(memcmp(vb, head_of(values, h, T, es), need) == 0,
                  "%s mode %d: V of head %zu differs", what, modes[m], h);
            if (modes[m] == KVD_QUERY_PAGES) {
                /* the page views themselves, page by page */
                CHECK(v->num_pages == (T + P - 1) / P, "%s: %u pages", what, v->num_pages);
                for (uint32_t p = 0; p < v->num_pages; p++) {
                    uint32_t cnt = T - p * P < P ? T - p * P : P;
                    size_t off = (size_t)p * P * D * es;
                    CHECK(memcmp(v->key_pages[p], head_of(keys, h, T, es) + off, cnt * D * es) == 0,
                          "%s: K page view %u", what, p);
                    CHECK(memcmp(v->value_pages[p], head_of(values, h, T, es) + off,
                                 cnt * D * es) == 0, "%s: V page view %u", what, p);
                }
            } else {
                CHECK(memcmp(v->keys, head_of(keys, h, T, es), need) == 0, "%s: contiguous K", what);
                CHECK(memcmp(v->values, head_of(values, h, T, es), need) == 0, "%s: contiguous V",
                      what);
            }
        }
        free(kb);
        free(vb);
        kvd_query_result_free(q);
    }
}

/* [L, H, a+b, D] -> the [L, H, n, D] slice starting at token `start` (a fresh copy). */
static void *token_slice(const void *t, uint32_t T, uint32_t start, uint32_t n, size_t es) {
    uint8_t *out = malloc((size_t)L * H * n * D * es + 1);
    for (size_t h = 0; h < L * H; h++)
        memcpy(out + h * n * D * es, head_of(t, h, T, es) + (size_t)start * D * es, (size_t)n * D * es);
    return out;
}

/* ============================================================================================= */

static void test_helpers(void) {
    CHECK(kvd_dtype_size(KVD_DTYPE_F16) == 2 && kvd_dtype_size(KVD_DTYPE_BF16) == 2 &&
          kvd_dtype_size(KVD_DTYPE_F32) == 4 && kvd_dtype_size((kvd_dtype)7) == 0, "dtype sizes");
    CHECK(kvd_f32_to_f16(1.0f) == 0x3c00 && kvd_f32_to_f16(-2.0f) == 0xc000 &&
          kvd_f32_to_f16(65504.0f) == 0x7bff && kvd_f32_to_f16(1e6f) == 0x7c00 &&
          kvd_f32_to_f16(5.9604645e-8f) == 0x0001 && kvd_f32_to_f16(-0.0f) == 0x8000,
          "f32 -> f16");
    CHECK(kvd_f16_to_f32(0x3555) > 0.333f && kvd_f16_to_f32(0x3555) < 0.3334f, "f16 -> f32");
    for (uint32_t h = 0; h < 0x10000; h++) {  /* every non-NaN half round-trips */
        if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) continue;
        if (kvd_f32_to_f16(kvd_f16_to_f32((uint16_t)h)) != h) {
            CHECK(0, "f16 0x%04x does not round-trip", h);
            break;
        }
    }
    CHECK(kvd_f32_to_bf16(1.0f) == 0x3f80 && kvd_bf16_to_f32(0x4040) == 3.0f, "bf16");
    CHECK(strcmp(kvd_result_name(KVD_ERR_TIMEOUT), "KVD_ERR_TIMEOUT") == 0 &&
          strcmp(kvd_result_name((kvd_result)12345), "KVD_ERR_?") == 0, "result names");
    kvd_param p = kvd_param_string("pooling", "max");
    CHECK(p.type == KVD_PARAM_STRING && strcmp(p.value.s, "max") == 0, "param ctor");
}

static void test_connect_bad_arguments(void) {
    char err[200];
    kvd_client *c = (kvd_client *)1;
    CHECK(kvd_client_connect(g_endpoint, NULL, NULL, err, sizeof err) == KVD_ERR_ARGUMENT,
          "NULL out");
    CHECK(strstr(err, "out is NULL") != NULL, "message: %s", err);
    CHECK(kvd_client_connect(NULL, NULL, &c, err, sizeof err) == KVD_ERR_ARGUMENT && c == NULL,
          "NULL endpoint");
    CHECK(kvd_client_connect("", NULL, &c, NULL, 0) == KVD_ERR_ARGUMENT, "empty endpoint");
    kvd_client_options o;
    memset(&o, 0, sizeof o);
    CHECK(kvd_client_connect(g_endpoint, &o, &c, err, sizeof err) == KVD_ERR_ARGUMENT,
          "struct_size 0");
    CHECK(strstr(err, "struct_size") != NULL, "message: %s", err);
    CHECK(kvd_client_connect("nope://x", NULL, &c, err, sizeof err) == KVD_ERR_ARGUMENT && !c,
          "bad transport");
    CHECK(strstr(err, "nope://x") != NULL, "message: %s", err);
    char tiny[8];
    CHECK(kvd_client_connect("nope://x", NULL, &c, tiny, sizeof tiny) == KVD_ERR_ARGUMENT &&
          strlen(tiny) == 7, "error buffer truncated");
    /* defaults: NULL options */
    CHECK(kvd_client_connect(g_endpoint, NULL, &c, err, sizeof err) == KVD_OK && c, "NULL options");
    kvd_client_free(c);
    kvd_client_free(NULL);
}

static void test_null_client(void) {
    kvd_stats st;
    uint64_t id;
    kvd_query_result *q;
    kvd_reservation *r;
    uint8_t buf[64] = {0};
    CHECK(kvd_client_hello(NULL, NULL) == KVD_ERR_ARGUMENT, "hello");
    CHECK(kvd_client_create_sequence(NULL, "tiny-f16", 0, NULL, &id) == KVD_ERR_ARGUMENT, "create");
    CHECK(kvd_client_append(NULL, 1, KVD_DTYPE_F16, 1, 1, 1, 8, buf, buf, NULL) == KVD_ERR_ARGUMENT,
          "append");
    CHECK(kvd_client_append_zero_copy(NULL, 1, KVD_DTYPE_F16, 1, 1, 1, 8, buf, buf, NULL) ==
          KVD_ERR_ARGUMENT, "append zc");
    CHECK(kvd_client_reserve(NULL, 1, 1, &r) == KVD_ERR_ARGUMENT, "reserve");
    CHECK(kvd_client_commit(NULL, NULL, 0, NULL) == KVD_ERR_ARGUMENT, "commit");
    CHECK(kvd_client_abort(NULL, NULL) == KVD_ERR_ARGUMENT, "abort");
    CHECK(kvd_client_query(NULL, 1, KVD_QUERY_PAGES, NULL, 0, &q) == KVD_ERR_ARGUMENT, "query");
    CHECK(kvd_client_compact(NULL, 1, NULL, NULL) == KVD_ERR_ARGUMENT, "compact");
    CHECK(kvd_client_release(NULL, 1, NULL, NULL) == KVD_ERR_ARGUMENT, "release");
    CHECK(kvd_client_stats(NULL, 0, &st) == KVD_ERR_ARGUMENT, "stats");
    CHECK(kvd_client_stage(NULL, 1, 8, NULL, NULL, NULL) == KVD_ERR_ARGUMENT, "stage");
    CHECK(kvd_client_close(NULL) == KVD_ERR_ARGUMENT, "close");
    CHECK(strstr(kvd_client_last_error(NULL), "NULL") != NULL, "last_error(NULL)");
    CHECK(kvd_client_last_result(NULL) == KVD_ERR_ARGUMENT, "last_result(NULL)");
    CHECK(kvd_reservation_write(NULL, buf, buf, 64) == KVD_ERR_ARGUMENT, "reservation_write");
    CHECK(kvd_reservation_key(NULL, 0, 0) == NULL, "reservation_key");
    size_t need = 1;
    CHECK(kvd_query_copy_head(NULL, 0, buf, buf, 64, &need) == KVD_ERR_ARGUMENT && need == 0, "copy");
    CHECK(kvd_query_find_head(NULL, 0, 0) == NULL && kvd_query_head_bytes(NULL, 0) == 0, "find");
    CHECK(kvd_hello_find_model(NULL, "x") == NULL, "find_model");
    kvd_query_result_free(NULL);
    kvd_reservation_free(NULL);
    kvd_compact_result_free(NULL);
    kvd_hello_info_free(NULL);
}

static void test_hello(void) {
    kvd_client *c = connect_ok(5000);
    REQUIRE(c, "connect");
    kvd_hello_info *info = NULL;
    CHECK_RC(c, kvd_client_hello(c, &info), KVD_OK);
    REQUIRE(info, "no info");
    CHECK(info->protocol_version == 1, "protocol %u", info->protocol_version);
    CHECK(info->server_version && info->server_version[0], "server version");
    CHECK(info->shm_name && strncmp(info->shm_name, "/kvd-test-", 10) == 0, "shm %s", info->shm_name);
    CHECK(info->page_count > 0 && info->page_bytes >= 2 * P * D * 4, "pages");
    CHECK(info->layout_version == 1 && info->arena_generation != 0, "layout/generation");
    CHECK(info->max_tokens_per_append == 64 && info->max_message_bytes == 65536 &&
          info->max_sequences == 16, "limits %u %llu %u", info->max_tokens_per_append,
          (unsigned long long)info->max_message_bytes, info->max_sequences);
    const kvd_model_layout *m = kvd_hello_find_model(info, "tiny-bf16");
    CHECK(m && m->layers == L && m->kv_heads == H && m->q_heads == QH && m->head_dim == D &&
          m->page_tokens == P && m->dtype == KVD_DTYPE_BF16, "tiny-bf16 layout");
    CHECK(kvd_hello_find_model(info, "no-such-model") == NULL, "unknown model");
    int streaming = 0, snap_needs = 0;
    for (size_t i = 0; i < info->num_methods; i++) {
        if (strcmp(info->methods[i].name, "streamingllm") == 0) {
            streaming = 1;
            int sinks = 0;
            for (size_t k = 0; k < info->methods[i].num_params; k++)
                sinks |= strcmp(info->methods[i].params[k].name, "sinks") == 0;
            CHECK(sinks, "streamingllm has a sinks parameter");
        }
        if (strcmp(info->methods[i].name, "snapkv") == 0) snap_needs = info->methods[i].needs_queries;
    }
    CHECK(streaming && snap_needs, "methods");
    int stream_small = 0;
    for (size_t i = 0; i < info->num_policies; i++)
        if (strcmp(info->policies[i].name, "stream_small") == 0)
            stream_small = strcmp(info->policies[i].method, "streamingllm") == 0 &&
                           info->policies[i].num_params == 2;
    CHECK(stream_small, "policy stream_small listed");
    /* A second Hello keeps the mapping; the first info object stays valid after it and after the
     * client is freed (reference counted). */
    kvd_hello_info *again = NULL;
    CHECK_RC(c, kvd_client_hello(c, &again), KVD_OK);
    CHECK(again && again->arena_generation == info->arena_generation, "same arena");
    CHECK(strcmp(kvd_client_last_error(c), "") == 0 && kvd_client_last_result(c) == KVD_OK,
          "no error after success");
    kvd_client_free(c);
    CHECK(strcmp(info->models[0].name, "tiny-f16") == 0, "info outlives the client");
    kvd_hello_info_free(info);
    kvd_hello_info_free(again);
}

static void test_sequences_and_stats(void) {
    kvd_client *c = connect_ok(5000);
    REQUIRE(c, "connect");
    uint64_t a = 0, b = 0;
    CHECK_RC(c, kvd_client_create_sequence(c, "tiny-f16", 0, "tenant-c", &a), KVD_OK);
    CHECK(a != 0, "server picked an id");
    CHECK_RC(c, kvd_client_create_sequence(c, "tiny-f32", 777001, NULL, &b), KVD_OK);
    CHECK(b == 777001, "requested id");
    CHECK_RC(c, kvd_client_create_sequence(c, "tiny-f32", 777001, NULL, NULL), KVD_ERR_ALREADY_EXISTS);
    CHECK(strncmp(kvd_client_last_error(c), "kvd: ", 5) == 0 && kvd_client_last_server_code(c) == 3,
          "daemon message: %s", kvd_client_last_error(c));
    CHECK_RC(c, kvd_client_create_sequence(c, "no-such-model", 0, NULL, NULL), KVD_ERR_NOT_FOUND);
    CHECK(strstr(kvd_client_last_error(c), "no-such-model") != NULL, "%s", kvd_client_last_error(c));
    CHECK_RC(c, kvd_client_create_sequence(c, NULL, 0, NULL, NULL), KVD_ERR_ARGUMENT);
    CHECK_RC(c, kvd_client_create_sequence(c, "", 0, NULL, NULL), KVD_ERR_ARGUMENT);

    kvd_stats st;
    CHECK_RC(c, kvd_client_stats(c, 0, &st), KVD_OK);
    CHECK(st.total_pages > 0 && st.free_pages <= st.total_pages && st.sequences >= 2 &&
          !st.has_sequence && st.requests > 0, "arena stats");
    uint32_t free_before = st.free_pages;
    size_t n = (size_t)L * H * 5 * D * 2;
    void *k = random_bits(n), *v = random_bits(n);
    kvd_append_result ar;
    CHECK_RC(c, kvd_client_append(c, a, KVD_DTYPE_F16, L, H, 5, D, k, v, &ar), KVD_OK);
    CHECK(ar.length == 5 && ar.first_position == 0 && ar.generation == 1, "append result");
    CHECK_RC(c, kvd_client_stats(c, a, &st), KVD_OK);
    CHECK(st.has_sequence && st.sequence.sequence_id == a && st.sequence.length == 5 &&
          st.sequence.pages == L * H * 2 && st.sequence.tokens_held == L * H * 5 &&
          strcmp(st.sequence.model, "tiny-f16") == 0 && strcmp(st.sequence.tenant, "tenant-c") == 0,
          "sequence stats");
    CHECK(st.free_pages == free_before - L * H * 2, "pages used");
    CHECK_RC(c, kvd_client_stats(c, 999999, &st), KVD_ERR_NOT_FOUND);
    CHECK_RC(c, kvd_client_stats(c, 0, NULL), KVD_ERR_ARGUMENT);

    uint32_t pf = 0;
    uint64_t bf = 0;
    CHECK_RC(c, kvd_client_release(c, a, &pf, &bf), KVD_OK);
    CHECK(pf == L * H * 2 && bf == pf * st.page_bytes, "release freed %u pages, %llu bytes", pf,
          (unsigned long long)bf);
    CHECK_RC(c, kvd_client_release(c, a, NULL, NULL), KVD_ERR_NOT_FOUND);
    CHECK_RC(c, kvd_client_release(c, b, NULL, NULL), KVD_OK);
    CHECK_RC(c, kvd_client_stats(c, 0, &st), KVD_OK);
    CHECK(st.free_pages == free_before, "all pages back");
    free(k);
    free(v);
    kvd_client_free(c);
}

/* Inline vs zero-copy, every dtype, chunkings that start mid-page: bit-identical in every mode. */
static void test_inline_vs_zero_copy(void) {
    kvd_client *c = connect_ok(5000);
    REQUIRE(c, "connect");
    const char *models[3] = {"tiny-f16", "tiny-bf16", "tiny-f32"};
    kvd_dtype dts[3] = {KVD_DTYPE_F16, KVD_DTYPE_BF16, KVD_DTYPE_F32};
    for (int m = 0; m < 3; m++) {
        size_t es = kvd_dtype_size(dts[m]);
        uint32_t T = 19;
        void *k = random_bits((size_t)L * H * T * D * es), *v = random_bits((size_t)L * H * T * D * es);
        uint64_t si = 0, sz = 0;
        CHECK_RC(c, kvd_client_create_sequence(c, models[m], 0, "inline", &si), KVD_OK);
        CHECK_RC(c, kvd_client_create_sequence(c, models[m], 0, "zero-copy", &sz), KVD_OK);
        uint32_t cuts_i[] = {0, 5, 6, 19}, cuts_z[] = {0, 3, 4, 13, 19};
        for (int i = 0; i + 1 < 4; i++) {
            uint32_t n = cuts_i[i + 1] - cuts_i[i];
            void *ks = token_slice(k, T, cuts_i[i], n, es), *vs = token_slice(v, T, cuts_i[i], n, es);
            kvd_append_result r;
            CHECK_RC(c, kvd_client_append(c, si, dts[m], L, H, n, D, ks, vs, &r), KVD_OK);
            CHECK(r.first_position == cuts_i[i] && r.length == cuts_i[i + 1], "inline positions");
            free(ks);
            free(vs);
        }
        for (int i = 0; i + 1 < 5; i++) {
            uint32_t n = cuts_z[i + 1] - cuts_z[i];
            void *ks = token_slice(k, T, cuts_z[i], n, es), *vs = token_slice(v, T, cuts_z[i], n, es);
            kvd_append_result r;
            CHECK_RC(c, kvd_client_append_zero_copy(c, sz, dts[m], L, H, n, D, ks, vs, &r), KVD_OK);
            CHECK(r.first_position == cuts_z[i] && r.length == cuts_z[i + 1], "zero-copy positions");
            free(ks);
            free(vs);
        }
        check_sequence(c, si, dts[m], T, k, v, models[m]);
        check_sequence(c, sz, dts[m], T, k, v, models[m]);
        CHECK_RC(c, kvd_client_release(c, si, NULL, NULL), KVD_OK);
        CHECK_RC(c, kvd_client_release(c, sz, NULL, NULL), KVD_OK);
        free(k);
        free(v);
    }
    kvd_client_free(c);
}

/* Reserve / write through the slot pointers / partial commit / abort, and their errors. */
static void test_reserve_commit(void) {
    kvd_client *c = connect_ok(5000);
    REQUIRE(c, "connect");
    uint64_t s = 0;
    CHECK_RC(c, kvd_client_create_sequence(c, "tiny-f32", 0, NULL, &s), KVD_OK);
    const uint32_t T = 6;
    size_t es = 4, bytes = (size_t)L * H * T * D * es;
    uint8_t *k = random_bits(bytes), *v = random_bits(bytes);
    CHECK_RC(c, kvd_client_append(c, s, KVD_DTYPE_F32, L, H, 1, D, k, v, NULL), KVD_OK);

    kvd_reservation *r = NULL;
    CHECK_RC(c, kvd_client_reserve(c, s, T, &r), KVD_OK);
    REQUIRE(r, "no reservation");
    CHECK(r->num_tokens == T && r->page_tokens == P && r->num_heads == L * H && r->head_dim == D &&
          r->dtype == KVD_DTYPE_F32 && r->sequence_id == s, "reservation header");
    for (size_t h = 0; h < r->num_heads; h++) {
        CHECK(r->heads[h].layer == h / H && r->heads[h].head == h % H, "head order");
        CHECK(r->heads[h].first_slot == 1 && r->heads[h].num_pages == 2, "slots: first %u, %u pages",
              r->heads[h].first_slot, r->heads[h].num_pages);
    }
    CHECK(kvd_reservation_key(r, L * H, 0) == NULL && kvd_reservation_key(r, 0, T) == NULL,
          "out-of-range slot");
    /* While a reservation is open, Append / Reserve / Compact are refused. */
    CHECK_RC(c, kvd_client_append(c, s, KVD_DTYPE_F32, L, H, 1, D, k, v, NULL),
             KVD_ERR_FAILED_PRECONDITION);
    kvd_reservation *r2 = (kvd_reservation *)1;
    CHECK_RC(c, kvd_client_reserve(c, s, 1, &r2), KVD_ERR_FAILED_PRECONDITION);
    CHECK(r2 == NULL, "out cleared on failure");
    /* write the tokens one by one through the slot pointers (what an engine does in place) */
    const uint8_t *ks = k, *vs = v;
    for (size_t h = 0; h < r->num_heads; h++)
        for (uint32_t t = 0; t < T; t++) {
            memcpy(kvd_reservation_key(r, h, t), ks + (h * T + t) * D * es, D * es);
            memcpy(kvd_reservation_value(r, h, t), vs + (h * T + t) * D * es, D * es);
        }
    CHECK(kvd_reservation_write(r, k, v, bytes - 1) == KVD_ERR_BUFFER_TOO_SMALL, "write too small");
    /* commit more than reserved -> FAILED_PRECONDITION; then commit 4 of 6 */
    CHECK_RC(c, kvd_client_commit(c, r, T + 1, NULL), KVD_ERR_FAILED_PRECONDITION);
    kvd_append_result ar;
    CHECK_RC(c, kvd_client_commit(c, r, 4, &ar), KVD_OK);
    CHECK(ar.length == 5 && ar.first_position == 1, "partial commit: length %llu",
          (unsigned long long)ar.length);
    CHECK_RC(c, kvd_client_commit(c, r, 0, NULL), KVD_ERR_NOT_FOUND); /* already committed */
    kvd_reservation_free(r);

    /* expected: token 0 of k/v (first append) then tokens 0..3 of the reservation data */
    kvd_query_result *q = NULL;
    CHECK_RC(c, kvd_client_query(c, s, KVD_QUERY_INLINE, NULL, 0, &q), KVD_OK);
    if (q) {
        for (size_t h = 0; h < q->num_heads; h++) {
            const uint8_t *got = q->heads[h].keys;
            CHECK(q->heads[h].num_tokens == 5, "5 tokens");
            /* the first append read k as [L, H, 1, D]: head h's token is row h */
            CHECK(memcmp(got, ks + h * D * es, D * es) == 0, "token 0 (first append)");
            CHECK(memcmp(got + D * es, ks + h * T * D * es, 4 * D * es) == 0, "committed tokens");
            CHECK(memcmp((const uint8_t *)q->heads[h].values + D * es, vs + h * T * D * es,
                         4 * D * es) == 0, "committed V");
        }
        kvd_query_result_free(q);
    }

    /* abort: sequence unchanged */
    CHECK_RC(c, kvd_client_reserve(c, s, 3, &r), KVD_OK);
    if (r) {
        CHECK(kvd_reservation_write(r, k, v, bytes) == KVD_OK, "write");
        CHECK_RC(c, kvd_client_abort(c, r), KVD_OK);
        CHECK_RC(c, kvd_client_abort(c, r), KVD_ERR_NOT_FOUND);
        kvd_reservation_free(r);
    }
    kvd_stats st;
    CHECK_RC(c, kvd_client_stats(c, s, &st), KVD_OK);
    CHECK(st.sequence.length == 5 && st.sequence.reserved_tokens == 0, "abort left length 5");
    CHECK_RC(c, kvd_client_reserve(c, s, 0, &r), KVD_ERR_ARGUMENT);
    CHECK_RC(c, kvd_client_reserve(c, s, 1, NULL), KVD_ERR_ARGUMENT);
    CHECK_RC(c, kvd_client_reserve(c, s, 65, &r), KVD_ERR_INVALID_ARGUMENT); /* > max per append */
    CHECK_RC(c, kvd_client_reserve(c, 424242, 1, &r), KVD_ERR_NOT_FOUND);
    CHECK_RC(c, kvd_client_commit(c, NULL, 1, NULL), KVD_ERR_ARGUMENT);
    CHECK_RC(c, kvd_client_abort(c, NULL), KVD_ERR_ARGUMENT);
    CHECK_RC(c, kvd_client_release(c, s, NULL, NULL), KVD_OK);
    free(k);
    free(v);
    kvd_client_free(c);
}

/* Commit.keep_reserved: one Reserve, then one commit per token; the rest stays reserved. */
static void test_commit_keep(void) {
    kvd_client *c = connect_ok(5000);
    REQUIRE(c, "connect");
    uint64_t s = 0;
    CHECK_RC(c, kvd_client_create_sequence(c, "tiny-f16", 0, NULL, &s), KVD_OK);
    const uint32_t T = 7;
    size_t es = 2, bytes = (size_t)L * H * T * D * es;
    uint8_t *k = random_bits(bytes), *v = random_bits(bytes);
    kvd_reservation *r = NULL;
    CHECK_RC(c, kvd_client_reserve(c, s, T, &r), KVD_OK);
    REQUIRE(r, "no reservation");
    CHECK(kvd_reservation_write(r, k, v, bytes) == KVD_OK, "write");
    uint32_t ids[T];
    for (uint32_t t = 0; t < T; t++) ids[t] = 100 + t;
    for (uint32_t t = 0; t < T; t++) {
        kvd_append_result ar;
        uint32_t left = 99;
        CHECK_RC(c, kvd_client_commit_keep(c, r, 1, ids + t, 1, &ar, &left), KVD_OK);
        CHECK(ar.first_position == t && ar.length == t + 1 && left == T - 1 - t,
              "step %u: first %llu length %llu left %u", t, (unsigned long long)ar.first_position,
              (unsigned long long)ar.length, left);
        if (t == 2) {
            /* range errors change nothing */
            CHECK_RC(c, kvd_client_commit_keep(c, r, 0, NULL, 0, NULL, NULL), KVD_ERR_ARGUMENT);
            CHECK_RC(c, kvd_client_commit_keep(c, r, T, NULL, 0, NULL, NULL),
                     KVD_ERR_FAILED_PRECONDITION);
            CHECK_RC(c, kvd_client_commit_keep(c, r, 1, ids, 2, NULL, NULL), KVD_ERR_ARGUMENT);
            kvd_stats st;
            CHECK_RC(c, kvd_client_stats(c, s, &st), KVD_OK);
            CHECK(st.sequence.length == 3 && st.sequence.reserved_tokens == T - 3, "unchanged");
        }
    }
    CHECK_RC(c, kvd_client_commit_keep(c, r, 1, NULL, 0, NULL, NULL), KVD_ERR_NOT_FOUND); /* closed */
    kvd_reservation_free(r);
    check_sequence(c, s, KVD_DTYPE_F16, T, k, v, "commit_keep");
    /* abort after partial commits keeps the committed tokens */
    CHECK_RC(c, kvd_client_reserve(c, s, 5, &r), KVD_OK);
    if (r) {
        CHECK_RC(c, kvd_client_commit_keep(c, r, 2, NULL, 0, NULL, NULL), KVD_OK);
        CHECK_RC(c, kvd_client_abort(c, r), KVD_OK);
        kvd_reservation_free(r);
    }
    kvd_stats st;
    CHECK_RC(c, kvd_client_stats(c, s, &st), KVD_OK);
    CHECK(st.sequence.length == T + 2 && st.sequence.reserved_tokens == 0, "abort kept 2");
    CHECK_RC(c, kvd_client_commit_keep(c, NULL, 1, NULL, 0, NULL, NULL), KVD_ERR_ARGUMENT);
    CHECK_RC(c, kvd_client_release(c, s, NULL, NULL), KVD_OK);
    free(k);
    free(v);
    kvd_client_free(c);
}

/* kvd_pipeline_set_commit_every: one Commit per n tokens; other connections see tokens only once
 * committed, this client's next request sends them first; a refusal names the steps. */
static void test_pipeline_commit_every(void) {
    kvd_client *c = connect_ok(5000), *other = connect_ok(5000);
    REQUIRE(c && other, "connect");
    const uint32_t T = 100;
    size_t es = 2;
    uint8_t *k = random_bits((size_t)L * H * T * D * es), *v = random_bits((size_t)L * H * T * D * es);
    uint64_t s = 0;
    CHECK_RC(c, kvd_client_create_sequence(c, "tiny-f16", 0, NULL, &s), KVD_OK);
    kvd_pipeline *p = NULL;
    CHECK_RC(c, kvd_pipeline_open(c, s, 16, 2, &p), KVD_OK);
    REQUIRE(p, "no pipeline");
    CHECK_RC(c, kvd_pipeline_set_commit_every(p, 0), KVD_ERR_ARGUMENT);
    CHECK_RC(c, kvd_pipeline_set_commit_every(p, 6), KVD_OK);
    kvd_stats st;
    for (uint32_t t = 0; t < T; t++) {
        void *ks = token_slice(k, T, t, 1, es), *vs = token_slice(v, T, t, 1, es);
        CHECK_RC(c, kvd_pipeline_append(p, ks, vs, 1, &t, 1), KVD_OK);
        free(ks);
        free(vs);
        if (t == 2) {
            kvd_pipeline_status ps;
            kvd_pipeline_status_get(p, &ps);
            CHECK(ps.unsent == 3, "3 tokens wait for their commit, not %u", ps.unsent);
            CHECK_RC(other, kvd_client_stats(other, s, &st), KVD_OK);
            CHECK(st.sequence.length == 0, "another connection sees %llu tokens before the commit",
                  (unsigned long long)st.sequence.length);
            CHECK_RC(c, kvd_client_stats(c, s, &st), KVD_OK); /* sends the 3 first */
            CHECK(st.sequence.length == 3, "this client sees %llu", (unsigned long long)st.sequence.length);
        }
    }
    CHECK_RC(c, kvd_pipeline_flush(p), KVD_OK);
    CHECK_RC(other, kvd_client_stats(other, s, &st), KVD_OK);
    CHECK(st.sequence.length == T, "flushed: %llu", (unsigned long long)st.sequence.length);
    check_sequence(c, s, KVD_DTYPE_F16, T, k, v, "commit_every");
    /* a refused batched commit names its steps */
    CHECK_RC(c, kvd_client_release(c, s, NULL, NULL), KVD_OK);
    for (int t = 0; t < 3; t++) CHECK_RC(c, kvd_pipeline_append(p, k, v, 1, NULL, 0), KVD_OK);
    CHECK_RC(c, kvd_pipeline_flush(p), KVD_ERR_NOT_FOUND);
    CHECK(strstr(kvd_client_last_error(c), "steps 100-102") != NULL, "message: %s",
          kvd_client_last_error(c));
    CHECK_RC(c, kvd_pipeline_close(p), KVD_OK);
    free(k);
    free(v);
    kvd_client_free(other);
    kvd_client_free(c);
}

/* A zero-copy append of >= 1 MiB goes through streaming stores (kvd_reservation_write), starting
 * mid-page; it reads back bit-exact. Needs the "stream-f32" model (16 heads x 256 dims, 16 tokens
 * per page) that Tests/e2e/test_c_pipeline.py configures. */
static void test_zero_copy_streaming(void) {
    kvd_client *c = connect_ok(5000);
    REQUIRE(c, "connect");
    const uint32_t SL = 4, SH = 4, SD = 256, T = 43, first = 3;
    size_t tb = SD * 4, heads = SL * SH, bytes = heads * T * tb;
    uint8_t *k = random_bits(bytes), *v = random_bits(bytes);
    uint64_t s = 0;
    CHECK_RC(c, kvd_client_create_sequence(c, "stream-f32", 0, NULL, &s), KVD_OK);
    /* [L, H, T, D] -> the [L, H, n, D] slice from token `at` */
    uint8_t *ks = malloc(bytes), *vs = malloc(bytes);
    uint32_t cuts[3] = {0, first, T};
    for (int i = 0; i < 2; i++) {
        uint32_t n = cuts[i + 1] - cuts[i];
        for (size_t h = 0; h < heads; h++) {
            memcpy(ks + h * n * tb, k + (h * T + cuts[i]) * tb, n * tb);
            memcpy(vs + h * n * tb, v + (h * T + cuts[i]) * tb, n * tb);
        }
        CHECK_RC(c, kvd_client_append_zero_copy(c, s, KVD_DTYPE_F32, SL, SH, n, SD, ks, vs, NULL),
                 KVD_OK);
    }
    CHECK(2 * (size_t)(T - first) * tb * heads >= ((size_t)1 << 20), "the second append streams");
    kvd_query_result *q = NULL;
    CHECK_RC(c, kvd_client_query(c, s, KVD_QUERY_PAGES, NULL, 0, &q), KVD_OK);
    if (q) {
        for (size_t h = 0; h < q->num_heads; h++) {
            size_t need = 0;
            CHECK(kvd_query_copy_head(q, h, ks, vs, bytes, &need) == KVD_OK && need == T * tb,
                  "copy head %zu", h);
            CHECK(memcmp(ks, k + h * T * tb, T * tb) == 0, "K of head %zu differs", h);
            CHECK(memcmp(vs, v + h * T * tb, T * tb) == 0, "V of head %zu differs", h);
        }
        kvd_query_result_free(q);
    }
    CHECK_RC(c, kvd_client_release(c, s, NULL, NULL), KVD_OK);
    free(ks);
    free(vs);
    free(k);
    free(v);
    kvd_client_free(c);
}

/* Decode steps of test_pipeline_decode: 200 against a daemon with small pages ("pipeline"); "all"
 * runs on 4 KiB pages, where a 1 MiB arena holds ~190 pages, so fewer. */
static uint32_t g_pipeline_steps = 120;

/* kvd_pipeline_*: a decode loop of single-token steps stores what inline appends store; other calls
 * interleave with commits in flight; close gives the unused tail back. */
static void test_pipeline_decode(void) {
    kvd_client *c = connect_ok(5000);
    REQUIRE(c, "connect");
    const char *models[2] = {"tiny-f16", "tiny-f32"};
    kvd_dtype dts[2] = {KVD_DTYPE_F16, KVD_DTYPE_F32};
    for (int m = 0; m < 2; m++) {
        const uint32_t T = g_pipeline_steps;
        size_t es = kvd_dtype_size(dts[m]);
        uint8_t *k = random_bits((size_t)L * H * T * D * es), *v = random_bits((size_t)L * H * T * D * es);
        uint64_t s = 0;
        CHECK_RC(c, kvd_client_create_sequence(c, models[m], 0, NULL, &s), KVD_OK);
        kvd_pipeline *p = NULL;
        CHECK_RC(c, kvd_pipeline_open(c, s, m ? 64 : 7, m ? 1 : 4, &p), KVD_OK);
        REQUIRE(p, "no pipeline");
        for (uint32_t t = 0; t < T; t++) {
            void *ks = token_slice(k, T, t, 1, es), *vs = token_slice(v, T, t, 1, es);
            CHECK_RC(c, kvd_pipeline_append(p, ks, vs, 1, &t, 1), KVD_OK);
            free(ks);
            free(vs);
            if (t % 37 == 5) { /* commits in flight: Stats collects them first, then sees them */
                kvd_stats st;
                CHECK_RC(c, kvd_client_stats(c, s, &st), KVD_OK);
                CHECK(st.sequence.length == t + 1, "step %u: stats length %llu", t,
                      (unsigned long long)st.sequence.length);
            }
        }
        CHECK_RC(c, kvd_pipeline_flush(p), KVD_OK);
        kvd_pipeline_status ps;
        kvd_pipeline_status_get(p, &ps);
        CHECK(ps.steps == T && ps.confirmed_length == T && ps.sent_length == T && ps.in_flight == 0 &&
              !ps.failed, "status: %llu steps, %llu confirmed", (unsigned long long)ps.steps,
              (unsigned long long)ps.confirmed_length);
        CHECK_RC(c, kvd_pipeline_close(p), KVD_OK);
        check_sequence(c, s, dts[m], T, k, v, models[m]);
        kvd_stats st;
        CHECK_RC(c, kvd_client_stats(c, s, &st), KVD_OK);
        CHECK(st.sequence.reserved_tokens == 0 && st.sequence.pages == L * H * ((T + P - 1) / P),
              "close aborted the tail: %u pages", st.sequence.pages);
        CHECK_RC(c, kvd_client_release(c, s, NULL, NULL), KVD_OK);
        free(k);
        free(v);
    }
    kvd_client_free(c);
}

/* A refused commit is returned by the next call, names its step, and sticks; bad arguments. */
static void test_pipeline_failures(void) {
    kvd_client *c = connect_ok(5000);
    REQUIRE(c, "connect");
    uint64_t s = 0;
    CHECK_RC(c, kvd_client_create_sequence(c, "tiny-f32", 0, NULL, &s), KVD_OK);
    size_t tok = (size_t)L * H * D * 4;
    uint8_t *k = random_bits(tok * 2), *v = random_bits(tok * 2);
    kvd_pipeline *p = NULL;
    CHECK_RC(c, kvd_pipeline_open(c, s, 0, 1, &p), KVD_ERR_ARGUMENT);
    CHECK_RC(c, kvd_pipeline_open(c, s, 8, 0, &p), KVD_ERR_ARGUMENT);
    CHECK_RC(c, kvd_pipeline_open(c, 424242, 8, 1, &p), KVD_ERR_NOT_FOUND);
    CHECK_RC(c, kvd_pipeline_open(c, s, 8, 4, &p), KVD_OK);
    REQUIRE(p, "no pipeline");
    CHECK_RC(c, kvd_pipeline_append(p, NULL, v, 1, NULL, 0), KVD_ERR_ARGUMENT);
    CHECK_RC(c, kvd_pipeline_append(p, k, v, 0, NULL, 0), KVD_ERR_ARGUMENT);
    uint32_t one = 1;
    CHECK_RC(c, kvd_pipeline_append(p, k, v, 1, &one, 2), KVD_ERR_ARGUMENT);
    for (int t = 0; t < 10; t++) CHECK_RC(c, kvd_pipeline_append(p, k, v, 1, NULL, 0), KVD_OK);
    CHECK_RC(c, kvd_pipeline_flush(p), KVD_OK);
    CHECK_RC(c, kvd_client_release(c, s, NULL, NULL), KVD_OK);
    CHECK_RC(c, kvd_pipeline_append(p, k, v, 1, NULL, 0), KVD_OK); /* sent, refused later */
    kvd_stats st;
    CHECK_RC(c, kvd_client_stats(c, 0, &st), KVD_ERR_NOT_FOUND); /* collects the refusal first */
    CHECK(strstr(kvd_client_last_error(c), "step 10 of sequence") &&
              strstr(kvd_client_last_error(c), "at position 10") &&
              strstr(kvd_client_last_error(c), "nothing of that step was published"),
          "message: %s", kvd_client_last_error(c));
    CHECK_RC(c, kvd_client_stats(c, 0, &st), KVD_OK); /* reported once to other calls */
    CHECK_RC(c, kvd_pipeline_append(p, k, v, 1, NULL, 0), KVD_ERR_NOT_FOUND); /* sticky */
    kvd_pipeline_status ps;
    kvd_pipeline_status_get(p, &ps);
    CHECK(ps.failed && ps.failed_step == 10 && ps.confirmed_length == 10, "status after refusal");
    CHECK_RC(c, kvd_pipeline_close(p), KVD_OK); /* already reported */
    CHECK_RC(c, kvd_pipeline_close(NULL), KVD_OK);
    free(k);
    free(v);
    kvd_client_free(c);
}

/* A sequence created by another client: the layout is learnt with Stats for zero-copy. */
static void test_zero_copy_foreign_sequence(void) {
    kvd_client *a = connect_ok(5000), *b = connect_ok(5000);
    REQUIRE(a && b, "connect");
    uint64_t s = 0;
    CHECK_RC(a, kvd_client_create_sequence(a, "tiny-bf16", 0, NULL, &s), KVD_OK);
    size_t bytes = (size_t)L * H * 7 * D * 2;
    void *k = random_bits(bytes), *v = random_bits(bytes);
    CHECK_RC(b, kvd_client_append_zero_copy(b, s, KVD_DTYPE_BF16, L, H, 7, D, k, v, NULL), KVD_OK);
    check_sequence(a, s, KVD_DTYPE_BF16, 7, k, v, "foreign");
    CHECK_RC(a, kvd_client_release(a, s, NULL, NULL), KVD_OK);
    free(k);
    free(v);
    kvd_client_free(a);
    kvd_client_free(b);
}

static void test_append_bad_input(void) {
    kvd_client *c = connect_ok(5000);
    REQUIRE(c, "connect");
    uint64_t s = 0;
    CHECK_RC(c, kvd_client_create_sequence(c, "tiny-f16", 0, NULL, &s), KVD_OK);
    size_t bytes = (size_t)L * H * 64 * 16 * 4;
    uint8_t *k = random_bits(bytes), *v = random_bits(bytes);
    CHECK_RC(c, kvd_client_append(c, s, KVD_DTYPE_F16, L, H, 2, D, NULL, v, NULL), KVD_ERR_ARGUMENT);
    CHECK_RC(c, kvd_client_append(c, s, KVD_DTYPE_F16, L, H, 2, D, k, NULL, NULL), KVD_ERR_ARGUMENT);
    CHECK_RC(c, kvd_client_append(c, s, KVD_DTYPE_UNSPECIFIED, L, H, 2, D, k, v, NULL), KVD_ERR_ARGUMENT);
    CHECK_RC(c, kvd_client_append(c, s, KVD_DTYPE_F16, L, H, 0, D, k, v, NULL), KVD_ERR_ARGUMENT);
    CHECK(strstr(kvd_client_last_error(c), "zero") != NULL, "%s", kvd_client_last_error(c));
    CHECK_RC(c, kvd_client_append_zero_copy(c, s, KVD_DTYPE_F16, L, H, 0, D, k, v, NULL),
             KVD_ERR_ARGUMENT);
    /* the daemon checks inline shapes; the client checks zero-copy ones (it cannot see them) */
    CHECK_RC(c, kvd_client_append(c, s, KVD_DTYPE_F16, L, H, 2, D * 2, k, v, NULL),
             KVD_ERR_INVALID_ARGUMENT);
    CHECK_RC(c, kvd_client_append(c, s, KVD_DTYPE_F32, L, H, 2, D, k, v, NULL),
             KVD_ERR_INVALID_ARGUMENT);
    CHECK_RC(c, kvd_client_append_zero_copy(c, s, KVD_DTYPE_F16, L, H, 2, D * 2, k, v, NULL),
             KVD_ERR_ARGUMENT);
    CHECK(strstr(kvd_client_last_error(c), "needs [2, 2, tokens, 8]") != NULL, "%s",
          kvd_client_last_error(c));
    CHECK_RC(c, kvd_client_append_zero_copy(c, s, KVD_DTYPE_BF16, L, H, 2, D, k, v, NULL),
             KVD_ERR_ARGUMENT);
    CHECK_RC(c, kvd_client_append_zero_copy(c, s, KVD_DTYPE_F16, L + 1, H, 2, D, k, v, NULL),
             KVD_ERR_ARGUMENT);
    CHECK_RC(c, kvd_client_append(c, 987654, KVD_DTYPE_F16, L, H, 2, D, k, v, NULL), KVD_ERR_NOT_FOUND);
    CHECK_RC(c, kvd_client_append_zero_copy(c, 987654, KVD_DTYPE_F16, L, H, 2, D, k, v, NULL),
             KVD_ERR_NOT_FOUND);
    /* more tokens than max_tokens_per_append (64) */
    CHECK_RC(c, kvd_client_append_zero_copy(c, s, KVD_DTYPE_F16, L, H, 65, D, k, v, NULL),
             KVD_ERR_INVALID_ARGUMENT);
    /* bigger than max_message_bytes (64 KiB): refused before sending (the daemon would drop a
     * far bigger one without a reply) */
    CHECK_RC(c, kvd_client_append(c, s, KVD_DTYPE_F32, L, H, 64, 16 * 4, k, v, NULL), KVD_ERR_ARGUMENT);
    CHECK(strstr(kvd_client_last_error(c), "max_message_bytes") != NULL, "%s", kvd_client_last_error(c));
    kvd_stats st;
    CHECK_RC(c, kvd_client_stats(c, s, &st), KVD_OK);
    CHECK(st.sequence.length == 0 && st.sequence.pages == 0, "nothing was applied");
    CHECK_RC(c, kvd_client_release(c, s, NULL, NULL), KVD_OK);
    free(k);
    free(v);
    kvd_client_free(c);
}

/* The arena fills up: RESOURCE_EXHAUSTED, all or nothing, for both append paths. */
static void test_arena_full(void) {
    kvd_client *c = connect_ok(5000);
    REQUIRE(c, "connect");
    uint64_t s = 0;
    CHECK_RC(c, kvd_client_create_sequence(c, "wide-f32", 0, NULL, &s), KVD_OK);
    size_t bytes = (size_t)64 * 64 * 4;
    void *k = random_bits(bytes), *v = random_bits(bytes);
    kvd_result rc = KVD_OK;
    int appends = 0;
    while (appends < 1000 && (rc = kvd_client_append_zero_copy(c, s, KVD_DTYPE_F32, 1, 1, 8, 64, k,
                                                               v, NULL)) == KVD_OK)
        appends++;
    CHECK_RC(c, rc, KVD_ERR_RESOURCE_EXHAUSTED);
    CHECK(appends > 10, "%d appends before the arena was full", appends);
    CHECK_RC(c, kvd_client_append(c, s, KVD_DTYPE_F32, 1, 1, 8, 64, k, v, NULL),
             KVD_ERR_RESOURCE_EXHAUSTED);
    kvd_stats st;
    CHECK_RC(c, kvd_client_stats(c, s, &st), KVD_OK);
    CHECK(st.sequence.length == (uint64_t)appends * 8 && st.sequence.reserved_tokens == 0,
          "length %llu after %d appends", (unsigned long long)st.sequence.length, appends);
    CHECK_RC(c, kvd_client_release(c, s, NULL, NULL), KVD_OK);
    free(k);
    free(v);
    kvd_client_free(c);
}

static void test_query_modes_and_copies(void) {
    kvd_client *c = connect_ok(5000);
    REQUIRE(c, "connect");
    uint64_t s = 0;
    CHECK_RC(c, kvd_client_create_sequence(c, "tiny-f16", 0, NULL, &s), KVD_OK);
    const uint32_t T = 10;
    size_t bytes = (size_t)L * H * T * D * 2;
    void *k = random_bits(bytes), *v = random_bits(bytes);
    CHECK_RC(c, kvd_client_append(c, s, KVD_DTYPE_F16, L, H, T, D, k, v, NULL), KVD_OK);

    uint32_t layer1 = 1;
    kvd_query_result *q = NULL;
    CHECK_RC(c, kvd_client_query(c, s, KVD_QUERY_PAGES, &layer1, 1, &q), KVD_OK);
    if (q) {
        CHECK(q->num_heads == H && q->heads[0].layer == 1 && q->page_tokens == P &&
              q->mode == KVD_QUERY_PAGES && q->generation == 1 && q->sequence_id == s, "layer 1");
        const kvd_head_view *hv = kvd_query_find_head(q, 1, 1);
        CHECK(hv == &q->heads[1] && kvd_query_find_head(q, 0, 0) == NULL, "find_head");
        CHECK(hv && hv->keys == NULL && hv->num_pages == 3, "pages mode has no contiguous K");
        size_t need = 0;
        uint8_t small[16];
        CHECK(kvd_query_copy_head(q, 0, small, small, sizeof small, &need) == KVD_ERR_BUFFER_TOO_SMALL,
              "too small");
        CHECK(need == T * D * 2 && kvd_query_head_bytes(q, 0) == need, "needed %zu", need);
        uint8_t *kb = malloc(need);
        CHECK(kvd_query_copy_head(q, 1, kb, NULL, need, NULL) == KVD_OK, "keys only");
        CHECK(memcmp(kb, head_of(k, 3, T, 2), need) == 0, "layer 1 head 1 K");
        CHECK(kvd_query_copy_head(q, 2, kb, NULL, need, NULL) == KVD_ERR_ARGUMENT, "bad index");
        free(kb);
        kvd_query_result_free(q);
    }
    q = NULL;
    CHECK_RC(c, kvd_client_query(c, s, KVD_QUERY_METADATA, NULL, 0, &q), KVD_OK);
    if (q) {
        CHECK(q->num_heads == L * H && q->heads[3].num_tokens == T && q->heads[3].positions[9] == 9 &&
              q->heads[0].keys == NULL && q->heads[0].num_pages == 0, "metadata");
        size_t need = 7;
        uint8_t buf[8];
        CHECK(kvd_query_copy_head(q, 0, buf, buf, sizeof buf, &need) == KVD_ERR_ARGUMENT,
              "no K/V in metadata mode");
        kvd_query_result_free(q);
    }
    CHECK_RC(c, kvd_client_query(c, s, (kvd_query_mode)9, NULL, 0, &q), KVD_ERR_ARGUMENT);
    CHECK_RC(c, kvd_client_query(c, s, KVD_QUERY_PAGES, NULL, 2, &q), KVD_ERR_ARGUMENT);
    CHECK_RC(c, kvd_client_query(c, s, KVD_QUERY_PAGES, NULL, 0, NULL), KVD_ERR_ARGUMENT);
    uint32_t bad_layer = 5;
    CHECK_RC(c, kvd_client_query(c, s, KVD_QUERY_PAGES, &bad_layer, 1, &q), KVD_ERR_INVALID_ARGUMENT);
    CHECK(q == NULL, "out cleared");
    CHECK_RC(c, kvd_client_query(c, 55555, KVD_QUERY_PAGES, NULL, 0, &q), KVD_ERR_NOT_FOUND);

    /* stage: a pointer into the arena */
    void *ptr = NULL;
    uint64_t off = 0, sz = 0;
    CHECK_RC(c, kvd_client_stage(c, s, 100, &ptr, &off, &sz), KVD_OK);
    CHECK(ptr && off > 0 && sz >= 100, "stage");
    if (ptr) memset(ptr, 0xab, 100);
    CHECK_RC(c, kvd_client_stage(c, 55555, 100, NULL, NULL, NULL), KVD_ERR_NOT_FOUND);
    CHECK_RC(c, kvd_client_release(c, s, NULL, NULL), KVD_OK);
    free(k);
    free(v);
    kvd_client_free(c);
}

static void test_compact(void) {
    kvd_client *c = connect_ok(5000);
    REQUIRE(c, "connect");
    const uint32_t T = 16;
    size_t n = (size_t)L * H * T * D;
    void *k = random_finite(KVD_DTYPE_F16, n), *v = random_finite(KVD_DTYPE_F16, n);
    uint64_t s = 0;
    CHECK_RC(c, kvd_client_create_sequence(c, "tiny-f16", 0, NULL, &s), KVD_OK);
    CHECK_RC(c, kvd_client_append(c, s, KVD_DTYPE_F16, L, H, T, D, k, v, NULL), KVD_OK);

    /* a query result taken before compaction keeps generation 1 */
    kvd_query_result *before = NULL;
    CHECK_RC(c, kvd_client_query(c, s, KVD_QUERY_PAGES, NULL, 0, &before), KVD_OK);

    /* method + int parameters */
    kvd_param params[2] = {kvd_param_int("sinks", 2), kvd_param_int("recent", 4)};
    kvd_compact_options o;
    memset(&o, 0, sizeof o);
    o.struct_size = sizeof o;
    o.method = "streamingllm";
    o.params = params;
    o.num_params = 2;
    kvd_compact_result *r = NULL;
    CHECK_RC(c, kvd_client_compact(c, s, &o, &r), KVD_OK);
    if (r) {
        CHECK(strcmp(r->method, "streamingllm") == 0 && r->num_heads == L * H && r->generation == 2 &&
              r->sequence_id == s, "compact result (method %s)", r->method);
        for (size_t h = 0; h < r->num_heads; h++)
            CHECK(r->heads[h].before == T && r->heads[h].kept == 6 && r->heads[h].layer == h / H,
                  "head %zu kept %u", h, r->heads[h].kept);
        CHECK(r->pages_freed == L * H * 2 && r->bytes_freed > 0, "freed %u pages", r->pages_freed);
        kvd_compact_result_free(r);
    }
    kvd_query_result *q = NULL;
    CHECK_RC(c, kvd_client_query(c, s, KVD_QUERY_PAGES, NULL, 0, &q), KVD_OK);
    if (q && before) {
        CHECK(q->generation == 2 && before->generation == 1 && q->length == T, "generations");
        int32_t want[6] = {0, 1, 12, 13, 14, 15};
        uint8_t kb[6 * D * 2], vb[6 * D * 2];
        for (size_t h = 0; h < q->num_heads; h++) {
            CHECK(q->heads[h].num_tokens == 6 && memcmp(q->heads[h].positions, want, sizeof want) == 0,
                  "kept positions of head %zu", h);
            CHECK(kvd_query_copy_head(q, h, kb, vb, sizeof kb, NULL) == KVD_OK, "copy");
            for (int t = 0; t < 6; t++) {
                CHECK(memcmp(kb + t * D * 2, head_of(k, h, T, 2) + want[t] * D * 2, D * 2) == 0 &&
                      memcmp(vb + t * D * 2, head_of(v, h, T, 2) + want[t] * D * 2, D * 2) == 0,
                      "kept token %d of head %zu is bit-exact", t, h);
            }
        }
    }
    kvd_query_result_free(q);
    kvd_query_result_free(before);

    /* named policy from the config */
    memset(&o, 0, sizeof o);
    o.struct_size = sizeof o;
    o.policy = "stream_small";
    CHECK_RC(c, kvd_client_compact(c, s, &o, &r), KVD_OK);
    if (r) {
        CHECK(strcmp(r->policy, "stream_small") == 0 && strcmp(r->chosen_by, "request") == 0 &&
              r->heads[0].kept == 4, "policy: %s by %s kept %u", r->policy, r->chosen_by,
              r->heads[0].kept);
        kvd_compact_result_free(r);
    }
    CHECK_RC(c, kvd_client_release(c, s, NULL, NULL), KVD_OK);

    /* window-attention method with observation queries: inline, then in shared memory */
    const uint32_t W = 4;
    size_t qn = (size_t)L * QH * W * D;
    float *queries = random_finite(KVD_DTYPE_F32, qn);
    for (int shm = 0; shm < 2; shm++) {
        CHECK_RC(c, kvd_client_create_sequence(c, "tiny-f16", 0, NULL, &s), KVD_OK);
        CHECK_RC(c, kvd_client_append(c, s, KVD_DTYPE_F16, L, H, T, D, k, v, NULL), KVD_OK);
        kvd_param sp[3] = {kvd_param_int("budget", 3), kvd_param_string("pooling", "max"),
                           kvd_param_int("kernel", 3)};
        memset(&o, 0, sizeof o);
        o.struct_size = sizeof o;
        o.method = "snapkv";
        o.params = sp;
        o.num_params = 3;
        /* needs queries: refused without them */
        CHECK_RC(c, kvd_client_compact(c, s, &o, NULL), KVD_ERR_FAILED_PRECONDITION);
        o.queries = queries;
        o.queries_dtype = KVD_DTYPE_F32;
        o.queries_shape[0] = L;
        o.queries_shape[1] = QH;
        o.queries_shape[2] = W;
        o.queries_shape[3] = D;
        o.queries_in_shm = shm;
        CHECK_RC(c, kvd_client_compact(c, s, &o, &r), KVD_OK);
        if (r) {
            for (size_t h = 0; h < r->num_heads; h++)
                CHECK(r->heads[h].kept == 3 + W, "snapkv kept %u", r->heads[h].kept);
            CHECK(r->num_budgets == L * H && r->budgets[0] == 3, "budgets");
            kvd_compact_result_free(r);
        }
        CHECK_RC(c, kvd_client_release(c, s, NULL, NULL), KVD_OK);
    }
    /* float parameter (fraction) via a policy override; result freed by passing NULL out */
    CHECK_RC(c, kvd_client_create_sequence(c, "tiny-f16", 0, NULL, &s), KVD_OK);
    CHECK_RC(c, kvd_client_append(c, s, KVD_DTYPE_F16, L, H, T, D, k, v, NULL), KVD_OK);
    kvd_param fp[2] = {kvd_param_float("fraction", 0.5), kvd_param_int("window", 2)};
    memset(&o, 0, sizeof o);
    o.struct_size = sizeof o;
    o.method = "knorm";
    o.params = fp;
    o.num_params = 2;
    CHECK_RC(c, kvd_client_compact(c, s, &o, &r), KVD_OK);
    if (r) {
        CHECK(r->heads[0].kept == 7 + 2, "knorm fraction 0.5 of 14 + window 2: kept %u",
              r->heads[0].kept);
        kvd_compact_result_free(r);
    }

    /* errors */
    memset(&o, 0, sizeof o);
    o.struct_size = sizeof o;
    o.policy = "no-such-policy";
    CHECK_RC(c, kvd_client_compact(c, s, &o, NULL), KVD_ERR_NOT_FOUND);
    CHECK(strstr(kvd_client_last_error(c), "no-such-policy") != NULL, "%s", kvd_client_last_error(c));
    o.policy = NULL;
    o.method = "no-such-method";
    CHECK_RC(c, kvd_client_compact(c, s, &o, NULL), KVD_ERR_NOT_FOUND);
    kvd_param badp = kvd_param_bool("sinks", 1);
    o.method = "streamingllm";
    o.params = &badp;
    o.num_params = 1;
    CHECK_RC(c, kvd_client_compact(c, s, &o, NULL), KVD_ERR_INVALID_ARGUMENT);
    badp = kvd_param_int("no_such_param", 1);
    CHECK_RC(c, kvd_client_compact(c, s, &o, NULL), KVD_ERR_INVALID_ARGUMENT);
    o.params = NULL;
    o.num_params = 1;
    CHECK_RC(c, kvd_client_compact(c, s, &o, NULL), KVD_ERR_ARGUMENT);
    badp = kvd_param_string("pooling", NULL);
    o.params = &badp;
    CHECK_RC(c, kvd_client_compact(c, s, &o, NULL), KVD_ERR_ARGUMENT);
    badp.name = NULL;
    CHECK_RC(c, kvd_client_compact(c, s, &o, NULL), KVD_ERR_ARGUMENT);
    o.num_params = 0;
    o.queries = queries;
    o.queries_dtype = KVD_DTYPE_F32;
    CHECK_RC(c, kvd_client_compact(c, s, &o, NULL), KVD_ERR_ARGUMENT); /* zero shape */
    o.queries_shape[0] = L; o.queries_shape[1] = QH; o.queries_shape[2] = W; o.queries_shape[3] = D;
    o.queries_dtype = (kvd_dtype)0;
    CHECK_RC(c, kvd_client_compact(c, s, &o, NULL), KVD_ERR_ARGUMENT);
    o.queries_dtype = KVD_DTYPE_F32;
    o.queries_shape[1] = QH + 1; /* wrong shape (the buffer must still hold the whole tensor) */
    float *bigq = random_finite(KVD_DTYPE_F32, (size_t)L * (QH + 1) * W * D);
    o.queries = bigq;
    o.method = "snapkv";
    CHECK_RC(c, kvd_client_compact(c, s, &o, NULL), KVD_ERR_INVALID_ARGUMENT);
    free(bigq);
    o.queries = queries;
    o.struct_size = sizeof o + 8;
    CHECK_RC(c, kvd_client_compact(c, s, &o, NULL), KVD_ERR_ARGUMENT);
    CHECK_RC(c, kvd_client_compact(c, 31337, NULL, NULL), KVD_ERR_NOT_FOUND);
    /* NULL options: rules / model default (streamingllm defaults) */
    CHECK_RC(c, kvd_client_compact(c, s, NULL, &r), KVD_OK);
    if (r) {
        CHECK(strncmp(r->chosen_by, "model default", 13) == 0, "chosen by %s", r->chosen_by);
        kvd_compact_result_free(r);
    }
    CHECK_RC(c, kvd_client_release(c, s, NULL, NULL), KVD_OK);
    free(queries);
    free(k);
    free(v);
    kvd_client_free(c);
}

/* Every call on a closed client fails with KVD_ERR_CLOSED; earlier results stay readable. */
static void test_closed_client(void) {
    kvd_client *c = connect_ok(5000);
    REQUIRE(c, "connect");
    uint64_t s = 0;
    CHECK_RC(c, kvd_client_create_sequence(c, "tiny-f32", 0, NULL, &s), KVD_OK);
    size_t bytes = (size_t)L * H * 3 * D * 4;
    void *k = random_bits(bytes), *v = random_bits(bytes);
    CHECK_RC(c, kvd_client_append(c, s, KVD_DTYPE_F32, L, H, 3, D, k, v, NULL), KVD_OK);
    kvd_query_result *q = NULL;
    kvd_reservation *r = NULL;
    CHECK_RC(c, kvd_client_query(c, s, KVD_QUERY_PAGES, NULL, 0, &q), KVD_OK);
    CHECK_RC(c, kvd_client_close(c), KVD_OK);
    CHECK_RC(c, kvd_client_close(c), KVD_OK); /* idempotent */
    kvd_stats st;
    CHECK_RC(c, kvd_client_hello(c, NULL), KVD_ERR_CLOSED);
    CHECK(strstr(kvd_client_last_error(c), "closed") != NULL, "message %s", kvd_client_last_error(c));
    CHECK(kvd_client_last_result(c) == KVD_ERR_CLOSED, "last result");
    CHECK_RC(c, kvd_client_create_sequence(c, "tiny-f32", 0, NULL, NULL), KVD_ERR_CLOSED);
    CHECK_RC(c, kvd_client_append(c, s, KVD_DTYPE_F32, L, H, 3, D, k, v, NULL), KVD_ERR_CLOSED);
    CHECK_RC(c, kvd_client_append_zero_copy(c, s, KVD_DTYPE_F32, L, H, 3, D, k, v, NULL), KVD_ERR_CLOSED);
    CHECK_RC(c, kvd_client_reserve(c, s, 1, &r), KVD_ERR_CLOSED);
    kvd_query_result *q2 = NULL;
    CHECK_RC(c, kvd_client_query(c, s, KVD_QUERY_PAGES, NULL, 0, &q2), KVD_ERR_CLOSED);
    CHECK_RC(c, kvd_client_compact(c, s, NULL, NULL), KVD_ERR_CLOSED);
    CHECK_RC(c, kvd_client_stats(c, 0, &st), KVD_ERR_CLOSED);
    CHECK_RC(c, kvd_client_stage(c, s, 8, NULL, NULL, NULL), KVD_ERR_CLOSED);
    CHECK_RC(c, kvd_client_release(c, s, NULL, NULL), KVD_ERR_CLOSED);
    if (q) { /* the mapping is kept alive by the result */
        uint8_t kb[3 * D * 4];
        CHECK(kvd_query_copy_head(q, 2, kb, NULL, sizeof kb, NULL) == KVD_OK &&
              memcmp(kb, head_of(k, 2, 3, 4), sizeof kb) == 0, "result readable after close");
        kvd_query_result_free(q);
    }
    kvd_client_free(c);
    /* clean up the sequence from another client */
    c = connect_ok(5000);
    if (c) {
        CHECK_RC(c, kvd_client_release(c, s, NULL, NULL), KVD_OK);
        kvd_client_free(c);
    }
    free(k);
    free(v);
}

static void test_protocol_version_mismatch(void) {
    kvd_client_options o;
    memset(&o, 0, sizeof o);
    o.struct_size = sizeof o;
    o.protocol_version = 2;
    kvd_client *c = NULL;
    CHECK(kvd_client_connect(g_endpoint, &o, &c, NULL, 0) == KVD_OK, "connect");
    REQUIRE(c, "client");
    CHECK_RC(c, kvd_client_hello(c, NULL), KVD_ERR_UNIMPLEMENTED);
    CHECK(strstr(kvd_client_last_error(c), "version") != NULL && kvd_client_last_server_code(c) == 7,
          "message: %s", kvd_client_last_error(c));
    CHECK_RC(c, kvd_client_stats(c, 0, NULL), KVD_ERR_ARGUMENT);
    kvd_stats st;
    CHECK_RC(c, kvd_client_stats(c, 0, &st), KVD_ERR_UNIMPLEMENTED); /* implicit Hello fails too */
    kvd_client_free(c);
}

static void test_daemon_not_running(void) {
    char ep[128];
    snprintf(ep, sizeof ep, "ipc:///tmp/kvd-c-test-nobody-%d.sock", (int)getpid());
    kvd_client_options o;
    memset(&o, 0, sizeof o);
    o.struct_size = sizeof o;
    o.timeout_ms = 300;
    kvd_client *c = NULL;
    CHECK(kvd_client_connect(ep, &o, &c, NULL, 0) == KVD_OK, "connect is lazy");
    REQUIRE(c, "client");
    int64_t t0 = now_ms();
    CHECK_RC(c, kvd_client_hello(c, NULL), KVD_ERR_TIMEOUT);
    int64_t dt = now_ms() - t0;
    CHECK(dt >= 250 && dt < 3000, "timed out after %lld ms", (long long)dt);
    CHECK(strstr(kvd_client_last_error(c), "is the daemon running") != NULL &&
          strstr(kvd_client_last_error(c), "300 ms") != NULL, "%s", kvd_client_last_error(c));
    kvd_stats st;
    CHECK_RC(c, kvd_client_stats(c, 0, &st), KVD_ERR_TIMEOUT); /* again, no hang */
    kvd_client_free(c);
}

/* ---------------------------------------------------------------------------------------------- */
/* A fake daemon (ROUTER in a thread) for replies a real kvd never sends.                         */

enum fake_mode { FAKE_BAD_VERSION, FAKE_GARBAGE, FAKE_SLOW_THEN_OK, FAKE_WRONG_BODY };

typedef struct fake {
    enum fake_mode mode;
    char endpoint[128];
    void *ctx, *sock;
    pthread_t thread;
    int requests;
    int delay_ms;
    char hello_tenant[64], hello_token[64]; /* what the last Hello carried */
} fake;

static void fake_reply(fake *f, zmq_msg_t *id, const void *data, size_t n) {
    zmq_msg_send(id, f->sock, ZMQ_SNDMORE);
    zmq_send(f->sock, data, n, 0);
}

static void *fake_main(void *arg) {
    fake *f = arg;
    for (;;) {
        zmq_msg_t id, body;
        zmq_msg_init(&id);
        zmq_msg_init(&body);
        if (zmq_msg_recv(&id, f->sock, 0) < 0) { zmq_msg_close(&id); zmq_msg_close(&body); break; }
        if (zmq_msg_recv(&body, f->sock, 0) < 0) { zmq_msg_close(&id); zmq_msg_close(&body); break; }
        Kvd__V1__Request *req = kvd__v1__request__unpack(NULL, zmq_msg_size(&body), zmq_msg_data(&body));
        zmq_msg_close(&body);
        f->requests++;
        if (!req) { zmq_msg_close(&id); continue; }
        if (req->body_case == KVD__V1__REQUEST__BODY__NOT_SET) { /* stop signal */
            kvd__v1__request__free_unpacked(req, NULL);
            zmq_msg_close(&id);
            break;
        }
        if (req->body_case == KVD__V1__REQUEST__BODY_HELLO) {
            snprintf(f->hello_tenant, sizeof f->hello_tenant, "%s", req->hello->tenant);
            snprintf(f->hello_token, sizeof f->hello_token, "%s", req->hello->token);
        }
        Kvd__V1__ResponseHeader hdr = KVD__V1__RESPONSE_HEADER__INIT;
        hdr.protocol_version = 1;
        hdr.server_version = "9.9.9-fake";
        hdr.request_id = req->request_id;
        Kvd__V1__Response resp = KVD__V1__RESPONSE__INIT;
        resp.header = &hdr;
        Kvd__V1__HelloResponse hello = KVD__V1__HELLO_RESPONSE__INIT;
        Kvd__V1__StatsResponse stats = KVD__V1__STATS_RESPONSE__INIT;
        if (f->mode == FAKE_GARBAGE) {
            fake_reply(f, &id, "\xff\xff\xff garbage", 12);
        } else if (f->mode == FAKE_BAD_VERSION) {
            hello.protocol_version = 2;
            hello.server_version = "9.9.9-fake";
            resp.body_case = KVD__V1__RESPONSE__BODY_HELLO;
            resp.hello = &hello;
            uint8_t buf[256];
            size_t n = kvd__v1__response__pack(&resp, buf);
            fake_reply(f, &id, buf, n);
        } else if (f->mode == FAKE_WRONG_BODY) {
            resp.body_case = KVD__V1__RESPONSE__BODY_STATS;
            resp.stats = &stats;
            uint8_t buf[256];
            size_t n = kvd__v1__response__pack(&resp, buf);
            fake_reply(f, &id, buf, n);
        } else { /* FAKE_SLOW_THEN_OK: the first request is answered late, the rest at once */
            if (f->requests == 1 || f->delay_ms > 0) usleep((useconds_t)(f->delay_ms ? f->delay_ms : 500) * 1000);
            /* reply stats for anything but hello; an error for hello */
            Kvd__V1__Error err = KVD__V1__ERROR__INIT;
            if (req->body_case == KVD__V1__REQUEST__BODY_HELLO) {
                err.code = KVD__V1__ERROR_CODE__ERROR_CODE_UNAVAILABLE;
                err.message = "kvd: fake daemon says no";
                resp.body_case = KVD__V1__RESPONSE__BODY_ERROR;
                resp.error = &err;
            }
            uint8_t buf[256];
            size_t n = kvd__v1__response__pack(&resp, buf);
            fake_reply(f, &id, buf, n);
        }
        zmq_msg_close(&id);
        kvd__v1__request__free_unpacked(req, NULL);
    }
    return NULL;
}

static int fake_start(fake *f, enum fake_mode mode, int delay_ms) {
    memset(f, 0, sizeof *f);
    f->mode = mode;
    f->delay_ms = delay_ms;
    snprintf(f->endpoint, sizeof f->endpoint, "ipc:///tmp/kvd-c-fake-%d-%d.sock", (int)getpid(), (int)mode);
    f->ctx = zmq_ctx_new();
    f->sock = zmq_socket(f->ctx, ZMQ_ROUTER);
    int zero = 0;
    zmq_setsockopt(f->sock, ZMQ_LINGER, &zero, sizeof zero);
    if (zmq_bind(f->sock, f->endpoint) != 0) return 0;
    return pthread_create(&f->thread, NULL, fake_main, f) == 0;
}

static void fake_stop(fake *f) {
    /* An empty Request tells the thread to stop. */
    void *s = zmq_socket(f->ctx, ZMQ_DEALER);
    int zero = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    zmq_connect(s, f->endpoint);
    uint8_t stop[2] = {0x08, 0x01}; /* request_id = 1, no body */
    zmq_send(s, stop, 2, 0);
    pthread_join(f->thread, NULL);
    zmq_close(s);
    zmq_close(f->sock);
    zmq_ctx_term(f->ctx);
    unlink(f->endpoint + 6);
}

/* The fake as a CURVE server on an ephemeral tcp port of 127.0.0.1 (no ZAP handler: any client
 * key is let in, so this checks the client's side only). Stopped with fake_stop_curve. */
static int fake_start_curve(fake *f, const char *server_secret) {
    memset(f, 0, sizeof *f);
    f->mode = FAKE_SLOW_THEN_OK;
    f->delay_ms = 0;
    f->requests = 1; /* no artificial delay */
    f->ctx = zmq_ctx_new();
    f->sock = zmq_socket(f->ctx, ZMQ_ROUTER);
    int zero = 0, one = 1;
    zmq_setsockopt(f->sock, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(f->sock, ZMQ_CURVE_SERVER, &one, sizeof one);
    zmq_setsockopt(f->sock, ZMQ_CURVE_SECRETKEY, server_secret, 40);
    if (zmq_bind(f->sock, "tcp://127.0.0.1:*") != 0) return 0;
    size_t n = sizeof f->endpoint;
    zmq_getsockopt(f->sock, ZMQ_LAST_ENDPOINT, f->endpoint, &n);
    return pthread_create(&f->thread, NULL, fake_main, f) == 0;
}

static void fake_stop_curve(fake *f) {
    zmq_ctx_shutdown(f->ctx); /* the thread's blocked receive returns ETERM */
    pthread_join(f->thread, NULL);
    zmq_close(f->sock);
    zmq_ctx_term(f->ctx);
}

static kvd_client *connect_to(const char *ep, int timeout_ms) {
    kvd_client_options o;
    memset(&o, 0, sizeof o);
    o.struct_size = sizeof o;
    o.timeout_ms = timeout_ms;
    kvd_client *c = NULL;
    kvd_client_connect(ep, &o, &c, NULL, 0);
    return c;
}

static void test_fake_bad_protocol_version(void) {
    fake f;
    REQUIRE(fake_start(&f, FAKE_BAD_VERSION, 0), "fake");
    kvd_client *c = connect_to(f.endpoint, 2000);
    CHECK_RC(c, kvd_client_hello(c, NULL), KVD_ERR_PROTOCOL);
    CHECK(strstr(kvd_client_last_error(c), "protocol version mismatch") != NULL &&
          strstr(kvd_client_last_error(c), "9.9.9-fake") != NULL, "%s", kvd_client_last_error(c));
    kvd_client_free(c);
    fake_stop(&f);
}

static void test_fake_garbage_and_wrong_body(void) {
    fake f;
    REQUIRE(fake_start(&f, FAKE_GARBAGE, 0), "fake");
    kvd_client *c = connect_to(f.endpoint, 2000);
    CHECK_RC(c, kvd_client_hello(c, NULL), KVD_ERR_PROTOCOL);
    CHECK(strstr(kvd_client_last_error(c), "undecodable") != NULL, "%s", kvd_client_last_error(c));
    kvd_client_free(c);
    fake_stop(&f);
    REQUIRE(fake_start(&f, FAKE_WRONG_BODY, 0), "fake");
    c = connect_to(f.endpoint, 2000);
    CHECK_RC(c, kvd_client_hello(c, NULL), KVD_ERR_PROTOCOL);
    CHECK(strstr(kvd_client_last_error(c), "asked for hello") != NULL, "%s", kvd_client_last_error(c));
    kvd_client_free(c);
    fake_stop(&f);
}

/* A reply later than the timeout: KVD_ERR_TIMEOUT after ~timeout_ms, and the late reply is never
 * taken for the next request's answer. */
static void test_fake_late_reply(void) {
    fake f;
    REQUIRE(fake_start(&f, FAKE_SLOW_THEN_OK, 0), "fake");
    kvd_client *c = connect_to(f.endpoint, 200);
    int64_t t0 = now_ms();
    CHECK_RC(c, kvd_client_hello(c, NULL), KVD_ERR_TIMEOUT);
    int64_t dt = now_ms() - t0;
    CHECK(dt >= 150 && dt < 2000, "timeout took %lld ms", (long long)dt);
    usleep(500 * 1000); /* the late reply is sent (to the dropped socket) meanwhile */
    CHECK_RC(c, kvd_client_hello(c, NULL), KVD_ERR_UNAVAILABLE);
    CHECK(strcmp(kvd_client_last_error(c), "kvd: fake daemon says no") == 0, "%s",
          kvd_client_last_error(c));
    kvd_client_free(c);
    fake_stop(&f);
}

typedef struct busy_arg { kvd_client *c; kvd_result rc; } busy_arg;
static void *busy_thread(void *p) {
    busy_arg *a = p;
    a->rc = kvd_client_hello(a->c, NULL);
    return NULL;
}

/* Two threads on one client: the second call is refused with KVD_ERR_BUSY. */
static void test_busy_detection(void) {
    fake f;
    REQUIRE(fake_start(&f, FAKE_SLOW_THEN_OK, 400), "fake");
    kvd_client *c = connect_to(f.endpoint, 3000);
    busy_arg a = {c, KVD_OK};
    pthread_t t;
    pthread_create(&t, NULL, busy_thread, &a);
    usleep(150 * 1000);
    kvd_stats st;
    CHECK(kvd_client_stats(c, 0, &st) == KVD_ERR_BUSY, "second thread refused");
    pthread_join(t, NULL);
    CHECK(a.rc == KVD_ERR_UNAVAILABLE, "first thread's call: %s", kvd_result_name(a.rc));
    kvd_client_free(c);
    fake_stop(&f);
}

/* ============================================================================================= */
/* Cross-language                                                                                 */

static const char *cross_models[3] = {"tiny-f16", "tiny-bf16", "tiny-f32"};
static const kvd_dtype cross_dtypes[3] = {KVD_DTYPE_F16, KVD_DTYPE_BF16, KVD_DTYPE_F32};

static int write_file(const char *dir, const char *name, const char *ext, const void *p, size_t n) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s.%s", dir, name, ext);
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    int ok = fwrite(p, 1, n, f) == n;
    return fclose(f) == 0 && ok;
}

static void *read_file(const char *dir, const char *name, const char *ext, size_t *n) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s.%s", dir, name, ext);
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *p = malloc((size_t)sz + 1);
    *n = fread(p, 1, (size_t)sz, f);
    fclose(f);
    return p;
}

/* ============================================================================================= */
/* Credentials: options, key files, CURVE on the wire                                             */

static int write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (!f) return 0;
    int ok = fputs(text, f) >= 0;
    return fclose(f) == 0 && ok;
}

/* Programs built against the shorter kvd_client_options keep working; bad CURVE options are
 * refused at connect; kvd_curve_load_key reads `kvd keygen` files and refuses anything else. */
static void test_credentials_options(void) {
    kvd_client_options o;
    memset(&o, 0, sizeof o);
    o.struct_size = offsetof(kvd_client_options, tenant); /* the struct before credentials */
    o.timeout_ms = 5000;
    kvd_client *c = NULL;
    char err[256];
    CHECK(kvd_client_connect(g_endpoint, &o, &c, err, sizeof err) == KVD_OK && c, "old size: %s", err);
    kvd_hello_info *info = NULL;
    CHECK_RC(c, kvd_client_hello(c, &info), KVD_OK);
    CHECK(info && info->tenant != NULL, "hello info has a tenant string");
    kvd_hello_info_free(info);
    kvd_client_free(c);

    char pub[41], sec[41], other[41], other_sec[41];
    REQUIRE(zmq_curve_keypair(pub, sec) == 0 && zmq_curve_keypair(other, other_sec) == 0, "keypair");
    memset(&o, 0, sizeof o);
    o.struct_size = sizeof o;
    o.curve_server_key = other;
    o.curve_public_key = pub; /* no secret */
    c = (kvd_client *)1;
    CHECK(kvd_client_connect("tcp://127.0.0.1:1", &o, &c, err, sizeof err) == KVD_ERR_ARGUMENT && !c,
          "two keys of three");
    CHECK(strstr(err, "together") != NULL, "%s", err);
    char bad[41];
    memcpy(bad, pub, 41);
    bad[7] = '~'; /* not in the Z85 alphabet */
    o.curve_public_key = bad;
    o.curve_secret_key = sec;
    CHECK(kvd_client_connect("tcp://127.0.0.1:1", &o, &c, err, sizeof err) == KVD_ERR_ARGUMENT,
          "malformed key");
    CHECK(strstr(err, "curve_public_key") != NULL && strstr(err, bad) == NULL, "%s", err);
    o.curve_public_key = "short";
    CHECK(kvd_client_connect("tcp://127.0.0.1:1", &o, &c, err, sizeof err) == KVD_ERR_ARGUMENT,
          "short key");

    char path[128], text[64], key[41];
    snprintf(path, sizeof path, "/tmp/kvd-c-test-key-%d.pub", (int)getpid());
    snprintf(text, sizeof text, "\n  %s  \n", pub); /* blank line and blanks are fine */
    REQUIRE(write_text(path, text), "write %s", path);
    CHECK(kvd_curve_load_key(path, key, err, sizeof err) == KVD_OK && strcmp(key, pub) == 0,
          "load: %s", err);
    REQUIRE(write_text(path, "not a key\n"), "write %s", path);
    CHECK(kvd_curve_load_key(path, key, err, sizeof err) == KVD_ERR_ARGUMENT &&
          strstr(err, "Z85") != NULL, "garbage: %s", err);
    unlink(path);
    CHECK(kvd_curve_load_key(path, key, err, sizeof err) == KVD_ERR_SYSTEM &&
          strstr(err, "No such file") != NULL, "missing: %s", err);
    CHECK(kvd_curve_load_key(NULL, key, NULL, 0) == KVD_ERR_ARGUMENT, "NULL path");
}

/* Against a fake CURVE server: the keys go on the socket (a wrong server key gets no reply) and
 * Hello carries the tenant and the token. */
static void test_fake_curve_hello(void) {
    char spub[41], ssec[41], cpub[41], csec[41], opub[41], osec[41];
    REQUIRE(zmq_curve_keypair(spub, ssec) == 0 && zmq_curve_keypair(cpub, csec) == 0 &&
            zmq_curve_keypair(opub, osec) == 0, "keypairs");
    fake f;
    REQUIRE(fake_start_curve(&f, ssec), "fake");
    kvd_client_options o;
    memset(&o, 0, sizeof o);
    o.struct_size = sizeof o;
    o.timeout_ms = 2000;
    o.tenant = "team-a";
    o.token = "token-of-team-a-0123";
    o.curve_server_key = spub;
    o.curve_public_key = cpub;
    o.curve_secret_key = csec;
    kvd_client *c = NULL;
    REQUIRE(kvd_client_connect(f.endpoint, &o, &c, NULL, 0) == KVD_OK, "connect");
    CHECK_RC(c, kvd_client_hello(c, NULL), KVD_ERR_UNAVAILABLE); /* the fake answers: it got in */
    CHECK(strcmp(f.hello_tenant, "team-a") == 0 && strcmp(f.hello_token, "token-of-team-a-0123") == 0,
          "hello carried tenant '%s' token '%s'", f.hello_tenant, f.hello_token);
    kvd_client_free(c);

    o.curve_server_key = opub; /* not the server's key: the handshake fails, no reply */
    o.timeout_ms = 400;
    REQUIRE(kvd_client_connect(f.endpoint, &o, &c, NULL, 0) == KVD_OK, "connect");
    CHECK_RC(c, kvd_client_hello(c, NULL), KVD_ERR_TIMEOUT);
    CHECK(strstr(kvd_client_last_error(c), "curve_server_key") != NULL, "%s", kvd_client_last_error(c));
    kvd_client_free(c);
    c = connect_to(f.endpoint, 400); /* no CURVE at all */
    CHECK_RC(c, kvd_client_hello(c, NULL), KVD_ERR_TIMEOUT);
    kvd_client_free(c);
    fake_stop_curve(&f);
}

/* Against a real daemon's CURVE tcp endpoint: files from `kvd keygen` in argv. */
static const char *g_server_pub, *g_client_base, *g_other_base;

static kvd_client *connect_curve(const char *server_pub_file, const char *client_base, int timeout_ms) {
    char spub[41], cpub[41], csec[41], path[512], err[256];
    snprintf(path, sizeof path, "%s.pub", client_base);
    kvd_result a = kvd_curve_load_key(server_pub_file, spub, err, sizeof err);
    if (a == KVD_OK) a = kvd_curve_load_key(path, cpub, err, sizeof err);
    snprintf(path, sizeof path, "%s.key", client_base);
    if (a == KVD_OK) a = kvd_curve_load_key(path, csec, err, sizeof err);
    if (a != KVD_OK) {
        printf("    loading keys: %s\n", err);
        return NULL;
    }
    kvd_client_options o;
    memset(&o, 0, sizeof o);
    o.struct_size = sizeof o;
    o.timeout_ms = timeout_ms;
    o.client_name = "kvd-c-curve-tests";
    o.tenant = "alpha";
    o.curve_server_key = spub;
    o.curve_public_key = cpub;
    o.curve_secret_key = csec;
    kvd_client *c = NULL;
    if (kvd_client_connect(g_endpoint, &o, &c, err, sizeof err) != KVD_OK) printf("    connect: %s\n", err);
    explicit_bzero(csec, sizeof csec);
    return c;
}

static void test_curve_roundtrip(void) {
    kvd_client *c = connect_curve(g_server_pub, g_client_base, 5000);
    REQUIRE(c, "connect");
    kvd_hello_info *info = NULL;
    CHECK_RC(c, kvd_client_hello(c, &info), KVD_OK);
    kvd_hello_info_free(info);
    const uint32_t T = 9;
    size_t bytes = (size_t)L * H * T * D * 2;
    void *k = random_bits(bytes), *v = random_bits(bytes);
    uint64_t s = 0;
    CHECK_RC(c, kvd_client_create_sequence(c, "tiny-f16", 0, NULL, &s), KVD_OK);
    void *k1 = token_slice(k, T, 0, 5, 2), *v1 = token_slice(v, T, 0, 5, 2);
    void *k2 = token_slice(k, T, 5, 4, 2), *v2 = token_slice(v, T, 5, 4, 2);
    CHECK_RC(c, kvd_client_append(c, s, KVD_DTYPE_F16, L, H, 5, D, k1, v1, NULL), KVD_OK);
    CHECK_RC(c, kvd_client_append_zero_copy(c, s, KVD_DTYPE_F16, L, H, 4, D, k2, v2, NULL), KVD_OK);
    check_sequence(c, s, KVD_DTYPE_F16, T, k, v, "over CURVE");
    CHECK_RC(c, kvd_client_release(c, s, NULL, NULL), KVD_OK);
    free(k); free(v); free(k1); free(v1); free(k2); free(v2);
    kvd_client_free(c);
}

/* Refused connections get no reply (KVD_ERR_TIMEOUT); the daemon keeps serving the right key. */
static void test_curve_refused(void) {
    kvd_client *c = connect_curve(g_server_pub, g_other_base, 600); /* a key no tenant lists */
    REQUIRE(c, "connect");
    CHECK_RC(c, kvd_client_hello(c, NULL), KVD_ERR_TIMEOUT);
    kvd_client_free(c);
    char other_pub[512];
    snprintf(other_pub, sizeof other_pub, "%s.pub", g_other_base);
    c = connect_curve(other_pub, g_client_base, 600); /* the wrong server key */
    REQUIRE(c, "connect");
    CHECK_RC(c, kvd_client_hello(c, NULL), KVD_ERR_TIMEOUT);
    kvd_client_free(c);
    c = connect_to(g_endpoint, 600); /* no CURVE */
    CHECK_RC(c, kvd_client_hello(c, NULL), KVD_ERR_TIMEOUT);
    kvd_client_free(c);
    c = connect_curve(g_server_pub, g_client_base, 5000);
    REQUIRE(c, "connect");
    CHECK_RC(c, kvd_client_hello(c, NULL), KVD_OK);
    kvd_client_free(c);
}

static const char *g_dir;

/* C appends (inline then zero-copy) known data; writes <model>.k/.v and manifest.txt
 * ("model sequence_id tokens" per line) for the Python side. */
static void test_cross_write(void) {
    kvd_client *c = connect_ok(5000);
    REQUIRE(c, "connect");
    char path[512];
    snprintf(path, sizeof path, "%s/manifest.txt", g_dir);
    FILE *man = fopen(path, "w");
    REQUIRE(man, "manifest");
    for (int m = 0; m < 3; m++) {
        size_t es = kvd_dtype_size(cross_dtypes[m]);
        const uint32_t T = 13;
        size_t bytes = (size_t)L * H * T * D * es;
        void *k = random_bits(bytes), *v = random_bits(bytes);
        uint64_t s = 0;
        CHECK_RC(c, kvd_client_create_sequence(c, cross_models[m], 0, "from-c", &s), KVD_OK);
        void *k1 = token_slice(k, T, 0, 6, es), *v1 = token_slice(v, T, 0, 6, es);
        void *k2 = token_slice(k, T, 6, 7, es), *v2 = token_slice(v, T, 6, 7, es);
        CHECK_RC(c, kvd_client_append(c, s, cross_dtypes[m], L, H, 6, D, k1, v1, NULL), KVD_OK);
        CHECK_RC(c, kvd_client_append_zero_copy(c, s, cross_dtypes[m], L, H, 7, D, k2, v2, NULL), KVD_OK);
        CHECK(write_file(g_dir, cross_models[m], "k", k, bytes) &&
              write_file(g_dir, cross_models[m], "v", v, bytes), "write files");
        fprintf(man, "%s %llu %u\n", cross_models[m], (unsigned long long)s, T);
        free(k); free(v); free(k1); free(v1); free(k2); free(v2);
    }
    fclose(man);
    kvd_client_free(c);
}

/* Python appended; manifest.txt lists "model sequence_id tokens"; <model>.k/.v hold the data. */
static void test_cross_read(void) {
    kvd_client *c = connect_ok(5000);
    REQUIRE(c, "connect");
    char path[512];
    snprintf(path, sizeof path, "%s/manifest.txt", g_dir);
    FILE *man = fopen(path, "r");
    REQUIRE(man, "manifest %s", path);
    char model[64];
    unsigned long long s;
    unsigned T;
    int seen = 0;
    while (fscanf(man, "%63s %llu %u", model, &s, &T) == 3) {
        kvd_dtype dt = KVD_DTYPE_UNSPECIFIED;
        for (int m = 0; m < 3; m++)
            if (strcmp(model, cross_models[m]) == 0) dt = cross_dtypes[m];
        CHECK(dt != KVD_DTYPE_UNSPECIFIED, "model %s", model);
        size_t nk = 0, nv = 0;
        void *k = read_file(g_dir, model, "k", &nk), *v = read_file(g_dir, model, "v", &nv);
        CHECK(k && v && nk == (size_t)L * H * T * D * kvd_dtype_size(dt) && nv == nk, "data files");
        if (k && v && dt) check_sequence(c, s, dt, T, k, v, model);
        free(k);
        free(v);
        seen++;
    }
    fclose(man);
    CHECK(seen == 3, "%d sequences in the manifest", seen);
    kvd_client_free(c);
}

/* ============================================================================================= */
/* Prefix reuse: token ids on Append / Commit, Lookup, adopting creates, Fork (tiny-f16: 4 tokens */
/* per page and L * H = 4 (layer, head) pairs, so T page-aligned tokens are T / 4 pages per head */
/* and T pages in all). Each case uses its own id range: blocks cached by one never match another. */

#define HEADS (L * H)

/* Ids spread over all four bytes (and above 2^31), so a byte-order or sign slip changes the
 * blocks' hashes: id t of a prompt starting at `base`. */
static uint32_t prompt_id(uint32_t base, uint32_t t) { return base + t * 2654435761u; }

static uint32_t *prompt_ids(uint32_t base, uint32_t n) {
    uint32_t *ids = malloc((n ? n : 1) * sizeof *ids);
    for (uint32_t t = 0; t < n; t++) ids[t] = prompt_id(base, t);
    return ids;
}

/* [L, H, a, D] followed by [L, H, b, D] along the tokens: [L, H, a + b, D] (a fresh copy). */
static void *token_concat(const void *x, uint32_t a, const void *y, uint32_t b, size_t es) {
    uint8_t *out = malloc((size_t)HEADS * (a + b) * D * es + 1);
    for (size_t h = 0; h < HEADS; h++) {
        memcpy(out + h * (a + b) * D * es, head_of(x, h, a, es), (size_t)a * D * es);
        memcpy(out + (h * (a + b) + a) * D * es, head_of(y, h, b, es), (size_t)b * D * es);
    }
    return out;
}

static kvd_result append_with_ids(kvd_client *c, uint64_t s, uint32_t T, const void *k,
                                  const void *v, const uint32_t *ids, int zero_copy,
                                  kvd_append_result *out) {
    kvd_append_options o;
    memset(&o, 0, sizeof o);
    o.struct_size = sizeof o;
    o.zero_copy = zero_copy;
    o.token_ids = ids;
    o.num_token_ids = ids ? T : 0;
    return kvd_client_append_ex(c, s, KVD_DTYPE_F16, L, H, T, D, k, v, &o, out);
}

/* A new tiny-f16 sequence holding random [L, H, T, D] K/V, appended with `ids` in chunks of at
 * most 10 tokens, alternating inline and zero-copy. *k / *v receive the data. */
static uint64_t written_with_ids(kvd_client *c, uint32_t T, const uint32_t *ids, void **k,
                                 void **v) {
    uint64_t s = 0;
    *k = random_bits((size_t)HEADS * T * D * 2);
    *v = random_bits((size_t)HEADS * T * D * 2);
    CHECK_RC(c, kvd_client_create_sequence(c, "tiny-f16", 0, NULL, &s), KVD_OK);
    for (uint32_t at = 0, i = 0; at < T; i++) {
        uint32_t n = T - at < 10 ? T - at : 10;
        void *ks = token_slice(*k, T, at, n, 2), *vs = token_slice(*v, T, at, n, 2);
        kvd_append_result r;
        CHECK_RC(c, append_with_ids(c, s, n, ks, vs, ids + at, (int)(i % 2), &r), KVD_OK);
        CHECK(r.first_position == at && r.length == at + n, "append at %u", at);
        free(ks);
        free(vs);
        at += n;
    }
    return s;
}

static kvd_prefix_stats prefix_stats(kvd_client *c) {
    kvd_prefix_stats p;
    memset(&p, 0, sizeof p);
    p.struct_size = sizeof p;
    CHECK_RC(c, kvd_client_prefix_stats(c, &p), KVD_OK);
    return p;
}

static kvd_stats arena_stats(kvd_client *c) {
    kvd_stats st;
    memset(&st, 0, sizeof st);
    CHECK_RC(c, kvd_client_stats(c, 0, &st), KVD_OK);
    return st;
}

static uint64_t lookup_tokens(kvd_client *c, const char *model, const uint32_t *ids, size_t n) {
    kvd_lookup_result r = {99, 99, 99};
    kvd_result rc = kvd_client_lookup(c, model, ids, n, &r);
    CHECK_RC(c, rc, KVD_OK);
    CHECK(rc != KVD_OK || (r.page_tokens == P && r.pages_per_head == r.tokens / P),
          "lookup result %llu tokens, %u pages per head, P %u", (unsigned long long)r.tokens,
          r.pages_per_head, r.page_tokens);
    return rc == KVD_OK ? r.tokens : UINT64_MAX;
}

/* Lookup misses, then finds whole pages only after appends with ids; stops at a changed id. */
static void test_prefix_lookup(void) {
    kvd_client *c = connect_ok(5000);
    REQUIRE(c, "connect");
    const uint32_t T = 22; /* 5 full pages and 2 tokens */
    uint32_t *ids = prompt_ids(0x1000, T + 1);
    kvd_prefix_stats p0 = prefix_stats(c);
    CHECK(p0.enabled == 1, "prefix cache enabled");
    CHECK(lookup_tokens(c, "tiny-f16", ids, T) == 0, "miss before anything was appended");
    void *k, *v;
    uint64_t s = written_with_ids(c, T, ids, &k, &v);
    check_sequence(c, s, KVD_DTYPE_F16, T, k, v, "appended with ids");

    kvd_lookup_result r = {0, 0, 0};
    CHECK_RC(c, kvd_client_lookup(c, "tiny-f16", ids, T + 1, &r), KVD_OK);
    CHECK(r.tokens == 20 && r.pages_per_head == 5 && r.page_tokens == P,
          "hit: %llu tokens, %u pages per head, P %u", (unsigned long long)r.tokens,
          r.pages_per_head, r.page_tokens);
    CHECK(lookup_tokens(c, "tiny-f16", ids, T) == 20, "the partial last page never matches");
    CHECK(lookup_tokens(c, "tiny-f16", ids, 3) == 0, "less than a page never hits");
    uint32_t saved = ids[9];
    ids[9] ^= 0x01000000u; /* a different token in block 2: blocks 0 and 1 still match */
    CHECK(lookup_tokens(c, "tiny-f16", ids, T) == 8, "changed id 9");
    ids[9] = saved;
    CHECK(lookup_tokens(c, "tiny-f32", ids, T) == 0, "another model's blocks never match");
    CHECK(lookup_tokens(c, "tiny-f16", NULL, 0) == 0, "no ids");

    kvd_prefix_stats p1 = prefix_stats(c);
    CHECK(p1.cached_blocks == p0.cached_blocks + 5 && p1.cached_pages == p0.cached_pages + 5 * HEADS,
          "cached blocks %llu, pages %u", (unsigned long long)p1.cached_blocks, p1.cached_pages);
    CHECK(p1.hits == p0.hits + 5 + 5 + 2, "hits %llu -> %llu", (unsigned long long)p0.hits,
          (unsigned long long)p1.hits);
    CHECK(p1.misses > p0.misses, "misses counted");

    /* Refusals, on the client and by the daemon; *out unchanged on failure. */
    r = (kvd_lookup_result){7, 7, 7};
    CHECK_RC(c, kvd_client_lookup(c, "tiny-f16", NULL, 4, &r), KVD_ERR_ARGUMENT);
    CHECK(strstr(kvd_client_last_error(c), "NULL") != NULL, "%s", kvd_client_last_error(c));
    CHECK_RC(c, kvd_client_lookup(c, NULL, ids, T, &r), KVD_ERR_ARGUMENT);
    CHECK_RC(c, kvd_client_lookup(c, "", ids, T, &r), KVD_ERR_ARGUMENT);
    CHECK_RC(c, kvd_client_lookup(c, "tiny-f16", ids, T, NULL), KVD_ERR_ARGUMENT);
    CHECK_RC(c, kvd_client_lookup(c, "no-such-model", ids, T, &r), KVD_ERR_NOT_FOUND);
    CHECK(r.tokens == 7 && r.pages_per_head == 7 && r.page_tokens == 7, "out unchanged");
    CHECK(kvd_client_lookup(NULL, "tiny-f16", ids, T, &r) == KVD_ERR_ARGUMENT, "NULL client");

    CHECK_RC(c, kvd_client_release(c, s, NULL, NULL), KVD_OK);
    /* Released, the blocks stay cached (only the index holds their pages) and still match. */
    CHECK(lookup_tokens(c, "tiny-f16", ids, T) == 20, "cached after release");
    kvd_prefix_stats p2 = prefix_stats(c);
    CHECK(p2.unused_pages == p0.unused_pages + 5 * HEADS, "unused pages %u", p2.unused_pages);
    free(ids);
    free(k);
    free(v);
    kvd_client_free(c);
}

static uint64_t create_adopting(kvd_client *c, const uint32_t *ids, size_t n, uint64_t *adopted) {
    kvd_sequence_options o;
    memset(&o, 0, sizeof o);
    o.struct_size = sizeof o;
    o.adopt_token_ids = ids;
    o.adopt_count = n;
    o.adopted_tokens = adopted;
    uint64_t s = 0;
    CHECK_RC(c, kvd_client_create_sequence_ex(c, "tiny-f16", &o, &s), KVD_OK);
    return s;
}

/* Two sequences adopt a cached prefix (held once), diverge, and read back bit-exact; the source
 * is unchanged; released, only the index holds the prefix. */
static void test_prefix_adopt(void) {
    kvd_client *c = connect_ok(5000);
    REQUIRE(c, "connect");
    const uint32_t T = 16, TA = 6, TB = 9;
    uint32_t *ids = prompt_ids(0x2000, T + 3);
    kvd_stats st0 = arena_stats(c);
    kvd_prefix_stats p0 = prefix_stats(c);
    void *k, *v;
    uint64_t src = written_with_ids(c, T, ids, &k, &v);
    uint32_t free_after_source = arena_stats(c).free_pages;
    CHECK(free_after_source == st0.free_pages - T, "the source holds %u pages",
          st0.free_pages - free_after_source);

    uint64_t adopted_a = 99, adopted_b = 99;
    uint64_t a = create_adopting(c, ids, T + 3, &adopted_a);
    uint64_t b = create_adopting(c, ids, T, &adopted_b);
    CHECK(adopted_a == T && adopted_b == T, "adopted %llu and %llu tokens",
          (unsigned long long)adopted_a, (unsigned long long)adopted_b);
    CHECK(arena_stats(c).free_pages == free_after_source, "adopting allocates nothing");
    kvd_stats sa;
    CHECK_RC(c, kvd_client_stats(c, a, &sa), KVD_OK);
    CHECK(sa.sequence.length == T && sa.sequence.pages == T, "adopted: length %llu, %u pages",
          (unsigned long long)sa.sequence.length, sa.sequence.pages);

    /* a continues with the rest of its prompt (ids included) zero-copy, b inline without ids. */
    void *ka = random_bits((size_t)HEADS * TA * D * 2), *va = random_bits((size_t)HEADS * TA * D * 2);
    void *kb = random_bits((size_t)HEADS * TB * D * 2), *vb = random_bits((size_t)HEADS * TB * D * 2);
    uint32_t *ids_a = prompt_ids(0x2000 + 77, TA);
    kvd_append_result ar;
    CHECK_RC(c, append_with_ids(c, a, TA, ka, va, ids_a, 1, &ar), KVD_OK);
    CHECK(ar.first_position == T && ar.length == T + TA, "a continues at %llu",
          (unsigned long long)ar.first_position);
    CHECK_RC(c, kvd_client_append(c, b, KVD_DTYPE_F16, L, H, TB, D, kb, vb, &ar), KVD_OK);
    CHECK(ar.first_position == T && ar.length == T + TB, "b continues at %llu",
          (unsigned long long)ar.first_position);
    void *kfa = token_concat(k, T, ka, TA, 2), *vfa = token_concat(v, T, va, TA, 2);
    void *kfb = token_concat(k, T, kb, TB, 2), *vfb = token_concat(v, T, vb, TB, 2);
    check_sequence(c, a, KVD_DTYPE_F16, T + TA, kfa, vfa, "adopted a");
    check_sequence(c, b, KVD_DTYPE_F16, T + TB, kfb, vfb, "adopted b");
    check_sequence(c, src, KVD_DTYPE_F16, T, k, v, "source after the adopters appended");

    /* Source, a and b hold the 16 prefix pages, with the index: shared, 2 copies saved each. */
    kvd_stats st = arena_stats(c);
    kvd_prefix_stats p = prefix_stats(c);
    CHECK(p.shared_pages == p0.shared_pages + T && p.pages_saved == p0.pages_saved + 2 * T &&
          p.bytes_saved == p0.bytes_saved + 2 * T * st.page_bytes,
          "shared %u, saved %llu pages, %llu bytes", p.shared_pages,
          (unsigned long long)p.pages_saved, (unsigned long long)p.bytes_saved);
    /* a grew by 2 pages per head, b by 3: only those are new. */
    CHECK(st.free_pages == free_after_source - (2 + 3) * HEADS, "free pages %u, want %u",
          st.free_pages, free_after_source - (2 + 3) * HEADS);
    /* a's ids extended the index; b appended without ids and indexes nothing more. */
    uint32_t *ids_full = malloc((T + TA) * sizeof *ids_full);
    memcpy(ids_full, ids, T * sizeof *ids);
    memcpy(ids_full + T, ids_a, TA * sizeof *ids);
    CHECK(lookup_tokens(c, "tiny-f16", ids_full, T + TA) == 20, "a's next block is indexed");

    /* A miss adopts nothing; an older struct_size has no adopt fields (nor adopted_tokens). */
    uint32_t other[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    uint64_t none = 99;
    uint64_t m = create_adopting(c, other, 8, &none);
    CHECK(none == 0, "miss: adopted %llu", (unsigned long long)none);
    kvd_sequence_options o;
    memset(&o, 0, sizeof o);
    o.struct_size = offsetof(kvd_sequence_options, adopt_token_ids);
    o.adopt_token_ids = ids;
    o.adopt_count = T;
    uint64_t untouched = 12345;
    o.adopted_tokens = &untouched;
    uint64_t old = 0;
    CHECK_RC(c, kvd_client_create_sequence_ex(c, "tiny-f16", &o, &old), KVD_OK);
    CHECK_RC(c, kvd_client_stats(c, old, &sa), KVD_OK);
    CHECK(sa.sequence.length == 0 && untouched == 12345, "old struct: length %llu",
          (unsigned long long)sa.sequence.length);
    /* NULL ids with a count: refused before anything is sent, no sequence created. */
    uint32_t seqs = arena_stats(c).sequences;
    o.struct_size = sizeof o;
    o.adopt_token_ids = NULL;
    CHECK_RC(c, kvd_client_create_sequence_ex(c, "tiny-f16", &o, &old), KVD_ERR_ARGUMENT);
    CHECK(strstr(kvd_client_last_error(c), "adopt") != NULL, "%s", kvd_client_last_error(c));
    CHECK(arena_stats(c).sequences == seqs && untouched == 12345, "nothing created");

    uint64_t all[5] = {src, a, b, m, old};
    for (int i = 0; i < 5; i++) CHECK_RC(c, kvd_client_release(c, all[i], NULL, NULL), KVD_OK);
    /* Every page back except the cached blocks only the index holds now: 4 of the source, 1 of a. */
    st = arena_stats(c);
    p = prefix_stats(c);
    CHECK(p.unused_pages == p0.unused_pages + (4 + 1) * HEADS && p.cached_pages == p.unused_pages &&
          st.free_pages + p.unused_pages == st0.free_pages + p0.unused_pages,
          "after release: %u free, %u cached, %u unused", st.free_pages, p.cached_pages,
          p.unused_pages);
    free(ids); free(ids_a); free(ids_full);
    free(k); free(v); free(ka); free(va); free(kb); free(vb);
    free(kfa); free(vfa); free(kfb); free(vfb);
    kvd_client_free(c);
}

/* Fork shares whole pages and copies the partial one; both sides diverge bit-exact; the
 * daemon's refusals change nothing. */
static void test_prefix_fork(void) {
    kvd_client *c = connect_ok(5000);
    REQUIRE(c, "connect");
    const uint32_t T = 30, TF = 26, TX = 5, TS = 3;
    uint32_t seqs0 = arena_stats(c).sequences;
    uint32_t *ids = prompt_ids(0x3000, T);
    void *k, *v;
    uint64_t src = written_with_ids(c, T, ids, &k, &v);
    uint32_t free0 = arena_stats(c).free_pages;

    kvd_fork_result f = {0, 0, 0};
    CHECK_RC(c, kvd_client_fork(c, src, TF, 0, &f), KVD_OK);
    CHECK(f.sequence_id != 0 && f.sequence_id != src && f.length == TF && f.generation == 1,
          "fork %llu: length %llu generation %llu", (unsigned long long)f.sequence_id,
          (unsigned long long)f.length, (unsigned long long)f.generation);
    /* 6 whole pages per head shared, the 2-token last page copied: one new page per head. */
    uint32_t free1 = arena_stats(c).free_pages;
    CHECK(free1 == free0 - HEADS, "the fork allocated %u pages, want %u", free0 - free1, HEADS);
    void *kf = token_slice(k, T, 0, TF, 2), *vf = token_slice(v, T, 0, TF, 2);
    check_sequence(c, f.sequence_id, KVD_DTYPE_F16, TF, kf, vf, "fork");

    void *kx = random_bits((size_t)HEADS * TX * D * 2), *vx = random_bits((size_t)HEADS * TX * D * 2);
    void *ks = random_bits((size_t)HEADS * TS * D * 2), *vs = random_bits((size_t)HEADS * TS * D * 2);
    uint32_t *ids_x = prompt_ids(0x3000 + 99, TX);
    uint32_t *ids_f = malloc((TF + TX) * sizeof *ids_f);

    /* A page-aligned fork shares every page (allocates nothing) and keeps indexing (done before
     * the source appends without ids below, which stops the source's indexing and its forks'). */
    kvd_fork_result al = {0, 0, 0};
    CHECK_RC(c, kvd_client_fork(c, src, 24, 0, &al), KVD_OK);
    CHECK(arena_stats(c).free_pages == free1, "a page-aligned fork allocated pages");
    CHECK_RC(c, append_with_ids(c, al.sequence_id, TX, kx, vx, ids_x, 0, NULL), KVD_OK);
    memcpy(ids_f, ids, 24 * sizeof *ids);
    memcpy(ids_f + 24, ids_x, TX * sizeof *ids);
    CHECK(lookup_tokens(c, "tiny-f16", ids_f, 24 + TX) == 28, "the aligned fork's block is indexed");
    void *k24 = token_slice(k, T, 0, 24, 2), *v24 = token_slice(v, T, 0, 24, 2);
    void *kax = token_concat(k24, 24, kx, TX, 2), *vax = token_concat(v24, 24, vx, TX, 2);
    check_sequence(c, al.sequence_id, KVD_DTYPE_F16, 24 + TX, kax, vax, "page-aligned fork");

    /* Different tokens on each side: the fork zero-copy (its layout came from the source), the
     * source inline; the fork's write lands in its copied page, never in the shared ones. */
    kvd_append_result ar;
    CHECK_RC(c, append_with_ids(c, f.sequence_id, TX, kx, vx, ids_x, 1, &ar), KVD_OK);
    CHECK(ar.first_position == TF && ar.length == TF + TX, "fork continues at %llu",
          (unsigned long long)ar.first_position);
    CHECK_RC(c, kvd_client_append(c, src, KVD_DTYPE_F16, L, H, TS, D, ks, vs, &ar), KVD_OK);
    CHECK(ar.first_position == T, "source continues at %llu", (unsigned long long)ar.first_position);
    void *kfx = token_concat(kf, TF, kx, TX, 2), *vfx = token_concat(vf, TF, vx, TX, 2);
    void *ksx = token_concat(k, T, ks, TS, 2), *vsx = token_concat(v, T, vs, TS, 2);
    check_sequence(c, f.sequence_id, KVD_DTYPE_F16, TF + TX, kfx, vfx, "fork after both appended");
    check_sequence(c, src, KVD_DTYPE_F16, T + TS, ksx, vsx, "source after both appended");
    /* A fork ending inside a block the source has hashed since (ids 24..27) no longer knows that
     * block's ids, so the daemon does not index it: only the source's 6 blocks match. */
    memcpy(ids_f, ids, TF * sizeof *ids);
    memcpy(ids_f + TF, ids_x, TX * sizeof *ids);
    CHECK(lookup_tokens(c, "tiny-f16", ids_f, TF + TX) == 24, "the source's blocks only");

    /* A wanted id and a fork of the fork; a zero-length fork; a taken id. */
    kvd_fork_result g = {0, 0, 0};
    CHECK_RC(c, kvd_client_fork(c, f.sequence_id, TF + TX, 888001, &g), KVD_OK);
    CHECK(g.sequence_id == 888001 && g.length == TF + TX, "wanted id %llu",
          (unsigned long long)g.sequence_id);
    check_sequence(c, g.sequence_id, KVD_DTYPE_F16, TF + TX, kfx, vfx, "fork of the fork");
    kvd_fork_result e = {0, 9, 0};
    CHECK_RC(c, kvd_client_fork(c, src, 0, 0, &e), KVD_OK);
    CHECK(e.sequence_id != 0 && e.length == 0, "zero-length fork");
    kvd_stats es;
    CHECK_RC(c, kvd_client_stats(c, e.sequence_id, &es), KVD_OK);
    CHECK(es.sequence.length == 0 && es.sequence.pages == 0, "the empty fork holds nothing");
    CHECK_RC(c, kvd_client_fork(c, src, 4, 888001, NULL), KVD_ERR_ALREADY_EXISTS);

    /* Refusals: nothing changes. */
    kvd_stats before = arena_stats(c);
    kvd_prefix_stats pb = prefix_stats(c);
    kvd_fork_result keep = {5, 6, 7};
    CHECK_RC(c, kvd_client_fork(c, src, T + TS + 1, 0, &keep), KVD_ERR_INVALID_ARGUMENT);
    CHECK(strstr(kvd_client_last_error(c), "length") != NULL, "%s", kvd_client_last_error(c));
    CHECK_RC(c, kvd_client_fork(c, src, UINT64_MAX, 0, &keep), KVD_ERR_INVALID_ARGUMENT);
    CHECK_RC(c, kvd_client_fork(c, 424243, 1, 0, &keep), KVD_ERR_NOT_FOUND);
    kvd_reservation *r = NULL;
    CHECK_RC(c, kvd_client_reserve(c, src, 2, &r), KVD_OK);
    CHECK_RC(c, kvd_client_fork(c, src, 4, 0, &keep), KVD_ERR_FAILED_PRECONDITION);
    if (r) CHECK_RC(c, kvd_client_abort(c, r), KVD_OK);
    kvd_reservation_free(r);
    CHECK(keep.sequence_id == 5 && keep.length == 6 && keep.generation == 7, "out unchanged");
    kvd_stats after = arena_stats(c);
    kvd_prefix_stats pa = prefix_stats(c);
    CHECK(after.free_pages == before.free_pages && after.sequences == before.sequences &&
          pa.cached_blocks == pb.cached_blocks, "refused forks changed nothing");
    check_sequence(c, src, KVD_DTYPE_F16, T + TS, ksx, vsx, "source after refused forks");
    CHECK(kvd_client_fork(NULL, src, 1, 0, NULL) == KVD_ERR_ARGUMENT, "NULL client");

    /* Compacting the source copies what it shares first: both forks stay bit-exact; a compacted
     * sequence can no longer be forked. */
    kvd_compact_options co;
    memset(&co, 0, sizeof co);
    co.struct_size = sizeof co;
    co.policy = "stream_small";
    CHECK_RC(c, kvd_client_compact(c, src, &co, NULL), KVD_OK);
    check_sequence(c, f.sequence_id, KVD_DTYPE_F16, TF + TX, kfx, vfx, "fork, source compacted");
    check_sequence(c, g.sequence_id, KVD_DTYPE_F16, TF + TX, kfx, vfx, "fork of the fork, source compacted");
    CHECK_RC(c, kvd_client_fork(c, src, 4, 0, &keep), KVD_ERR_FAILED_PRECONDITION);
    CHECK(strstr(kvd_client_last_error(c), "compact") != NULL, "%s", kvd_client_last_error(c));

    uint64_t all[5] = {src, f.sequence_id, g.sequence_id, e.sequence_id, al.sequence_id};
    for (int i = 0; i < 5; i++) CHECK_RC(c, kvd_client_release(c, all[i], NULL, NULL), KVD_OK);
    CHECK(arena_stats(c).sequences == seqs0, "every sequence released");
    free(ids); free(ids_x); free(ids_f);
    free(k); free(v); free(kf); free(vf); free(kx); free(vx); free(ks); free(vs);
    free(kfx); free(vfx); free(ksx); free(vsx); free(k24); free(v24); free(kax); free(vax);
    kvd_client_free(c);
}

/* Token ids on Append and Commit: a wrong count is refused before anything is sent or reserved
 * (nothing changes, the sequence keeps indexing); ids on a partial Commit; an append without ids
 * stops the indexing for good. */
static void test_prefix_token_ids(void) {
    kvd_client *c = connect_ok(5000);
    REQUIRE(c, "connect");
    uint32_t *ids = prompt_ids(0x4000, 24);
    void *k, *v;
    uint64_t s = written_with_ids(c, 8, ids, &k, &v);
    void *k2 = random_bits((size_t)HEADS * 4 * D * 2), *v2 = random_bits((size_t)HEADS * 4 * D * 2);
    kvd_stats before = arena_stats(c);
    kvd_prefix_stats pb = prefix_stats(c);

    kvd_append_options o;
    memset(&o, 0, sizeof o);
    o.struct_size = sizeof o;
    for (int zc = 0; zc < 2; zc++) {
        o.zero_copy = zc;
        o.token_ids = ids + 8;
        o.num_token_ids = 3; /* for 4 tokens */
        CHECK_RC(c, kvd_client_append_ex(c, s, KVD_DTYPE_F16, L, H, 4, D, k2, v2, &o, NULL),
                 KVD_ERR_ARGUMENT);
        CHECK(strstr(kvd_client_last_error(c), "3 token ids for 4 tokens") != NULL, "%s",
              kvd_client_last_error(c));
        o.num_token_ids = 5;
        CHECK_RC(c, kvd_client_append_ex(c, s, KVD_DTYPE_F16, L, H, 4, D, k2, v2, &o, NULL),
                 KVD_ERR_ARGUMENT);
        o.token_ids = NULL;
        o.num_token_ids = 4;
        CHECK_RC(c, kvd_client_append_ex(c, s, KVD_DTYPE_F16, L, H, 4, D, k2, v2, &o, NULL),
                 KVD_ERR_ARGUMENT);
        CHECK(strstr(kvd_client_last_error(c), "NULL") != NULL, "%s", kvd_client_last_error(c));
    }
    o.struct_size = sizeof o + 1;
    CHECK_RC(c, kvd_client_append_ex(c, s, KVD_DTYPE_F16, L, H, 4, D, k2, v2, &o, NULL),
             KVD_ERR_ARGUMENT);
    CHECK(strstr(kvd_client_last_error(c), "struct_size") != NULL, "%s", kvd_client_last_error(c));
    CHECK(kvd_client_append_ex(NULL, s, KVD_DTYPE_F16, L, H, 4, D, k2, v2, NULL, NULL) ==
          KVD_ERR_ARGUMENT, "NULL client");
    kvd_stats st;
    CHECK_RC(c, kvd_client_stats(c, s, &st), KVD_OK);
    kvd_stats after = arena_stats(c);
    kvd_prefix_stats pa = prefix_stats(c);
    CHECK(st.sequence.length == 8 && st.sequence.reserved_tokens == 0 &&
          after.free_pages == before.free_pages && pa.cached_blocks == pb.cached_blocks,
          "refused appends changed nothing (length %llu)", (unsigned long long)st.sequence.length);
    check_sequence(c, s, KVD_DTYPE_F16, 8, k, v, "after refused appends");

    /* Reserve 6, commit 4 with ids: a wrong count leaves the reservation open. */
    kvd_reservation *r = NULL;
    CHECK_RC(c, kvd_client_reserve(c, s, 6, &r), KVD_OK);
    REQUIRE(r, "reservation");
    uint8_t *kr = random_bits((size_t)HEADS * 6 * D * 2), *vr = random_bits((size_t)HEADS * 6 * D * 2);
    CHECK(kvd_reservation_write(r, kr, vr, (size_t)HEADS * 6 * D * 2) == KVD_OK, "write");
    CHECK_RC(c, kvd_client_commit_ex(c, r, 4, ids + 8, 6, NULL), KVD_ERR_ARGUMENT);
    CHECK_RC(c, kvd_client_commit_ex(c, r, 0, ids + 8, 4, NULL), KVD_ERR_ARGUMENT); /* 0 = all 6 */
    CHECK_RC(c, kvd_client_commit_ex(c, r, 4, NULL, 4, NULL), KVD_ERR_ARGUMENT);
    CHECK_RC(c, kvd_client_commit_ex(c, NULL, 4, ids + 8, 4, NULL), KVD_ERR_ARGUMENT);
    CHECK_RC(c, kvd_client_stats(c, s, &st), KVD_OK);
    CHECK(st.sequence.reserved_tokens == 6 && st.sequence.length == 8, "still reserved: %u",
          st.sequence.reserved_tokens);
    kvd_append_result ar;
    CHECK_RC(c, kvd_client_commit_ex(c, r, 4, ids + 8, 4, &ar), KVD_OK);
    CHECK(ar.length == 12 && ar.first_position == 8, "committed: length %llu",
          (unsigned long long)ar.length);
    kvd_reservation_free(r);
    /* expected contents: the 8 written tokens, then the reservation's first 4 */
    void *kr4 = token_slice(kr, 6, 0, 4, 2), *vr4 = token_slice(vr, 6, 0, 4, 2);
    void *k12 = token_concat(k, 8, kr4, 4, 2), *v12 = token_concat(v, 8, vr4, 4, 2);
    check_sequence(c, s, KVD_DTYPE_F16, 12, k12, v12, "after the commit with ids");
    CHECK(lookup_tokens(c, "tiny-f16", ids, 24) == 12, "the committed block is indexed");

    /* Zero-copy with ids through kvd_client_commit_ex's "all" (n = 0). */
    CHECK_RC(c, kvd_client_reserve(c, s, 4, &r), KVD_OK);
    REQUIRE(r, "reservation");
    CHECK(kvd_reservation_write(r, k2, v2, (size_t)HEADS * 4 * D * 2) == KVD_OK, "write");
    CHECK_RC(c, kvd_client_commit_ex(c, r, 0, ids + 12, 4, NULL), KVD_OK);
    kvd_reservation_free(r);
    CHECK(lookup_tokens(c, "tiny-f16", ids, 24) == 16, "n = 0 commits all, with their ids");

    /* An append without ids stops the indexing of the sequence for good: the next block filled
     * with ids is not indexed either. */
    uint64_t blocks = prefix_stats(c).cached_blocks;
    CHECK_RC(c, kvd_client_append_ex(c, s, KVD_DTYPE_F16, L, H, 4, D, k2, v2, NULL, NULL), KVD_OK);
    CHECK_RC(c, append_with_ids(c, s, 4, k2, v2, ids + 20, 0, NULL), KVD_OK);
    CHECK(prefix_stats(c).cached_blocks == blocks, "no block indexed after an append without ids");
    CHECK(lookup_tokens(c, "tiny-f16", ids, 24) == 16, "lookup still stops at 16");
    CHECK_RC(c, kvd_client_release(c, s, NULL, NULL), KVD_OK);
    free(ids); free(k); free(v); free(k2); free(v2); free(kr); free(vr);
    free(kr4); free(vr4); free(k12); free(v12);
    kvd_client_free(c);
}

/* Cross-language prefix reuse (Tests/e2e/test_c_prefix.py): the same ids hash the same in both
 * clients only if both send the same bytes. DIR/prefix.txt is "model sequence_id tokens base";
 * DIR/prefix.k / prefix.v hold the sequence's K/V, [L, H, tokens, D] f16. */

/* C appends 22 tokens with ids (inline and zero-copy) for Python to look up, adopt and fork. */
static void test_prefix_cross_write(void) {
    kvd_client *c = connect_ok(5000);
    REQUIRE(c, "connect");
    const uint32_t T = 22, base = 0x9abc0000u;
    uint32_t *ids = prompt_ids(base, T);
    void *k, *v;
    uint64_t s = written_with_ids(c, T, ids, &k, &v);
    size_t bytes = (size_t)HEADS * T * D * 2;
    CHECK(write_file(g_dir, "prefix", "k", k, bytes) && write_file(g_dir, "prefix", "v", v, bytes),
          "write files");
    char path[512];
    snprintf(path, sizeof path, "%s/prefix.txt", g_dir);
    FILE *f = fopen(path, "w");
    REQUIRE(f, "manifest");
    fprintf(f, "tiny-f16 %llu %u %u\n", (unsigned long long)s, T, base);
    fclose(f);
    free(ids);
    free(k);
    free(v);
    kvd_client_free(c);
}

/* Python appended with ids: C finds the prefix, adopts it and forks the sequence, bit-exact. */
static void test_prefix_cross_read(void) {
    kvd_client *c = connect_ok(5000);
    REQUIRE(c, "connect");
    char path[512], model[64];
    snprintf(path, sizeof path, "%s/prefix.txt", g_dir);
    FILE *f = fopen(path, "r");
    REQUIRE(f, "manifest %s", path);
    unsigned long long s = 0;
    unsigned T = 0, base = 0;
    int got = fscanf(f, "%63s %llu %u %u", model, &s, &T, &base);
    fclose(f);
    REQUIRE(got == 4 && strcmp(model, "tiny-f16") == 0 && T > 0 && T <= 64, "manifest line");
    size_t nk = 0, nv = 0;
    void *k = read_file(g_dir, "prefix", "k", &nk), *v = read_file(g_dir, "prefix", "v", &nv);
    REQUIRE(k && v && nk == (size_t)HEADS * T * D * 2 && nv == nk, "data files");
    uint32_t *ids = prompt_ids(base, T);
    uint32_t whole = T / P * P;
    CHECK(lookup_tokens(c, model, ids, T) == whole, "lookup of Python's ids");
    uint64_t adopted = 0;
    uint64_t a = create_adopting(c, ids, T, &adopted);
    CHECK(adopted == whole, "adopted %llu of %u", (unsigned long long)adopted, whole);
    void *kw = token_slice(k, T, 0, whole, 2), *vw = token_slice(v, T, 0, whole, 2);
    check_sequence(c, a, KVD_DTYPE_F16, whole, kw, vw, "adopted from Python's blocks");
    kvd_fork_result fr = {0, 0, 0};
    CHECK_RC(c, kvd_client_fork(c, s, T, 0, &fr), KVD_OK);
    check_sequence(c, fr.sequence_id, KVD_DTYPE_F16, T, k, v, "fork of Python's sequence");
    CHECK_RC(c, kvd_client_release(c, a, NULL, NULL), KVD_OK);
    CHECK_RC(c, kvd_client_release(c, fr.sequence_id, NULL, NULL), KVD_OK);
    free(ids);
    free(k);
    free(v);
    free(kw);
    free(vw);
    kvd_client_free(c);
}

/* ============================================================================================= */
/* Restart (driven by the pytest side through stdin/stdout)                                       */

static void wait_line(const char *tell) {
    printf("%s\n", tell);
    fflush(stdout);
    char line[64];
    if (!fgets(line, sizeof line, stdin)) exit(3);
}

static void test_restart(void) {
    kvd_client *c = connect_ok(1000);
    REQUIRE(c, "connect");
    uint64_t s = 0;
    CHECK_RC(c, kvd_client_create_sequence(c, "tiny-f16", 0, NULL, &s), KVD_OK);
    size_t bytes = (size_t)L * H * 5 * D * 2;
    void *k = random_bits(bytes), *v = random_bits(bytes);
    CHECK_RC(c, kvd_client_append(c, s, KVD_DTYPE_F16, L, H, 5, D, k, v, NULL), KVD_OK);
    kvd_query_result *q = NULL;
    CHECK_RC(c, kvd_client_query(c, s, KVD_QUERY_PAGES, NULL, 0, &q), KVD_OK);
    kvd_hello_info *h1 = NULL;
    CHECK_RC(c, kvd_client_hello(c, &h1), KVD_OK);

    wait_line("READY restart");  /* the driver restarts the daemon (same config) */
    kvd_stats st;
    CHECK_RC(c, kvd_client_stats(c, s, &st), KVD_ERR_RESTARTED);
    CHECK(strstr(kvd_client_last_error(c), "restarted") != NULL, "%s", kvd_client_last_error(c));
    /* re-attached: the next call works; the old sequence is unknown to the new daemon */
    CHECK_RC(c, kvd_client_stats(c, s, &st), KVD_ERR_NOT_FOUND);
    kvd_hello_info *h2 = NULL;
    CHECK_RC(c, kvd_client_hello(c, &h2), KVD_OK);
    CHECK(h1 && h2 && h1->arena_generation != h2->arena_generation, "new arena generation");
    if (q) { /* the old result still points at the old (unlinked) mapping: readable, stale */
        uint8_t kb[5 * D * 2];
        CHECK(kvd_query_copy_head(q, 0, kb, NULL, sizeof kb, NULL) == KVD_OK &&
              memcmp(kb, k, sizeof kb) == 0, "old result readable");
    }
    uint64_t s2 = 0;
    CHECK_RC(c, kvd_client_create_sequence(c, "tiny-f16", 0, NULL, &s2), KVD_OK);
    CHECK_RC(c, kvd_client_append_zero_copy(c, s2, KVD_DTYPE_F16, L, H, 5, D, k, v, NULL), KVD_OK);
    check_sequence(c, s2, KVD_DTYPE_F16, 5, k, v, "after restart");

    wait_line("READY stop");  /* the driver stops the daemon: the segment vanishes */
    int64_t t0 = now_ms();
    CHECK_RC(c, kvd_client_stats(c, 0, &st), KVD_ERR_TIMEOUT);
    CHECK(now_ms() - t0 < 3000, "no hang");
    CHECK(strstr(kvd_client_last_error(c), "vanished") != NULL, "%s", kvd_client_last_error(c));

    wait_line("READY start");  /* the driver starts the daemon again */
    CHECK_RC(c, kvd_client_create_sequence(c, "tiny-f16", 0, NULL, &s2), KVD_ERR_RESTARTED);
    CHECK_RC(c, kvd_client_create_sequence(c, "tiny-f16", 0, NULL, &s2), KVD_OK);
    CHECK_RC(c, kvd_client_append(c, s2, KVD_DTYPE_F16, L, H, 5, D, k, v, NULL), KVD_OK);
    check_sequence(c, s2, KVD_DTYPE_F16, 5, k, v, "after stop + start");
    CHECK_RC(c, kvd_client_release(c, s2, NULL, NULL), KVD_OK);
    kvd_query_result_free(q);
    kvd_hello_info_free(h1);
    kvd_hello_info_free(h2);
    free(k);
    free(v);
    kvd_client_free(c);
}

/* ============================================================================================= */

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s all|pipeline|prefix|write-cross|read-cross|prefix-write|prefix-read|restart "
                        "ENDPOINT [DIR]\n"
                        "       %s curve ENDPOINT SERVER_PUB CLIENT_BASE OTHER_BASE\n", argv[0], argv[0]);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    g_endpoint = argv[2];
    rng_state ^= (uint64_t)getpid() << 20;
    const char *cmd = argv[1];
    if (strcmp(cmd, "all") == 0) {
        TEST(test_helpers);
        TEST(test_connect_bad_arguments);
        TEST(test_null_client);
        TEST(test_hello);
        TEST(test_sequences_and_stats);
        TEST(test_inline_vs_zero_copy);
        TEST(test_reserve_commit);
        TEST(test_commit_keep);
        TEST(test_pipeline_decode);
        TEST(test_pipeline_failures);
        TEST(test_zero_copy_foreign_sequence);
        TEST(test_append_bad_input);
        TEST(test_arena_full);
        TEST(test_query_modes_and_copies);
        TEST(test_compact);
        TEST(test_prefix_lookup);
        TEST(test_prefix_adopt);
        TEST(test_prefix_fork);
        TEST(test_prefix_token_ids);
        TEST(test_closed_client);
        TEST(test_protocol_version_mismatch);
        TEST(test_daemon_not_running);
        TEST(test_fake_bad_protocol_version);
        TEST(test_fake_garbage_and_wrong_body);
        TEST(test_fake_late_reply);
        TEST(test_busy_detection);
        TEST(test_credentials_options);
        TEST(test_fake_curve_hello);
    } else if (strcmp(cmd, "curve") == 0 && argc == 6) {
        g_server_pub = argv[3];
        g_client_base = argv[4];
        g_other_base = argv[5];
        TEST(test_curve_roundtrip);
        TEST(test_curve_refused);
    } else if (strcmp(cmd, "write-cross") == 0 && argc == 4) {
        g_dir = argv[3];
        TEST(test_cross_write);
    } else if (strcmp(cmd, "read-cross") == 0 && argc == 4) {
        g_dir = argv[3];
        TEST(test_cross_read);
    } else if (strcmp(cmd, "pipeline") == 0) {
        g_pipeline_steps = 200;
        TEST(test_commit_keep);
        TEST(test_pipeline_decode);
        TEST(test_pipeline_failures);
        TEST(test_pipeline_commit_every);
        TEST(test_zero_copy_streaming);
    } else if (strcmp(cmd, "prefix") == 0) {
        TEST(test_prefix_lookup);
        TEST(test_prefix_adopt);
        TEST(test_prefix_fork);
        TEST(test_prefix_token_ids);
    } else if (strcmp(cmd, "prefix-write") == 0 && argc == 4) {
        g_dir = argv[3];
        TEST(test_prefix_cross_write);
    } else if (strcmp(cmd, "prefix-read") == 0 && argc == 4) {
        g_dir = argv[3];
        TEST(test_prefix_cross_read);
    } else if (strcmp(cmd, "restart") == 0) {
        TEST(test_restart);
    } else {
        fprintf(stderr, "unknown command %s\n", cmd);
        return 2;
    }
    return harness_summary();
}
