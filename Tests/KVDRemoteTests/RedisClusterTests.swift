import Foundation
import KVDRemote
import Testing

/// `RedisClusterKV` against a real 3-master cluster (one per test, scripts/redis.sh start-cluster):
/// keys spread over the masters by slot, `MOVED` after a slot migrated, `ASK` during a migration, and
/// a killed master that makes only its own slots `unavailable`. Serialized: each test moves slots or
/// kills nodes, and the machine has few cores.
@Suite(.serialized) struct RedisClusterTests {
    static let timeouts = RedisTimeouts(connectMs: 500, commandMs: 1000)

    /// The node ids by port (`CLUSTER MYID`), for `CLUSTER SETSLOT`.
    func ids(_ servers: RedisServers, _ ports: [Int]) throws -> [Int: String] {
        var out: [Int: String] = [:]
        for p in ports { out[p] = try servers.adminString(p, "CLUSTER", "MYID") }
        return out
    }

    /// The master of `slot` by port, as the cluster says now (a fresh client's map).
    func ownerPort(_ slot: Int, _ servers: RedisServers, _ ports: [Int]) throws -> Int {
        let probe = RedisClusterKV(seeds: [servers.endpoint(ports[0])], options: .init(timeouts: Self.timeouts))
        try probe.refreshSlotMap()
        return try #require(probe.owner(ofSlot: slot)).port
    }

    /// A key with hash tag `tag` whose slot is served by `port`, and that slot.
    func tag(on port: Int, _ servers: RedisServers, _ ports: [Int], avoiding: Set<Int> = []) throws -> (tag: String, slot: Int) {
        for i in 0..<10_000 {
            let tag = "t\(i)"
            let slot = ClusterKeySlot.of(b("{\(tag)}"))
            if !avoiding.contains(slot), try ownerPort(slot, servers, ports) == port { return (tag, slot) }
        }
        throw RedisServers.Failure(description: "no tag found for port \(port)")
    }

    /// Moves `slot` with its keys from `from` to `to` the way `redis-cli --cluster reshard` does:
    /// IMPORTING on the target, MIGRATING on the source, MIGRATE the keys, then SETSLOT NODE on every
    /// master (target first, so the slot is never ownerless).
    func migrate(_ slot: Int, from: Int, to: Int, _ servers: RedisServers, _ ports: [Int], ids: [Int: String]) throws {
        try servers.admin(to, "CLUSTER", "SETSLOT", "\(slot)", "IMPORTING", ids[from]!)
        try servers.admin(from, "CLUSTER", "SETSLOT", "\(slot)", "MIGRATING", ids[to]!)
        try finishMigration(slot, from: from, to: to, servers, ports, ids: ids)
    }

    func finishMigration(_ slot: Int, from: Int, to: Int, _ servers: RedisServers, _ ports: [Int], ids: [Int: String]) throws {
        guard case .array(let keys) = try servers.admin(from, "CLUSTER", "GETKEYSINSLOT", "\(slot)", "1000") else {
            throw RedisServers.Failure(description: "GETKEYSINSLOT")
        }
        let names = keys.compactMap { k -> String? in if case .string(let s) = k { String(decoding: s, as: UTF8.self) } else { nil } }
        if !names.isEmpty {
            let reply = try servers.admin(from, ["MIGRATE", "127.0.0.1", "\(to)", "", "0", "5000", "KEYS"] + names)
            #expect(reply == .status("OK"))
        }
        for p in [to, from] + ports.filter({ $0 != to && $0 != from }) {
            try servers.admin(p, "CLUSTER", "SETSLOT", "\(slot)", "NODE", ids[to]!)
        }
    }

