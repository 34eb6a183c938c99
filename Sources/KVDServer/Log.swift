import Foundation
import KVDConfig

/// Minimal leveled logging to stderr (one line per event, prefixed with the level). The daemon has
/// one logger, set up once in main; stderr is what service managers capture.
public struct Logger: Sendable {
    public let level: Configuration.LogLevel

    public init(level: Configuration.LogLevel) { self.level = level }

    public func log(_ l: Configuration.LogLevel, _ message: @autoclosure () -> String) {
        guard l <= level else { return }
        FileHandle.standardError.write(Data("kvd \(l.rawValue): \(message())\n".utf8))
    }

    public func error(_ m: @autoclosure () -> String) { log(.error, m()) }
    public func warning(_ m: @autoclosure () -> String) { log(.warning, m()) }
    public func info(_ m: @autoclosure () -> String) { log(.info, m()) }
    public func debug(_ m: @autoclosure () -> String) { log(.debug, m()) }
}
