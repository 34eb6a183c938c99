"""Cross-check of kept sets with kvpress: on the same cache, which tokens does each method keep?

Two halves, exchanging files only (kvpress 0.5.5 pins transformers < 5.3, so it lives in its own
venv, see setup.sh; kvd's side runs in kvd's venv):

    # kvpress venv: one prefill of SmolLM2-135M-Instruct on a 1024-token prompt, then every press
    # at every ratio on that cache; writes DIR/kept_kvpress.npz and DIR/kept_kvpress.json
    python kept_sets.py kvpress --out DIR [--tokens 1024]

    # kvd venv: the same K/V and window queries into a real kvd (started here with --kvd-bin, or a
    # running one with --endpoint), Compact with the matching request, Query the positions; per
    # (layer, KV head) Jaccard against kvpress; writes DIR/kept_sets.json and prints the table
    python kept_sets.py kvd --dir DIR (--kvd-bin PATH | --endpoint E)

How kvpress's kept set is read: its press's own `compress(module, hidden_states, keys, values,
attentions, kwargs)` is called per layer with exactly what its forward hook passes during the
prefill (the layer's input, the uncompressed cache, the rotary embeddings; sdpa gives no attention
weights), except that the `values` handed in hold each token's position. None of these presses
scores values, and `compress` gathers keys and values with the same indices, so the values it
returns are the kept positions. `--verify` also runs one real prefill under SnapKVPress and checks
that the keys it leaves in the cache are the keys at those positions.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
TOKENS = 1024
WINDOW = 64                 # kvpress's SnapKV / PyramidKV default window_size
RATIOS = (0.25, 0.5, 0.75)
# (kvpress class, kvd method): each at RATIOS with kvpress's default parameters.
PRESSES = (("SnapKVPress", "snapkv"), ("KnormPress", "knorm"),
           ("StreamingLLMPress", "streamingllm"), ("PyramidKVPress", "pyramidkv"))


# ---------------------------------------------------------------------------------------------
# kvpress side

def run_kvpress(a) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import dataclasses
    from importlib import metadata

    import kvpress
    import torch
    import transformers
    from transformers import DynamicCache
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb
    from kvpress.utils import get_prerope_query_states

    sys.path.insert(0, str(HERE))
    from kvpress_peer import hooked_prefill, setup     # same model loading, prompt text and prefill

    out, model, tok, gguf, ids = setup(a)
    n = ids.shape[1]
    layers = model.model.layers

    # One prefill: keep each layer's attention input (what the press's forward hook receives).
    seen = {}

    def grab(module, args, kwargs, output):
        seen[module.layer_idx] = (kwargs["hidden_states"].detach().clone(),
                                  {"position_embeddings": tuple(t.detach().clone() for t in
                                                                kwargs["position_embeddings"])},
                                  output[1])
    t0 = time.perf_counter()
    cache = hooked_prefill(model, ids, grab)
    print(f"kept_sets: prefill of {n} tokens in {time.perf_counter() - t0:.1f} s", flush=True)
    L = len(layers)
    K = torch.stack([cache.layers[l].keys[0] for l in range(L)])        # [L, H, n, d]
    V = torch.stack([cache.layers[l].values[0] for l in range(L)])
    H, d = K.shape[1], K.shape[3]
    assert all(seen[l][2] is None for l in range(L)), "sdpa should return no attention weights"

    # The window queries kvpress's SnapKV computes (pre-RoPE q_proj of the last w inputs, rotated).
    Q = []
    with torch.inference_mode():
        for l in range(L):
            hs, kw, _ = seen[l]
            q = get_prerope_query_states(layers[l].self_attn, hs[:, -WINDOW:])
            cos, sin = kw["position_embeddings"]
            q, _ = apply_rotary_pos_emb(q, q, cos[:, -WINDOW:], sin[:, -WINDOW:])
            Q.append(q[0])
    Q = torch.stack(Q)                                                    # [L, Hq, w, d]

    positions = torch.arange(n, dtype=torch.float32).view(1, 1, n, 1).expand(1, H, n, d)
    arrays = {"keys": K.float().numpy(), "values": V.float().numpy(), "queries": Q.float().numpy(),
              "ids": ids[0].numpy().astype(np.int32)}
    cases = []
    for cls, method in PRESSES:
        for r in RATIOS:
            press = getattr(kvpress, cls)(compression_ratio=r)
            kept = []
            with torch.inference_mode():
                for l in range(L):
                    hs, kw, att = seen[l]
                    _, pos = press.compress(layers[l].self_attn, hs, K[l:l + 1], positions.contiguous(),
                                            att, dict(kw))
                    kept.append(pos[0, :, :, 0].round().to(torch.int32).numpy())     # [H, k_l]
            counts = [int(k.shape[1]) for k in kept]
            width = max(counts)
            padded = np.full((L, H, width), -1, np.int32)
            for l, k in enumerate(kept):
                padded[l, :, :k.shape[1]] = np.sort(k, axis=1)
            name = f"{method}@{r}"
            arrays[f"kept/{name}"] = padded
            params = {f.name: getattr(press, f.name) for f in dataclasses.fields(press)}
            cases.append({"case": name, "press": cls, "method": method, "ratio": r,
                          "params": params, "kept_per_layer": counts})
            print(f"kept_sets: kvpress {name:18s} kept per head: layer 0 {counts[0]}, "
                  f"layer {L - 1} {counts[-1]}, mean {sum(counts) / L:.1f}", flush=True)

    verified = None
    if a.verify:
        # One real prefill under SnapKVPress(0.5): the keys it leaves must be K at the positions read.
        press = kvpress.SnapKVPress(compression_ratio=0.5)
        c2 = DynamicCache()
        with torch.inference_mode(), press(model):
            model(ids, past_key_values=c2, use_cache=True)
        want = arrays["kept/snapkv@0.5"]
        for l in range(L):
            got = c2.layers[l].keys[0]
            for h in range(H):
                # kvpress keeps topk order; compare as sets of rows.
                idx = want[l, h][want[l, h] >= 0]
                ref = K[l, h, idx]
                assert got.shape[1] == len(idx), (l, h, got.shape, len(idx))
                found = (got[h][:, None, :] == ref[None, :, :]).all(-1).any(1).all().item()
                assert found, f"layer {l} head {h}: a kept key is not one of the read positions"
        verified = "snapkv@0.5: the keys SnapKVPress left in a real prefill are K at the positions read"
        print(f"kept_sets: verified {verified}", flush=True)

    np.savez_compressed(out / "kept_kvpress.npz", **arrays)
    meta = {"tokens": n, "window": WINDOW, "layers": L, "kv_heads": H,
            "q_heads": int(Q.shape[1]), "head_dim": d, "model": "SmolLM2-135M-Instruct",
            "gguf": gguf.name, "dtype": "float32", "attn_implementation": "sdpa",
            "prompt": "pydoc_data.topics (sorted), first tokens (as kvpress_peer.py)",
            "verified": verified, "cases": cases,
            "versions": {"kvpress": metadata.version("kvpress"), "torch": torch.__version__,
                         "transformers": transformers.__version__}}
    (out / "kept_kvpress.json").write_text(json.dumps(meta, indent=1))
    print(f"kept_sets: wrote {out / 'kept_kvpress.npz'} and {out / 'kept_kvpress.json'}")


# ---------------------------------------------------------------------------------------------
# kvd side (also imported by Tests/e2e/test_kvpress_kept_sets.py)

def kvpress_layer_line(n: int, ratio: float, window: int, beta: float, layers: int):
    """kvpress PyramidKVPress.get_layer_budget per layer (tokens kept, window included), or None
    when it falls back to SnapKV. Written from its docstring's formulas, used only to label cases
    and to derive kvd's equivalent beta; the kept counts compared are the ones kvpress returned."""
    cap = window + n * (1 - ratio)
    lo = (cap - window) / beta
    hi = (cap - window) * 2 - lo
    if hi >= n - window:
        hi = n - window
        lo = (cap - window) * 2 - hi
    if not (n >= hi >= lo >= window):
        return None
    steps = (hi - lo) / (layers - 1)
    return [round(hi - l * steps) for l in range(layers)]


