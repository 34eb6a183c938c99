/*
 * stride — an example kvd compaction plugin that selects tokens itself (select_head).
 *
 * It keeps every k-th token before the window, t = 0, k, 2k, ..., at most `budget` of them, so the
 * kept tokens sample the whole context evenly instead of clustering where scores are high: a cheap
 * baseline for "does this context need its details or only its gist?". With the default stride 0,
 * k = ceil(n / budget) for the n tokens before the window, which spreads the budget over all of
 * them; a positive stride fixes k (and may keep fewer than budget tokens). kvd adds the window.
 *
 * It shows the select_head half of kvd_plugin.h: indices ascending, in [0, num_tokens - window),
 * at most call->budget of them. kvd checks all of that again and refuses a plan that breaks it.
 */
#include <string.h>

#include "kvd_plugin.h"

static const kvd_param_spec stride_params[] = {
    {
        .name = "stride",
        .type = KVD_PARAM_INT,
        .default_number = 0,
        .default_string = NULL,
        .min_value = 0,
        .max_value = 16777216,
        .description = "keep every stride-th token before the window; 0 = spread the budget evenly",
    },
};

static int64_t param_int(const kvd_head_call *call, const char *name, int64_t fallback) {
    for (uint32_t i = 0; i < call->num_params; i++) {
        const kvd_param_value *p = kvd_param_at(call, i);
        if (p->type == KVD_PARAM_INT && strcmp(p->name, name) == 0) return p->int_value;
    }
    return fallback;
}

static int32_t stride_select_head(void *state, const kvd_head_call *call, int32_t *kept,
                                  uint32_t *num_kept, char *error, size_t error_size) {
    (void)state, (void)error, (void)error_size;
    const uint32_t n = call->head->num_tokens - call->window;
    const uint32_t budget = call->budget < n ? call->budget : n;
    *num_kept = 0;
    if (budget == 0) return 0;
    int64_t k = param_int(call, "stride", 0);
    if (k <= 0) k = ((int64_t)n + budget - 1) / budget; /* ceil: budget steps of k cover n */
    for (int64_t t = 0; t < n && *num_kept < budget; t += k) kept[(*num_kept)++] = (int32_t)t;
    return 0;
}

static const kvd_plugin_v1 stride_table = {
    .struct_size = sizeof(kvd_plugin_v1),
    .abi_major = KVD_PLUGIN_ABI_MAJOR,
    .abi_minor = KVD_PLUGIN_ABI_MINOR,
    .name = "stride",
    .version = "1.0.0",
    .description = "Strided sampling: keep every k-th token before the window, up to the budget",
    .params = stride_params,
    .num_params = sizeof stride_params / sizeof stride_params[0],
    .param_spec_size = sizeof(kvd_param_spec),
    .needs_queries = 0,
    .state = NULL,
    .score_head = NULL,
    .select_head = stride_select_head,
    .destroy = NULL,
};

const kvd_plugin_v1 *kvd_plugin_entry(const kvd_host_v1 *host) {
    (void)host;
    return &stride_table;
}
