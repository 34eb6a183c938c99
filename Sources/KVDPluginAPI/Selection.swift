import Dispatch
import KVDCore

/// The host's top-k for one head of `count` tokens: the first `sinks`, the `budget` highest-scoring
/// tokens between the sinks and the window (ties: lower position first), and the last `window`,
/// as sorted indices. `scores` covers positions `0 ..< count - window`.
public func topK(scores: [Float], budget: Int, sinks: Int = 0, window: Int, count: Int) -> [Int32] {
    let prefixEnd = count - window
    precondition(scores.count == prefixEnd, "scores must cover the \(prefixEnd) tokens before the window")
    let sinkEnd = min(sinks, prefixEnd)
    let candidates = prefixEnd - sinkEnd
    var out: [Int32] = []
    out.reserveCapacity(sinkEnd + min(max(budget, 0), candidates) + window)
    out += (0..<sinkEnd).map(Int32.init)
    if budget >= candidates {
        out += (sinkEnd..<prefixEnd).map(Int32.init)
    } else if budget > 0 {
        // NaN scores (an inf or NaN in the keys or queries makes them) rank lowest, as when sorting
        // with NumPy. Compared as they are, NaN is neither above nor equal to the cut, so such a head
        // kept fewer than `budget` tokens, and none at all when the cut itself was NaN.
        // The budget-th largest score is the cut: every score above it is kept, and of the scores
        // equal to it the lowest positions fill what is left. Same set as sorting by (score desc,
        // position asc) and taking the first `budget`, in O(n) instead of O(n log n). Done on raw
        // buffers: with array bounds and uniqueness checks this was ~10% of a key-norm compaction.
        let clean = UnsafeMutablePointer<Float>.allocate(capacity: 2 * candidates)
        defer { clean.deallocate() }
        let work = clean + candidates
        scores.withUnsafeBufferPointer { s in
            for i in 0..<candidates {
                let x = s[sinkEnd + i]
                clean[i] = x.isNaN ? -.infinity : x
            }
        }
        work.update(from: clean, count: candidates)
        let cut = kthLargest(work, candidates, budget)
        var above = 0
        for i in 0..<candidates where clean[i] > cut { above += 1 }
        var ties = budget - above
        for i in 0..<candidates {
            let s = clean[i]
            if s > cut {
                out.append(Int32(sinkEnd + i))
            } else if s == cut, ties > 0 {
                out.append(Int32(sinkEnd + i))
                ties -= 1
            }
        }
    }
    out += (prefixEnd..<count).map(Int32.init)
    return out
}

/// The k-th largest value (k ≥ 1) by quickselect with median-of-three pivots.
public func kthLargest(_ values: [Float], _ k: Int) -> Float {
    var a = values
    return a.withUnsafeMutableBufferPointer { kthLargest($0.baseAddress!, $0.count, k) }
}

/// `kthLargest` in place on `count` values at `a` (which it reorders; no NaN).
func kthLargest(_ a: UnsafeMutablePointer<Float>, _ count: Int, _ k: Int) -> Float {
    var lo = 0, hi = count - 1
    let target = k - 1  // index in descending order
    while lo < hi {
        let mid = lo + (hi - lo) / 2
        // Median of three as pivot keeps sorted and reversed inputs linear.
        let x = a[lo], y = a[mid], z = a[hi]
        let pivot = max(min(x, y), min(max(x, y), z))
        var i = lo, j = hi
        while i <= j {
            while a[i] > pivot { i += 1 }
            while a[j] < pivot { j -= 1 }
            if i <= j {
                (a[i], a[j]) = (a[j], a[i])
                i += 1
                j -= 1
            }
        }
        if target <= j { hi = j } else if target >= i { lo = i } else { return a[target] }
    }
    return a[target]
}

/// Turns scores and budgets into a plan: top-k per head plus sinks and window.
public protocol TokenSelector: Sendable {
    var name: String { get }
    var params: [ParamSpec] { get }
    func select(_ context: CompactionContext, scores: [[Float]], budgets: [Int], window: Int) throws(KVDError) -> MethodPlan
    /// The same with the first `sinks` tokens of every head kept on top of its budget (a stopper's sinks).
    func select(_ context: CompactionContext, scores: [[Float]], budgets: [Int], window: Int, sinks: Int) throws(KVDError) -> MethodPlan
}

extension TokenSelector {
    public func select(_ context: CompactionContext, scores: [[Float]], budgets: [Int], window: Int, sinks: Int) throws(KVDError) -> MethodPlan {
        // A selector that does not know sinks would silently drop them: refuse rather than break the stop's promise.
        guard sinks == 0 else { throw .invalidArgument("selector '\(name)' cannot keep \(sinks) sink tokens; use sinks = 0") }
        return try select(context, scores: scores, budgets: budgets, window: window)
    }
}

/// Default selector: top-budget by score, plus the window (and a stopper's sinks), per head.
public struct TopKSelector: TokenSelector {
    public init() {}
    public let name = "topk"
    public let params: [ParamSpec] = []
    public func select(_ context: CompactionContext, scores: [[Float]], budgets: [Int], window: Int) throws(KVDError) -> MethodPlan {
        try select(context, scores: scores, budgets: budgets, window: window, sinks: 0)
    }

    public func select(_ context: CompactionContext, scores: [[Float]], budgets: [Int], window: Int, sinks: Int) throws(KVDError) -> MethodPlan {
        let counts = context.view.headCounts
        var kept = [[Int32]](repeating: [], count: counts.count)
        kept.withUnsafeMutableBufferPointer { out in
            let out = SendableBuffer(out)
            ComputeThreads.forEach(counts.count) { h in
                out.buffer[h] = topK(scores: scores[h], budget: budgets[h], sinks: sinks, window: min(window, counts[h]), count: counts[h])
            }
        }
        return MethodPlan(plan: CompactionPlan(kept: kept), sinks: sinks, window: window, budgets: budgets)
    }
}

/// Lets concurrentPerform's iterations write disjoint elements of one buffer.
/// the unchecked Sendable conformance: safe only as used here, each iteration writing the elements of its own
/// index and the owner reading them after `concurrentPerform` returns (which orders the writes).
public struct SendableBuffer<T>: @unchecked Sendable {  // safe: iterations write disjoint elements
    public let buffer: UnsafeMutableBufferPointer<T>
    public init(_ buffer: UnsafeMutableBufferPointer<T>) { self.buffer = buffer }
}
