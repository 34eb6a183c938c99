import Foundation
import KVDCore
import KVDShm
import Testing

@Suite struct ArenaTests {
    static let model = ModelLayout(name: "m", layers: 2, kvHeads: 2, qHeads: 2, headDim: 8, dtype: .f16, pageTokens: 4, defaultMethod: "x")

    func uniqueName() -> String { "/kvd-unit-\(getpid())-\(UInt32.random(in: 0...UInt32.max))" }
    func shmPath(_ name: String) -> String { "/dev/shm" + name }

    @Test func sizingSplitsTheSegment() throws {
        let s = try ArenaSizing.compute(segmentBytes: 1 << 20, stagingBytes: 10_000, models: [Self.model])
        #expect(s.pageBytes == 128)  // 2 * 4 * 8 * 2 = 128, already a multiple of 64
        #expect(s.stagingBytes == 12_288)  // rounded up to 4 KiB
        #expect(s.pagesOffset == 4096)
        #expect(s.pageCount == ((1 << 20) - 4096 - 12_288) / 128)
        #expect(s.stagingOffset == 4096 + s.pageCount * 128)
        #expect(s.stagingOffset + s.stagingBytes <= 1 << 20)
    }

    @Test func tooSmallForOnePageIsAnError() {
        #expect(throws: KVDError.self) { try ArenaSizing.compute(segmentBytes: 4096 + 127, stagingBytes: 0, models: [Self.model]) }
        #expect(throws: KVDError.self) { try ArenaSizing.compute(segmentBytes: 1 << 20, stagingBytes: 0, models: []) }
        #expect((try? ArenaSizing.compute(segmentBytes: 4096 + 128, stagingBytes: 0, models: [Self.model]))?.pageCount == 1)
    }

    @Test func createsOwnerOnlySegmentWithHeaderAndUnlinksOnClose() throws {
        let name = uniqueName()
        let sizing = try ArenaSizing.compute(segmentBytes: 1 << 20, stagingBytes: 4096, models: [Self.model])
        let arena = try Arena(name: name, sizing: sizing)
        let attrs = try FileManager.default.attributesOfItem(atPath: shmPath(name))
        #expect((attrs[.posixPermissions] as? NSNumber)?.intValue == 0o600)
        #expect((attrs[.size] as? NSNumber)?.intValue == 1 << 20)
        let header = try #require(ArenaHeader.read(from: arena.base))
        #expect(header == arena.header)
        #expect(header.pageCount == UInt32(sizing.pageCount))
        // The header is what a separate mapping of the file sees too.
        let bytes = try Data(contentsOf: URL(fileURLWithPath: shmPath(name)), options: .alwaysMapped)
        #expect(bytes.prefix(8) == Data("KVDARENA".utf8))
        // Pages are usable memory.
        arena.pageMemory.key(PageID(UInt32(sizing.pageCount - 1)), slot: 3, Self.model).storeBytes(of: 0xABCD, as: UInt16.self)
        arena.close()
        #expect(!FileManager.default.fileExists(atPath: shmPath(name)))
    }

    @Test func replacesAStaleSegment() throws {
        let name = uniqueName()
        FileManager.default.createFile(atPath: shmPath(name), contents: Data("stale".utf8))
        let sizing = try ArenaSizing.compute(segmentBytes: 1 << 16, stagingBytes: 0, models: [Self.model])
        let arena = try Arena(name: name, sizing: sizing)
        defer { arena.close() }
        #expect(arena.replacedStale)
        #expect(ArenaHeader.read(from: arena.base) != nil)
    }

    @Test func rejectsBadNames() throws {
        let sizing = try ArenaSizing.compute(segmentBytes: 1 << 16, stagingBytes: 0, models: [Self.model])
        for bad in ["noslash", "/a/b", "/"] {
            #expect(throws: KVDError.self) { try Arena(name: bad, sizing: sizing) }
        }
    }
}

@Suite struct ArenaLockTests {
    @Test func aSegmentServedByALiveArenaIsNotReplaced() throws {
        let name = "/kvd-unit-lock-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let sizing = try ArenaSizing.compute(segmentBytes: 1 << 16, stagingBytes: 0, models: [ArenaTests.model])
        let first = try Arena(name: name, sizing: sizing)
        defer { first.close() }
        do {
            _ = try Arena(name: name, sizing: sizing)
            Issue.record("a second arena replaced a live one")
        } catch {
            #expect(error.code == .failedPrecondition)
            #expect(error.message.contains("in use by another running kvd"))
        }
        // The first arena's segment is still there and intact.
        #expect(ArenaHeader.read(from: first.base) == first.header)
    }
}
