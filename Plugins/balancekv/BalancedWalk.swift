import CKVDKernels
import Foundation
import KVDCore

/// One head's BalanceKV halving rounds (the walk of ksheth96/BalanceKV `balanced_walk`, weighted
/// variant). Inputs: the middle tokens' keys and values (f32, `[m, d]`), their current weights, and
/// a generator. Output: the kept tokens (indices into the middle, in the walk's final order) and the
/// weight each carries from these rounds (a product of 2s and 1s).
///
/// Per round, on the candidates in their current order:
/// 1. pad to a multiple of `block` with zero keys and values; split into blocks;
/// 2. per block: centre keys (mean over the block, pads included), kernel
///    K_ij = exp(τ⟨k̄_i, k̄_j⟩/√d − β) · (1e-8 + ⟨ṽ_i, ṽ_j⟩ + 0.025) with ṽ = v · weight;
/// 3. walk: s_0 = +1; for i ≥ 1, p_i = ½ − γ Σ_{j<i} K_ij s_j, s_i = +1 if u_i < p_i else −1, where
///    u_i is the next draw (one draw per padded position, position 0 included); `uniform`: p_i = ½;
/// 4. on the n real candidates: c = the later of the first positions where the −1 count and the +1
///    count reach ⌊n/2⌋ (a count that never gets there counts as position 0); weight_i = 1 after c,
///    else 2·s_i, negated when s_c = +1 — so the class that completed at c sorts last;
/// 5. stable sort by descending weight, keep the first ⌊n/2⌋ (that order is the next round's order)
///    and multiply their weights into the running product.
/// This follows the reference code where the paper's text says "first reaches": the code takes the later
/// of the two positions (`torch.maximum(c_neg, c_pos)`).
public struct BalancedWalk: Sendable {
    let block: Int
    let rounds: Int
    let gamma: Float
    let tau: Float
    let beta: Float
    let uniform: Bool

    /// Multiply-adds (×2, as FLOP) of the key and value Gram matrices of every block over all rounds,
    /// for `middle` tokens: what an sgemm roofline for this walk counts (`kvd-bench`).
    public static func gramFlops(middle: Int, dim: Int, block: Int, rounds: Int, uniform: Bool) -> Double {
        guard !uniform else { return 0 }
        var n = middle, total = 0.0
        for _ in 0..<rounds {
            let blocks = (n + block - 1) / block
            total += Double(blocks) * 2 * 2 * Double(block * block * dim)
            n /= 2
        }
        return total
    }

    /// Uniform in [0, 1) from the top 24 bits, so a NumPy port reproduces it exactly.
    @inline(__always) static func unit(_ rng: inout SplitMix64) -> Float { Float(rng.next() >> 40) / Float(1 << 24) }

    func run(keys: [Float], values: [Float], weights: [Float], dim d: Int, rng: inout SplitMix64) -> (kept: [Int], weights: [Float]) {
        keys.withUnsafeBufferPointer { k in
            values.withUnsafeBufferPointer { v in
                run(keys: k.baseAddress!, values: v.baseAddress!, count: keys.count / d, weights: weights, dim: d, rng: &rng)
            }
        }
    }

