import CHiredis
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The bytes of one command on a connected hiredis context's socket, without hiredis' copies.
///
/// Why not `redisCommandArgv` alone: for a multi-megabyte value (an offloaded sequence) hiredis 0.14
/// formats the command into one buffer, appends that to its output buffer (a second copy), and after
/// every partial `write` moves the unsent rest to the front (a copy per write: quadratic in the value's
/// size). Reading, it grows its buffer in 16 KiB reads and 1 MiB steps (a copy per step) and copies the
/// finished string once more into the reply. Those copies were most of a restore's time.
///
/// So kvd sends every command itself with `sendmsg` — small pieces gathered into one header buffer,
/// large arguments straight from their arrays — and reads the first chunk of the reply itself. A bulk
/// string of at least `directBytes` is read straight into an array of its exact size, or with a
/// `ValueSink` into the sink's places (a restore: the pages); anything else is fed to hiredis' reader
/// and completed by `redisGetReply`, so hiredis still parses every reply kvd does not read directly.
///
/// Valid only with a blocking context used synchronously (one command, then its reply), which is how
/// `RedisConnection` uses it: hiredis' output buffer and reader are then empty between commands.
/// Every send and receive is bounded by the socket timeouts `redisSetTimeout` set.
enum RESPWire {
    /// Arguments of at least this many bytes are sent from their own memory rather than copied into
    /// the header buffer; bulk replies this long are read directly.
    static let directBytes = 32 * 1024
    /// The first read of a reply.
    static let chunkBytes = 16 * 1024
    /// Redis' own ceiling for a bulk string (`proto-max-bulk-len` is at most 512 MiB by default); a
    /// declared length above it is a protocol error, not an allocation.
    static let maxBulkBytes = 1 << 30
    /// The largest read into a sink (a fraction of a core's L2 cache).
    static let sunkPieceBytes = 256 * 1024
    /// Vectors per `sendmsg` (Linux' IOV_MAX, which Glibc does not export to Swift).
    static let maxVectors = 1024

    typealias Failure = Hiredis.Failure

    // MARK: - Sending

    /// Sends `args` as one RESP array of bulk strings. Large arguments are not copied.
    static func send(fd: Int32, _ args: [[UInt8]]) throws(Failure) {
        var header: [UInt8] = []
        header.reserveCapacity(64 + args.count * 16)
        // The command's pieces in order: a range of `header`, or an argument sent from its own array.
        enum Piece { case header(Range<Int>), argument(Int) }
        var pieces: [Piece] = []
        var start = 0
        func text(_ s: String) { header.append(contentsOf: s.utf8) }
        text("*\(args.count)\r\n")
        for (i, a) in args.enumerated() {
            text("$\(a.count)\r\n")
            if a.count >= directBytes {
                pieces.append(.header(start..<header.count))
                pieces.append(.argument(i))
                start = header.count
            } else {
                header.append(contentsOf: a)
            }
            text("\r\n")
        }
        pieces.append(.header(start..<header.count))
        let direct = pieces.compactMap { if case .argument(let i) = $0 { i } else { nil } }

        var failure: Failure?
        header.withUnsafeBytes { h in
            withPinned(args, direct) { pinned in
                var vectors: [iovec] = []
                vectors.reserveCapacity(pieces.count)
                for p in pieces {
                    switch p {
                    case .header(let r) where !r.isEmpty:
                        vectors.append(iovec(iov_base: UnsafeMutableRawPointer(mutating: h.baseAddress! + r.lowerBound), iov_len: r.count))
                    case .header: break
                    case .argument(let i):
                        vectors.append(iovec(iov_base: UnsafeMutableRawPointer(mutating: pinned[i]!), iov_len: args[i].count))
                    }
                }
                do throws(Failure) { try sendAll(fd: fd, &vectors) } catch { failure = error }
            }
        }
        if let failure { throw failure }
    }

    /// Runs `body` with the base address of every argument in `indices` valid (nil elsewhere). The
    /// recursion keeps each array's storage pinned while `body` runs; commands have few large arguments.
    private static func withPinned(_ args: [[UInt8]], _ indices: [Int], _ body: ([UnsafeRawPointer?]) -> Void) {
        var addresses = [UnsafeRawPointer?](repeating: nil, count: args.count)
        func pin(_ k: Int) {
            if k == indices.count { return body(addresses) }
            args[indices[k]].withUnsafeBytes { b in
                addresses[indices[k]] = b.baseAddress  // non-nil: a direct argument is not empty
                pin(k + 1)
            }
        }
        pin(0)
    }

