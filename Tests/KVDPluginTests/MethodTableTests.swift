import Foundation
import KVDAttention
import KVDCore
import KVDPluginAPI
import KVDPluginHost
import PluginTemplate
import Testing

/// Every built-in method, and every scorer under every allocator, at two budgets: the invariants
/// every method must satisfy (docs/PROTOCOL.md, "Compaction": the host's plan checks).
@Suite struct MethodTableTests {
    static let scoresFile: String = try! writeHeadScores([[1, 3], [0.5, 0.5], [2, 0]])

    /// (label, method) pairs: the built-ins plus every scorer × allocator composition.
    static var methods: [(String, any CompactionMethod)] {
        var out: [(String, any CompactionMethod)] = (Catalog.builtinMethods + [Recency.method]).map { ($0.descriptor.name, $0) }
        for scorer in Catalog.scorers.keys.sorted() {
            for allocator in Catalog.allocators.keys.sorted() {
                out.append(("\(scorer)+\(allocator)", try! Catalog.compose(scorer: scorer, allocator: allocator)))
            }
        }
        return out
    }

    func params(_ m: any CompactionMethod, budget: Int) throws -> ResolvedParams {
        var overrides: [(name: String, value: ParamValue)] = []
        let names = Set(m.descriptor.params.map(\.name))
        if names.contains("budget") { overrides.append(("budget", .int(Int64(budget)))) }
        if names.contains("scores") { overrides.append(("scores", .string(Self.scoresFile))) }
        if names.contains("alias_map") { overrides.append(("alias_map", .string("2:0"))) }
        if names.contains("itrs") {
            // BalanceKV: a middle large enough to halve once.
            overrides += [("sinks", .int(2)), ("recent", .int(4)), ("itrs", .int(1)), ("block", .int(8))]
        } else if names.contains("recent") {
            overrides.append(("recent", .int(Int64(budget))))
        }
        let p = try m.descriptor.resolve(overrides)
        try m.check(p, CheckContext(layout: testLayout, baseDirectory: ""))
        return p
    }

    @Test(arguments: [3, 40])
    func invariantsHold(budget: Int) throws {
        let count = 30, window = 4
        let (view, obs) = randomInputs(count: count, window: window, seed: 7)
        for (label, method) in Self.methods {
            let p = try params(method, budget: budget)
            let context = CompactionContext(view: view, observation: obs, params: p, method: label, baseDirectory: "")
            let plan = try method.plan(context)
            // Host checks: indices valid, sinks and window kept, budgets honoured.
            try PlanChecker.check(plan, counts: view.headCounts, layout: testLayout, method: label)
            // Deterministic.
            #expect(try method.plan(context).plan == plan.plan, "\(label) not deterministic")
            let prefix = count - plan.window
            let budgeted = method.descriptor.params.contains { $0.name == "budget" }
            if let budgets = plan.budgets, budgeted, budget <= prefix / 2 {
                // Totals exactly as asked: L·H·B (no head is capped at its prefix here).
                #expect(budgets.reduce(0, +) == testLayout.headCount * budget, "\(label): budgets \(budgets)")
            }
            let uniform = label.hasSuffix("+uniform") || ["knorm", "snapkv", "h2o"].contains(label)
            if uniform, budget >= prefix {
                // A budget covering the whole prefix drops nothing.
                #expect(plan.plan.kept.allSatisfy { $0.count == count }, "\(label) dropped tokens with budget \(budget)")
            }
        }
    }

    /// After KVSharer aliased layer 2 to layer 0 its heads are empty: every method plans around
    /// them, gives them budget 0, and a budgeted one spreads exactly L'·H·B over the 2 layers left.
    @Test func aliasedLayersGetNoBudget() throws {
        let count = 30, window = 4, budget = 3
        let (view, obs) = randomInputs(count: count, window: window, seed: 9, aliases: [nil, nil, 0])
        for (label, method) in Self.methods {
            let p = try params(method, budget: budget)
            let context = CompactionContext(view: view, observation: obs, params: p, method: label, baseDirectory: "")
            let plan = try method.plan(context)
            try PlanChecker.check(plan, counts: view.headCounts, layout: testLayout, method: label)
            #expect(plan.plan.kept.suffix(testLayout.kvHeads).allSatisfy { $0.isEmpty }, "\(label) kept tokens of an aliased layer")
            guard let budgets = plan.budgets, method.descriptor.params.contains(where: { $0.name == "budget" }) else { continue }
            #expect(budgets.suffix(testLayout.kvHeads).allSatisfy { $0 == 0 }, "\(label): aliased heads got \(budgets)")
            #expect(budgets.reduce(0, +) == 2 * testLayout.kvHeads * budget, "\(label): budgets \(budgets)")
        }
    }

    @Test func queryMethodsRefuseToRunWithoutQueries() throws {
        let (view, _) = randomInputs(count: 20, window: 4, seed: 3)
        for (label, method) in Self.methods where method.needsQueries {
            let p = try params(method, budget: 5)
            let context = CompactionContext(view: view, observation: nil, params: p, method: label, baseDirectory: "")
            #expect(throws: KVDError.self) { try method.plan(context) }
            do { _ = try method.plan(context) } catch { #expect(error.code == .failedPrecondition) }
        }
    }

    @Test func windowLargerThanTheCacheIsInvalid() throws {
        let (view, obs) = randomInputs(count: 3, window: 4, seed: 3)
        let method = try Catalog.compose(scorer: "snapkv", allocator: nil)
        let context = CompactionContext(view: view, observation: obs, params: try params(method, budget: 2), method: "snapkv", baseDirectory: "")
        do {
            _ = try method.plan(context)
            Issue.record("accepted a window larger than the cache")
        } catch {
            #expect(error.code == .invalidArgument)
        }
    }
}

@Suite struct TemplateTests {
    @Test func recencyKeepsTheLatestTokens() throws {
        let (view, _) = randomInputs(count: 12, window: 2, seed: 5)
        let p = try Recency.method.descriptor.resolve([("budget", .int(3)), ("window", .int(2))])
        let plan = try Recency.method.plan(CompactionContext(view: view, observation: nil, params: p, method: "recency", baseDirectory: ""))
        #expect(plan.plan.kept.allSatisfy { $0 == [7, 8, 9, 10, 11] })
    }
}
