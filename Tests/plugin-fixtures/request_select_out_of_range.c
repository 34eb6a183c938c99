/* Breaks: select_head returns index num_tokens - window, the first window token, which is outside
 * the range it decides about (kvd adds the window itself). */
#include "kvd_plugin.h"

static int32_t select_(void *s, const kvd_head_call *c, int32_t *kept, uint32_t *num, char *e, size_t n) {
    (void)s, (void)e, (void)n;
    kept[0] = (int32_t)(c->head->num_tokens - c->window);
    *num = 1;
    return 0;
}

static const kvd_plugin_v1 table = {
    .struct_size = sizeof(kvd_plugin_v1), .abi_major = KVD_PLUGIN_ABI_MAJOR,
    .name = "select_out_of_range", .description = "fixture: index past the decided range",
    .select_head = select_,
};

const kvd_plugin_v1 *kvd_plugin_entry(const kvd_host_v1 *host) { (void)host; return &table; }
