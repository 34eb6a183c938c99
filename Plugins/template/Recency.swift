import KVDCore
import KVDPluginAPI

// Copy-me template for a new built-in method. A method is a scorer (how important is each token?)
// that the host combines with an allocator (how many tokens per head?) and the top-k selector; the
// host checks the plan, packs pages and frees memory. To make your own:
//   1. copy this folder to Plugins/<name>/ and rename the types;
//   2. add `.target(name: "<Name>", dependencies: ["KVDPluginAPI"], path: "Plugins/<name>")` to
//      Package.swift and the target to KVDPluginHost's dependencies;
//   3. list `<Name>.method` in `Catalog.builtinMethods` (and the scorer in `Catalog.scorers` to
//      make it composable in config policies);
//   4. add a row to Plugins/README.md; MethodTableTests then runs it through every invariant.
// This template is compiled and tested but not registered, so Hello does not list it.

/// Scores each token by its original position: the most recent tokens score highest, so with the
/// top-k selector this keeps the latest `budget` tokens before the window. Needs no queries.
public struct RecencyScorer: TokenScorer {
    public init() {}
    public let name = "recency"
    /// Parameters of your own go here (the budget parameters come with the allocator).
    public let params: [ParamSpec] = []

    public func scores(_ context: CompactionContext, window: Int) throws(KVDError) -> [[Float]] {
        let view = context.view
        // One array per (layer, KV head), layer-major, covering the tokens before the window.
        return view.headCounts.indices.map { h in
            view.positions[h].prefix(max(0, view.headCounts[h] - window)).map { Float($0) }
        }
    }
}

public enum Recency {
    /// The scorer with uniform budgets and the host's top-k: a complete method.
    public static let method = ComposedMethod(
        name: "recency", description: "Template: keep the most recent tokens (copy me to write a method)",
        scorer: RecencyScorer())
}
