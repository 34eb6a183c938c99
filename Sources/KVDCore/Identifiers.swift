/// Typed ids, so a page index is never passed where a sequence id is expected.

/// Index of a page in the arena (0 ..< pageCount).
public struct PageID: Hashable, Comparable, Sendable, CustomStringConvertible {
    public let raw: UInt32
    public init(_ raw: UInt32) { self.raw = raw }
    public static func < (a: PageID, b: PageID) -> Bool { a.raw < b.raw }
    public var description: String { "page \(raw)" }
}

/// A sequence's id as clients see it; never 0 (0 means "let the server choose").
public struct SequenceID: Hashable, Sendable, CustomStringConvertible {
    public let raw: UInt64
    public init(_ raw: UInt64) { self.raw = raw }
    public var description: String { "sequence \(raw)" }
}

/// Names an open zero-copy reservation of one sequence.
public struct ReservationID: Hashable, Sendable, CustomStringConvertible {
    public let raw: UInt64
    public init(_ raw: UInt64) { self.raw = raw }
    public var description: String { "reservation \(raw)" }
}
