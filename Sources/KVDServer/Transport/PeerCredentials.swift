/// The Unix credentials of an ipc peer, as the kernel recorded them when the peer called
/// `connect()` (SO_PEERCRED). libzmq reports them in the "Peer-Address" property of every message
/// from an ipc connection as "localhost:UID:GID:PID" (libzmq 4.3.x, Linux).
struct PeerCredentials: Sendable, Hashable, CustomStringConvertible {
    let uid: UInt32
    let gid: UInt32
    /// 0 when the peer's process is in a PID namespace this daemon cannot see.
    let pid: Int32

    /// Parses libzmq's ipc Peer-Address; nil for anything else (tcp addresses, or an ipc address
    /// without credentials). Exact format only: four fields, the first "localhost".
    init?(peerAddress: String) {
        let parts = peerAddress.utf8.split(separator: UInt8(ascii: ":"), omittingEmptySubsequences: false)
        guard parts.count == 4, String(parts[0]) == "localhost",
            let uid = parts[1].decimal(UInt32.self), let gid = parts[2].decimal(UInt32.self), let pid = parts[3].decimal(Int32.self)
        else { return nil }
        self.uid = uid
        self.gid = gid
        self.pid = pid
    }

    init(uid: UInt32, gid: UInt32, pid: Int32) {
        self.uid = uid
        self.gid = gid
        self.pid = pid
    }

    var description: String { "uid \(uid), gid \(gid), pid \(pid)" }
}

extension Substring.UTF8View {
    /// Plain decimal digits only (no sign, no spaces), within T's range.
    fileprivate func decimal<T: FixedWidthInteger>(_: T.Type) -> T? {
        guard !isEmpty, count <= 10, allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }) else { return nil }
        return T(String(Substring(self)))
    }
}
