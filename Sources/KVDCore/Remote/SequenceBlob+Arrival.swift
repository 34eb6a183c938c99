extension SequenceBlob {
    /// A blob restored into pages while it arrives: the store's reply is handed over piece by piece
    /// (a `ValueObserver` of the GET) and each piece of K/V is written into its page while it is in
    /// cache, between two reads from the socket, instead of after the whole reply is in.
    ///
    /// The header and meta come first (format version 2): once they are in and check out, every
    /// head's size is known and the pages are taken at once (`allocate`, which may make room). From
    /// then on each K/V byte has a known place. The checksum runs over every piece as it comes.
    /// Nothing is visible to anyone until `finish` has checked the whole blob — the length, the
    /// checksum — and built the sequence; a blob that fails any check gives its pages back.
    ///
    /// Not Sendable: fed on one thread (the remote tier's queue, while the GET runs), finished on the
    /// worker that waited for it, one after the other.
    public struct Arrival {
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

        /// The header and meta bytes, until the meta is read.
        private var front: [UInt8] = []
        private var header: Header?
        private var meta: Meta?
        /// Each head's pages, once taken.
        private var pages: [[PageID]] = []
        /// Where the next K/V byte goes: its head and its offset in that head's K-then-V bytes.
        private var head = 0
        private var byteInHead = 0
        /// The offset in the blob the next piece must start at.
        private var next = 0
        private var sum = XXHash64.Stream()
        private var failure: Failure?

        public init(layouts: @escaping (String) -> ModelLayout?, allocate: @escaping (Int) throws(KVDError) -> [PageID],
                    release: @escaping ([PageID]) -> Void, memory: PageMemory) {
            self.layouts = layouts
            self.allocate = allocate
            self.release = release
            self.memory = memory
        }

        /// The piece of the blob at `offset` (in order; offset 0 starts over, giving back any pages).
        public mutating func take(_ offset: Int, _ piece: UnsafeRawBufferPointer) {
            if offset == 0 && next != 0 { abandon() }
            guard failure == nil else { return }
            guard offset == next else {
                fail(.unusable(DurableFormatError("blob pieces out of order (\(offset) after \(next) bytes)")))
                return
            }
            next += piece.count
            let skip = max(0, headerBytes - offset)  // the header is not part of the payload
            if skip < piece.count { sum.update(UnsafeRawBufferPointer(rebasing: piece[skip...])) }
            var rest = piece[...]
            if meta == nil { takeFront(&rest) }
            if meta != nil && failure == nil && !rest.isEmpty { copyKV(UnsafeRawBufferPointer(rebasing: rest)) }
        }

        /// Header then meta bytes from the front of `rest`; reads each once it is whole, then takes
        /// the pages.
        private mutating func takeFront(_ rest: inout Slice<UnsafeRawBufferPointer>) {
            while meta == nil && failure == nil && !rest.isEmpty {
                let want = (header.map { headerBytes + $0.metaBytes } ?? headerBytes) - front.count
                let n = min(want, rest.count)
                front.append(contentsOf: rest.prefix(n))
                rest = rest.dropFirst(n)
                guard front.count == (header.map { headerBytes + $0.metaBytes } ?? headerBytes) else { return }
                do throws(DurableFormatError) {
                    if let header {
                        let m = try Meta(front, header: header, layouts: layouts)
                        meta = m
                        front = []
                        takePages(m)
                    } else {
                        header = try Header(front)
                    }
                } catch {
                    fail(.unusable(error))
                }
            }
        }

        private mutating func takePages(_ m: Meta) {
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

        /// K/V bytes into the pages, in blob order: each head's K tokens, then its V tokens, each
        /// token into its page's slot; a run of slots in one page is one copy.
        private mutating func copyKV(_ bytes: UnsafeRawBufferPointer) {
            guard let m = meta else { return }
            let layout = m.layout
            let tokenBytes = layout.tokenBytes
            let pageTokens = layout.pageTokens
            var at = 0
            while at < bytes.count {
                guard head < pages.count else {
                    // Meta checked the K/V length against the header's, so this is bytes past the end.
                    fail(.unusable(DurableFormatError("blob has bytes past its last head")))
                    return
                }
                let count = m.image.heads[head].count
                let half = count * tokenBytes
                let isValue = byteInHead >= half
                let b = isValue ? byteInHead - half : byteInHead
                let token = b / tokenBytes
                let slot = token % pageTokens
                let page = pages[head][token / pageTokens]
                // Up to the end of this page's slots, or of this head's K (or V).
                let room = (min(pageTokens - slot, count - token)) * tokenBytes - b % tokenBytes
                let n = min(room, bytes.count - at)
                let base = isValue ? memory.value(page, slot: slot, layout) : memory.key(page, slot: slot, layout)
                (base + b % tokenBytes).copyMemory(from: bytes.baseAddress! + at, byteCount: n)
                at += n
                byteInHead += n
                if byteInHead == 2 * half {
                    head += 1
                    byteInHead = 0
                    skipEmptyHeads()
                }
            }
        }

        /// Heads without tokens (an aliased layer's, an emptied one) have no K/V bytes.
        private mutating func skipEmptyHeads() {
            guard let m = meta else { return }
            while head < m.image.heads.count && m.image.heads[head].count == 0 { head += 1 }
        }

        private mutating func fail(_ f: Failure) {
            failure = f
            giveBack()
        }

        private mutating func giveBack() {
            let taken = pages.flatMap { $0 }
            if !taken.isEmpty { release(taken) }
            pages = []
        }

        /// Gives back any pages taken and forgets what arrived (the fetch failed, or starts over).
        public mutating func abandon() {
            giveBack()
            self = Arrival(layouts: layouts, allocate: allocate, release: release, memory: memory)
        }

        /// Whether any byte arrived (a blob that came from the offload queue never streams).
        public var started: Bool { next > 0 }

        /// Checks the whole blob of `blobBytes` bytes (all of it arrived, its checksum, that it holds
        /// sequence `id`) and returns it as sequence `id` in its pages; on any failure the pages are
        /// given back.
        public mutating func finish(id: SequenceID, tenant: String, blobBytes: Int) -> Result<KVSequence, Failure> {
            if let failure { return .failure(failure) }
            guard let header, let meta, next == blobBytes, UInt64(next - headerBytes) == header.payloadBytes else {
                fail(.unusable(DurableFormatError("blob cut short (\(next) of \(blobBytes) bytes arrived)")))
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
