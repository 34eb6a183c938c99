/* Breaks: select_head writes its indices in descending order ([1, 0]). */
#include "kvd_plugin.h"

static int32_t select_(void *s, const kvd_head_call *c, int32_t *kept, uint32_t *num, char *e, size_t n) {
    (void)s, (void)c, (void)e, (void)n;
    kept[0] = 1, kept[1] = 0;
    *num = 2;
    return 0;
}

static const kvd_plugin_v1 table = {
    .struct_size = sizeof(kvd_plugin_v1), .abi_major = KVD_PLUGIN_ABI_MAJOR,
    .name = "select_unsorted", .description = "fixture: descending indices", .select_head = select_,
};

const kvd_plugin_v1 *kvd_plugin_entry(const kvd_host_v1 *host) { (void)host; return &table; }
