import Foundation
import HeadKV
import KVDCore
import KVDPluginAPI
import PyramidKV
import Testing

/// PyramidKV and HeadKV budgets against the papers' formulas (Plugins/README.md) computed here by hand.
@Suite struct BudgetAllocatorTests {
    func context(_ params: [(name: String, value: ParamValue)], _ specs: [ParamSpec]) throws -> CompactionContext {
        let (view, obs) = randomInputs(count: 50, window: 2, seed: 1)
        let p = try MethodDescriptor(name: "t", description: "", params: specs).resolve(params)
        return CompactionContext(view: view, observation: obs, params: p, method: "t", baseDirectory: "")
    }

    @Test func pyramidFollowsTheLine() throws {
        let a = PyramidAllocator()
        // B = 40, β = 4: min 10, max 70; L = 3 → 70, 40, 10 per head (prefix 80 ≥ 70).
        let ctx = try context([("budget", .int(40)), ("beta", .float(4))], a.params)
        let b = try a.budgets(ctx, prefix: Array(repeating: 80, count: 6), scores: nil)
        #expect(b == [70, 70, 40, 40, 10, 10])
        // Prefix 48 < 70: the top is clamped to 48 and the bottom raised to 2·40 − 48 = 32.
        let clamped = try a.budgets(ctx, prefix: Array(repeating: 48, count: 6), scores: nil)
        #expect(clamped == [48, 48, 40, 40, 32, 32])
        // B = 10, β = 3: min 3.33, max 16.67, mid 10 → floors 16, 10, 3 (29); +1 to the largest remainder (.67, first layer).
        let c = try a.budgets(try context([("budget", .int(10)), ("beta", .float(3))], a.params), prefix: Array(repeating: 48, count: 6), scores: nil)
        #expect(c == [17, 17, 10, 10, 3, 3])
    }

    @Test func headKVSplitsThePoolByImportance() throws {
        let path = try writeHeadScores([[1, 3], [0, 0], [2, 2]])
        let a = HeadKVAllocator()
        let ctx = try context([("budget", .int(10)), ("beta", .float(2)), ("scores", .string(path))], a.params)
        try a.check(ctx.params, CheckContext(layout: testLayout, baseDirectory: ""))
        let b = try a.budgets(ctx, prefix: Array(repeating: 48, count: 6), scores: nil)
        // shared = ⌊10/2⌋ = 5, pool = 5·3·2 = 30, floor = 5; p = [1,3,0,0,2,2]/8 → 3.75, 11.25, 0, 0, 7.5, 7.5
        // floors 3, 11, 0, 0, 7, 7 (28) + 1 to .75 (head 0) and +1 to the first .5 (head 4) → 4, 11, 0, 0, 8, 7
        #expect(b == [9, 16, 5, 5, 13, 12])
        #expect(b.reduce(0, +) == 6 * 10)
    }

    @Test func headKVAggregatesQueryHeadScores() throws {
        // 4 query heads per layer: KV head 0 ← q 0, 1; KV head 1 ← q 2, 3.
        let path = try writeHeadScores([[1, 3, 0, 0], [1, 1, 1, 1], [4, 0, 2, 2]])
        let a = HeadKVAllocator()
        for (aggregate, want) in [("mean", [2.0, 0, 1, 1, 2, 2]), ("max", [3.0, 0, 1, 1, 4, 2])] {
            let ctx = try context(
                [("budget", .int(10)), ("beta", .float(2)), ("scores", .string(path)), ("aggregate", .string(aggregate))], a.params)
            let b = try a.budgets(ctx, prefix: Array(repeating: 48, count: 6), scores: nil)
            let pool = largestRemainder(want, total: 30)
            #expect(b == pool.map { $0 + 5 })
        }
    }

    @Test func badScoreFilesAreInvalidArgument() throws {
        let a = HeadKVAllocator()
        let wrongGrid = try writeHeadScores([[1, 2, 3], [1, 2, 3]])
        let notJSON = NSTemporaryDirectory() + "kvd-notjson-\(UUID().uuidString).json"
        try Data("{oops".utf8).write(to: URL(fileURLWithPath: notJSON))
        for path in [wrongGrid, notJSON, "/nonexistent/scores.json"] {
            let p = try MethodDescriptor(name: "t", description: "", params: a.params).resolve([("scores", .string(path))])
            do {
                try a.check(p, CheckContext(layout: testLayout, baseDirectory: ""))
                Issue.record("accepted \(path)")
            } catch {
                #expect(error.code == .invalidArgument)
                #expect(error.message.contains(path))
            }
        }
        let p = try MethodDescriptor(name: "t", description: "", params: a.params).resolve([("beta", .float(1)), ("scores", .string(wrongGrid))])
        #expect(throws: KVDError.self) { try a.check(p, CheckContext(layout: testLayout, baseDirectory: "")) }
    }
}
