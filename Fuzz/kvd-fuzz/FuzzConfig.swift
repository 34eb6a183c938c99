import Foundation
import KVDConfig
import KVDPluginAPI
import KVDPluginHost
import KVDServer

/// The daemon configuration the fuzz target runs: tiny models, so one input's requests take
/// microseconds and the arena's limits (pages, staging, sequences, message size) are reachable.
enum FuzzConfig {
    /// Parsed by the real loader, so the fuzzer runs what a config file would give.
    static let yaml = """
        server:
          endpoints: ["ipc:///tmp/kvd-fuzz-never-bound.sock"]   # InProcessCore binds no socket
          max_message_bytes: 8192
          max_tokens_per_append: 4096
          max_sequences: 8
          compute_threads: 1          # the harness waits for each reply anyway; spare the shared cores
        arena:
          shm_name: "/kvd-fuzz"       # replaced by a per-process name (InProcessCore)
          size_bytes: 262144          # ~1,900 pages of 128 bytes: a 4096-token Reserve runs out
          staging_bytes: 16384
        models:
          - {name: "tiny", layers: 2, kv_heads: 2, q_heads: 4, head_dim: 8, dtype: "f16", page_tokens: 4,
             default_method: "streamingllm", default_policy: ""}
          # A second shape, dtype and page size, with a layer-sharing default policy.
          - {name: "tiny-f32", layers: 3, kv_heads: 1, q_heads: 3, head_dim: 4, dtype: "f32", page_tokens: 2,
             default_method: "knorm", default_policy: "shared"}
        policies:
          stream: {method: "streamingllm", params: {sinks: 1, recent: 2}}
          snap: {method: "snapkv", params: {budget: 2, window: 1}}
          balanced: {method: "balancekv", params: {sinks: 1, recent: 1, block: 2}}
          shared: {sharer: "kvsharer", params: {alias_map: "1:0"}}
          snap_shared: {method: "snapkv", sharer: "kvsharer", params: {budget: 2, alias_map: "1:0"}}
          composed: {scorer: "knorm", allocator: "pyramidkv", params: {budget: 2, window: 1}}
          stopped: {method: "h2o", stopper: "dbudgetkv", params: {budget: 1}}
          calibrated: {method: "headkv", params: {budget: 2, scores: "scores-kv.json"}}   # FuzzFiles
        rules:
          - {when: {arena_used_above: 0.5}, policy: "stream"}
          - {when: {length_above: 40, model: "tiny"}, policy: "snap"}
        log:
          level: "error"
        """

    /// Names the fuzz program picks from; unknown ones on purpose.
    static let methods = [
        "", "streamingllm", "knorm", "snapkv", "h2o", "pyramidkv", "adakv", "headkv", "dbudgetkv", "balancekv", "kvsharer", "nope",
    ]
    static let policies = ["", "stream", "snap", "balanced", "shared", "snap_shared", "composed", "stopped", "calibrated", "nope"]
    static let models = ["tiny", "tiny-f32", "", "nope"]

    static func makeCore() throws -> InProcessCore {
        try FuzzFiles.write()
        var config = try ConfigLoader.parse(yaml, file: "<fuzz config>")
        config.baseDirectory = FuzzFiles.directory
        let book = try PolicyBook(config: config, registry: MethodRegistry(Catalog.builtinMethods), file: "<fuzz config>")
        let core = try InProcessCore(config: config, policies: book, logger: Logger(level: config.logLevel))
        // Reload recompiles the same config, as SIGHUP would with an unchanged file.
        core.enableReload { [config] in
            (try PolicyBook(config: config, registry: MethodRegistry(Catalog.builtinMethods), file: "<fuzz config>"), config.memory)
        }
        return core
    }
}
