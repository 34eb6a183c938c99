import KVDCore

/// Everything one compaction may read: the sequence view, the request's observation queries, the
/// resolved parameters, and where relative file parameters (head scores) are resolved from.
public struct CompactionContext: Sendable {
    public let view: SequenceView
    public let observation: Observation?
    public let params: ResolvedParams
    /// Name of the method or policy running, for error messages.
    public let method: String
    /// Directory relative paths in parameters are resolved against (the config file's).
    public let baseDirectory: String
    /// Where files named by parameters may be and who named them (`FileAccess`). Without one,
    /// files are the operator's, relative to `baseDirectory`, not confined (tools and tests).
    public let files: FileAccess

    public init(
        view: SequenceView, observation: Observation?, params: ResolvedParams, method: String, baseDirectory: String,
        files: FileAccess? = nil
    ) {
        self.view = view
        self.observation = observation
        self.params = params
        self.method = method
        self.baseDirectory = baseDirectory
        self.files = files ?? FileAccess(baseDirectory: baseDirectory)
    }

    public var layout: ModelLayout { view.layout }

    /// The observation queries, or FAILED_PRECONDITION naming what is missing.
    public func requireObservation() throws(KVDError) -> Observation {
        guard let observation else {
            throw .failedPrecondition(
                "method '\(method)' scores with window attention and needs observation queries: send "
                    + "CompactRequest.queries, shape [layers, q_heads, window, head_dim]")
        }
        return observation
    }

    /// `path` as given, or under `baseDirectory` when relative. Not confined to any directory: a
    /// file named by a request must be found with `files.locate` instead.
    public func resolve(path: String) -> String {
        path.hasPrefix("/") || baseDirectory.isEmpty ? path : baseDirectory + "/" + path
    }

    /// The always-kept window: the observation's w when queries were sent, else the `window`
    /// parameter (0 when the method has none). Larger than a head's cache is INVALID_ARGUMENT.
    public func window() throws(KVDError) -> Int {
        let w = observation?.window ?? (params.values["window"].map { _ in params.int("window") } ?? 0)
        // Heads of aliased layers hold nothing and are not compacted; they do not bound the window.
        if let smallest = view.headCounts.filter({ $0 > 0 }).min(), w > smallest {
            throw .invalidArgument("window of \(w) tokens is larger than the cache (a head holds \(smallest)); send fewer observation queries or a smaller window")
        }
        return w
    }
}
