import KVDKeys

/// What the ZAP handler answers to one request (RFC 27), apart from the socket that carries it.
///
/// - CURVE: 200 with User-Id = the tenant whose `curve_public_keys` lists the key the client proved
///   it holds; 400 for any other key (libzmq sends the client an ERROR and drops it).
/// - NULL (ipc, insecure tcp): 200 with an empty User-Id. Answering at all matters: libzmq prefers
///   the handler's properties to the peer's handshake metadata, so a peer cannot plant a User-Id.
/// - anything else, another domain, or a connection whose address libzmq could not read (then the
///   peer could plant a Peer-Address the same way): 400.
enum ZAPDecision {
    enum Verdict {
        case accepted(String)
        /// The refused client's key, when it gave one (to warn once per key).
        case refused(String, key: [UInt8]?)
    }

    /// RFC 27: request = version, request id, domain, address, routing id, mechanism, credentials…;
    /// reply = version, request id, status code, status text, user id, metadata.
    static func answer(_ f: [[UInt8]], tenantsByKey: [[UInt8]: String]) -> (frames: [[UInt8]], verdict: Verdict) {
        let requestID = f.count > 1 ? f[1] : []
        func reply(_ code: String, _ text: String, user: String = "") -> [[UInt8]] {
            [Array("1.0".utf8), requestID, Array(code.utf8), Array(text.utf8), Array(user.utf8), []]
        }
        func text(_ i: Int) -> String { String(decoding: f[i], as: UTF8.self) }
        guard f.count >= 6, text(0) == "1.0" else {
            return (reply("400", "malformed ZAP request"), .refused("malformed ZAP request (\(f.count) frames)", key: nil))
        }
        let address = text(3), mechanism = text(5)
        guard text(2) == ZAPHandler.domain else {
            return (reply("400", "unknown domain"), .refused("ZAP domain '\(text(2))' from \(address)", key: nil))
        }
        // libzmq leaves Peer-Address out when it cannot read it; a peer could then supply its own.
        guard !address.isEmpty else {
            return (reply("400", "no peer address"), .refused("\(mechanism) connection whose peer address libzmq could not read", key: nil))
        }
        switch mechanism {
        case "NULL":
            return (reply("200", "OK"), .accepted("NULL connection from \(address)"))
        case "CURVE" where f.count == 7 && f[6].count == 32:
            let key = f[6]
            if let tenant = tenantsByKey[key] {
                return (reply("200", "OK", user: tenant), .accepted("CURVE connection from \(address) for tenant \(tenant)"))
            }
            return (reply("400", "unknown key"), .refused(
                "CURVE client at \(address) with public key \(CurveKeys.encode(key)), which no tenant lists in curve_public_keys", key: key))
        default:
            return (reply("400", "mechanism not allowed"), .refused("\(mechanism) connection from \(address) (mechanism not allowed)", key: nil))
        }
    }
}