def kvd_requests(case: dict, meta: dict) -> list[tuple[str, str, dict, bool]]:
    """(label, kvd method, params, needs queries) for one kvpress case: the request a user
    would send for the same press, and for PyramidKV also the one that reproduces kvpress's
    per-layer line (see docs/QUALITY.md, "Cross-check with kvpress")."""
    n, w, L = meta["tokens"], meta["window"], meta["layers"]
    p, m = case["params"], case["method"]
    counts = case["kept_per_layer"]
    mean_kept = sum(counts) / len(counts)
    if m == "snapkv":
        return [("same", "snapkv", {"budget": counts[0] - w, "kernel": p["kernel_size"],
                                    "pooling": "avg"}, True)]
    if m == "knorm":
        return [("same", "knorm", {"budget": counts[0]}, False)]
    if m == "streamingllm":
        return [("same", "streamingllm", {"sinks": p["n_sink"], "recent": counts[0] - p["n_sink"]},
                 False)]
    if m == "pyramidkv":
        line = kvpress_layer_line(n, case["ratio"], w, p["beta"], L)
        if line is None:
            # kvpress fell back to one SnapKV budget for every layer.
            return [("fallback→snapkv", "snapkv", {"budget": counts[0] - w,
                                                   "kernel": p["kernel_size"], "pooling": "avg"}, True)]
        b = round(mean_kept) - w
        # kvd's line is min = B/β .. max = 2B − min (outside the window); kvpress's, outside the
        # window, runs from line[0] − w to line[-1] − w. Same mean, so β' = B / (line[-1] − w).
        low = line[-1] - w
        out = [("same β", "pyramidkv", {"budget": b, "beta": float(p["beta"]),
                                        "kernel": p["kernel_size"], "pooling": "avg"}, True)]
        # low = 0 (the last layer keeps only the window) needs β = ∞; kvd's largest β, 10⁶, is
        # within a thousandth of a token of it.
        beta = b / low if low > 0 else 1_000_000.0
        out.append(("β matched", "pyramidkv", {"budget": b, "beta": min(beta, 1_000_000.0),
                                               "kernel": p["kernel_size"], "pooling": "avg"}, True))
        return out
    raise ValueError(m)


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    a, b = set(a.tolist()), set(b.tolist())
    u = len(a | b)
    return 1.0 if u == 0 else len(a & b) / u


