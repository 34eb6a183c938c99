import CZMQ
import Foundation

// The baseline kvd's request overhead is measured against: a raw ZeroMQ ROUTER that sends every
// multipart message straight back (identity frame included), written in Swift like kvd, on the same
// transports. Frames are received into zmq_msg_t and sent back as they are: no copy, no decode.
//   kvd-echo ENDPOINT [ENDPOINT...]      e.g. kvd-echo ipc:///tmp/echo.sock tcp://127.0.0.1:5601
// Runs until SIGINT/SIGTERM. Prints "ready" on stdout once every endpoint is bound.

let endpoints = Array(CommandLine.arguments.dropFirst())
guard !endpoints.isEmpty else {
    FileHandle.standardError.write(Data("usage: kvd-echo ENDPOINT [ENDPOINT...]\n".utf8))
    exit(2)
}

func fail(_ call: String) -> Never {
    FileHandle.standardError.write(Data("kvd-echo: \(call): \(String(cString: zmq_strerror(zmq_errno())))\n".utf8))
    exit(1)
}

guard let context = zmq_ctx_new(), let socket = zmq_socket(context, ZMQ_ROUTER) else { fail("zmq_socket") }
// Same socket options as kvd's ROUTER, so both sides queue and drop alike.
var hwm: Int32 = 10_000
zmq_setsockopt(socket, ZMQ_SNDHWM, &hwm, MemoryLayout<Int32>.size)
zmq_setsockopt(socket, ZMQ_RCVHWM, &hwm, MemoryLayout<Int32>.size)
var linger: Int32 = 0
zmq_setsockopt(socket, ZMQ_LINGER, &linger, MemoryLayout<Int32>.size)
for endpoint in endpoints where zmq_bind(socket, endpoint) != 0 { fail("zmq_bind(\(endpoint))") }
signal(SIGINT) { _ in _exit(0) }
signal(SIGTERM) { _ in _exit(0) }
FileHandle.standardOutput.write(Data("ready\n".utf8))

var message = zmq_msg_t()
while true {
    // One multipart message: each frame goes back out as soon as it arrives, with SNDMORE when
    // more frames follow, so a 64 MiB frame is never copied.
    var more = true
    while more {
        zmq_msg_init(&message)
        if zmq_msg_recv(&message, socket, 0) < 0 {
            if zmq_errno() == EINTR { zmq_msg_close(&message); continue }
            fail("zmq_msg_recv")
        }
        more = zmq_msg_more(&message) != 0
        if zmq_msg_send(&message, socket, more ? ZMQ_SNDMORE : 0) < 0 { zmq_msg_close(&message) }
    }
}
