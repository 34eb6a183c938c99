import CKVDPluginABI
import KVDCore
import KVDPluginAPI

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Loads C-ABI plugins (kvd_plugin.h) from directories: every `*.so`, sorted by name, is opened,
/// its `kvd_plugin_entry` called with the host table, and the returned table checked before the
/// plugin becomes a method. Any refusal stops start-up with a message naming the file.
public enum CPluginLoader {
    /// Every `*.so` in `directories`, as methods with their origin (the file path). `log` receives
    /// the plugins' own log lines (level: KVD_LOG_*), also later, from request threads.
    public static func loadAll(
        directories: [String], log: @escaping @Sendable (Int32, String) -> Void
    ) throws(KVDError) -> [(method: any CompactionMethod, origin: String)] {
        HostTable.setSink(log)
        var out: [(method: any CompactionMethod, origin: String)] = []
        for directory in directories {
            for path in try libraries(in: directory) {
                out.append((CPluginMethod(try load(path)), path))
            }
        }
        return out
    }

    /// The `*.so` files directly in `directory` (regular files or links to them), sorted by name so
    /// load order, and therefore which file a name clash blames, does not depend on the filesystem.
    static func libraries(in directory: String) throws(KVDError) -> [String] {
        guard let dir = opendir(directory) else {
            let why = errno == ENOENT ? "does not exist" : errno == ENOTDIR ? "is not a directory" : String(cString: strerror(errno))
            throw .invalidArgument("plugin directory \(directory) \(why); create it or remove it from plugins.directories")
        }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            guard name.hasSuffix(".so"), name.count > 3 else { continue }
            names.append(name)
        }
        let base = directory.hasSuffix("/") ? String(directory.dropLast()) : directory
        return names.sorted().map { "\(base)/\($0)" }.filter(isRegularFile)
    }

    private static func isRegularFile(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFREG
    }

    /// Opens one library and returns its checked plugin.
    static func load(_ path: String) throws(KVDError) -> CPlugin {
        // RTLD_LOCAL: plugins' symbols (all named kvd_plugin_entry) must not resolve into each other.
        guard let handle = dlopen(path, RTLD_NOW | RTLD_LOCAL) else {
            let why = dlerror().map { String(cString: $0) } ?? "unknown error"
            throw .invalidArgument("\(path): cannot load: \(why); check it is a shared library for this platform and its dependencies are installed")
        }
        // The same file loaded again (a second loadAll in one process) is the same library: reuse
        // its table instead of running its entry twice.
        if let known = LoadedPlugins.plugin(forHandle: handle) {
            dlclose(handle)
            return known
        }
        guard let symbol = dlsym(handle, KVD_PLUGIN_ENTRY_SYMBOL) else {
            dlclose(handle)
            throw .invalidArgument(
                "\(path): no symbol \(KVD_PLUGIN_ENTRY_SYMBOL); a kvd plugin exports "
                    + "`const kvd_plugin_v1 *\(KVD_PLUGIN_ENTRY_SYMBOL)(const kvd_host_v1 *)` with C linkage (see kvd_plugin.h)")
        }
        let entry = unsafeBitCast(symbol, to: kvd_plugin_entry_fn.self)
        // A refused library stays open: its entry has run and may have started something that
        // dlclose would pull the code out from under; start-up is failing anyway.
        guard let table = entry(HostTable.table(for: path)) else {
            throw .invalidArgument("\(path): \(KVD_PLUGIN_ENTRY_SYMBOL) returned NULL, the plugin refused to load (its log lines above say why); fix what it reports or remove the file")
        }
        let plugin = try TableValidator.validate(table, path: path)
        LoadedPlugins.remember(plugin, handle: handle)
        return plugin
    }
}