    /// `sendmsg` until every byte of `vectors` is out. MSG_NOSIGNAL: a node that closed the connection
    /// makes the send fail with EPIPE instead of raising SIGPIPE, which would kill kvd.
    private static func sendAll(fd: Int32, _ vectors: inout [iovec]) throws(Failure) {
        var first = 0
        while first < vectors.count {
            let batch = min(vectors.count - first, maxVectors)
            let sent: Int = vectors.withUnsafeMutableBufferPointer { v in
                var message = msghdr()
                message.msg_iov = v.baseAddress! + first
                message.msg_iovlen = batch
                return sendmsg(fd, &message, Int32(MSG_NOSIGNAL))
            }
            if sent < 0 {
                let e = errno
                if e == EINTR { continue }
                throw ioFailure("sending the command", e)
            }
            // Skip what went out; a partly sent vector continues where it stopped.
            var left = sent
            while left > 0 {
                let n = vectors[first].iov_len
                if left >= n {
                    left -= n
                    first += 1
                } else {
                    vectors[first].iov_base = vectors[first].iov_base! + left
                    vectors[first].iov_len = n - left
                    left = 0
                }
            }
            while first < vectors.count && vectors[first].iov_len == 0 { first += 1 }
        }
    }

    // MARK: - Receiving

    /// Reads one reply. A large bulk string comes back as `.bulk` (read directly); anything else was
    /// handed to hiredis, and `.hiredis` is its reply object (the caller frees it).
    enum Received {
        case bulk([UInt8])
        /// A large bulk string of this length went into the sink.
        case sunk(Int)
        case hiredis(UnsafeMutableRawPointer)
    }

    static func receive(_ c: UnsafeMutablePointer<redisContext>, into sink: ValueSink? = nil) throws(Failure) -> Received {
        let fd = c.pointee.fd
        var chunk = [UInt8](repeating: 0, count: chunkBytes)
        let got: Result<Int, Failure> = chunk.withUnsafeMutableBytes { b in
            do throws(Failure) { return .success(try readSome(fd: fd, into: [b], "reading the reply")) } catch { return .failure(error) }
        }
        let n = try got.get()
        if let (length, headerEnd) = largeBulkHeader(chunk[..<n]) {
            if let sink {
                try readBulk(fd: fd, length: length, first: chunk[headerEnd..<n], into: sink)
                return .sunk(length)
            }
            return .bulk(try readBulk(fd: fd, length: length, first: chunk[headerEnd..<n]))
        }
        let fed = chunk.withUnsafeBytes { b in
            redisReaderFeed(c.pointee.reader, b.baseAddress!.assumingMemoryBound(to: CChar.self), n)
        }
        guard fed == REDIS_OK else { throw Failure(kind: .protocol, what: "hiredis' reader refused the reply's first bytes") }
        var reply: UnsafeMutableRawPointer?
        let savedErrno: Int32
        if redisGetReply(c, &reply) != REDIS_OK || reply == nil {
            savedErrno = errno
            throw Hiredis.contextFailure(c, errno: savedErrno)
        }
        return .hiredis(reply!)
    }

    /// The declared length and header size when `bytes` starts with a complete `$<len>\r\n` header of
    /// a bulk string of at least `directBytes`; nil for every other reply (hiredis reads those). A
    /// length that is not a plain decimal, or above `maxBulkBytes`, is also left to hiredis, which
    /// reports it as a protocol error.
    static func largeBulkHeader(_ bytes: ArraySlice<UInt8>) -> (length: Int, headerEnd: Int)? {
        guard bytes.first == UInt8(ascii: "$") else { return nil }
        var length = 0
        var i = bytes.startIndex + 1
        while i < bytes.endIndex, bytes[i] >= UInt8(ascii: "0"), bytes[i] <= UInt8(ascii: "9") {
            length = length * 10 + Int(bytes[i] - UInt8(ascii: "0"))
            if length > maxBulkBytes { return nil }
            i += 1
        }
        guard i > bytes.startIndex + 1, i + 1 < bytes.endIndex, bytes[i] == UInt8(ascii: "\r"), bytes[i + 1] == UInt8(ascii: "\n"),
              length >= directBytes else { return nil }
        return (length, i + 2)
    }

