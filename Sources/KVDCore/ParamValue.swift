/// Compaction parameters as they arrive from a request or the config file. Defined in the core so
/// config, protocol mapping and plugins share one type.

/// A parameter value as it arrives in a request or config.
public enum ParamValue: Sendable, Equatable, CustomStringConvertible {
    case int(Int64)
    case float(Double)
    case string(String)
    case bool(Bool)

    public var description: String {
        switch self {
        case .int(let v): "\(v)"
        case .float(let v): "\(v)"
        case .string(let v): v
        case .bool(let v): "\(v)"
        }
    }

    public var kind: ParamType {
        switch self {
        case .int: .int
        case .float: .float
        case .string: .string
        case .bool: .bool
        }
    }
}

public enum ParamType: String, Sendable {
    case int, float, string, bool
}

