"""One table row: a (method, budget) on every prompt of one length."""

from __future__ import annotations

import time

import numpy as np

from kvd_transformers.report import metrics
from kvd_transformers.report.methods import request
from kvd_transformers.report.prefill import restore


class LengthPrompts:
    """The prefills of one prompt length: the KL prompt (+ its continuation and the full cache's
    log-probs over it) and one needle prompt per depth."""

    def __init__(self, length, kl_pre, continuation, needles):
        self.length = length
        self.kl_pre = kl_pre
        self.continuation = continuation
        self.needles = needles  # [(depth, Prefill, answer)]
        self.ref_logp = None


def _kept_fraction(client, cache, n: int):
    st = cache.stats()
    full = n * cache.num_layers * cache.kv_heads
    return st.tokens_held / full, st.tokens_held * 2 * cache.head_dim * 4, full * 2 * cache.head_dim * 4


def run_cell(model, tok, client, model_name: str, variant, budget, lp: LengthPrompts, ctx: dict,
             window: int) -> dict:
    t0 = time.monotonic()
    fractions, compact_ns, reqs = [], [], []

    def open_cache(pre):
        req = request(variant, budget, pre.length, ctx)
        reqs.append(req)
        cache, resp = restore(model, client, model_name, pre, window, req["method"], req["policy"],
                              req["params"])
        if resp is not None:
            compact_ns.append(resp.elapsed_ns)
        fractions.append(_kept_fraction(client, cache, pre.length))
        return cache, resp

    # KL prompt: KL over the continuation, attention-output errors, KV kept.
    pre = lp.kl_pre
    cache, resp = open_cache(pre)
    try:
        kept = client.query(cache.sequence_id, copy=True)
        logp = metrics.teacher_forced_logprobs(model, cache, lp.continuation)
        heldout = list(cache.heldout)
    finally:
        cache.release()
    if variant.label == "full":
        lp.ref_logp = logp
    kl = metrics.kl_per_position(lp.ref_logp, logp)
    last_q = [q[:, -1:, :].numpy() for q in pre.queries]
    err_last = metrics.attention_errors(last_q, pre.keys, pre.values, kept)
    err_held = metrics.attention_errors(heldout, pre.keys, pre.values, kept)
    per_head = [h.kept for h in resp.heads] if resp is not None else [pre.length]
    aliases = {a.layer: a.owner for a in resp.aliases} if resp is not None else {}

    # Needles.
    hits, answers = [], []
    for depth, npre, answer in lp.needles:
        cache, _ = open_cache(npre)
        try:
            new = metrics.greedy(model, cache, npre.last_logits)
        finally:
            cache.release()
        text = tok.decode(new, skip_special_tokens=True)
        hits.append(answer in text)
        answers.append(text.strip())

    frac = np.array([f[0] for f in fractions])
    return {
        "method": variant.label, "family": variant.family, "order": variant.order,
        "budget": budget if variant.budgeted else None, "length": lp.length,
        "prompt_tokens": [pre.length] + [p.length for _, p, _ in lp.needles],
        "request": reqs[0], "kv_fraction": float(frac.mean()),
        "kv_bytes": int(fractions[0][1]), "kv_bytes_full": int(fractions[0][2]),
        "kept_per_head": {"min": int(min(per_head)), "mean": float(np.mean(per_head)),
                          "max": int(max(per_head))},
        "aliased_layers": len(aliases), "aliases": {str(k): v for k, v in sorted(aliases.items())},
        "needle_depths": [d for d, _, _ in lp.needles], "needle_hits": hits,
        "needle_answers": answers, "needle_accuracy": float(np.mean(hits)) if hits else float("nan"),
        "kl_mean": float(kl.mean()), "kl_max": float(kl.max()),
        "attn_err": float(err_last.mean()), "attn_err_heldout": float(err_held.mean()),
        "attn_err_layers": [float(x) for x in err_last.mean(axis=(1, 2))],
        "compact_ms": float(np.mean(compact_ns) / 1e6) if compact_ns else 0.0,
        "wall_s": time.monotonic() - t0,
    }
