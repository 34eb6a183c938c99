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
            let (count, bytes) = try size(w, dtype, m, "queries")
            guard t.data.count == bytes else {
                throw .invalidArgument("compact: queries.data has \(t.data.count) bytes; shape \(t.shape) of \(dtype.rawValue) needs \(bytes)")
            }
            // Data's withUnsafeBytes is untyped-rethrows, so the typed error travels out as a Result.
            return try t.data.withUnsafeBytes { raw in
                Result { () throws(KVDError) in try convert(raw.baseAddress!, dtype, w, count, m, "queries") }
            }.get()
        case .queriesShm(let t)?:
            let (w, dtype) = try check(t.dtype, t.shape, m)
            let (count, bytes) = try size(w, dtype, m, "queries_shm")
            let stagingOffset = store.arena.sizing.stagingOffset
            guard let buffer = entry.staging else {
                throw .failedPrecondition("compact: queries_shm given but sequence \(entry.sequence.id.raw) has no staging buffer; send Stage first")
            }
            let lo = UInt64(stagingOffset + buffer.lowerBound)
            let hi = UInt64(stagingOffset + buffer.upperBound)
            // offset is any uint64 from the wire: offset + bytes may not even be a uint64.
            let (end, overflow) = t.offset.addingReportingOverflow(UInt64(bytes))
            guard t.offset >= lo, !overflow, end <= hi else {
                throw .invalidArgument(
                    "compact: queries_shm.offset \(t.offset) with \(bytes) bytes (shape \(t.shape) of \(dtype.rawValue)) is outside "
                        + "the sequence's staging buffer [\(lo), \(hi)); place the queries inside the buffer Stage returned")
            }
            return try convert(UnsafeRawPointer(store.arena.base + Int(t.offset)), dtype, w, count, m, "queries_shm")
        }
    }

    /// Elements and bytes of `[layers, q_heads, w, head_dim]` in `dtype`; w comes off the wire, so
    /// the product is checked.
    private static func size(_ w: Int, _ dtype: DType, _ m: ModelLayout, _ field: String) throws(KVDError) -> (count: Int, bytes: Int) {
        var count = m.layers * m.qHeads * m.headDim
        var overflow: Bool
        (count, overflow) = count.multipliedReportingOverflow(by: w)
        let (bytes, overflow2) = count.multipliedReportingOverflow(by: dtype.size)
        guard !overflow, !overflow2 else {
            throw .invalidArgument("compact: \(field).shape window \(w) is too large: the queries would not fit in memory")
        }
        return (count, bytes)
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

    /// Converts to f32 and refuses NaN and ±inf (f16 and bf16 ones too: they convert to f32's):
    /// scores built on them would be meaningless and budgets computed from them could not be rounded.
    private static func convert(
        _ src: UnsafeRawPointer, _ dtype: DType, _ w: Int, _ count: Int, _ m: ModelLayout, _ field: String
    ) throws(KVDError) -> Observation {
        let queries = [Float](unsafeUninitializedCapacity: count) { out, n in
            convertToF32(src, dtype, out.baseAddress!, count)
            n = count
        }
        if let bad = queries.firstIndex(where: { !$0.isFinite }) {
            let d = m.headDim
            let (row, dim) = (bad / d, bad % d)
            let (layer, rest) = (row / (m.qHeads * w), row % (m.qHeads * w))
            throw .invalidArgument(
                "compact: \(field) holds a non-finite value (NaN or ±inf) at [layer \(layer), q_head \(rest / w), "
                    + "window \(rest % w), dim \(dim)]; send finite query vectors")
        }
        return Observation(layers: m.layers, qHeads: m.qHeads, window: w, headDim: m.headDim, queries: queries)
    }
}
