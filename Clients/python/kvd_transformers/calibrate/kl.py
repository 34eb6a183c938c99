"""Next-token KL of a KVSharer alias map: how far the shared model's next-token distributions move
from the full model's, the quantity kvd's quality report judges sharing by.

KL(map) = mean over texts and positions of KL(p_full ‖ p_shared), nats, where p_shared runs the
model with ``map`` in force (:mod:`sharing`: an aliased layer attends with its owner's K/V from the
same forward pass). Every text has the same length, so the mean over all positions is also the mean
of the per-text means.

:class:`Reference` runs the full model once and keeps what every candidate needs: the full
next-token distributions, the last hidden states (for the paper's cosine test), every layer's input
and every layer's K/V. A candidate map whose lowest aliased layer is ``m`` changes nothing below
``m``, so its forward starts at layer ``m`` from the full pass's hidden states, with the owners
below ``m`` reading the full pass's K/V — the same numbers as a whole forward, at (L − m)/L of the
cost (checked against a whole forward when the reference is built; models without the Llama-style
``model.model.layers`` / ``lm_head`` always run whole).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from kvd_transformers.calibrate import sharing


def kl_per_position(ref_logits: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """KL(softmax(ref) ‖ softmax(other)) over the last axis, nats, in float64 (``[..., V]`` to
    ``[...]``). Clamped at 0: rounding can make an identical pair a hair negative."""
    ref = torch.log_softmax(ref_logits.double(), dim=-1)
    other = torch.log_softmax(logits.double(), dim=-1)
    return (ref.exp() * (ref - other)).sum(-1).clamp_min(0.0)


@dataclass
class Measurement:
    """One candidate map on a text set: mean next-token KL (nats), the paper's cosine of the last
    hidden states (per token, averaged) and the mean KL of each text."""
    kl: float
    cosine: float
    kl_per_text: list[float] = field(default_factory=list)
    # True when :meth:`Reference.measure` gave up early: ``kl`` is then a lower bound already above
    # the limit it was given, ``cosine`` and ``kl_per_text`` cover the texts seen.
    partial: bool = False


def whole_forward(model, ids: torch.Tensor, aliases: dict[int, int]):
    """``(logits, last hidden)`` of one batch, every layer run, ``aliases`` in force."""
    with sharing.active(aliases), torch.no_grad():
        out = model(ids, use_cache=False, output_hidden_states=True)
    return out.logits.float(), out.hidden_states[-1].float()


class _FullBatch:
    """The full model on one batch: what every candidate map is compared with or starts from."""

    def __init__(self, model, ids: torch.Tensor):
        self.ids = ids
        with sharing.active({}) as state, torch.no_grad():
            out = model(ids, use_cache=False, output_hidden_states=True)
        self.kv = dict(state.kv)                          # layer -> (K, V) of the full pass
        self.inputs = out.hidden_states                   # [l] = input of layer l (0 = embeddings)
        self.hidden = out.hidden_states[-1].float()
        # One text at a time (row-wise, so the same numbers): a float64 [tokens, vocab] temporary
        # per text instead of per batch (Gemma's vocabulary is 262144 tokens).
        ps, negs = [], []
        for logits in out.logits:
            logp = torch.log_softmax(logits.double(), dim=-1)
            p = logp.exp().float()                        # full next-token distributions
            # Σ p log p with the same (float32-rounded) p as the cross term, so that KL = Σ p
            # (log p − log q) exactly for that p and an unchanged map gives 0.
            negs.append((p.double() * logp).sum(-1))
            ps.append(p)
            del logp
        self.p = torch.stack(ps)
        self.neg_entropy = torch.stack(negs)

    def kl(self, logits: torch.Tensor) -> torch.Tensor:
        """KL(p_full ‖ softmax(logits)) per position = Σ p log p − Σ p log q (float64 sums)."""
        cross = torch.stack([
            (p.double() * torch.log_softmax(l.float(), dim=-1).double()).sum(-1)
            for p, l in zip(self.p, logits)])
        return (self.neg_entropy - cross).clamp_min(0.0)


def _skippable(model) -> bool:
    inner = getattr(model, "model", None)
    return (isinstance(getattr(inner, "layers", None), torch.nn.ModuleList)
            and isinstance(getattr(model, "lm_head", None), torch.nn.Module))


class Reference:
    """The full model on ``ids`` ``[texts, tokens]`` (in batches) and :meth:`measure` for a map."""

    def __init__(self, model, ids: torch.Tensor, batch: int = 8):
        self.model = model
        self.layers = int(model.config.num_hidden_layers)
        self.batches = [_FullBatch(model, ids[s:s + batch])
                        for s in range(0, ids.shape[0], max(1, int(batch)))]
        self.texts, self.tokens = int(ids.shape[0]), int(ids.shape[0] * ids.shape[1])
        self.skip = _skippable(model) and self._skip_matches_whole()

    def _forward_from(self, fb: _FullBatch, start: int, aliases: dict[int, int]):
        """``(logits, last hidden)`` running layers ``start``… only, from the full pass's input of
        layer ``start``; owners below ``start`` read the full pass's K/V (nothing below changes)."""
        inner = self.model.model
        all_layers = inner.layers
        config = inner.config
        types = getattr(config, "layer_types", None)
        seed = {l: kv for l, kv in fb.kv.items() if l < start}
        try:
            # Sliced ModuleList: each layer keeps its layer_idx, so the alias map still applies.
            inner.layers = torch.nn.ModuleList(list(all_layers)[start:])
            if types is not None:
                # Models with per-layer types (Gemma 3: sliding / full, each with its own mask and
                # RoPE) look the type up by the index in `layers`: slice the list alike.
                config.layer_types = list(types)[start:]
            with sharing.active(aliases, seed), torch.no_grad():
                out = inner(inputs_embeds=fb.inputs[start], use_cache=False,
                            output_hidden_states=True)
                logits = self.model.lm_head(out.last_hidden_state)
        finally:
            inner.layers = all_layers
            if types is not None:
                config.layer_types = types
        return logits.float(), out.hidden_states[-1].float()

    def _skip_matches_whole(self) -> bool:
        """Start-at-layer-m must give a whole forward's numbers (else the model's forward is not
        the Llama shape assumed here, and every candidate runs whole)."""
        fb = self.batches[0]
        m = self.layers // 2
        probe = {m + 1: m - 1}
        try:
            got = self._forward_from(fb, m, probe)
        except Exception:  # noqa: BLE001 - any mismatch in the forward's shape means "run whole"
            return False
        want = whole_forward(self.model, fb.ids, probe)
        return all(torch.allclose(g, w, rtol=1e-4, atol=1e-4) for g, w in zip(got, want))

    def forward(self, fb: _FullBatch, aliases: dict[int, int]):
        """``(logits, last hidden)`` of one batch with ``aliases`` in force."""
        if self.skip and aliases:
            return self._forward_from(fb, min(aliases), aliases)
        return whole_forward(self.model, fb.ids, aliases)

    def measure(self, aliases: dict[int, int], give_up_above: float | None = None) -> Measurement:
        """Mean KL and cosine of ``aliases`` over every text. With ``give_up_above``, stops after
        the first batch at which the texts seen so far already put the mean over it (KL ≥ 0, so
        the unseen texts can only add): the answer to "≤ budget?" is then known to be no, at a
        fraction of the cost, and ``kl`` is that lower bound (``partial``)."""
        per_text, cos_sum, seen = [], 0.0, 0
        for fb in self.batches:
            logits, hidden = self.forward(fb, aliases)
            per_text += fb.kl(logits).mean(-1).tolist()          # [batch] means over positions
            cos_sum += float(torch.nn.functional.cosine_similarity(fb.hidden, hidden, dim=-1).sum())
            seen += fb.ids.numel()
            if (give_up_above is not None and seen < self.tokens
                    and sum(per_text) / self.texts > give_up_above):
                return Measurement(kl=sum(per_text) / self.texts, cosine=cos_sum / seen,
                                   kl_per_text=per_text, partial=True)
        return Measurement(kl=sum(per_text) / len(per_text), cosine=cos_sum / self.tokens,
                           kl_per_text=per_text)
