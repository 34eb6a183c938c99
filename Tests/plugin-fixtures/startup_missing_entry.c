/* Breaks: exports no kvd_plugin_entry (a misspelt entry point instead). */
#include "kvd_plugin.h"

static const kvd_plugin_v1 table = {
    .struct_size = sizeof(kvd_plugin_v1), .abi_major = KVD_PLUGIN_ABI_MAJOR,
    .name = "no_entry", .description = "fixture: misspelt entry point",
};

const kvd_plugin_v1 *kvd_plugin_entrypoint(const kvd_host_v1 *host);
const kvd_plugin_v1 *kvd_plugin_entrypoint(const kvd_host_v1 *host) { (void)host; return &table; }
