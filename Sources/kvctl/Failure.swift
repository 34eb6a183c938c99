import KVDProtocol

/// Why a kvctl command failed, and the exit status that says so (docs/KVCTL.md, "Exit codes").
enum Failure: Error {
    /// The daemon answered with an error (exit 1).
    case reply(code: Kvd_V1_ErrorCode, message: String)
    /// The command line or a file it names is wrong (exit 2).
    case usage(String)
    /// No answer: the daemon is not running, the endpoint is wrong, or it timed out (exit 3).
    case unreachable(String)

    var exitCode: Int32 {
        switch self {
        case .reply: 1
        case .usage: 2
        case .unreachable: 3
        }
    }

    var message: String {
        switch self {
        case .reply(let code, let message): "\(code.stableName): \(message)"
        case .usage(let m), .unreachable(let m): m
        }
    }
}
