import KVDProtocol

/// Compaction parameters for the fuzz program: every name a built-in method takes (and one none
/// does), each with values of every wire type, valid ones and the edges of their ranges.
enum Params {
    static let names = [
        "budget", "sinks", "recent", "fraction", "window", "pooling", "kernel", "beta", "floor", "scores", "temperature",
        "aggregate", "threshold", "itrs", "block", "gamma", "tau", "seed", "variant", "alias_map", "bogus",
    ]
    static let ints: [Int64] = [2, 0, 1, 3, 4, 5, 7, 8, 16, 64, 1000, -1, -2, 1 << 40, Int64(Int32.max), Int64(Int32.max) + 1, .max, .min]
    /// Includes the range ends of the built-in float parameters (0.001, 1000, 1e6, ±1000).
    static let floats: [Double] = [
        0.5, 0, 0.05, 1, 1.01, 2, 20, -1, -0.0, 0.001, 1000, -1000, 1e6, 1e-300, 1e300, .nan, .infinity, -.infinity, Double(Int64.max),
    ]
    /// Pooling and aggregate names, variants, alias maps (valid, self, forward, out of range,
    /// malformed, repeated), head-score files (FuzzFiles), and paths that do not exist, are
    /// directories or devices.
    static let strings = FuzzFiles.names + [
        "avg", "max", "none", "mean", "balanced", "uniform", "1:0", "2:1,1:0", "2:0,1:0", "0:0", "1:1", "2:0", "1:5", "5:1",
        "x:y", "", ":", "1:0,1:0", "1:-1", "4294967296:0", "1:0,", " 1 : 0 ", "missing-scores.json", "/nonexistent/scores.json", ".", "/dev/zero",
    ]

    static func any(_ r: inout ByteReader) -> Kvd_V1_Param {
        var p = Kvd_V1_Param()
        p.name = r.pick(names)
        switch r.u8() % 5 {
        case 0: p.intValue = r.u8() % 4 == 3 ? Int64(bitPattern: r.number()) : r.pick(ints)
        case 1: p.floatValue = r.pick(floats)
        case 2: p.stringValue = r.pick(strings)
        case 3: p.boolValue = r.bool()
        default: break  // no value: INVALID_ARGUMENT
        }
        return p
    }
}
