/* Breaks: a parameter declares type 9, which is no KVD_PARAM_* kind. */
#include "kvd_plugin.h"

static int32_t score(void *s, const kvd_head_call *c, float *out, char *e, size_t n) {
    (void)s, (void)e, (void)n;
    for (uint32_t t = 0; t < c->head->num_tokens - c->window; t++) out[t] = 0;
    return 0;
}

static const kvd_param_spec params[] = {
    {.name = "mystery", .type = 9, .min_value = 1, .max_value = 0, .description = "unknown kind"},
};

static const kvd_plugin_v1 table = {
    .struct_size = sizeof(kvd_plugin_v1), .abi_major = KVD_PLUGIN_ABI_MAJOR,
    .name = "bad_param", .description = "fixture: parameter of unknown type",
    .params = params, .num_params = 1, .param_spec_size = sizeof(kvd_param_spec), .score_head = score,
};

const kvd_plugin_v1 *kvd_plugin_entry(const kvd_host_v1 *host) { (void)host; return &table; }
