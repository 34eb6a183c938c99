/* Breaks: select_head keeps budget + 1 tokens (0, 1, ..., budget), when that many exist. */
#include "kvd_plugin.h"

static int32_t select_(void *s, const kvd_head_call *c, int32_t *kept, uint32_t *num, char *e, size_t n) {
    (void)s, (void)e, (void)n;
    const uint32_t decided = c->head->num_tokens - c->window;
    uint32_t k = 0;
    for (uint32_t t = 0; t <= c->budget && t < decided; t++) kept[k++] = (int32_t)t;
    *num = k;
    return 0;
}

static const kvd_plugin_v1 table = {
    .struct_size = sizeof(kvd_plugin_v1), .abi_major = KVD_PLUGIN_ABI_MAJOR,
    .name = "select_too_many", .description = "fixture: one token over budget", .select_head = select_,
};

const kvd_plugin_v1 *kvd_plugin_entry(const kvd_host_v1 *host) { (void)host; return &table; }
