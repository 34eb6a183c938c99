import Foundation

/// Head-score files (HeadKV's `scores` parameter) the fuzz program can name. A request may name
/// any path the daemon can read, so the file's contents are input too: valid files for each
/// model's heads, and files that are malformed in each way the parser checks, or not at all.
enum FuzzFiles {
    /// The config's base directory, so requests name the files by relative path. The same for
    /// every process and written atomically: parallel fuzz jobs share it and never see half a file.
    static let directory = NSTemporaryDirectory() + "kvd-fuzz-files"

    static let contents: [String: String] = [
        "scores-kv.json": grid(layers: 2, heads: 2),  // tiny's KV heads
        "scores-q.json": grid(layers: 2, heads: 4),  // tiny's query heads (aggregated per KV head)
        "scores-f32.json": grid(layers: 3, heads: 1),  // tiny-f32's KV heads
        "scores-zero.json": grid(layers: 2, heads: 2, value: "0"),
        "scores-huge.json": grid(layers: 2, heads: 2, value: "1e308"),
        "scores-negative.json": grid(layers: 2, heads: 2, value: "-1"),
        "scores-partial.json": #"{"0-0": [1], "0-1": [1], "1-0": [1]}"#,
        "scores-big-index.json": #"{"3037000500-3037000500": [1]}"#,
        "scores-strings.json": #"{"0-0": ["a"], "0-1": [1], "1-0": [1], "1-1": [1]}"#,
        "empty.json": "{}",
        "not-json.json": "{",
    ]

    static var names: [String] { contents.keys.sorted() }

    static func write() throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        for (name, text) in contents {
            try Data(text.utf8).write(to: URL(fileURLWithPath: directory + "/" + name), options: .atomic)
        }
    }

    /// {"layer-head": [value, value + 1]} for every head.
    private static func grid(layers: Int, heads: Int, value: String? = nil) -> String {
        let entries = (0..<layers).flatMap { l in
            (0..<heads).map { h in "\"\(l)-\(h)\": [\(value ?? String(l * heads + h + 1)), \(value ?? "0.5")]" }
        }
        return "{" + entries.joined(separator: ", ") + "}"
    }
}
