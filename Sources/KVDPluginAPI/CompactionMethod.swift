import KVDCore

/// What a method may read about a sequence while planning. Read-only; valid only during `plan`.
public struct SequenceView: Sendable {
    public let layout: ModelLayout
    /// Tokens held per (layer, head), layer-major.
    public let headCounts: [Int]
    /// Original positions per (layer, head), layer-major.
    public let positions: [[Int32]]

    public init(layout: ModelLayout, headCounts: [Int], positions: [[Int32]]) {
        self.layout = layout
        self.headCounts = headCounts
        self.positions = positions
    }
}

/// A compaction method: it only decides which tokens each head keeps. The host owns budgets
/// arithmetic checks, validation, packing and freeing pages.
public protocol CompactionMethod: Sendable {
    /// Name, description and parameters, as listed by Hello.
    var descriptor: MethodDescriptor { get }
    /// Checks relations between parameters that single ranges cannot express. Default: none.
    func check(_ params: ResolvedParams) throws(KVDError)
    /// The plan for `view` under `params` (already range-checked by the host).
    func plan(_ view: SequenceView, _ params: ResolvedParams) throws(KVDError) -> CompactionPlan
}

extension CompactionMethod {
    public func check(_ params: ResolvedParams) throws(KVDError) {}
}

/// The methods the daemon can run, by name.
public struct MethodRegistry: Sendable {
    public private(set) var methods: [String: any CompactionMethod] = [:]

    public init(_ methods: [any CompactionMethod]) {
        for m in methods { self.methods[m.descriptor.name] = m }
    }

    public var descriptors: [MethodDescriptor] { methods.values.map(\.descriptor).sorted { $0.name < $1.name } }

    public func method(named name: String) throws(KVDError) -> any CompactionMethod {
        guard let m = methods[name] else {
            throw .notFound("unknown compaction method '\(name)'; available: \(methods.keys.sorted().joined(separator: ", "))")
        }
        return m
    }
}
