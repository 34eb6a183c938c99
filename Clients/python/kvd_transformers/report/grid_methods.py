"""The statistics grid's methods: which Compact request each one sends, and its checkpoint tag.

One common budget ``B`` (tokens per head outside the 32-query window) for StreamingLLM (sinks 4 +
recent B + 32 − 4, the same total), SnapKV and HeadKV; DBudgetKV with the plugin's bundled
defaults (no parameters: ``norm l1, sinks 4, threshold 0.005``); KVSharer with the model's least
costly calibrated alias (``SHARED_POLICY`` below; no alias meets the 0.05-nat budget on either
model, so the calibrated policies share nothing and the grid measures this one); BalanceKV and its uniform baseline
at the ``itrs`` whose kept size is nearest ``B + 32`` (:func:`.methods.balancekv_itrs`), one row
per seed (KL texts only).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from kvd_transformers.report.methods import WINDOW, balancekv_itrs

NEEDLE_METHODS = ["full", "streamingllm", "snapkv", "headkv"]
KL_ONLY = ["dbudgetkv default", "kvsharer shipped"]  # their claims are KL claims
SEEDED = ["balancekv", "balancekv uniform"]


@dataclass(frozen=True)
class GridMethod:
    label: str
    budget: int | None = None
    seed: int | None = None

    @property
    def name(self) -> str:
        return self.label if self.seed is None else f"{self.label} seed {self.seed}"


def shipped_alias_map(config: Path, policy: str) -> str:
    """The ``alias_map`` of ``policy`` in the bundled config (a plain scan: the policy's block up
    to the next policy at the same indent)."""
    lines = config.read_text().splitlines()
    for i, line in enumerate(lines):
        if line.strip() == f"{policy}:":
            indent = len(line) - len(line.lstrip())
            for nxt in lines[i + 1:]:
                if nxt.strip() and len(nxt) - len(nxt.lstrip()) <= indent:
                    break
                m = re.match(r'\s*alias_map:\s*"?([^"#]+?)"?\s*(#.*)?$', nxt)
                if m:
                    return m.group(1).strip()
    raise ValueError(f"{config}: policy {policy!r} has no alias_map")


# The policy in Config/kvd.yaml holding each model's least costly calibrated KVSharer alias. Neither
# model has one within the 0.05-nat budget, so the calibrated policies share nothing; the grid
# measures these labelled over-budget aliases.
SHARED_POLICY = {"smollm2-135m": "smollm2-share-one-layer", "gemma3-270m": "gemma3-share-one-layer"}


def model_alias_map(config: Path, model: str) -> str:
    """The alias map the bundled config ships for ``model``; "" when it ships none (a calibration
    that found no layer within its KL budget ships no map)."""
    policy = SHARED_POLICY.get(model)
    if policy is None:
        return ""
    try:
        return shipped_alias_map(config, policy)
    except ValueError:
        return ""


def file_hash(path: Path | None) -> str:
    if path is None or not Path(path).is_file():
        return "none"
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]


def request(m: GridMethod, n: int, ctx: dict) -> dict:
    """``{method, policy, params}``; ``ctx``: ``scores`` (file name for the daemon), ``alias_map``."""
    b = m.budget
    if m.label == "full":
        return {"method": "", "policy": "", "params": {}}
    if m.label == "streamingllm":
        return {"method": "streamingllm", "policy": "", "params": {"sinks": 4, "recent": b + WINDOW - 4}}
    if m.label == "snapkv":
        return {"method": "snapkv", "policy": "", "params": {"budget": b}}
    if m.label == "headkv":
        return {"method": "headkv", "policy": "", "params": {"budget": b, "scores": ctx["scores"]}}
    if m.label == "dbudgetkv default":
        return {"method": "dbudgetkv", "policy": "", "params": {}}
    if m.label == "kvsharer shipped":
        return {"method": "kvsharer", "policy": "", "params": {"alias_map": ctx["alias_map"]}}
    if m.label in SEEDED:
        return {"method": "balancekv", "policy": "",
                "params": {"itrs": balancekv_itrs(n, b), "seed": m.seed,
                           "variant": "uniform" if "uniform" in m.label else "balanced"}}
    raise ValueError(m.label)


def tag(m: GridMethod, ctx: dict) -> str:
    """What a checkpoint row of ``m`` depends on besides the prompt: the request and, for HeadKV,
    the scores file's content (so new scores re-run only the HeadKV rows)."""
    req = request(m, 4096, ctx)
    extra = ctx.get("scores_hash", "") if m.label == "headkv" else ""
    blob = json.dumps({"r": req, "x": extra}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def needle_methods(budget: int, wanted: list | None = None) -> list:
    out = [GridMethod(l, budget if l in ("streamingllm", "snapkv", "headkv") else None)
           for l in NEEDLE_METHODS]
    return [m for m in out if not wanted or m.label in wanted or m.label == "full"]


def kl_methods(budget: int, seeds: list, wanted: list | None = None) -> list:
    out = needle_methods(budget, wanted)
    out += [GridMethod(l) for l in KL_ONLY if not wanted or l in wanted]
    for label in SEEDED:
        if not wanted or label in wanted or "balancekv" in wanted:
            out += [GridMethod(label, budget, s) for s in seeds]
    return out
