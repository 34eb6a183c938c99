import KVDCore

/// A plan plus what the host must check it against: the tokens every head must keep (sinks at the
/// start, the window at the end) and each head's budget outside them.
public struct MethodPlan: Sendable {
    public var plan: CompactionPlan
    /// Tokens at the start of every head that must be kept.
    public var sinks: Int
    /// Tokens at the end of every head that must be kept.
    public var window: Int
    /// Per (layer, head): most tokens kept outside sinks and window; nil when the method has no budgets.
    public var budgets: [Int]?
    /// Whether the reply lists `budgets` (false when they only bound the check, e.g. streamingllm's
    /// zeros, which a client would read as "budget 0").
    public var reportBudgets: Bool
    /// Layer aliases to apply after packing (KVSharer): layer → the earlier layer it reads.
    public var aliases: [Int: Int] = [:]

    public init(plan: CompactionPlan, sinks: Int = 0, window: Int = 0, budgets: [Int]? = nil, reportBudgets: Bool = true) {
        self.plan = plan
        self.sinks = sinks
        self.window = window
        self.budgets = budgets
        self.reportBudgets = reportBudgets
    }
}

/// Facts about a method's inputs the host checks before running it.
public struct CheckContext: Sendable {
    /// The model it will run on, when known (requests); nil when checking a config policy for all models.
    public let layout: ModelLayout?
    public let baseDirectory: String
    /// Where files named by parameters may be and who named them (`FileAccess`).
    public let files: FileAccess
    public init(layout: ModelLayout?, baseDirectory: String, files: FileAccess? = nil) {
        self.layout = layout
        self.baseDirectory = baseDirectory
        self.files = files ?? FileAccess(baseDirectory: baseDirectory)
    }
}

/// A compaction method: it only decides which tokens each head keeps. The host owns validation,
/// packing and freeing pages.
public protocol CompactionMethod: Sendable {
    /// Name, description and parameters, as listed by Hello.
    var descriptor: MethodDescriptor { get }
    /// Whether `plan` needs observation queries.
    var needsQueries: Bool { get }
    /// Checks relations between parameters (and files they name) that ranges cannot express.
    func check(_ params: ResolvedParams, _ context: CheckContext) throws(KVDError)
    /// The plan for `context.view`.
    func plan(_ context: CompactionContext) throws(KVDError) -> MethodPlan
}

extension CompactionMethod {
    public var needsQueries: Bool { false }
    public func check(_ params: ResolvedParams, _ context: CheckContext) throws(KVDError) {}
}

/// The methods the daemon can run, by name.
public struct MethodRegistry: Sendable {
    public private(set) var methods: [String: any CompactionMethod] = [:]
    /// Where each method came from: "builtin" or a plugin path.
    public private(set) var origins: [String: String] = [:]

    public init(_ methods: [any CompactionMethod] = []) {
        for m in methods { self.methods[m.descriptor.name] = m; origins[m.descriptor.name] = "builtin" }
    }

    /// Adds a method; a second method of the same name is an error naming both origins.
    public mutating func add(_ m: any CompactionMethod, origin: String) throws(KVDError) {
        let name = m.descriptor.name
        if let existing = origins[name] {
            throw .alreadyExists("method '\(name)' from \(origin) clashes with the one from \(existing)")
        }
        methods[name] = m
        origins[name] = origin
    }

    public var descriptors: [MethodDescriptor] { methods.values.map(\.descriptor).sorted { $0.name < $1.name } }

    public func method(named name: String) throws(KVDError) -> any CompactionMethod {
        guard let m = methods[name] else {
            throw .notFound("unknown compaction method '\(name)'; available: \(methods.keys.sorted().joined(separator: ", "))")
        }
        return m
    }
}
