/*
 * vnorm — an example kvd compaction plugin: keep the tokens whose value vectors carry the most
 * energy.
 *
 * Idea: attention output is a weighted sum of value vectors, so a token with a tiny value vector
 * contributes little whatever its attention weight, while a large one can move the output a lot.
 * vnorm scores token t of a head by the Lp norm of its value vector,
 *
 *     score(t) = ( sum_i |v_t[i]|^p )^(1/p),     p = the "power" parameter (default 2),
 *
 * and lets kvd keep the `budget` highest-scoring tokens plus the window (ties: lower position
 * first). It needs no observation queries.
 *
 * It shows the score_head half of kvd_plugin.h: declaring a parameter, reading its resolved value,
 * reading the borrowed f32 view, writing scores, and reporting an error through the error buffer.
 * The callback is a pure function of its arguments, so it is thread-safe as the header requires.
 *
 * Build: see Makefile (cc -O2 -fPIC -shared -I<kvd>/Sources/CKVDPluginABI/include ... -lm).
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "kvd_plugin.h"

static const kvd_param_spec vnorm_params[] = {
    {
        .name = "power",
        .type = KVD_PARAM_FLOAT,
        .default_number = 2.0,
        .default_string = NULL,
        .min_value = 1.0, /* below 1 the "norm" stops being one and favours many small entries */
        .max_value = 64.0,
        .description = "p of the Lp norm of each value vector (2 = Euclidean, larger approaches max |v|)",
    },
};

/* The resolved value of FLOAT parameter `name`; kvd always passes every declared parameter, the
 * fallback only guards against a host that does not. */
static double param_float(const kvd_head_call *call, const char *name, double fallback) {
    for (uint32_t i = 0; i < call->num_params; i++) {
        const kvd_param_value *p = kvd_param_at(call, i);
        if (p->type == KVD_PARAM_FLOAT && strcmp(p->name, name) == 0) return p->float_value;
    }
    return fallback;
}

static int32_t vnorm_score_head(void *state, const kvd_head_call *call, float *scores, char *error,
                                size_t error_size) {
    (void)state;
    const kvd_head_view *h = call->head;
    const double p = param_float(call, "power", 2.0);
    if (!(p > 0.0)) { /* kvd range-checks parameters already; this is defence in depth */
        snprintf(error, error_size, "vnorm: power must be > 0, got %g", p);
        return 1;
    }
    const uint32_t n = h->num_tokens - call->window; /* only tokens before the window are scored */
    for (uint32_t t = 0; t < n; t++) {
        const float *v = h->values + (size_t)t * h->head_dim;
        /* Double accumulation: scores of similar tokens stay ordered the same as exact arithmetic. */
        double sum = 0.0;
        for (uint32_t i = 0; i < h->head_dim; i++) sum += pow(fabs((double)v[i]), p);
        scores[t] = (float)pow(sum, 1.0 / p); /* a NaN (from NaN values) is ranked lowest by kvd */
    }
    return 0;
}

static const kvd_plugin_v1 vnorm_table = {
    .struct_size = sizeof(kvd_plugin_v1),
    .abi_major = KVD_PLUGIN_ABI_MAJOR,
    .abi_minor = KVD_PLUGIN_ABI_MINOR,
    .name = "vnorm",
    .version = "1.0.0",
    .description = "Value norm: keep the tokens whose value vectors have the largest Lp norm",
    .params = vnorm_params,
    .num_params = sizeof vnorm_params / sizeof vnorm_params[0],
    .param_spec_size = sizeof(kvd_param_spec),
    .needs_queries = 0,
    .state = NULL,
    .score_head = vnorm_score_head,
    .select_head = NULL,
    .destroy = NULL,
};

const kvd_plugin_v1 *kvd_plugin_entry(const kvd_host_v1 *host) {
    /* Tables only grow, so any host of this major has at least the members used here. */
    if (host->abi_major != KVD_PLUGIN_ABI_MAJOR) return NULL;
    host->log(host, KVD_LOG_DEBUG, "vnorm: ready");
    return &vnorm_table;
}
