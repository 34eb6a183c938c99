"""Layout check: a transformers model config against the kvd model layout Hello lists."""

from __future__ import annotations


def model_layout_of(config) -> dict:
    """``{layers, kv_heads, q_heads, head_dim}`` of a transformers config (or a model: its config)."""
    config = getattr(config, "config", config)
    q_heads = int(config.num_attention_heads)
    kv_heads = int(getattr(config, "num_key_value_heads", None) or q_heads)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // q_heads
    return {"layers": int(config.num_hidden_layers), "kv_heads": kv_heads, "q_heads": q_heads,
            "head_dim": int(head_dim)}


def kvd_layout_of(layout) -> dict:
    """The same fields of a kvd ``ModelLayout`` (from Hello)."""
    return {"layers": int(layout.layers), "kv_heads": int(layout.kv_heads),
            "q_heads": int(layout.q_heads), "head_dim": int(layout.head_dim)}


def _fmt(d: dict) -> str:
    return (f"{d['layers']} layers x {d['kv_heads']} KV heads x head_dim {d['head_dim']} "
            f"({d['q_heads']} query heads)")


def check_layout(config, layout) -> None:
    """Raise ``ValueError`` naming both layouts when the model's (layers, KV heads, head dim,
    query heads) differ from the kvd model's."""
    want = kvd_layout_of(layout)
    got = model_layout_of(config)
    if got != want:
        name = getattr(getattr(config, "config", config), "_name_or_path", "") or "the model"
        raise ValueError(
            f"kvd_transformers: layout mismatch: {name} has {_fmt(got)}, but kvd model "
            f"{layout.name!r} is {_fmt(want)}; use (or configure) a kvd model with the same layout")


def layer_windows_of(config) -> list[int]:
    """Each layer's attention window in tokens, 0 = full attention (what kvd's ``layer_windows``
    says): ``sliding_window`` on the layers ``config.layer_types`` calls ``sliding_attention``
    (Gemma 3, …), 0 elsewhere; all 0 for a model without sliding layers."""
    config = getattr(config, "config", config)
    layers = int(config.num_hidden_layers)
    types = getattr(config, "layer_types", None)
    window = int(getattr(config, "sliding_window", None) or 0)
    if not types or not window:
        return [0] * layers
    if len(types) != layers:
        raise ValueError(f"kvd_transformers: config.layer_types lists {len(types)} layers, the "
                         f"model has {layers}")
    return [window if t == "sliding_attention" else 0 for t in types]


def check_windows(windows: list[int], layout) -> None:
    """Raise ``ValueError`` when kvd's model lists per-layer windows (Hello's
    ``ModelLayout.layer_windows``) that differ from the model's. A kvd model without windows
    (older daemons, or none configured) keeps every token, which is right for any model."""
    kvd = [int(w) for w in getattr(layout, "layer_windows", None) or ()]
    if not kvd or not any(kvd):
        return
    if kvd != list(windows):
        raise ValueError(
            f"kvd_transformers: attention windows differ: the model's layers have windows "
            f"{list(windows)} (0 = full), kvd model {layout.name!r} has layer_windows {kvd}; kvd "
            "would free tokens the model still attends to (or keep the wrong ones): configure the "
            "kvd model with the model's windows")
