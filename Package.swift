// swift-tools-version:6.1
// kvd — a KV-cache manager daemon for LLM runtimes. Targets are split by role (see docs/ARCHITECTURE.md).
//
// Dependencies, and why each is worth its build time:
// - swift-protobuf: the wire format (generated code is committed; only the runtime library builds).
// - Yams: YAML config files (`kvd --config Config/kvd.yaml`), with line numbers for errors.
// - swift-argument-parser: `kvd --help`, `--version`, `--config`, and kvctl's verbs, with standard behaviour.
// - swift-log: the logging API the server-side Swift world shares; kvd adds its plain / JSON-lines
//   handler (no dependencies of its own, seconds of build time).
// - swift-prometheus (with swift-metrics' CoreMetrics): the metrics registry and the Prometheus text
//   format behind /metrics; ~17 s of a clean build. The HTTP side is libmicrohttpd (README.md says why).
// System libraries: libzmq (transport), hiredis (the Redis tier) and libmicrohttpd (/metrics), linked; OpenBLAS (sgemm for window attention), opened at run time.
import PackageDescription

let package = Package(
    name: "kvd",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "kvd", targets: ["kvd"]),
        .executable(name: "kvctl", targets: ["kvctl"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-protobuf", exact: "1.39.0"),
        .package(url: "https://github.com/jpsim/Yams", exact: "6.2.2"),
        .package(url: "https://github.com/apple/swift-argument-parser", exact: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", exact: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-prometheus", exact: "2.4.1"),
        .package(url: "https://github.com/apple/swift-metrics", exact: "2.13.0"),
    ],
    targets: [
        // libzmq through pkg-config (Debian: libzmq3-dev).
        .systemLibrary(
            name: "CZMQ",
            path: "Sources/CZMQ",
            pkgConfig: "libzmq",
            providers: [.apt(["libzmq3-dev"])]
        ),
        // hiredis through pkg-config (Debian: libhiredis-dev, 0.14 API only).
        .systemLibrary(
            name: "CHiredis",
            path: "Sources/CHiredis",
            pkgConfig: "hiredis",
            providers: [.apt(["libhiredis-dev"])]
        ),
        // The /metrics HTTP endpoint on libmicrohttpd (Debian: libmicrohttpd-dev): a C shim, since
        // MHD_start_daemon is variadic; serves from libmicrohttpd's own thread.
        .target(name: "CKVDHTTP", path: "Sources/CKVDHTTP", linkerSettings: [.linkedLibrary("microhttpd")]),
        // C kernels with run-time CPU dispatch: f16/bf16 → f32 (F16C), window softmax, and OpenBLAS
        // opened at first use (see blas.c for why it is not linked).
        .target(name: "CKVDKernels", path: "Sources/CKVDKernels", cSettings: [.unsafeFlags(["-O3"])]),
        // The C ABI third-party plugins are built against (header only).
        .target(name: "CKVDPluginABI", path: "Sources/CKVDPluginABI"),
        // The Redis client layer (docs/REMOTE.md): one node or a Redis Cluster, synchronous and bounded
        // by timeouts; the only code that calls hiredis.
        .target(name: "KVDRemote", dependencies: ["CHiredis"], path: "Sources/KVDRemote"),
        // CURVE keys in Z85 (generate, derive, read key files): the daemon's transport and both
        // command lines use them.
        .target(name: "KVDKeys", dependencies: ["CZMQ"], path: "Sources/KVDKeys"),
        // `keygen`, one command shared by `kvd keygen` and `kvctl keygen`.
        .target(
            name: "KVDKeygen",
            dependencies: ["KVDKeys", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "Sources/KVDKeygen"
        ),
        // Pure model: layouts, ids, page allocator, head caches, plans, packing. No I/O.
        .target(name: "KVDCore", dependencies: ["CKVDKernels"], path: "Sources/KVDCore"),
        // Crash safety: the journal and snapshot files that let a restarted kvd adopt its segment
        // (docs/DURABILITY.md); the only code that calls libc for regular files.
        .target(name: "KVDJournal", dependencies: ["KVDCore"], path: "Sources/KVDJournal"),
        // The POSIX shared-memory arena; the only code that calls libc for shm.
        .target(name: "KVDShm", dependencies: ["KVDCore"], path: "Sources/KVDShm"),
        // What a compaction method sees and returns: views, stages (scorer, allocator, selector),
        // parameters, top-k and budget arithmetic. Built-in and external methods implement it.
        .target(name: "KVDPluginAPI", dependencies: ["KVDCore", "CKVDKernels"], path: "Sources/KVDPluginAPI"),
        // Window attention (BLAS), shared by the query-based methods.
        .target(name: "KVDAttention", dependencies: ["KVDPluginAPI", "CKVDKernels"], path: "Sources/KVDAttention"),
        // Built-in compaction methods, one folder each (regular targets, not SwiftPM plugins).
        .target(name: "StreamingLLM", dependencies: ["KVDPluginAPI"], path: "Plugins/streamingllm"),
        .target(name: "KeyNorm", dependencies: ["KVDPluginAPI", "CKVDKernels"], path: "Plugins/knorm"),
        .target(name: "SnapKV", dependencies: ["KVDAttention"], path: "Plugins/snapkv"),
        .target(name: "H2O", dependencies: ["KVDAttention"], path: "Plugins/h2o"),
        .target(name: "PyramidKV", dependencies: ["KVDAttention"], path: "Plugins/pyramidkv"),
        .target(name: "AdaKV", dependencies: ["KVDAttention"], path: "Plugins/adakv"),
        .target(name: "HeadKV", dependencies: ["KVDAttention"], path: "Plugins/headkv"),
        .target(name: "DBudgetKV", dependencies: ["KVDAttention"], path: "Plugins/dbudgetkv"),
        .target(name: "KVSharer", dependencies: ["KVDPluginAPI"], path: "Plugins/kvsharer"),
        .target(name: "BalanceKV", dependencies: ["KVDPluginAPI", "CKVDKernels"], path: "Plugins/balancekv"),
        // Copy-me template (compiled and tested, not registered).
        .target(name: "PluginTemplate", dependencies: ["KVDPluginAPI"], path: "Plugins/template"),
        // Everything that turns config and requests into a method to run: built-in catalog,
        // policies and rules, plan checks, and the C-ABI plugin loader.
        .target(
            name: "KVDPluginHost",
            dependencies: [
                "KVDPluginAPI", "KVDConfig", "CKVDPluginABI", "StreamingLLM", "KeyNorm", "SnapKV", "H2O",
                "PyramidKV", "AdaKV", "HeadKV", "BalanceKV", "DBudgetKV", "KVSharer",
            ],
            path: "Sources/KVDPluginHost"
        ),
        // Generated protobuf code plus the mapping between wire and core types.
        .target(
            name: "KVDProtocol",
            dependencies: ["KVDCore", .product(name: "SwiftProtobuf", package: "swift-protobuf")],
            path: "Sources/KVDProtocol"
        ),
        // Configuration file model and strict YAML loading.
        .target(
            name: "KVDConfig",
            dependencies: ["KVDCore", .product(name: "Yams", package: "Yams")],
            path: "Sources/KVDConfig"
        ),
        // ZeroMQ server, request handlers, sequence store.
        .target(
            name: "KVDServer",
            dependencies: [
                "KVDCore", "KVDShm", "KVDJournal", "KVDRemote", "KVDProtocol", "KVDConfig", "KVDPluginAPI", "KVDPluginHost", "KVSharer",
                "KVDKeys", "CZMQ", "CKVDHTTP", .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"), .product(name: "CoreMetrics", package: "swift-metrics"),
            ],
            path: "Sources/KVDServer"
        ),
        .executableTarget(
            name: "kvd",
            dependencies: [
                "KVDServer", "KVDConfig", "KVDPluginHost", "CKVDKernels", "KVDKeygen",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Sources/kvd"
        ),
        // The admin command line (docs/KVCTL.md): a protocol client like any other (ZeroMQ +
        // the generated messages), never linked with the server.
        .executableTarget(
            name: "kvctl",
            dependencies: [
                "CZMQ", "KVDProtocol", "KVDConfig", "KVDKeys", "KVDKeygen",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Sources/kvctl"
        ),
        // Compaction benchmark (swift run -c release kvd-bench): methods against their roofline.
        .executableTarget(
            name: "kvd-bench",
            dependencies: ["KVDCore", "KVDPluginAPI", "KVDPluginHost", "CKVDKernels", "BalanceKV"],
            path: "Benchmarks/compaction"
        ),
        // Raw ZeroMQ ROUTER echo in Swift: the baseline of the request-overhead benchmarks.
        .executableTarget(name: "kvd-echo", dependencies: ["CZMQ"], path: "Benchmarks/echo"),
        // libFuzzer target over request decoding and dispatch (Fuzz/README.md). A plain build makes
        // the replay tool (runs inputs, writes the seed corpus); scripts/fuzz.sh builds the fuzzer
        // with --sanitize fuzzer and -DKVD_LIBFUZZER, where libFuzzer supplies main.
        .executableTarget(
            name: "kvd-fuzz",
            dependencies: [
                "KVDServer", "KVDConfig", "KVDCore", "KVDPluginAPI", "KVDPluginHost", "KVDProtocol",
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ],
            path: "Fuzz/kvd-fuzz"
        ),
        .testTarget(name: "KVDCoreTests", dependencies: ["KVDCore"], path: "Tests/KVDCoreTests"),
        .testTarget(name: "KVDShmTests", dependencies: ["KVDShm"], path: "Tests/KVDShmTests"),
        .testTarget(name: "KVDJournalTests", dependencies: ["KVDJournal", "KVDCore"], path: "Tests/KVDJournalTests"),
        .testTarget(name: "KVDRemoteTests", dependencies: ["KVDRemote"], path: "Tests/KVDRemoteTests"),
        .testTarget(name: "KVDConfigTests", dependencies: ["KVDConfig"], path: "Tests/KVDConfigTests"),
        .testTarget(
            name: "KVDServerTests",
            dependencies: [
                "KVDServer", "KVDKeys", "KVDConfig", "KVDCore", "KVDShm", "KVDPluginAPI", "KVDPluginHost", "KVDProtocol",
                .product(name: "Prometheus", package: "swift-prometheus"), .product(name: "Logging", package: "swift-log"),
            ],
            path: "Tests/KVDServerTests"),
        .testTarget(
            name: "KVDProtocolTests",
            dependencies: ["KVDProtocol", .product(name: "SwiftProtobuf", package: "swift-protobuf")],
            path: "Tests/KVDProtocolTests"
        ),
        .testTarget(
            name: "KVDPluginTests",
            dependencies: ["KVDPluginAPI", "KVDPluginHost", "StreamingLLM", "KeyNorm", "SnapKV", "H2O", "PyramidKV", "AdaKV", "HeadKV", "KVDAttention", "PluginTemplate", "BalanceKV", "DBudgetKV", "KVSharer"],
            path: "Tests/KVDPluginTests"
        ),
    ]
)
