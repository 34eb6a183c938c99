/* Breaks: neither score_head nor select_head is set. */
#include "kvd_plugin.h"

static const kvd_plugin_v1 table = {
    .struct_size = sizeof(kvd_plugin_v1), .abi_major = KVD_PLUGIN_ABI_MAJOR,
    .name = "no_callbacks", .description = "fixture: decides nothing",
};

const kvd_plugin_v1 *kvd_plugin_entry(const kvd_host_v1 *host) { (void)host; return &table; }
