import CKVDPluginABI
import Dispatch
import KVDCore
import KVDPluginAPI

/// A loaded C plugin as a `CompactionMethod`: kvd's budget parameters plus the plugin's own, uniform
/// budgets, and one plugin call per (layer, KV head), heads in parallel (the header requires
/// thread-safe callbacks). The plan still goes through `PlanChecker` like any method's.
struct CPluginMethod: CompactionMethod {
    let plugin: CPlugin
    let descriptor: MethodDescriptor

    init(_ plugin: CPlugin) {
        self.plugin = plugin
        descriptor = MethodDescriptor(name: plugin.name, description: plugin.description, params: BudgetParams.specs + plugin.params)
    }

    var needsQueries: Bool { plugin.needsQueries }

    func plan(_ context: CompactionContext) throws(KVDError) -> MethodPlan {
        if plugin.needsQueries, context.observation == nil {
            throw .failedPrecondition(
                "method '\(plugin.name)' (plugin \(plugin.path)) needs observation queries: send CompactRequest.queries, shape [layers, q_heads, window, head_dim]")
        }
        let window = try context.window()
        let view = context.view
        let prefix = view.headCounts.map { max(0, $0 - window) }
        let budgets = try UniformAllocator().budgets(context, prefix: prefix, scores: nil)
        let params = CParamBlock(plugin.params, context.params)
        let outcomes = withExtendedLifetime(params) {
            runHeads(context, window: window, budgets: budgets, params: UnsafeBufferPointer(params.values))
        }
        var kept: [[Int32]] = []
        kept.reserveCapacity(outcomes.count)
        for outcome in outcomes {
            switch outcome {
            case .success(let k): kept.append(k)
            case .failure(let e): throw e
            }
        }
        return MethodPlan(plan: CompactionPlan(kept: kept), window: window, budgets: budgets)
    }

    /// Every head's outcome, in head order; failures are reported, never thrown across threads.
    private func runHeads(
        _ context: CompactionContext, window: Int, budgets: [Int], params: UnsafeBufferPointer<kvd_param_value>
    ) -> [Result<[Int32], KVDError>] {
        let layout = context.view.layout
        let heads = context.view.headCounts.count
        let results = UnsafeMutableBufferPointer<Result<[Int32], KVDError>>.allocate(capacity: heads)
        results.initialize(repeating: .success([]))
        // Deinitialize too: deallocate alone never released the heads' kept-index arrays and error
        // messages (Array(results) below holds its own references), a leak per C-plugin compaction
        // that LeakSanitizer found (`swift test --sanitize=address`, docs/SANITIZERS.md).
        defer {
            results.deinitialize()
            results.deallocate()
        }
        // Config loading bounds each window to 0...2^24.
        let windows = layout.layerWindows.map { UInt32($0) }
        layout.name.withCString { modelName in
            windows.withUnsafeBufferPointer { windows in
                var model = kvd_model_info(
                    struct_size: UInt32(MemoryLayout<kvd_model_info>.size), layers: UInt32(layout.layers),
                    kv_heads: UInt32(layout.kvHeads), q_heads: UInt32(layout.qHeads), head_dim: UInt32(layout.headDim),
                    page_tokens: UInt32(layout.pageTokens), name: modelName, layer_windows: windows.isEmpty ? nil : windows.baseAddress)
                withUnsafePointer(to: &model) { model in
                    withQueries(context.observation) { queries in
                        let shared = SharedInputs(model: model, queries: queries, params: params, results: results)
                        ComputeThreads.forEach(heads) { h in
                            let call = HeadCall(
                                plugin: plugin, view: context.view, head: h, window: window, budget: budgets[h],
                                model: shared.model, observation: context.observation, queries: shared.queries, params: shared.params)
                            shared.results[h] = call.run()
                        }
                    }
                }
            }
        }
        return Array(results)
    }

    /// What every iteration of concurrentPerform reads (borrowed buffers that outlive it) and the
    /// result slots it writes, one disjoint element per head; hence the unchecked Sendable conformance.
    private struct SharedInputs: @unchecked Sendable {  // safe: read-only inputs, disjoint result slots
        let model: UnsafePointer<kvd_model_info>
        let queries: UnsafePointer<Float>?
        let params: UnsafeBufferPointer<kvd_param_value>
        let results: UnsafeMutableBufferPointer<Result<[Int32], KVDError>>
    }

    private func withQueries<R>(_ o: Observation?, _ body: (UnsafePointer<Float>?) -> R) -> R {
        guard let o else { return body(nil) }
        return o.queries.withUnsafeBufferPointer { body($0.baseAddress) }
    }
}
