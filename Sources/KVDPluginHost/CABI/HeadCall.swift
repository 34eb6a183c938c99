import CKVDPluginABI
import KVDCore
import KVDPluginAPI

/// One plugin call for one (layer, KV head): builds the borrowed C views, calls score_head or
/// select_head, and turns the answer into kept indices (window included) or an error naming the
/// plugin. Everything the plugin can get wrong is checked here; nothing it returns can crash kvd.
struct HeadCall {
    let plugin: CPlugin
    let view: SequenceView
    /// Layer-major (layer, KV head) index.
    let head: Int
    let window: Int
    let budget: Int
    let model: UnsafePointer<kvd_model_info>
    let observation: Observation?
    /// Base of the observation's f32 queries, alive for the call.
    let queries: UnsafePointer<Float>?
    let params: UnsafeBufferPointer<kvd_param_value>

    static let errorCapacity = 1024

    private var layout: ModelLayout { view.layout }
    private var whereText: String { "layer \(head / layout.kvHeads) head \(head % layout.kvHeads)" }

    func run() -> Result<[Int32], KVDError> {
        let count = view.headCounts[head]
        // Heads of aliased layers hold nothing: the window cannot exceed what the head holds.
        let prefix = max(0, count - window)
        let windowIndices = (prefix..<count).map(Int32.init)
        // Nothing before the window: nothing to decide, and no zero-length buffers to hand out.
        guard prefix > 0 else { return .success(windowIndices) }
        let keys = view.keys(head), values = view.values(head)
        let positions = view.positions[head], logWeights = view.logWeights[head]
        return keys.withUnsafeBufferPointer { k in
            values.withUnsafeBufferPointer { v in
                positions.withUnsafeBufferPointer { p in
                    logWeights.withUnsafeBufferPointer { w in
                        var headView = kvd_head_view(
                            struct_size: UInt32(MemoryLayout<kvd_head_view>.size), layer: UInt32(head / layout.kvHeads),
                            head: UInt32(head % layout.kvHeads), num_tokens: UInt32(count), head_dim: UInt32(layout.headDim),
                            keys: k.baseAddress, values: v.baseAddress, positions: p.baseAddress, log_weights: w.baseAddress)
                        return withUnsafePointer(to: &headView) { headView in
                            withObservation { obs in
                                var call = kvd_head_call(
                                    struct_size: UInt32(MemoryLayout<kvd_head_call>.size), model: model, head: headView,
                                    observation: obs, params: params.baseAddress, num_params: UInt32(params.count),
                                    param_value_size: UInt32(MemoryLayout<kvd_param_value>.stride),
                                    window: UInt32(window), budget: UInt32(clamping: min(budget, prefix)))
                                return withUnsafePointer(to: &call) { decide($0, count: count, prefix: prefix) }
                            }
                        }
                    }
                }
            }
        }.map { $0 + windowIndices }
    }

    /// The observation of this head's layer: the GQA group of query heads sharing this KV head,
    /// which are consecutive in `[layers, q_heads, window, head_dim]`.
    private func withObservation<R>(_ body: (UnsafePointer<kvd_observation>?) -> R) -> R {
        guard let o = observation, let queries else { return body(nil) }
        let group = layout.qHeads / layout.kvHeads
        let layer = head / layout.kvHeads, kvHead = head % layout.kvHeads
        var obs = kvd_observation(
            struct_size: UInt32(MemoryLayout<kvd_observation>.size), group: UInt32(group), window: UInt32(o.window),
            head_dim: UInt32(o.headDim), queries: queries + o.offset(layer: layer, qHead: kvHead * group))
        return withUnsafePointer(to: &obs) { body($0) }
    }

    /// Calls the plugin; the kept indices before the window, or the error.
    private func decide(_ call: UnsafePointer<kvd_head_call>, count: Int, prefix: Int) -> Result<[Int32], KVDError> {
        withUnsafeTemporaryAllocation(of: CChar.self, capacity: Self.errorCapacity) { error in
            error.initialize(repeating: 0)
            switch plugin.decision {
            case .score(let score):
                var scores = [Float](repeating: 0, count: prefix)
                let rc = scores.withUnsafeMutableBufferPointer {
                    score(plugin.state, call, $0.baseAddress, error.baseAddress, Self.errorCapacity)
                }
                if rc != 0 { return .failure(failed(error)) }
                // NaN has no order; as the lowest score it is dropped first, and top-k stays a total order.
                for i in scores.indices where scores[i].isNaN { scores[i] = -.infinity }
                let kept = topK(scores: scores, budget: budget, window: 0, count: prefix)
                return .success(kept)
            case .select(let select):
                var kept = [Int32](repeating: 0, count: count)
                var numKept: UInt32 = 0
                let rc = kept.withUnsafeMutableBufferPointer {
                    select(plugin.state, call, $0.baseAddress, &numKept, error.baseAddress, Self.errorCapacity)
                }
                if rc != 0 { return .failure(failed(error)) }
                return checkSelection(kept, numKept: Int(numKept), prefix: prefix, budget: min(budget, prefix))
            }
        }
    }

    private func checkSelection(_ kept: [Int32], numKept: Int, prefix: Int, budget: Int) -> Result<[Int32], KVDError> {
        guard numKept <= budget else {
            return .failure(invalid("select_head kept \(numKept) tokens, more than the budget of \(budget)"))
        }
        let chosen = Array(kept.prefix(numKept))
        var previous: Int32 = -1
        for i in chosen {
            guard i >= 0, Int(i) < prefix else {
                return .failure(invalid("select_head returned index \(i), outside [0, \(prefix)) (the tokens before the window)"))
            }
            guard i > previous else {
                return .failure(invalid("select_head returned indices not strictly ascending (\(previous) then \(i))"))
            }
            previous = i
        }
        return .success(chosen)
    }

    private func failed(_ error: UnsafeMutableBufferPointer<CChar>) -> KVDError {
        // The plugin may have filled the buffer without a terminator; never read past it.
        error[error.count - 1] = 0
        let text = String(cString: error.baseAddress!)
        return .internalError("plugin '\(plugin.name)' (\(plugin.path)): \(text.isEmpty ? "failed without a message" : text) (\(whereText))")
    }

    private func invalid(_ why: String) -> KVDError {
        .internalError("plugin '\(plugin.name)' (\(plugin.path)) returned an invalid plan: \(whereText): \(why)")
    }
}
