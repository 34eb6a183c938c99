import CKVDHTTP
import Foundation
import KVDConfig

/// The HTTP side of metrics: GET /metrics on `metrics.listen`, served by libmicrohttpd from its own
/// thread (never the ZeroMQ socket thread), rendering `ServerMetrics` at each scrape.
final class MetricsEndpoint {
    private let server: OpaquePointer
    private let context: Unmanaged<ServerMetrics>
    /// The address actually listened on ("127.0.0.1:40123" when the config asked for port 0).
    let listening: String

    struct StartError: Error, CustomStringConvertible {
        let description: String
    }

    /// Listens now; a taken port or an unusable address throws a message naming metrics.listen.
    init(_ settings: Configuration.Metrics, metrics: ServerMetrics) throws(StartError) {
        let context = Unmanaged.passRetained(metrics)
        var error = [CChar](repeating: 0, count: 256)
        guard let server = kvd_http_start(settings.host, UInt16(clamping: settings.port), { context, length in
            let metrics = Unmanaged<ServerMetrics>.fromOpaque(context!).takeUnretainedValue()
            let text = metrics.render()
            guard let body = malloc(max(1, text.count)) else { return nil }
            text.withUnsafeBytes { if let bytes = $0.baseAddress { body.copyMemory(from: bytes, byteCount: $0.count) } }
            length!.pointee = text.count
            return body.assumingMemoryBound(to: CChar.self)
        }, context.toOpaque(), &error, error.count) else {
            context.release()
            let why = String(decoding: error.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            throw StartError(description: "metrics.listen \(settings.listen): \(why); pick a free port (or 0 for any), or set metrics.enabled: false")
        }
        self.server = server
        self.context = context
        var bound = settings
        bound.port = Int(kvd_http_port(server))
        listening = bound.listen
    }

    /// Stops serving; no render runs after this returns.
    func stop() {
        kvd_http_stop(server)
        context.release()
    }
}
