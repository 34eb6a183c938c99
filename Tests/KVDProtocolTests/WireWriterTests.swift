import Foundation
import KVDProtocol
import SwiftProtobuf
import Testing

/// The hand-written encoder against SwiftProtobuf: what it writes must decode to the message it
/// stands for, and its size arithmetic must match what it writes.
@Suite struct WireWriterTests {
    @Test(arguments: [UInt64(0), 1, 127, 128, 300, 16_383, 16_384, 1 << 35, UInt64.max])
    func varintSizesMatchWhatIsWritten(_ v: UInt64) {
        let w = WireWriter(capacity: 16)
        w.varint(v)
        #expect(w.count == WireWriter.Size.varint(v))
        // The same number through SwiftProtobuf: field 1 of a message with a uint64 in field 1.
        var m = Kvd_V1_StatsRequest()
        m.sequenceID = v
        let reference: [UInt8] = (try? m.serializedBytes()) ?? []
        if v != 0 { #expect(Array(reference.dropFirst()) == w.body) }
    }

    @Test func handWrittenHeadViewDecodesToTheSameMessage() throws {
        let positions: [Int32] = [0, 1, 2, 40, 41]
        let weights: [Float] = [0, 0.25, -1, 0, 3]
        let pageIDs: [UInt32] = [7, 0, 9]
        typealias S = WireWriter.Size
        let size = S.uint(1, 3) + S.uint(2, 1) + S.uint(3, 5) + S.bytes(4, count: 20) + S.bytes(5, count: 20)
            + S.bytes(11, count: 12) + S.uint(12, 1) + S.uint(13, 2)
        let headroom = 16
        let w = WireWriter(capacity: headroom + S.uint(1, 9) + S.bytes(6, count: size), headroom: headroom)
        w.uint(1, 9)
        w.lengthDelimited(6, length: size)
        w.uint(1, 3)
        w.uint(2, 1)
        w.uint(3, 5)
        w.bytes(4, count: 20) { p in for (i, x) in positions.enumerated() { p.storeBytes(of: x.littleEndian, toByteOffset: 4 * i, as: Int32.self) } }
        w.bytes(5, count: 20) { p in for (i, x) in weights.enumerated() { p.storeBytes(of: x.bitPattern.littleEndian, toByteOffset: 4 * i, as: UInt32.self) } }
        w.bytes(11, count: 12) { p in for (i, x) in pageIDs.enumerated() { p.storeBytes(of: x.littleEndian, toByteOffset: 4 * i, as: UInt32.self) } }
        w.uint(12, 1)
        w.uint(13, 2)
        #expect(w.count == w.capacity, "the computed size is exactly what was written")

        let decoded = try Kvd_V1_QueryResponse(serializedBytes: w.body)
        var want = Kvd_V1_QueryResponse()
        want.sequenceID = 9
        var h = Kvd_V1_HeadView()
        h.layer = 3
        h.head = 1
        h.numTokens = 5
        h.positions = littleEndianBytes(positions)
        h.logWeights = littleEndianBytes(weights)
        h.pageIds = littleEndianBytes(pageIDs)
        h.aliased = true
        h.ownerLayer = 2
        want.heads = [h]
        #expect(decoded == want)
    }

    @Test func prefixGoesIntoTheHeadroomAndTheBlockHoldsTheWholeMessage() throws {
        let w = WireWriter(capacity: 8 + 2, headroom: 8)
        w.uint(1, 5)
        let header: [UInt8] = try { var r = Kvd_V1_Response(); r.header.requestID = 7; return try r.serializedBytes() }()
        let prefix = header + WireWriter.fieldHeader(15, length: 2)
        #expect(prefix.count <= 8 && w.prepend(prefix))
        let (block, offset, length) = w.take(prefixLength: prefix.count)
        defer { free(block) }
        let message = try Kvd_V1_Response(serializedBytes: Array(UnsafeRawBufferPointer(start: block + offset, count: length)))
        #expect(message.header.requestID == 7 && message.query.sequenceID == 5)
        #expect(!WireWriter(capacity: 4, headroom: 2).prepend([1, 2, 3]), "a prefix larger than the headroom is refused")
    }
}
