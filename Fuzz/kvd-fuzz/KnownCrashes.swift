import Foundation
import KVDProtocol

/// KVD_FUZZ_SKIP_KNOWN=1: requests that would hit a crash already reported (a reproducer in
/// Fuzz/crashes-found) are not sent, so a long run spends its time finding new ones instead of the
/// same one again. Off by default — CI must fail while they crash. Delete a pattern once its fix
/// has landed (its reproducer then passes in scripts/fuzz.sh).
enum KnownCrashes {
    /// Also turns off `Invariants.compaction`: its known failure (a NaN score makes top-k keep
    /// nothing, knorm-nan-key-keeps-nothing.bin) depends on K/V bytes stored earlier, which a
    /// pattern on one request cannot see.
    static let enabled = ProcessInfo.processInfo.environment["KVD_FUZZ_SKIP_KNOWN"] == "1"

    /// The known crash `request` would hit, if any.
    static func match(_ request: Kvd_V1_Request) -> String? {
        guard case .compact(let c)? = request.body else { return nil }
        // observation-shm-offset-overflow.bin: `offset + bytes` overflows in ObservationParser.
        if case .queriesShm(let s)? = c.observation, s.offset >= 1 << 63 { return "queries_shm offset overflow" }
        // headkv-scores-*.bin: score files whose mean is infinite or whose grid size overflows.
        let files = ["scores-huge.json", "scores-big-index.json"]
        if c.params.contains(where: { $0.name == "scores" && files.contains($0.stringValue) }) { return "headkv score file" }
        // headkv-temperature-weights-infinite.bin: importance^temperature overflows to infinity.
        if c.params.contains(where: { $0.name == "temperature" && $0.floatValue >= 100 }) { return "headkv temperature" }
        return nil
    }
}
