/// One RESP2 reply, copied out of hiredis' memory (so it outlives `freeReplyObject` and can cross
/// threads). Error replies are values here, not thrown: the cluster layer reads `MOVED`/`ASK` from them,
/// and `RemoteKV` turns the rest into `RemoteError.rejected`.
public enum RedisReply: Sendable, Equatable {
    /// The nil bulk string or nil array (`$-1`, `*-1`): e.g. GET of a missing key. Named `null`, not
    /// `nil`, so it cannot be confused with an absent `RedisReply?`.
    case null
    /// `:<n>`.
    case int(Int64)
    /// A bulk string (`$<len>`): binary-safe bytes.
    case string([UInt8])
    /// A bulk string of this many bytes that went into a `ValueSink` instead.
    case sunk(Int)
    /// A status reply (`+OK`, `+PONG`).
    case status(String)
    /// An error reply (`-ERR …`, `-MOVED …`), without the leading `-`.
    case error(String)
    /// `*<n>`: nested replies.
    case array([RedisReply])

    /// The reply's kind, for messages ("expected a bulk string, got an array of 3").
    var summary: String {
        switch self {
        case .null: return "nil"
        case .int: return "an integer"
        case .string(let b): return "a bulk string of \(b.count) bytes"
        case .sunk(let n): return "a bulk string of \(n) bytes"
        case .status(let s): return "status \(s.prefix(64))"
        case .error(let e): return "error \(e.prefix(200))"
        case .array(let a): return "an array of \(a.count)"
        }
    }

    /// The first word of an error reply (`MOVED`, `OOM`, `ERR`), which Redis uses as the error code.
    var errorCode: Substring? {
        guard case .error(let e) = self else { return nil }
        return e.prefix { $0 != " " }
    }
}
