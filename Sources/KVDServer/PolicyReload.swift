import KVDConfig
import KVDCore
import KVDPluginHost

extension Store {
    /// Loads the config file again and installs its policies, rules and memory-manager settings:
    /// what SIGHUP and the Reload request both do. A config that does not load changes nothing
    /// (FAILED_PRECONDITION with the loader's message: file, line, key).
    func reloadPolicies() throws(KVDError) -> PolicyBook {
        let result: Result<(PolicyBook, Configuration.Memory), KVDError> = reloader.withLock { load in
            guard let load else { return .failure(.unimplemented("this daemon was started without a config file; nothing to reload")) }
            let loaded: (PolicyBook, Configuration.Memory)
            do { loaded = try load() } catch {
                return .failure(.failedPrecondition("reload refused, keeping the current policies: \(error)"))
            }
            // Installed under the lock too, so two reloads never leave one's book with the other's settings.
            replacePolicies(loaded.0)
            replaceMemorySettings(loaded.1)
            return .success(loaded)
        }
        let (book, memory) = try result.get()
        if memory.eventsEndpoint != config.memory.eventsEndpoint {
            logger?.warning("memory.events_endpoint changed; restart kvd to move the events endpoint (keeping \(config.memory.eventsEndpoint.isEmpty ? "it off" : config.memory.eventsEndpoint))")
        }
        logger?.info("reloaded policies (\(book.summaries.map(\.name).joined(separator: ", "))) and memory settings (high \(memory.high), low \(memory.low), lease \(memory.leaseSeconds) s)")
        return book
    }
}
