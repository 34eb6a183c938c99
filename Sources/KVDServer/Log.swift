import Foundation
import KVDConfig
import Logging

/// kvd's one logger, set up once in main from `log.level` and `log.format`. A thin front over
/// swift-log's `Logger` (so a host embedding kvd's server can hand it any swift-log backend), with
/// kvd's own handler behind it: one line per event on stderr, which is what service managers and
/// log collectors capture. Fields go into the line as `key=value` (plain) or as JSON members.
public struct Logger: Sendable {
    public let level: Configuration.LogLevel
    private let backend: Logging.Logger

    public init(level: Configuration.LogLevel, format: Configuration.LogFormat = .plain) {
        self.level = level
        var backend = Logging.Logger(label: "kvd") { _ in LogLineHandler(format: format) }
        backend.logLevel = level.swiftLog
        self.backend = backend
    }

    /// A logger writing through another swift-log backend (a host's), at `level`.
    public init(level: Configuration.LogLevel, backend: Logging.Logger) {
        self.level = level
        var b = backend
        b.logLevel = level.swiftLog
        self.backend = b
    }

    public func log(_ l: Configuration.LogLevel, _ message: @autoclosure () -> String, _ fields: LogFields = [:]) {
        guard l <= level else { return }
        backend.log(level: l.swiftLog, "\(message())", metadata: fields.isEmpty ? nil : fields.metadata)
    }

    public func error(_ m: @autoclosure () -> String, _ fields: LogFields = [:]) { log(.error, m(), fields) }
    public func warning(_ m: @autoclosure () -> String, _ fields: LogFields = [:]) { log(.warning, m(), fields) }
    public func info(_ m: @autoclosure () -> String, _ fields: LogFields = [:]) { log(.info, m(), fields) }
    public func debug(_ m: @autoclosure () -> String, _ fields: LogFields = [:]) { log(.debug, m(), fields) }
}

/// A log line's fields, in the order written: `["sequence": id, "method": "snapkv", "ms": 1.2]`.
/// Numbers and booleans stay numbers and booleans in JSON; everything else is a string.
public struct LogFields: ExpressibleByDictionaryLiteral, Sendable {
    let pairs: [(String, any Sendable & CustomStringConvertible)]

    public init(dictionaryLiteral elements: (String, any Sendable & CustomStringConvertible)...) { pairs = elements }

    var isEmpty: Bool { pairs.isEmpty }

    var metadata: Logging.Logger.Metadata {
        var m = Logging.Logger.Metadata()
        for (key, value) in pairs { m[key] = .stringConvertible(value) }
        return m
    }
}

extension Configuration.LogLevel {
    var swiftLog: Logging.Logger.Level {
        switch self {
        case .error: .error
        case .warning: .warning
        case .info: .info
        case .debug: .debug
        }
    }
}
