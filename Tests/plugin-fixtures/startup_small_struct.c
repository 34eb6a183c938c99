/* Breaks: struct_size claims a table that ends before score_head (as if built against a header that
 * never existed); kvd must not read past it. */
#include <stddef.h>

#include "kvd_plugin.h"

static const kvd_plugin_v1 table = {
    .struct_size = offsetof(kvd_plugin_v1, score_head), .abi_major = KVD_PLUGIN_ABI_MAJOR,
    .name = "small_struct", .description = "fixture: truncated table",
};

const kvd_plugin_v1 *kvd_plugin_entry(const kvd_host_v1 *host) { (void)host; return &table; }
