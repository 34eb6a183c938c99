/*
 * raw-setget — the remote tier's baseline (benchmark section 9): plain hiredis GET and SET of the
 * very blobs kvd just offloaded, on one connection to the same redis-server, in the same run.
 *
 *   raw-setget PORT PATTERN
 *
 * Finds the keys matching PATTERN (kvd's sequence blobs), then, one command at a time, no
 * pipelining: GETs every one (timed), SETs every value it got under a key of its own (timed), and
 * UNLINKs those copies (not timed). kvd's keys are left as they were, for kvd to restore.
 * Prints one JSON line: {"keys": N, "bytes": B, "get_s": S, "set_s": S}.
 *
 * This is what "raw hiredis SET/GET of the same bytes" means: the library's synchronous API as a
 * program would use it (redisCommand with %b arguments, which formats every command anew), the same
 * keys' bytes, the same cold/warm state of the server.
 */
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void die(const char *what, redisContext *c) {
    fprintf(stderr, "raw-setget: %s: %s\n", what, c && c->err ? c->errstr : "unexpected reply");
    exit(1);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: raw-setget PORT PATTERN\n");
        return 2;
    }
    int port = atoi(argv[1]);
    redisContext *c = redisConnect("127.0.0.1", port);
    if (c == NULL || c->err) die("connect", c);

    redisReply *keys = redisCommand(c, "KEYS %s", argv[2]);
    if (keys == NULL || keys->type != REDIS_REPLY_ARRAY) die("KEYS", c);
    size_t n = keys->elements;
    redisReply **values = calloc(n ? n : 1, sizeof *values);
    if (values == NULL) die("out of memory", NULL);

    size_t bytes = 0;
    double t = now();
    for (size_t i = 0; i < n; i++) {
        redisReply *k = keys->element[i];
        values[i] = redisCommand(c, "GET %b", k->str, k->len);
        if (values[i] == NULL || values[i]->type != REDIS_REPLY_STRING) die("GET", c);
        bytes += values[i]->len;
    }
    double get_s = now() - t;

    t = now();
    for (size_t i = 0; i < n; i++) {
        char key[64];
        int len = snprintf(key, sizeof key, "raw-setget:%zu", i);
        redisReply *r = redisCommand(c, "SET %b %b", key, (size_t)len, values[i]->str, values[i]->len);
        if (r == NULL || r->type != REDIS_REPLY_STATUS) die("SET", c);
        freeReplyObject(r);
    }
    double set_s = now() - t;

    for (size_t i = 0; i < n; i++) {
        char key[64];
        int len = snprintf(key, sizeof key, "raw-setget:%zu", i);
        redisReply *r = redisCommand(c, "UNLINK %b", key, (size_t)len);
        if (r == NULL) die("UNLINK", c);
        freeReplyObject(r);
        freeReplyObject(values[i]);
    }
    free(values);
    freeReplyObject(keys);
    redisFree(c);
    printf("{\"keys\": %zu, \"bytes\": %zu, \"get_s\": %.9f, \"set_s\": %.9f}\n", n, bytes, get_s, set_s);
    return 0;
}
