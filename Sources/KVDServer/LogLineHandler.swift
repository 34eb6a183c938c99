import Foundation
import KVDConfig
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// kvd's swift-log handler: one line per event on stderr, written with one `write` so lines from
/// different threads never interleave.
/// - plain: `kvd info: message key=value key=value` (the format kvd always had, plus fields);
/// - json: `{"ts":"2026-11-30T21:40:00.123Z","level":"info","msg":"…","pid":42,…fields}` — one
///   object per line, RFC 8259 strings, numbers and booleans unquoted.
struct LogLineHandler: LogHandler {
    let format: Configuration.LogFormat
    var metadata: Logging.Logger.Metadata = [:]
    var metadataProvider: Logging.Logger.MetadataProvider?
    var logLevel: Logging.Logger.Level = .info

    init(format: Configuration.LogFormat) { self.format = format }

    subscript(metadataKey key: String) -> Logging.Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var fields = metadata
        if let provided = metadataProvider?.get() { fields.merge(provided) { _, new in new } }
        if let own = event.metadata { fields.merge(own) { _, new in new } }
        let line = switch format {
        case .plain: Self.plain(event.level, event.message.description, fields)
        case .json: Self.json(event.level, event.message.description, fields, now: Date())
        }
        Self.write(line)
    }

    static func plain(_ level: Logging.Logger.Level, _ message: String, _ fields: Logging.Logger.Metadata) -> String {
        var line = "kvd \(name(level)): \(message)"
        for key in fields.keys.sorted() {
            let value = fields[key]!.description
            // Quoted only when needed, so `key=value` splits on spaces.
            let bare = !value.isEmpty && !value.contains(where: { $0 == " " || $0 == "\"" || $0 == "=" || $0.isNewline })
            line += " \(key)=\(bare ? value : quoted(value))"
        }
        return line + "\n"
    }

    static func json(_ level: Logging.Logger.Level, _ message: String, _ fields: Logging.Logger.Metadata, now: Date) -> String {
        var line = "{\"ts\":\(quoted(timestamp(now))),\"level\":\(quoted(name(level))),\"msg\":\(quoted(message)),\"pid\":\(getpid())"
        for key in fields.keys.sorted() where !["ts", "level", "msg", "pid"].contains(key) {
            line += ",\(quoted(key)):\(jsonValue(fields[key]!))"
        }
        return line + "}\n"
    }

    /// kvd's level names (swift-log says "warning" and "error" too; "critical" never comes from kvd).
    static func name(_ level: Logging.Logger.Level) -> String {
        switch level {
        case .trace: "trace"
        case .debug: "debug"
        case .info, .notice: "info"
        case .warning: "warning"
        case .error, .critical: "error"
        }
    }

    static func jsonValue(_ value: Logging.Logger.MetadataValue) -> String {
        switch value {
        case .string(let s): return quoted(s)
        case .stringConvertible(let v):
            switch v {
            case let b as Bool: return b ? "true" : "false"
            case let i as any BinaryInteger: return "\(i)"
            case let d as Double where d.isFinite: return "\(d)"
            case let f as Float where f.isFinite: return "\(f)"
            default: return quoted(v.description)
            }
        case .array(let a): return "[" + a.map(jsonValue).joined(separator: ",") + "]"
        case .dictionary(let d): return "{" + d.keys.sorted().map { "\(quoted($0)):\(jsonValue(d[$0]!))" }.joined(separator: ",") + "}"
        }
    }

    /// A JSON string literal: quotes, backslashes and control characters escaped.
    static func quoted(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where u.value < 0x20 || u.value == 0x7F:
                out += "\\u" + String(repeating: "0", count: 4 - String(u.value, radix: 16).count) + String(u.value, radix: 16)
            default: out.unicodeScalars.append(u)
            }
        }
        return out + "\""
    }

    /// UTC, millisecond precision, RFC 3339 (`2026-11-30T21:40:00.123Z`).
    static func timestamp(_ date: Date) -> String {
        // Whole milliseconds first: splitting the Double into seconds and a fraction loses the last ms.
        let total = Int64((date.timeIntervalSince1970 * 1000).rounded())
        var seconds = time_t(total / 1000)
        let millis = Int(total % 1000)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        func two(_ v: Int32) -> String { v < 10 ? "0\(v)" : "\(v)" }
        let ms = millis < 10 ? "00\(millis)" : millis < 100 ? "0\(millis)" : "\(millis)"
        return "\(parts.tm_year + 1900)-\(two(parts.tm_mon + 1))-\(two(parts.tm_mday))T\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)).\(ms)Z"
    }

    private static func write(_ line: String) {
        var bytes = Array(line.utf8)
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeMutableBytes { Glibc.write(2, $0.baseAddress! + done, $0.count - done) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return }  // stderr closed or full: a log line is not worth blocking or trapping for
            done += n
        }
    }
}
