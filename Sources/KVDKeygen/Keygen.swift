import ArgumentParser
import Foundation
import KVDKeys

#if canImport(Glibc)
import Glibc
#endif

/// `kvd keygen` and `kvctl keygen` (one command, two homes): CURVE key pairs for tcp endpoints — one for the daemon (server.curve.secret_key_file)
/// and one per client (its public key goes into its tenant's curve_public_keys).
public struct Keygen: ParsableCommand {
    public static let configuration = CommandConfiguration(
        abstract: "Write a CURVE key pair (Z85): NAME.key (secret, mode 0600) and NAME.pub (public).",
        discussion: """
            Prints the public key. The daemon's secret key file goes into server.curve.secret_key_file; \
            a client's public key goes into its tenant's curve_public_keys, and the client needs the \
            daemon's public key. An existing file is never overwritten.
            """)

    public init() {}

    @Option(name: .long, help: "Directory to write the key files in.")
    var out: String = "."

    @Option(name: .long, help: "Base name of the key files.")
    var name: String = "kvd"

    @Option(name: .customLong("public-of"), help: ArgumentHelp("Print the public key of a secret key file and exit.", valueName: "FILE"))
    var publicOf: String?

    public func validate() throws {
        guard !name.isEmpty, !name.contains("/") else { throw ValidationError("--name must be a file name without '/'") }
    }

    public func run() throws {
        do throws(CurveKeyError) {
            if let file = publicOf {
                print(try CurveKeys.publicKey(ofSecret: CurveKeys.readKeyFile(file).key))
                return
            }
            let pair = try CurveKeys.generate()
            let base = URL(fileURLWithPath: out).appendingPathComponent(name).path
            try write(pair.secretKey, to: base + ".key", mode: 0o600)
            do throws(CurveKeyError) {
                try write(pair.publicKey, to: base + ".pub", mode: 0o644)
            } catch {
                unlink(base + ".key")  // no half pair
                throw error
            }
            print(pair.publicKey)
        } catch {
            // "kvd keygen: ..." or "kvctl keygen: ...": whichever program the user ran.
            let program = URL(fileURLWithPath: CommandLine.arguments.first ?? "kvd").lastPathComponent
            FileHandle.standardError.write(Data("\(program) keygen: \(error.message)\n".utf8))
            throw ExitCode(1)
        }
    }

    /// Creates `path` with `mode` from the start (O_EXCL: never overwrites a key, never follows a
    /// link planted at the path; the secret is never readable by others, not even briefly).
    private func write(_ key: String, to path: String, mode: mode_t) throws(CurveKeyError) {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode)
        guard fd >= 0 else {
            let why = errno == EEXIST ? "it exists; remove it or choose another --name/--out" : String(cString: strerror(errno))
            throw CurveKeyError("cannot create \(path): \(why)")
        }
        defer { close(fd) }
        let bytes = Array((key + "\n").utf8)
        // The umask may have narrowed the mode; a public key file should still be readable.
        guard fchmod(fd, mode) == 0, bytes.withUnsafeBytes({ Glibc.write(fd, $0.baseAddress, $0.count) }) == bytes.count else {
            let why = String(cString: strerror(errno))
            unlink(path)
            throw CurveKeyError("cannot write \(path): \(why)")
        }
    }
}
