/*
 * kvd_plugin.h — the stable C ABI for third-party kvd compaction plugins.
 *
 * Pure C99, no dependencies. A plugin is a shared library exporting one function,
 * kvd_plugin_entry (KVD_PLUGIN_ENTRY_SYMBOL), that returns a kvd_plugin_v1 table. kvd loads every
 * *.so in the directories named in its config (plugins.directories) at start-up, checks the ABI
 * version and table size, and lists the plugin in Hello like a built-in method.
 *
 * A plugin *decides*, it never touches memory it does not own: kvd hands it read-only f32 views of
 * one (layer, KV head) at a time and a buffer to write its answer into; kvd then validates the
 * answer (indices in range, sorted, unique, window kept, budget honoured), packs pages and frees
 * memory. A plugin may either
 *   - score tokens (score_head): kvd keeps the top `budget` by score plus the window, or
 *   - select tokens (select_head): the plugin writes the kept indices itself.
 *
 * Compatibility rules:
 *   - Structures only ever grow at the end; every structure passed by pointer starts with
 *     struct_size so either side can tell which members the other knows, and every array of
 *     structures travels with its element size (param_spec_size, param_value_size), so elements can
 *     grow too. Never reorder or remove members.
 *   - abi_major changes only when an existing member changes meaning; kvd refuses another major.
 *     abi_minor counts members added at the end; kvd accepts any minor.
 *
 * Ownership (stated on every pointer below):
 *   BORROWED  — owned by kvd, valid only until the callback returns; do not keep or free it.
 *   HOST-OUT  — owned by kvd, writable by the plugin during the callback only.
 *   PLUGIN    — owned by the plugin, must stay valid until destroy() is called (or forever).
 * Errors: a callback returns 0 on success; otherwise it writes a NUL-terminated message of at most
 * error_size bytes into `error` (HOST-OUT) and returns non-zero. kvd replies INTERNAL with that
 * message and leaves the sequence unchanged. Nothing is ever freed across the boundary.
 * Threads: kvd may call score_head/select_head for different heads concurrently from several
 * threads; callbacks must be thread-safe (pure functions of their arguments are).
 *
 * What kvd does with the answers:
 *   - score_head: NaN scores rank lowest (like -infinity; equal scores keep the lower position).
 *     kvd keeps the top `budget` before the window, plus the window. There are no sink tokens for
 *     scoring plugins; a select_head plugin may keep the first tokens itself.
 *   - select_head: call->budget is already min(budget, num_tokens - window).
 *   - Neither callback is called for a head with no tokens before the window (nothing to decide),
 *     nor for a head of a sliding-window layer (kvd_layer_window() > 0): compaction keeps what a
 *     window holds, and budgets are spread over the full-attention layers only.
 *   - destroy runs once, when kvd exits; never for a table kvd refused.
 */
#ifndef KVD_PLUGIN_H
#define KVD_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KVD_PLUGIN_ABI_MAJOR 1
#define KVD_PLUGIN_ABI_MINOR 1
#define KVD_PLUGIN_ENTRY_SYMBOL "kvd_plugin_entry"

/* Parameter kinds. */
enum {
    KVD_PARAM_INT = 1,
    KVD_PARAM_FLOAT = 2,
    KVD_PARAM_STRING = 3,
    KVD_PARAM_BOOL = 4
};

/* Log levels for kvd_host_v1.log. */
enum { KVD_LOG_ERROR = 0, KVD_LOG_WARNING = 1, KVD_LOG_INFO = 2, KVD_LOG_DEBUG = 3 };

/* One parameter the plugin accepts (besides the budget parameters kvd adds itself:
 * budget, fraction, window). Passed as an array with kvd_plugin_v1.param_spec_size. */
typedef struct kvd_param_spec {
    const char *name;           /* PLUGIN */
    int32_t type;               /* KVD_PARAM_* */
    double default_number;      /* default of INT, FLOAT and BOOL (0 or 1) parameters */
    const char *default_string; /* PLUGIN; default of STRING parameters (NULL = "") */
    double min_value;           /* inclusive bounds of numeric parameters; min > max means unbounded */
    double max_value;
    const char *description;    /* PLUGIN; one line */
} kvd_param_spec;

/* A parameter value as resolved by kvd (defaults applied, type and range checked). Passed as an
 * array with kvd_head_call.param_value_size; read element i with kvd_param_at(call, i). */
typedef struct kvd_param_value {
    const char *name;           /* BORROWED */
    int32_t type;               /* KVD_PARAM_* */
    int64_t int_value;          /* INT, BOOL */
    double float_value;         /* FLOAT */
    const char *string_value;   /* BORROWED; STRING */
} kvd_param_value;

/* The model the sequence belongs to. */
typedef struct kvd_model_info {
    uint32_t struct_size;
    uint32_t layers;
    uint32_t kv_heads;
    uint32_t q_heads;
    uint32_t head_dim;
    uint32_t page_tokens;
    const char *name;           /* BORROWED */
    /* Since ABI minor 1. Per layer: its sliding attention window in tokens, 0 = full attention.
     * BORROWED; [layers], or NULL when every layer is full. Read it with kvd_layer_window(). */
    const uint32_t *layer_windows;
} kvd_model_info;

