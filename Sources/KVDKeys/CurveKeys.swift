import CZMQ
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A CURVE key problem: a file that cannot be read or does not hold a key, or libzmq without CURVE.
public struct CurveKeyError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// CURVE keys (Curve25519, ZeroMQ's CurveZMQ) in Z85 text: 40 characters for 32 bytes. This is the
/// form `kvd keygen` writes, config files list, and clients (pyzmq, libzmq) take.
public enum CurveKeys {
    public struct KeyPair: Sendable, Equatable {
        public let publicKey: String
        public let secretKey: String
        public init(publicKey: String, secretKey: String) {
            self.publicKey = publicKey
            self.secretKey = secretKey
        }
    }

    /// Whether this libzmq was built with CURVE support.
    public static var available: Bool { zmq_has("curve") != 0 }

    /// A fresh key pair from libzmq's CSPRNG.
    public static func generate() throws(CurveKeyError) -> KeyPair {
        try requireCurve()
        var pub = [CChar](repeating: 0, count: 41)
        var sec = [CChar](repeating: 0, count: 41)
        guard zmq_curve_keypair(&pub, &sec) == 0 else { throw CurveKeyError("zmq_curve_keypair failed: \(String(cString: zmq_strerror(zmq_errno())))") }
        defer { wipe(&sec) }
        return KeyPair(publicKey: string(pub), secretKey: string(sec))
    }

    /// The public key belonging to a Z85 secret key.
    public static func publicKey(ofSecret secret: String) throws(CurveKeyError) -> String {
        try requireCurve()
        guard decode(secret) != nil else { throw CurveKeyError("not a Z85 CURVE key (40 characters of the Z85 alphabet)") }
        var pub = [CChar](repeating: 0, count: 41)
        guard zmq_curve_public(&pub, secret) == 0 else { throw CurveKeyError("zmq_curve_public failed: \(String(cString: zmq_strerror(zmq_errno())))") }
        return string(pub)
    }

    /// The 32 bytes of a Z85 key; nil unless `z85` is exactly 40 characters of the Z85 alphabet in
    /// canonical form (re-encoding gives the same text, so one key has exactly one spelling).
    public static func decode(_ z85: String) -> [UInt8]? {
        guard z85.utf8.count == 40 else { return nil }
        var bytes = [UInt8](repeating: 0, count: 32)
        guard zmq_z85_decode(&bytes, z85) != nil, encode(bytes) == z85 else { return nil }
        return bytes
    }

    public static func encode(_ bytes: [UInt8]) -> String {
        precondition(bytes.count % 4 == 0)
        var text = [CChar](repeating: 0, count: bytes.count * 5 / 4 + 1)
        _ = zmq_z85_encode(&text, bytes, bytes.count)
        return string(text)
    }

    /// Reads a key file written by `kvd keygen` (or any file whose first non-empty line is a Z85
    /// key). Returns the key and the file's permission bits, so callers can warn about a secret
    /// that others may read. The file's contents never appear in an error.
    public static func readKeyFile(_ path: String) throws(CurveKeyError) -> (key: String, mode: UInt32) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw CurveKeyError("cannot read \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { throw CurveKeyError("\(path) is not a regular file") }
        var buffer = [UInt8](repeating: 0, count: 4096)
        defer { for i in buffer.indices { buffer[i] = 0 } }
        let n = read(fd, &buffer, buffer.count)
        guard n >= 0 else { throw CurveKeyError("cannot read \(path): \(String(cString: strerror(errno)))") }
        let text = String(decoding: buffer[0..<n], as: UTF8.self)
        let line = text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.first { !$0.isEmpty } ?? ""
        guard decode(line) != nil else {
            throw CurveKeyError("\(path) does not hold a Z85 CURVE key (one line of 40 characters, as `kvd keygen` writes)")
        }
        return (line, UInt32(st.st_mode) & 0o777)
    }

    private static func requireCurve() throws(CurveKeyError) {
        guard available else { throw CurveKeyError("this libzmq was built without CURVE support (zmq_has(\"curve\") is false)") }
    }

    private static func string(_ chars: [CChar]) -> String {
        chars.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }

    private static func wipe(_ chars: inout [CChar]) {
        for i in chars.indices { chars[i] = 0 }
    }
}
