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

/// Integer shares of `total` proportional to non-negative integer `numerators`, computed exactly:
/// share_i = ⌊n_i·total / Σn⌋, then +1 to the largest remainders (n_i·total mod Σn), ties to the
/// lower index. No floating point, so shares that are exactly tied stay tied and the documented
/// tie rule decides (the Double version can see 57.6 as 57.60000000000001 and break the tie the
/// other way). nil when a numerator is negative or Σn overflows; callers then use the Double
/// version. All numerators 0: spread evenly, as the Double version does.
public func largestRemainder(numerators: [Int], total: Int) -> [Int]? {
    let n = numerators.count
    guard n > 0 else { return [] }
    let total = max(0, total)
    guard numerators.allSatisfy({ $0 >= 0 }) else { return nil }
    var sum = 0
    for x in numerators {
        let (s, overflow) = sum.addingReportingOverflow(x)
        if overflow { return nil }
        sum = s
    }
    guard sum > 0, total > 0 else {
        return (0..<n).map { total / n + ($0 < total % n ? 1 : 0) }
    }
    // n_i·total can pass Int.max: multiply to 128 bits and divide back; the quotient is at most
    // total because n_i ≤ Σn, so it fits.
    var shares = [Int](repeating: 0, count: n)
    var remainders = [Int](repeating: 0, count: n)
    for (i, x) in numerators.enumerated() {
        let wide = total.multipliedFullWidth(by: x)
        let (q, r) = sum.dividingFullWidth(wide)
        shares[i] = q
        remainders[i] = r
    }
    let missing = total - shares.reduce(0, +)
    let order = remainders.indices.sorted { a, b in
        remainders[a] != remainders[b] ? remainders[a] > remainders[b] : a < b
    }
    for i in order.prefix(missing) { shares[i] += 1 }
    return shares
}

/// `x` as the decimal fraction p/q it was written as, q = 10^k for the fewest decimals k ≤ 9 that
/// give back exactly `x` (0.2 → 2/10). Parameters arrive as Doubles, and 0.2 as a Double is
/// slightly more than 1/5, which is enough to break a tie between shares the wrong way. nil for
/// values needing more than 9 decimals, negative or non-finite ones.
public func decimalFraction(_ x: Double) -> (numerator: Int, denominator: Int)? {
    guard x.isFinite, x >= 0 else { return nil }
    var q = 1
    for _ in 0...9 {
        let scaled = (x * Double(q)).rounded()
        if scaled < 9.0e15, Double(Int(scaled)) / Double(q) == x { return (Int(scaled), q) }
        q *= 10
    }
    return nil
}
