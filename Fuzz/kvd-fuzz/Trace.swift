import Foundation
import KVDProtocol
import SwiftProtobuf

/// KVD_FUZZ_TRACE=1: one line per request and reply on stderr, to read what a crashing input does.
enum Trace {
    static func request(_ request: Kvd_V1_Request?, _ bytes: Int, _ envelope: [[UInt8]]) {
        let text = request.map { shorten($0.textFormatString()) } ?? "(does not decode)"
        let route = envelope.isEmpty ? "" : " envelope \(envelope)"
        write("→ \(bytes) bytes\(route): \(text)")
    }

    static func response(_ response: Kvd_V1_Response) {
        switch response.body {
        case .error(let e): write("← error \(e.code): \(e.message)")
        case let body?: write("← \(shorten(Kvd_V1_Response.with { $0.body = body }.textFormatString()))")
        case nil: write("← (no body)")
        }
    }

    static func skipped(_ known: String) { write("(not sent: would hit the known crash \"\(known)\")") }

    private static func shorten(_ text: String) -> String {
        let flat = text.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.joined(separator: " ")
        return flat.count <= 400 ? flat : flat.prefix(400) + "…"
    }

    private static func write(_ line: String) { FileHandle.standardError.write(Data((line + "\n").utf8)) }
}