    /// Keys land on every master, each on the master of its slot; a multi-key delete spans slots; a
    /// dead seed is skipped.
    @Test func keysSpreadOverMasters() throws {
        let servers = try RedisServers()
        let ports = try servers.startCluster()
        let dead = RedisEndpoint(host: "127.0.0.1", port: RedisServers.freePorts(1, clusterBus: false)[0])
        let kv = RedisClusterKV(seeds: [dead, servers.endpoint(ports[1])], options: .init(timeouts: Self.timeouts))
        let keys = (0..<300).map { b("kvd:seq:\($0)") }
        for (i, k) in keys.enumerated() { try kv.set(k, b("value \(i)") + [0, UInt8(i & 0xFF)], ttlSeconds: 0) }
        var expected: [Int: Int] = [:]
        for k in keys { expected[try #require(kv.owner(ofSlot: ClusterKeySlot.of(k))).port, default: 0] += 1 }
        for p in ports {
            let n = try servers.adminInt(p, "DBSIZE")
            #expect(n > 0 && n == expected[p], "node \(p): DBSIZE \(n), expected \(expected[p] ?? 0)")
        }
        for (i, k) in keys.enumerated() { #expect(try kv.get(k) == b("value \(i)") + [0, UInt8(i & 0xFF)]) }
        #expect(try kv.exists(keys[7]))
        #expect(try kv.delete(keys + [b("missing")]) == 300)
        for p in ports { #expect(try servers.adminInt(p, "DBSIZE") == 0) }
        #expect(kv.counters == RedisClusterKV.Counters(moved: 0, asked: 0, refreshes: 1))

        // A single-node client on a cluster node: keys of other nodes' slots are refused with a hint.
        let single = RedisNodeKV(endpoint: servers.endpoint(ports[0]), timeouts: Self.timeouts)
        let elsewhere = try #require(keys.first { kv.owner(ofSlot: ClusterKeySlot.of($0)) != servers.endpoint(ports[0]) })
        let error = #expect(throws: RemoteError.self) { try single.get(elsewhere) }
        #expect(error?.kind == .rejected && error?.message.contains("use RedisClusterKV") == true)
    }

    /// A slot migrated (with its keys) behind the client's back: the old owner answers MOVED, the
    /// client takes the new owner and goes straight there afterwards. During a migration, a key that
    /// is not on the source any more (or new) gets ASK: ASKING + the command on the target, and the
    /// map keeps the source as owner until the migration ends.
    @Test func movedAndAsk() throws {
        let servers = try RedisServers()
        let ports = try servers.startCluster()
        let ids = try ids(servers, ports)
        let (a, bNode) = (ports[0], ports[1])
        // A long refresh interval: only MOVED replies can change the client's map after the first read.
        let kv = RedisClusterKV(seeds: [servers.endpoint(a)], options: .init(timeouts: Self.timeouts, minRefreshIntervalMs: 60_000))

        // MOVED.
        let (t1, s1) = try tag(on: a, servers, ports)
        let k1 = b("{\(t1)}.seq")
        try kv.set(k1, b("v1"), ttlSeconds: 0)
        #expect(kv.owner(ofSlot: s1) == servers.endpoint(a))
        try migrate(s1, from: a, to: bNode, servers, ports, ids: ids)
        #expect(try kv.get(k1) == b("v1"))
        #expect(kv.counters.moved == 1)
        #expect(kv.owner(ofSlot: s1) == servers.endpoint(bNode))
        #expect(try kv.get(k1) == b("v1"))
        #expect(kv.counters.moved == 1)  // no second redirection

        // ASK, made deterministic by opening the migration by hand and leaving it open.
        let (t2, s2) = try tag(on: a, servers, ports, avoiding: [s1])
        let old = b("{\(t2)}.old"), new = b("{\(t2)}.new")
        try kv.set(old, b("old"), ttlSeconds: 0)  // on the source before the migration starts
        try servers.admin(bNode, "CLUSTER", "SETSLOT", "\(s2)", "IMPORTING", ids[a]!)
        try servers.admin(a, "CLUSTER", "SETSLOT", "\(s2)", "MIGRATING", ids[bNode]!)
        #expect(try kv.get(old) == b("old"))  // still on the source: served there, no redirection
        #expect(kv.counters.asked == 0)
        try kv.set(new, b("new"), ttlSeconds: 30)  // not on the source: ASK → written on the target
        #expect(kv.counters.asked == 1)
        #expect(try servers.adminInt(bNode, "CLUSTER", "COUNTKEYSINSLOT", "\(s2)") == 1)
        #expect(try servers.adminInt(a, "CLUSTER", "COUNTKEYSINSLOT", "\(s2)") == 1)
        #expect(try kv.get(new) == b("new"))
        #expect(kv.counters.asked == 2)
        #expect(kv.owner(ofSlot: s2) == servers.endpoint(a))  // ASK does not change the map
        #expect(kv.counters.moved == 1)

        // The migration ends: the next call is MOVED to the target, and both keys are there.
        try finishMigration(s2, from: a, to: bNode, servers, ports, ids: ids)
        #expect(try kv.get(new) == b("new"))
        #expect(try kv.get(old) == b("old"))
        #expect(kv.counters.moved == 2)
        #expect(kv.owner(ofSlot: s2) == servers.endpoint(bNode))
        #expect(try kv.delete([old, new, k1]) == 3)
    }

    /// A killed master: its slots fail at once with `unavailable` naming it, the other masters'
    /// slots keep working, and after it restarts (same cluster config) its slots work again.
    @Test func killedMasterOnlyItsSlotsUnavailable() throws {
        let servers = try RedisServers()
        let ports = try servers.startCluster()
        let kv = RedisClusterKV(seeds: ports.map(servers.endpoint), options: .init(timeouts: Self.timeouts, minRefreshIntervalMs: 10_000))
        let keys = (0..<60).map { b("k\($0)") }
        for k in keys { try kv.set(k, k, ttlSeconds: 0) }
        let victim = servers.endpoint(ports[2])
        let onVictim = keys.filter { kv.owner(ofSlot: ClusterKeySlot.of($0)) == victim }
        let onOthers = keys.filter { kv.owner(ofSlot: ClusterKeySlot.of($0)) != victim }
        #expect(!onVictim.isEmpty && !onOthers.isEmpty)

        try servers.kill(ports[2])
        let start = ContinuousClock.now
        for k in onVictim {
            let error = #expect(throws: RemoteError.self) { try kv.get(k) }
            #expect(error?.kind == .unavailable)
            #expect(error?.message.hasPrefix("\(victim): GET:") == true)
        }
        #expect(seconds(since: start) < 1, "\(onVictim.count) calls to a dead master took \(seconds(since: start)) s")
        for k in onOthers {
            #expect(try kv.get(k) == k)
            try kv.set(k, b("after"), ttlSeconds: 0)
        }
        // A delete that spans the dead master's slots fails there (its slot comes first: nothing deleted).
        #expect(throws: RemoteError.self) { try kv.delete([onVictim[0], onOthers[0]]) }
        #expect(kv.counters.refreshes <= 2)  // rate-limited: not one refresh per failed call

        // Back on its port with its nodes.conf: it rejoins with its slots (its data is gone: no
        // persistence). A restarted master answers CLUSTERDOWN (`unavailable`) for a moment first,
        // until it has heard from the others.
        try servers.restartClusterNode(ports[2])
        let deadline = ContinuousClock.now + .seconds(10)
        while true {
            do throws(RemoteError) {
                try kv.set(onVictim[0], b("again"), ttlSeconds: 0)
                break
            } catch {
                #expect(error.kind == .unavailable)
                if ContinuousClock.now > deadline { Issue.record("still failing 10 s after the restart: \(error)"); return }
                Thread.sleep(forTimeInterval: 0.1)
            }
        }
        #expect(try kv.get(onVictim[0]) == b("again"))
        #expect(try kv.get(onVictim[1 % onVictim.count]) == (onVictim.count > 1 ? nil : b("again")))
        for k in onOthers { #expect(try kv.get(k) == b("after")) }
    }
}
