import KVDCore
import KVDProtocol

/// Checks an appended K or V tensor against the model layout, with messages that say what to fix.
enum TensorCheck {
    /// Validates keys and values of an Append and returns the token count.
    static func tokens(keys: Kvd_V1_Tensor?, values: Kvd_V1_Tensor?, layout m: ModelLayout, maxTokens: Int) throws(KVDError) -> Int {
        guard let keys else { throw .invalidArgument("append: keys missing; send a Tensor of shape [layers, kv_heads, tokens, head_dim]") }
        guard let values else { throw .invalidArgument("append: values missing; send a Tensor of the same shape as keys") }
        try checkDType(keys, "keys", m)
        try checkDType(values, "values", m)
        let expected = "[\(m.layers), \(m.kvHeads), tokens, \(m.headDim)]"
        let s = keys.shape
        guard s.count == 4, Int(s[0]) == m.layers, Int(s[1]) == m.kvHeads, Int(s[3]) == m.headDim else {
            throw .invalidArgument("append: keys shape \(s) does not match model '\(m.name)': expected \(expected)")
        }
        guard values.shape == s else {
            throw .invalidArgument("append: values shape \(values.shape) differs from keys shape \(s); K and V must have the same shape")
        }
        let tokens = Int(s[2])
        guard tokens >= 1 else { throw .invalidArgument("append: zero tokens; the tokens dimension must be at least 1") }
        guard tokens <= maxTokens else {
            throw .invalidArgument("append: \(tokens) tokens is more than server.max_tokens_per_append (\(maxTokens)); split the append")
        }
        // tokens is bounded by the config's max_tokens_per_append, but the product is still checked.
        let (perHead, o1) = tokens.multipliedReportingOverflow(by: m.tokenBytes)
        let (bytes, o2) = perHead.multipliedReportingOverflow(by: m.headCount)
        guard !o1, !o2 else { throw .invalidArgument("append: keys shape \(s) is too large") }
        for (name, t) in [("keys", keys), ("values", values)] where t.data.count != bytes {
            throw .invalidArgument("append: \(name).data has \(t.data.count) bytes; shape \(s) of \(m.dtype.rawValue) needs \(bytes)")
        }
        return tokens
    }

    private static func checkDType(_ t: Kvd_V1_Tensor, _ name: String, _ m: ModelLayout) throws(KVDError) {
        guard t.dtype.core == m.dtype else {
            throw .invalidArgument("append: \(name).dtype is \(t.dtype) but model '\(m.name)' stores \(m.dtype.rawValue); convert before appending")
        }
    }
}
