/// Which tenant each connection authenticated as with Hello, keyed by its ZeroMQ routing identity.
/// A binding also records the peer address libzmq reported when it was made (on ipc:// this holds
/// the peer's uid, gid and pid from SO_PEERCRED), and a later message from the same identity but a
/// different peer is not treated as bound: another process that reuses a departed client's routing
/// identity does not inherit its tenant. Bounded: the least recently used binding goes first past
/// `capacity` (that client gets PERMISSION_DENIED and says Hello again). Owned by the socket thread.
struct TenantBindings: ~Copyable {
    struct Binding {
        let space: TenantSpace
        let peerAddress: String?
        /// Bound with the admin token (Reload, Evict allowed).
        let admin: Bool
        var lastUse: UInt64
    }

    let capacity: Int
    private var bindings: [[UInt8]: Binding] = [:]

    init(capacity: Int = 65_536) { self.capacity = capacity }

    var count: Int { bindings.count }

    mutating func bind(_ identity: [UInt8], to space: TenantSpace, peerAddress: String?, now: UInt64, admin: Bool = false) {
        if bindings[identity] == nil, bindings.count >= capacity,
            let oldest = bindings.min(by: { $0.value.lastUse < $1.value.lastUse })?.key
        {
            bindings.removeValue(forKey: oldest)
        }
        bindings[identity] = Binding(space: space, peerAddress: peerAddress, admin: admin, lastUse: now)
    }

    /// The tenant `identity` bound to, if the message comes from the same peer that bound it.
    mutating func space(of identity: [UInt8], peerAddress: String?, now: UInt64) -> TenantSpace? {
        guard var b = bindings[identity], b.peerAddress == peerAddress else { return nil }
        b.lastUse = now
        bindings[identity] = b
        return b.space
    }

    /// Whether `identity` said Hello with the admin token, from the same peer.
    func isAdmin(_ identity: [UInt8], peerAddress: String?) -> Bool {
        guard let b = bindings[identity], b.peerAddress == peerAddress else { return false }
        return b.admin
    }
}

/// What libzmq says about the other end of one message.
struct PeerIdentity {
    /// Routing identity (the ROUTER's first frame).
    let routingID: [UInt8]
    /// ZAP User-Id: set by kvd's ZAP handler to the tenant of the peer's CURVE key; nil otherwise.
    let userID: String?
    /// libzmq's "Peer-Address": "localhost:UID:GID:PID" on ipc:// (SO_PEERCRED), the IP on tcp://.
    let peerAddress: String?

    /// The peer's Unix user id, when the connection is ipc:// and libzmq read its credentials.
    var unixUID: UInt32? { peerAddress.flatMap(PeerCredentials.init(peerAddress:))?.uid }
}
