"""Typed results of :class:`kvd.Client` calls.

Each is a small dataclass with typed fields (per-head numbers as numpy arrays) built from the
daemon's reply, which stays reachable as ``.raw`` (the ``kvd.v1`` protobuf message). Not frozen: a
frozen dataclass takes about twice as long to build, and one is built on every call. Any field
of the reply that a class does not list is still read through to ``.raw``, so code written against
the protobuf replies (``resp.heads``, ``st.HasField("sequence")``, ...) keeps working.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Dict, List, NamedTuple, Optional

import numpy as np


class _Reply:
    """Reads any attribute a subclass does not define from the raw reply (compatibility)."""

    raw: Any

    @classmethod
    def from_pb(cls, r: Any) -> Any:
        """A reply whose fields (all but ``raw``) are the message's fields of the same names;
        subclasses that convert anything define their own."""
        names = [f.name for f in fields(cls) if f.name != "raw"]  # type: ignore[arg-type]
        return cls(*(getattr(r, n) for n in names), r)  # type: ignore[call-arg]

    def __getattr__(self, name: str) -> Any:
        # Only called when normal lookup fails; guard `raw` itself (copy/pickle probe before init).
        if name == "raw":
            raise AttributeError(name)
        return getattr(self.raw, name)


def _u32(values: Any) -> np.ndarray:
    return np.fromiter(values, dtype=np.uint32)


class HeadCount(NamedTuple):
    """One head of a compaction: tokens before and kept."""

    layer: int
    head: int
    before: int
    kept: int


class LayerAlias(NamedTuple):
    """A KVSharer alias: ``layer`` reads ``owner``'s cache."""

    layer: int
    owner: int


@dataclass
class RuleInfo:
    """A configured rule (ListPolicies), 1-based ``index`` as ``CompactResult.chosen_by`` names it."""

    index: int
    condition: str
    policy: str


@dataclass(repr=False, eq=False)
class CompactResult(_Reply):
    """What a Compact did: the method that ran (and the policy and rule that chose it), each head's
    token count before and kept, the per-head budgets, what was freed, and the layer aliases."""

    sequence_id: int
    generation: int
    method: str
    policy: str
    chosen_by: str
    layers: np.ndarray       # uint32 [heads]: layer of each head, layer-major
    head_indices: np.ndarray  # uint32 [heads]: KV head of each head
    before: np.ndarray       # uint32 [heads]: tokens held before
    kept: np.ndarray         # uint32 [heads]: tokens kept
    budgets: np.ndarray      # uint32: per-head budgets the method planned with (may be empty)
    pages_freed: int
    bytes_freed: int
    elapsed_ns: int
    heads: List[HeadCount]   # the same per head, as (layer, head, before, kept)
    aliases: List[LayerAlias]  # the KVSharer map in force (alias_map: as a dict)
    raw: Any = field(compare=False)

    @classmethod
    def from_pb(cls, r: Any) -> "CompactResult":
        heads = r.heads
        return cls(r.sequence_id, r.generation, r.method, r.policy, r.chosen_by,
                   _u32(h.layer for h in heads), _u32(h.head for h in heads),
                   _u32(h.before for h in heads), _u32(h.kept for h in heads), _u32(r.budgets),
                   r.pages_freed, r.bytes_freed, r.elapsed_ns,
                   [HeadCount(h.layer, h.head, h.before, h.kept) for h in heads],
                   [LayerAlias(a.layer, a.owner) for a in r.aliases], r)

    @property
    def alias_map(self) -> Dict[int, int]:
        """``aliases`` as layer -> owner layer."""
        return {a.layer: a.owner for a in self.aliases}

    def __repr__(self) -> str:
        return (f"CompactResult(method={self.method!r}, policy={self.policy!r}, "
                f"chosen_by={self.chosen_by!r}, heads={len(self.kept)}, "
                f"kept={int(self.kept.sum())}/{int(self.before.sum())}, "
                f"pages_freed={self.pages_freed})")


@dataclass(repr=False)
class SequenceStats(_Reply):
    """One sequence as Stats or ListSequences describe it."""

    sequence_id: int
    model: str
    tenant: str
    length: int
    generation: int
    pages: int
    tokens_held: int
    reserved_tokens: int
    staging_bytes: int
    aliased_layers: int
    idle_ms: int
    lease_remaining_ms: int
    orphan: bool
    pinned: bool
    bytes: int
    manager_compactions: int
    last_method: str
    raw: Any = field(compare=False)

    @classmethod
    def from_pb(cls, s: Any) -> "SequenceStats":
        return cls(s.sequence_id, s.model, s.tenant, s.length, s.generation, s.pages,
                   s.tokens_held, s.reserved_tokens, s.staging_bytes, s.aliased_layers, s.idle_ms,
                   s.lease_remaining_ms, s.orphan, s.pinned, s.bytes, s.manager_compactions,
                   s.last_method, s)

    def __repr__(self) -> str:
        return (f"SequenceStats(sequence_id={self.sequence_id}, model={self.model!r}, "
                f"length={self.length}, tokens_held={self.tokens_held}, pages={self.pages})")


