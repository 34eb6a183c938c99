/* A correct plugin that returns NaN scores: NaN for tokens whose original position is a multiple of
 * 3, the position itself otherwise. kvd ranks NaN lowest, so later non-multiples win; reading
 * positions (not indices) shows kvd passes the original positions after an earlier compaction.
 * Its destroy logs through the host table kept from the entry call, which the header promises stays
 * valid until then, so the test can see destroy run once at shutdown. */
#include <math.h>

#include "kvd_plugin.h"

static int32_t score(void *s, const kvd_head_call *c, float *out, char *e, size_t n) {
    (void)s, (void)e, (void)n;
    for (uint32_t t = 0; t < c->head->num_tokens - c->window; t++) {
        const int32_t pos = c->head->positions[t];
        out[t] = pos % 3 == 0 ? NAN : (float)pos;
    }
    return 0;
}

static const kvd_host_v1 *host_table;

static void destroy(void *state) {
    (void)state;
    host_table->log(host_table, KVD_LOG_INFO, "nan_scores: destroy called");
}

static const kvd_plugin_v1 table = {
    .struct_size = sizeof(kvd_plugin_v1), .abi_major = KVD_PLUGIN_ABI_MAJOR,
    .abi_minor = KVD_PLUGIN_ABI_MINOR, .name = "nan_scores", .version = "0.1.0",
    .description = "fixture: NaN for positions divisible by 3, else the position", .score_head = score,
    .destroy = destroy,
};

const kvd_plugin_v1 *kvd_plugin_entry(const kvd_host_v1 *host) {
    host_table = host;
    return &table;
}
