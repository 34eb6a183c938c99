import Foundation
import KVDConfig
import KVDCore
import Testing

@Suite struct ConfigLoaderTests {
    static let model = """
        models:
          - name: "m"
            layers: 2
            kv_heads: 2
            q_heads: 4
            head_dim: 8
            dtype: "bf16"
            page_tokens: 4
        """

    func error(_ yaml: String) -> String? {
        do {
            _ = try ConfigLoader.parse(yaml, file: "test.yaml")
            return nil
        } catch {
            return error.message
        }
    }

    @Test func bundledDefaultLoads() throws {
        // Tests run from the package root.
        let c = try ConfigLoader.load(path: "Config/kvd.yaml")
        #expect(c.models.count >= 1)
        #expect(c.server.endpoints.allSatisfy { $0.hasPrefix("ipc://") || $0.hasPrefix("tcp://") })
        #expect(c.arena.sizeBytes == 256 << 20)
        #expect(c.arena.stagingBytes == 32 << 20)
    }

    @Test func minimalConfigTakesDefaults() throws {
        let c = try ConfigLoader.parse(Self.model)
        #expect(c.models == [ModelLayout(name: "m", layers: 2, kvHeads: 2, qHeads: 4, headDim: 8, dtype: .bf16, pageTokens: 4, defaultMethod: "streamingllm")])
        #expect(c.server == Configuration.Server())
        #expect(c.arena == Configuration.Arena())
    }

    @Test func sizesAcceptUnits() throws {
        let c = try ConfigLoader.parse("arena:\n  size_bytes: \"2MiB\"\n  staging_bytes: 4096\nserver:\n  max_message_bytes: \"1 KiB\"\n" + Self.model)
        #expect(c.arena.sizeBytes == 2 << 20)
        #expect(c.server.maxMessageBytes == 1024)
    }

    @Test func unknownKeyIsNamedWithItsLine() {
        let e = error("server:\n  endpoint: [\"ipc:///tmp/x\"]\n" + Self.model)
        #expect(e?.contains("test.yaml:2") == true)
        #expect(e?.contains("server.endpoint: unknown key") == true)
        #expect(error("extra: 1\n" + Self.model)?.contains("extra: unknown key") == true)
    }

    @Test func wrongTypesAreNamed() {
        #expect(error("server:\n  max_sequences: \"many\"\n" + Self.model)?.contains("server.max_sequences: must be an integer") == true)
        #expect(error("server:\n  endpoints: \"ipc:///x\"\n" + Self.model)?.contains("server.endpoints: must be a list") == true)
        #expect(error("server:\n  endpoints: [\"http://x\"]\n" + Self.model)?.contains("server.endpoints[0]") == true)
        #expect(error(Self.model.replacingOccurrences(of: "layers: 2", with: "layers: two"))?.contains("models[0].layers: must be an integer") == true)
        #expect(error(Self.model.replacingOccurrences(of: "\"bf16\"", with: "\"f8\""))?.contains("models[0].dtype") == true)
        #expect(error("arena:\n  size_bytes: \"lots\"\n" + Self.model)?.contains("arena.size_bytes") == true)
        #expect(error("log:\n  level: loud\n" + Self.model)?.contains("log.level") == true)
    }

    @Test func computeThreadsIsReadAndBounded() throws {
        #expect(try ConfigLoader.parse("server:\n  compute_threads: 1\n" + Self.model).server.computeThreads == 1)
        #expect(try ConfigLoader.parse(Self.model).server.computeThreads == 0, "0, every core, is the default")
        #expect(error("server:\n  compute_threads: -1\n" + Self.model)?.contains("server.compute_threads") == true)
        #expect(error("server:\n  compute_threads: \"all\"\n" + Self.model)?.contains("server.compute_threads: must be an integer") == true)
    }

    @Test func missingModelFieldIsNamed() {
        let e = error(Self.model.replacingOccurrences(of: "    head_dim: 8\n", with: ""))
        #expect(e?.contains("models[0]: missing required key 'head_dim'") == true)
        #expect(error("server:\n  max_sequences: 3\n")?.contains("models: missing") == true)
    }

    @Test func inconsistentModelIsNamed() {
        #expect(error(Self.model.replacingOccurrences(of: "q_heads: 4", with: "q_heads: 3"))?.contains("q_heads") == true)
    }

    @Test func arenaTooSmallForOnePageIsNamed() {
        let e = error("arena:\n  size_bytes: 4200\n  staging_bytes: 0\n" + Self.model)
        #expect(e?.contains("arena.size_bytes") == true)
        #expect(e?.contains("too small for one page") == true)
    }

    @Test func badShmNameIsNamed() {
        #expect(error("arena:\n  shm_name: \"kvd\"\n" + Self.model)?.contains("arena.shm_name") == true)
    }
}
