import CKVDPluginABI
import Foundation
import KVDCore
import KVDPluginAPI
import Testing

@testable import KVDPluginHost

/// The C-ABI loader's table checks and the plugin adapter, driven by tables built in Swift (C
/// convention closures stand in for plugin functions). Real `.so` files, the examples and every bad
/// fixture are covered end to end by Tests/e2e/test_c_plugins.py.
@Suite struct CPluginLoaderTests {
    static let path = "/mem/test.so"

    /// A table as a plugin would return it. Its strings and arrays are deliberately never freed:
    /// plugin memory must outlive the plugin, and these live for the test process.
    static func table(
        name: String = "test", major: UInt16 = UInt16(KVD_PLUGIN_ABI_MAJOR), size: Int = MemoryLayout<kvd_plugin_v1>.size,
        needsQueries: Bool = false, params: [(name: String, type: Int, def: Double)] = [],
        score: CPlugin.ScoreFn? = nil, select: CPlugin.SelectFn? = nil
    ) -> UnsafePointer<kvd_plugin_v1> {
        let specs = UnsafeMutablePointer<kvd_param_spec>.allocate(capacity: max(params.count, 1))
        for (i, p) in params.enumerated() {
            specs[i] = kvd_param_spec(
                name: UnsafePointer(strdup(p.name)), type: Int32(p.type), default_number: p.def, default_string: nil,
                min_value: 1, max_value: 0, description: nil)
        }
        let t = UnsafeMutablePointer<kvd_plugin_v1>.allocate(capacity: 1)
        t.initialize(to: kvd_plugin_v1(
            struct_size: UInt32(size), abi_major: major, abi_minor: 0, name: UnsafePointer(strdup(name)), version: nil,
            description: UnsafePointer(strdup("a test table")), params: UnsafePointer(specs), num_params: UInt32(params.count),
            param_spec_size: UInt32(MemoryLayout<kvd_param_spec>.stride),
            needs_queries: needsQueries ? 1 : 0, state: nil, score_head: score, select_head: select, destroy: nil))
        return UnsafePointer(t)
    }

    /// Scores each token by its first key element.
    static let byFirstKey: CPlugin.ScoreFn = { _, call, scores, _, _ in
        let c = call!.pointee, h = c.head!.pointee
        for t in 0..<Int(h.num_tokens - c.window) { scores![t] = h.keys![t * Int(h.head_dim)] }
        return 0
    }

    static func refusal(_ t: UnsafePointer<kvd_plugin_v1>) -> String {
        do {
            _ = try TableValidator.validate(t, path: path)
            return "accepted"
        } catch {
            return error.message
        }
    }

    static func context(_ m: CPluginMethod, _ view: SequenceView, _ obs: Observation? = nil, _ p: [(name: String, value: ParamValue)]) throws(KVDError) -> CompactionContext {
        CompactionContext(view: view, observation: obs, params: try m.descriptor.resolve(p), method: m.descriptor.name, baseDirectory: "")
    }

    @Test func missingDirectoryIsNamed() {
        do {
            _ = try CPluginLoader.loadAll(directories: ["/no/such/kvd-plugins"]) { _, _ in }
            Issue.record("loaded from a missing directory")
        } catch {
            #expect(error.message == "kvd: plugin directory /no/such/kvd-plugins does not exist; create it or remove it from plugins.directories")
        }
    }

    @Test func emptyDirectoryLoadsNothing() throws {
        let dir = NSTemporaryDirectory() + "kvd-cplugins-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Data("not a plugin".utf8).write(to: URL(fileURLWithPath: dir + "/notes.txt"))
        #expect(try CPluginLoader.loadAll(directories: [dir]) { _, _ in }.isEmpty)
    }

    @Test func tableChecks() {
        let score = Self.byFirstKey
        let select: CPlugin.SelectFn = { _, _, _, n, _, _ in n!.pointee = 0; return 0 }
        #expect(Self.refusal(Self.table(score: score)) == "accepted")
        #expect(Self.refusal(Self.table(major: 2, score: score)).contains("ABI major 2, this kvd speaks 1; rebuild against kvd_plugin.h"))
        #expect(Self.refusal(Self.table(size: 40, score: score)).contains("struct_size is 40 bytes, this kvd reads \(TableValidator.bytesRead)"))
        #expect(Self.refusal(Self.table(name: "Nope", score: score)).contains("plugin name 'Nope' is not [a-z0-9_]+"))
        #expect(Self.refusal(Self.table()).contains("sets neither score_head nor select_head"))
        #expect(Self.refusal(Self.table(score: score, select: select)).contains("sets both score_head and select_head"))
        #expect(Self.refusal(Self.table(params: [("budget", Int(KVD_PARAM_INT), 1)], score: score)).contains("'budget' is reserved"))
        #expect(Self.refusal(Self.table(params: [("x", 9, 0)], score: score)).contains("type 9 is not KVD_PARAM_INT"))
        #expect(Self.refusal(Self.table(params: [("x", Int(KVD_PARAM_BOOL), 2)], score: score)).contains("BOOL default must be 0 or 1"))
        #expect(Self.refusal(Self.table(params: [("x", Int(KVD_PARAM_INT), 1), ("x", Int(KVD_PARAM_INT), 1)], score: score)).contains("declared twice"))
    }

