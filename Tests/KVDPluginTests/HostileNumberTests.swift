import Foundation
import HeadKV
import KVDCore
import KVDPluginAPI
import Testing

/// The host's arithmetic never traps on hostile numbers, and client-named files stay inside
/// files.directories.
@Suite struct HostileNumberTests {
    @Test func largestRemainderSurvivesNonFiniteAndHugeWeights() {
        // NaN (and negative) weights count as 0.
        #expect(largestRemainder([.nan, 1, 1], total: 4) == [0, 2, 2])
        #expect(largestRemainder([-3, 1], total: 3) == [0, 3])
        #expect(largestRemainder([.nan, .nan], total: 3) == [2, 1])  // no weight: even spread
        // +inf weights share the total (the limit of growing finite weights).
        #expect(largestRemainder([.infinity, 5, .infinity], total: 5) == [3, 0, 2])
        #expect(largestRemainder([.infinity], total: 7) == [7])
        // Finite weights whose sum overflows: only the ratios matter.
        #expect(largestRemainder([.greatestFiniteMagnitude, .greatestFiniteMagnitude, 1], total: 10) == [5, 5, 0])
        #expect(largestRemainder([1, 3], total: -4) == [0, 0])
        #expect(largestRemainder([1, 1], total: Int.max).reduce(0, +) == Int.max)
    }

    @Test func headKVWeightsNormaliseBeforePow() {
        // 3^1000 is inf (and inf / inf NaN); scaled by the largest first it is 1.
        let w = HeadKVAllocator.weights([3, 2, 1, 0.5], temperature: 1000)
        #expect(w.allSatisfy(\.isFinite) && w[0] == 1 && w[1] < 1e-100)
        #expect(largestRemainder(w, total: 16) == [16, 0, 0, 0])
        // Importances of at most 1 are used as they are.
        #expect(HeadKVAllocator.weights([0.5, 1, 0.25], temperature: 2) == [0.25, 1, 0.0625])
        #expect(HeadKVAllocator.weights([.infinity, 1], temperature: 2) == [1, 0])
    }

    @Test func headKVBudgetsFromLargeImportances() throws {
        let path = try writeHeadScores([[1e300, 3], [2.5, 1], [0, 1e300]])
        let a = HeadKVAllocator()
        for temperature in [1.0, 2.0, 1000.0] {
            let (view, obs) = randomInputs(count: 50, window: 2, seed: 1)
            let p = try MethodDescriptor(name: "t", description: "", params: a.params).resolve(
                [("budget", .int(10)), ("beta", .float(2)), ("temperature", .float(temperature)), ("scores", .string(path))])
            let ctx = CompactionContext(view: view, observation: obs, params: p, method: "t", baseDirectory: "")
            // shared 5 per head, a pool of 30 between the two 1e300 heads, floor 5 for all.
            #expect(try a.budgets(ctx, prefix: Array(repeating: 48, count: 6), scores: nil) == [20, 5, 5, 5, 5, 20], "temperature \(temperature)")
        }
    }

    static func scoreFile(_ text: String) throws -> String {
        let path = NSTemporaryDirectory() + "kvd-hostile-\(UUID().uuidString).json"
        try Data(text.utf8).write(to: URL(fileURLWithPath: path))
        return path
    }

    @Test(arguments: [
        ("{\"0-0\": [1], \"0-1\": [2, NaN]}", "entry 1 (counting from 0, in file order) holds a non-finite number (NaN or ±inf) at index 1 of its list"),
        ("{\"0-0\": [Infinity], \"0-1\": [2]}", "entry 0 (counting from 0, in file order) holds a non-finite number (NaN or ±inf) at index 0 of its list"),
        ("{\"0-0\": [1], \"0-1\": [-1e999]}", "entry 1 (counting from 0, in file order) holds a non-finite number (NaN or ±inf) at index 0 of its list"),
        ("{\"0-0\": [1e308, 1e308], \"0-1\": [1]}", "entry 0 (counting from 0, in file order) has scores whose sum is not a finite number"),
        ("{\"0-0\": [1], \"SECRET-key\": [1]}", "entry 1 (counting from 0, in file order) has a key that is not \"layer-head\" (two non-negative integers below 1048576)"),
        ("{\"0-0\": [\"SECRET\"]}", "entry 0 (counting from 0, in file order) holds a non-number at index 0 of its list"),
        ("{\"0-0\": {\"SECRET\": 1}}", "entry 0 (counting from 0, in file order) is not a non-empty list of numbers"),
        ("{\"0-0\": [1], \"00-0\": [1]}", "entry 1 (counting from 0, in file order) repeats the layer and head of entry 0"),
        ("{\"0-0\": [-2]}", "entry 0 (counting from 0, in file order) has a negative importance (mean of its scores)"),
        ("{\"4611686018427387904-4\": [1]}", "entry 0 (counting from 0, in file order) has a key that is not \"layer-head\" (two non-negative integers below 1048576)"),
    ])
    func scoreFileEntriesAreNamedByIndexNeverByContent(_ text: String, _ why: String) throws {
        let path = try Self.scoreFile(text)
        do {
            _ = try HeadScores.load(path)
            Issue.record("accepted \(text)")
        } catch {
            #expect(error == .invalidArgument("head-score file \(path): \(why)"))
            #expect(!error.message.contains("SECRET"))
        }
    }

