"""KVSharer's greedy walk over the ranked layer pairs, with a pluggable acceptance test.

Order (the paper's): pairs (i > j) as kvd's RankLayers returns them, most dissimilar first. A pair
whose layer i is already aliased is skipped without a check. Otherwise the candidate map is the
accepted map plus i → j, chains resolved (j's owner becomes i's; layers aliased to i follow i),
and ``measure`` runs the model with it. Acceptance:

* ``cosine`` (the paper's): cosine of the last hidden states, shared vs full, ≥ ``threshold``;
* ``kl`` (kvd's extension): mean next-token KL(full ‖ shared) of the *whole candidate map* ≤
  ``kl_budget`` nats — so the budget bounds the map that is shipped, not each alias alone.

For every accepted alias the record also holds its KL alone ({i: j} by itself) and its marginal KL
(the candidate map's KL minus the accepted map's before it); both are what docs/QUALITY.md tables.

The walk is pure (no model, no files): ``measure(map, give_up_above) -> obj with .kl, .cosine,
.partial`` and ``save(state)`` are passed in, so tests drive it with synthetic numbers. In ``kl``
mode the budget is passed as ``give_up_above``: a measurement may stop as soon as its KL is known
to exceed it (``partial``, a lower bound) — the decision is the same, the check cheaper.
"""

from __future__ import annotations

from kvd_transformers.calibrate.sharing import resolve

STOPPED, DONE = "stopped", "done"


def accepts(mode: str, kl: float, cosine: float, kl_budget: float, threshold: float) -> bool:
    """The acceptance test of one candidate map."""
    if mode == "kl":
        return kl <= kl_budget
    if mode == "cosine":
        return cosine >= threshold
    raise ValueError(f"unknown acceptance {mode!r} (kl or cosine)")


def new_state() -> dict:
    """JSON-able walk state: next pair index, accepted map (str keys, as JSON keeps them), every
    check made (dicts, in order)."""
    return {"next": 0, "aliases": {}, "tried": []}


def aliases_of(state: dict) -> dict[int, int]:
    return {int(k): int(v) for k, v in state["aliases"].items()}


def accepted_kl(state: dict) -> float:
    """KL of the accepted map so far (0 for none): the last accepted check's map KL."""
    done = [t for t in state["tried"] if t["accepted"]]
    return done[-1]["kl"] if done else 0.0


def walk(ranking, state: dict, measure, *, mode: str, kl_budget: float, threshold: float,
         shares: int = 0, max_checks: int = 0, stop_after: int = 0, save=None) -> str:
    """Continue the walk in ``state`` (mutated; ``save(state)`` after every pair). Ends (DONE) when
    the pairs run out, ``shares`` layers are aliased (0 = no cap) or ``max_checks`` checks were made
    in all (0 = no cap); returns STOPPED after ``stop_after`` checks in this call (0 = no cap)."""
    checked = 0
    while state["next"] < len(ranking):
        aliases = aliases_of(state)
        if shares and len(aliases) >= shares:
            break
        if max_checks and len(state["tried"]) >= max_checks:
            break
        i, j, d = ranking[state["next"]]
        i, j = int(i), int(j)
        if i not in aliases:
            if stop_after and checked >= stop_after:
                return STOPPED
            cand = resolve({**aliases, i: j})
            m = measure(cand, kl_budget if mode == "kl" else None)
            ok = accepts(mode, m.kl, m.cosine, kl_budget, threshold) and not m.partial
            rec = {"layer": i, "owner": j, "distance": round(float(d), 6), "kl": float(m.kl),
                   "cosine": float(m.cosine), "accepted": ok}
            if m.partial:
                rec["partial"] = True       # kl is a lower bound already over the budget
            if ok:
                rec["marginal_kl"] = float(m.kl) - accepted_kl(state)
                rec["alone_kl"] = float(m.kl) if not aliases else float(measure({i: j}, None).kl)
                state["aliases"] = {str(k): v for k, v in cand.items()}
            state["tried"].append(rec)
            checked += 1
        state["next"] += 1
        if save:
            save(state)
    return DONE
