import Foundation
import KVDCore
import Synchronization

/// Head importance scores in the reference format `{"layer-head": [score, ...]}` (one list per
/// head; importance = the list's mean). Files are parsed once and cached by path and modification
/// time, so a policy reload picks up a changed file.
public struct HeadScores: Sendable, Equatable {
    /// Importance per (layer, head) of the heads the file describes, layer-major.
    public let importance: [Double]
    public let layers: Int
    /// Heads per layer the file describes (KV heads or query heads).
    public let heads: Int

    private static let cache = Mutex<[String: (Date, HeadScores)]>([:])

    /// Loads `path` (parsed once per modification time) and checks it fits a model with `layers`
    /// layers and `kvHeads` KV / `qHeads` query heads.
    public static func load(_ path: String, layers: Int, kvHeads: Int, qHeads: Int) throws(KVDError) -> HeadScores {
        let scores = try load(path)
        guard scores.layers == layers, scores.heads == kvHeads || scores.heads == qHeads else {
            throw .invalidArgument(
                "head-score file \(path) describes \(scores.layers) layers × \(scores.heads) heads; the model has "
                    + "\(layers) layers × \(kvHeads) KV heads (\(qHeads) query heads)")
        }
        return scores
    }

    /// Loads and parses `path`, cached by modification time.
    public static func load(_ path: String) throws(KVDError) -> HeadScores {
        let modified = (try? FileManager.default.attributesOfItem(atPath: path)[.modificationDate] as? Date) ?? nil
        guard let modified else {
            throw .invalidArgument("head-score file \(path) is missing or unreadable; run the calibration tool or fix the path")
        }
        if let hit = cache.withLock({ $0[path] }), hit.0 == modified { return hit.1 }
        let scores = try parse(path)
        cache.withLock { $0[path] = (modified, scores) }
        return scores
    }

    static func parse(_ path: String) throws(KVDError) -> HeadScores {
        let object: Any
        do {
            object = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path)))
        } catch {
            throw .invalidArgument("head-score file \(path) is not valid JSON: \(error.localizedDescription)")
        }
        guard let table = object as? [String: Any], !table.isEmpty else {
            throw .invalidArgument("head-score file \(path) must be a JSON object {\"layer-head\": [scores...]}")
        }
        var entries: [(Int, Int, Double)] = []
        for (key, value) in table {
            let parts = key.split(separator: "-")
            guard parts.count == 2, let l = Int(parts[0]), let h = Int(parts[1]), l >= 0, h >= 0 else {
                throw .invalidArgument("head-score file \(path): key '\(key)' is not \"layer-head\"")
            }
            guard let list = value as? [Any], !list.isEmpty else {
                throw .invalidArgument("head-score file \(path): '\(key)' must be a non-empty list of numbers")
            }
            var sum = 0.0
            for x in list {
                guard let v = (x as? NSNumber)?.doubleValue, v.isFinite else {
                    throw .invalidArgument("head-score file \(path): '\(key)' holds a non-number")
                }
                sum += v
            }
            entries.append((l, h, sum / Double(list.count)))
        }
        let layers = (entries.map(\.0).max() ?? -1) + 1
        let heads = (entries.map(\.1).max() ?? -1) + 1
        guard entries.count == layers * heads else {
            throw .invalidArgument("head-score file \(path): \(entries.count) heads listed, a full \(layers) × \(heads) grid needs \(layers * heads)")
        }
        var importance = [Double](repeating: 0, count: layers * heads)
        for (l, h, v) in entries {
            guard v >= 0 else { throw .invalidArgument("head-score file \(path): '\(l)-\(h)' has a negative importance") }
            importance[l * heads + h] = v
        }
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
