import KVDCore

/// The gate in front of admin requests (Reload, Evict). Who is admin: docs/SECURITY.md.
enum AdminCheck {
    static func require(_ request: String, _ store: TenantStore) throws(KVDError) {
        guard !store.isAdmin else { return }
        if store.config.admin.isConfigured {
            throw .permissionDenied("\(request) needs an admin connection; say Hello with admin_token (kvctl --admin-token-file FILE)")
        }
        throw .permissionDenied("\(request) needs an admin connection, and this daemon has credentials but no admin token; configure admin.token_file")
    }
}
