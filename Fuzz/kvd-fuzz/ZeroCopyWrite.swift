import Foundation
import KVDCore
import KVDProtocol

/// The program's zero-copy client: writes K/V into the slots of the input's open reservation,
/// where the Reserve reply says they are (docs/PROTOCOL.md, "Appending"). The reply is checked on
/// the way: a page outside the arena, a slot outside its page, pages that do not cover the
/// reservation or a page of the victim would make a real client write over someone else's data.
extension Harness {
    func writeReserved(_ r: inout ByteReader) {
        guard let (id, reply) = session.reserved else { return }
        let m = model(of: id)
        let fill = r.pick([TensorBytes.Fill.pattern, .pattern, .zeros, .nan, .infinity, .huge, .mixed])
        let seed = UInt64(r.u8())
        guard let base = core.segment.baseAddress else { return }
        let pageBytes = Int(shm.pageBytes)
        for head in reply.heads where !head.aliased {
            let pages = stride(from: 0, to: head.pageIds.count, by: 4).map { i in
                head.pageIds[head.pageIds.startIndex + i..<head.pageIds.startIndex + i + 4].reversed().reduce(0) { $0 << 8 | Int($1) }
            }
            var slot = Int(head.firstSlot)
            var left = Int(reply.numTokens)
            for page in pages {
                guard page < Int(shm.pageCount), !victimPages.contains(page), slot < m.pageTokens, left > 0 else {
                    fatalError("reserve reply for sequence \(id): page \(page) (slot \(slot), \(left) tokens left) is not a free page of the arena")
                }
                let n = min(m.pageTokens - slot, left)
                let start = base + Int(shm.pagesOffset) + page * pageBytes + slot * m.tokenBytes
                for (offset, part) in [(0, UInt64(0)), (m.pageTokens * m.tokenBytes, 1)] {
                    let bytes = TensorBytes.make(n * m.headDim, m.dtype, fill: fill, seed: seed &+ part &+ UInt64(page) << 8)
                    bytes.withUnsafeBytes { (start + offset).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
                }
                left -= n
                slot = 0
            }
            guard left == 0 else { fatalError("reserve reply for sequence \(id): pages cover \(Int(reply.numTokens) - left) of \(reply.numTokens) tokens") }
        }
    }
}
