/* Breaks: both score_head and select_head are set (kvd could not know which to call). */
#include "kvd_plugin.h"

static int32_t score(void *s, const kvd_head_call *c, float *out, char *e, size_t n) {
    (void)s, (void)c, (void)out, (void)e, (void)n;
    return 0;
}

static int32_t select_(void *s, const kvd_head_call *c, int32_t *kept, uint32_t *num, char *e, size_t n) {
    (void)s, (void)c, (void)kept, (void)e, (void)n;
    *num = 0;
    return 0;
}

static const kvd_plugin_v1 table = {
    .struct_size = sizeof(kvd_plugin_v1), .abi_major = KVD_PLUGIN_ABI_MAJOR,
    .name = "both_callbacks", .description = "fixture: scores and selects",
    .score_head = score, .select_head = select_,
};

const kvd_plugin_v1 *kvd_plugin_entry(const kvd_host_v1 *host) { (void)host; return &table; }
