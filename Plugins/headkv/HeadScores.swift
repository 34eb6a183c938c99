import Foundation
import KVDCore
import KVDPluginAPI
import Synchronization

/// Head importance scores in the reference format `{"layer-head": [score, ...]}` (one list per
/// head; importance = the list's mean). Files are parsed once and cached by real path and
/// (device, inode, size, modification time), so a policy reload picks up a changed file.
///
/// Messages about a file never quote its contents (a client could name a file that is not a score
/// file): entries are named by their index in the file, counting from 0.
public struct HeadScores: Sendable, Equatable {
    /// Importance per (layer, head) of the heads the file describes, layer-major.
    public let importance: [Double]
    public let layers: Int
    /// Heads per layer the file describes (KV heads or query heads).
    public let heads: Int

    /// Largest score file read (a calibration file of a 100-layer model is well under 1 MiB).
    public static let maxFileBytes = 16 << 20

    private static let cache = Mutex<[String: (FileAccess.Stamp, HeadScores)]>([:])

    /// The one error a request-named score file gets when it is missing, unreadable, outside the
    /// configured directories or not a JSON object: which of these it was would tell the client
    /// about files it may not read.
    public static func refusal(_ name: String) -> KVDError {
        .invalidArgument("headkv scores '\(name)' is not a readable score file in the configured files.directories")
    }

    /// Finds, loads and checks the `scores` parameter's file against a model with `layers` layers
    /// and `kvHeads` KV / `qHeads` query heads (nil: no model, only the file is checked).
    public static func load(
        param: String, _ value: String, files: FileAccess, layers: Int? = nil, kvHeads: Int = 0, qHeads: Int = 0
    ) throws(KVDError) -> HeadScores {
        let file: FileAccess.Located
        switch files.locate(param: param, value) {
        case .success(let f): file = f
        case .failure(let problem): throw error(problem, name: value, origin: files.origin(of: param), path: files.display(param: param, value))
        }
        let scores = try load(file)
        if let layers { try scores.check(file.name, layers: layers, kvHeads: kvHeads, qHeads: qHeads) }
        return scores
    }

    /// Loads `path` (an operator's path, not confined) and checks it fits a model with `layers`
    /// layers and `kvHeads` KV / `qHeads` query heads.
    public static func load(_ path: String, layers: Int, kvHeads: Int, qHeads: Int) throws(KVDError) -> HeadScores {
        let scores = try load(path)
        try scores.check(path, layers: layers, kvHeads: kvHeads, qHeads: qHeads)
        return scores
    }

    /// Loads and parses `path` (an operator's path, not confined), cached.
    public static func load(_ path: String) throws(KVDError) -> HeadScores {
        try load(param: "", path, files: FileAccess(baseDirectory: ""))
    }

    func check(_ name: String, layers: Int, kvHeads: Int, qHeads: Int) throws(KVDError) {
        guard self.layers == layers, heads == kvHeads || heads == qHeads else {
            throw .invalidArgument(
                "head-score file \(name) describes \(self.layers) layers × \(heads) heads; the model has "
                    + "\(layers) layers × \(kvHeads) KV heads (\(qHeads) query heads)")
        }
    }

    /// Reads (unless the cached parse is current) and parses a located file.
    static func load(_ file: FileAccess.Located) throws(KVDError) -> HeadScores {
        let cached = cache.withLock { $0[file.path] }
        switch FileAccess.readFile(file, maxBytes: maxFileBytes, unless: cached?.0) {
        case .failure(let problem):
            throw error(problem, name: file.name, origin: file.origin, path: file.name)
        case .success((_, nil)):
            return cached!.1
        case .success((let stamp, let bytes?)):
            let scores = try parse(bytes, name: file.name, origin: file.origin)
            cache.withLock { $0[file.path] = (stamp, scores) }
            return scores
        }
    }

    private static func error(_ problem: FileAccess.Problem, name: String, origin: FileAccess.Origin, path: String) -> KVDError {
        if origin == .request { return refusal(name) }
        switch problem {
        case .outside(let real):
            return .invalidArgument(
                "head-score file \(path) resolves to \(real), outside the config file's directory and files.directories; "
                    + "move it there, add its directory to files.directories or give an absolute path")
        case .notRegular:
            return .invalidArgument("head-score file \(path) is not a regular file")
        case .tooLarge:
            return .invalidArgument("head-score file \(path) is larger than \(maxFileBytes) bytes")
        case .badName, .missing, .unreadable:
            return .invalidArgument("head-score file \(path) is missing or unreadable; run the calibration tool or fix the path")
        }
    }

