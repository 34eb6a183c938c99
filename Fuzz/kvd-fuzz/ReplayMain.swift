#if !KVD_LIBFUZZER
import Foundation

/// Without libFuzzer (a plain `swift build`) kvd-fuzz replays inputs through the same harness —
/// the corpus as a regression test, or a crash reproducer under a debugger — and writes the seed
/// corpus:
///
///     kvd-fuzz FILE_OR_DIR...          run every input once (KVD_FUZZ_TRACE=1 prints each request)
///     kvd-fuzz --write-seeds DIR       write the seed corpus (Fuzz/corpus)
@main
enum ReplayMain {
    static func main() throws {
        let args = Array(CommandLine.arguments.dropFirst())
        if args.first == "--write-seeds", args.count == 2 {
            let written = try Seeds.write(to: args[1])
            print("kvd-fuzz: wrote \(written) seeds to \(args[1])")
            return
        }
        guard !args.isEmpty, !args.contains(where: { $0.hasPrefix("-") }) else {
            FileHandle.standardError.write(Data("usage: kvd-fuzz FILE_OR_DIR... | kvd-fuzz --write-seeds DIR\n".utf8))
            exit(2)
        }
        setUpHarness()
        var count = 0
        for path in try inputs(args) {
            runOne(Array(try Data(contentsOf: URL(fileURLWithPath: path))))
            count += 1
        }
        print("kvd-fuzz: replayed \(count) inputs without a failure")
    }

    /// Files as given; directories expanded to their files, sorted, hidden ones skipped.
    private static func inputs(_ args: [String]) throws -> [String] {
        try args.flatMap { path -> [String] in
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
                throw CocoaError(.fileNoSuchFile, userInfo: [NSFilePathErrorKey: path])
            }
            guard isDirectory.boolValue else { return [path] }
            return try FileManager.default.contentsOfDirectory(atPath: path).filter { !$0.hasPrefix(".") }.sorted()
                .map { path + "/" + $0 }
        }
    }
}
#endif
