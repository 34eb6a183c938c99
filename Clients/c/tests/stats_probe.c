/*
 * stats_probe: one libkvdclient memory-manager call against a real kvd, printed as `name=value`
 * lines for Tests/e2e/test_client_leases.py to compare with the Python client's Stats.
 *
 *   stats_probe ENDPOINT memory          kvd_client_memory_stats
 *   stats_probe ENDPOINT lease SEQ       kvd_client_sequence_lease (this connection becomes the
 *                                        sequence's owner, as with any request naming it)
 *   stats_probe ENDPOINT abandon TOKENS  a tiny-f16 sequence of TOKENS zero tokens, created without
 *                                        keep-alive; prints its id and exits (nothing renews it)
 *
 * The first line is `result=<kvd_result name>`; on failure `error=<message>` follows and the exit
 * status is 1 (2 for bad usage). Field names are those of the C structs.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvd_client.h"

static int usage(void) {
    fprintf(stderr, "usage: stats_probe ENDPOINT memory | lease SEQ | abandon TOKENS\n");
    return 2;
}

static int failed(kvd_client *c, kvd_result rc) {
    printf("result=%s\nerror=%s\n", kvd_result_name(rc), kvd_client_last_error(c));
    kvd_client_free(c);
    return 1;
}

static int memory(kvd_client *c) {
    kvd_memory_stats m;
    memset(&m, 0, sizeof m);
    m.struct_size = sizeof m;
    kvd_result rc = kvd_client_memory_stats(c, &m);
    if (rc) return failed(c, rc);
    printf("result=%s\n", kvd_result_name(rc));
    printf("high=%.17g\nlow=%.17g\n", m.high, m.low);
    printf("reservations_aborted=%" PRIu64 "\nreservations_aborted_pages=%" PRIu64 "\n",
           m.reservations_aborted, m.reservations_aborted_pages);
    printf("orphans_released=%" PRIu64 "\norphans_released_pages=%" PRIu64 "\n", m.orphans_released,
           m.orphans_released_pages);
    printf("compactions=%" PRIu64 "\ncompactions_pages=%" PRIu64 "\n", m.compactions,
           m.compactions_pages);
    printf("evictions=%" PRIu64 "\nevictions_pages=%" PRIu64 "\n", m.evictions, m.evictions_pages);
    printf("reclaim_passes=%" PRIu64 "\nsynchronous_reclaims=%" PRIu64 "\n", m.reclaim_passes,
           m.synchronous_reclaims);
    printf("last_reclaim_us=%" PRIu64 "\nlast_reclaim_reached_low=%d\n", m.last_reclaim_us,
           m.last_reclaim_reached_low);
    printf("orphans=%u\npinned_sequences=%u\npinned_pages=%u\n", m.orphans, m.pinned_sequences,
           m.pinned_pages);
    printf("events_published=%" PRIu64 "\n", m.events_published);
    kvd_client_free(c);
    return 0;
}

static int lease(kvd_client *c, uint64_t seq) {
    kvd_sequence_lease l;
    memset(&l, 0, sizeof l);
    l.struct_size = sizeof l;
    kvd_result rc = kvd_client_sequence_lease(c, seq, &l);
    if (rc) return failed(c, rc);
    printf("result=%s\n", kvd_result_name(rc));
    printf("sequence_id=%" PRIu64 "\nidle_ms=%" PRIu64 "\nlease_remaining_ms=%" PRId64 "\n",
           l.sequence_id, l.idle_ms, l.lease_remaining_ms);
    printf("orphan=%d\npinned=%d\nbytes=%" PRIu64 "\nmanager_compactions=%u\n", l.orphan, l.pinned,
           l.bytes, l.manager_compactions);
    printf("pages=%u\ntokens_held=%" PRIu64 "\nlength=%" PRIu64 "\ngeneration=%" PRIu64 "\n",
           l.pages, l.tokens_held, l.length, l.generation);
    kvd_client_free(c);
    return 0;
}

static int abandon(kvd_client *c, uint32_t tokens) {
    uint64_t id = 0;
    kvd_result rc = kvd_client_create_sequence(c, "tiny-f16", 0, NULL, &id);
    if (rc) return failed(c, rc);
    /* tiny-f16: 2 layers, 2 KV heads, head_dim 8 */
    uint16_t *kv = calloc((size_t)2 * 2 * tokens * 8, sizeof *kv);
    if (!kv) return 1;
    rc = kvd_client_append(c, id, KVD_DTYPE_F16, 2, 2, tokens, 8, kv, kv, NULL);
    free(kv);
    if (rc) return failed(c, rc);
    printf("result=%s\nsequence_id=%" PRIu64 "\n", kvd_result_name(rc), id);
    kvd_client_free(c);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 3) return usage();
    kvd_client_options o;
    memset(&o, 0, sizeof o);
    o.struct_size = sizeof o;
    o.timeout_ms = 5000;
    o.client_name = "kvd-c-stats-probe";
    o.disable_keepalive = 1; /* the probe's lease is never renewed after its one call */
    kvd_client *c = NULL;
    char err[256];
    kvd_result rc = kvd_client_connect(argv[1], &o, &c, err, sizeof err);
    if (rc) {
        printf("result=%s\nerror=%s\n", kvd_result_name(rc), err);
        return 1;
    }
    if (strcmp(argv[2], "memory") == 0 && argc == 3) return memory(c);
    if (strcmp(argv[2], "lease") == 0 && argc == 4) return lease(c, strtoull(argv[3], NULL, 10));
    if (strcmp(argv[2], "abandon") == 0 && argc == 4)
        return abandon(c, (uint32_t)strtoul(argv[3], NULL, 10));
    kvd_client_free(c);
    return usage();
}
