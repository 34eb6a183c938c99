import ArgumentParser
import Dispatch
import Foundation
import KVDConfig
import KVDPluginAPI
import KVDServer
import StreamingLLM

#if canImport(Glibc)
import Glibc
#endif

/// `kvd --config FILE`: the KV-cache daemon.
struct KVDCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kvd",
        abstract: "KV-cache manager for LLM runtimes: KV pages in shared memory, protobuf over ZeroMQ.",
        discussion: "Stops cleanly on SIGTERM or SIGINT, removing its shared-memory segment and ipc socket files.",
        version: KVDVersion.string)

    @Option(name: .long, help: "YAML configuration file (see Config/kvd.yaml for every key).")
    var config: String

    func run() throws {
        let configuration: Configuration
        do {
            configuration = try ConfigLoader.load(path: config)
        } catch {
            FileHandle.standardError.write(Data("kvd: configuration error: \(error.message)\n".utf8))
            throw ExitCode(2)
        }
        let logger = Logger(level: configuration.logLevel)
        let methods = MethodRegistry([StreamingLLM()])
        let server = try Server(config: configuration, methods: methods, logger: logger)

        // Signals become a flag plus a wake-up of the socket thread; nothing else runs in the handler.
        var sources: [DispatchSourceSignal] = []
        for sig in [SIGTERM, SIGINT] {
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler { server.stop() }
            source.resume()
            sources.append(source)
        }
        do {
            try server.run()
        } catch {
            logger.error("\(error)")
            throw ExitCode(1)
        }
        withExtendedLifetime(sources) {}
    }
}

KVDCommand.main()
