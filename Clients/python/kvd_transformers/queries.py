"""Whether a Compact needs observation queries (the prefill's last window of post-RoPE queries).

Hello lists every method with ``needs_queries`` and every configured policy with the method (or
stage composition, e.g. ``"allocator=pyramidkv scorer=knorm"``) it runs. Sending ~2 MB of queries
to a method that ignores them (StreamingLLM, K-norm) costs more than the compaction itself, so a
KvdCache sends them only when this says so. Unknown (the daemon's rules choose the policy, or a name
Hello does not list): send them — a method that needs them fails without them.
"""

from __future__ import annotations

# Stage names that are scorers needing queries but are not method names in Hello.
QUERY_SCORERS = frozenset({"window_attention"})


def _method_needs(methods: dict, name: str):
    """True/False from Hello's method list, or None when ``name`` is not listed."""
    if name in QUERY_SCORERS:
        return True
    info = methods.get(name)
    return None if info is None else bool(info.needs_queries)


def needs_queries(hello, method: str, policy: str) -> bool:
    """Whether ``Compact(method, policy)`` on the daemon that sent ``hello`` needs queries."""
    methods = {m.name: m for m in hello.methods}
    if method:
        known = _method_needs(methods, method)
        return True if known is None else known
    if not policy:
        return True  # the daemon's rules or the model's default decide: unknown here
    info = next((p for p in hello.policies if p.name == policy), None)
    if info is None:
        return True
    stages = info.method.split()
    if len(stages) == 1 and "=" not in stages[0]:
        known = _method_needs(methods, stages[0])
        return True if known is None else known
    # A composition: only the scorer reads the queries.
    for stage in stages:
        role, _, name = stage.partition("=")
        if role == "scorer":
            known = _method_needs(methods, name)
            return True if known is None else known
    return True