    /// The rest of a bulk string of `length` bytes whose first bytes (and maybe its trailing CRLF)
    /// are `first`: read straight into an array of its exact size, then the CRLF is checked.
    private static func readBulk(fd: Int32, length: Int, first: ArraySlice<UInt8>) throws(Failure) -> [UInt8] {
        let total = length + 2  // the value, then \r\n
        guard first.count <= total else {
            throw Failure(kind: .protocol, what: "\(first.count - total) bytes after a reply nobody asked for")
        }
        // Uninitialized: zeroing megabytes the socket overwrites at once would cost as much as a read.
        var failure: Failure?
        var value = [UInt8](unsafeUninitializedCapacity: total) { buffer, count in
            let raw = UnsafeMutableRawBufferPointer(buffer)
            first.withUnsafeBytes { raw.copyMemory(from: $0) }
            var have = first.count
            while have < total {
                do throws(Failure) {
                    have += try readSome(fd: fd, into: [UnsafeMutableRawBufferPointer(rebasing: raw[have...])], "reading a \(length)-byte value")
                } catch {
                    failure = error
                    break
                }
            }
            count = failure == nil ? total : 0
        }
        if let failure { throw failure }
        try checkEnd(fd: fd, length: length, crlf: value[length...])
        value.removeLast(2)
        return value
    }

    /// The rest of a bulk string of `length` bytes, read straight into `sink`'s destinations (at
    /// most `sunkPieceBytes` per read, so what the sink does with each piece finds it in cache).
    private static func readBulk(fd: Int32, length: Int, first: ArraySlice<UInt8>, into sink: ValueSink) throws(Failure) {
        guard first.count <= length + 2 else {
            throw Failure(kind: .protocol, what: "\(first.count - length - 2) bytes after a reply nobody asked for")
        }
        sink.begin(length: length)
        let early = min(first.count, length)
        first.prefix(early).withUnsafeBytes { sink.copy($0) }
        var have = early
        while have < length {
            let destinations = sink.next(limit: min(length - have, sunkPieceBytes))
            let n = try readSome(fd: fd, into: destinations, "reading a \(length)-byte value")
            sink.landed(n)
            have += n
        }
        var crlf = Array(first.dropFirst(early))
        let two = UnsafeMutableRawBufferPointer.allocate(byteCount: 2, alignment: 1)
        defer { two.deallocate() }
        while crlf.count < 2 {
            let n = try readSome(fd: fd, into: [UnsafeMutableRawBufferPointer(rebasing: two[..<(2 - crlf.count)])],
                                 "reading the end of a \(length)-byte value")
            crlf += two.prefix(n)
        }
        try checkEnd(fd: fd, length: length, crlf: crlf[...])
    }

    /// The CRLF after a bulk string, and nothing behind it.
    private static func checkEnd(fd: Int32, length: Int, crlf: ArraySlice<UInt8>) throws(Failure) {
        guard crlf.elementsEqual([UInt8(ascii: "\r"), UInt8(ascii: "\n")]) else {
            throw Failure(kind: .protocol, what: "a \(length)-byte bulk string not followed by CRLF")
        }
        // One command, one reply: bytes already waiting behind it would be taken for the next
        // command's reply. (hiredis has the same blind spot for bytes that come later.)
        var stray: UInt8 = 0
        if recv(fd, &stray, 1, Int32(MSG_PEEK | MSG_DONTWAIT)) > 0 {
            throw Failure(kind: .protocol, what: "bytes after a \(length)-byte reply nobody asked for")
        }
    }

    /// One `readv` into `buffers` (filled in order): how many bytes came (at least one).
    private static func readSome(fd: Int32, into buffers: [UnsafeMutableRawBufferPointer], _ what: String) throws(Failure) -> Int {
        var vectors = buffers.prefix(maxVectors).map { iovec(iov_base: $0.baseAddress, iov_len: $0.count) }
        while true {
            let n = readv(fd, &vectors, Int32(vectors.count))
            if n > 0 { return n }
            if n == 0 {
                throw Failure(kind: .unavailable, what: "connection closed by the server while \(what): the node crashed, restarted or dropped the client")
            }
            let e = errno
            if e != EINTR { throw ioFailure(what, e) }
        }
    }

    private static func ioFailure(_ what: String, _ e: Int32) -> Failure {
        if e == EAGAIN || e == EWOULDBLOCK {
            return Failure(kind: .unavailable, what: "no progress \(what) within the command timeout: the node is stopped, overloaded or unreachable")
        }
        return Failure(kind: .unavailable, what: "I/O error \(what): \(String(cString: strerror(e)))")
    }
}
