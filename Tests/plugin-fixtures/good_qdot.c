/* A correct plugin that needs observation queries: token t of a KV head scores the summed dot
 * product of its key with every query of the head's GQA group, sum_g sum_w q[g][w] . k_t (a crude
 * window-attention logit). The test recomputes it in NumPy, which pins down which query heads kvd
 * hands to which KV head. */
#include "kvd_plugin.h"

static int32_t score(void *s, const kvd_head_call *c, float *out, char *e, size_t n) {
    (void)s, (void)e, (void)n;
    const kvd_head_view *h = c->head;
    const kvd_observation *o = c->observation; /* never NULL: needs_queries = 1 */
    const uint32_t d = h->head_dim, rows = o->group * o->window;
    for (uint32_t t = 0; t < h->num_tokens - c->window; t++) {
        const float *k = h->keys + (size_t)t * d;
        double sum = 0.0;
        for (uint32_t r = 0; r < rows; r++) {
            const float *q = o->queries + (size_t)r * o->head_dim;
            for (uint32_t i = 0; i < d; i++) sum += (double)q[i] * (double)k[i];
        }
        out[t] = (float)sum;
    }
    return 0;
}

static const kvd_plugin_v1 table = {
    .struct_size = sizeof(kvd_plugin_v1), .abi_major = KVD_PLUGIN_ABI_MAJOR,
    .abi_minor = KVD_PLUGIN_ABI_MINOR, .name = "qdot", .version = "0.1.0",
    .description = "fixture: summed query-key dot products of the head's group", .needs_queries = 1,
    .score_head = score,
};

const kvd_plugin_v1 *kvd_plugin_entry(const kvd_host_v1 *host) { (void)host; return &table; }
