import CKVDPluginABI
import KVDPluginAPI
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A plugin whose table passed every load-time check: its path, the members this host reads, and
/// its parameters already mapped to `ParamSpec`.
///
/// the unchecked Sendable conformance: the table and everything it points to is PLUGIN-owned memory that the
/// header requires to stay valid and unchanged until `destroy`, and callbacks must be thread-safe,
/// so sharing the raw pointers across threads is what the contract allows.
final class CPlugin: @unchecked Sendable {  // safe: immutable plugin-owned table, see above
    typealias ScoreFn = @convention(c) (
        UnsafeMutableRawPointer?, UnsafePointer<kvd_head_call>?, UnsafeMutablePointer<Float>?,
        UnsafeMutablePointer<CChar>?, Int
    ) -> Int32
    typealias SelectFn = @convention(c) (
        UnsafeMutableRawPointer?, UnsafePointer<kvd_head_call>?, UnsafeMutablePointer<Int32>?,
        UnsafeMutablePointer<UInt32>?, UnsafeMutablePointer<CChar>?, Int
    ) -> Int32

    /// How the plugin decides: scores for the host's top-k, or its own selection.
    enum Decision {
        case score(ScoreFn)
        case select(SelectFn)
    }

    let path: String
    let name: String
    let version: String
    let description: String
    let needsQueries: Bool
    let params: [ParamSpec]
    let decision: Decision
    let state: UnsafeMutableRawPointer?
    let destroy: (@convention(c) (UnsafeMutableRawPointer?) -> Void)?

    init(
        path: String, name: String, version: String, description: String, needsQueries: Bool,
        params: [ParamSpec], decision: Decision, state: UnsafeMutableRawPointer?,
        destroy: (@convention(c) (UnsafeMutableRawPointer?) -> Void)?
    ) {
        self.path = path
        self.name = name
        self.version = version
        self.description = description
        self.needsQueries = needsQueries
        self.params = params
        self.decision = decision
        self.state = state
        self.destroy = destroy
    }
}

/// Every plugin loaded in this process, by library handle, so `destroy` runs exactly once at exit
/// and a library loaded twice (two `loadAll` calls, e.g. in tests) is not initialised twice.
enum LoadedPlugins {
    /// `UnsafeMutableRawPointer` handle values as integers keep the dictionary Sendable.
    private static let byHandle = Mutex<[UInt: CPlugin]>([:])
    private static let exitHookInstalled = Mutex(false)

    static func plugin(forHandle handle: UnsafeMutableRawPointer) -> CPlugin? {
        byHandle.withLock { $0[UInt(bitPattern: handle)] }
    }

    static func remember(_ plugin: CPlugin, handle: UnsafeMutableRawPointer) {
        byHandle.withLock { $0[UInt(bitPattern: handle)] = plugin }
        exitHookInstalled.withLock { installed in
            guard !installed else { return }
            installed = true
            // The header promises destroy "once when kvd unloads the plugin (shutdown)"; kvd never
            // unloads earlier, so process exit (clean stop or config error) is that moment.
            atexit { LoadedPlugins.destroyAll() }
        }
    }

    private static func destroyAll() {
        let all = byHandle.withLock { plugins in
            defer { plugins.removeAll() }
            return Array(plugins.values)
        }
        for p in all { p.destroy?(p.state) }
    }
}
