/// A libzmq context handle that may be handed to another thread. Unlike sockets, libzmq contexts
/// are thread-safe (zmq_socket, zmq_ctx_term may be called from any thread), so moving the pointer
/// across threads is safe; what must never cross threads is a socket, and nothing here gives one.
struct ZMQContext: @unchecked Sendable {  // safe: a libzmq context is thread-safe
    let raw: UnsafeMutableRawPointer
}
