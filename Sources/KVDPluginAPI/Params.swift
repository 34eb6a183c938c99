import KVDCore

/// One parameter a method declares: its type, default and accepted range. The host checks requests
/// against it, so a method never sees a value outside its range.
public struct ParamSpec: Sendable {
    public let name: String
    public let type: ParamType
    public let defaultValue: ParamValue
    public let min: Double?
    public let max: Double?
    public let description: String

    public init(_ name: String, _ type: ParamType, default defaultValue: ParamValue, min: Double? = nil, max: Double? = nil, _ description: String) {
        self.name = name
        self.type = type
        self.defaultValue = defaultValue
        self.min = min
        self.max = max
        self.description = description
    }
}

extension ParamSpec {
    /// The same parameter with another default (a preset such as headkv's max-pool kernel 7).
    public func withDefault(_ value: ParamValue) -> ParamSpec {
        ParamSpec(name, type, default: value, min: min, max: max, description)
    }
}

/// Parameters after defaults and overrides, every value checked against its spec.
public struct ResolvedParams: Sendable, Equatable {
    public let values: [String: ParamValue]

    public init(values: [String: ParamValue]) { self.values = values }

    public func int(_ name: String) -> Int {
        guard case .int(let v) = values[name] else { preconditionFailure("no int parameter \(name)") }
        return Int(v)
    }

    public func string(_ name: String) -> String {
        guard case .string(let v) = values[name] else { preconditionFailure("no string parameter \(name)") }
        return v
    }

    public func bool(_ name: String) -> Bool {
        guard case .bool(let v) = values[name] else { preconditionFailure("no bool parameter \(name)") }
        return v
    }

    public func float(_ name: String) -> Double {
        switch values[name] {
        case .float(let v): return v
        case .int(let v): return Double(v)
        default: preconditionFailure("no float parameter \(name)")
        }
    }
}

/// A compaction method's name, one-line description and parameters, as `Hello` lists them.
public struct MethodDescriptor: Sendable {
    public let name: String
    public let description: String
    public let params: [ParamSpec]

    public init(name: String, description: String, params: [ParamSpec]) {
        self.name = name
        self.description = description
        self.params = params
    }

    /// Applies `overrides` to the defaults. Unknown names, wrong kinds and out-of-range values are
    /// INVALID_ARGUMENT errors that name the parameter and what is accepted.
    public func resolve(_ overrides: [(name: String, value: ParamValue)]) throws(KVDError) -> ResolvedParams {
        var values = Dictionary(uniqueKeysWithValues: params.map { ($0.name, $0.defaultValue) })
        for (name, value) in overrides {
            guard let spec = params.first(where: { $0.name == name }) else {
                let known = params.map(\.name).joined(separator: ", ")
                throw .invalidArgument("method '\(self.name)' has no parameter '\(name)'; it takes: \(known.isEmpty ? "none" : known)")
            }
            var accepted = value
            if spec.type == .float, case .int(let i) = value { accepted = .float(Double(i)) }
            guard accepted.kind == spec.type else {
                throw .invalidArgument("parameter '\(name)' of '\(self.name)' must be \(spec.type.rawValue), got \(value.kind.rawValue) \(value)")
            }
            let number: Double? = switch accepted {
            case .int(let i): Double(i)
            case .float(let f): f
            default: nil
            }
            if case .int(let i) = accepted, Int(exactly: i) == nil {
                throw .invalidArgument("parameter '\(name)' of '\(self.name)' is \(value), outside this platform's integers")
            }
            if let number {
                if !number.isFinite { throw .invalidArgument("parameter '\(name)' of '\(self.name)' must be finite, got \(value)") }
                if let lo = spec.min, number < lo {
                    throw .invalidArgument("parameter '\(name)' of '\(self.name)' is \(value); it must be ≥ \(format(lo))")
                }
                if let hi = spec.max, number > hi {
                    throw .invalidArgument("parameter '\(name)' of '\(self.name)' is \(value); it must be ≤ \(format(hi))")
                }
            }
            values[name] = accepted
        }
        return ResolvedParams(values: values)
    }
}

/// Integers print without a trailing ".0" in messages and in Hello.
public func format(_ d: Double) -> String {
    d == d.rounded() && abs(d) < 1e15 ? String(Int64(d)) : String(d)
}
