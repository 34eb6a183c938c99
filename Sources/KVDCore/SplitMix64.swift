/// SplitMix64 (Steele, Lea & Flood 2014): a tiny, fast, seedable generator. Seeded methods (such as
/// BalanceKV's random walk) need the same stream for the same seed on every machine, which the
/// system generator does not give; tests and benchmarks use it for reproducible data.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    public var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in [-1, 1), from the top 24 bits (every value exactly representable as Float).
    public mutating func nextSignedUnit() -> Float { Float(next() >> 40) / Float(1 << 23) - 1 }
}
