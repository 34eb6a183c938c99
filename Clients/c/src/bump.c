/* libkvdclient: a bump allocator for replies that are read and dropped whole (Query results).
 *
 * protobuf-c unpacks a Query reply with one malloc per head message and per bytes field: ~270
 * for a 90-head model, each freed again by kvd_query_result_free. Handing protobuf-c this
 * allocator instead makes them slices of a few chunks, released together; its free is a no-op. */
#include "internal.h"

#include <stdlib.h>

typedef struct bump_chunk {
    struct bump_chunk *next;
    size_t cap, used;
    _Alignas(16) unsigned char data[];
} bump_chunk;

enum { BUMP_FIRST = 16 * 1024, BUMP_ALIGN = 16 };

static void *bump_alloc(void *data, size_t size) {
    kvd_bump *b = data;
    size = (size + BUMP_ALIGN - 1) & ~(size_t)(BUMP_ALIGN - 1);
    bump_chunk *c = b->chunks;
    if (!c || c->cap - c->used < size) {
        size_t cap = c ? 2 * c->cap : BUMP_FIRST;
        if (cap < size) cap = size;
        if (cap > SIZE_MAX - sizeof(bump_chunk)) return NULL;
        bump_chunk *n = malloc(sizeof(bump_chunk) + cap);
        if (!n) return NULL;
        n->next = c;
        n->cap = cap;
        n->used = 0;
        b->chunks = c = n;
    }
    void *p = c->data + c->used;
    c->used += size;
    return p;
}

static void bump_free(void *data, void *p) {
    (void)data;
    (void)p; /* released with the whole allocator (kvd__bump_release) */
}

void kvd__bump_init(kvd_bump *b) {
    b->chunks = NULL;
    b->pc.alloc = bump_alloc;
    b->pc.free = bump_free;
    b->pc.allocator_data = b;
}

void *kvd__bump_alloc(kvd_bump *b, size_t size) { return bump_alloc(b, size); }

void kvd__bump_release(kvd_bump *b) {
    bump_chunk *c = b->chunks;
    while (c) {
        bump_chunk *next = c->next;
        free(c);
        c = next;
    }
    b->chunks = NULL;
}
