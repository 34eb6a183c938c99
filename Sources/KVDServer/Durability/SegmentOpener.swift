import Dispatch
import Foundation
import KVDConfig
import KVDCore
import KVDJournal
import KVDShm

/// How a tenant's segment comes up at start (docs/DURABILITY.md):
/// - durability off: a new segment (one a crashed run left is replaced);
/// - durability on, a segment and journal left by an earlier kvd: the segment is adopted as it is
///   and the journal replayed (`Recovered`, served once the store exists); files of another
///   layout, format or segment are refused with what differs, unless `--fresh`;
/// - otherwise: a new segment with an empty journal.
enum SegmentOpener {
    struct Recovered {
        let state: DurableState
        let holders: [Int]
        let report: Journal.Recovery
        let elapsedMs: Double
    }

    static func open(_ tenant: Configuration.Tenant, _ config: Configuration, _ logger: Logger)
        throws -> (space: TenantSpace, recovered: Recovered?)
    {
        let a = tenant.arena
        let sizing = try ArenaSizing.compute(segmentBytes: a.sizeBytes, stagingBytes: a.stagingBytes, models: config.models)
        let d = config.durability
        func fresh() throws -> Arena {
            let arena = try Arena(name: a.shmName, sizing: sizing, mode: a.mode, uid: a.ownerUID, gid: a.ownerGID)
            if arena.replacedStale { logger.warning("removed a shared-memory segment \(arena.name) left by an earlier run") }
            return arena
        }
        guard d.enabled else {
            return (TenantSpace(tenant: tenant, arena: try fresh(), prefix: config.prefix, models: config.models), nil)
        }
        let paths = Journal.Paths(directory: d.directory, segment: a.shmName)
        let keyPath = paths.journal.dropLast(".journal".count) + ".prefix-key"
        let empty = DurableState(layouts: config.models, pageCount: sizing.pageCount)
        if !d.fresh, FileManager.default.fileExists(atPath: paths.journal), let arena = try Arena(adopting: a.shmName, sizing: sizing) {
            let start = DispatchTime.now().uptimeNanoseconds
            let recovered: (journal: Journal, state: DurableState, recovery: Journal.Recovery)
            let holders: [Int]
            do {
                recovered = try Journal.recover(paths: paths, segmentTag: arena.generation, into: empty, checkpointBytes: d.checkpointBytes)
                holders = try recovered.state.holders()
            } catch {
                arena.close(keepSegment: true)
                throw KVDError.failedPrecondition(
                    "cannot adopt shared memory \(a.shmName) left by an earlier kvd: \(error); start with --fresh to replace it (its sequences are lost)")
            }
            let key = FileManager.default.contents(atPath: String(keyPath)).map { [UInt8]($0) }
            let journal = SegmentJournal(recovered.journal, tenant: tenant.name, logger: logger)
            let space = TenantSpace(tenant: tenant, arena: arena, prefix: config.prefix, models: config.models,
                                    journal: journal, prefixKey: key?.count == 16 ? key : nil)
            let ms = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6
            return (space, Recovered(state: recovered.state, holders: holders, report: recovered.recovery, elapsedMs: ms))
        }
        let arena = try fresh()
        let journal: Journal
        do {
            journal = try Journal.create(paths: paths, segmentTag: arena.generation, model: empty, checkpointBytes: d.checkpointBytes)
        } catch {
            arena.close()
            throw KVDError.internalError("durability: cannot start the journal \(paths.journal): \(error.message); check durability.directory")
        }
        // The block-hash key outlives this process with the segment, so cached blocks still match
        // after a restart (a configured prefix.key_file takes precedence).
        var key = [UInt8](repeating: 0, count: 16)
        for i in key.indices { key[i] = UInt8.random(in: 0...255) }
        if !FileManager.default.createFile(atPath: String(keyPath), contents: Data(key), attributes: [.posixPermissions: 0o600]) {
            logger.warning("durability: cannot write \(keyPath); cached prefix blocks will not match after a restart")
        }
        let space = TenantSpace(tenant: tenant, arena: arena, prefix: config.prefix, models: config.models,
                                journal: SegmentJournal(journal, tenant: tenant.name, logger: logger), prefixKey: key)
        return (space, nil)
    }

    /// Files a durable segment keeps next to it, removed when the segment goes for good.
    static func removeFiles(_ space: TenantSpace) {
        guard let j = space.journal?.journal else { return }
        j.removeFiles()
        try? FileManager.default.removeItem(atPath: String(j.paths.journal.dropLast(".journal".count)) + ".prefix-key")
    }
}
