import KVDCore
import KVDProtocol

/// Deterministic tensor contents. The victim's K/V must be reproducible bit for bit to be checked
/// after every input; the fuzz program picks a fill to reach the numeric corners of scoring
/// (zeros, NaN, infinities, huge values).
enum TensorBytes {
    enum Fill: CaseIterable {
        case pattern, zeros, nan, infinity, huge, mixed
    }

    /// `count` elements of `dtype`, little-endian. `pattern` values are finite, in about [-2, 2),
    /// and differ per `seed` and element; `mixed` sprinkles NaN, ±inf and 0 into the pattern.
    static func make(_ count: Int, _ dtype: DType, fill: Fill = .pattern, seed: UInt64) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(count * dtype.size)
        var state = seed &* 0x9E37_79B9_7F4A_7C15 | 1
        for i in 0..<count {
            // xorshift64*: cheap, and the same on every platform.
            state ^= state >> 12
            state ^= state << 25
            state ^= state >> 27
            let r = state &* 0x2545_F491_4F6C_DD1D
            let patterned = Float(Int(r >> 40) - (1 << 23)) / Float(1 << 22)
            let value: Float
            switch fill {
            case .pattern: value = patterned
            case .zeros: value = 0
            case .nan: value = .nan
            case .infinity: value = i % 2 == 0 ? .infinity : -.infinity
            case .huge: value = i % 2 == 0 ? 6.0e4 : -3.0e38
            case .mixed: value = i % 4 == 3 ? [Float.nan, .infinity, -.infinity, 0][Int(r % 4)] : patterned
            }
            append(value, dtype, to: &out)
        }
        return out
    }

    private static func append(_ v: Float, _ dtype: DType, to out: inout [UInt8]) {
        switch dtype {
        case .f32:
            let bits = v.bitPattern
            out += [UInt8(truncatingIfNeeded: bits), UInt8(truncatingIfNeeded: bits >> 8), UInt8(truncatingIfNeeded: bits >> 16), UInt8(truncatingIfNeeded: bits >> 24)]
        case .f16:
            let bits = Float16(v).bitPattern
            out += [UInt8(truncatingIfNeeded: bits), UInt8(truncatingIfNeeded: bits >> 8)]
        case .bf16:
            let bits = UInt16(truncatingIfNeeded: v.bitPattern >> 16)
            out += [UInt8(truncatingIfNeeded: bits), UInt8(truncatingIfNeeded: bits >> 8)]
        }
    }

    /// A `[layers, kv_heads, tokens, head_dim]` tensor of the model's dtype.
    static func kv(_ m: ModelLayout, tokens: Int, fill: Fill = .pattern, seed: UInt64) -> Kvd_V1_Tensor {
        var t = Kvd_V1_Tensor()
        t.dtype = Kvd_V1_DType(m.dtype)
        t.shape = [UInt32(m.layers), UInt32(m.kvHeads), UInt32(tokens), UInt32(m.headDim)]
        t.data = .init(make(m.layers * m.kvHeads * tokens * m.headDim, m.dtype, fill: fill, seed: seed))
        return t
    }
}
