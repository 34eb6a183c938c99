import Foundation

/// A reply on its way to the socket: the route frames (peer identity, a REQ delimiter) and the
/// message. Large Query replies are a malloc'd block that libzmq takes over when sending, so their
/// K/V bytes are never copied again after the handler wrote them.
///
/// the unchecked Sendable conformance because of that block's raw pointer: it is owned by exactly one reply,
/// which moves from the worker that built it to the outbox to the socket thread; no other code
/// keeps the pointer, and whoever holds the reply last either hands the block to libzmq or frees it.
struct OutgoingReply: @unchecked Sendable {  // safe: the block has exactly one owner at a time
    enum Payload {
        case bytes([UInt8])
        /// `block + offset ..< + length`; whoever sends it (or drops it) frees `block`.
        case owned(block: UnsafeMutableRawPointer, offset: Int, length: Int)
    }

    var route: [[UInt8]]
    var payload: Payload
    /// With metrics on: the request's kind, receipt time and outcome, recorded once this is sent.
    var trace: RequestTrace? = nil
}
