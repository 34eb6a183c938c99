import KVDCore
import Testing

@Suite struct PlanValidationTests {
    let layout = ModelLayout(name: "t", layers: 1, kvHeads: 2, qHeads: 2, headDim: 4, dtype: .f32, pageTokens: 4, defaultMethod: "x")

    private func problem(_ plan: CompactionPlan, counts: [Int] = [5, 5]) -> String? {
        do {
            try plan.validate(headCounts: counts, layout: layout, method: "m")
            return nil
        } catch {
            #expect(error.code == .internal)
            #expect(error.message.contains("method 'm'"))
            return error.message
        }
    }

    @Test func acceptsSortedInRangePlans() {
        #expect(problem(CompactionPlan(kept: [[0, 4], []])) == nil)
        #expect(problem(CompactionPlan(kept: [[0, 1, 2, 3, 4], [2]], logWeights: [[0, 0, 0, 0, 0], [1.5]])) == nil)
    }

    @Test func rejectsBadPlans() {
        #expect(problem(CompactionPlan(kept: [[0]]))?.contains("1 heads") == true)
        #expect(problem(CompactionPlan(kept: [[0, 5], []]))?.contains("index 5 out of range 0..<5") == true)
        #expect(problem(CompactionPlan(kept: [[2, 1], []]))?.contains("not strictly ascending") == true)
        #expect(problem(CompactionPlan(kept: [[1, 1], []]))?.contains("not strictly ascending") == true)
        #expect(problem(CompactionPlan(kept: [[-1], []]))?.contains("not strictly ascending") == true)
        #expect(problem(CompactionPlan(kept: [[0], [1]], logWeights: [[0], []]))?.contains("log-weights") == true)
    }
}
