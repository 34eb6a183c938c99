/// 1-D pooling over a head's scores, stride 1, "same" size, as SnapKV-style methods smooth scores
/// so neighbours of an important token survive with it.
public enum PoolingKind: String, Sendable, CaseIterable {
    /// Average with zero padding counted (PyTorch avg_pool1d's default, which kvpress uses).
    case avg
    /// Maximum; padding never wins.
    case max
    /// No smoothing.
    case none
}

public func pool(_ x: [Float], kind: PoolingKind, kernel: Int) -> [Float] {
    guard kind != .none, kernel > 1, !x.isEmpty else { return x }
    let half = kernel / 2
    let n = x.count
    return [Float](unsafeUninitializedCapacity: n) { out, initialized in
        x.withUnsafeBufferPointer { x in
            let x = x.baseAddress!
            switch kind {
            case .avg:
                // A plain sum per position, left to right (kernels are small), so results match a
                // reference bit for bit more often than a running sum would; zero padding counts in
                // the divisor.
                for i in 0..<n {
                    var sum: Float = 0
                    for j in Swift.max(0, i - half)...Swift.min(n - 1, i + half) { sum += x[j] }
                    out[i] = sum / Float(kernel)
                }
            case .max:
                for i in 0..<n {
                    var m = -Float.infinity
                    for j in Swift.max(0, i - half)...Swift.min(n - 1, i + half) where x[j] > m { m = x[j] }
                    out[i] = m
                }
            case .none:
                break
            }
        }
        initialized = n
    }
}
