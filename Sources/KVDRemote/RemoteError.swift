/// A failed call to the Redis tier. `kind` is what the caller acts on (stable; its raw value can go
/// into logs and metrics); `message` names the node and the command, and never holds key or value
/// bytes (they can be large, binary, or someone's prompt).
public struct RemoteError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Kind: String, Sendable {
        /// Nothing answered in time: connect refused or timed out, I/O error, command timeout, the
        /// node or the cluster down (`CLUSTERDOWN`, `TRYAGAIN`, `LOADING`, `MASTERDOWN`, `BUSY`), a
        /// slot whose owner is unreachable, or still redirected after the redirection limit (slots
        /// moving). Retrying later may work; the data may be gone (a cache tier).
        case unavailable
        /// The server answered with an error (`-OOM`, `-ERR`, `-WRONGTYPE`, …): retrying the same
        /// command will fail the same way until something changes on the server.
        case rejected
        /// The reply does not follow the protocol or is not what the command returns (a wrong reply
        /// type, a malformed redirection or slot map, a declared size hiredis cannot allocate): a bug,
        /// or not a Redis server. Retrying will not help.
        case `protocol`
    }

    public let kind: Kind
    public let message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { "redis \(kind.rawValue): \(message)" }

    /// `"<node>: <COMMAND>: <what>"`, the shape of every message, so logs read the same everywhere.
    static func at(_ kind: Kind, _ node: RedisEndpoint, _ args: [[UInt8]], _ what: String) -> RemoteError {
        RemoteError(kind, "\(node): \(commandName(args)): \(what)")
    }

    /// The command's name (its first argument) for messages: printable ASCII only and short, since
    /// it comes from the caller and must not carry arbitrary bytes into a log.
    static func commandName(_ args: [[UInt8]]) -> String {
        guard let first = args.first, !first.isEmpty else { return "(empty command)" }
        let printable = first.prefix(32).map { $0 >= 0x21 && $0 <= 0x7E ? Character(UnicodeScalar($0)) : "?" }
        return String(printable).uppercased()
    }
}
