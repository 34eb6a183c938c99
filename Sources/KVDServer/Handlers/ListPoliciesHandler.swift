import KVDPluginHost
import KVDProtocol

/// ListPolicies: the policies, rules and model defaults in force (they change on reload).
enum ListPoliciesHandler {
    static func handle(_ store: TenantStore) -> Kvd_V1_ListPoliciesResponse {
        let book = store.policies
        var out = Kvd_V1_ListPoliciesResponse()
        out.policies = policyInfos(book)
        out.rules = book.ruleList.enumerated().map { i, rule in
            var r = Kvd_V1_RuleInfo()
            r.index = UInt32(i + 1)
            r.condition = rule.condition
            r.policy = rule.policy
            return r
        }
        let defaults = book.modelDefaultPolicies
        out.models = store.config.models.map { m in
            var info = Kvd_V1_ModelPolicyInfo()
            info.model = m.name
            info.defaultPolicy = defaults[m.name] ?? ""
            return info
        }
        return out
    }

    /// The policies of `book` as Hello and ListPolicies report them.
    static func policyInfos(_ book: PolicyBook) -> [Kvd_V1_PolicyInfo] {
        book.summaries.map { s in
            var p = Kvd_V1_PolicyInfo()
            p.name = s.name
            p.method = s.method
            p.params = s.params
            return p
        }
    }
}
