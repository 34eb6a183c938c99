import Synchronization

/// What the remote tier did for one tenant since start (StatsResponse.remote).
final class RemoteCounters: Sendable {
    let offloaded = Atomic<UInt64>(0)
    let offloadedBytes = Atomic<UInt64>(0)
    let offloadFailures = Atomic<UInt64>(0)
    let offloadDropped = Atomic<UInt64>(0)
    let restored = Atomic<UInt64>(0)
    let restoreFailures = Atomic<UInt64>(0)
    let restoreCorrupted = Atomic<UInt64>(0)
    let lastRestoreMicroseconds = Atomic<UInt64>(0)
    /// Prompt blocks shared with other daemons (remote.share_prefixes): published, not queued
    /// (queue full), failed; taken from the store on a local miss, and refused (corrupted, wrong).
    let published = Atomic<UInt64>(0)
    let publishDropped = Atomic<UInt64>(0)
    let publishFailures = Atomic<UInt64>(0)
    let imported = Atomic<UInt64>(0)
    let importRejected = Atomic<UInt64>(0)
    let totalRestoreMicroseconds = Atomic<UInt64>(0)
    /// The last store error, for the log and Stats readers.
    let lastFailure = Mutex<String>("")
}
