/* Breaks (on purpose, at request time): score_head fails for layer 1, head 0 with a message, after
 * the other heads have succeeded, so kvd must drop the whole plan and leave the sequence as it was. */
#include <stdio.h>

#include "kvd_plugin.h"

static int32_t score(void *s, const kvd_head_call *c, float *out, char *e, size_t n) {
    (void)s;
    if (c->head->layer == 1 && c->head->head == 0) {
        snprintf(e, n, "score_error: refusing layer %u head %u on purpose (fixture)", (unsigned)c->head->layer,
                 (unsigned)c->head->head);
        return 7;
    }
    for (uint32_t t = 0; t < c->head->num_tokens - c->window; t++) out[t] = (float)t;
    return 0;
}

static const kvd_plugin_v1 table = {
    .struct_size = sizeof(kvd_plugin_v1), .abi_major = KVD_PLUGIN_ABI_MAJOR,
    .name = "score_error", .description = "fixture: fails on one head", .score_head = score,
};

const kvd_plugin_v1 *kvd_plugin_entry(const kvd_host_v1 *host) { (void)host; return &table; }