/* The sliding window of `layer` (0 = full attention), 0 also from a host older than ABI minor 1
 * (which had no windows). */
static inline uint32_t kvd_layer_window(const kvd_model_info *model, uint32_t layer) {
    if (model->struct_size < offsetof(kvd_model_info, layer_windows) + sizeof(model->layer_windows)) return 0;
    if (model->layer_windows == NULL || layer >= model->layers) return 0;
    return model->layer_windows[layer];
}

/* One (layer, KV head) of the sequence, converted to f32. */
typedef struct kvd_head_view {
    uint32_t struct_size;
    uint32_t layer;
    uint32_t head;
    uint32_t num_tokens;
    uint32_t head_dim;
    const float *keys;          /* BORROWED; [num_tokens][head_dim] */
    const float *values;        /* BORROWED; [num_tokens][head_dim] */
    const int32_t *positions;   /* BORROWED; [num_tokens], original positions, ascending */
    const float *log_weights;   /* BORROWED; [num_tokens] */
} kvd_head_view;

/* The request's observation queries of this head's layer: the q_heads / kv_heads query heads that
 * share this KV head, window queries each. */
typedef struct kvd_observation {
    uint32_t struct_size;
    uint32_t group;             /* query heads per KV head (GQA group) */
    uint32_t window;            /* w */
    uint32_t head_dim;
    const float *queries;       /* BORROWED; [group][window][head_dim] */
} kvd_observation;

/* Arguments of one score_head / select_head call. */
typedef struct kvd_head_call {
    uint32_t struct_size;
    const kvd_model_info *model;        /* BORROWED */
    const kvd_head_view *head;          /* BORROWED */
    const kvd_observation *observation; /* BORROWED; NULL when the request sent no queries */
    const kvd_param_value *params;      /* BORROWED; [num_params], every declared parameter */
    uint32_t num_params;
    uint32_t param_value_size;          /* bytes from one params element to the next */
    uint32_t window;    /* the last `window` tokens are always kept; decide about [0, num_tokens - window) */
    uint32_t budget;    /* select_head: keep at most this many tokens before the window */
} kvd_head_call;

/* What kvd offers the plugin. Each plugin gets its own table, so kvd knows who is logging. */
typedef struct kvd_host_v1 {
    uint32_t struct_size;
    uint16_t abi_major;
    uint16_t abi_minor;
    /* Writes one line to kvd's log, attributed to this plugin. host: the table this function came
     * in; message: BORROWED by kvd for the call. May be called any time, from any thread. */
    void (*log)(const struct kvd_host_v1 *host, int32_t level, const char *message);
    void *host_context;         /* kvd's own; do not touch */
} kvd_host_v1;

/* The plugin's table, returned by kvd_plugin_entry. PLUGIN-owned; must stay valid until destroy. */
typedef struct kvd_plugin_v1 {
    uint32_t struct_size;       /* sizeof(kvd_plugin_v1) as the plugin was compiled */
    uint16_t abi_major;         /* KVD_PLUGIN_ABI_MAJOR */
    uint16_t abi_minor;         /* KVD_PLUGIN_ABI_MINOR */
    const char *name;           /* PLUGIN; method name used in requests, [a-z0-9_]+, unique */
    const char *version;        /* PLUGIN; e.g. "1.0.0" */
    const char *description;    /* PLUGIN; one line, paper or idea */
    const kvd_param_spec *params; /* PLUGIN; [num_params] */
    uint32_t num_params;
    uint32_t param_spec_size;   /* sizeof(kvd_param_spec) as the plugin was compiled */
    uint32_t needs_queries;     /* 1: refuse requests without observation queries */
    void *state;                /* PLUGIN; passed back to every callback */

    /* Score tokens [0, num_tokens - window): write one float per token into scores (HOST-OUT,
     * num_tokens - window elements); higher keeps. NULL when the plugin selects instead. */
    int32_t (*score_head)(void *state, const kvd_head_call *call, float *scores,
                          char *error, size_t error_size);

    /* Select tokens: write the kept indices in [0, num_tokens - window), ascending, at most
     * call->budget of them, into kept (HOST-OUT, capacity num_tokens) and their number into
     * *num_kept. kvd adds the window. NULL when the plugin scores instead. */
    int32_t (*select_head)(void *state, const kvd_head_call *call, int32_t *kept,
                           uint32_t *num_kept, char *error, size_t error_size);

    /* Called once when kvd unloads the plugin (shutdown). May be NULL. */
    void (*destroy)(void *state);
    /* New members go here, at the end only. */
} kvd_plugin_v1;

/* Element i of call->params, stepping by the host's element size. */
static inline const kvd_param_value *kvd_param_at(const kvd_head_call *call, uint32_t i) {
    return (const kvd_param_value *)((const char *)call->params + (size_t)i * call->param_value_size);
}

/* The entry point every plugin exports. host: BORROWED for the call, but the kvd_host_v1 it points
 * to stays valid until destroy. Returns NULL to refuse loading (log why through host->log). */
typedef const kvd_plugin_v1 *(*kvd_plugin_entry_fn)(const kvd_host_v1 *host);
const kvd_plugin_v1 *kvd_plugin_entry(const kvd_host_v1 *host);

#ifdef __cplusplus
}
#endif
#endif /* KVD_PLUGIN_H */
