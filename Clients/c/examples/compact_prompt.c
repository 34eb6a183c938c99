/*
 * compact_prompt: append a synthetic prompt's KV to kvd, compact it with a named policy, and print
 * how many tokens every layer kept.
 *
 *   compact_prompt ENDPOINT MODEL POLICY [TIMEOUT_MS]
 *   e.g. compact_prompt ipc:///tmp/kvd-default.sock smollm2-135m balanced
 *
 * The first chunk is appended inline, the rest zero-copy (Reserve, write into shared memory,
 * Commit). Observation queries (the last 8 query vectors of every query head, f32) are sent along,
 * so window-attention policies (snapkv, pyramidkv, ...) work; other methods ignore them.
 * Exit status: 0 ok, 1 a kvd error (printed with its code and message), 2 usage.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <kvd_client.h>

#define PROMPT_TOKENS 40u
#define WINDOW 8u

static int fail(kvd_client *c, kvd_result rc, const char *what) {
    fprintf(stderr, "error: %s: %s: %s\n", what, kvd_result_name(rc), kvd_client_last_error(c));
    return 1;
}

/* A deterministic synthetic value for element i of tensor `which`. */
static float synth(unsigned which, size_t i) {
    return (float)sin(0.37 * (double)i + 1.3 * which) * 2.0f + (float)((i * 7 + which) % 5) * 0.1f;
}

static void fill(void *dst, kvd_dtype dt, size_t n, unsigned which) {
    for (size_t i = 0; i < n; i++) {
        float f = synth(which, i);
        if (dt == KVD_DTYPE_F32) {
            memcpy((char *)dst + 4 * i, &f, 4);
        } else {
            uint16_t h = dt == KVD_DTYPE_F16 ? kvd_f32_to_f16(f) : kvd_f32_to_bf16(f);
            memcpy((char *)dst + 2 * i, &h, 2);
        }
    }
}

int main(int argc, char **argv) {
    if (argc < 4 || argc > 5) {
        fprintf(stderr, "usage: %s ENDPOINT MODEL POLICY [TIMEOUT_MS]\n", argv[0]);
        return 2;
    }
    const char *endpoint = argv[1], *model_name = argv[2], *policy = argv[3];
    kvd_client_options opts;
    memset(&opts, 0, sizeof opts);
    opts.struct_size = sizeof opts;
    opts.timeout_ms = argc == 5 ? atoi(argv[4]) : 5000;
    opts.client_name = "compact_prompt";

    char err[256];
    kvd_client *c = NULL;
    kvd_result rc = kvd_client_connect(endpoint, &opts, &c, err, sizeof err);
    if (rc) {
        fprintf(stderr, "error: connect: %s: %s\n", kvd_result_name(rc), err);
        return 1;
    }
    int status = 1;
    kvd_hello_info *info = NULL;
    uint64_t seq = 0;
    void *keys = NULL, *values = NULL, *chunk_k = NULL, *chunk_v = NULL;
    float *queries = NULL;
    kvd_compact_result *res = NULL;

    if ((rc = kvd_client_hello(c, &info))) { fail(c, rc, "hello"); goto out; }
    const kvd_model_layout *m = kvd_hello_find_model(info, model_name);
    if (!m) {
        fprintf(stderr, "error: the daemon has no model \"%s\"\n", model_name);
        goto out;
    }
    printf("kvd %s, model %s: %u layers x %u KV heads, head_dim %u\n", info->server_version,
           m->name, m->layers, m->kv_heads, m->head_dim);

    if ((rc = kvd_client_create_sequence(c, m->name, 0, "example", &seq))) {
        fail(c, rc, "create_sequence");
        goto out;
    }
    const uint32_t T = PROMPT_TOKENS, heads = m->layers * m->kv_heads;
    const size_t es = kvd_dtype_size(m->dtype), row = (size_t)m->head_dim * es;
    const size_t bytes = (size_t)heads * T * row;
    keys = malloc(bytes);
    values = malloc(bytes);
    chunk_k = malloc(bytes);
    chunk_v = malloc(bytes);
    size_t qn = (size_t)m->layers * m->q_heads * WINDOW * m->head_dim;
    queries = malloc(qn * sizeof *queries);
    if (!keys || !values || !chunk_k || !chunk_v || !queries) {
        fprintf(stderr, "error: out of memory\n");
        goto out;
    }
    fill(keys, m->dtype, bytes / es, 0);
    fill(values, m->dtype, bytes / es, 1);
    for (size_t i = 0; i < qn; i++) queries[i] = synth(2, i);

    /* Append [layers, kv_heads, T, head_dim] in chunks: the first inline, the others zero-copy. */
    uint32_t chunk = info->max_tokens_per_append < 16 ? info->max_tokens_per_append : 16;
    for (uint32_t start = 0, i = 0; start < T; start += chunk, i++) {
        uint32_t n = T - start < chunk ? T - start : chunk;
        for (uint32_t h = 0; h < heads; h++) { /* slice tokens [start, start + n) of every head */
            memcpy((char *)chunk_k + (size_t)h * n * row, (char *)keys + ((size_t)h * T + start) * row, n * row);
            memcpy((char *)chunk_v + (size_t)h * n * row, (char *)values + ((size_t)h * T + start) * row, n * row);
        }
        kvd_append_result ar;
        rc = i == 0 ? kvd_client_append(c, seq, m->dtype, m->layers, m->kv_heads, n, m->head_dim,
                                        chunk_k, chunk_v, &ar)
                    : kvd_client_append_zero_copy(c, seq, m->dtype, m->layers, m->kv_heads, n,
                                                  m->head_dim, chunk_k, chunk_v, &ar);
        if (rc) { fail(c, rc, i == 0 ? "append" : "append_zero_copy"); goto out; }
    }
    printf("appended %u tokens to sequence %llu\n", T, (unsigned long long)seq);

    kvd_compact_options co;
    memset(&co, 0, sizeof co);
    co.struct_size = sizeof co;
    co.policy = policy;
    co.queries = queries;
    co.queries_dtype = KVD_DTYPE_F32;
    co.queries_shape[0] = m->layers;
    co.queries_shape[1] = m->q_heads;
    co.queries_shape[2] = WINDOW;
    co.queries_shape[3] = m->head_dim;
    if ((rc = kvd_client_compact(c, seq, &co, &res))) { fail(c, rc, "compact"); goto out; }
    printf("policy %s (method %s, chosen by %s): %u pages freed in %.3f ms\n", res->policy,
           res->method, res->chosen_by, res->pages_freed, (double)res->elapsed_ns / 1e6);
    for (uint32_t layer = 0; layer < m->layers; layer++) {
        uint32_t kept = 0, before = 0;
        for (size_t h = 0; h < res->num_heads; h++)
            if (res->heads[h].layer == layer) {
                kept += res->heads[h].kept;
                before += res->heads[h].before;
            }
        printf("layer %u: kept %u of %u tokens\n", layer, kept, before);
    }
    status = 0;
out:
    if (seq) {
        kvd_result r2 = kvd_client_release(c, seq, NULL, NULL);
        if (r2 && status == 0) status = fail(c, r2, "release");
    }
    kvd_compact_result_free(res);
    kvd_hello_info_free(info);
    free(keys);
    free(values);
    free(chunk_k);
    free(chunk_v);
    free(queries);
    kvd_client_free(c);
    return status;
}
