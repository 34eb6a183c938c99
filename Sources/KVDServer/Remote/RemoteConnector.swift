import KVDConfig
import KVDRemote

/// The store the remote tier talks to, as `remote:` configures it: one Redis node, or a Redis
/// Cluster reached through its seed nodes. Made on the tier's queue, which then owns it.
enum RemoteConnector {
    static func tier(_ settings: Configuration.Remote) -> RemoteTier? {
        guard settings.enabled else { return nil }
        return RemoteTier(settings: settings) { make(settings) }
    }

    static func make(_ settings: Configuration.Remote) -> RemoteKV {
        let timeouts = RedisTimeouts(connectMs: settings.connectTimeoutMilliseconds, commandMs: settings.commandTimeoutMilliseconds)
        // The config loader accepted only host:port entries with a port in range.
        let endpoints = settings.nodes.compactMap { RedisEndpoint(parsing: $0) }
        switch settings.mode {
        case .single: return RedisNodeKV(endpoint: endpoints[0], timeouts: timeouts)
        case .cluster: return RedisClusterKV(seeds: endpoints, options: RedisClusterKV.Options(timeouts: timeouts))
        }
    }
}
