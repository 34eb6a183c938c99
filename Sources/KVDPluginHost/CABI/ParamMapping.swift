import CKVDPluginABI
import KVDCore
import KVDPluginAPI

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Translation of parameters across the boundary: `kvd_param_spec` → `ParamSpec` at load time, and
/// resolved values → a `kvd_param_value` array for each plan.
enum ParamMapping {
    /// One declared parameter as a `ParamSpec`; `refuse` turns a reason into the load error.
    static func spec(_ p: kvd_param_spec, name: String, refuse: (String) -> KVDError) throws(KVDError) -> ParamSpec {
        let description = p.description.map { String(cString: $0) } ?? ""
        // min > max is the header's spelling of "unbounded".
        let bounded = p.min_value <= p.max_value
        let (lo, hi): (Double?, Double?) = bounded ? (p.min_value, p.max_value) : (nil, nil)
        func checkDefault(_ d: Double) throws(KVDError) {
            guard d.isFinite else { throw refuse("default \(d) is not finite") }
            if bounded, d < p.min_value || d > p.max_value {
                throw refuse("default \(format(d)) is outside its bounds [\(format(p.min_value)), \(format(p.max_value))]")
            }
        }
        switch Int(p.type) {
        case KVD_PARAM_INT:
            try checkDefault(p.default_number)
            guard p.default_number == p.default_number.rounded(), abs(p.default_number) < 9e18 else {
                throw refuse("INT default \(p.default_number) is not an integer")
            }
            return ParamSpec(name, .int, default: .int(Int64(p.default_number)), min: lo, max: hi, description)
        case KVD_PARAM_FLOAT:
            try checkDefault(p.default_number)
            return ParamSpec(name, .float, default: .float(p.default_number), min: lo, max: hi, description)
        case KVD_PARAM_BOOL:
            guard p.default_number == 0 || p.default_number == 1 else {
                throw refuse("BOOL default must be 0 or 1, got \(p.default_number)")
            }
            return ParamSpec(name, .bool, default: .bool(p.default_number != 0), description)
        case KVD_PARAM_STRING:
            return ParamSpec(name, .string, default: .string(p.default_string.map { String(cString: $0) } ?? ""), description)
        default:
            throw refuse("type \(p.type) is not KVD_PARAM_INT, _FLOAT, _STRING or _BOOL (1-4); use one of those")
        }
    }
}

/// The `kvd_param_value` array of one plan: every parameter the plugin declared, with C strings
/// that stay allocated until this object goes away (keep it alive across every head's call).
final class CParamBlock {
    let values: UnsafeMutableBufferPointer<kvd_param_value>
    private var strings: [UnsafeMutablePointer<CChar>] = []

    init(_ specs: [ParamSpec], _ resolved: ResolvedParams) {
        values = .allocate(capacity: specs.count)
        for (i, spec) in specs.enumerated() {
            var v = kvd_param_value(name: nil, type: 0, int_value: 0, float_value: 0, string_value: nil)
            v.name = UnsafePointer(keep(spec.name))
            switch spec.type {
            case .int:
                v.type = Int32(KVD_PARAM_INT)
                v.int_value = Int64(resolved.int(spec.name))
            case .float:
                v.type = Int32(KVD_PARAM_FLOAT)
                v.float_value = resolved.float(spec.name)
            case .bool:
                v.type = Int32(KVD_PARAM_BOOL)
                v.int_value = resolved.bool(spec.name) ? 1 : 0
            case .string:
                v.type = Int32(KVD_PARAM_STRING)
                v.string_value = UnsafePointer(keep(resolved.string(spec.name)))
            }
            values.initializeElement(at: i, to: v)
        }
    }

    private func keep(_ s: String) -> UnsafeMutablePointer<CChar> {
        let p = strdup(s)!
        strings.append(p)
        return p
    }

    deinit {
        for p in strings { free(p) }
        values.deallocate()
    }
}