    /// Parses a score file's bytes. Syntax errors are the request refusal (or, for the operator,
    /// the byte offset); errors in an entry name the entry's index, never its contents.
    static func parse(_ bytes: [UInt8], name: String, origin: FileAccess.Origin = .config) throws(KVDError) -> HeadScores {
        let entries: [ScoreFileParser.Entry]
        do throws(ScoreFileParser.SyntaxError) {
            var parser = ScoreFileParser(bytes)
            entries = try parser.document()
        } catch {
            if origin == .request { throw refusal(name) }
            throw .invalidArgument(
                "head-score file \(name) is not a JSON object {\"layer-head\": [scores, ...]} (syntax error at byte \(error.offset))")
        }
        func bad(_ i: Int, _ why: String) -> KVDError {
            .invalidArgument("head-score file \(name): entry \(i) (counting from 0, in file order) \(why)")
        }
        guard !entries.isEmpty else { throw .invalidArgument("head-score file \(name) holds no entries; expected {\"layer-head\": [scores, ...]}") }
        // Layer and head numbers above this cannot describe a model (and their product must not overflow).
        let most = 1 << 20
        var seen: [Int: Int] = [:]  // layer * most + head → entry
        var parsed: [(Int, Int, Double)] = []
        for (i, entry) in entries.enumerated() {
            let parts = entry.key.split(separator: "-", omittingEmptySubsequences: false)
            guard parts.count == 2, parts.allSatisfy({ !$0.isEmpty && $0.allSatisfy(\.isASCIIDigit) }),
                let l = Int(parts[0]), let h = Int(parts[1]), l < most, h < most
            else {
                throw bad(i, "has a key that is not \"layer-head\" (two non-negative integers below \(most))")
            }
            if let j = seen.updateValue(i, forKey: l * most + h) { throw bad(i, "repeats the layer and head of entry \(j)") }
            guard case .list(let values) = entry.value, !values.isEmpty else { throw bad(i, "is not a non-empty list of numbers") }
            var sum = 0.0
            for (k, v) in values.enumerated() {
                guard case .number(let x) = v else { throw bad(i, "holds a non-number at index \(k) of its list") }
                guard x.isFinite else { throw bad(i, "holds a non-finite number (NaN or ±inf) at index \(k) of its list") }
                sum += x
            }
            let mean = sum / Double(values.count)
            guard mean.isFinite else { throw bad(i, "has scores whose sum is not a finite number") }
            guard mean >= 0 else { throw bad(i, "has a negative importance (mean of its scores)") }
            parsed.append((l, h, mean))
        }
        let layers = (parsed.map(\.0).max() ?? -1) + 1
        let heads = (parsed.map(\.1).max() ?? -1) + 1
        let (grid, overflow) = layers.multipliedReportingOverflow(by: heads)
        guard !overflow, parsed.count == grid else {
            throw .invalidArgument(
                "head-score file \(name): \(parsed.count) heads listed, a full \(layers) × \(heads) grid needs "
                    + "\(overflow ? "more" : String(grid))")
        }
        var importance = [Double](repeating: 0, count: grid)
        for (l, h, v) in parsed { importance[l * heads + h] = v }
        return HeadScores(importance: importance, layers: layers, heads: heads)
    }

    /// Importance per (layer, KV head): as is, or the mean / max over each KV head's query heads.
    public func kvImportance(kvHeads: Int, aggregate: String) -> [Double] {
        guard heads != kvHeads else { return importance }
        let group = heads / kvHeads
        return (0..<(layers * kvHeads)).map { i in
            let l = i / kvHeads, kv = i % kvHeads
            let members = (0..<group).map { importance[l * heads + kv * group + $0] }
            return aggregate == "max" ? members.max()! : members.reduce(0, +) / Double(group)
        }
    }
}

/// A strict reader of exactly what a score file may hold: one JSON object whose values are read
/// as lists of numbers. Any JSON value is accepted where a list or number is expected (and
/// reported as an entry error); Python's `NaN`, `Infinity` and `-Infinity` (which `json.dumps`
/// writes) are read as non-finite numbers so they get an entry error, not a syntax error.
struct ScoreFileParser {
    struct SyntaxError: Error { let offset: Int }

    enum Element { case number(Double), other }
    enum Value { case list([Element]), other }
    struct Entry {
        let key: String
        let value: Value
    }

    private let b: [UInt8]
    private var i = 0
    private static let maxDepth = 64

    init(_ bytes: [UInt8]) { b = bytes }

    mutating func document() throws(SyntaxError) -> [Entry] {
        skipSpace()
        if b.starts(with: [0xEF, 0xBB, 0xBF]) { i = 3; skipSpace() }  // a UTF-8 byte-order mark
        try expect(UInt8(ascii: "{"))
        var entries: [Entry] = []
        skipSpace()
        if peek == UInt8(ascii: "}") {
            i += 1
        } else {
            while true {
                skipSpace()
                let key = try string()
                skipSpace()
                try expect(UInt8(ascii: ":"))
                skipSpace()
                entries.append(Entry(key: key, value: try entryValue()))
                skipSpace()
                if peek == UInt8(ascii: ",") { i += 1; continue }
                try expect(UInt8(ascii: "}"))
                break
            }
        }
        skipSpace()
        guard i == b.count else { throw SyntaxError(offset: i) }
        return entries
    }

    private var peek: UInt8? { i < b.count ? b[i] : nil }

    private mutating func skipSpace() {
        while let c = peek, c == 0x20 || c == 0x0A || c == 0x0D || c == 0x09 { i += 1 }
    }

    private mutating func expect(_ c: UInt8) throws(SyntaxError) {
        guard peek == c else { throw SyntaxError(offset: i) }
        i += 1
    }