    @Test func aHugeGridIsAnErrorNotAnOverflow() throws {
        let path = try Self.scoreFile("{\"0-0\": [1], \"1048575-1048575\": [1]}")
        #expect(throws: KVDError.invalidArgument("head-score file \(path): 2 heads listed, a full 1048576 × 1048576 grid needs 1099511627776")) {
            _ = try HeadScores.load(path)
        }
    }

    @Test func requestNamedFilesStayInsideTheDirectories() throws {
        let root = NSTemporaryDirectory() + "kvd-files-\(UUID().uuidString)"
        let fm = FileManager.default
        try fm.createDirectory(atPath: root + "/allowed/sub", withIntermediateDirectories: true)
        try fm.createDirectory(atPath: root + "/private", withIntermediateDirectories: true)
        defer { try? fm.removeItem(atPath: root) }
        let good = "{\"0-0\": [1], \"0-1\": [2]}"
        try Data(good.utf8).write(to: URL(fileURLWithPath: root + "/allowed/good.json"))
        try Data(good.utf8).write(to: URL(fileURLWithPath: root + "/allowed/sub/nested.json"))
        try Data("{\"SECRET-0\": [1]}".utf8).write(to: URL(fileURLWithPath: root + "/private/secret.json"))
        try Data("SECRET".utf8).write(to: URL(fileURLWithPath: root + "/allowed/notjson.json"))
        try fm.createSymbolicLink(atPath: root + "/allowed/out.json", withDestinationPath: root + "/private/secret.json")
        try fm.createSymbolicLink(atPath: root + "/allowed/in.json", withDestinationPath: "sub/nested.json")
        #expect(mkfifo(root + "/allowed/fifo.json", 0o600) == 0)

        let files = FileAccess(baseDirectory: root + "/private", directories: [root + "/allowed"], requestParams: ["scores"])
        for name in ["good.json", "in.json", "sub/nested.json", "./sub//nested.json"] {
            let s = try HeadScores.load(param: "scores", name, files: files)
            #expect(s.importance == [1, 2], "\(name)")
        }
        for name in [
            root + "/allowed/good.json", root + "/private/secret.json", "../private/secret.json", "sub/../good.json", "out.json",
            "missing.json", "sub", "fifo.json", "notjson.json", "", ".", "good.json\0",
        ] {
            #expect(throws: HeadScores.refusal(name), "\(name)") { _ = try HeadScores.load(param: "scores", name, files: files) }
        }
        // The same names from the operator (a policy) resolve against the config directory and may
        // reach it, but nothing outside it and the directories.
        let config = FileAccess(baseDirectory: root + "/private", directories: [root + "/allowed"])
        #expect(throws: KVDError.self) { _ = try HeadScores.load(param: "scores", "secret.json", files: config) }  // a key that is not layer-head
        do {
            _ = try HeadScores.load(param: "scores", "secret.json", files: config)
        } catch {
            #expect(error.message.contains("entry 0") && !error.message.contains("SECRET"))
        }
        // A relative path that resolves outside the config directory and the directories is refused;
        // an absolute one is the operator's explicit choice.
        let elsewhere = FileAccess(baseDirectory: root + "/allowed/sub", directories: [root + "/allowed/sub"])
        for relative in ["../good.json", "../out.json"] {
            #expect(throws: KVDError.self) { _ = try HeadScores.load(param: "scores", relative, files: elsewhere) }
        }
        _ = try HeadScores.load(param: "scores", root + "/allowed/good.json", files: elsewhere)
    }
}
