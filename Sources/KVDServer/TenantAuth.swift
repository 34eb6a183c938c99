import KVDCore
import KVDProtocol

/// Decides which tenant a message acts for. Sources, strongest first:
/// 1. the ZAP User-Id libzmq attaches to every message of a CURVE connection (kvd's ZAP handler
///    sets it to the tenant owning the client's key; a client cannot forge it);
/// 2. the binding a Hello with the tenant's token made for this connection;
/// 3. the open tenant (a tenant with no credential), if the config has one.
/// Otherwise the request is refused with PERMISSION_DENIED.
enum TenantAuth {
    static func resolve(_ peer: PeerIdentity, _ bindings: inout TenantBindings, _ store: Store, now: UInt64) -> Result<TenantSpace, KVDError> {
        if let user = peer.userID, !user.isEmpty {
            guard let space = store.space(named: user) else {
                return .failure(.permissionDenied("this connection's CURVE key belongs to no configured tenant"))
            }
            return .success(space)
        }
        if let space = bindings.space(of: peer.routingID, peerAddress: peer.peerAddress, now: now) { return .success(space) }
        if let open = store.openSpace, uidAllowed(open, peer) { return .success(open) }
        return .failure(.permissionDenied(
            "this connection is not bound to a tenant; send Hello with your tenant name and token first"))
    }

    /// Hello: checks the credential it carries and binds the connection to that tenant.
    static func hello(_ r: Kvd_V1_HelloRequest, _ peer: PeerIdentity, _ bindings: inout TenantBindings, _ store: Store, now: UInt64) -> Result<TenantSpace, KVDError> {
        // Same words for an unknown tenant and a wrong token: tenant names are not to be probed.
        let refused = KVDError.permissionDenied("tenant or token not accepted; check the tenant name and its token")
        if !r.adminToken.isEmpty { return adminHello(r, peer, &bindings, store, now: now) }
        let space: TenantSpace
        if let user = peer.userID, !user.isEmpty {
            guard let s = store.space(named: user) else { return .failure(refused) }
            guard r.tenant.isEmpty || r.tenant == user else {
                return .failure(.permissionDenied("this connection's CURVE key belongs to tenant '\(user)', not '\(r.tenant)'"))
            }
            space = s
        } else if r.tenant.isEmpty {
            guard let open = store.openSpace else {
                return .failure(.permissionDenied("this server has no open tenant; Hello must give tenant and token"))
            }
            space = open
        } else {
            guard let s = store.space(named: r.tenant) else { return .failure(refused) }
            if s !== store.openSpace {
                // A tenant with only CURVE keys accepts no token: its key is its credential.
                guard let token = s.tenant.token, constantTimeEqual(token, r.token) else { return .failure(refused) }
            }
            space = s
        }
        guard uidAllowed(space, peer) else {
            return .failure(.permissionDenied(
                "tenant '\(space.name)' does not accept this local user (uid \(peer.unixUID.map(String.init) ?? "unknown")); see tenants.unix_uids"))
        }
        bindings.bind(peer.routingID, to: space, peerAddress: peer.peerAddress, now: now)
        return .success(space)
    }

    /// Hello with the admin token: binds the connection, as admin, to the tenant it names (empty:
    /// the open tenant) without that tenant's own credential. A CURVE connection stays with its
    /// key's tenant. unix_uids still apply: they say who may touch the tenant's segment.
    private static func adminHello(_ r: Kvd_V1_HelloRequest, _ peer: PeerIdentity, _ bindings: inout TenantBindings, _ store: Store, now: UInt64) -> Result<TenantSpace, KVDError> {
        guard let expected = store.config.admin.token, constantTimeEqual(expected, r.adminToken) else {
            return .failure(.permissionDenied("admin token not accepted; check admin.token (or admin.token_file) in the daemon's config"))
        }
        let name = peer.userID.flatMap { $0.isEmpty ? nil : $0 } ?? r.tenant
        let found = name.isEmpty ? store.openSpace : store.space(named: name)
        guard let space = found else {
            return .failure(.notFound(name.isEmpty
                ? "this server has no open tenant; name the tenant to act on (kvctl --tenant NAME)"
                : "no tenant named '\(name)'; configured: \(store.spaces.map(\.name).joined(separator: ", "))"))
        }
        guard uidAllowed(space, peer) else {
            return .failure(.permissionDenied(
                "tenant '\(space.name)' does not accept this local user (uid \(peer.unixUID.map(String.init) ?? "unknown")); see tenants.unix_uids"))
        }
        bindings.bind(peer.routingID, to: space, peerAddress: peer.peerAddress, now: now, admin: true)
        return .success(space)
    }

    /// Whether this connection may send admin requests (Reload, Evict): it is bound as admin, or
    /// the daemon has no credential at all (its only tenant is open and there is no `admin:`: one
    /// local user's daemon, where whoever reaches the socket already holds every sequence).
    static func isAdmin(_ peer: PeerIdentity, _ bindings: borrowing TenantBindings, _ store: Store) -> Bool {
        if bindings.isAdmin(peer.routingID, peerAddress: peer.peerAddress) { return true }
        return store.hasNoCredentials
    }

    /// A tenant that lists unix_uids accepts ipc:// peers with one of them; tcp:// peers (no
    /// credentials) are judged by token or CURVE key alone.
    static func uidAllowed(_ space: TenantSpace, _ peer: PeerIdentity) -> Bool {
        let allowed = space.tenant.unixUIDs
        guard !allowed.isEmpty, let uid = peer.unixUID else { return true }
        return allowed.contains(uid)
    }

    /// Compares without an early exit, so timing does not tell how much of a guess was right.
    static func constantTimeEqual(_ a: String, _ b: String) -> Bool {
        let x = Array(a.utf8), y = Array(b.utf8)
        var diff = UInt8(x.count == y.count ? 0 : 1)
        for i in 0..<max(x.count, y.count) {
            diff |= (i < x.count ? x[i] : 0) ^ (i < y.count ? y[i] : 0)
        }
        return diff == 0
    }
}
