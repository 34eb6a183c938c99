/* libkvdclient shared memory: mapping the arena from /dev/shm, reference counts, segment checks. */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define ARENA_MAGIC "KVDARENA"
#define ARENA_HEADER_MIN 72

arena *kvd__arena_ref(arena *a) {
    if (a) atomic_fetch_add(&a->refs, 1);
    return a;
}

void kvd__arena_unref(arena *a) {
    if (!a) return;
    if (atomic_fetch_sub(&a->refs, 1) == 1) {
        if (a->base) munmap(a->base, a->size);
        free(a->path);
        free(a);
    }
}

int kvd__arena_current(kvd_client *c, const char **why) {
    struct stat st;
    if (!c->arena) return 1;
    if (stat(c->arena->path, &st) != 0) {
        *why = "its shared memory segment vanished";
        return 0;
    }
    if (st.st_dev != c->arena->dev || st.st_ino != c->arena->ino) {
        *why = "its shared memory segment was replaced";
        return 0;
    }
    return 1;
}

kvd_result kvd__map_arena(kvd_client *c, const Kvd__V1__SharedMemoryInfo *shm, arena **out) {
    *out = NULL;
    const char *name = shm->name ? shm->name : "";
    while (*name == '/') name++;
    if (!*name || strchr(name, '/'))
        return kvd__set_err(c, KVD_ERR_PROTOCOL, "kvd: bad shared memory name \"%s\" in Hello",
                            shm->name ? shm->name : "");
    arena *a = calloc(1, sizeof *a);
    if (!a) return kvd__oom(c);
    atomic_init(&a->refs, 1);
    if (asprintf(&a->path, "/dev/shm/%s", name) < 0) {
        free(a);
        return kvd__oom(c);
    }
    kvd_result rc = KVD_OK;
    int fd = open(a->path, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        rc = kvd__set_err(c, KVD_ERR_SYSTEM,
                          "kvd: cannot open shared memory %s: %s; is the client on the daemon's "
                          "host and user?", a->path, strerror(errno));
        goto fail;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        rc = kvd__set_err(c, KVD_ERR_SYSTEM, "kvd: fstat %s: %s", a->path, strerror(errno));
        close(fd);
        goto fail;
    }
    if (shm->size_bytes < ARENA_HEADER_MIN || (uint64_t)st.st_size < shm->size_bytes ||
        shm->size_bytes > SIZE_MAX) {
        rc = kvd__set_err(c, KVD_ERR_PROTOCOL, "kvd: %s has %lld bytes, Hello said %llu", a->path,
                          (long long)st.st_size, (unsigned long long)shm->size_bytes);
        close(fd);
        goto fail;
    }
    a->size = (size_t)shm->size_bytes;
    void *p = mmap(NULL, a->size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED) {
        rc = kvd__set_err(c, KVD_ERR_SYSTEM, "kvd: mmap %s: %s", a->path, strerror(errno));
        goto fail;
    }
    a->base = p;
    a->dev = st.st_dev;
    a->ino = st.st_ino;
    a->page_bytes = shm->page_bytes;
    a->page_count = shm->page_count;
    a->pages_offset = shm->pages_offset;
    a->staging_offset = shm->staging_offset;
    a->staging_bytes = shm->staging_bytes;
    a->generation = shm->arena_generation;
    uint64_t gen;
    uint32_t layout;
    memcpy(&layout, a->base + 8, 4);
    memcpy(&gen, a->base + 16, 8);
    if (memcmp(a->base, ARENA_MAGIC, 8) != 0 || layout != 1) {
        rc = kvd__set_err(c, KVD_ERR_PROTOCOL, "kvd: %s is not a kvd arena of layout version 1",
                          a->path);
        goto fail;
    }
    if (gen != shm->arena_generation) {
        rc = kvd__set_err(c, KVD_ERR_RESTARTED,
                          "kvd: %s has arena generation %llu, Hello said %llu: the daemon "
                          "restarted during Hello; try again", a->path, (unsigned long long)gen,
                          (unsigned long long)shm->arena_generation);
        goto fail;
    }
    uint64_t pages_end = a->page_bytes * (uint64_t)a->page_count;
    if (a->page_bytes == 0 || pages_end / a->page_bytes != a->page_count ||
        a->pages_offset > a->size || pages_end > a->size - a->pages_offset ||
        a->staging_offset > a->size || a->staging_bytes > a->size - a->staging_offset) {
        rc = kvd__set_err(c, KVD_ERR_PROTOCOL, "kvd: Hello describes pages or staging outside %s",
                          a->path);
        goto fail;
    }
    *out = a;
    return KVD_OK;
fail:
    kvd__arena_unref(a);
    return rc;
}
