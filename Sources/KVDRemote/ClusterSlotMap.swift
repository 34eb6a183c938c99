/// Which master serves each of the 16384 slots, as one node's `CLUSTER SLOTS` reply said, plus the
/// single-slot corrections `MOVED` replies bring. Replicas are ignored: kvd reads and writes masters
/// only (a cache tier does not need replica reads, and a replica may lag).
struct ClusterSlotMap {
    /// Distinct masters, in order of first appearance.
    private(set) var nodes: [RedisEndpoint] = []
    /// Per slot, an index into `nodes`, or -1 when no master is known for it.
    private var owners = [Int16](repeating: -1, count: ClusterKeySlot.count)

    init() {}

    /// Parses a `CLUSTER SLOTS` reply from `source`: `[[start, end, [host, port, id, …], replicas…], …]`.
    /// Every number from the reply is range-checked; a malformed entry fails the whole map (a partial
    /// map would send keys to the wrong node). An empty host means `source`'s host (Redis' way to say
    /// "the address you reached me at"); `?` (endpoint unknown) leaves those slots unowned.
    init(parsing reply: RedisReply, from source: RedisEndpoint) throws(RemoteError) {
        let args = [Array("CLUSTER".utf8), Array("SLOTS".utf8)]
        func bad(_ what: String) -> RemoteError { RemoteError.at(.protocol, source, args, what) }
        guard case .array(let entries) = reply else {
            throw KVCommand.unexpected(reply, "an array of slot ranges", source, args)
        }
        for (i, entry) in entries.enumerated() {
            guard case .array(let fields) = entry, fields.count >= 3,
                  case .int(let start) = fields[0], case .int(let end) = fields[1],
                  start >= 0, start <= end, end < Int64(ClusterKeySlot.count)
            else { throw bad("slot range \(i) is not [start, end, master…] with 0 <= start <= end < 16384") }
            guard case .array(let master) = fields[2], master.count >= 2,
                  case .string(let hostBytes) = master[0], case .int(let port) = master[1],
                  port >= 1, port <= 65535
            else { throw bad("slot range \(i): master is not [host, port 1...65535, …]") }
            let host = String(decoding: hostBytes, as: UTF8.self)
            if host == "?" { continue }
            let node = RedisEndpoint(host: host.isEmpty ? source.host : host, port: Int(port))
            for slot in Int(start)...Int(end) { assign(slot, to: node) }
        }
    }

    var isEmpty: Bool { nodes.isEmpty }

    /// How many slots have a known master (16384 when the cluster covers every slot).
    var coveredSlots: Int { owners.reduce(0) { $0 + ($1 >= 0 ? 1 : 0) } }

    func owner(of slot: Int) -> RedisEndpoint? {
        let i = owners[slot]
        return i >= 0 ? nodes[Int(i)] : nil
    }

    /// Records that `node` serves `slot` (from a range of `CLUSTER SLOTS`, or from a `MOVED`).
    mutating func assign(_ slot: Int, to node: RedisEndpoint) {
        if let i = nodes.firstIndex(of: node) {
            owners[slot] = Int16(i)
        } else {
            // At most one new node per slot, so at most 16384 nodes: the index fits in Int16.
            owners[slot] = Int16(nodes.count)
            nodes.append(node)
        }
    }
}
