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
}
