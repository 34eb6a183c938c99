import KVDCore
import KVDPluginAPI

/// Loads C-ABI plugins (kvd_plugin.h) from directories. Filled in by the C ABI work.
public enum CPluginLoader {
    /// Every `*.so` in `directories`, as methods with their origin (the file path).
    public static func loadAll(
        directories: [String], log: @escaping @Sendable (Int32, String) -> Void
    ) throws(KVDError) -> [(method: any CompactionMethod, origin: String)] {
        []
    }
}
