/// Names one block (one page's worth of tokens) of a prompt by everything before it: the hash of
/// (parent block's hash, this block's token ids, model, tenant salt) under a 128-bit SipHash-2-4
/// key. Chained like vLLM's block hashes, so equal hashes mean equal token prefixes (up to a 2^-128
/// accident), a different token changes its block's hash and every later one, and a block is never
/// reused across models or tenants with different salts. The key is the daemon's (config, or random
/// per start): without it nobody can predict or collide hashes. See docs/PREFIX.md.
public struct PrefixHash: Sendable, Hashable, CustomStringConvertible {
    public let lo: UInt64
    public let hi: UInt64
    public init(lo: UInt64, hi: UInt64) {
        self.lo = lo
        self.hi = hi
    }

    /// Parent of block 0.
    public static let root = PrefixHash(lo: 0, hi: 0)

    /// 32 hex digits, the 16 output bytes in order (as the reference prints them).
    public var description: String {
        let bytes = (0..<8).map { UInt8(truncatingIfNeeded: lo >> (8 * UInt64($0))) }
            + (0..<8).map { UInt8(truncatingIfNeeded: hi >> (8 * UInt64($0))) }
        return bytes.map { String($0, radix: 16).count == 1 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined()
    }
}

/// Computes block hashes for one (key, model, tenant salt).
///
/// Message of one block, all integers little-endian, every variable part length-prefixed so no two
/// different inputs encode the same: "kvd-prefix-v1" · parent (lo, hi: 8 + 8 bytes) · model byte
/// count (u32) · model UTF-8 · salt byte count (u32) · salt · token count (u32) · token ids (u32 each).
public struct PrefixHasher: Sendable {
    public let key: SipKey
    /// Everything after the parent and before the tokens: the same for every block.
    private let context: [UInt8]
    private static let domain = Array("kvd-prefix-v1".utf8)
    /// Model names and salts come from config; longer ones are refused rather than truncated.
    public static let maxContextBytes = 4096

    public init(key: SipKey, model: String, tenantSalt: [UInt8]) throws(KVDError) {
        let name = Array(model.utf8)
        guard name.count <= Self.maxContextBytes, tenantSalt.count <= Self.maxContextBytes else {
            throw .invalidArgument("prefix hashing: model name and tenant salt must be at most \(Self.maxContextBytes) bytes each")
        }
        self.key = key
        context = Self.u32(name.count) + name + Self.u32(tenantSalt.count) + tenantSalt
    }

    /// The hash of one block whose parent block hashed to `parent` (`PrefixHash.root` for block 0).
    public func hash(parent: PrefixHash, tokens: some Collection<UInt32>) -> PrefixHash {
        var m = Self.domain
        m.reserveCapacity(Self.domain.count + 16 + context.count + 4 + 4 * tokens.count)
        m += Self.u64(parent.lo) + Self.u64(parent.hi)
        m += context
        m += Self.u32(tokens.count)
        for t in tokens { m += Self.u32(Int(t)) }
        let (lo, hi) = SipHash.hash128(m, key: key)
        return PrefixHash(lo: lo, hi: hi)
    }

    /// Hashes of every whole block of `blockTokens` tokens in `tokens`, block 0 first; a trailing
    /// partial block has none (only full pages are ever shared).
    public func chain(tokens: [UInt32], blockTokens: Int) -> [PrefixHash] {
        precondition(blockTokens > 0)
        var out: [PrefixHash] = []
        out.reserveCapacity(tokens.count / blockTokens)
        var parent = PrefixHash.root
        var start = 0
        while tokens.count - start >= blockTokens {
            parent = hash(parent: parent, tokens: tokens[start..<(start + blockTokens)])
            out.append(parent)
            start += blockTokens
        }
        return out
    }

    private static func u32(_ n: Int) -> [UInt8] {
        guard let v = UInt32(exactly: n) else { preconditionFailure("\(n) does not fit a u32 length") }
        return (0..<4).map { UInt8(truncatingIfNeeded: v >> (8 * UInt32($0))) }
    }

    private static func u64(_ v: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: v >> (8 * UInt64($0))) } }
}
