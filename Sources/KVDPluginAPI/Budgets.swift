/// Integer shares of `total` proportional to `weights`, rounded with the largest-remainder method so
/// they add up to `total` exactly (plain rounding misses by a few). Ties go to the lower index.
public func largestRemainder(_ weights: [Double], total: Int) -> [Int] {
    let sum = weights.reduce(0, +)
    guard sum > 0, total > 0 else {
        // No weight at all: spread evenly.
        let n = weights.count
        guard n > 0 else { return [] }
        return (0..<n).map { total / n + ($0 < total % n ? 1 : 0) }
    }
    let exact = weights.map { $0 / sum * Double(total) }
    var shares = exact.map { Int($0.rounded(.down)) }
    let missing = total - shares.reduce(0, +)
    let order = exact.indices.sorted { a, b in
        let ra = exact[a] - Double(shares[a]), rb = exact[b] - Double(shares[b])
        return ra != rb ? ra > rb : a < b
    }
    for i in order.prefix(missing) { shares[i] += 1 }
    return shares
}
