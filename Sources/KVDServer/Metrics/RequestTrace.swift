import Dispatch
import KVDCore
import KVDProtocol

/// What the metrics and the debug log need to know about one request on its way to the socket: its
/// kind and id, when it was received and how it ended. Travels inside the `OutgoingReply`, so a reply a worker posts
/// through the outbox is timed up to the moment the socket thread sends it.
struct RequestTrace: Sendable {
    /// `kindName` of the request body ("append", "query", ...), or "invalid" before one is decoded.
    var kind: String = "invalid"
    /// The request's id (0 until the request is decoded).
    var requestID: UInt64 = 0
    /// Uptime in nanoseconds when the socket thread received the request.
    let receivedNs: UInt64
    /// "OK", or the error code's wire name ("INVALID_ARGUMENT", ...).
    var code: String = "OK"

    init(receivedNs: UInt64 = DispatchTime.now().uptimeNanoseconds) { self.receivedNs = receivedNs }

    /// The trace with the outcome of `result` filled in.
    func finished<T>(_ result: Result<T, KVDError>) -> RequestTrace {
        var t = self
        if case .failure(let e) = result { t.code = Self.codeLabel(e.code) }
        return t
    }

    /// The code's name as the wire spells it (kvd.v1.ErrorCode without its prefix), as kvctl prints it.
    static func codeLabel(_ code: KVDError.Code) -> String { Kvd_V1_ErrorCode(code).stableName }
}

/// Where a reply goes (the ROUTER envelope) and, with metrics on or the log at debug, the trace of
/// its request.
struct ReplyRoute: Sendable {
    var frames: [[UInt8]]
    var trace: RequestTrace?
}