def snapkv_reference_scores(K: np.ndarray, Q: np.ndarray, kernel: int) -> np.ndarray:
    """float64 window-attention scores [L, H, n − w] (mean over window queries and the GQA group,
    avg-pooled with zero padding counted): the arbiter for differences at the cut."""
    L, H, n, d = K.shape
    Hq, w = Q.shape[1], Q.shape[2]
    g = Hq // H
    out = np.zeros((L, H, n - w))
    mask = np.triu(np.full((w, w), -np.inf), 1)
    for l in range(L):
        for h in range(H):
            k = K[l, h].astype(np.float64)
            q = Q[l, h * g:(h + 1) * g].astype(np.float64).reshape(g * w, d)
            s = q @ k.T / np.sqrt(d)
            s[:, n - w:] += np.tile(mask, (g, 1))
            s -= s.max(axis=1, keepdims=True)
            a = np.exp(s)
            a /= a.sum(axis=1, keepdims=True)
            m = a[:, :n - w].mean(axis=0)
            pad = np.concatenate([np.zeros(kernel // 2), m, np.zeros(kernel // 2)])
            out[l, h] = np.convolve(pad, np.ones(kernel) / kernel, mode="valid")
    return out


def explain_differences(want: np.ndarray, got: np.ndarray, scores: np.ndarray | None,
                        ids: np.ndarray | None = None) -> dict:
    """For one head: which positions differ; given reference scores, how far the swapped tokens'
    scores are from each other (relative: a near-tie at the cut vs a real disagreement); given the
    prompt's token ids, whether the swapped positions hold the same tokens (in layer 0 a token's
    key norm does not depend on its position: RoPE rotates, so equal tokens tie exactly)."""
    a, b = set(want.tolist()), set(got.tolist())
    only_kvpress, only_kvd = sorted(a - b), sorted(b - a)
    out = {"only_kvpress": only_kvpress, "only_kvd": only_kvd}
    if ids is not None:
        out["same_token_ids"] = sorted(ids[only_kvpress].tolist()) == sorted(ids[only_kvd].tolist())
    if scores is not None and only_kvpress and only_kvd:
        sp = np.array([scores[i] for i in only_kvpress if i < len(scores)])
        sd = np.array([scores[i] for i in only_kvd if i < len(scores)])
        if len(sp) and len(sd):
            out["max_rel_gap"] = float(np.max(np.abs(sp.max() - sd.min()) /
                                              max(abs(sp.max()), abs(sd.min()), 1e-300)))
    return out


def compare(client, model: str, meta: dict, arrays) -> list[dict]:
    """Every kvpress case against kvd's kept sets for the matching requests; one row per request."""
    K = np.ascontiguousarray(arrays["keys"], np.float32)
    V = np.ascontiguousarray(arrays["values"], np.float32)
    Q = np.ascontiguousarray(arrays["queries"], np.float32)
    L, H = K.shape[0], K.shape[1]
    ref_scores = {}
    rows = []
    for case in meta["cases"]:
        want = arrays[f"kept/{case['case']}"]
        for label, method, params, needs_q in kvd_requests(case, meta):
            seq = client.create_sequence(model)
            try:
                client.append(seq, K, V, zero_copy=True)
                client.compact(seq, method, queries=Q if needs_q else None, **params)
                heads = client.query(seq, mode="metadata", copy=True)
                got = {(hd.layer, hd.head): np.array(hd.positions, np.int64) for hd in heads}
            finally:
                client.release(seq)
            js, diffs, size_mismatch = [], [], 0
            scores = None
            if method in ("snapkv", "pyramidkv") and (params.get("kernel")) is not None:
                kern = params["kernel"]
                if kern not in ref_scores:
                    ref_scores[kern] = snapkv_reference_scores(K, Q, kern)
                scores = ref_scores[kern]
            elif method == "knorm":
                scores = -np.linalg.norm(K.astype(np.float64), axis=-1)
            for l in range(L):
                for h in range(H):
                    wv = want[l, h][want[l, h] >= 0]
                    gv = got[(l, h)]
                    j = jaccard(wv, gv)
                    js.append(j)
                    size_mismatch += int(len(wv) != len(gv))
                    if j < 1.0:
                        e = explain_differences(wv, gv, None if scores is None else scores[l, h],
                                                arrays.get("ids"))
                        diffs.append({"layer": l, "head": h, "jaccard": j, "kvpress_kept": len(wv),
                                      "kvd_kept": len(gv), **e})
            js = np.array(js)
            rows.append({"case": case["case"], "press": case["press"], "ratio": case["ratio"],
                         "kvpress_params": case["params"], "kvd": label, "kvd_method": method,
                         "kvd_params": params, "heads": int(js.size),
                         "jaccard_min": float(js.min()), "jaccard_median": float(np.median(js)),
                         "jaccard_mean": float(js.mean()),
                         "frac_ge_099": float((js >= 0.99).mean()), "frac_eq_1": float((js == 1).mean()),
                         "heads_with_other_size": size_mismatch,
                         "kvpress_kept_per_layer": case["kept_per_layer"],
                         "kvd_kept_per_layer": [len(got[(l, 0)]) for l in range(L)],
                         "differences": diffs})
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| kvpress press | ratio | kvd request | Jaccard min | median | heads ≥ 0.99 | heads = 1 |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        p = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                      for k, v in r["kvd_params"].items())
        lines.append(f"| {r['press']} | {r['ratio']} | {r['kvd_method']} ({r['kvd']}: {p}) | "
                     f"{r['jaccard_min']:.4f} | {r['jaccard_median']:.4f} | "
                     f"{r['frac_ge_099'] * 100:.1f}% | {r['frac_eq_1'] * 100:.1f}% |")
    return "\n".join(lines)


def kvd_config(workdir: Path, shm: str) -> Path:
    """A small kvd config with the SmolLM2 f32 layout (enough for 1024-token appends inline)."""
    text = f"""server:
  endpoints:
    - "ipc://{workdir}/kvd.sock"
  max_message_bytes: "160MiB"
  max_tokens_per_append: 65536
  max_sequences: 16
arena:
  shm_name: "{shm}"
  size_bytes: "256MiB"
  staging_bytes: "64MiB"
models:
  - name: "smollm2-135m-f32"
    layers: 30
    kv_heads: 3
    q_heads: 9
    head_dim: 64
    dtype: "f32"
    page_tokens: 16
    default_method: "streamingllm"
memory:
  compress_policy: ""
  evict: false
  events_endpoint: ""
"""
    path = workdir / "kvd.yaml"
    path.write_text(text)
    return path


def run_kvd(a) -> None:
    import subprocess
    import tempfile
    import uuid
    sys.path.insert(0, str(HERE.parents[1] / "Clients" / "python"))
    from kvd import Client, KvdError

    d = Path(a.dir)
    meta = json.loads((d / "kept_kvpress.json").read_text())
    arrays = dict(np.load(d / "kept_kvpress.npz"))
    proc, tmp = None, None
    endpoint = a.endpoint
    try:
        if a.kvd_bin:
            tmp = Path(tempfile.mkdtemp(prefix="kvd-kept-", dir="/tmp"))
            cfg = kvd_config(tmp, f"/kvd-kept-{uuid.uuid4().hex[:12]}")
            log = open(tmp / "kvd.log", "wb")
            proc = subprocess.Popen([a.kvd_bin, "--config", str(cfg)], stdout=log, stderr=log,
                                    stdin=subprocess.DEVNULL)
            endpoint = f"ipc://{tmp}/kvd.sock"
            deadline = time.monotonic() + 20
            with Client(endpoint, timeout_ms=200) as c:
                while True:
                    try:
                        c.hello()
                        break
                    except KvdError:
                        if proc.poll() is not None or time.monotonic() > deadline:
                            sys.exit(f"kept_sets: kvd did not start:\n{(tmp / 'kvd.log').read_text()}")
        with Client(endpoint, timeout_ms=120000) as c:
            c.hello()
            rows = compare(c, a.model, meta, arrays)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
        if tmp is not None:
            import shutil
            shutil.rmtree(tmp, ignore_errors=True)
    res = {"kvpress": {k: meta[k] for k in meta if k != "cases"}, "rows": rows}
    (d / "kept_sets.json").write_text(json.dumps(res, indent=1))
    md = table(rows)
    (d / "kept_sets.md").write_text(md + "\n")
    print(md)
    print(f"kept_sets: wrote {d / 'kept_sets.json'} and {d / 'kept_sets.md'}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="side", required=True)
    p = sub.add_parser("kvpress", help="kvpress venv: prefill once, kvpress's kept sets")
    p.add_argument("--out", required=True)
    p.add_argument("--tokens", type=int, default=TOKENS)
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: a shared machine)")
    p.add_argument("--verify", action="store_true", help="also check against a real SnapKV prefill")
    k = sub.add_parser("kvd", help="kvd venv: kvd's kept sets for the same cache, Jaccard table")
    k.add_argument("--dir", required=True)
    g = k.add_mutually_exclusive_group(required=True)
    g.add_argument("--kvd-bin")
    g.add_argument("--endpoint")
    k.add_argument("--model", default="smollm2-135m-f32")
    a = ap.parse_args()
    run_kvpress(a) if a.side == "kvpress" else run_kvd(a)


if __name__ == "__main__":
    main()
