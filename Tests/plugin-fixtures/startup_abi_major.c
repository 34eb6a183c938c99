/* Breaks: abi_major is 2, this kvd speaks 1. Otherwise a valid scoring plugin. */
#include "kvd_plugin.h"

static int32_t score(void *s, const kvd_head_call *c, float *out, char *e, size_t n) {
    (void)s, (void)e, (void)n;
    for (uint32_t t = 0; t < c->head->num_tokens - c->window; t++) out[t] = 0;
    return 0;
}

static const kvd_plugin_v1 table = {
    .struct_size = sizeof(kvd_plugin_v1), .abi_major = 2, .abi_minor = 0,
    .name = "abi_two", .description = "fixture: future ABI major", .score_head = score,
};

const kvd_plugin_v1 *kvd_plugin_entry(const kvd_host_v1 *host) { (void)host; return &table; }
