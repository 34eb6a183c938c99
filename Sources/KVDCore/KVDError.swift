/// An error that reaches a client as `kvd.v1.Error`. Codes mirror `kvd.v1.ErrorCode` one to one and
/// never change meaning; messages start with "kvd: " and say what to fix.
public struct KVDError: Error, Equatable, CustomStringConvertible, Sendable {
    /// Stable error codes; raw values equal the protobuf enum's numbers.
    public enum Code: Int, Sendable, CaseIterable {
        case invalidArgument = 1
        case notFound = 2
        case alreadyExists = 3
        case resourceExhausted = 4
        case failedPrecondition = 5
        case permissionDenied = 6
        case unimplemented = 7
        case `internal` = 8
        case unavailable = 9
        /// The memory manager took the sequence back (evicted, or released after its lease and grace).
        case evicted = 10
    }

    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message.hasPrefix("kvd: ") ? message : "kvd: " + message
    }

    public var description: String { "\(code): \(message)" }

    public static func invalidArgument(_ m: String) -> KVDError { KVDError(.invalidArgument, m) }
    public static func notFound(_ m: String) -> KVDError { KVDError(.notFound, m) }
    public static func alreadyExists(_ m: String) -> KVDError { KVDError(.alreadyExists, m) }
    public static func resourceExhausted(_ m: String) -> KVDError { KVDError(.resourceExhausted, m) }
    public static func failedPrecondition(_ m: String) -> KVDError { KVDError(.failedPrecondition, m) }
    public static func permissionDenied(_ m: String) -> KVDError { KVDError(.permissionDenied, m) }
    public static func unimplemented(_ m: String) -> KVDError { KVDError(.unimplemented, m) }
    public static func internalError(_ m: String) -> KVDError { KVDError(.internal, m) }
    public static func unavailable(_ m: String) -> KVDError { KVDError(.unavailable, m) }
    public static func evicted(_ m: String) -> KVDError { KVDError(.evicted, m) }
}
