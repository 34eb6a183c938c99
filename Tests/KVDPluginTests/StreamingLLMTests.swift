import KVDCore
import KVDPluginAPI
import StreamingLLM
import Testing

@Suite struct StreamingLLMTests {
    let method = StreamingLLM()
    let layout = ModelLayout(name: "m", layers: 1, kvHeads: 3, qHeads: 3, headDim: 2, dtype: .f32, pageTokens: 4, defaultMethod: "streamingllm")

    func plan(_ counts: [Int], _ overrides: [(name: String, value: ParamValue)]) throws -> MethodPlan {
        let params = try method.descriptor.resolve(overrides)
        try method.check(params, CheckContext(layout: layout, baseDirectory: ""))
        let keys = counts.map { [Float](repeating: 0, count: $0 * 2) }
        let view = SequenceView(layout: layout, keys: keys, values: keys)
        return try method.plan(CompactionContext(view: view, observation: nil, params: params, method: "streamingllm", baseDirectory: ""))
    }

    @Test func keepsSinksAndRecent() throws {
        let p = try plan([10, 6, 3], [("sinks", .int(2)), ("recent", .int(3))])
        // Expected by definition: first 2 and last 3, or everything when the head is that short.
        #expect(p.plan.kept == [[0, 1, 7, 8, 9], [0, 1, 3, 4, 5], [0, 1, 2]])
        #expect((p.sinks, p.window) == (2, 3))
    }

    @Test func onlySinksOrOnlyRecent() throws {
        #expect(try plan([6, 6, 6], [("sinks", .int(0)), ("recent", .int(2))]).plan.kept == Array(repeating: [4, 5], count: 3))
        #expect(try plan([6, 6, 6], [("sinks", .int(2)), ("recent", .int(0))]).plan.kept == Array(repeating: [0, 1], count: 3))
    }

    @Test func defaultsAreFourAndSixtyFour() throws {
        let p = try plan([100, 68, 0], [])
        #expect(p.plan.kept[0] == [0, 1, 2, 3] + (36..<100).map { Int32($0) })
        #expect(p.plan.kept[1].count == 68)
        #expect(p.plan.kept[2].isEmpty)
    }

    @Test func badParametersAreInvalidArgument() {
        let cases: [[(name: String, value: ParamValue)]] = [
            [("sinks", .int(-1))],
            [("recent", .int(-5))],
            [("sinks", .int(0)), ("recent", .int(0))],
            [("sinks", .string("4"))],
            [("sinks", .float(2.5))],
            [("budget", .int(3))],
        ]
        for c in cases {
            do {
                _ = try plan([8, 8, 8], c)
                Issue.record("accepted \(c)")
            } catch let e as KVDError {
                #expect(e.code == .invalidArgument)
            } catch {
                Issue.record("unexpected \(error)")
            }
        }
    }
}
