#if canImport(Glibc)
import Glibc
#endif

/// A self-pipe the socket thread polls next to the ROUTER socket, so workers (and the signal handler)
/// can wake it when a reply is ready without touching the non-thread-safe zmq socket.
final class WakeSignal: Sendable {
    /// Polled by the socket thread.
    let fd: Int32
    private let writeFD: Int32

    init() throws {
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { throw ZMQError(call: "pipe", errno: errno) }
        for end in fds {
            _ = fcntl(end, F_SETFL, fcntl(end, F_GETFL) | O_NONBLOCK)
            _ = fcntl(end, F_SETFD, FD_CLOEXEC)
        }
        fd = fds[0]
        writeFD = fds[1]
    }

    /// Never blocks: when the pipe is full a wake-up is already pending, which is all that matters.
    func wake() {
        var one: UInt8 = 1
        _ = write(writeFD, &one, 1)
    }

    /// Clears pending wake-ups.
    func drain() {
        var buffer = [UInt8](repeating: 0, count: 256)
        while read(fd, &buffer, buffer.count) > 0 {}
    }

    deinit {
        close(fd)
        close(writeFD)
    }
}
