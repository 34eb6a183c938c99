extension SequenceBlob {
    /// A blob restored into pages while it arrives: the store's reply is read from the socket
    /// straight into the pages (`next` gives the reader each piece's place; the remote tier's
    /// `ValueSink`), so the K/V is never copied once more in memory.
    ///
    /// The header and meta come first (format version 2) and go into a small buffer. Once they are
    /// in and check out, every head's size is known and the pages are taken at once (`allocate`,
    /// which may make room); from then on each K/V byte has its place: its head's K (then V) slots,
    /// page by page. Each piece that lands is checksummed at once, while it is in cache. Nothing is
    /// visible to anyone until `finish` has checked the whole blob — its length, its checksum, its
    /// id — and built the sequence. A blob that fails a check gives its pages back, and the rest of
    /// the reply is read into a scratch buffer so the connection stays in step.
    ///
    /// Not Sendable: fed on one thread (the remote tier's queue, while the GET runs), then finished
    /// on the worker that waited for that GET.
    public final class Arrival {
        public enum Failure: Error {
            /// Not a blob this daemon can restore (cut, corrupted, another model, another version).
            case unusable(DurableFormatError)
            /// The pages could not be taken (the memory manager could not make room).
            case noRoom(KVDError)
        }

        private let layouts: (String) -> ModelLayout?
        private let allocate: (Int) throws(KVDError) -> [PageID]
        private let release: ([PageID]) -> Void
        private let memory: PageMemory

        /// The value's length, as the reply declared it.
        private var length = 0
        /// Bytes landed so far.
        private var received = 0
        /// The header and meta bytes: `frontFilled` of `front.count` so far.
        private var front = UnsafeMutableRawBufferPointer.allocate(byteCount: headerBytes, alignment: 8)
        private var frontFilled = 0
        private var header: Header?
        private var meta: Meta?
        /// Each head's pages, once taken.
        private var pages: [[PageID]] = []
        /// Where the next K/V byte goes: its head and its offset in that head's K-then-V bytes.
        private var head = 0
        private var byteInHead = 0
        /// The destinations `next` gave last, for `landed` to walk.
        private var given: [UnsafeMutableRawBufferPointer] = []
        private var sum = XXHash64.Stream()
        private var failure: Failure?
        /// Where the rest of a reply goes once the blob has failed.
        private lazy var scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 * 1024, alignment: 8)
        private var hasScratch = false

        public init(layouts: @escaping (String) -> ModelLayout?, allocate: @escaping (Int) throws(KVDError) -> [PageID],
                    release: @escaping ([PageID]) -> Void, memory: PageMemory) {
            self.layouts = layouts
            self.allocate = allocate
            self.release = release
            self.memory = memory
        }

        deinit {
            giveBack()
            front.deallocate()
            if hasScratch { scratch.deallocate() }
        }

        // MARK: - Fed by the reader

        /// A value of `length` bytes starts (again: whatever arrived before is forgotten).
        public func begin(length: Int) {
            abandon()
            self.length = length
        }

        /// Places for the next bytes, at most `limit` of them in all (at least one byte).
        public func next(limit: Int) -> [UnsafeMutableRawBufferPointer] {
            precondition(limit > 0, "next(limit:) needs room for at least one byte")
            if failure != nil {
                hasScratch = true
                given = [UnsafeMutableRawBufferPointer(rebasing: scratch[..<min(limit, scratch.count)])]
            } else if let m = meta {
                given = kvPlaces(m, limit: limit)
            } else {
                let want = (header.map { headerBytes + $0.metaBytes } ?? headerBytes) - frontFilled
                given = [UnsafeMutableRawBufferPointer(rebasing: front[frontFilled..<(frontFilled + min(want, limit))])]
            }
            return given
        }

        /// `count` bytes landed in the places `next` gave, filling them in order.
        public func landed(_ count: Int) {
            received += count
            guard failure == nil else { return }
            // The checksum covers the payload: everything after the 32-byte header.
            var left = count
            var offset = received - count
            for place in given where left > 0 {
                let n = min(place.count, left)
                let skip = max(0, headerBytes - offset)
                if skip < n { sum.update(UnsafeRawBufferPointer(rebasing: place[skip..<n])) }
                offset += n
                left -= n
            }
            if meta == nil { frontLanded(count) } else { advanceKV(count) }
        }

        /// Bytes already in memory, as one read of that many bytes would land them (a blob taken
        /// whole; tests and the fuzzer, which cut a blob into reads of chosen sizes).
        public func arrive(_ bytes: UnsafeRawBufferPointer) {
            var at = 0
            while at < bytes.count {
                var n = 0
                for place in next(limit: bytes.count - at) {
                    place.baseAddress!.copyMemory(from: bytes.baseAddress! + at + n, byteCount: place.count)
                    n += place.count
                }
                landed(n)
                at += n
            }
        }

        // MARK: - Header and meta

        private func frontLanded(_ count: Int) {
            frontFilled += count
            do throws(DurableFormatError) {
                if header == nil, frontFilled == headerBytes {
                    let h = try Header(Array(front))
                    header = h
                    let bigger = UnsafeMutableRawBufferPointer.allocate(byteCount: headerBytes + h.metaBytes, alignment: 8)
                    bigger.copyMemory(from: UnsafeRawBufferPointer(front))
                    front.deallocate()
                    front = bigger
                }
                if let h = header, meta == nil, frontFilled == headerBytes + h.metaBytes {
                    let m = try Meta(Array(front), header: h, layouts: layouts)
                    meta = m
                    takePages(m)
                }
            } catch {
                fail(.unusable(error))
            }
        }

        private func takePages(_ m: Meta) {
            let need = m.image.heads.map { HeadCache.pagesNeeded($0.count, pageTokens: m.layout.pageTokens) }
            do throws(KVDError) {
                var fresh = try allocate(need.reduce(0, +))[...]
                pages = need.map { n in
                    defer { fresh = fresh.dropFirst(n) }
                    return Array(fresh.prefix(n))
                }
            } catch {
                fail(.noRoom(error))
            }
            skipEmptyHeads()
        }

        // MARK: - K/V into pages

        /// The next K/V places from the cursor on: runs of slots in one page of one head's K (or V),
        /// up to `limit` bytes in all.
        private func kvPlaces(_ m: Meta, limit: Int) -> [UnsafeMutableRawBufferPointer] {
            var places: [UnsafeMutableRawBufferPointer] = []
            var h = head
            var b = byteInHead
            var left = limit
            while left > 0 && h < pages.count && places.count < 1024 {
                let (place, end) = kvPlace(m, head: h, byte: b, limit: left)
                places.append(place)
                left -= place.count
                b += place.count
                if end {
                    h += 1
                    b = 0
                    while h < m.image.heads.count && m.image.heads[h].count == 0 { h += 1 }
                }
            }
            if places.isEmpty {
                // The meta matched the header's length, so the reader never asks past the last head;
                // if it did, the bytes are refused into scratch.
                fail(.unusable(DurableFormatError("blob has bytes past its last head")))
                return next(limit: limit)
            }
            return places
        }

        /// The place of head `h`'s byte `b` (of its K then V bytes): to the end of its page's slots
        /// or of its K (or V), at most `limit` bytes; and whether it ends the head.
        private func kvPlace(_ m: Meta, head h: Int, byte b: Int, limit: Int) -> (UnsafeMutableRawBufferPointer, Bool) {
            let layout = m.layout
            let tokenBytes = layout.tokenBytes
            let count = m.image.heads[h].count
            let half = count * tokenBytes
            let isValue = b >= half
            let inHalf = isValue ? b - half : b
            let token = inHalf / tokenBytes
            let slot = token % layout.pageTokens
            let page = pages[h][token / layout.pageTokens]
            let room = min(layout.pageTokens - slot, count - token) * tokenBytes - inHalf % tokenBytes
            let n = min(room, limit)
            let base = (isValue ? memory.value(page, slot: slot, layout) : memory.key(page, slot: slot, layout)) + inHalf % tokenBytes
            return (UnsafeMutableRawBufferPointer(start: base, count: n), b + n == 2 * half)
        }

        private func advanceKV(_ count: Int) {
            guard let m = meta else { return }
            var left = count
            while left > 0 && head < m.image.heads.count {
                let n = min(left, 2 * m.image.heads[head].count * m.layout.tokenBytes - byteInHead)
                byteInHead += n
                left -= n
                if byteInHead == 2 * m.image.heads[head].count * m.layout.tokenBytes {
                    head += 1
                    byteInHead = 0
                    skipEmptyHeads()
                }
            }
        }

        /// Heads without tokens (an aliased layer's, an emptied one) have no K/V bytes.
        private func skipEmptyHeads() {
            guard let m = meta else { return }
            while head < m.image.heads.count && m.image.heads[head].count == 0 { head += 1 }
        }

        // MARK: - Outcome

        private func fail(_ f: Failure) {
            if failure == nil { failure = f }
            giveBack()
        }

        private func giveBack() {
            let taken = pages.flatMap { $0 }
            if !taken.isEmpty { release(taken) }
            pages = []
        }

        /// Gives back any pages taken and forgets what arrived (the fetch failed, or starts over).
        public func abandon() {
            giveBack()
            length = 0
            received = 0
            frontFilled = 0
            header = nil
            meta = nil
            head = 0
            byteInHead = 0
            given = []
            sum = XXHash64.Stream()
            failure = nil
        }

        /// Checks the whole blob (all of it arrived, its checksum, that it holds sequence `id`) and
        /// returns it as sequence `id` in its pages; on any failure the pages are given back.
        public func finish(id: SequenceID, tenant: String) -> Result<KVSequence, Failure> {
            if let failure { return .failure(failure) }
            guard let header, let meta, received == length, UInt64(received - headerBytes) == header.payloadBytes else {
                fail(.unusable(DurableFormatError("blob cut short (\(received) of \(length) bytes arrived)")))
                return .failure(failure!)
            }
            guard sum.digest() == header.checksum else {
                fail(.unusable(DurableFormatError("blob checksum mismatch (corrupted)")))
                return .failure(failure!)
            }
            guard meta.image.id == id.raw else {
                fail(.unusable(DurableFormatError("the copy under its key holds sequence \(meta.image.id)")))
                return .failure(failure!)
            }
            var restored = meta.image
            restored.id = id.raw
            for h in restored.heads.indices { restored.heads[h].pages = pages[h] }
            pages = []  // the sequence owns them now
            return .success(KVSequence(restoring: restored, layout: meta.layout, tenant: tenant))
        }
    }
}