    private mutating func entryValue() throws(SyntaxError) -> Value {
        guard peek == UInt8(ascii: "[") else {
            try skipValue(depth: 1)
            return .other
        }
        i += 1
        var out: [Element] = []
        skipSpace()
        if peek == UInt8(ascii: "]") { i += 1; return .list(out) }
        while true {
            skipSpace()
            out.append(try element())
            skipSpace()
            if peek == UInt8(ascii: ",") { i += 1; continue }
            try expect(UInt8(ascii: "]"))
            return .list(out)
        }
    }

    private mutating func element() throws(SyntaxError) -> Element {
        if let x = nonFiniteLiteral() { return .number(x) }
        if let c = peek, c == UInt8(ascii: "-") || (c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9")) {
            return .number(try number())
        }
        try skipValue(depth: 2)
        return .other
    }

    private mutating func nonFiniteLiteral() -> Double? {
        for (word, value) in [("NaN", Double.nan), ("Infinity", .infinity), ("-Infinity", -.infinity)] where b[i...].starts(with: word.utf8) {
            i += word.utf8.count
            return value
        }
        return nil
    }

    /// A JSON number, strictly by the grammar; out of Double's range reads as ±inf.
    private mutating func number() throws(SyntaxError) -> Double {
        let start = i
        func digits() -> Int {
            let s = i
            while let c = peek, c >= UInt8(ascii: "0"), c <= UInt8(ascii: "9") { i += 1 }
            return i - s
        }
        if peek == UInt8(ascii: "-") { i += 1 }
        if peek == UInt8(ascii: "0") { i += 1 } else if digits() == 0 { throw SyntaxError(offset: i) }
        if peek == UInt8(ascii: ".") {
            i += 1
            guard digits() > 0 else { throw SyntaxError(offset: i) }
        }
        if peek == UInt8(ascii: "e") || peek == UInt8(ascii: "E") {
            i += 1
            if peek == UInt8(ascii: "+") || peek == UInt8(ascii: "-") { i += 1 }
            guard digits() > 0 else { throw SyntaxError(offset: i) }
        }
        let text = String(decoding: b[start..<i], as: UTF8.self)
        guard let x = Double(text) else { return text.hasPrefix("-") ? -.infinity : .infinity }
        return x
    }

    /// A JSON string, escapes decoded.
    private mutating func string() throws(SyntaxError) -> String {
        try expect(UInt8(ascii: "\""))
        var out: [UInt8] = []
        while true {
            guard let c = peek else { throw SyntaxError(offset: i) }
            i += 1
            switch c {
            case UInt8(ascii: "\""):
                return String(decoding: out, as: UTF8.self)
            case UInt8(ascii: "\\"):
                guard let e = peek else { throw SyntaxError(offset: i) }
                i += 1
                switch e {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(e)
                case UInt8(ascii: "b"): out.append(0x08)
                case UInt8(ascii: "f"): out.append(0x0C)
                case UInt8(ascii: "n"): out.append(0x0A)
                case UInt8(ascii: "r"): out.append(0x0D)
                case UInt8(ascii: "t"): out.append(0x09)
                case UInt8(ascii: "u"):
                    guard i + 4 <= b.count, let code = UInt32(String(decoding: b[i..<(i + 4)], as: UTF8.self), radix: 16) else {
                        throw SyntaxError(offset: i)
                    }
                    i += 4
                    // Surrogate halves are not decoded pairwise: a key that needs them is not "layer-head" anyway.
                    out.append(contentsOf: String(Character(Unicode.Scalar(code) ?? "\u{FFFD}")).utf8)
                default: throw SyntaxError(offset: i - 1)
                }
            case 0..<0x20:
                throw SyntaxError(offset: i - 1)
            default:
                out.append(c)
            }
        }
    }

    /// Skips any JSON value (nested at most `maxDepth` deep).
    private mutating func skipValue(depth: Int) throws(SyntaxError) {
        guard depth <= Self.maxDepth, let c = peek else { throw SyntaxError(offset: i) }
        switch c {
        case UInt8(ascii: "\""):
            _ = try string()
        case UInt8(ascii: "["), UInt8(ascii: "{"):
            let object = c == UInt8(ascii: "{")
            let close = object ? UInt8(ascii: "}") : UInt8(ascii: "]")
            i += 1
            skipSpace()
            if peek == close { i += 1; return }
            while true {
                skipSpace()
                if object {
                    _ = try string()
                    skipSpace()
                    try expect(UInt8(ascii: ":"))
                    skipSpace()
                }
                try skipValue(depth: depth + 1)
                skipSpace()
                if peek == UInt8(ascii: ",") { i += 1; continue }
                try expect(close)
                return
            }
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            if nonFiniteLiteral() == nil { _ = try number() }
        default:
            if nonFiniteLiteral() != nil { return }
            for word in ["true", "false", "null"] where b[i...].starts(with: word.utf8) {
                i += word.utf8.count
                return
            }
            throw SyntaxError(offset: i)
        }
    }
}

extension Character {
    fileprivate var isASCIIDigit: Bool { isASCII && isNumber }
}