@dataclass(repr=False)
class Stats(_Reply):
    """The tenant's arena figures, and ``sequence`` (None unless asked for one). ``memory``,
    ``prefix`` and ``remote`` are the reply's MemoryStats / PrefixStats / RemoteStats messages."""

    total_pages: int
    free_pages: int
    page_bytes: int
    sequences: int
    staging_bytes: int
    staging_used_bytes: int
    requests: int
    errors: int
    sequence: Optional[SequenceStats]
    memory: Any
    prefix: Any
    remote: Any
    raw: Any = field(compare=False)

    @classmethod
    def from_pb(cls, r: Any) -> "Stats":
        seq = SequenceStats.from_pb(r.sequence) if r.HasField("sequence") else None
        return cls(r.total_pages, r.free_pages, r.page_bytes, r.sequences, r.staging_bytes,
                   r.staging_used_bytes, r.requests, r.errors, seq, r.memory, r.prefix, r.remote, r)

    @property
    def used_pages(self) -> int:
        return self.total_pages - self.free_pages

    def __repr__(self) -> str:
        return (f"Stats(total_pages={self.total_pages}, free_pages={self.free_pages}, "
                f"sequences={self.sequences}, sequence={self.sequence!r})")


@dataclass
class CreateResult(_Reply):
    """A created sequence: its id, generation, and the tokens adopted from the prefix cache."""

    sequence_id: int
    generation: int
    adopted_tokens: int
    raw: Any = field(compare=False, repr=False)

    @classmethod
    def from_pb(cls, r: Any) -> "CreateResult":
        return cls(r.sequence_id, r.generation, r.adopted_tokens, r)


@dataclass
class ReleaseResult(_Reply):
    pages_freed: int
    bytes_freed: int
    raw: Any = field(compare=False, repr=False)


@dataclass
class AppendResult(_Reply):
    """An Append or Commit: the new length, the first appended token's position, generation."""

    length: int
    first_position: int
    generation: int
    raw: Any = field(compare=False, repr=False)

    @classmethod
    def from_pb(cls, r: Any) -> "AppendResult":
        return cls(r.length, r.first_position, r.generation, r)


@dataclass(repr=False, eq=False)
class ReserveResult(_Reply):
    """A reservation: its id, tokens, page size, and per head (layer-major) the first slot, page
    ids (uint32 arrays; None for an aliased layer's head) and whether it is aliased. ``heads`` is
    the reply's HeadSlots list (with ``slots`` runs when asked for)."""

    reservation_id: int
    num_tokens: int
    page_tokens: int
    layers: np.ndarray
    head_indices: np.ndarray
    first_slots: np.ndarray
    aliased: np.ndarray
    raw: Any = field(compare=False)

    @classmethod
    def from_pb(cls, r: Any) -> "ReserveResult":
        hs = r.heads
        return cls(r.reservation_id, r.num_tokens, r.page_tokens, _u32(h.layer for h in hs),
                   _u32(h.head for h in hs), _u32(h.first_slot for h in hs),
                   np.fromiter((h.aliased for h in hs), dtype=bool), r)

    @property
    def heads(self) -> Any:
        return self.raw.heads

    def page_ids(self, i: int) -> np.ndarray:
        """Head ``i``'s page ids (uint32)."""
        return np.frombuffer(self.raw.heads[i].page_ids, dtype="<u4")

    def __repr__(self) -> str:
        return (f"ReserveResult(reservation_id={self.reservation_id}, "
                f"num_tokens={self.num_tokens}, heads={len(self.first_slots)})")


@dataclass
class LookupResult(_Reply):
    tokens: int
    pages_per_head: int
    page_tokens: int
    raw: Any = field(compare=False, repr=False)


@dataclass
class ForkResult(_Reply):
    sequence_id: int
    length: int
    generation: int
    raw: Any = field(compare=False, repr=False)


@dataclass
class RestoreResult(_Reply):
    sequence_id: int
    length: int
    generation: int
    from_remote: bool
    restore_us: int
    raw: Any = field(compare=False, repr=False)


@dataclass
class PinResult(_Reply):
    pinned: bool
    pinned_pages: int
    raw: Any = field(compare=False, repr=False)


@dataclass
class StageResult(_Reply):
    offset: int
    bytes: int
    raw: Any = field(compare=False, repr=False)


@dataclass(repr=False)
class SequenceList(_Reply):
    """ListSequences: the tenant and its live sequences, by increasing id."""

    tenant: str
    sequences: List[SequenceStats]
    raw: Any = field(compare=False)

    @classmethod
    def from_pb(cls, r: Any) -> "SequenceList":
        return cls(r.tenant, [SequenceStats.from_pb(s) for s in r.sequences], r)

    def __repr__(self) -> str:
        return f"SequenceList(tenant={self.tenant!r}, sequences={len(self.sequences)})"


@dataclass
class EvictResult(_Reply):
    sequence_id: int
    pages_freed: int
    bytes_freed: int
    offloaded: bool
    tokens_held: int
    raw: Any = field(compare=False, repr=False)


@dataclass(repr=False)
class PolicyList(_Reply):
    """ListPolicies: the policies (PolicyInfo messages), rules in the order tried, and each
    model's default policy."""

    policies: List[Any]
    rules: List[RuleInfo]
    default_policies: Dict[str, str]
    raw: Any = field(compare=False)

    @classmethod
    def from_pb(cls, r: Any) -> "PolicyList":
        return cls(list(r.policies), [RuleInfo(x.index, x.condition, x.policy) for x in r.rules],
                   {m.model: m.default_policy for m in r.models}, r)

    @property
    def models(self) -> Any:
        """The reply's ModelPolicyInfo list (``default_policies`` as a dict)."""
        return self.raw.models

    def __repr__(self) -> str:
        return f"PolicyList(policies={[p.name for p in self.policies]}, rules={len(self.rules)})"


@dataclass
class ReloadResult(_Reply):
    policies: List[str]
    rules: int
    raw: Any = field(compare=False, repr=False)

    @classmethod
    def from_pb(cls, r: Any) -> "ReloadResult":
        return cls(list(r.policies), r.rules, r)
