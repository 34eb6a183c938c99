import Foundation

/// Reads the `prefix:` section (prefix reuse) and its key file.
enum PrefixLoader {
    static func prefix(_ node: KeyedNode) throws(ConfigError) -> Configuration.Prefix {
        let m = try node.mapping(known: ["enabled", "key_file"])
        var p = Configuration.Prefix()
        if let v = m["enabled"] { p.enabled = try v.bool() }
        if let v = m["key_file"] {
            let f = try v.string()
            guard !f.isEmpty else { throw v.fail("must name a file (or leave the key out for a random key per start)") }
            p.keyFile = f
        }
        return p
    }

    /// The 16-byte key: 32 hex digits on the file's first line. A short or malformed key is refused
    /// rather than padded: a weak key lets a client predict and collide block hashes.
    static func readKey(_ path: String, file: String) throws(ConfigError) -> [UInt8] {
        guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8) else {
            throw ConfigError("\(file): prefix.key_file: cannot read \(path)")
        }
        let line = Array((text.split(whereSeparator: \.isNewline).first.map(String.init) ?? "").utf8)
        guard let key = hexBytes(line), key.count == 16 else {
            throw ConfigError("\(file): prefix.key_file: \(path) must hold 32 hex digits (a 128-bit key) on its first line, e.g. from `head -c16 /dev/urandom | xxd -p`")
        }
        return key
    }

    static func hexBytes(_ digits: [UInt8]) -> [UInt8]? {
        guard digits.count % 2 == 0 else { return nil }
        func nibble(_ c: UInt8) -> UInt8? {
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
            default: nil
            }
        }
        var out: [UInt8] = []
        var i = 0
        while i < digits.count {
            guard let hi = nibble(digits[i]), let lo = nibble(digits[i + 1]) else { return nil }
            out.append(hi << 4 | lo)
            i += 2
        }
        return out
    }
}
