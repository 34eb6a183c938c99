/* Breaks: the entry refuses to load (returns NULL), saying why through the host's log. */
#include "kvd_plugin.h"

const kvd_plugin_v1 *kvd_plugin_entry(const kvd_host_v1 *host) {
    host->log(host, KVD_LOG_ERROR, "null_table: refusing to load on purpose (fixture)");
    return NULL;
}
