import Yams

/// A YAML node with the dotted key path that led to it, so every error can name the key and line.
struct KeyedNode {
    let node: Node
    let path: String
    let file: String

    func fail(_ what: String) -> ConfigError {
        let line = node.mark.map { ":\($0.line)" } ?? ""
        return ConfigError("\(file)\(line): \(path): \(what)")
    }

    /// Mapping entries, refusing keys outside `known` (typos must not be silently ignored).
    func mapping(known: [String]) throws(ConfigError) -> [String: KeyedNode] {
        guard let m = node.mapping else { throw fail("must be a mapping with keys \(known.joined(separator: ", "))") }
        var out: [String: KeyedNode] = [:]
        for (k, v) in m {
            guard let key = k.scalar?.string else { throw fail("keys must be plain strings") }
            let child = KeyedNode(node: v, path: path.isEmpty ? key : "\(path).\(key)", file: file)
            guard known.contains(key) else {
                throw KeyedNode(node: k, path: child.path, file: file).fail("unknown key; known keys here: \(known.joined(separator: ", "))")
            }
            guard out[key] == nil else { throw child.fail("given twice") }
            out[key] = child
        }
        return out
    }

    func sequence() throws(ConfigError) -> [KeyedNode] {
        guard let s = node.sequence else { throw fail("must be a list") }
        return s.enumerated().map { KeyedNode(node: $1, path: "\(path)[\($0)]", file: file) }
    }

    func string() throws(ConfigError) -> String {
        guard let s = node.scalar, node.tag == Tag(.str) else { throw fail("must be a string") }
        return s.string
    }

    func int(min: Int = Int.min, max: Int = Int.max) throws(ConfigError) -> Int {
        guard node.tag == Tag(.int), let v = node.int else { throw fail("must be an integer") }
        guard v >= min, v <= max else { throw fail("must be in \(min)...\(max), got \(v)") }
        return v
    }

    /// A number (integer or float) in `min...max`.
    func double(min: Double, max: Double) throws(ConfigError) -> Double {
        guard let v = node.float, node.tag == Tag(.float) || node.tag == Tag(.int), v.isFinite else { throw fail("must be a number") }
        guard v >= min, v <= max else { throw fail("must be in \(min)...\(max), got \(v)") }
        return v
    }

    func bool() throws(ConfigError) -> Bool {
        guard node.tag == Tag(.bool), let v = node.bool else { throw fail("must be true or false") }
        return v
    }

    /// A file mode written as octal text ("0600", "0o640") or an integer whose digits are octal
    /// (YAML reads 0600 as 600); only permission bits (at most 0777).
    func fileMode() throws(ConfigError) -> UInt32 {
        guard let text = node.scalar?.string else { throw fail("must be a file mode such as \"0600\"") }
        var digits = Substring(text)
        if digits.hasPrefix("0o") { digits = digits.dropFirst(2) }
        guard !digits.isEmpty, digits.count <= 4, let v = UInt32(digits, radix: 8), v <= 0o777 else {
            throw fail("must be an octal file mode such as \"0600\" (at most 0777), got '\(text)'")
        }
        return v
    }

    /// A byte count: an integer, or a string such as "256MiB" (units KiB, MiB, GiB; also K, M, G).
    func bytes(min: Int = 0) throws(ConfigError) -> Int {
        let value: Int
        if node.tag == Tag(.int), let v = node.int {
            value = v
        } else if let s = node.scalar?.string, let v = Self.parseBytes(s) {
            value = v
        } else {
            throw fail("must be a byte count such as 268435456 or \"256MiB\"")
        }
        guard value >= min else { throw fail("must be at least \(min) bytes, got \(value)") }
        return value
    }

    static func parseBytes(_ text: String) -> Int? {
        let s = text.trimmingCharacters(in: .whitespaces)
        let units: [(String, Int)] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10), ("B", 1)]
        for (suffix, scale) in units where s.hasSuffix(suffix) {
            guard let n = Int(s.dropLast(suffix.count).trimmingCharacters(in: .whitespaces)), n >= 0 else { return nil }
            let (product, overflow) = n.multipliedReportingOverflow(by: scale)
            return overflow ? nil : product
        }
        return Int(s)
    }
}

import Foundation
