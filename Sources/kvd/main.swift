import ArgumentParser
import CKVDKernels
import Dispatch
import Foundation
import KVDConfig
import KVDCore
import KVDKeygen
import KVDPluginAPI
import KVDPluginHost
import KVDServer

#if canImport(Glibc)
import Glibc
#endif

/// `kvd --config FILE`: the KV-cache daemon.
struct KVDCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kvd",
        abstract: "KV-cache manager for LLM runtimes: KV pages in shared memory, protobuf over ZeroMQ.",
        usage: """
            kvd --config FILE
            kvd keygen [--out DIR] [--name NAME] | --public-of FILE
            """,
        discussion: """
            Stops cleanly on SIGTERM or SIGINT, removing its shared-memory segment and ipc socket files.
            SIGHUP reloads policies and rules from the config file without dropping sequences.
            """,
        version: KVDVersion.string,
        subcommands: [Keygen.self])

    // Optional only so that `kvd keygen` does without it (ArgumentParser checks a parent's
    // arguments for its subcommands too); serving without it is refused in run().
    @Option(name: .long, help: "YAML configuration file (see Config/kvd.yaml for every key).")
    var config: String?

    @Flag(name: .long, help: "With durability on: replace the segments and journals an earlier kvd left instead of adopting them (their sequences are lost).")
    var fresh = false

    func run() throws {
        guard let config else { throw ValidationError("Missing expected argument '--config <config>'") }
        // Before any thread exists, so that every thread inherits the mask (see SignalWaiter).
        SignalWaiter.block()
        // Multi-megabyte blobs reuse faulted-in heap pages (measured: page faults led the remote
        // tier's restore profile before this).
        kvd_malloc_tune()
        let (configuration, logger, book): (Configuration, Logger, PolicyBook)
        do {
            (configuration, logger, book) = try Self.load(config, fresh: fresh)
        } catch {
            FileHandle.standardError.write(Data("kvd: configuration error: \(error)\n".utf8))
            throw ExitCode(2)
        }
        let path = config
        let server = try Server(config: configuration, policies: book, logger: logger) {
            // Reload: policies, rules and memory-manager settings; models and the arena need a restart.
            let fresh = try ConfigLoader.load(path: path)
            let shape = { (m: ModelLayout) in [m.name, "\(m.layers)", "\(m.kvHeads)", "\(m.qHeads)", "\(m.headDim)", m.dtype.rawValue, "\(m.pageTokens)"] }
            guard fresh.models.map(shape) == configuration.models.map(shape) else {
                throw ConfigError("\(path): models changed; restart kvd to change model layouts")
            }
            return (try PolicyBook(config: fresh, registry: book.registry, file: path), fresh.memory)
        }

        // Signals become a flag plus a wake-up of the socket thread; nothing else runs on that thread.
        SignalWaiter.start(stop: server.stop, reload: server.reload)
        do {
            if try server.run() == .workersStillRunning {
                // A compaction may still be inside OpenBLAS: exit() would run its destructors
                // (freeing the buffers that worker uses) and crash the process on the way out.
                fflush(nil)  // every C stream; the logger writes unbuffered
                _exit(0)
            }
        } catch {
            logger.error("\(error)")
            throw ExitCode(1)
        }
    }

    /// The config, its logger and its compiled policies; any problem is a ConfigError.
    static func load(_ path: String, fresh: Bool = false) throws -> (Configuration, Logger, PolicyBook) {
        var configuration = try ConfigLoader.load(path: path)
        configuration.durability.fresh = fresh
        _ = try TransportSecurity(config: configuration, file: path)  // endpoints and CURVE keys
        let logger = Logger(level: configuration.logLevel, format: configuration.logFormat)
        let registry = try registry(configuration, logger)
        return (configuration, logger, try PolicyBook(config: configuration, registry: registry, file: path))
    }

    /// Built-in methods plus the C-ABI plugins found in the configured directories.
    static func registry(_ c: Configuration, _ logger: Logger) throws(ConfigError) -> MethodRegistry {
        var registry = MethodRegistry(Catalog.builtinMethods)
        do {
            let plugins = try CPluginLoader.loadAll(directories: c.pluginDirectories) { level, message in
                logger.log(level == 0 ? .error : level == 1 ? .warning : level == 2 ? .info : .debug, "plugin: \(message)")
            }
            for p in plugins {
                try registry.add(p.method, origin: p.origin)
                logger.info("loaded plugin method '\(p.method.descriptor.name)' from \(p.origin)")
            }
        } catch {
            throw ConfigError("plugins.directories: \(error.message.dropFirst(5))")
        }
        return registry
    }
}

KVDCommand.main()
