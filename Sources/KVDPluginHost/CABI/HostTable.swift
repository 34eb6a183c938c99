import CKVDPluginABI
import Synchronization

/// The one `kvd_host_v1` every plugin receives, and the route from its C `log` callback to the
/// daemon's logger.
///
/// A C function pointer cannot capture a Swift closure, so the callback is a non-capturing
/// trampoline that forwards to a process-wide sink. The table itself lives in memory allocated once
/// and never freed, because the header promises plugins it stays valid until `destroy` (which runs
/// at process exit).
enum HostTable {
    typealias LogSink = @Sendable (Int32, String) -> Void

    /// Where plugin log lines go; the latest `loadAll` call sets it. Plugins may log from any thread
    /// at any time (also from callbacks during requests), hence the lock.
    private static let sink = Mutex<LogSink?>(nil)

    /// Stable address handed to every `kvd_plugin_entry`.
    nonisolated(unsafe) static let pointer: UnsafePointer<kvd_host_v1> = {
        let p = UnsafeMutablePointer<kvd_host_v1>.allocate(capacity: 1)
        p.initialize(to: kvd_host_v1(
            struct_size: UInt32(MemoryLayout<kvd_host_v1>.size),
            abi_major: UInt16(KVD_PLUGIN_ABI_MAJOR),
            abi_minor: UInt16(KVD_PLUGIN_ABI_MINOR),
            log: { level, message in
                guard let message else { return }
                HostTable.forward(level, String(cString: message))
            }))
        return UnsafePointer(p)
    }()

    static func setSink(_ log: @escaping LogSink) {
        sink.withLock { $0 = log }
    }

    private static func forward(_ level: Int32, _ message: String) {
        // Call outside the lock so a sink that is slow (stderr) does not serialise unrelated state.
        let log = sink.withLock { $0 }
        log?(level, message)
    }
}
