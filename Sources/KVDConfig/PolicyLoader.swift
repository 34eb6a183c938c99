import KVDCore
import Yams

/// Reads `policies:` and `rules:`. Whether a named method or stage exists is checked by the plugin
/// host at start-up (it knows the methods); here: shape, types, and that names refer to each other.
enum PolicyLoader {
    static func policies(_ node: KeyedNode) throws(ConfigError) -> [Configuration.Policy] {
        guard let mapping = node.node.mapping else {
            throw node.fail("must be a mapping of policy names to {method, params} or {scorer, allocator, params}")
        }
        var out: [Configuration.Policy] = []
        for (k, v) in mapping {
            guard let name = k.scalar?.string, !name.isEmpty else { throw node.fail("policy names must be strings") }
            let item = KeyedNode(node: v, path: "\(node.path).\(name)", file: node.file)
            let m = try item.mapping(known: ["method", "scorer", "allocator", "stopper", "sharer", "params"])
            var p = Configuration.Policy(name: name)
            p.line = v.mark?.line ?? 0
            p.method = try m["method"]?.string()
            p.scorer = try m["scorer"]?.string()
            p.allocator = try m["allocator"]?.string()
            p.stopper = try m["stopper"]?.string()
            p.sharer = try m["sharer"]?.string()
            if p.method != nil, p.scorer != nil || p.allocator != nil {
                throw item.fail("give either method or scorer/allocator, not both")
            }
            if p.method == nil, p.scorer == nil {
                if p.stopper != nil { throw item.fail("stopper '\(p.stopper!)' needs a ranking to stop on: give a method or a scorer") }
                if p.sharer == nil { throw item.fail("needs method (e.g. snapkv) or scorer (with an optional allocator)") }
            }
            if let params = m["params"] { p.params = try self.params(params) }
            out.append(p)
        }
        return out
    }

    /// A mapping of parameter names to scalars; YAML's own types decide int, float, bool or string.
    static func params(_ node: KeyedNode) throws(ConfigError) -> [Configuration.NamedParam] {
        guard let mapping = node.node.mapping else { throw node.fail("must be a mapping of parameter names to values") }
        var out: [Configuration.NamedParam] = []
        for (k, v) in mapping {
            guard let name = k.scalar?.string else { throw node.fail("parameter names must be strings") }
            let item = KeyedNode(node: v, path: "\(node.path).\(name)", file: node.file)
            guard v.scalar != nil else { throw item.fail("must be a number, a boolean or a string") }
            let value: ParamValue
            if v.tag == Tag(.int), let i = v.int {
                value = .int(Int64(i))
            } else if v.tag == Tag(.float), let f = v.float {
                value = .float(f)
            } else if v.tag == Tag(.bool), let b = v.bool {
                value = .bool(b)
            } else {
                value = .string(v.scalar!.string)
            }
            out.append(Configuration.NamedParam(name, value))
        }
        return out
    }

    static func rules(_ node: KeyedNode) throws(ConfigError) -> [Configuration.Rule] {
        var out: [Configuration.Rule] = []
        for item in try node.sequence() {
            let m = try item.mapping(known: ["when", "policy"])
            guard let policy = m["policy"] else { throw item.fail("missing required key 'policy'") }
            var rule = Configuration.Rule(policy: try policy.string())
            rule.line = item.node.mark?.line ?? 0
            if let when = m["when"] {
                let w = try when.mapping(known: ["arena_used_above", "length_above", "model"])
                if let a = w["arena_used_above"] {
                    guard let f = a.node.float, a.node.tag == Tag(.float) || a.node.tag == Tag(.int), f >= 0, f <= 1 else {
                        throw a.fail("must be a fraction between 0 and 1")
                    }
                    rule.arenaUsedAbove = f
                }
                if let l = w["length_above"] { rule.lengthAbove = try l.int(min: 0) }
                if let model = w["model"] { rule.model = try model.string() }
            }
            out.append(rule)
        }
        return out
    }

    /// Rules and models name policies that exist; rules name models that exist.
    static func checkReferences(_ c: Configuration, file: String) throws(ConfigError) {
        let names = Set(c.policies.map(\.name))
        for r in c.rules where !names.contains(r.policy) {
            throw ConfigError("\(file):\(r.line): rules: policy '\(r.policy)' is not defined under policies")
        }
        for r in c.rules {
            if let m = r.model, !c.models.contains(where: { $0.name == m }) {
                throw ConfigError("\(file):\(r.line): rules: model '\(m)' is not defined under models")
            }
        }
        for (i, m) in c.models.enumerated() where !m.defaultPolicy.isEmpty && !names.contains(m.defaultPolicy) {
            throw ConfigError("\(file): models[\(i)].default_policy: policy '\(m.defaultPolicy)' is not defined under policies")
        }
    }
}
