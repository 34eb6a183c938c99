import Foundation

/// The --json document: one JSON object, keys sorted, so scripts and diffs see a stable shape.
/// Values are built from `JSONValue` so every field's type is fixed by the code, not inferred.
enum JSONValue {
    case string(String)
    case int(Int64)
    case uint(UInt64)
    case double(Double)
    case bool(Bool)
    case array([JSONValue])
    case object([String: JSONValue])
    case null

    var foundation: Any {
        switch self {
        case .string(let s): s
        case .int(let i): NSNumber(value: i)
        case .uint(let u): NSNumber(value: u)
        case .double(let d): d.isFinite ? NSNumber(value: d) : NSNull()
        case .bool(let b): NSNumber(value: b)
        case .array(let a): a.map(\.foundation)
        case .object(let o): o.mapValues(\.foundation)
        case .null: NSNull()
        }
    }

    func render() -> String {
        let data = (try? JSONSerialization.data(withJSONObject: foundation, options: [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes])) ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self)
    }
}

extension JSONValue: ExpressibleByStringLiteral, ExpressibleByBooleanLiteral {
    init(stringLiteral value: String) { self = .string(value) }
    init(booleanLiteral value: Bool) { self = .bool(value) }
}

/// Shorthands for building documents.
func j(_ s: String) -> JSONValue { .string(s) }
func j(_ b: Bool) -> JSONValue { .bool(b) }
func j<T: BinaryInteger>(_ n: T) -> JSONValue { T.isSigned ? .int(Int64(n)) : .uint(UInt64(n)) }
func j(_ d: Double) -> JSONValue { .double(d) }
