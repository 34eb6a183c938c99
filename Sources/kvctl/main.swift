import ArgumentParser
import Foundation
import KVDKeygen

/// `kvctl`: operate a running kvd over its own protocol (docs/KVCTL.md).
struct KVCtl: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kvctl",
        abstract: "Operate a running kvd: status, sequences, policies, reload, compact, release, pin, evict, restore, keygen.",
        discussion: """
            Speaks kvd's protocol like any client. Tables by default, one JSON document with --json.
            Exit status: 0 ok, 1 kvd answered with an error, 2 bad usage, 3 kvd not reachable or timed out.
            """,
        subcommands: [
            Status.self, Sequences.self, SequenceShow.self, Policies.self, Reload.self, Compact.self, Release.self,
            Pin.self, Unpin.self, Evict.self, Restore.self, Keygen.self,
        ])
}

/// What every verb does: connect, act, print; failures print their message and set the exit status.
protocol Verb: ParsableCommand {
    var global: GlobalOptions { get }
    /// The reply as (text for people, JSON for scripts).
    func perform(_ session: Session) throws(Failure) -> (text: String, json: JSONValue)
}

extension Verb {
    func run() throws {
        do throws(Failure) {
            let session = try global.connect()
            let (text, json) = try perform(session)
            print(global.json ? json.render() : text)
        } catch {
            if global.json {
                print(errorDocument(error).render())
            } else {
                FileHandle.standardError.write(Data("kvctl: \(error.message)\n".utf8))
            }
            throw ExitCode(error.exitCode)
        }
    }
}

/// `{"error": {"code": "NOT_FOUND", "message": "...", "exit_code": 1}}`
func errorDocument(_ f: Failure) -> JSONValue {
    let code: String
    switch f {
    case .reply(let c, _): code = c.stableName
    case .usage: code = "USAGE"
    case .unreachable: code = "UNREACHABLE"
    }
    let message: String
    switch f {
    case .reply(_, let m), .usage(let m), .unreachable(let m): message = m
    }
    return .object(["error": .object(["code": j(code), "message": j(message), "exit_code": j(f.exitCode)])])
}

// Usage errors exit 2 (ArgumentParser's own default is 64), so scripts see one scheme.
do {
    var command = try KVCtl.parseAsRoot()
    try command.run()
} catch let code as ExitCode {
    KVCtl.exit(withError: code)
} catch {
    if KVCtl.exitCode(for: error) == .validationFailure {
        FileHandle.standardError.write(Data((KVCtl.fullMessage(for: error) + "\n").utf8))
        exit(2)
    }
    KVCtl.exit(withError: error)
}
