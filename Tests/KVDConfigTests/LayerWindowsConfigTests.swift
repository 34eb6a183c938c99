import KVDConfig
import KVDCore
import Testing

/// `layer_windows`: one window per layer, 0 or 1...2^24, each bad entry named with its line.
@Suite struct LayerWindowsConfigTests {
    func config(_ windows: String) -> String {
        ConfigLoaderTests.model + "\n    layer_windows: \(windows)\n"
    }

    func error(_ yaml: String) -> String? {
        do {
            _ = try ConfigLoader.parse(yaml, file: "test.yaml")
            return nil
        } catch {
            return error.message
        }
    }

    @Test func windowsAreRead() throws {
        #expect(try ConfigLoader.parse(config("[512, 0]")).models[0].layerWindows == [512, 0])
        #expect(try ConfigLoader.parse(config("[16777216, 1]")).models[0].layerWindows == [1 << 24, 1])
        #expect(try ConfigLoader.parse(ConfigLoaderTests.model).models[0].layerWindows == [], "absent: every layer full")
    }

    @Test func badWindowsAreNamed() {
        #expect(error(config("[512]"))?.contains("layer_windows: has 1 entries for 2 layers") == true)
        #expect(error(config("[512, 0, 0]"))?.contains("has 3 entries for 2 layers") == true)
        #expect(error(config("[]"))?.contains("models[0].layer_windows: must list one window per layer") == true)
        #expect(error(config("[-1, 0]"))?.contains("models[0].layer_windows[0]: must be in 0...16777216, got -1") == true)
        #expect(error(config("[0, 16777217]"))?.contains("models[0].layer_windows[1]: must be in 0...16777216") == true)
        // Hostile numbers: past Int64, floats, strings, a map.
        #expect(error(config("[0, 99999999999999999999999]"))?.contains("models[0].layer_windows[1]: must be an integer") == true)
        #expect(error(config("[0, 1.5]"))?.contains("layer_windows[1]: must be an integer") == true)
        #expect(error(config("[\"512\", 0]"))?.contains("layer_windows[0]: must be an integer") == true)
        #expect(error(config("512"))?.contains("layer_windows: must be a list") == true)
        #expect(error(config("{a: 1}"))?.contains("layer_windows: must be a list") == true)
    }

    @Test func gemmaEntryOfTheBundledConfig() throws {
        let c = try ConfigLoader.load(path: "Config/kvd.yaml")
        let g = try #require(c.models.first { $0.name == "gemma3-270m" })
        #expect(g.layers == 18 && g.kvHeads == 1 && g.qHeads == 4 && g.headDim == 256 && g.pageTokens == 16)
        #expect(g.layerWindows == (0..<18).map { [5, 11, 17].contains($0) ? 0 : 512 })
        #expect(g.defaultMethod == "streamingllm" && g.defaultPolicy == "")
    }
}
