import Foundation
import KVDCore
import KVDPluginAPI
import KVDProtocol

/// Turns a Compact request's observation queries (inline, or in the sequence's staging buffer)
/// into f32 `[layers, q_heads, window, head_dim]`, checking shape and dtype against the model.
enum ObservationParser {
    static func parse(_ r: Kvd_V1_CompactRequest, _ entry: SequenceState, _ store: TenantStore) throws(KVDError) -> Observation? {
        let m = entry.sequence.layout
        switch r.observation {
        case nil:
            return nil
        case .queries(let t)?:
            let (w, dtype) = try check(t.dtype, t.shape, m)
            let count = m.layers * m.qHeads * w * m.headDim
            guard t.data.count == count * dtype.size else {
                throw .invalidArgument("compact: queries.data has \(t.data.count) bytes; shape \(t.shape) of \(dtype.rawValue) needs \(count * dtype.size)")
            }
            return t.data.withUnsafeBytes { raw in convert(raw.baseAddress!, dtype, w, m) }
        case .queriesShm(let t)?:
            let (w, dtype) = try check(t.dtype, t.shape, m)
            let bytes = m.layers * m.qHeads * w * m.headDim * dtype.size
            let stagingOffset = store.arena.sizing.stagingOffset
            guard let buffer = entry.staging else {
                throw .failedPrecondition("compact: queries_shm given but sequence \(entry.sequence.id.raw) has no staging buffer; send Stage first")
            }
            let lo = UInt64(stagingOffset + buffer.lowerBound)
            let hi = UInt64(stagingOffset + buffer.upperBound)
            guard t.offset >= lo, t.offset + UInt64(bytes) <= hi else {
                throw .invalidArgument("compact: queries_shm [\(t.offset), \(t.offset + UInt64(bytes))) is outside the sequence's staging buffer [\(lo), \(hi))")
            }
            return convert(UnsafeRawPointer(store.arena.base + Int(t.offset)), dtype, w, m)
        }
    }

    /// Shape must be [layers, q_heads, w, head_dim] with w ≥ 1; dtype the model's or f32.
    private static func check(_ dt: Kvd_V1_DType, _ shape: [UInt32], _ m: ModelLayout) throws(KVDError) -> (Int, DType) {
        guard let dtype = dt.core, dtype == m.dtype || dtype == .f32 else {
            throw .invalidArgument("compact: queries dtype \(dt) must be the model's (\(m.dtype.rawValue)) or f32")
        }
        guard shape.count == 4, Int(shape[0]) == m.layers, Int(shape[1]) == m.qHeads, Int(shape[3]) == m.headDim, shape[2] >= 1 else {
            throw .invalidArgument("compact: queries shape \(shape) does not match model '\(m.name)': expected [\(m.layers), \(m.qHeads), window ≥ 1, \(m.headDim)]")
        }
        return (Int(shape[2]), dtype)
    }

    private static func convert(_ src: UnsafeRawPointer, _ dtype: DType, _ w: Int, _ m: ModelLayout) -> Observation {
        let count = m.layers * m.qHeads * w * m.headDim
        let queries = [Float](unsafeUninitializedCapacity: count) { out, n in
            convertToF32(src, dtype, out.baseAddress!, count)
            n = count
        }
        return Observation(layers: m.layers, qHeads: m.qHeads, window: w, headDim: m.headDim, queries: queries)
    }
}
