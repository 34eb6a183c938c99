import CKVDPluginABI
import KVDCore
import KVDPluginAPI

/// Load-time checks of a `kvd_plugin_v1` table. Each refusal names the file, what is wrong and what
/// to do, so a config error is enough to fix the plugin.
enum TableValidator {
    /// Bytes of the table this host reads: every member up to and including `destroy`. Older,
    /// shorter tables cannot exist for ABI 1, so anything shorter is a broken build.
    static let bytesRead: Int = MemoryLayout<kvd_plugin_v1>.offset(of: \kvd_plugin_v1.destroy)!
        + MemoryLayout<UnsafeRawPointer>.size

    /// Parameters kvd itself adds to every plugin method.
    static let reservedParams = Set(BudgetParams.specs.map(\.name))

    static func validate(_ table: UnsafePointer<kvd_plugin_v1>, path: String) throws(KVDError) -> CPlugin {
        func refuse(_ why: String) -> KVDError { .invalidArgument("\(path): \(why)") }

        // Read struct_size alone first: a table shorter than ours must not be read as a whole.
        let size = Int(UnsafeRawPointer(table).load(as: UInt32.self))
        guard size >= bytesRead else {
            throw refuse("table struct_size is \(size) bytes, this kvd reads \(bytesRead); rebuild against kvd_plugin.h (set struct_size = sizeof(kvd_plugin_v1))")
        }
        let t = table.pointee
        guard Int32(t.abi_major) == KVD_PLUGIN_ABI_MAJOR else {
            throw refuse("ABI major \(t.abi_major), this kvd speaks \(KVD_PLUGIN_ABI_MAJOR); rebuild against kvd_plugin.h")
        }
        guard let cName = t.name else { throw refuse("plugin name is NULL; set kvd_plugin_v1.name to a [a-z0-9_]+ method name") }
        let name = String(cString: cName)
        guard isMethodName(name) else {
            throw refuse("plugin name '\(name)' is not [a-z0-9_]+; rename it (it is the method name requests use)")
        }
        let decision: CPlugin.Decision
        switch (t.score_head, t.select_head) {
        case (let score?, nil): decision = .score(score)
        case (nil, let select?): decision = .select(select)
        case (nil, nil): throw refuse("plugin '\(name)' sets neither score_head nor select_head; set exactly one")
        case (_?, _?): throw refuse("plugin '\(name)' sets both score_head and select_head; set exactly one (the other NULL)")
        }
        let params = try mapParams(t, plugin: name, refuse: refuse)
        return CPlugin(
            path: path, name: name, version: t.version.map { String(cString: $0) } ?? "",
            description: t.description.map { String(cString: $0) } ?? "", needsQueries: t.needs_queries != 0,
            params: params, decision: decision, state: t.state, destroy: t.destroy)
    }

    static func isMethodName(_ s: String) -> Bool {
        !s.isEmpty && s.utf8.allSatisfy { (0x61...0x7A).contains($0) || (0x30...0x39).contains($0) || $0 == 0x5F }
    }

    /// The plugin's own parameters as `ParamSpec`s, refusing anything kvd could not check requests
    /// against: NULL or duplicate names, unknown types, defaults outside their own bounds.
    private static func mapParams(
        _ t: kvd_plugin_v1, plugin: String, refuse: (String) -> KVDError
    ) throws(KVDError) -> [ParamSpec] {
        let count = Int(t.num_params)
        guard count == 0 || t.params != nil else {
            throw refuse("plugin '\(plugin)' declares \(count) parameters but params is NULL")
        }
        // Elements are read with the plugin's stride; one shorter than ours lacks members we read.
        let stride = Int(t.param_spec_size)
        guard count == 0 || stride >= MemoryLayout<kvd_param_spec>.size else {
            throw refuse("plugin '\(plugin)': param_spec_size is \(stride), this kvd reads \(MemoryLayout<kvd_param_spec>.size); set it to sizeof(kvd_param_spec)")
        }
        var seen = Set<String>()
        var out: [ParamSpec] = []
        for i in 0..<count {
            let p = UnsafeRawPointer(t.params!).advanced(by: i * stride).loadUnaligned(as: kvd_param_spec.self)
            let at = "plugin '\(plugin)' parameter \(i)"
            guard let cName = p.name else { throw refuse("\(at): name is NULL; give every kvd_param_spec a name") }
            let name = String(cString: cName)
            guard isMethodName(name) else { throw refuse("\(at): name '\(name)' is not [a-z0-9_]+; rename it") }
            guard !reservedParams.contains(name) else {
                throw refuse("\(at): '\(name)' is reserved (kvd adds \(BudgetParams.specs.map(\.name).joined(separator: ", ")) itself); rename it")
            }
            guard seen.insert(name).inserted else { throw refuse("\(at): '\(name)' is declared twice; declare it once") }
            out.append(try ParamMapping.spec(p, name: name, refuse: { refuse("\(at) '\(name)': \($0)") }))
        }
        return out
    }
}
