"""The KVSharer layer map: ``Config/kvsharer/<model>.map`` when present, else built here from kvd's
``RankLayers`` on a calibration set (8 × 64 tokens of pydoc_data.topics, never the report's
license text): the most dissimilar pairs first, later layer → earlier layer, chains resolved,
S = 4 layers — without the paper's hidden-state check (that is the calibration tool's job)."""

from __future__ import annotations

from pathlib import Path

import torch

from kvd_transformers.cache import KvdCache
from kvd_transformers.report.methods import read_alias_map

SHARED_LAYERS = 4
CALIB_TEXTS, CALIB_TOKENS = 8, 64


def calibration_ids(tok) -> list:
    from pydoc_data.topics import topics

    out = []
    for key in sorted(topics):
        ids = tok(topics[key]).input_ids
        if len(ids) >= CALIB_TOKENS:
            out.append(ids[:CALIB_TOKENS])
        if len(out) == CALIB_TEXTS:
            break
    return out


def greedy_map(pairs: list, shared: int = SHARED_LAYERS) -> dict:
    """``pairs``: ``(layer, other, distance)`` most dissimilar first. Returns ``{layer: owner}``."""
    amap: dict = {}
    for a, b, _ in pairs:
        later, earlier = max(a, b), min(a, b)
        if later in amap or later == earlier:
            continue
        owner = amap.get(earlier, earlier)
        if owner == later:
            continue
        # Layers that alias `later` now alias its owner (chains resolve).
        for k, o in list(amap.items()):
            if o == later:
                amap[k] = owner
        amap[later] = owner
        if len(amap) == shared:
            break
    return amap


def build_map(model, tok, client, model_name: str) -> str:
    seqs, caches = [], []
    try:
        for ids in calibration_ids(tok):
            c = KvdCache(client, model_name, config=model.config, zero_copy=True)
            caches.append(c)
            with torch.no_grad():
                model(input_ids=torch.tensor([ids]), cache=c, use_cache=True)
            seqs.append(c.sequence_id)
        amap = greedy_map(client.rank_layers(seqs))
    finally:
        for c in caches:
            c.release()
    return ",".join(f"{k}:{v}" for k, v in sorted(amap.items()))


def alias_map(repo: Path, model, tok, client, model_name: str):
    """``(map string, source note)``."""
    path = repo / "Config" / "kvsharer" / "smollm2-135m.map"
    if path.is_file():
        m = read_alias_map(path)
        if m:
            return m, f"from {path.relative_to(repo)}"
    return (build_map(model, tok, client, model_name),
            f"built by the report from RankLayers (most dissimilar pairs, S={SHARED_LAYERS}, "
            f"{CALIB_TEXTS}×{CALIB_TOKENS} pydoc_data.topics tokens, no hidden-state check)")
