import CKVDPluginABI
import Foundation
import Synchronization

/// The `kvd_host_v1` tables plugins receive — one per plugin file, so a log line can say which
/// plugin wrote it — and the route from their C `log` callback to the daemon's logger.
///
/// A C function pointer cannot capture a Swift closure, so the callback is a non-capturing
/// trampoline: it reads the plugin's path from the table's `host_context` and forwards to a
/// process-wide sink. Tables are allocated once per path and never freed, because the header
/// promises plugins they stay valid until `destroy` (which runs at process exit).
enum HostTable {
    typealias LogSink = @Sendable (Int32, String) -> Void

    /// Where plugin log lines go; the latest `loadAll` call sets it. Plugins may log from any thread
    /// at any time (also from callbacks during requests), hence the lock.
    private static let sink = Mutex<LogSink?>(nil)
    /// Path → its table's address (as an integer, to stay Sendable).
    private static let tables = Mutex<[String: UInt]>([:])

    /// The table for the plugin at `path` (the same address every time for the same path).
    static func table(for path: String) -> UnsafePointer<kvd_host_v1> {
        let address = tables.withLock { t -> UInt in
            if let known = t[path] { return known }
            // The path as a C string that lives as long as the table: the log trampoline reads it.
            let context = strdup(path)
            let p = UnsafeMutablePointer<kvd_host_v1>.allocate(capacity: 1)
            p.initialize(to: kvd_host_v1(
                struct_size: UInt32(MemoryLayout<kvd_host_v1>.size),
                abi_major: UInt16(KVD_PLUGIN_ABI_MAJOR),
                abi_minor: UInt16(KVD_PLUGIN_ABI_MINOR),
                log: { host, level, message in
                    guard let message else { return }
                    let who = host?.pointee.host_context.map { String(cString: $0.assumingMemoryBound(to: CChar.self)) } ?? "?"
                    HostTable.forward(level, "\(URL(fileURLWithPath: who).lastPathComponent): \(String(cString: message))")
                },
                host_context: UnsafeMutableRawPointer(context)))
            t[path] = UInt(bitPattern: p)
            return UInt(bitPattern: p)
        }
        return UnsafePointer(bitPattern: address)!
    }

    static func setSink(_ log: @escaping LogSink) {
        sink.withLock { $0 = log }
    }

    private static func forward(_ level: Int32, _ message: String) {
        // Call outside the lock so a sink that is slow (stderr) does not serialise unrelated state.
        let log = sink.withLock { $0 }
        log?(level, message)
    }
}
