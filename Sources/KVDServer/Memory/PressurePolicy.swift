import KVDConfig
import KVDCore
import KVDPluginAPI
import KVDPluginHost

/// Which method the memory manager compresses a sequence with: memory.compress_policy when it needs
/// no queries or the sequence's last Compact left some (kept queries), else memory.fallback_policy
/// when that one needs none. A policy named "pressure" that the config does not define means
/// StreamingLLM with its defaults (4 sinks, a recent window), which needs no queries.
enum PressurePolicy {
    static func choose(
        _ book: PolicyBook, _ settings: Configuration.Memory, _ state: SequenceState, _ store: TenantStore
    ) -> (Choice, Observation?)? {
        let seq = state.sequence
        let rule = RuleState(model: seq.layout, length: seq.length, arenaUsed: store.arenaUsed)
        func pick(_ name: String) -> Choice? {
            guard !name.isEmpty else { return nil }
            if book.summaries.contains(where: { $0.name == name }) {
                return try? book.choose(method: "", policy: name, overrides: [], state: rule)
            }
            return name == "pressure" ? try? book.choose(method: "streamingllm", policy: "", overrides: [], state: rule) : nil
        }
        if let first = pick(settings.compressPolicy) {
            if !first.method.needsQueries { return (first, nil) }
            if let kept = state.keptObservation { return (first, kept) }
        }
        if let fallback = pick(settings.fallbackPolicy), !fallback.method.needsQueries { return (fallback, nil) }
        return nil
    }
}