    /// The walk over `count` middle tokens whose keys and values are `[count, d]` at `keys` and
    /// `values` (a head's scratch buffers, read in place: copying the middle out cost more than
    /// the walk's own arithmetic). Every float operation is the one the array version did, in the
    /// same order, so results are bit for bit those of the NumPy port.
    func run(
        keys: UnsafePointer<Float>, values: UnsafePointer<Float>, count: Int, weights: [Float], dim d: Int, rng: inout SplitMix64
    ) -> (kept: [Int], weights: [Float]) {
        var order = Array(0..<count)
        var runWeight = [Float](repeating: 1, count: order.count)
        let scale = tau / Float(d).squareRoot()
        let k = UnsafeMutablePointer<Float>.allocate(capacity: block * d)
        let v = UnsafeMutablePointer<Float>.allocate(capacity: block * d)
        let gramK = UnsafeMutablePointer<Float>.allocate(capacity: block * block)
        let gramV = UnsafeMutablePointer<Float>.allocate(capacity: block * block)
        let mean = UnsafeMutablePointer<Float>.allocate(capacity: d)
        let blockSigns = UnsafeMutablePointer<Float>.allocate(capacity: block)
        gramK.initialize(repeating: 0, count: block * block)
        gramV.initialize(repeating: 0, count: block * block)
        defer { for p in [k, v, gramK, gramV, mean, blockSigns] { p.deallocate() } }
        for _ in 0..<rounds {
            let n = order.count
            let padded = (n + block - 1) / block * block
            let draws = (0..<padded).map { _ in Self.unit(&rng) }
            var signs = [Int8](repeating: 0, count: padded)
            for start in stride(from: 0, to: padded, by: block) {
                // Gather the block (zeros past the end), weight the values ((v·w)·ρ, as before),
                // centre the keys: the mean of column c sums rows 0, 1, ... in order, as before.
                order.withUnsafeBufferPointer { order in
                    weights.withUnsafeBufferPointer { weights in
                        runWeight.withUnsafeBufferPointer { runWeight in
                            for r in 0..<block {
                                let i = start + r
                                let (kr, vr) = (k + r * d, v + r * d)
                                if i < n {
                                    let t = order[i]
                                    kr.update(from: keys + t * d, count: d)
                                    let (src, w, rw) = (values + t * d, weights[t], runWeight[i])
                                    for c in 0..<d { vr[c] = src[c] * w * rw }
                                } else {
                                    kr.update(repeating: 0, count: d)
                                    vr.update(repeating: 0, count: d)
                                }
                            }
                        }
                    }
                }
                mean.update(repeating: 0, count: d)
                for r in 0..<block {
                    let kr = k + r * d
                    for c in 0..<d { mean[c] += kr[c] }
                }
                for c in 0..<d { mean[c] /= Float(block) }
                for r in 0..<block {
                    let kr = k + r * d
                    for c in 0..<d { kr[c] -= mean[c] }
                }
                if !uniform {
                    kvd_sgemm_abt(Int32(block), Int32(block), Int32(d), 1, k, k, gramK)
                    kvd_sgemm_abt(Int32(block), Int32(block), Int32(d), 1, v, v, gramV)
                }
                signs[start] = 1
                blockSigns[0] = 1
                for r in 1..<block {
                    var p: Float = 0.5
                    if !uniform {
                        p = 0.5 - gamma * kvd_balance_partial(gramK + r * block, gramV + r * block, blockSigns, r, scale, beta)
                    }
                    signs[start + r] = draws[start + r] < p ? 1 : -1
                    blockSigns[r] = Float(signs[start + r])
                }
            }
            // Halve: the class that reached ⌊n/2⌋ last (at c) is dropped up to c.
            let half = n / 2
            var negatives = 0, positives = 0
            var cNeg = 0, cPos = 0
            var negDone = false, posDone = false
            for i in 0..<n {
                if signs[i] < 0 { negatives += 1 } else { positives += 1 }
                if !negDone, negatives == half { cNeg = i; negDone = true }
                if !posDone, positives == half { cPos = i; posDone = true }
            }
            let c = max(cNeg, cPos)
            let flip: Float = signs[c] == 1 ? -1 : 1
            let weight = (0..<n).map { i in i > c ? Float(1) : 2 * Float(signs[i]) * flip }
            // Ranked by descending weight, ties by index: the weights are only 2, 1 and −2, so the
            // order is the 2s, then the 1s, then the −2s, each in index order (what the stable sort
            // by (weight desc, index asc) gave, in O(n)).
            var ranked: [Int] = []
            ranked.reserveCapacity(n)
            for w: Float in [2, 1, -2] { for i in 0..<n where weight[i] == w { ranked.append(i) } }
            let kept = ranked.prefix(half)
            order = kept.map { order[$0] }
            runWeight = kept.map { runWeight[$0] * weight[$0] }
        }
        return (order, runWeight)
    }
}
