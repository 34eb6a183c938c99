import KVDCore
import KVDProtocol

/// Reload: what SIGHUP does, answered (admin only). Runs on a worker: it reads and compiles the
/// config file.
enum ReloadHandler {
    static func handle(_ store: TenantStore) throws(KVDError) -> Kvd_V1_ReloadResponse {
        try AdminCheck.require("reload", store)
        let book = try store.shared.reloadPolicies()
        var out = Kvd_V1_ReloadResponse()
        out.policies = book.summaries.map(\.name)
        out.rules = UInt32(clamping: book.ruleList.count)
        return out
    }
}
