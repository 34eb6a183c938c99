/// A configuration problem. The message names the file, the line when known, the key and what to fix;
/// `kvd` prints it and exits non-zero.
public struct ConfigError: Error, CustomStringConvertible, Equatable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
