import Synchronization

/// First-fit allocator of contiguous byte ranges inside the staging area, where Query gathers land.
/// Free ranges are kept sorted and merged with their neighbours on free, so fragmentation stays
/// bounded by the number of live buffers (one per sequence at most).
public final class RangeAllocator: Sendable {
    /// Every range starts on this boundary, so gathered f32 rows stay aligned for SIMD readers.
    public static let alignment = 64

    private struct State {
        var free: [Range<Int>]
        var used: [Int: Int]  // start → length
    }

    private let state: Mutex<State>
    public let capacity: Int

    public init(capacity: Int) {
        self.capacity = capacity
        state = Mutex(State(free: capacity > 0 ? [0..<capacity] : [], used: [:]))
    }

    public var usedBytes: Int { state.withLock { $0.used.values.reduce(0, +) } }

    /// A range of at least `bytes` bytes, as an offset inside the staging area.
    public func allocate(_ bytes: Int) throws(KVDError) -> Range<Int> {
        let size = max(Self.alignment, (bytes + Self.alignment - 1) / Self.alignment * Self.alignment)
        let found: Range<Int>? = state.withLock { s in
            guard let i = s.free.firstIndex(where: { $0.count >= size }) else { return nil }
            let r = s.free[i]
            let taken = r.lowerBound..<(r.lowerBound + size)
            if r.count == size { s.free.remove(at: i) } else { s.free[i] = taken.upperBound..<r.upperBound }
            s.used[taken.lowerBound] = size
            return taken
        }
        guard let found else {
            throw .resourceExhausted(
                "staging area full: no \(size) contiguous bytes free of \(capacity) (\(usedBytes) in use); "
                    + "release sequences, query fewer layers, use pages mode, or raise arena.staging_bytes")
        }
        return found
    }

    /// Returns a range from `allocate`.
    public func free(_ range: Range<Int>) {
        state.withLock { s in
            guard let size = s.used.removeValue(forKey: range.lowerBound) else {
                preconditionFailure("staging free of unknown range \(range)")
            }
            var r = range.lowerBound..<(range.lowerBound + size)
            let i = s.free.firstIndex(where: { $0.lowerBound > r.lowerBound }) ?? s.free.count
            if i < s.free.count, s.free[i].lowerBound == r.upperBound {
                r = r.lowerBound..<s.free[i].upperBound
                s.free.remove(at: i)
            }
            if i > 0, s.free[i - 1].upperBound == r.lowerBound {
                s.free[i - 1] = s.free[i - 1].lowerBound..<r.upperBound
            } else {
                s.free.insert(r, at: i)
            }
        }
    }
}
