/// Integer shares of `total` proportional to `weights`, rounded with the largest-remainder method so
/// they add up to `total` exactly (plain rounding misses by a few). Ties go to the lower index.
///
/// Never traps, whatever the weights: NaN and negative weights count as 0; if some weights are +inf,
/// those share `total` equally and the rest get 0 (the limit of finite weights growing without
/// bound); finite weights whose sum overflows are scaled down first. A negative `total` is 0.
public func largestRemainder(_ weights: [Double], total: Int) -> [Int] {
    let n = weights.count
    guard n > 0 else { return [] }
    let total = max(0, total)
    var clean = weights.map { $0.isNaN || $0 < 0 ? 0 : $0 }
    if clean.contains(.infinity) { clean = clean.map { $0 == .infinity ? 1 : 0 } }
    var sum = clean.reduce(0, +)
    if !sum.isFinite, let top = clean.max(), top > 0 {
        // Every weight is finite but the sum is not: shares only depend on ratios.
        clean = clean.map { $0 / top }
        sum = clean.reduce(0, +)
    }
    guard sum > 0, total > 0 else {
        // No weight at all: spread evenly.
        return (0..<n).map { total / n + ($0 < total % n ? 1 : 0) }
    }
    let exact = clean.map { $0 / sum * Double(total) }
    // Floors, never more than what is left of `total`: rounding can push an exact share up to an
    // integer (or Double(total) past Int.max), and the shares must neither pass total nor leave Int.
    var remaining = total
    var shares = exact.map { x -> Int in
        let floor = x.rounded(.down)
        let share = floor >= Double(remaining) ? remaining : Int(floor)
        remaining -= share
        return share
    }
    let order = exact.indices.sorted { a, b in
        let ra = exact[a] - Double(shares[a]), rb = exact[b] - Double(shares[b])
        return ra != rb ? ra > rb : a < b
    }
    for i in order.prefix(remaining) { shares[i] += 1 }
    return shares
}
