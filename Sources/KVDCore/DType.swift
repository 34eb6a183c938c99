/// Element type of K and V, stored little-endian.
public enum DType: String, Sendable, CaseIterable {
    case f16
    case bf16
    case f32

    /// Bytes per element.
    public var size: Int {
        switch self {
        case .f16, .bf16: 2
        case .f32: 4
        }
    }

    /// The number the wire format and the C kernels use (kvd.v1.DType, kvd_dtype): 1 f16, 2 bf16, 3 f32.
    public var kvdCode: Int32 {
        switch self {
        case .f16: 1
        case .bf16: 2
        case .f32: 3
        }
    }
}
