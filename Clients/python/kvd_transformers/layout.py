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
