import Foundation

/// A reply on its way to the socket: the route frames (peer identity, a REQ delimiter) and the
/// message. Large Query replies are a malloc'd block that libzmq takes over when sending, so their
/// K/V bytes are never copied again after the handler wrote them.
struct OutgoingReply: @unchecked Sendable {
    enum Payload {
        case bytes([UInt8])
        /// `block + offset ..< + length`; whoever sends it (or drops it) frees `block`.
        case owned(block: UnsafeMutableRawPointer, offset: Int, length: Int)
    }

    var route: [[UInt8]]
    var payload: Payload
}
