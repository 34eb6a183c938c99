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
        var order = Array(0..<(keys.count / d))
        var runWeight = [Float](repeating: 1, count: order.count)
        let scale = tau / Float(d).squareRoot()
        for _ in 0..<rounds {
            let n = order.count
            let padded = (n + block - 1) / block * block
            let draws = (0..<padded).map { _ in Self.unit(&rng) }
            var signs = [Int8](repeating: 0, count: padded)
            var k = [Float](repeating: 0, count: block * d)
            var v = [Float](repeating: 0, count: block * d)
            var gramK = [Float](repeating: 0, count: block * block)
            var gramV = [Float](repeating: 0, count: block * block)
            var blockSigns = [Float](repeating: 0, count: block)
            for start in stride(from: 0, to: padded, by: block) {
                // Gather the block (zeros past the end), weight the values, centre the keys.
                for r in 0..<block {
                    let i = start + r
                    for c in 0..<d {
                        if i < n {
                            let t = order[i]
                            k[r * d + c] = keys[t * d + c]
                            v[r * d + c] = values[t * d + c] * weights[t] * runWeight[i]
                        } else {
                            k[r * d + c] = 0
                            v[r * d + c] = 0
                        }
                    }
                }
                for c in 0..<d {
                    var mean: Float = 0
                    for r in 0..<block { mean += k[r * d + c] }
                    mean /= Float(block)
                    for r in 0..<block { k[r * d + c] -= mean }
                }
                if !uniform {
                    kvd_sgemm_abt(Int32(block), Int32(block), Int32(d), 1, k, k, &gramK)
                    kvd_sgemm_abt(Int32(block), Int32(block), Int32(d), 1, v, v, &gramV)
                }
                signs[start] = 1
                blockSigns[0] = 1
                for r in 1..<block {
                    var p: Float = 0.5
                    if !uniform {
                        let partial = gramK.withUnsafeBufferPointer { gk in
                            gramV.withUnsafeBufferPointer { gv in
                                kvd_balance_partial(gk.baseAddress! + r * block, gv.baseAddress! + r * block, blockSigns, r, scale, beta)
                            }
                        }
                        p = 0.5 - gamma * partial
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
            let ranked = (0..<n).sorted { a, b in weight[a] != weight[b] ? weight[a] > weight[b] : a < b }.prefix(half)
            order = ranked.map { order[$0] }
            runWeight = ranked.map { runWeight[$0] * weight[$0] }
        }
        return (order, runWeight)
    }
}