    @Test func descriptorAddsBudgetParams() throws {
        let m = CPluginMethod(try TableValidator.validate(Self.table(params: [("keep", Int(KVD_PARAM_INT), 1)], score: Self.byFirstKey), path: Self.path))
        #expect(m.descriptor.params.map(\.name) == ["budget", "fraction", "window", "keep"])
        #expect(m.descriptor.params[3].min == nil && m.descriptor.params[3].max == nil)
    }

    @Test func scoresGoThroughHostTopK() throws {
        let m = CPluginMethod(try TableValidator.validate(Self.table(score: Self.byFirstKey), path: Self.path))
        let (view, _) = randomInputs(count: 10, window: 2, seed: 7)
        let p = try m.plan(Self.context(m, view, nil, [("budget", .int(3)), ("window", .int(2))]))
        #expect(p.window == 2 && p.budgets == Array(repeating: 3, count: testLayout.headCount))
        for h in 0..<testLayout.headCount {
            let keys = view.keys(h)
            let scores = (0..<8).map { keys[$0 * testLayout.headDim] }
            #expect(p.plan.kept[h] == topK(scores: scores, budget: 3, window: 2, count: 10))
        }
    }

    @Test func nanScoresRankLowest() throws {
        let nanEven: CPlugin.ScoreFn = { _, call, scores, _, _ in
            let c = call!.pointee
            for t in 0..<Int(c.head!.pointee.num_tokens - c.window) { scores![t] = t % 2 == 0 ? .nan : Float(t) }
            return 0
        }
        let m = CPluginMethod(try TableValidator.validate(Self.table(score: nanEven), path: Self.path))
        let (view, _) = randomInputs(count: 10, window: 2, seed: 1)
        let p = try m.plan(Self.context(m, view, nil, [("budget", .int(6)), ("window", .int(1))]))
        // Four finite scores (1, 3, 5, 7) win; then NaN ties break towards the lower index.
        #expect(p.plan.kept.allSatisfy { $0 == [0, 1, 2, 3, 5, 7, 9] })
    }

    @Test func selectionAndParamsReachThePlugin() throws {
        // Keeps the first `keep` tokens: the resolved INT parameter must arrive by name.
        let firstK: CPlugin.SelectFn = { _, call, kept, n, _, _ in
            let c = call!.pointee
            let keep = (0..<Int(c.num_params)).first { String(cString: c.params![$0].name) == "keep" }.map { c.params![$0].int_value } ?? 0
            for t in 0..<Int(keep) { kept![t] = Int32(t) }
            n!.pointee = UInt32(keep)
            return 0
        }
        let m = CPluginMethod(try TableValidator.validate(Self.table(params: [("keep", Int(KVD_PARAM_INT), 1)], select: firstK), path: Self.path))
        let (view, _) = randomInputs(count: 9, window: 2, seed: 3)
        let ok = try m.plan(Self.context(m, view, nil, [("budget", .int(3)), ("window", .int(2)), ("keep", .int(2))]))
        #expect(ok.plan.kept.allSatisfy { $0 == [0, 1, 7, 8] })
        do {
            _ = try m.plan(Self.context(m, view, nil, [("budget", .int(3)), ("window", .int(2)), ("keep", .int(4))]))
            Issue.record("a selection over budget was accepted")
        } catch {
            #expect(error.code == .internal)
            #expect(error.message.contains("plugin 'test' (/mem/test.so) returned an invalid plan: layer 0 head 0: select_head kept 4 tokens, more than the budget of 3"))
        }
    }

    @Test func pluginErrorNamesPluginAndHead() throws {
        let failing: CPlugin.ScoreFn = { _, call, _, error, size in
            guard call!.pointee.head!.pointee.layer == 2 else { return 0 }
            _ = "no luck".withCString { strncpy(error!, $0, size) }
            return 1
        }
        let m = CPluginMethod(try TableValidator.validate(Self.table(score: failing), path: Self.path))
        let (view, _) = randomInputs(count: 6, window: 1, seed: 2)
        do {
            _ = try m.plan(Self.context(m, view, nil, [("budget", .int(2))]))
            Issue.record("a failing plugin produced a plan")
        } catch {
            #expect(error.message == "kvd: plugin 'test' (/mem/test.so): no luck (layer 2 head 0)")
        }
    }

    @Test func observationIsTheHeadsQueryGroup() throws {
        // Scores token t by the t-th float of the queries kvd hands over for this KV head.
        let byQuery: CPlugin.ScoreFn = { _, call, scores, _, _ in
            let c = call!.pointee
            for t in 0..<Int(c.head!.pointee.num_tokens - c.window) { scores![t] = c.observation!.pointee.queries![t] }
            return 0
        }
        let m = CPluginMethod(try TableValidator.validate(Self.table(needsQueries: true, score: byQuery), path: Self.path))
        let (view, obs) = randomInputs(count: 12, window: 2, seed: 9)
        do {
            _ = try m.plan(Self.context(m, view, nil, []))
            Issue.record("planned without queries")
        } catch {
            #expect(error.code == .failedPrecondition)
        }
        let p = try m.plan(Self.context(m, view, obs, [("budget", .int(4))]))
        let group = testLayout.qHeads / testLayout.kvHeads
        for h in 0..<testLayout.headCount {
            let base = obs.offset(layer: h / testLayout.kvHeads, qHead: (h % testLayout.kvHeads) * group)
            let scores = Array(obs.queries[base..<(base + 10)])
            #expect(p.plan.kept[h] == topK(scores: scores, budget: 4, window: 2, count: 12))
        }
    }
}
